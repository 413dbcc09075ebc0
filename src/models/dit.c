/* dit.c - Z-Image's single-stream DiT (ZImageTransformer2DModel, "basic"
 * mode; spec section 4), written once against ops.h.
 *
 * Dimension letters (as in dit.h): B batch, C latent channels, p patch,
 * Nx image tokens, Nxp = Nx padded to 32, L / Lp caption tokens (padded),
 * Lpmax = max Lp over the batch, Nmax = Nxp + Lpmax, D model dim, H heads,
 * d = D/H head dim, Fh FFN hidden, A adaLN dim = min(D, 256).
 *
 * Constants hard-coded by diffusers (not in the config): timestep frequency
 * size 256 (max period 10000), timestep MLP mid size 1024, sequence padding
 * multiple 32, qk-norm eps 1e-5, final LayerNorm eps 1e-6.  diffusers'
 * Attention builds K and V with n_heads heads (n_kv_heads is not used), so
 * we do the same.
 *
 * Row layouts (all token streams F32 residuals, [B, N, D] row-major):
 *   image stream  [B, Nxp, D]    sample b at rows b*Nxp
 *   caption       [B, Lpmax, D]  rows b*Lpmax + [0, Lp_b) valid, rest batch pad
 *   unified       [B, Nmax, D]   rows b*Nmax + [0, Nxp) image,
 *                                [Nxp, Nxp+Lp_b) caption, rest batch pad
 * Batch-pad rows hold finite values (copies of refined caption-pad rows or
 * the cap_pad_token); their keys are masked through kv_len, their outputs
 * are never read.  RoPE tables cos/sin [rows, d/2] follow the same row
 * layout; batch-pad rows are 0.
 *
 * Position ids (spec 4.5): caption token i (incl. its pads) (1+i, 0, 0);
 * image token (h, w) (Lp_b + 1, h, w); image pad tokens (0, 0, 0).
 * RoPE (spec 4.6) like diffusers' RopeEmbedder: per axis a of width d_a,
 * freq_j = 1 / theta^(2j/d_a) in float64, angle = float32(pos * freq_j)
 * (product in float64), cos/sin of the float32 angle; adjacent pairs.
 */
#include "dit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIT_T_FREQ 256      /* TimestepEmbedder frequency_embedding_size */
#define DIT_T_MID 1024      /* TimestepEmbedder mid_size                 */
#define DIT_T_PERIOD 10000.0f
#define DIT_SEQ_MULTI 32
#define DIT_QK_EPS 1e-5f
#define DIT_FINAL_EPS 1e-6f

static int64_t pad_to(int64_t n, int64_t m) { return n + ((m - n % m) % m); }

/* ---- loading -------------------------------------------------------------- */

static int load_block(dit_model *m, dit_block *b, const char *pre, int modulated) {
    const dit_config *c = &m->cfg;
    zw_loader *L = &m->loader;
    const int64_t D = c->dim, d = c->head_dim, Fh = c->ffn_dim, A = c->adaln_dim;
    char n0[192], n1[192], n2[192];
    const char *names[3] = {n0, n1, n2};
#define NM(buf, suffix) snprintf(buf, sizeof buf, "%s." suffix, pre)
    NM(n0, "attention_norm1.weight");
    ZTRY(zw_load1(L, &b->attn_norm1, n0, D));
    NM(n0, "attention_norm2.weight");
    ZTRY(zw_load1(L, &b->attn_norm2, n0, D));
    NM(n0, "ffn_norm1.weight");
    ZTRY(zw_load1(L, &b->ffn_norm1, n0, D));
    NM(n0, "ffn_norm2.weight");
    ZTRY(zw_load1(L, &b->ffn_norm2, n0, D));
    NM(n0, "attention.to_q.weight");
    NM(n1, "attention.to_k.weight");
    NM(n2, "attention.to_v.weight");
    int64_t qkv_rows[3] = {D, D, D};
    ZTRY(zw_load_cat(L, &b->wqkv, names, 3, qkv_rows, D));
    if (c->qk_norm) {
        NM(n0, "attention.norm_q.weight");
        ZTRY(zw_load1(L, &b->q_norm, n0, d));
        NM(n0, "attention.norm_k.weight");
        ZTRY(zw_load1(L, &b->k_norm, n0, d));
    }
    NM(n0, "attention.to_out.0.weight");
    ZTRY(zw_load2(L, &b->wo, n0, D, D));
    NM(n0, "feed_forward.w1.weight");
    NM(n1, "feed_forward.w3.weight");
    int64_t ffn_rows[2] = {Fh, Fh};
    ZTRY(zw_load_cat(L, &b->w13, names, 2, ffn_rows, D));
    NM(n0, "feed_forward.w2.weight");
    ZTRY(zw_load2(L, &b->w2, n0, D, Fh));
    (void)A;
    b->mod_off = modulated ? 0 : -1; /* set by load_modulation */
#undef NM
    return ZE_OK;
}

