/* vae.c - the FLUX.1 AutoencoderKL decoder (spec sections 6.2-6.3), NHWC,
 * written once against ops.h.
 *
 * Dimension letters: B batch, Cl latent channels (16), h, w latent size,
 * nb = len(block_out_channels), ch[i] = block_out_channels[i],
 * top = ch[nb-1], G = norm_num_groups, upscale = 2^(nb-1).
 *
 *   z   = latents / scaling_factor + shift_factor       [B, Cl, h, w] (NCHW)
 *   x   = conv_in(nhwc(z))                               [B, h, w, top]
 *   x   = mid: Res(top), Attn(top), Res(top)
 *   up block i = 0..nb-1 (channels rch[i] = ch[nb-1-i]):
 *         layers_per_block + 1 resnets (the first rch[i-1] -> rch[i]),
 *         then, for all but the last, nearest 2x upsample + conv3x3
 *   img = conv_out(SiLU(GroupNorm(x)))                   [B, upscale*h, upscale*w, 3]
 * Res(x; ci->co) = shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))))))
 * (shortcut = 1x1 conv when ci != co); GroupNorm eps 1e-6 everywhere.
 * Attn: single head of width C over the h*w tokens, GroupNorm first,
 * residual added, scale 1/sqrt(C); q|k|v fused at load.
 *
 * Scratch: two "slots" (ping-pong) each big enough for the largest
 * activation of the decoder, plus one per-resnet temporary; everything else
 * is released after each stage, so the peak is about 3 activations.
 */
#include "vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VAE_EPS 1e-6f

/* ---- loading -------------------------------------------------------------- */

static int load_resnet(vae_model *m, vae_resnet *r, const char *pre, int ci, int co) {
    zw_loader *L = &m->loader;
    char n[192];
    r->ci = ci;
    r->co = co;
#define NM(suffix) (snprintf(n, sizeof n, "%s." suffix, pre), n)
    ZTRY(zw_load1(L, &r->n1_w, NM("norm1.weight"), ci));
    ZTRY(zw_load1(L, &r->n1_b, NM("norm1.bias"), ci));
    ZTRY(zw_load_conv(L, &r->c1_w, NM("conv1.weight"), co, ci, 3, 3));
    ZTRY(zw_load1(L, &r->c1_b, NM("conv1.bias"), co));
    ZTRY(zw_load1(L, &r->n2_w, NM("norm2.weight"), co));
    ZTRY(zw_load1(L, &r->n2_b, NM("norm2.bias"), co));
    ZTRY(zw_load_conv(L, &r->c2_w, NM("conv2.weight"), co, co, 3, 3));
    ZTRY(zw_load1(L, &r->c2_b, NM("conv2.bias"), co));
    if (ci != co) {
        ZTRY(zw_load_conv(L, &r->sc_w, NM("conv_shortcut.weight"), co, ci, 1, 1));
        ZTRY(zw_load1(L, &r->sc_b, NM("conv_shortcut.bias"), co));
    }
#undef NM
    return ZE_OK;
}

/* out = rows of parts[0..n) stacked (dtype of parts[0]), via the host.
 * zw_load_cat cannot do this here: it takes neither 1x1-conv-stored
 * matrices (LDM files) nor 1-D biases.  out is owned by the model. */
static int cat_rows(zw_loader *L, zt *out, const zt *parts, int n) {
    zbackend *be = L->be;
    int64_t rows = 0, cols = zt_cols(&parts[0]);
    for (int i = 0; i < n; i++) rows += zt_rows(&parts[i]);
    int64_t ne2[2] = {rows, cols};
    int nd = parts[0].ndim == 1 ? 1 : 2;
    int64_t ne1[1] = {rows * cols};
    int rc = zt_alloc(be, out, parts[0].dtype, nd, nd == 1 ? ne1 : ne2);
    if (rc) return zerr_set(L->err, rc, "vae: out of memory fusing attention projections");
    float *tmp = malloc((size_t)(rows * cols) * sizeof *tmp);
    if (!tmp) return zerr_set(L->err, ZE_NOMEM, "vae: out of host memory fusing attention projections");
    size_t o = 0;
    for (int i = 0; i < n && rc == ZE_OK; i++) {
        rc = zt_download_f32(be, &parts[i], tmp + o);
        o += (size_t)zt_numel(&parts[i]);
    }
    if (rc == ZE_OK) rc = zt_upload(be, out, tmp, ZT_F32); /* exact: values came from this dtype */
    free(tmp);
    if (rc) return zerr_set(L->err, rc, "vae: fusing attention projections failed");
    return ZE_OK;
}

