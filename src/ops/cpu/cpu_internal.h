/* cpu_internal.h - private to the CPU backend (the cpu_*.c files).
 *
 * What lives here
 *   - the backend's private state (zcpu): memory accounting and the grow-once
 *     scratch buffers that ops use instead of allocating per call;
 *   - dtype helpers: every activation argument may be F32, BF16 or F16; ops
 *     read through zcpu_in() (a direct pointer for F32, else the values widened
 *     into a caller buffer) and write through zcpu_out()/zcpu_put();
 *   - the GEMM core zcpu_gemm() used by matmul and conv2d;
 *   - the prototypes of every op function the vtable points at.
 *
 * Threads
 *   All parallelism is OpenMP (`num_threads(be->threads)`).  OpenBLAS runs
 *   single-threaded inside the OpenMP regions (zcpu_gemm splits the GEMM
 *   across the OpenMP threads itself), so there is only one thread pool and no
 *   two pools spin against each other on few cores (see docs/NOTES.md).
 *
 * Scratch
 *   zcpu_scratch(be, slot, bytes) returns a 64-byte aligned buffer of at least
 *   `bytes`, owned by the backend; it only grows (realloc when a larger request
 *   arrives), so a steady-state run allocates nothing.  A slot is used by one
 *   op at a time; ops that need per-thread space ask for threads * slice bytes
 *   and give thread t the t-th slice (zcpu_slice() rounds slices to 64 B).
 *   Scratch is requested BEFORE entering a parallel region.
 */
#ifndef ZIMAGE_CPU_INTERNAL_H
#define ZIMAGE_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../base/half.h"
#include "cpu_backend.h"

/* Scratch slots: one per simultaneous use inside a call chain. */
enum {
    ZCPU_SCR_WTILE = 0, /* zcpu_gemm: widened weight tiles (per thread)          */
    ZCPU_SCR_X,         /* matmul: F32 copy of a non-F32 x chunk                  */
    ZCPU_SCR_Y,         /* matmul: F32 accumulator for a non-F32 y chunk          */
    ZCPU_SCR_COL,       /* conv2d: im2col tiles (per thread)                      */
    ZCPU_SCR_CONVY,     /* conv2d: F32 output tile for a non-F32 y                */
    ZCPU_SCR_THREAD,    /* per-thread working rows (attention, qkv, norms)        */
    ZCPU_SCR_AUX,       /* small per-call tables (gates, group statistics)        */
    ZCPU_SCR_N
};

/* Budgets (floats).  They bound the scratch every op may take. */
#define ZCPU_WTILE_FLOATS (1 << 22)  /* per thread: widened weight tile (16 MiB)    */
#define ZCPU_COL_FLOATS (1 << 21)    /* per thread: share of the im2col tile        */
#define ZCPU_SCORE_FLOATS (1 << 21)  /* per thread: attention score block           */
#define ZCPU_CHUNK 2048              /* elementwise ops: values per stack chunk     */

typedef struct zcpu {
    size_t in_use, peak; /* bytes from alloc() + scratch (updated atomically)   */
    struct {
        void *p;
        size_t cap;
    } scr[ZCPU_SCR_N];
} zcpu;

/* ---- backend internals (cpu_backend.c) ----------------------------------- */
void *zcpu_scratch(zbackend *be, int slot, size_t bytes);
static inline size_t zcpu_slice(size_t bytes) { return (bytes + 63) & ~(size_t)63; }
/* n values of dtype dt -> f32 (and back, round to nearest even). */
void zcpu_widen(float *dst, const void *src, zt_dtype dt, int64_t n);
void zcpu_narrow(void *dst, zt_dtype dt, const float *src, int64_t n);
/* Any dtype -> any dtype, n values (same dtype: memmove). */
void zcpu_convert(void *dst, zt_dtype dd, const void *src, zt_dtype sd, int64_t n);

/* Element i of a buffer of dtype dt, as f32 / stored from f32. */
static inline float zcpu_ld(const void *p, zt_dtype dt, int64_t i) {
    switch (dt) {
    case ZT_F32: return ((const float *)p)[i];
    case ZT_BF16: return zbf16_to_f32(((const uint16_t *)p)[i]);
    default: return zf16_to_f32(((const uint16_t *)p)[i]);
    }
}
static inline void zcpu_st(void *p, zt_dtype dt, int64_t i, float v) {
    switch (dt) {
    case ZT_F32: ((float *)p)[i] = v; break;
    case ZT_BF16: ((uint16_t *)p)[i] = zf32_to_bf16(v); break;
    default: ((uint16_t *)p)[i] = zf32_to_f16(v); break;
    }
}

/* ---- vector math (cpu_elementwise.c) -----------------------------------------
 * e^x in f32 without libm, 4 lanes at a time (GCC/clang vector extensions:
 * SSE on x86-64, NEON on arm64).  Cephes expf:
 * x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, times 2^n; max relative
 * error 8e-8 on [-87, 88] (measured in test_ops_cpu); x < -87.3 gives 0, x > 88 is clamped
 * to e^88, NaN stays NaN. */