/* All modulated blocks' adaLN Linear (noise_refiner.*, then layers.*) as one
 * [n_mod*4D, A] weight and one [n_mod*4D] F32 bias, so a step computes every
 * modulation vector with one GEMM.  The biases are 1-D: fetched one by one and
 * joined on the host. */
static int load_modulation(dit_model *m) {
    const dit_config *c = &m->cfg;
    zw_loader *L = &m->loader;
    const int64_t D = c->dim, A = c->adaln_dim;
    int n = c->n_refiner_layers + c->n_layers;
    m->n_mod = n;
    if (n == 0) return ZE_OK;
    char (*names)[96] = calloc((size_t)n, sizeof *names);
    const char **np = calloc((size_t)n, sizeof *np);
    int64_t *rows = calloc((size_t)n, sizeof *rows);
    float *bias = malloc(sizeof(float) * (size_t)(n * 4 * D));
    int rc = (!names || !np || !rows || !bias) ? zerr_set(L->err, ZE_NOMEM, "out of memory") : ZE_OK;
    for (int i = 0; i < n && !rc; i++) {
        dit_block *b = i < c->n_refiner_layers ? &m->noise_refiner[i] : &m->layers[i - c->n_refiner_layers];
        if (i < c->n_refiner_layers)
            snprintf(names[i], sizeof names[i], "noise_refiner.%d.adaLN_modulation.0", i);
        else
            snprintf(names[i], sizeof names[i], "layers.%d.adaLN_modulation.0", i - c->n_refiner_layers);
        b->mod_off = (int64_t)i * 4 * D;
        char bn[128];
        snprintf(bn, sizeof bn, "%s.bias", names[i]);
        zt tb;
        rc = zw_load1(L, &tb, bn, 4 * D);
        if (!rc) rc = zt_download_f32(L->be, &tb, bias + (size_t)i * 4 * D);
        strcat(names[i], ".weight");
        np[i] = names[i];
        rows[i] = 4 * D;
    }
    if (!rc) rc = zw_load_cat(L, &m->ada_all_w, np, n, rows, A);
    if (!rc) {
        int64_t ne[1] = {(int64_t)n * 4 * D};
        rc = zt_alloc(L->be, &m->ada_all_b, ZT_F32, 1, ne);
        if (!rc) rc = zt_upload(L->be, &m->ada_all_b, bias, ZT_F32);
        if (rc) zerr_set(L->err, rc, "transformer: cannot place the joined adaLN bias");
    }
    free(names);
    free(np);
    free(rows);
    free(bias);
    return rc;
}

