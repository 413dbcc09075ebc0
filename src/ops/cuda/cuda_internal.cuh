/* cuda_internal.cuh - private to the CUDA backend (the .cu files in src/ops/cuda).
 *
 * What lives here
 *   - zcuda: the backend's private state (device, one stream, cuBLASLt and
 *     cuDNN handles, memory accounting, grow-once scratch, plan caches);
 *   - check helpers that turn a failing CUDA / cuBLAS / cuDNN call into
 *     zbackend_fail(be, ZE_BACKEND, "file:line call: error string") - nothing
 *     here aborts or exits;
 *   - device load/store helpers for F32 / BF16 / F16 chosen by a runtime dtype
 *     (zld/zst one value, zld8/zst8 eight values = one 16-byte vector of bf16,
 *     zld4/zst4 four);
 *   - the internal GEMM (zcu_gemm, cuda_matmul.cu) used by matmul, conv2d
 *     (1x1) and the chunked attention path;
 *   - the prototypes of every op the vtable points at.
 *
 * Graph safety (CUDA graphs capture whole DiT forwards)
 *   Ops only enqueue work on zc->stream: no host synchronisation, no
 *   cudaMalloc in steady state.  Scratch buffers only grow; a buffer that is
 *   replaced is RETIRED (kept until the backend is destroyed), because a graph
 *   captured earlier may still point at it.  Small host arrays (kv_len) go to
 *   kernels by value.
 *
 * Dtype conventions: activations F32/BF16/F16 (be->act = BF16), matrix weights
 * BF16 (zbackend_weight_dtype), vector weights F32.  Accumulation is F32. */
#ifndef ZIMAGE_CUDA_INTERNAL_CUH
#define ZIMAGE_CUDA_INTERNAL_CUH

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

extern "C" {
#include "../ops.h"
}
#include "cuda_backend.h"

/* ---- private state ------------------------------------------------------- */

/* Scratch slots: one per simultaneous use inside one op. */
enum {
    ZCU_SCR_MMX = 0, /* matmul: bf16 copy of a non-bf16 x                  */
    ZCU_SCR_MMY,     /* matmul: f32 result for an F16 y                     */
    ZCU_SCR_ATTS,    /* chunked attention: f32 scores [qc, Nk]              */
    ZCU_SCR_ATTP,    /* chunked attention: bf16 probabilities [qc, Nk]      */
    ZCU_SCR_ATTQ,    /* attention: bf16 copies of non-bf16 q/k/v/o          */
    ZCU_SCR_CONVWS,  /* cuDNN conv workspace                                */
    ZCU_SCR_CONVX,   /* conv: padded / converted input                      */
    ZCU_SCR_CONVY,   /* conv: bf16 output before bias / dtype conversion    */
    ZCU_SCR_STATS,   /* groupnorm / cfg statistics (doubles)                */
    ZCU_SCR_COPY,    /* copy_rows of overlapping ranges                     */
    ZCU_SCR_IDS,     /* embed: device copy of the token ids                 */
    ZCU_SCR_MMBIAS,  /* matmul: bf16 copy of the bias (bf16-bias epilogue)  */
    ZCU_SCR_SDPAWS,  /* cuDNN attention workspace                           */
    ZCU_SCR_SDPASEQ, /* cuDNN attention: seq_len_q | seq_len_kv (int32)     */
    ZCU_SCR_RGB8,    /* download_rgb8: the 8-bit image before the copy       */
    ZCU_SCR_CONVB,   /* conv: bf16 copy of the bias (fused epilogue)         */
    ZCU_SCR_GATE,    /* norm_gate_add(_norm): tanh of the gate vectors        */
    ZCU_SCR_N
};

typedef struct zcu_mm_plan zcu_mm_plan;     /* cuda_matmul.cu */
typedef struct zcu_conv_plan zcu_conv_plan; /* cuda_conv.cu   */
typedef struct zcu_sdpa_plan zcu_sdpa_plan; /* cuda_sdpa.cu   */