static int load_attn(vae_model *m, vae_attn *a, const char *pre, int C) {
    zw_loader *L = &m->loader;
    char n[192];
    static const char *const qkv[3] = {"to_q", "to_k", "to_v"};
    zt w[3], b[3];
    snprintf(n, sizeof n, "%s.group_norm.weight", pre);
    ZTRY(zw_load1(L, &a->gn_w, n, C));
    snprintf(n, sizeof n, "%s.group_norm.bias", pre);
    ZTRY(zw_load1(L, &a->gn_b, n, C));
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof n, "%s.%s.weight", pre, qkv[i]);
        ZTRY(zw_load_linear_or_conv1x1(L, &w[i], n, C, C));
        snprintf(n, sizeof n, "%s.%s.bias", pre, qkv[i]);
        ZTRY(zw_load1(L, &b[i], n, C));
    }
    ZTRY(cat_rows(L, &a->wqkv, w, 3));
    ZTRY(cat_rows(L, &a->bqkv, b, 3));
    snprintf(n, sizeof n, "%s.to_out.0.weight", pre);
    ZTRY(zw_load_linear_or_conv1x1(L, &a->wo, n, C, C));
    snprintf(n, sizeof n, "%s.to_out.0.bias", pre);
    ZTRY(zw_load1(L, &a->bo, n, C));
    return ZE_OK;
}

static int vae_load_all(vae_model *m) {
    const vae_config *c = &m->cfg;
    zw_loader *L = &m->loader;
    const int nb = c->n_blocks, top = c->block_out_channels[nb - 1];
    char n[192];
    ZTRY(zw_load_conv(L, &m->conv_in_w, "decoder.conv_in.weight", top, c->latent_channels, 3, 3));
    ZTRY(zw_load1(L, &m->conv_in_b, "decoder.conv_in.bias", top));
    ZTRY(load_resnet(m, &m->mid_res[0], "decoder.mid_block.resnets.0", top, top));
    if (c->mid_block_add_attention) ZTRY(load_attn(m, &m->mid_attn, "decoder.mid_block.attentions.0", top));
    ZTRY(load_resnet(m, &m->mid_res[1], "decoder.mid_block.resnets.1", top, top));
    int prev = top;
    for (int i = 0; i < nb; i++) {
        int co = c->block_out_channels[nb - 1 - i];
        for (int j = 0; j <= c->layers_per_block; j++) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.resnets.%d", i, j);
            ZTRY(load_resnet(m, &m->up_res[i][j], n, j == 0 ? prev : co, co));
        }
        if (i < nb - 1) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0.conv.weight", i);
            ZTRY(zw_load_conv(L, &m->up_conv_w[i], n, co, co, 3, 3));
            snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0.conv.bias", i);
            ZTRY(zw_load1(L, &m->up_conv_b[i], n, co));
        }
        prev = co;
    }
    const int c0 = c->block_out_channels[0];
    ZTRY(zw_load1(L, &m->norm_out_w, "decoder.conv_norm_out.weight", c0));
    ZTRY(zw_load1(L, &m->norm_out_b, "decoder.conv_norm_out.bias", c0));
    ZTRY(zw_load_conv(L, &m->conv_out_w, "decoder.conv_out.weight", c->out_channels, c0, 3, 3));
    ZTRY(zw_load1(L, &m->conv_out_b, "decoder.conv_out.bias", c->out_channels));
    /* the encoder side is not used for text-to-image decoding */
    zw_ignore_prefix(L, "encoder.");
    zw_ignore_prefix(L, "quant_conv.");
    zw_ignore_prefix(L, "post_quant_conv.");
    return zw_check_all_used(L);
}

int vae_load(vae_model *m, const vae_config *cfg, zbackend *be, zw_source *src, zerr *e) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    const vae_config *c = &m->cfg;
    if (c->n_blocks < 1 || c->n_blocks > VAE_MAX_BLOCKS)
        return zerr_set(e, ZE_MODEL, "vae: %d blocks (1..%d supported)", c->n_blocks, VAE_MAX_BLOCKS);
    if (c->layers_per_block < 0 || c->layers_per_block + 1 > 4)
        return zerr_set(e, ZE_UNSUPPORTED, "vae: layers_per_block %d (0..3 supported)", c->layers_per_block);
    if (c->latent_channels < 1 || c->out_channels < 1 || c->norm_num_groups < 1)
        return zerr_set(e, ZE_MODEL, "vae: bad channel counts in config");
    for (int i = 0; i < c->n_blocks; i++)
        if (c->block_out_channels[i] < 1 || c->block_out_channels[i] % c->norm_num_groups)
            return zerr_set(e, ZE_MODEL, "vae: block_out_channels[%d] = %d not divisible by norm_num_groups %d", i,
                            c->block_out_channels[i], c->norm_num_groups);
    if (c->use_quant_conv || c->use_post_quant_conv)
        return zerr_set(e, ZE_UNSUPPORTED, "vae: quant_conv / post_quant_conv are not supported");
    if (!(c->scaling_factor != 0)) return zerr_set(e, ZE_MODEL, "vae: scaling_factor must not be 0");
    m->n_up = c->n_blocks;
    ZTRY(zw_loader_init(&m->loader, be, src, "vae", e));
    int rc = vae_load_all(m);
    if (rc) {
        vae_free(m);
        return rc;
    }
    return ZE_OK;
}