static int dit_load_all(dit_model *m) {
    const dit_config *c = &m->cfg;
    zw_loader *L = &m->loader;
    const int64_t D = c->dim, A = c->adaln_dim;
    const int64_t P = (int64_t)c->patch_size * c->patch_size * c->f_patch_size * c->in_channels;
    char n[192], pre[64];
    snprintf(pre, sizeof pre, "%d-%d", c->patch_size, c->f_patch_size);
    snprintf(n, sizeof n, "all_x_embedder.%s.weight", pre);
    ZTRY(zw_load2(L, &m->x_emb_w, n, D, P));
    snprintf(n, sizeof n, "all_x_embedder.%s.bias", pre);
    ZTRY(zw_load1(L, &m->x_emb_b, n, D));
    ZTRY(zw_load2(L, &m->t_w1, "t_embedder.mlp.0.weight", DIT_T_MID, DIT_T_FREQ));
    ZTRY(zw_load1(L, &m->t_b1, "t_embedder.mlp.0.bias", DIT_T_MID));
    ZTRY(zw_load2(L, &m->t_w2, "t_embedder.mlp.2.weight", A, DIT_T_MID));
    ZTRY(zw_load1(L, &m->t_b2, "t_embedder.mlp.2.bias", A));
    ZTRY(zw_load1(L, &m->cap_norm, "cap_embedder.0.weight", c->cap_feat_dim));
    ZTRY(zw_load2(L, &m->cap_w, "cap_embedder.1.weight", D, c->cap_feat_dim));
    ZTRY(zw_load1(L, &m->cap_b, "cap_embedder.1.bias", D));
    ZTRY(zw_load2(L, &m->x_pad, "x_pad_token", 1, D));
    ZTRY(zw_load2(L, &m->cap_pad, "cap_pad_token", 1, D));
    snprintf(n, sizeof n, "all_final_layer.%s.linear.weight", pre);
    ZTRY(zw_load2(L, &m->final_w, n, P, D));
    snprintf(n, sizeof n, "all_final_layer.%s.linear.bias", pre);
    ZTRY(zw_load1(L, &m->final_b, n, P));
    snprintf(n, sizeof n, "all_final_layer.%s.adaLN_modulation.1.weight", pre);
    ZTRY(zw_load2(L, &m->final_ada_w, n, D, A));
    snprintf(n, sizeof n, "all_final_layer.%s.adaLN_modulation.1.bias", pre);
    ZTRY(zw_load1(L, &m->final_ada_b, n, D));
    for (int i = 0; i < c->n_refiner_layers; i++) {
        snprintf(pre, sizeof pre, "noise_refiner.%d", i);
        ZTRY(load_block(m, &m->noise_refiner[i], pre, 1));
        snprintf(pre, sizeof pre, "context_refiner.%d", i);
        ZTRY(load_block(m, &m->context_refiner[i], pre, 0));
    }
    for (int i = 0; i < c->n_layers; i++) {
        snprintf(pre, sizeof pre, "layers.%d", i);
        ZTRY(load_block(m, &m->layers[i], pre, 1));
    }
    ZTRY(load_modulation(m));
    return zw_check_all_used(L);
}

int dit_load(dit_model *m, const dit_config *cfg, zbackend *be, zw_source *src, zerr *e) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    dit_config *c = &m->cfg;
    if (c->dim < 1 || c->n_heads < 1 || c->dim % c->n_heads || c->patch_size < 1 || c->in_channels < 1 ||
        c->n_layers < 0 || c->n_refiner_layers < 0 || c->cap_feat_dim < 1 || !(c->rope_theta > 0))
        return zerr_set(e, ZE_MODEL, "transformer config is inconsistent (dim %d, heads %d, patch %d)", c->dim,
                        c->n_heads, c->patch_size);
    if (c->f_patch_size != 1)
        return zerr_set(e, ZE_UNSUPPORTED, "transformer: f_patch_size %d is not supported (images have one frame)",
                        c->f_patch_size);
    /* derived exactly as diffusers does */
    c->head_dim = c->dim / c->n_heads;
    c->ffn_dim = (int)((double)c->dim / 3.0 * 8.0);
    c->adaln_dim = c->dim < 256 ? c->dim : 256;
    int sum = 0;
    for (int a = 0; a < 3; a++) {
        if (c->axes_dims[a] < 0 || c->axes_dims[a] % 2 || c->axes_lens[a] < 1)
            return zerr_set(e, ZE_MODEL, "transformer: bad axes_dims/axes_lens [%d] = %d/%d", a, c->axes_dims[a],
                            c->axes_lens[a]);
        sum += c->axes_dims[a];
    }
    if (sum != c->head_dim)
        return zerr_set(e, ZE_MODEL, "transformer: sum(axes_dims) = %d but head_dim = %d", sum, c->head_dim);
    size_t nb = (size_t)(2 * c->n_refiner_layers + c->n_layers);
    dit_block *blocks = calloc(nb ? nb : 1, sizeof *blocks);
    if (!blocks) return zerr_set(e, ZE_NOMEM, "out of memory for transformer blocks");
    m->noise_refiner = blocks;
    m->context_refiner = blocks + c->n_refiner_layers;
    m->layers = blocks + 2 * c->n_refiner_layers;
    int rc = zw_loader_init(&m->loader, be, src, "transformer", e);
    if (rc) {
        free(blocks);
        m->noise_refiner = m->context_refiner = m->layers = NULL;
        return rc;
    }
    rc = dit_load_all(m);
    if (rc) {
        dit_free(m);
        return rc;
    }
    return ZE_OK;
}

