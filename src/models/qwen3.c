/* qwen3.c - the Qwen3 text encoder as Z-Image uses it (spec section 3),
 * written once against ops.h.
 *
 * Dimension letters: L tokens, D hidden (2560), Hq query heads (32), Hkv
 * key/value heads (8), d head dim (128), F MLP hidden (9728), V vocab.
 *
 * Forward, per layer l = 0 .. n_run-1 (n_run = num_hidden_layers - 1):
 *   a   = RMSNorm(h; in_norm, eps)                       [L, D]
 *   qkv = a · wqkv^T                                      [L, (Hq+2Hkv)·d]
 *   q,k,v = split; q,k per-head RMSNorm (q_norm, k_norm, eps);
 *           q,k rotate-half RoPE (pairs (j, j+d/2)), theta = rope_theta
 *   o   = causal GQA attention, scale 1/sqrt(d)          [L, Hq·d]
 *   h  += o · wo^T
 *   b   = RMSNorm(h; post_norm, eps)
 *   h  += (silu(b·Wg^T) * (b·Wu^T)) · Wd^T               (gate|up fused)
 * Output: h after the last layer run (transformers' hidden_states[-2]; no
 * final norm).  The residual stream h is F32 on every backend; the other
 * activations use the backend's activation dtype.
 *
 * RoPE tables are built on the host in fp32 exactly like transformers'
 * Qwen3RotaryEmbedding: inv_freq_j = 1 / theta^(2j/d) (float32 arithmetic),
 * angle = inv_freq_j · p (float32), cos/sin of the float32 angle.
 */
#include "qwen3.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int load_layer(qwen3_model *m, int l) {
    const qwen3_config *c = &m->cfg;
    zw_loader *L = &m->loader;
    qwen3_layer *ly = &m->layers[l];
    const int64_t D = c->hidden_size, d = c->head_dim, F = c->intermediate_size;
    const int64_t hq = c->num_attention_heads, hkv = c->num_key_value_heads;
    char n0[160], n1[160], n2[160];
    const char *names[3] = {n0, n1, n2};
#define NM(buf, suffix) snprintf(buf, sizeof buf, "model.layers.%d." suffix, l)
    NM(n0, "input_layernorm.weight");
    ZTRY(zw_load1(L, &ly->in_norm, n0, D));
    NM(n0, "self_attn.q_proj.weight");
    NM(n1, "self_attn.k_proj.weight");
    NM(n2, "self_attn.v_proj.weight");
    int64_t qkv_rows[3] = {hq * d, hkv * d, hkv * d};
    ZTRY(zw_load_cat(L, &ly->wqkv, names, 3, qkv_rows, D));
    NM(n0, "self_attn.q_norm.weight");
    ZTRY(zw_load1(L, &ly->q_norm, n0, d));
    NM(n0, "self_attn.k_norm.weight");
    ZTRY(zw_load1(L, &ly->k_norm, n0, d));
    NM(n0, "self_attn.o_proj.weight");
    ZTRY(zw_load2(L, &ly->wo, n0, D, hq * d));
    NM(n0, "post_attention_layernorm.weight");
    ZTRY(zw_load1(L, &ly->post_norm, n0, D));
    NM(n0, "mlp.gate_proj.weight");
    NM(n1, "mlp.up_proj.weight");
    int64_t gu_rows[2] = {F, F};
    ZTRY(zw_load_cat(L, &ly->w_gate_up, names, 2, gu_rows, D));
    NM(n0, "mlp.down_proj.weight");
    ZTRY(zw_load2(L, &ly->w_down, n0, D, F));
#undef NM
    return ZE_OK;
}

static int qwen3_load_all(qwen3_model *m) {
    const qwen3_config *c = &m->cfg;
    zw_loader *L = &m->loader;
    ZTRY(zw_load2(L, &m->embed, "model.embed_tokens.weight", c->vocab_size, c->hidden_size));
    for (int l = 0; l < m->n_run; l++) ZTRY(load_layer(m, l));
    /* Never needed for hidden_states[-2]: the last layer, the final norm, the LM head. */
    char last[64];
    snprintf(last, sizeof last, "model.layers.%d.", m->n_run);
    zw_ignore_prefix(L, last);
    zw_ignore_prefix(L, "model.norm.");
    zw_ignore_prefix(L, "lm_head.");
    return zw_check_all_used(L);
}

