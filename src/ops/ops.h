/* ops.h - the tensor type and the op interface every model is written against.
 *
 * Models (qwen3.c, dit.c, vae.c) call the zop_* functions below and never name
 * a backend.  A backend (ops/cpu, ops/cuda) fills a zbackend_vt with one
 * function per op; ops.c validates shapes and dtypes once, for every backend,
 * and then dispatches.
 *
 * Tensors
 *   A zt is a dense, contiguous, row-major array in the backend's memory (host
 *   memory for the CPU backend, device memory for CUDA).  ne[0] is the
 *   OUTERMOST dimension: a [M, K] matrix has ne = {M, K}.  "rows" of a tensor
 *   is the product of all dimensions but the last, "cols" is the last one.
 *
 *   dtypes: activations are F32 on the CPU backend and BF16 (or F32 where the
 *   model asks for it, e.g. the residual stream) on CUDA; ops accept any of
 *   F32/BF16/F16 for every activation argument unless stated otherwise.
 *   Weights come in two classes, chosen by the backend at load time
 *   (zbackend_weight_dtype): "matrix" weights (Linear, conv, embedding tables)
 *   may be F32, BF16 or F16; "vector" weights (norm scales, biases, pad
 *   tokens) are always F32.
 *
 * Execution and errors
 *   Ops run inside a zexec: the backend, a scratch arena, and a STICKY status.
 *   After the first failure every later op is a no-op, so model code is
 *   written straight-line and checks zx->status once per layer or at the end.
 *   In "measure" mode (zx->measure = 1) ops do nothing and the arena only
 *   records its high-water mark: a forward pass run once in measure mode
 *   tells how much scratch to allocate up front (nothing is allocated later).
 *
 * Layouts used by the models
 *   token streams  [B, N, C]            (C = channels, heads packed as H*d)
 *   images / VAE   [B, H, W, C]  NHWC
 *   latents        [B, C, H, W]  NCHW   (what the scheduler and diffusers use)
 *   conv weights   [Co, kh*kw*Ci]       (OHWI, flattened; the loader permutes
 *                                        the stored OIHW once)
 */
#ifndef ZIMAGE_OPS_H
#define ZIMAGE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../base/err.h"

typedef enum { ZT_F32 = 0, ZT_BF16 = 1, ZT_F16 = 2 } zt_dtype;

#define ZT_MAXDIM 4

typedef struct zt {
    void *data;             /* backend memory; NULL in measure mode         */
    zt_dtype dtype;
    int ndim;
    int64_t ne[ZT_MAXDIM];  /* shape, outermost first                       */
} zt;

size_t zt_dtype_size(zt_dtype t);
const char *zt_dtype_name(zt_dtype t);
int64_t zt_numel(const zt *t);
size_t zt_nbytes(const zt *t);
int64_t zt_cols(const zt *t);   /* ne[ndim-1]                                */
int64_t zt_rows(const zt *t);   /* numel / cols                              */
/* "[2, 4224, 3840] bf16" into buf; returns buf. */
const char *zt_describe(const zt *t, char *buf, size_t n);
/* A view of rows [r0, r0+n) of t (flattened to 2-D [n, cols]). */
zt zt_rows_view(const zt *t, int64_t r0, int64_t n);
/* Same data, another shape (numel must match; checked by the caller). */
zt zt_reshape(const zt *t, int ndim, const int64_t *ne);

typedef enum { ZROPE_ADJACENT = 0, ZROPE_HALF = 1 } zrope_pairing;

/* A per-sample vector taken from a [B, S] tensor: sample b uses
 * t->data[b*S + off ... b*S + off + n).  Used for adaLN scales and gates;
 * the models pass F32 tensors (backends should accept any float dtype). */
typedef struct {
    const zt *t;
    int64_t off;
} zvec;

struct zbackend;