void dit_free(dit_model *m) {
    if (m->ada_all_b.data) zt_free(m->loader.be, &m->ada_all_b);
    zw_loader_free(&m->loader);
    free(m->noise_refiner); /* one allocation for all blocks */
    memset(m, 0, sizeof *m);
}

/* ---- RoPE tables (host) ----------------------------------------------------- */

/* Per-axis frequencies in float64, like RopeEmbedder.precompute_freqs_cis. */
static double *rope_freqs(const dit_config *c) {
    int half = c->head_dim / 2;
    double *f = malloc((size_t)half * sizeof *f);
    if (!f) return NULL;
    int o = 0;
    for (int a = 0; a < 3; a++)
        for (int j = 0; j < c->axes_dims[a] / 2; j++)
            f[o++] = 1.0 / pow(c->rope_theta, (double)(2 * j) / (double)c->axes_dims[a]);
    return f;
}

/* Per-axis cos/sin tables: the angle of axis a, frequency j at position p
 * depends on (a, p, j) only, so each value is computed once per generation
 * (a few thousand sin/cos instead of one per table entry) and rows are
 * gathered from them.  Same formula as before: float(p * freq) in double,
 * then cos/sin in double, rounded to float. */
typedef struct {
    float *cs[3], *sn[3];
    int npos[3], nf[3];
} rope_axes;

static void rope_axes_free(rope_axes *t) {
    for (int a = 0; a < 3; a++) {
        free(t->cs[a]);
        free(t->sn[a]);
    }
}

static int rope_axes_build(const dit_config *c, const double *freqs, const int npos[3], rope_axes *t) {
    memset(t, 0, sizeof *t);
    int o = 0;
    for (int a = 0; a < 3; a++) {
        int nf = c->axes_dims[a] / 2;
        t->npos[a] = npos[a];
        t->nf[a] = nf;
        t->cs[a] = malloc(sizeof(float) * (size_t)npos[a] * (size_t)(nf ? nf : 1));
        t->sn[a] = malloc(sizeof(float) * (size_t)npos[a] * (size_t)(nf ? nf : 1));
        if (!t->cs[a] || !t->sn[a]) {
            rope_axes_free(t);
            return ZE_NOMEM;
        }
        for (int p = 0; p < npos[a]; p++)
            for (int j = 0; j < nf; j++) {
                float ang = (float)((double)p * freqs[o + j]);
                t->cs[a][(size_t)p * nf + j] = (float)cos((double)ang);
                t->sn[a][(size_t)p * nf + j] = (float)sin((double)ang);
            }
        o += nf;
    }
    return ZE_OK;
}

/* Row of the tables for position (p0, p1, p2), gathered from the axes. */
static void rope_row(const rope_axes *t, const int pos[3], float *cs, float *sn) {
    int o = 0;
    for (int a = 0; a < 3; a++) {
        size_t nf = (size_t)t->nf[a];
        memcpy(cs + o, t->cs[a] + (size_t)pos[a] * nf, nf * sizeof *cs);
        memcpy(sn + o, t->sn[a] + (size_t)pos[a] * nf, nf * sizeof *sn);
        o += (int)nf;
    }
}

/* Fill the image / caption / unified tables of bt (host buffers of the same
 * row layouts as the tensors). */
static void rope_build(const dit_config *c, const dit_batch *bt, const rope_axes *ax, float *cx, float *sx, float *cc,
                       float *sc, float *cu, float *su) {
    const size_t h = (size_t)c->head_dim / 2;
    for (int b = 0; b < bt->B; b++) {
        for (int n = 0; n < bt->Nxp; n++) {
            int pos[3] = {0, 0, 0};
            if (n < bt->Nx) {
                pos[0] = bt->Lp[b] + 1;
                pos[1] = n / bt->Wt;
                pos[2] = n % bt->Wt;
            }
            size_t r = (size_t)b * bt->Nxp + n;
            rope_row(ax, pos, cx + r * h, sx + r * h);
            size_t ru = (size_t)b * bt->Nmax + n;
            memcpy(cu + ru * h, cx + r * h, h * sizeof *cu);
            memcpy(su + ru * h, sx + r * h, h * sizeof *su);
        }
        for (int i = 0; i < bt->Lpmax; i++) {
            size_t r = (size_t)b * bt->Lpmax + i, ru = (size_t)b * bt->Nmax + bt->Nxp + i;
            if (i < bt->Lp[b]) {
                int pos[3] = {1 + i, 0, 0};
                rope_row(ax, pos, cc + r * h, sc + r * h);
            } else { /* batch padding */
                memset(cc + r * h, 0, h * sizeof *cc);
                memset(sc + r * h, 0, h * sizeof *sc);
            }
            memcpy(cu + ru * h, cc + r * h, h * sizeof *cu);
            memcpy(su + ru * h, sc + r * h, h * sizeof *su);
        }
    }
}