int qwen3_load(qwen3_model *m, const qwen3_config *cfg, zbackend *be, zw_source *src, zerr *e) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    const qwen3_config *c = &m->cfg;
    if (c->num_hidden_layers < 1 || c->hidden_size < 1 || c->head_dim < 2 || c->head_dim % 2 ||
        c->num_attention_heads < 1 || c->num_key_value_heads < 1 ||
        c->num_attention_heads % c->num_key_value_heads || c->intermediate_size < 1 || c->vocab_size < 1 ||
        !(c->rope_theta > 0))
        return zerr_set(e, ZE_MODEL,
                        "text encoder config is inconsistent (layers %d, hidden %d, heads %d/%d, head_dim %d)",
                        c->num_hidden_layers, c->hidden_size, c->num_attention_heads, c->num_key_value_heads,
                        c->head_dim);
    m->n_run = c->num_hidden_layers - 1;
    if (m->n_run > 0) {
        m->layers = calloc((size_t)m->n_run, sizeof *m->layers);
        if (!m->layers) return zerr_set(e, ZE_NOMEM, "out of memory for %d text encoder layers", m->n_run);
    }
    int rc = zw_loader_init(&m->loader, be, src, "text_encoder", e);
    if (rc) {
        free(m->layers);
        m->layers = NULL;
        return rc;
    }
    rc = qwen3_load_all(m);
    if (rc) {
        qwen3_free(m);
        return rc;
    }
    return ZE_OK;
}

static zt *slot_tensor(qwen3_layer *ly, int i) {
    zt *t[8] = {&ly->in_norm, &ly->wqkv, &ly->q_norm, &ly->k_norm, &ly->wo, &ly->post_norm, &ly->w_gate_up,
                &ly->w_down};
    return t[i];
}

int qwen3_load_streamed(qwen3_model *m, const qwen3_config *cfg, zbackend *dev, zbackend *host, zw_source *src,
                        zerr *e) {
    if (!host->is_host) return zerr_set(e, ZE_INVALID, "qwen3_load_streamed: the weight backend must be a host backend");
    ZTRY(qwen3_load(m, cfg, host, src, e));
    m->streamed = 1;
    m->dev = dev;
    if (m->n_run < 1) return ZE_OK;
    /* the device slot: same shapes as a layer, the device's weight dtypes */
    for (int i = 0; i < 8; i++) {
        const zt *h = slot_tensor(&m->layers[0], i);
        zt *d = slot_tensor(&m->slot, i);
        int rc = zt_alloc(dev, d, zbackend_weight_dtype(dev, h->dtype, h->ndim >= 2), h->ndim, h->ne);
        if (rc) {
            qwen3_free(m);
            return zerr_prefix(e, "text encoder layer buffer on the device");
        }
    }
    return ZE_OK;
}