/* x[i] = e^(x[i] - sub), in place */
void zcpu_vexp_sub(float *x, int64_t n, float sub);
/* y[i] = x[i] / (1 + e^-x[i])   (silu as torch computes it; y may be x) */
void zcpu_vsilu(float *y, const float *x, int64_t n);
/* y[i] = silu(g[i]) * u[i] */
void zcpu_vsilu_mul(float *y, const float *g, const float *u, int64_t n);
/* max of x[0, n), n >= 1 */
float zcpu_vmax(const float *x, int64_t n);

/* Byte address of element `off` of t. */
static inline void *zcpu_at(const zt *t, int64_t off) {
    return (char *)t->data + (size_t)off * zt_dtype_size(t->dtype);
}
/* F32 view of elements [off, off+n) of t: t's own memory if F32, else the
 * values widened into buf (>= n floats). */
static inline const float *zcpu_in(const zt *t, int64_t off, int64_t n, float *buf) {
    if (t->dtype == ZT_F32) return (const float *)t->data + off;
    zcpu_widen(buf, zcpu_at(t, off), t->dtype, n);
    return buf;
}
/* Where to write n F32 results destined for elements [off, off+n) of t: t's
 * memory if F32, else buf; then zcpu_put() stores buf into t. */
static inline float *zcpu_out(const zt *t, int64_t off, float *buf) {
    return t->dtype == ZT_F32 ? (float *)t->data + off : buf;
}
static inline void zcpu_put(const zt *t, int64_t off, int64_t n, const float *buf) {
    if (t->dtype != ZT_F32) zcpu_narrow(zcpu_at(t, off), t->dtype, buf, n);
}

/* ---- GEMM core (cpu_matmul.c) ----------------------------------------------
 * y[M, N] (row stride ldy) = x[M, K] (row stride ldx) · w[N, K]^T + beta * y,
 * all F32 except w, which may be F32, BF16 or F16 (widened tile by tile).
 * Runs on all threads.  Returns 0, or a negative code after zbackend_fail. */
int zcpu_gemm(zbackend *be, int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx, const zt *w, float *y,
              int64_t ldy, float beta);
/* Single-threaded sgemm for use inside OpenMP regions:
 * C[m, n] = alpha * A[m, k] · op(B) + beta * C, op(B) = B^T ([n, k]) if bt else B ([k, n]). */
void zcpu_sgemm1(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                 int64_t ldb, int bt, float beta, float *c, int64_t ldc);

/* ---- ops (the vtable) ------------------------------------------------------- */
void zcpu_matmul(zbackend *be, zt *y, const zt *x, const zt *w, const zt *bias, int accumulate);
void zcpu_embed(zbackend *be, zt *y, const zt *table, const int32_t *ids, int64_t n);
void zcpu_rmsnorm(zbackend *be, zt *y, const zt *x, const zt *w, zvec scale, int64_t batch, float eps);
void zcpu_layernorm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch,
                    float eps);
void zcpu_norm_gate_add(zbackend *be, zt *x, const zt *y, const zt *w, zvec gate, int64_t batch, float eps);
void zcpu_groupnorm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, int groups, float eps, int silu);
void zcpu_qkv_norm_rope(zbackend *be, zt *q, zt *k, zt *v, const zt *qkv, const zt *wq, const zt *wk,
                        const zt *cos, const zt *sin, int hq, int hkv, float eps, zrope_pairing pairing);
void zcpu_attention(zbackend *be, zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv,
                    const int32_t *kv_len, int causal, float scale);
void zcpu_silu_mul(zbackend *be, zt *y, const zt *gu);
void zcpu_silu(zbackend *be, zt *y, const zt *x);
void zcpu_add(zbackend *be, zt *y, const zt *a, const zt *b);
void zcpu_axpby(zbackend *be, zt *y, float a, const zt *x, float b);
void zcpu_affine(zbackend *be, zt *y, const zt *x, float a, float b);
void zcpu_copy_rows(zbackend *be, zt *dst, int64_t dst_row, const zt *src, int64_t src_row, int64_t n);
void zcpu_fill_rows(zbackend *be, zt *dst, int64_t row0, int64_t n, const zt *row);
void zcpu_timestep_embed(zbackend *be, zt *y, const zt *t, float scale, float max_period);
void zcpu_cfg_combine(zbackend *be, zt *out, const zt *pos, const zt *neg, float w, float norm_k);
void zcpu_patchify(zbackend *be, zt *tok, const zt *x, int p);
void zcpu_unpatchify(zbackend *be, zt *x, const zt *tok, int p);
void zcpu_nchw_to_nhwc(zbackend *be, zt *y, const zt *x);
void zcpu_upsample2x(zbackend *be, zt *y, const zt *x);
void zcpu_conv2d(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, int kh, int kw, int stride, int pad_t,
                 int pad_l, int pad_b, int pad_r);

#endif