/* ---- one transformer block -------------------------------------------------- */

/* Sub-layer modulation vector k of blk (0 scale_msa, 1 gate_msa, 2 scale_mlp,
 * 3 gate_mlp), or absent for unmodulated blocks. */
static zvec blk_vec(const zt *mod, const dit_block *blk, int k, int64_t D) {
    if (!mod || blk->mod_off < 0) return (zvec){NULL, 0};
    return (zvec){mod, blk->mod_off + k * D};
}

/* x [B, N, D] F32 residual stream, updated in place.  cs/sn [B*N, d/2].
 * c [B, A] (NULL for the unmodulated context refiner).  kv_len: NULL or [B].
 * an [B, N, D] holds this block's attention pre-norm of x on entry (computed
 * by the caller or by the previous block); when next is not NULL the block
 * leaves next's attention pre-norm of the updated x in it (fused with the
 * last residual update: one pass over x). */
static void block_fwd(zexec *zx, const dit_model *m, const dit_block *blk, zt *x, const zt *cs, const zt *sn,
                      const int32_t *kv_len, const zt *mod, zt *an, const dit_block *next) {
    const dit_config *cf = &m->cfg;
    const int64_t B = x->ne[0], N = x->ne[1], D = cf->dim, Fh = cf->ffn_dim;
    const int H = cf->n_heads;
    const float eps = cf->norm_eps;
    const zt_dtype act = zx->be->act;
    size_t m0 = zx_mark(zx);
    /* [scale_msa | gate_msa | scale_mlp | gate_mlp], each D */
    zvec g_a = blk_vec(mod, blk, 1, D), sc_f = blk_vec(mod, blk, 2, D), g_f = blk_vec(mod, blk, 3, D);
    const zt *qn = cf->qk_norm ? &blk->q_norm : NULL, *kn = cf->qk_norm ? &blk->k_norm : NULL;
    zt f = zx_tensor3(zx, act, B, N, D); /* FFN pre-norm, written with the attention's residual update */
    size_t m1 = zx_mark(zx);

    /* attention */
    zt qkv = zx_tensor3(zx, act, B, N, 3 * D);
    zop_matmul(zx, &qkv, an, &blk->wqkv, NULL, 0);
    zt q = zx_tensor3(zx, act, B, N, D), k = zx_tensor3(zx, act, B, N, D), v = zx_tensor3(zx, act, B, N, D);
    zop_qkv_norm_rope(zx, &q, &k, &v, &qkv, qn, kn, cs, sn, H, H, DIT_QK_EPS, ZROPE_ADJACENT);
    zt o = zx_tensor3(zx, act, B, N, D);
    zop_attention(zx, &o, &q, &k, &v, H, H, kv_len, 0, (float)(1.0 / sqrt((double)cf->head_dim)));
    zt ao = zx_tensor3(zx, act, B, N, D);
    zop_matmul(zx, &ao, &o, &blk->wo, NULL, 0);
    zop_norm_gate_add_norm(zx, x, &ao, &blk->attn_norm2, g_a, &f, &blk->ffn_norm1, sc_f, B, eps);
    zx_release(zx, m1);

    /* feed-forward */
    zt gu = zx_tensor3(zx, act, B, N, 2 * Fh);
    zop_matmul(zx, &gu, &f, &blk->w13, NULL, 0);
    zt g = zx_tensor3(zx, act, B, N, Fh);
    zop_silu_mul(zx, &g, &gu);
    zt fo = zx_tensor3(zx, act, B, N, D);
    zop_matmul(zx, &fo, &g, &blk->w2, NULL, 0);
    if (next)
        zop_norm_gate_add_norm(zx, x, &fo, &blk->ffn_norm2, g_f, an, &next->attn_norm1, blk_vec(mod, next, 0, D), B,
                               eps);
    else
        zop_norm_gate_add(zx, x, &fo, &blk->ffn_norm2, g_f, B, eps);
    zx_release(zx, m0);
}