void qwen3_free(qwen3_model *m) {
    if (m->streamed)
        for (int i = 0; i < 8; i++) zt_free(m->dev, slot_tensor(&m->slot, i));
    zw_loader_free(&m->loader);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

/* cos/sin [L, d/2] for positions 0..L-1, rotate-half convention (angle j
 * applies to the pair (j, j + d/2)); float32 arithmetic like transformers. */
static int rope_tables(const qwen3_config *c, int L, float *cs, float *sn) {
    int half = c->head_dim / 2;
    float *inv = malloc((size_t)half * sizeof *inv);
    if (!inv) return ZE_NOMEM;
    float base = (float)c->rope_theta;
    for (int j = 0; j < half; j++) {
        float ex = (float)(2 * j) / (float)c->head_dim; /* arange(0, d, 2, float) / d */
        float p = powf(base, ex);
        inv[j] = 1.0f / p;
    }
    for (int i = 0; i < L; i++)
        for (int j = 0; j < half; j++) {
            float ang = inv[j] * (float)i;
            cs[(size_t)i * half + j] = (float)cos((double)ang);
            sn[(size_t)i * half + j] = (float)sin((double)ang);
        }
    free(inv);
    return ZE_OK;
}

void qwen3_encode(zexec *zx, const qwen3_model *m, const int32_t *ids, int L, zt *out) {
    const qwen3_config *c = &m->cfg;
    const int64_t D = c->hidden_size, d = c->head_dim, F = c->intermediate_size;
    const int hq = c->num_attention_heads, hkv = c->num_key_value_heads;
    const float eps = c->rms_norm_eps;
    const zt_dtype act = zx->be->act;
    const zvec none = {NULL, 0};
    if (!zx_ok(zx)) return;
    if (L < 1 || zt_rows(out) != L || zt_cols(out) != D) {
        char b[64];
        zbackend_fail(zx->be, ZE_INVALID, "qwen3_encode: out must be [%d, %lld], got %s", L, (long long)D,
                      zt_describe(out, b, sizeof b));
        return;
    }
    size_t m0 = zx_mark(zx);

    zt h = zx_tensor2(zx, ZT_F32, L, D); /* residual stream [L, D] */
    if (!m->streamed) {
        zop_embed(zx, &h, &m->embed, ids, L);
    } else if (!zx->measure && zx_ok(zx)) {
        /* the table is in host memory: gather the rows here, upload them */
        size_t es = zt_dtype_size(m->embed.dtype), row = (size_t)D * es;
        char *rows = malloc((size_t)L * row);
        if (!rows) {
            zbackend_fail(zx->be, ZE_NOMEM, "qwen3_encode: out of host memory for %d embedding rows", L);
            return;
        }
        for (int i = 0; i < L; i++) {
            if (ids[i] < 0 || ids[i] >= m->embed.ne[0]) {
                free(rows);
                zbackend_fail(zx->be, ZE_INVALID, "qwen3_encode: token id %d out of range", ids[i]);
                return;
            }
            memcpy(rows + (size_t)i * row, (const char *)m->embed.data + (size_t)ids[i] * row, row);
        }
        zx_upload(zx, &h, rows, m->embed.dtype);
        free(rows);
    }

    zt cs = zx_tensor2(zx, ZT_F32, L, d / 2), sn = zx_tensor2(zx, ZT_F32, L, d / 2);
    if (!zx->measure && zx_ok(zx)) {
        float *tab = malloc((size_t)L * (size_t)d * sizeof *tab);
        if (!tab || rope_tables(c, L, tab, tab + (size_t)L * (d / 2))) {
            free(tab);
            zbackend_fail(zx->be, ZE_NOMEM, "qwen3_encode: out of host memory for RoPE tables (L = %d)", L);
            return;
        }
        zx_upload(zx, &cs, tab, ZT_F32);
        zx_upload(zx, &sn, tab + (size_t)L * (d / 2), ZT_F32);
        free(tab);
    }

    for (int l = 0; l < m->n_run; l++) {
        const qwen3_layer *ly = &m->layers[l];
        if (m->streamed) { /* bring layer l into the device slot */
            for (int i = 0; i < 8; i++) {
                qwen3_layer *hl = (qwen3_layer *)&m->layers[l];
                zx_upload(zx, slot_tensor((qwen3_layer *)&m->slot, i), slot_tensor(hl, i)->data,
                          slot_tensor(hl, i)->dtype);
            }
            ly = &m->slot;
        }
        size_t ml = zx_mark(zx);
        /* attention */
        zt a = zx_tensor2(zx, act, L, D);
        zop_rmsnorm(zx, &a, &h, &ly->in_norm, none, 1, eps);
        zt qkv = zx_tensor2(zx, act, L, (int64_t)(hq + 2 * hkv) * d);
        zop_matmul(zx, &qkv, &a, &ly->wqkv, NULL, 0);
        zt q = zx_tensor3(zx, act, 1, L, hq * d);
        zt k = zx_tensor3(zx, act, 1, L, hkv * d);
        zt v = zx_tensor3(zx, act, 1, L, hkv * d);
        zop_qkv_norm_rope(zx, &q, &k, &v, &qkv, &ly->q_norm, &ly->k_norm, &cs, &sn, hq, hkv, eps, ZROPE_HALF);
        zt o = zx_tensor3(zx, act, 1, L, hq * d);
        zop_attention(zx, &o, &q, &k, &v, hq, hkv, NULL, 1, (float)(1.0 / sqrt((double)d)));
        zop_matmul(zx, &h, &o, &ly->wo, NULL, 1);
        zx_release(zx, ml);
        /* MLP */
        zt b = zx_tensor2(zx, act, L, D);
        zop_rmsnorm(zx, &b, &h, &ly->post_norm, none, 1, eps);
        zt gu = zx_tensor2(zx, act, L, 2 * F);
        zop_matmul(zx, &gu, &b, &ly->w_gate_up, NULL, 0);
        zt g = zx_tensor2(zx, act, L, F);
        zop_silu_mul(zx, &g, &gu);
        zop_matmul(zx, &h, &g, &ly->w_down, NULL, 1);
        zx_release(zx, ml);
        if (!zx_ok(zx)) break;
    }
    zop_copy_rows(zx, out, 0, &h, 0, L);
    zx_release(zx, m0);
}
