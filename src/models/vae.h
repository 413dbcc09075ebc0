/* vae.h - the FLUX.1 AutoencoderKL decoder (spec section 6), NHWC.
 *
 * vae_decode takes the pipeline's latents [B, C, h, w] (F32, NCHW, as the
 * scheduler keeps them), applies z = latents / scaling_factor + shift_factor,
 * and decodes to img [B, 8h, 8w, 3] (NHWC, F32, ~[-1, 1]).
 */
#ifndef ZIMAGE_VAE_H
#define ZIMAGE_VAE_H

#include "../io/weights.h"
#include "../ops/ops.h"
#include "config.h"

typedef struct vae_resnet {
    int ci, co;
    zt n1_w, n1_b;      /* [ci] */
    zt c1_w, c1_b;      /* [co, 9*ci], [co] */
    zt n2_w, n2_b;      /* [co] */
    zt c2_w, c2_b;      /* [co, 9*co], [co] */
    zt sc_w, sc_b;      /* [co, ci], [co] when ci != co (data NULL otherwise) */
} vae_resnet;

typedef struct vae_attn {
    zt gn_w, gn_b;      /* [C] */
    zt wqkv, bqkv;      /* [3C, C], [3C] */
    zt wo, bo;          /* [C, C], [C] */
} vae_attn;

#define VAE_MAX_RES (VAE_MAX_BLOCKS * 4)

typedef struct vae_model {
    vae_config cfg;
    zt conv_in_w, conv_in_b;
    vae_resnet mid_res[2];
    vae_attn mid_attn;
    int n_up;                            /* = n_blocks */
    vae_resnet up_res[VAE_MAX_BLOCKS][4];/* layers_per_block + 1 each */
    zt up_conv_w[VAE_MAX_BLOCKS], up_conv_b[VAE_MAX_BLOCKS]; /* all but the last block */
    zt norm_out_w, norm_out_b;
    zt conv_out_w, conv_out_b;
    zw_loader loader;
} vae_model;

/* Loads the decoder only; encoder tensors in the file are ignored. */
int vae_load(vae_model *m, const vae_config *cfg, zbackend *be, zw_source *src, zerr *e);
void vae_free(vae_model *m);
void vae_decode(zexec *zx, const vae_model *m, const zt *latents, zt *img);

#endif