/* Per-sample lengths passed to kernels BY VALUE (graph-safe). */
#define ZCU_MAXB 64
typedef struct {
    int32_t v[ZCU_MAXB];
} zcu_lens;

typedef struct zcu_alloc_ent {
    void *p;
    size_t n;
} zcu_alloc_ent;

typedef struct zcuda {
    int dev;
    int sm_count;
    size_t smem_optin; /* max dynamic shared memory per block             */
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws; /* cuBLASLt workspace                                  */
    size_t lt_ws_size;
    cudnnHandle_t dnn;
    /* memory accounting: device allocation table (open addressing)          */
    size_t in_use, peak;
    zcu_alloc_ent *atab;
    size_t atab_cap, atab_n;
    /* grow-once scratch */
    struct {
        void *p;
        size_t cap;
    } scr[ZCU_SCR_N];
    void **retired; /* replaced scratch buffers, freed at destroy          */
    int nretired, cap_retired;
    /* plan caches */
    zcu_mm_plan *mm;
    int mm_n, mm_cap;
    zcu_conv_plan *conv;
    int conv_n, conv_cap;
    zcu_sdpa_plan *sdpa;
    int sdpa_n, sdpa_cap;
    /* attention path: 0 auto (cuDNN where it takes the shape, else the own
     * flash kernel, else chunked), 1 own flash kernel (no cuDNN), 2 chunked
     * GEMM path only; env ZIMAGE_CUDA_ATTN=auto|flash|chunked */
    int attn_mode;
    int capturing;
} zcuda;

static inline zcuda *ZC(zbackend *be) { return (zcuda *)be->impl; }

/* ---- error helpers (cuda_backend.cu) ---------------------------------------
 * Each returns 1 if the call succeeded, else records the failure on `be`
 * (sticky; the first failure wins) and returns 0. */
int zcu_ok_cuda(zbackend *be, cudaError_t e, const char *file, int line, const char *what);
int zcu_ok_blas(zbackend *be, cublasStatus_t s, const char *file, int line, const char *what);
int zcu_ok_dnn(zbackend *be, cudnnStatus_t s, const char *file, int line, const char *what);
#define CUDA_OK(be, call) zcu_ok_cuda((be), (call), __FILE__, __LINE__, #call)
#define BLAS_OK(be, call) zcu_ok_blas((be), (call), __FILE__, __LINE__, #call)
#define DNN_OK(be, call) zcu_ok_dnn((be), (call), __FILE__, __LINE__, #call)
/* After a kernel launch: cudaGetLastError() through CUDA_OK. */
#define LAUNCH_OK(be, name) zcu_ok_cuda((be), cudaGetLastError(), __FILE__, __LINE__, "launch " name)

/* ---- backend internals (cuda_backend.cu) ---------------------------------- */
/* Grow-once scratch buffer of at least `bytes` (256-byte aligned); NULL after
 * a failure (recorded on be). */
void *zcu_scratch(zbackend *be, int slot, size_t bytes);
/* 1 if ZIMAGE_CUDA_NOFUSE=1 (the fused ops and the conv epilogue are off, for A/B timings). */
int zcu_nofuse(void);
/* Blocks for a grid-stride launch over n items with `threads` per block. */
unsigned zcu_blocks(zbackend *be, int64_t n, int threads);
/* Convert n values between device buffers (dtypes may differ; no overlap). */
void zcu_convert(zbackend *be, void *dst, zt_dtype dd, const void *src, zt_dtype sd, int64_t n);

static inline int zcu_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* ---- internal GEMM (cuda_matmul.cu) ----------------------------------------
 * Row-major y[M, N] (ld ldy, F32 or BF16) = alpha * x[M, K] (bf16, ld ldx) .
 * op(w) + beta * y + bias[N] (F32, may be NULL), with op(w) = w^T for w
 * [N, K] (w_kn = 0) or w for w [K, N] (w_kn = 1), bf16, ld ldw.
 * cuBLASLt, fp32 compute; plans cached per shape/alignment.  Returns 0 or a
 * negative code (recorded on be). */
