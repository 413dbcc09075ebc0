/* cuda_elementwise.cu - elementwise and row ops of the CUDA backend:
 * silu_mul, silu, add, axpby, affine, copy_rows, fill_rows, embed,
 * timestep_embed, cfg_combine.
 *
 * Grid-stride kernels; 16-byte vectors (8 values) when every buffer is
 * 16-byte aligned and the count is a multiple of 8, else one value per step.
 * Dtypes are runtime arguments (F32/BF16/F16); math in fp32 like the CPU:
 *   silu(x) = x / (1 + exp(-x))
 *   timestep_embed: f_k = exp((-ln(max_period) as f32) * k / half) (rounded
 *     from double, as glibc's expf is), arg = (t*scale) * f_k in f32,
 *     y = [cos(arg) | sin(arg)] (rounded from double)
 *   cfg_combine: pred = pos + w*(pos - neg); per-sample sums of pos^2 and
 *     pred^2 reduced on the device (double atomics), then in a second kernel
 *     factor = (k*||pos||) / ||pred|| if larger - no host round trip.
 * embed copies the host ids into a grow-once device buffer (cudaMemcpyAsync
 * on the stream) and gathers rows. */
#include "cuda_internal.cuh"

static int vec_ok3(const void *a, const void *b, const void *c, int64_t n) {
    return n % 8 == 0 && zcu_aligned16(a) && (!b || zcu_aligned16(b)) && (!c || zcu_aligned16(c));
}

__device__ __forceinline__ float silu1(float x) { return x / (1.0f + expf(-x)); }

/* op: 0 silu(a), 1 a + b, 2 alpha*a + beta*b (axpby: a = x, b = y), 3 alpha*a + beta (affine) */
__global__ void k_ew(void *y, int ydt, const void *a, int adt, const void *b, int bdt, int64_t n, int op, float alpha,
                     float beta, int vec) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        float va[8], vb[8];
        for (int64_t i = i0 * 8; i < n; i += stride * 8) {
            zld8(a, adt, i, va);
            if (op == 1 || op == 2) zld8(b, bdt, i, vb);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float r;
                if (op == 0) r = silu1(va[j]);
                else if (op == 1) r = va[j] + vb[j];
                else if (op == 2) r = alpha * va[j] + beta * vb[j];
                else r = alpha * va[j] + beta;
                va[j] = r;
            }
            zst8(y, ydt, i, va);
        }
    } else {
        for (int64_t i = i0; i < n; i += stride) {
            float va = zld(a, adt, i), r;
            if (op == 0) r = silu1(va);
            else if (op == 1) r = va + zld(b, bdt, i);
            else if (op == 2) r = alpha * va + beta * zld(b, bdt, i);
            else r = alpha * va + beta;
            zst(y, ydt, i, r);
        }
    }
}

static void ew(zbackend *be, zt *y, const zt *a, const zt *b, int op, float alpha, float beta) {
    int64_t n = zt_numel(y);
    if (n == 0) return;
    int vec = vec_ok3(y->data, a->data, b ? b->data : NULL, n);
    k_ew<<<zcu_blocks(be, vec ? n / 8 : n, 256), 256, 0, ZC(be)->stream>>>(
        y->data, y->dtype, a->data, a->dtype, b ? b->data : NULL, b ? b->dtype : 0, n, op, alpha, beta, vec);
    LAUNCH_OK(be, "k_ew");
}

void zcu_silu(zbackend *be, zt *y, const zt *x) { ew(be, y, x, NULL, 0, 0.0f, 0.0f); }
void zcu_add(zbackend *be, zt *y, const zt *a, const zt *b) { ew(be, y, a, b, 1, 0.0f, 0.0f); }
void zcu_axpby(zbackend *be, zt *y, float a, const zt *x, float b) { ew(be, y, x, y, 2, a, b); }
void zcu_affine(zbackend *be, zt *y, const zt *x, float a, float b) { ew(be, y, x, NULL, 3, a, b); }

/* y[r, j] = silu(gu[r, j]) * gu[r, F + j]
 * Vector path (bf16 output, 16-byte aligned, F % 8 == 0): grid (column
 * blocks, row blocks), one 8-value vector of the gate and of the up half per
 * thread and row, no index division; silu with the fast exp/reciprocal
 * (rel. error ~1e-6, far below the bf16 rounding of the result; 64-bit index
 * division and IEEE expf/division made v1 issue-bound: 0.080 ms at
 * 4224x20480 on an H200, 3.2 TB/s).  Other cases: grid-stride, exact silu1. */
