/* dit.h - Z-Image's single-stream DiT, ZImageTransformer2DModel (spec section 4).
 *
 * Dimension letters: B batch, C latent channels (16), H,W latent size,
 * p patch (2), Nx = (H/p)(W/p) image tokens, Nxp = Nx padded to 32,
 * L caption tokens, Lp = L padded to 32, N = Nxp + Lp unified length,
 * D model dim, d head dim, Fh FFN hidden, A adaLN dim (256).
 *
 * Two stages:
 *   dit_batch_prepare  once per generation: caption stream (cap_embedder +
 *                      context_refiner), RoPE tables, key lengths, for a
 *                      batch of B captions (lengths may differ) and one
 *                      latent size.  Lives in a "persistent" arena.
 *   dit_forward        once per step: the rest, for latents [B, C, H, W].
 * Sequence per sample = [image tokens (Nxp), caption tokens (Lp)], padded to
 * Nmax = Nxp + max Lp across the batch; batch-pad keys are masked.
 */
#ifndef ZIMAGE_DIT_H
#define ZIMAGE_DIT_H

#include "../io/weights.h"
#include "../ops/ops.h"
#include "config.h"

#define DIT_MAX_BATCH 64

typedef struct dit_block {
    zt attn_norm1, attn_norm2, ffn_norm1, ffn_norm2; /* [D] F32 */
    zt wqkv;        /* [3D, D] q|k|v rows */
    zt q_norm, k_norm; /* [d] F32 */
    zt wo;          /* [D, D] */
    zt w13;         /* [2Fh, D] w1|w3 rows */
    zt w2;          /* [D, Fh] */
    int64_t mod_off;/* this block's [4D] slice of the step's modulation vector
                       (column offset in dit_model.ada_all_*); -1 = unmodulated */
} dit_block;

typedef struct dit_model {
    dit_config cfg;
    zt x_emb_w, x_emb_b;       /* [D, p*p*C], [D] */
    zt t_w1, t_b1, t_w2, t_b2; /* [1024, 256], [1024], [A, 1024], [A] */
    zt cap_norm;               /* [cap_feat_dim] F32 */
    zt cap_w, cap_b;           /* [D, cap_feat_dim], [D] */
    zt x_pad, cap_pad;         /* [1, D] F32 */
    zt final_w, final_b;       /* [p*p*C, D], [p*p*C] */
    zt final_ada_w, final_ada_b; /* [D, A], [D] */
    /* adaLN weights of every modulated block (noise_refiner.*, then layers.*),
     * rows concatenated so that one GEMM per step gives all modulation
     * vectors: [n_mod * 4D, A] and [n_mod * 4D] F32 */
    zt ada_all_w, ada_all_b;
    int n_mod;
    dit_block *noise_refiner;  /* n_refiner_layers */
    dit_block *context_refiner;/* n_refiner_layers */
    dit_block *layers;         /* n_layers */
    zw_loader loader;
} dit_model;

typedef struct dit_batch {
    int B;
    int H, W;                  /* latent size */
    int Ht, Wt, Nx, Nxp;
    int L[DIT_MAX_BATCH], Lp[DIT_MAX_BATCH];
    int Lpmax, Nmax;
    int32_t kv_len_c[DIT_MAX_BATCH]; /* caption stream key lengths (Lp_b) */
    int32_t kv_len_u[DIT_MAX_BATCH]; /* unified stream key lengths (Nxp + Lp_b) */
    zt cap;                    /* [B, Lpmax, D]   refined caption streams   */
    zt cos_x, sin_x;           /* [B*Nxp, d/2]    image tokens              */
    zt cos_u, sin_u;           /* [B*Nmax, d/2]   unified sequence          */
} dit_batch;

int dit_load(dit_model *m, const dit_config *cfg, zbackend *be, zw_source *src, zerr *e);
void dit_free(dit_model *m);

/* feats[b]: caption features [L_b, cap_feat_dim] (any float dtype).
 * Builds *bt in zx's arena (keep that arena alive for all steps). */
void dit_batch_prepare(zexec *zx, const dit_model *m, const zt *const *feats, int B, int H, int W, dit_batch *bt);

/* out[B, C, H, W] (F32) = DiT(x[B, C, H, W] F32, t[B] F32) where t is the
 * pipeline's t = 1 - sigma (the model sees t_scale * t).  Returns the raw
 * model output (~ x0 - eps); the caller negates for the Euler step. */
void dit_forward(zexec *zx, const dit_model *m, const dit_batch *bt, const zt *x, const zt *t, zt *out);

#endif