void vae_free(vae_model *m) {
    if (m->loader.be) { /* the fused q|k|v tensors are ours, not the loader's */
        zt_free(m->loader.be, &m->mid_attn.wqkv);
        zt_free(m->loader.be, &m->mid_attn.bqkv);
    }
    zw_loader_free(&m->loader);
    memset(m, 0, sizeof *m);
}

/* ---- forward ------------------------------------------------------------------ */

/* A [B, H, W, C] view of a slot (a 1-D scratch tensor big enough). */
static zt view4(const zt *slot, int64_t B, int64_t H, int64_t W, int64_t C) {
    int64_t ne[4] = {B, H, W, C};
    return zt_reshape(slot, 4, ne);
}

/* out = Res(in).  in, out: views of the two slots (out's numel is set here);
 * `in` is clobbered (used as scratch for the shortcut). */
static void resnet_fwd(zexec *zx, const vae_model *m, const vae_resnet *r, zt *in, zt *out_slot, zt *out) {
    const int G = m->cfg.norm_num_groups;
    const zt_dtype act = zx->be->act;
    const int64_t B = in->ne[0], H = in->ne[1], W = in->ne[2];
    size_t m0 = zx_mark(zx);
    zt a = view4(out_slot, B, H, W, r->ci);
    zop_groupnorm(zx, &a, in, &r->n1_w, &r->n1_b, G, VAE_EPS, 1);
    zt t = zx_tensor4(zx, act, B, H, W, r->co);
    zop_conv2d(zx, &t, &a, &r->c1_w, &r->c1_b, 3, 3, 1, 1, 1, 1, 1);
    zop_groupnorm(zx, &t, &t, &r->n2_w, &r->n2_b, G, VAE_EPS, 1);
    *out = view4(out_slot, B, H, W, r->co);
    if (r->ci == r->co) {
        zop_conv2d_add(zx, out, &t, &r->c2_w, &r->c2_b, in, 3, 3, 1, 1, 1, 1, 1);
    } else {
        /* shortcut into out, then conv2 into the (now dead) input slot */
        zop_conv2d(zx, out, in, &r->sc_w, &r->sc_b, 1, 1, 1, 0, 0, 0, 0);
        zt h2 = view4(in, B, H, W, r->co);
        zop_conv2d(zx, &h2, &t, &r->c2_w, &r->c2_b, 3, 3, 1, 1, 1, 1, 1);
        zop_add(zx, out, out, &h2);
    }
    zx_release(zx, m0);
}

/* out = in + Attn(GN(in)); tokens = the H*W pixels, single head. */
static void attn_fwd(zexec *zx, const vae_model *m, const vae_attn *at, const zt *in, zt *out) {
    const zt_dtype act = zx->be->act;
    const int64_t B = in->ne[0], N = in->ne[1] * in->ne[2], C = in->ne[3];
    size_t m0 = zx_mark(zx);
    zop_groupnorm(zx, out, in, &at->gn_w, &at->gn_b, m->cfg.norm_num_groups, VAE_EPS, 0);
    zt n2 = zt_rows_view(out, 0, B * N);
    zt qkv = zx_tensor2(zx, act, B * N, 3 * C);
    zop_matmul(zx, &qkv, &n2, &at->wqkv, &at->bqkv, 0);
    zt q = zx_tensor3(zx, act, B, N, C), k = zx_tensor3(zx, act, B, N, C), v = zx_tensor3(zx, act, B, N, C);
    zop_qkv_norm_rope(zx, &q, &k, &v, &qkv, NULL, NULL, NULL, NULL, 1, 1, 0.0f, ZROPE_ADJACENT);
    zt o = zx_tensor3(zx, act, B, N, C);
    zop_attention(zx, &o, &q, &k, &v, 1, 1, NULL, 0, (float)(1.0 / sqrt((double)C)));
    zop_matmul(zx, &n2, &o, &at->wo, &at->bo, 0);
    zop_add(zx, out, out, in);
    zx_release(zx, m0);
}