/* n blocks in sequence over the residual stream x [B, N, D]. */
static void blocks_fwd(zexec *zx, const dit_model *m, const dit_block *blks, int n, zt *x, const zt *cs, const zt *sn,
                       const int32_t *kv_len, const zt *mod) {
    if (n < 1) return;
    const int64_t D = m->cfg.dim;
    size_t m0 = zx_mark(zx);
    zt an = zx_tensor3(zx, zx->be->act, x->ne[0], x->ne[1], D);
    zop_rmsnorm(zx, &an, x, &blks[0].attn_norm1, blk_vec(mod, &blks[0], 0, D), x->ne[0], m->cfg.norm_eps);
    for (int i = 0; i < n && zx_ok(zx); i++)
        block_fwd(zx, m, &blks[i], x, cs, sn, kv_len, mod, &an, i + 1 < n ? &blks[i + 1] : NULL);
    zx_release(zx, m0);
}

/* ---- per-generation preparation --------------------------------------------- */

static int batch_dims(zexec *zx, const dit_model *m, const zt *const *feats, int B, int H, int W, dit_batch *bt) {
    const dit_config *c = &m->cfg;
    const int p = c->patch_size;
    memset(bt, 0, sizeof *bt);
    if (B < 1 || B > DIT_MAX_BATCH)
        return zbackend_fail(zx->be, ZE_INVALID, "transformer: batch %d outside 1..%d", B, DIT_MAX_BATCH);
    if (H < p || W < p || H % p || W % p)
        return zbackend_fail(zx->be, ZE_INVALID, "transformer: latent %dx%d not a multiple of the patch size %d", H,
                             W, p);
    bt->B = B;
    bt->H = H;
    bt->W = W;
    bt->Ht = H / p;
    bt->Wt = W / p;
    bt->Nx = bt->Ht * bt->Wt;
    bt->Nxp = (int)pad_to(bt->Nx, DIT_SEQ_MULTI);
    for (int b = 0; b < B; b++) {
        const zt *f = feats[b];
        if (!f || zt_cols(f) != c->cap_feat_dim || zt_rows(f) < 1)
            return zbackend_fail(zx->be, ZE_INVALID, "transformer: caption %d must be [L >= 1, %d]", b,
                                 c->cap_feat_dim);
        bt->L[b] = (int)zt_rows(f);
        bt->Lp[b] = (int)pad_to(bt->L[b], DIT_SEQ_MULTI);
        if (bt->Lp[b] > bt->Lpmax) bt->Lpmax = bt->Lp[b];
        /* the reference indexes lookup tables of axes_lens entries */
        if (bt->Lp[b] + 1 >= c->axes_lens[0])
            return zbackend_fail(zx->be, ZE_INVALID,
                                 "transformer: caption of %d tokens is too long (padded %d + 1 must be < axes_lens[0] "
                                 "= %d)",
                                 bt->L[b], bt->Lp[b], c->axes_lens[0]);
    }
    if (bt->Ht > c->axes_lens[1] || bt->Wt > c->axes_lens[2])
        return zbackend_fail(zx->be, ZE_INVALID, "transformer: token grid %dx%d exceeds axes_lens %dx%d", bt->Ht,
                             bt->Wt, c->axes_lens[1], c->axes_lens[2]);
    bt->Nmax = bt->Nxp + bt->Lpmax;
    for (int b = 0; b < B; b++) {
        bt->kv_len_c[b] = bt->Lp[b];
        bt->kv_len_u[b] = bt->Nxp + bt->Lp[b];
    }
    return ZE_OK;
}

/* 1 if every sample has the same padded caption length (no key mask). */
static int uniform_lp(const dit_batch *bt) {
    for (int b = 1; b < bt->B; b++)
        if (bt->Lp[b] != bt->Lp[0]) return 0;
    return 1;
}