__global__ void k_silu_mul_vec(__nv_bfloat16 *y, const void *gu, int gdt, int64_t R, int64_t F) {
    const int64_t j = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (j >= F) return;
    for (int64_t r = blockIdx.y; r < R; r += gridDim.y) {
        float g[8], u[8];
        zld8(gu, gdt, r * 2 * F + j, g);
        zld8(gu, gdt, r * 2 * F + F + j, u);
#pragma unroll
        for (int k = 0; k < 8; k++) g[k] = __fdividef(g[k], 1.0f + __expf(-g[k])) * u[k];
        zst8(y, ZT_BF16, r * F + j, g);
    }
}

__global__ void k_silu_mul(void *y, int ydt, const void *gu, int gdt, int64_t R, int64_t F) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < R * F; i += stride) {
        int64_t r = i / F, j = i % F;
        zst(y, ydt, i, silu1(zld(gu, gdt, r * 2 * F + j)) * zld(gu, gdt, r * 2 * F + F + j));
    }
}

void zcu_silu_mul(zbackend *be, zt *y, const zt *gu) {
    int64_t R = zt_rows(y), F = zt_cols(y);
    if (R * F == 0) return;
    if (y->dtype == ZT_BF16 && gu->dtype != ZT_F32 && F % 8 == 0 && zcu_aligned16(y->data) &&
        zcu_aligned16(gu->data)) {
        int64_t cb = (F / 8 + 127) / 128;
        dim3 grid((unsigned)cb, (unsigned)(R < 65535 ? R : 65535));
        k_silu_mul_vec<<<grid, 128, 0, ZC(be)->stream>>>((__nv_bfloat16 *)y->data, gu->data, gu->dtype, R, F);
        LAUNCH_OK(be, "k_silu_mul_vec");
        return;
    }
    k_silu_mul<<<zcu_blocks(be, R * F, 256), 256, 0, ZC(be)->stream>>>(y->data, y->dtype, gu->data, gu->dtype, R, F);
    LAUNCH_OK(be, "k_silu_mul");
}

/* ---- row copies --------------------------------------------------------------------- */

void zcu_copy_rows(zbackend *be, zt *dst, int64_t dst_row, const zt *src, int64_t src_row, int64_t n) {
    zcuda *zc = ZC(be);
    int64_t c = zt_cols(dst), total = n * c;
    size_t db = zt_dtype_size(dst->dtype), sb = zt_dtype_size(src->dtype);
    char *d = (char *)dst->data + (size_t)(dst_row * c) * db;
    const char *s = (const char *)src->data + (size_t)(src_row * c) * sb;
    if (total == 0 || d == s) return;
    int overlap = d < s + (size_t)total * sb && s < d + (size_t)total * db;
    if (overlap) {
        if (dst->dtype != src->dtype) {
            zbackend_fail(be, ZE_INVALID, "copy_rows: overlapping source and destination of different dtypes");
            return;
        }
        void *tmp = zcu_scratch(be, ZCU_SCR_COPY, (size_t)total * db);
        if (!tmp) return;
        if (!CUDA_OK(be, cudaMemcpyAsync(tmp, s, (size_t)total * db, cudaMemcpyDeviceToDevice, zc->stream))) return;
        CUDA_OK(be, cudaMemcpyAsync(d, tmp, (size_t)total * db, cudaMemcpyDeviceToDevice, zc->stream));
        return;
    }
    zcu_convert(be, d, dst->dtype, s, src->dtype, total);
}

__global__ void k_fill_rows(void *dst, int ddt, const void *row, int rdt, int64_t c, int64_t total) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride)
        zst(dst, ddt, i, zld(row, rdt, i % c));
}

void zcu_fill_rows(zbackend *be, zt *dst, int64_t row0, int64_t n, const zt *row) {
    int64_t c = zt_cols(dst), total = n * c;
    if (total == 0) return;
    char *d = (char *)dst->data + (size_t)(row0 * c) * zt_dtype_size(dst->dtype);
    k_fill_rows<<<zcu_blocks(be, total, 256), 256, 0, ZC(be)->stream>>>(d, dst->dtype, row->data, row->dtype, c,
                                                                       total);
    LAUNCH_OK(be, "k_fill_rows");
}

__global__ void k_embed(void *y, int ydt, const void *table, int tdt, const int32_t *ids, int64_t n, int64_t D) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n * D; i += stride) {
        int64_t r = i / D, j = i % D;
        zst(y, ydt, i, zld(table, tdt, (int64_t)ids[r] * D + j));
    }
}