/* ---- backend vtable --------------------------------------------------- */
typedef struct zbackend_vt {
    const char *name;
    void (*destroy)(struct zbackend *be);

    /* memory */
    int (*alloc)(struct zbackend *be, size_t bytes, void **out);
    void (*free)(struct zbackend *be, void *p);
    /* host <-> backend copies of raw bytes */
    int (*upload)(struct zbackend *be, void *dst, const void *src, size_t bytes);
    int (*download)(struct zbackend *be, void *dst, const void *src, size_t bytes);
    int (*sync)(struct zbackend *be);
    /* bytes of backend memory in use now / at peak (0 if unknown) */
    void (*mem_stats)(struct zbackend *be, size_t *in_use, size_t *peak);

    /* ops (see the zop_* wrappers for the contracts) */
    void (*matmul)(struct zbackend *, zt *y, const zt *x, const zt *w, const zt *bias, int accumulate);
    void (*embed)(struct zbackend *, zt *y, const zt *table, const int32_t *ids, int64_t n);
    void (*rmsnorm)(struct zbackend *, zt *y, const zt *x, const zt *w, zvec scale, int64_t batch, float eps);
    void (*layernorm)(struct zbackend *, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch, float eps);
    void (*norm_gate_add)(struct zbackend *, zt *x, const zt *y, const zt *w, zvec gate, int64_t batch, float eps);
    /* optional (NULL: ops.c runs norm_gate_add, then rmsnorm) */
    void (*norm_gate_add_norm)(struct zbackend *, zt *x, const zt *y, const zt *w, zvec gate, zt *h, const zt *w2,
                               zvec scale2, int64_t batch, float eps);
    void (*groupnorm)(struct zbackend *, zt *y, const zt *x, const zt *w, const zt *b, int groups, float eps, int silu);
    void (*qkv_norm_rope)(struct zbackend *, zt *q, zt *k, zt *v, const zt *qkv, const zt *wq, const zt *wk,
                          const zt *cos, const zt *sin, int hq, int hkv, float eps, zrope_pairing pairing);
    void (*attention)(struct zbackend *, zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv,
                      const int32_t *kv_len, int causal, float scale);
    void (*silu_mul)(struct zbackend *, zt *y, const zt *gu);
    void (*silu)(struct zbackend *, zt *y, const zt *x);
    void (*add)(struct zbackend *, zt *y, const zt *a, const zt *b);
    void (*axpby)(struct zbackend *, zt *y, float a, const zt *x, float b);
    void (*affine)(struct zbackend *, zt *y, const zt *x, float a, float b);
    void (*copy_rows)(struct zbackend *, zt *dst, int64_t dst_row, const zt *src, int64_t src_row, int64_t n);
    void (*fill_rows)(struct zbackend *, zt *dst, int64_t row0, int64_t n, const zt *row);
    void (*timestep_embed)(struct zbackend *, zt *y, const zt *t, float scale, float max_period);
    void (*patchify)(struct zbackend *, zt *tok, const zt *x, int p);
    void (*unpatchify)(struct zbackend *, zt *x, const zt *tok, int p);
    void (*conv2d)(struct zbackend *, zt *y, const zt *x, const zt *w, const zt *b, int kh, int kw, int stride,
                   int pad_t, int pad_l, int pad_b, int pad_r);
    /* optional (NULL: ops.c runs conv2d, then add) */
    void (*conv2d_add)(struct zbackend *, zt *y, const zt *x, const zt *w, const zt *b, const zt *res, int kh, int kw,
                       int stride, int pad_t, int pad_l, int pad_b, int pad_r);
    void (*upsample2x)(struct zbackend *, zt *y, const zt *x);
    void (*nchw_to_nhwc)(struct zbackend *, zt *y, const zt *x);
    void (*cfg_combine)(struct zbackend *, zt *out, const zt *pos, const zt *neg, float w, float norm_k);

    /* Optional (NULL where unsupported, e.g. the CPU): record the ops issued
     * between capture_begin and capture_end into a graph that graph_launch
     * replays with the same pointers and scalars (CUDA graphs).  Nothing
     * may synchronize with the host while capturing. */
    int (*capture_begin)(struct zbackend *be);
    int (*capture_end)(struct zbackend *be, void **graph);
    int (*graph_launch)(struct zbackend *be, void *graph);
    void (*graph_destroy)(struct zbackend *be, void *graph);
    /* Optional: fill t with deterministic random values in [-scale, scale]
     * + offset on the device (fast --random-weights); NULL: host fill. */
    int (*fill_random)(struct zbackend *be, zt *t, uint64_t seed, float scale, float offset);
    /* Optional: the image t (values in [-1, 1], any float dtype) as 8-bit
     * values into host memory dst (numel bytes), converted exactly as
     * zimg_to_u8 (io/png.h) converts the F32 download; NULL: the caller
     * downloads F32 and converts on the host. */
    int (*download_rgb8)(struct zbackend *be, const zt *t, uint8_t *dst);
} zbackend_vt;