typedef struct {
    int64_t M, N, K;
    const void *x;
    int64_t ldx;
    const void *w;
    int64_t ldw;
    int w_kn;
    void *y;
    int64_t ldy;
    zt_dtype ydt;
    const float *bias;
    float alpha, beta;
} zcu_gemm_args;
int zcu_gemm(zbackend *be, const zcu_gemm_args *a);
void zcu_mm_cache_free(zcuda *zc);
void zcu_conv_cache_free(zcuda *zc);
void zcu_sdpa_cache_free(zcuda *zc);
/* One line per cached plan into buf; return the characters written. */
size_t zcu_mm_describe(zcuda *zc, char *buf, size_t n);
size_t zcu_conv_describe(zcuda *zc, char *buf, size_t n);
size_t zcu_sdpa_describe(zcuda *zc, char *buf, size_t n);

/* ---- cuDNN fused attention (cuda_sdpa.cu) -----------------------------------
 * Returns 1 if it took the call (ran it, or recorded a failure on be), 0 if
 * this shape/dtype/mask is not supported by that path (nothing enqueued). */
int zcu_sdpa_cudnn(zbackend *be, const zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv,
                   const int32_t *kv_len, int causal, float scale);

/* ---- device dtype helpers -------------------------------------------------- */

__device__ __forceinline__ float zld(const void *p, int dt, int64_t i) {
    if (dt == ZT_F32) return ((const float *)p)[i];
    if (dt == ZT_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return __half2float(((const __half *)p)[i]);
}

__device__ __forceinline__ void zst(void *p, int dt, int64_t i, float v) {
    if (dt == ZT_F32)
        ((float *)p)[i] = v;
    else if (dt == ZT_BF16)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
    else
        ((__half *)p)[i] = __float2half(v);
}

/* Eight values at element i (i % 8 == 0, buffer 16-byte aligned). */
__device__ __forceinline__ void zld8(const void *p, int dt, int64_t i, float *v) {
    if (dt == ZT_F32) {
        float4 a = ((const float4 *)p)[i / 4], b = ((const float4 *)p)[i / 4 + 1];
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else {
        uint4 u = ((const uint4 *)p)[i / 8];
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (dt == ZT_BF16) {
                __nv_bfloat162 h = *(const __nv_bfloat162 *)&w[j];
                float2 f = __bfloat1622float2(h);
                v[2 * j] = f.x, v[2 * j + 1] = f.y;
            } else {
                __half2 h = *(const __half2 *)&w[j];
                float2 f = __half22float2(h);
                v[2 * j] = f.x, v[2 * j + 1] = f.y;
            }
        }
    }
}

__device__ __forceinline__ void zst8(void *p, int dt, int64_t i, const float *v) {
    if (dt == ZT_F32) {
        ((float4 *)p)[i / 4] = make_float4(v[0], v[1], v[2], v[3]);
        ((float4 *)p)[i / 4 + 1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
        uint32_t w[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (dt == ZT_BF16) {
                __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
                w[j] = *(uint32_t *)&h;
            } else {
                __half2 h = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
                w[j] = *(uint32_t *)&h;
            }
        }
        ((uint4 *)p)[i / 8] = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

/* Four values at element i (i % 4 == 0, aligned): one 16-byte (F32) or 8-byte load / store. */
__device__ __forceinline__ void zld4(const void *p, int dt, int64_t i, float *v) {
    if (dt == ZT_F32) {
        float4 a = ((const float4 *)p)[i / 4];
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
        return;
    }
    uint2 u = ((const uint2 *)p)[i / 4];
    const uint32_t w[2] = {u.x, u.y};
#pragma unroll
    for (int j = 0; j < 2; j++) {
        float2 f = dt == ZT_BF16 ? __bfloat1622float2(*(const __nv_bfloat162 *)&w[j])
                                 : __half22float2(*(const __half2 *)&w[j]);
        v[2 * j] = f.x, v[2 * j + 1] = f.y;
    }
}

__device__ __forceinline__ void zst4(void *p, int dt, int64_t i, const float *v) {
    if (dt == ZT_F32) {
        ((float4 *)p)[i / 4] = make_float4(v[0], v[1], v[2], v[3]);
        return;
    }
    uint32_t w[2];
#pragma unroll
    for (int j = 0; j < 2; j++) {
        if (dt == ZT_BF16) {
            __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
            w[j] = *(uint32_t *)&h;
        } else {
            __half2 h = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
            w[j] = *(uint32_t *)&h;
        }
    }
    ((uint2 *)p)[i / 4] = make_uint2(w[0], w[1]);
}

/* Sum over a block (blockDim.x a multiple of 32, <= 1024); every thread gets
 * the result.  `sh` holds 32 floats; the call ends with the block synced. */
__device__ __forceinline__ float zblock_sum(float v, float *sh) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads(); /* sh may still be read by a previous call */
    if (l == 0) sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- ops (the vtable) --------------------------------------------------------- */
void zcu_matmul(zbackend *be, zt *y, const zt *x, const zt *w, const zt *bias, int accumulate);
void zcu_embed(zbackend *be, zt *y, const zt *table, const int32_t *ids, int64_t n);
void zcu_rmsnorm(zbackend *be, zt *y, const zt *x, const zt *w, zvec scale, int64_t batch, float eps);
void zcu_layernorm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch, float eps);
void zcu_norm_gate_add(zbackend *be, zt *x, const zt *y, const zt *w, zvec gate, int64_t batch, float eps);
void zcu_norm_gate_add_norm(zbackend *be, zt *x, const zt *y, const zt *w, zvec gate, zt *h, const zt *w2, zvec scale2,
                            int64_t batch, float eps);
void zcu_groupnorm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, int groups, float eps, int silu);
void zcu_qkv_norm_rope(zbackend *be, zt *q, zt *k, zt *v, const zt *qkv, const zt *wq, const zt *wk, const zt *cos,
                       const zt *sin, int hq, int hkv, float eps, zrope_pairing pairing);
void zcu_attention(zbackend *be, zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv, const int32_t *kv_len,
                   int causal, float scale);
void zcu_silu_mul(zbackend *be, zt *y, const zt *gu);
void zcu_silu(zbackend *be, zt *y, const zt *x);
void zcu_add(zbackend *be, zt *y, const zt *a, const zt *b);
void zcu_axpby(zbackend *be, zt *y, float a, const zt *x, float b);
void zcu_affine(zbackend *be, zt *y, const zt *x, float a, float b);
void zcu_copy_rows(zbackend *be, zt *dst, int64_t dst_row, const zt *src, int64_t src_row, int64_t n);
void zcu_fill_rows(zbackend *be, zt *dst, int64_t row0, int64_t n, const zt *row);
void zcu_timestep_embed(zbackend *be, zt *y, const zt *t, float scale, float max_period);
void zcu_cfg_combine(zbackend *be, zt *out, const zt *pos, const zt *neg, float w, float norm_k);
int zcu_download_rgb8(zbackend *be, const zt *img, uint8_t *dst);
void zcu_patchify(zbackend *be, zt *tok, const zt *x, int p);
void zcu_unpatchify(zbackend *be, zt *x, const zt *tok, int p);
void zcu_nchw_to_nhwc(zbackend *be, zt *y, const zt *x);
void zcu_upsample2x(zbackend *be, zt *y, const zt *x);
void zcu_conv2d(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, int kh, int kw, int stride, int pad_t,
                int pad_l, int pad_b, int pad_r);
void zcu_conv2d_add(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, const zt *res, int kh, int kw,
                    int stride, int pad_t, int pad_l, int pad_b, int pad_r);
int zcu_fill_random(zbackend *be, zt *t, uint64_t seed, float scale, float offset);

#endif