void dit_batch_prepare(zexec *zx, const dit_model *m, const zt *const *feats, int B, int H, int W, dit_batch *bt) {
    const dit_config *c = &m->cfg;
    const int64_t D = c->dim, h = c->head_dim / 2;
    const zt_dtype act = zx->be->act;
    const zvec none = {NULL, 0};
    if (!zx_ok(zx)) return;
    if (batch_dims(zx, m, feats, B, H, W, bt)) return;

    /* persistent part */
    bt->cap = zx_tensor3(zx, ZT_F32, B, bt->Lpmax, D);
    bt->cos_x = zx_tensor2(zx, ZT_F32, (int64_t)B * bt->Nxp, h);
    bt->sin_x = zx_tensor2(zx, ZT_F32, (int64_t)B * bt->Nxp, h);
    bt->cos_u = zx_tensor2(zx, ZT_F32, (int64_t)B * bt->Nmax, h);
    bt->sin_u = zx_tensor2(zx, ZT_F32, (int64_t)B * bt->Nmax, h);

    /* temporaries */
    size_t m0 = zx_mark(zx);
    zt cos_c = zx_tensor2(zx, ZT_F32, (int64_t)B * bt->Lpmax, h);
    zt sin_c = zx_tensor2(zx, ZT_F32, (int64_t)B * bt->Lpmax, h);
    if (!zx->measure && zx_ok(zx)) {
        size_t nx = (size_t)B * bt->Nxp * h, nc = (size_t)B * bt->Lpmax * h, nu = (size_t)B * bt->Nmax * h;
        float *buf = malloc((2 * nx + 2 * nc + 2 * nu) * sizeof *buf);
        double *freqs = rope_freqs(c);
        int npos[3] = {0, bt->Ht + 1, bt->Wt + 1}; /* positions used: see rope_build */
        for (int b = 0; b < B; b++)
            if (bt->Lp[b] + 2 > npos[0]) npos[0] = bt->Lp[b] + 2;
        rope_axes ax;
        if (!buf || !freqs || rope_axes_build(c, freqs, npos, &ax)) {
            free(buf);
            free(freqs);
            zbackend_fail(zx->be, ZE_NOMEM, "transformer: out of host memory for RoPE tables");
            return;
        }
        float *cx = buf, *sx = cx + nx, *cc = sx + nx, *sc = cc + nc, *cu = sc + nc, *su = cu + nu;
        rope_build(c, bt, &ax, cx, sx, cc, sc, cu, su);
        rope_axes_free(&ax);
        zx_upload(zx, &bt->cos_x, cx, ZT_F32);
        zx_upload(zx, &bt->sin_x, sx, ZT_F32);
        zx_upload(zx, &cos_c, cc, ZT_F32);
        zx_upload(zx, &sin_c, sc, ZT_F32);
        zx_upload(zx, &bt->cos_u, cu, ZT_F32);
        zx_upload(zx, &bt->sin_u, su, ZT_F32);
        free(buf);
        free(freqs);
    }

    /* caption stream: RMSNorm -> Linear, pad with cap_pad_token (also the
     * batch-pad rows, any finite value would do) */
    for (int b = 0; b < B; b++) {
        size_t mb = zx_mark(zx);
        int64_t L = bt->L[b];
        zt nrm = zx_tensor2(zx, act, L, c->cap_feat_dim);
        zop_rmsnorm(zx, &nrm, feats[b], &m->cap_norm, none, 1, c->norm_eps);
        zt dst = zt_rows_view(&bt->cap, (int64_t)b * bt->Lpmax, L);
        zop_matmul(zx, &dst, &nrm, &m->cap_w, &m->cap_b, 0);
        zop_fill_rows(zx, &bt->cap, (int64_t)b * bt->Lpmax + L, bt->Lpmax - L, &m->cap_pad);
        zx_release(zx, mb);
    }
    const int32_t *kv = uniform_lp(bt) ? NULL : bt->kv_len_c;
    blocks_fwd(zx, m, m->context_refiner, c->n_refiner_layers, &bt->cap, &cos_c, &sin_c, kv, NULL);
    zx_release(zx, m0);
}

/* ---- one step ------------------------------------------------------------------ */