void zcu_embed(zbackend *be, zt *y, const zt *table, const int32_t *ids, int64_t n) {
    zcuda *zc = ZC(be);
    int64_t D = zt_cols(y);
    if (n == 0 || D == 0) return;
    int32_t *did = (int32_t *)zcu_scratch(be, ZCU_SCR_IDS, (size_t)n * 4);
    if (!did) return;
    if (!CUDA_OK(be, cudaMemcpyAsync(did, ids, (size_t)n * 4, cudaMemcpyHostToDevice, zc->stream))) return;
    k_embed<<<zcu_blocks(be, n * D, 256), 256, 0, zc->stream>>>(y->data, y->dtype, table->data, table->dtype, did, n,
                                                               D);
    LAUNCH_OK(be, "k_embed");
}

/* ---- timestep embedding ---------------------------------------------------------------- */

__global__ void k_timestep(void *y, int ydt, const float *t, int64_t B, int64_t half, float scale, float neg_log) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * half) return;
    int64_t b = i / half, k = i % half;
    float tau = t[b] * scale;
    float e = neg_log * (float)k / (float)half;
    float f = (float)exp((double)e);
    float arg = tau * f;
    zst(y, ydt, b * 2 * half + k, (float)cos((double)arg));
    zst(y, ydt, b * 2 * half + half + k, (float)sin((double)arg));
}

void zcu_timestep_embed(zbackend *be, zt *y, const zt *t, float scale, float max_period) {
    int64_t B = zt_rows(y), half = zt_cols(y) / 2;
    if (B * half == 0) return;
    const float neg_log = (float)(-log((double)max_period));
    k_timestep<<<(unsigned)((B * half + 255) / 256), 256, 0, ZC(be)->stream>>>(y->data, y->dtype,
                                                                               (const float *)t->data, B, half, scale,
                                                                               neg_log);
    LAUNCH_OK(be, "k_timestep");
}

/* ---- classifier-free guidance ------------------------------------------------------------ */

#define CFG_THREADS 256

__global__ void k_cfg_norms(const float *pos, const float *neg, int64_t n, float w, double *acc) {
    __shared__ float red[32];
    int64_t b = blockIdx.y;
    const float *p = pos + b * n, *q = neg + b * n;
    float sp = 0.0f, so = 0.0f;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float pr = p[i] + w * (p[i] - q[i]);
        sp += p[i] * p[i];
        so += pr * pr;
    }
    sp = zblock_sum(sp, red);
    so = zblock_sum(so, red);
    if (threadIdx.x == 0) {
        atomicAdd(&acc[2 * b], (double)sp);
        atomicAdd(&acc[2 * b + 1], (double)so);
    }
}

__global__ void k_cfg_apply(float *out, const float *pos, const float *neg, int64_t n, float w, float norm_k,
                            const double *acc) {
    int64_t b = blockIdx.y;
    float factor = 1.0f;
    if (norm_k > 0.0f) {
        float pn = (float)sqrt(acc[2 * b]), on = (float)sqrt(acc[2 * b + 1]);
        float maxn = pn * norm_k;
        if (on > maxn) factor = maxn / on;
    }
    const float *p = pos + b * n, *q = neg + b * n;
    float *o = out + b * n;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float pr = p[i] + w * (p[i] - q[i]);
        o[i] = factor == 1.0f ? pr : pr * factor;
    }
}

void zcu_cfg_combine(zbackend *be, zt *out, const zt *pos, const zt *neg, float w, float norm_k) {
    zcuda *zc = ZC(be);
    int64_t B = out->ne[0], n = B ? zt_numel(out) / B : 0;
    if (B == 0 || n == 0) return;
    double *acc = NULL;
    unsigned bx = zcu_blocks(be, n, CFG_THREADS);
    if (bx > 1024) bx = 1024;
    dim3 grid(bx, (unsigned)B);
    if (norm_k > 0.0f) {
        acc = (double *)zcu_scratch(be, ZCU_SCR_STATS, (size_t)B * 2 * sizeof(double));
        if (!acc) return;
        if (!CUDA_OK(be, cudaMemsetAsync(acc, 0, (size_t)B * 2 * sizeof(double), zc->stream))) return;
        k_cfg_norms<<<grid, CFG_THREADS, 0, zc->stream>>>((const float *)pos->data, (const float *)neg->data, n, w,
                                                          acc);
        if (!LAUNCH_OK(be, "k_cfg_norms")) return;
    }
    k_cfg_apply<<<grid, CFG_THREADS, 0, zc->stream>>>((float *)out->data, (const float *)pos->data,
                                                      (const float *)neg->data, n, w, norm_k, acc);
    LAUNCH_OK(be, "k_cfg_apply");
}