typedef struct zbackend {
    const zbackend_vt *vt;
    zerr *err;        /* where ops report failures (owned by the context)   */
    int status;       /* sticky: first failing op's code                     */
    int threads;      /* CPU threads to use (CPU backend)                    */
    zt_dtype act;     /* preferred activation dtype                          */
    int is_host;      /* 1 if tensor data is directly readable by the host   */
    void *impl;       /* backend private state                               */
} zbackend;

/* Create a backend by name: "cpu", "cuda", "cuda:N" or NULL/"auto" (CUDA if a
 * GPU is usable, else CPU). */
int zbackend_create(zbackend **out, const char *device, int threads, zerr *err);
void zbackend_destroy(zbackend *be);
/* Storage dtype this backend uses for a weight stored as `stored`.
 * is_matrix: 1 for Linear/conv/embedding matrices, 0 for vectors. */
zt_dtype zbackend_weight_dtype(const zbackend *be, zt_dtype stored, int is_matrix);
/* Record a backend failure (sticky); returns code. */
int zbackend_fail(zbackend *be, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Allocate / free a tensor's storage directly (weights, persistent state). */
int zt_alloc(zbackend *be, zt *t, zt_dtype dt, int ndim, const int64_t *ne);
void zt_free(zbackend *be, zt *t);
/* Copy host data into t, converting from src_dtype to t->dtype. */
int zt_upload(zbackend *be, zt *t, const void *src, zt_dtype src_dtype);
/* Copy t to host as float32 (n = numel floats). */
int zt_download_f32(zbackend *be, const zt *t, float *dst);

/* ---- scratch arena + execution context -------------------------------- */
typedef struct zarena {
    char *base;     /* backend memory (NULL while measuring)                  */
    size_t cap;     /* bytes                                                  */
    size_t off;     /* bump pointer                                           */
    size_t peak;    /* high-water mark                                        */
} zarena;

typedef struct zexec {
    zbackend *be;
    zarena *arena;
    int measure;    /* 1: ops are no-ops, arena only counts                   */
    int status;     /* sticky status of this run (mirrors be->status)         */
} zexec;

/* Begin a run: clears the sticky status. */
void zx_begin(zexec *zx, zbackend *be, zarena *arena, int measure);
/* Scratch tensor from the arena (256-byte aligned).  On overflow the status
 * becomes ZE_NOMEM and the tensor has data == NULL. */
zt zx_tensor(zexec *zx, zt_dtype dt, int ndim, const int64_t *ne);
zt zx_tensor2(zexec *zx, zt_dtype dt, int64_t n0, int64_t n1);
zt zx_tensor3(zexec *zx, zt_dtype dt, int64_t n0, int64_t n1, int64_t n2);
zt zx_tensor4(zexec *zx, zt_dtype dt, int64_t n0, int64_t n1, int64_t n2, int64_t n3);
size_t zx_mark(zexec *zx);
void zx_release(zexec *zx, size_t mark);
/* Host -> tensor copy inside a run (no-op while measuring). */
void zx_upload(zexec *zx, zt *t, const void *src, zt_dtype src_dtype);
int zx_ok(const zexec *zx);

int zarena_alloc(zbackend *be, zarena *a, size_t bytes);
void zarena_free(zbackend *be, zarena *a);

/* ---- ops ---------------------------------------------------------------
 * All outputs must not alias inputs unless stated.  `batch` arguments split
 * the rows of x into `batch` equal groups (samples); zvec scale/gate give one
 * vector per sample.  A zvec with t == NULL means "absent". */

/* y[M,N] = (accumulate ? y : 0) + x[M,K] · w[N,K]^T + bias[N] (bias may be NULL). */
void zop_matmul(zexec *zx, zt *y, const zt *x, const zt *w, const zt *bias, int accumulate);
/* y[n, D] = table[ids[i], :]; ids are host int32. */
void zop_embed(zexec *zx, zt *y, const zt *table, const int32_t *ids, int64_t n);
/* y = x / sqrt(mean(x^2) + eps) * w * (1 + scale_b)   over the last dim.
 * w may be NULL (no affine); scale.t may be NULL.  y may alias x. */
void zop_rmsnorm(zexec *zx, zt *y, const zt *x, const zt *w, zvec scale, int64_t batch, float eps);
/* y = (x - mean) / sqrt(var + eps) * w + b, then * (1 + scale_b).  w, b may be NULL. */
void zop_layernorm(zexec *zx, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch, float eps);
/* x += tanh(gate_b) * RMSNorm(y) * w   (gate.t NULL: x += RMSNorm(y) * w).
 * x is the residual stream (F32 recommended); y [rows, D]. */
void zop_norm_gate_add(zexec *zx, zt *x, const zt *y, const zt *w, zvec gate, int64_t batch, float eps);
/* zop_norm_gate_add, then h = RMSNorm(x) * w2 * (1 + scale2_b) of the
 * updated x (the next sub-layer's pre-norm, same eps): backends that fuse it
 * read and write the residual stream once instead of three times.  Same
 * results as the two ops in sequence.  h [rows, D] must not alias x or y. */
void zop_norm_gate_add_norm(zexec *zx, zt *x, const zt *y, const zt *w, zvec gate, zt *h, const zt *w2, zvec scale2,
                            int64_t batch, float eps);
/* NHWC group norm over (H, W, C/groups), optional SiLU after.  y may alias x. */
void zop_groupnorm(zexec *zx, zt *y, const zt *x, const zt *w, const zt *b, int groups, float eps, int silu);
/* Split fused projections qkv[R, (hq + 2*hkv)*d] into q[R, hq*d], k[R, hkv*d],
 * v[R, hkv*d]; q and k get per-head RMSNorm (wq, wk: [d], may be NULL for no
 * norm) and RoPE with per-row tables cos/sin [R, d/2] (F32).
 * ZROPE_ADJACENT rotates pairs (2j, 2j+1) by angle j; ZROPE_HALF rotates
 * (j, j + d/2) by angle j.  cos == NULL: no rotation. */
void zop_qkv_norm_rope(zexec *zx, zt *q, zt *k, zt *v, const zt *qkv, const zt *wq, const zt *wk, const zt *cos,
                       const zt *sin, int hq, int hkv, float eps, zrope_pairing pairing);
/* o[B, Nq, hq*d] = softmax(q·k^T * scale + mask) · v with q [B, Nq, hq*d],
 * k, v [B, Nk, hkv*d].  Query head h uses kv head h / (hq/hkv).
 * kv_len (host, [B]) masks keys j >= kv_len[b] (NULL: none).  causal masks
 * key j > query i.  Rows of fully masked queries are undefined. */
void zop_attention(zexec *zx, zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv, const int32_t *kv_len,
                   int causal, float scale);
/* y[R, F] = silu(gu[:, 0:F]) * gu[:, F:2F]. */
void zop_silu_mul(zexec *zx, zt *y, const zt *gu);
/* y = x * sigmoid(x). y may alias x. */
void zop_silu(zexec *zx, zt *y, const zt *x);
/* y = a + b (same numel).  y may alias a or b. */
void zop_add(zexec *zx, zt *y, const zt *a, const zt *b);
/* y = a*x + b*y (same numel). */
void zop_axpby(zexec *zx, zt *y, float a, const zt *x, float b);
/* y = a*x + b elementwise (same numel, dtype converted).  y may alias x. */
void zop_affine(zexec *zx, zt *y, const zt *x, float a, float b);
/* dst rows [dst_row, +n) = src rows [src_row, +n) (same cols; dtype converted). */
void zop_copy_rows(zexec *zx, zt *dst, int64_t dst_row, const zt *src, int64_t src_row, int64_t n);
/* dst rows [row0, +n) = row (a [1, cols] or [cols] tensor, any dtype:
 * converted to dst's dtype). */
void zop_fill_rows(zexec *zx, zt *dst, int64_t row0, int64_t n, const zt *row);
/* y[B, D] = [cos(tau*f_0..f_{D/2-1}) | sin(...)], tau = t_b * scale,
 * f_k = exp(-ln(max_period) * k / (D/2)); t is a [B] F32 tensor. */
void zop_timestep_embed(zexec *zx, zt *y, const zt *t, float scale, float max_period);
/* tok[B, (H/p)*(W/p), p*p*C] from x[B, C, H, W]; feature order (ph, pw, c), c fastest. */
void zop_patchify(zexec *zx, zt *tok, const zt *x, int p);
/* x[B, C, H, W] from the first (H/p)*(W/p) rows of each sample of tok[B, N, p*p*C]. */
void zop_unpatchify(zexec *zx, zt *x, const zt *tok, int p);
/* NHWC convolution: y[B, Ho, Wo, Co] = conv(x[B, H, W, Ci], w[Co, kh*kw*Ci]) + b[Co]
 * with zero padding (top, left, bottom, right) and stride. b may be NULL. */
void zop_conv2d(zexec *zx, zt *y, const zt *x, const zt *w, const zt *b, int kh, int kw, int stride, int pad_t,
                int pad_l, int pad_b, int pad_r);
/* y = conv2d(x) + b + res (res: same shape as y, must not alias y or x):
 * a residual connection in the convolution's epilogue on backends that fuse
 * it; same results as zop_conv2d followed by zop_add up to rounding. */
void zop_conv2d_add(zexec *zx, zt *y, const zt *x, const zt *w, const zt *b, const zt *res, int kh, int kw, int stride,
                    int pad_t, int pad_l, int pad_b, int pad_r);
/* NHWC nearest-neighbour 2x upsample: y[B, 2H, 2W, C]. */
void zop_upsample2x(zexec *zx, zt *y, const zt *x);
/* y[B, H, W, C] = x[B, C, H, W]. */
void zop_nchw_to_nhwc(zexec *zx, zt *y, const zt *x);
/* Classifier-free guidance on [B, ...] F32 tensors, per sample b:
 *   out = pos + w * (pos - neg);
 *   if norm_k > 0 and ||out|| > norm_k * ||pos||: out *= norm_k * ||pos|| / ||out||
 * (L2 norms over the whole sample).  out may alias pos. */
void zop_cfg_combine(zexec *zx, zt *out, const zt *pos, const zt *neg, float w, float norm_k);

/* Op profiler (debugging aid, see ops.c): zop_profiling() reads
 * ZIMAGE_PROFILE once and says whether it is on; the phase names the rows
 * ("te", "dit", "vae", ...); ops issued while capturing a graph are not
 * timed. */
int zop_profiling(void);
void zop_profile_phase(const char *phase);
void zop_profile_capturing(int on);
/* Forget the rows so far (e.g. after a warm-up run). */
void zop_profile_reset(void);

#endif