void dit_forward(zexec *zx, const dit_model *m, const dit_batch *bt, const zt *x, const zt *t, zt *out) {
    const dit_config *c = &m->cfg;
    const int64_t B = bt->B, D = c->dim, A = c->adaln_dim, p = c->patch_size, C = c->in_channels;
    const int64_t P = p * p * C;
    const zt_dtype act = zx->be->act;
    if (!zx_ok(zx)) return;
    if (x->ndim != 4 || x->ne[0] != B || x->ne[1] != C || x->ne[2] != bt->H || x->ne[3] != bt->W ||
        zt_numel(t) != B || t->dtype != ZT_F32 || out->ndim != 4 || out->ne[0] != B || out->ne[1] != C ||
        out->ne[2] != bt->H || out->ne[3] != bt->W) {
        char a[64], b[64];
        zbackend_fail(zx->be, ZE_INVALID,
                      "dit_forward: x %s / out %s must be [%lld, %lld, %d, %d] (as prepared), t [%lld] f32",
                      zt_describe(x, a, sizeof a), zt_describe(out, b, sizeof b), (long long)B, (long long)C, bt->H,
                      bt->W, (long long)B);
        return;
    }
    const int64_t Nx = bt->Nx, Nxp = bt->Nxp, Nmax = bt->Nmax, Lpmax = bt->Lpmax;
    size_t m0 = zx_mark(zx);

    /* timestep embedding c [B, A] */
    zt e = zx_tensor2(zx, ZT_F32, B, DIT_T_FREQ);
    zop_timestep_embed(zx, &e, t, c->t_scale, DIT_T_PERIOD);
    zt th = zx_tensor2(zx, act, B, DIT_T_MID);
    zop_matmul(zx, &th, &e, &m->t_w1, &m->t_b1, 0);
    zop_silu(zx, &th, &th);
    zt cvec = zx_tensor2(zx, act, B, A);
    zop_matmul(zx, &cvec, &th, &m->t_w2, &m->t_b2, 0);
    /* every modulated block's [scale_msa | gate_msa | scale_mlp | gate_mlp] in one GEMM */
    zt mod = zx_tensor2(zx, ZT_F32, B, (int64_t)m->n_mod * 4 * D);
    if (m->n_mod) zop_matmul(zx, &mod, &cvec, &m->ada_all_w, &m->ada_all_b, 0);

    zt u = zx_tensor3(zx, ZT_F32, B, Nmax, D); /* unified residual stream */
    size_t m1 = zx_mark(zx);

    /* image stream: patchify, embed, pad, noise refiner */
    zt tok = zx_tensor3(zx, act, B, Nx, P);
    zop_patchify(zx, &tok, x, (int)p);
    zt xs = zx_tensor3(zx, ZT_F32, B, Nxp, D);
    if (Nx == Nxp) {
        zop_matmul(zx, &xs, &tok, &m->x_emb_w, &m->x_emb_b, 0);
    } else {
        for (int64_t b = 0; b < B; b++) {
            zt dst = zt_rows_view(&xs, b * Nxp, Nx);
            zt src = zt_rows_view(&tok, b * Nx, Nx);
            zop_matmul(zx, &dst, &src, &m->x_emb_w, &m->x_emb_b, 0);
            zop_fill_rows(zx, &xs, b * Nxp + Nx, Nxp - Nx, &m->x_pad);
        }
    }
    blocks_fwd(zx, m, m->noise_refiner, c->n_refiner_layers, &xs, &bt->cos_x, &bt->sin_x, NULL, &mod);

    /* unified [image | caption | batch pad] per sample (Nxp + Lpmax = Nmax) */
    for (int64_t b = 0; b < B; b++) {
        zop_copy_rows(zx, &u, b * Nmax, &xs, b * Nxp, Nxp);
        zop_copy_rows(zx, &u, b * Nmax + Nxp, &bt->cap, b * Lpmax, Lpmax);
    }
    zx_release(zx, m1);

    const int32_t *kv = uniform_lp(bt) ? NULL : bt->kv_len_u;
    blocks_fwd(zx, m, m->layers, c->n_layers, &u, &bt->cos_u, &bt->sin_u, kv, &mod);

    /* final layer: LayerNorm (no affine) * (1 + Linear(SiLU(c))), Linear */
    zt sc = zx_tensor2(zx, act, B, A);
    zop_silu(zx, &sc, &cvec);
    zt fmod = zx_tensor2(zx, ZT_F32, B, D);
    zop_matmul(zx, &fmod, &sc, &m->final_ada_w, &m->final_ada_b, 0);
    zt z = zx_tensor3(zx, act, B, Nmax, D);
    zop_layernorm(zx, &z, &u, NULL, NULL, (zvec){&fmod, 0}, B, DIT_FINAL_EPS);
    zt o = zx_tensor3(zx, ZT_F32, B, Nmax, P);
    zop_matmul(zx, &o, &z, &m->final_w, &m->final_b, 0);
    zop_unpatchify(zx, out, &o, (int)p);
    zx_release(zx, m0);
}