void vae_decode(zexec *zx, const vae_model *m, const zt *latents, zt *img) {
    const vae_config *c = &m->cfg;
    const zt_dtype act = zx->be->act;
    const int nb = c->n_blocks, top = c->block_out_channels[nb - 1];
    if (!zx_ok(zx)) return;
    const int64_t up = (int64_t)1 << (nb - 1);
    if (latents->ndim != 4 || latents->ne[1] != c->latent_channels || img->ndim != 4 ||
        img->ne[0] != latents->ne[0] || img->ne[1] != up * latents->ne[2] || img->ne[2] != up * latents->ne[3] ||
        img->ne[3] != c->out_channels) {
        char a[64], b[64];
        zbackend_fail(zx->be, ZE_INVALID,
                      "vae_decode: latents %s / img %s: want [B, %d, h, w] -> [B, %lld h, %lld w, %d]",
                      zt_describe(latents, a, sizeof a), zt_describe(img, b, sizeof b), c->latent_channels,
                      (long long)up, (long long)up, c->out_channels);
        return;
    }
    const int64_t B = latents->ne[0];
    int64_t H = latents->ne[2], W = latents->ne[3];

    /* slot size: the largest activation (resnet inputs/outputs, upsampled maps) */
    int64_t maxel = B * H * W * (top > c->latent_channels ? top : c->latent_channels);
    {
        int64_t h = H, w = W;
        int prev = top;
        for (int i = 0; i < nb; i++) {
            int co = c->block_out_channels[nb - 1 - i];
            int64_t e = B * h * w * (prev > co ? prev : co);
            if (e > maxel) maxel = e;
            if (i < nb - 1) {
                h *= 2;
                w *= 2;
                if (B * h * w * co > maxel) maxel = B * h * w * co;
            }
            prev = co;
        }
    }
    size_t m0 = zx_mark(zx);
    zt slot[2];
    slot[0] = zx_tensor(zx, act, 1, &maxel);
    slot[1] = zx_tensor(zx, act, 1, &maxel);
    int cur = 0; /* slot holding the current activation */
    zt x;

    /* unnormalize + NCHW -> NHWC + conv_in */
    {
        size_t m1 = zx_mark(zx);
        zt z = zx_tensor4(zx, ZT_F32, B, c->latent_channels, H, W);
        zop_affine(zx, &z, latents, 1.0f / c->scaling_factor, c->shift_factor);
        zt zn = view4(&slot[1], B, H, W, c->latent_channels);
        zop_nchw_to_nhwc(zx, &zn, &z);
        x = view4(&slot[0], B, H, W, top);
        zop_conv2d(zx, &x, &zn, &m->conv_in_w, &m->conv_in_b, 3, 3, 1, 1, 1, 1, 1);
        zx_release(zx, m1);
    }

    /* mid block */
    zt y;
    resnet_fwd(zx, m, &m->mid_res[0], &x, &slot[1 - cur], &y);
    x = y;
    cur = 1 - cur;
    if (c->mid_block_add_attention) {
        y = view4(&slot[1 - cur], B, H, W, top);
        attn_fwd(zx, m, &m->mid_attn, &x, &y);
        x = y;
        cur = 1 - cur;
    }
    resnet_fwd(zx, m, &m->mid_res[1], &x, &slot[1 - cur], &y);
    x = y;
    cur = 1 - cur;

    /* up blocks */
    for (int i = 0; i < nb; i++) {
        for (int j = 0; j <= c->layers_per_block; j++) {
            resnet_fwd(zx, m, &m->up_res[i][j], &x, &slot[1 - cur], &y);
            x = y;
            cur = 1 - cur;
        }
        if (i < nb - 1) {
            int64_t C = x.ne[3];
            y = view4(&slot[1 - cur], B, 2 * H, 2 * W, C);
            zop_upsample2x(zx, &y, &x);
            H *= 2;
            W *= 2;
            x = view4(&slot[cur], B, H, W, C);
            zop_conv2d(zx, &x, &y, &m->up_conv_w[i], &m->up_conv_b[i], 3, 3, 1, 1, 1, 1, 1);
        }
        if (!zx_ok(zx)) break;
    }

    /* out */
    y = view4(&slot[1 - cur], B, H, W, x.ne[3]);
    zop_groupnorm(zx, &y, &x, &m->norm_out_w, &m->norm_out_b, c->norm_num_groups, VAE_EPS, 1);
    zop_conv2d(zx, img, &y, &m->conv_out_w, &m->conv_out_b, 3, 3, 1, 1, 1, 1, 1);
    zx_release(zx, m0);
}
