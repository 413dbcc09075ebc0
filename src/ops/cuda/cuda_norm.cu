/* cuda_norm.cu - normalizations of the CUDA backend: rmsnorm, layernorm,
 * norm_gate_add, groupnorm (NHWC, optional SiLU).
 *
 * Row norms: one block per row of [R, D]; statistics in fp32 (block
 * reduction), the same operation order as the CPU reference:
 *   rmsnorm        r = 1/sqrt(mean(x^2) + eps);  y = ((x*r)*w)*(1 + s_b)
 *   layernorm      r = 1/sqrt(var + eps) (biased);  y = ((x*r + (-mean*r))*w + b)*(1 + s_b)
 *   norm_gate_add  x = x + tanh(g_b) * ((y*r)*w)
 * Rows are split into `batch` samples of R/batch rows; sample b's vector is
 * vec.t[b * cols(vec.t) + vec.off ...].  Rows are read again for the output
 * pass (they stay in L1/L2), except on the vector path: 16-byte vectors (8
 * values) when D % 8 == 0 and every row start is 16-byte aligned, with up to
 * ROW_REG vectors per thread kept in registers (rmsnorm, norm_gate_add; rows
 * up to 16384 wide).  y may alias x (each element is read
 * and written by the same thread).
 *
 * norm_gate_add_norm (vector path): norm_gate_add, then rmsnorm of the updated
 * row into h, the row kept in registers between the two.
 *
 * groupnorm over x [B, H, W, C], G groups of cg = C/G channels:
 *   1. k_gn_stats: grid (chunks, B); per-channel partial sums of (x - k_g) and
 *      (x - k_g)^2 (k_g = x[b, 0, 0, g*cg], a shift that keeps E[x^2] - E[x]^2
 *      well conditioned) in shared memory, then one double atomicAdd per
 *      (block, group) into stats[B*G][2] (zeroed by a memset first);
 *   2. k_gn_finalize: per (b, c): sc = rstd * w_c, sh = -sc * mean + b_c;
 *   3. k_gn_apply_vec / k_gn_apply: y = x*sc + sh, then optionally
 *      y / (1 + exp(-y)).
 * y may alias x. */
#include "cuda_internal.cuh"

#define NORM_THREADS 256

static int rows_vec_ok(const void *p, int64_t D, zt_dtype dt) {
    return D % 8 == 0 && zcu_aligned16(p) && ((size_t)D * zt_dtype_size(dt)) % 16 == 0;
}

/* ---- rmsnorm / layernorm ------------------------------------------------------------ */

typedef struct {
    const void *p; /* NULL: absent */
    int dt;
    int64_t stride, off; /* sample b: p[b*stride + off + j] */
    int64_t per;         /* rows per sample */
    int vec;             /* 8-value loads are aligned */
} zvec_dev;

static zvec_dev vec_dev(zvec v, int64_t rows, int64_t batch) {
    zvec_dev d;
    d.p = v.t ? v.t->data : NULL;
    d.dt = v.t ? (int)v.t->dtype : 0;
    d.stride = v.t ? zt_cols(v.t) : 0;
    d.off = v.off;
    d.per = rows / batch;
    d.vec = v.t && zcu_aligned16(d.p) && d.stride % 8 == 0 && d.off % 8 == 0;
    return d;
}

#define ROW_REG 2 /* 8-value vectors a thread keeps in registers (vec path) */

/* Eight values of a per-sample vector at element off (16-byte loads when aligned). */
__device__ __forceinline__ void vec8(const zvec_dev &s, int64_t off, float *out) {
    if (s.vec) {
        zld8(s.p, s.dt, off, out);
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = zld(s.p, s.dt, off + i);
    }
}

/* The rmsnorm output stage for the 8 values v at column j: ((v*rf)*w)*(1 + s), stored at y[yo]. */
__device__ __forceinline__ void rms_out8(float *v, float rf, const float *w, int64_t j, const zvec_dev &sc,
                                         int64_t so, void *y, int ydt, int64_t yo) {
    float s8[8];
    if (sc.p) vec8(sc, so + j, s8);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        float o = v[i] * rf;
        if (w) o = o * w[j + i];
        if (sc.p) o = o * (1.0f + s8[i]);
        v[i] = o;
    }
    zst8(y, ydt, yo + j, v);
}

/* 1/sqrt(mean(v^2) + eps) of a row held in registers (this thread's 8-value
 * slots k, columns (tid + k*blockDim)*8 < D), reduced over the block. */
__device__ __forceinline__ float row_rms(float (*v)[8], int64_t D, float eps, float *red) {
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < ROW_REG; k++) {
        int64_t j = ((int64_t)threadIdx.x + (int64_t)k * blockDim.x) * 8;
        if (j < D) {
#pragma unroll
            for (int i = 0; i < 8; i++) ss += v[k][i] * v[k][i];
        }
    }
    ss = zblock_sum(ss, red);
    return 1.0f / sqrtf(ss / (float)D + eps);
}

/* Load row o of x into the thread's slots and return its row_rms. */
__device__ __forceinline__ float row_load_rms(const void *x, int xdt, int64_t o, int64_t D, float eps, float (*v)[8],
                                              float *red) {
#pragma unroll
    for (int k = 0; k < ROW_REG; k++) {
        int64_t j = ((int64_t)threadIdx.x + (int64_t)k * blockDim.x) * 8;
        if (j < D) zld8(x, xdt, o + j, v[k]);
    }
    return row_rms(v, D, eps, red);
}

/* mode 0 rmsnorm, 1 layernorm.  vec (rmsnorm only): D % 8 == 0, aligned rows,
 * D <= ROW_REG * 8 * blockDim: the row stays in registers between the passes. */
__global__ void k_rowafter(void *y, int ydt, const void *x, int xdt, int64_t D, const float *w, const float *bias,
                           zvec_dev sc, float eps, int mode, int vec) {
    __shared__ float red[32];
    int64_t r = blockIdx.x;
    int64_t xo = r * D;
    const float *wv = w, *bv = bias;
    int64_t so = sc.p ? (r / sc.per) * sc.stride + sc.off : 0;
    if (vec) {
        float v[ROW_REG][8];
        float rf = row_load_rms(x, xdt, xo, D, eps, v, red);
#pragma unroll
        for (int k = 0; k < ROW_REG; k++) {
            int64_t j = ((int64_t)threadIdx.x + (int64_t)k * blockDim.x) * 8;
            if (j < D) rms_out8(v[k], rf, wv, j, sc, so, y, ydt, xo);
        }
        return;
    }
    float mean = 0.0f, rf;
    if (mode == 0) {
        float ss = 0.0f;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            float t = zld(x, xdt, xo + j);
            ss += t * t;
        }
        ss = zblock_sum(ss, red);
        rf = 1.0f / sqrtf(ss / (float)D + eps);
    } else {
        float s = 0.0f;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) s += zld(x, xdt, xo + j);
        mean = zblock_sum(s, red) / (float)D;
        float ss = 0.0f;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            float d = zld(x, xdt, xo + j) - mean;
            ss += d * d;
        }
        ss = zblock_sum(ss, red);
        rf = 1.0f / sqrtf(ss / (float)D + eps);
    }
    float shift = -mean * rf;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float t = zld(x, xdt, xo + j);
        float o = mode == 0 ? t * rf : t * rf + shift;
        if (wv) o = o * wv[j];
        if (bv) o = o + bv[j];
        if (sc.p) o = o * (1.0f + zld(sc.p, sc.dt, so + j));
        zst(y, ydt, xo + j, o);
    }
}

/* Threads per row: vec paths use ceil(D / 8 / ROW_REG) rounded up to warps
 * (<= 1024; larger rows fall back to the scalar path), scalar paths up to 256. */
static int row_threads(int64_t D, int *vec) {
    if (*vec) {
        int64_t t = (D / 8 + ROW_REG - 1) / ROW_REG;
        t = (t + 31) / 32 * 32;
        if (t <= 1024) return (int)(t < 32 ? 32 : t);
        *vec = 0;
    }
    int t = 32;
    while (t < NORM_THREADS && t < D) t *= 2;
    return t;
}

static void row_norm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch, float eps,
                     int mode) {
    int64_t R = zt_rows(x), D = zt_cols(x);
    if (R == 0 || D == 0) return;
    int vec = mode == 0 && rows_vec_ok(x->data, D, x->dtype) && rows_vec_ok(y->data, D, y->dtype);
    int th = row_threads(D, &vec);
    k_rowafter<<<(unsigned)R, th, 0, ZC(be)->stream>>>(y->data, y->dtype, x->data, x->dtype, D,
                                                        w ? (const float *)w->data : NULL,
                                                        b ? (const float *)b->data : NULL, vec_dev(scale, R, batch),
                                                        eps, mode, vec);
    LAUNCH_OK(be, "k_rowafter");
}

void zcu_rmsnorm(zbackend *be, zt *y, const zt *x, const zt *w, zvec scale, int64_t batch, float eps) {
    row_norm(be, y, x, w, NULL, scale, batch, eps, 0);
}

void zcu_layernorm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch, float eps) {
    row_norm(be, y, x, w, b, scale, batch, eps, 1);
}

/* ---- norm_gate_add -------------------------------------------------------------------- */

/* Value as stored in a tensor of dtype dt (what a later load would return). */
__device__ __forceinline__ float zround(int dt, float v) {
    if (dt == ZT_BF16) return __bfloat162float(__float2bfloat16(v));
    if (dt == ZT_F16) return __half2float(__float2half(v));
    return v;
}

/* norm_gate_add on row r (offset o), vector path: y stays in registers
 * between the two passes; on return v holds the updated row of x as stored
 * (rounded to x's dtype).
 * (Loading x together with y, before the reduction, measured slower in the
 * fused kernel: 0.095 vs 0.079 ms at 4224x3840 on an H200 - the extra
 * registers cost occupancy.) */
__device__ __forceinline__ void nga_row8(void *x, int xdt, const void *y, int ydt, int64_t D, const float *w,
                                         const zvec_dev &g, int64_t go, float eps, int64_t o, float (*v)[8],
                                         float *red) {
    float rf = row_load_rms(y, ydt, o, D, eps, v, red);
#pragma unroll
    for (int k = 0; k < ROW_REG; k++) {
        int64_t j = ((int64_t)threadIdx.x + (int64_t)k * blockDim.x) * 8;
        if (j >= D) continue;
        float xv[8], g8[8];
        zld8(x, xdt, o + j, xv);
        if (g.p) vec8(g, go + j, g8);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float t = v[k][i] * rf;
            if (w) t = t * w[j + i];
            if (g.p) t = tanhf(g8[i]) * t;
            xv[i] = xv[i] + t;
        }
        zst8(x, xdt, o + j, xv);
#pragma unroll
        for (int i = 0; i < 8; i++) v[k][i] = zround(xdt, xv[i]);
    }
}

__global__ void k_norm_gate_add(void *x, int xdt, const void *y, int ydt, int64_t D, const float *w, zvec_dev g,
                                float eps, int vec) {
    __shared__ float red[32];
    int64_t r = blockIdx.x, o = r * D;
    int64_t go = g.p ? (r / g.per) * g.stride + g.off : 0;
    if (vec) {
        float v[ROW_REG][8];
        nga_row8(x, xdt, y, ydt, D, w, g, go, eps, o, v, red);
        return;
    }
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float t = zld(y, ydt, o + j);
        ss += t * t;
    }
    ss = zblock_sum(ss, red);
    float rf = 1.0f / sqrtf(ss / (float)D + eps);
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float t = zld(y, ydt, o + j) * rf;
        if (w) t = t * w[j];
        if (g.p) t = tanhf(zld(g.p, g.dt, go + j)) * t;
        zst(x, xdt, o + j, zld(x, xdt, o + j) + t);
    }
}

void zcu_norm_gate_add(zbackend *be, zt *x, const zt *y, const zt *w, zvec gate, int64_t batch, float eps) {
    int64_t R = zt_rows(x), D = zt_cols(x);
    if (R == 0 || D == 0) return;
    int vec = rows_vec_ok(x->data, D, x->dtype) && rows_vec_ok(y->data, D, y->dtype);
    int th = row_threads(D, &vec);
    k_norm_gate_add<<<(unsigned)R, th, 0, ZC(be)->stream>>>(
        x->data, x->dtype, y->data, y->dtype, D, w ? (const float *)w->data : NULL, vec_dev(gate, R, batch), eps, vec);
    LAUNCH_OK(be, "k_norm_gate_add");
}

/* ---- norm_gate_add + the next pre-norm ------------------------------------------------ */


/* Vector path only (rows_vec_ok for x, y and h; D <= ROW_REG*8*1024): the
 * k_norm_gate_add update, then the updated row (kept in registers) goes
 * through k_rowafter's rmsnorm arithmetic in the same order, so h is what
 * the two kernels in sequence produce.  Bytes: x read + written once, y read,
 * h written (the separate kernels read x twice more). */
__global__ void k_norm_gate_add_norm(void *x, int xdt, const void *y, int ydt, void *h, int hdt, int64_t D,
                                     const float *w, zvec_dev g, const float *w2, zvec_dev sc, float eps) {
    __shared__ float red[32];
    int64_t r = blockIdx.x, o = r * D;
    int64_t go = g.p ? (r / g.per) * g.stride + g.off : 0;
    int64_t so = sc.p ? (r / sc.per) * sc.stride + sc.off : 0;
    float v[ROW_REG][8];
    nga_row8(x, xdt, y, ydt, D, w, g, go, eps, o, v, red);
    float rf2 = row_rms(v, D, eps, red);
#pragma unroll
    for (int k = 0; k < ROW_REG; k++) {
        int64_t j = ((int64_t)threadIdx.x + (int64_t)k * blockDim.x) * 8;
        if (j < D) rms_out8(v[k], rf2, w2, j, sc, so, h, hdt, o);
    }
}

void zcu_norm_gate_add_norm(zbackend *be, zt *x, const zt *y, const zt *w, zvec gate, zt *h, const zt *w2, zvec scale2,
                            int64_t batch, float eps) {
    int64_t R = zt_rows(x), D = zt_cols(x);
    if (R == 0 || D == 0) return;
    int vec = rows_vec_ok(x->data, D, x->dtype) && rows_vec_ok(y->data, D, y->dtype) &&
              rows_vec_ok(h->data, D, h->dtype);
    int th = row_threads(D, &vec);
    if (!vec) { /* unaligned or very wide rows: the two kernels */
        zcu_norm_gate_add(be, x, y, w, gate, batch, eps);
        zcu_rmsnorm(be, h, x, w2, scale2, batch, eps);
        return;
    }
    k_norm_gate_add_norm<<<(unsigned)R, th, 0, ZC(be)->stream>>>(
        x->data, x->dtype, y->data, y->dtype, h->data, h->dtype, D, w ? (const float *)w->data : NULL,
        vec_dev(gate, R, batch), w2 ? (const float *)w2->data : NULL, vec_dev(scale2, R, batch), eps);
    LAUNCH_OK(be, "k_norm_gate_add_norm");
}

/* ---- groupnorm ------------------------------------------------------------------------- */

#define GN_THREADS 256
#define GN_PIX 512 /* pixels per stats block */

/* stats[(b*G + g)*2 + {0,1}] += sums of (x - k_g), (x - k_g)^2 over this block's pixels.
 * Shared: 2*C floats.  Fast path (vec): C % 8 == 0 and GN_THREADS % (C/8) == 0, so a
 * thread keeps the same 8 channels for all its pixels. */
__global__ void k_gn_stats(const void *x, int xdt, int64_t HW, int64_t C, int G, double *stats, int vec) {
    extern __shared__ float sh_gn[];
    float *ssum = sh_gn, *ssq = sh_gn + C;
    int64_t b = blockIdx.y, p0 = (int64_t)blockIdx.x * GN_PIX, p1 = p0 + GN_PIX < HW ? p0 + GN_PIX : HW;
    int64_t cg = C / G;
    for (int64_t c = threadIdx.x; c < 2 * C; c += blockDim.x) sh_gn[c] = 0.0f;
    __syncthreads();
    const int64_t base = b * HW * C;
    if (vec) {
        int slots = (int)(C / 8), s = threadIdx.x % slots, prow = threadIdx.x / slots, prows = blockDim.x / slots;
        float kk[8], a[8], q[8], v[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            kk[i] = zld(x, xdt, base + ((8 * s + i) / cg) * cg);
            a[i] = q[i] = 0.0f;
        }
        for (int64_t p = p0 + prow; p < p1; p += prows) {
            zld8(x, xdt, base + p * C + 8 * s, v);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float d = v[i] - kk[i];
                a[i] += d;
                q[i] += d * d;
            }
        }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            atomicAdd(&ssum[8 * s + i], a[i]);
            atomicAdd(&ssq[8 * s + i], q[i]);
        }
    } else {
        for (int64_t e = threadIdx.x; e < (p1 - p0) * C; e += blockDim.x) {
            int64_t c = e % C;
            float d = zld(x, xdt, base + p0 * C + e) - zld(x, xdt, base + (c / cg) * cg);
            atomicAdd(&ssum[c], d);
            atomicAdd(&ssq[c], d * d);
        }
    }
    __syncthreads();
    for (int g = threadIdx.x; g < G; g += blockDim.x) {
        double s = 0, q2 = 0;
        for (int64_t j = 0; j < cg; j++) {
            s += ssum[g * cg + j];
            q2 += ssq[g * cg + j];
        }
        atomicAdd(&stats[(b * G + g) * 2], s);
        atomicAdd(&stats[(b * G + g) * 2 + 1], q2);
    }
}

/* scsh[(b*C + c)*2 + {0,1}] = scale, shift. */
__global__ void k_gn_finalize(const void *x, int xdt, int64_t HW, int64_t C, int G, const double *stats,
                              const float *w, const float *bias, float eps, float *scsh, int64_t B) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * C) return;
    int64_t b = i / C, c = i % C, cg = C / G, g = c / cg;
    double n = (double)(HW * cg);
    double k = zld(x, xdt, b * HW * C + g * cg);
    double ms = stats[(b * G + g) * 2] / n, var = stats[(b * G + g) * 2 + 1] / n - ms * ms;
    if (var < 0) var = 0;
    float rstd = 1.0f / sqrtf((float)var + eps), meanf = (float)(ms + k);
    float s = rstd * w[c];
    scsh[2 * i] = s;
    scsh[2 * i + 1] = -s * meanf + bias[c];
}

/* Fast apply: grid (chunks of GN_PIX pixels, B); like k_gn_stats's vec path a
 * thread keeps the same 8 channels, so their scale/shift stay in registers and
 * the loop has no index divisions.  SiLU with __expf (bf16/f32-accurate). */
__global__ void k_gn_apply_vec(void *y, int ydt, const void *x, int xdt, int64_t HW, int64_t C, const float *scsh,
                               int silu) {
    int64_t b = blockIdx.y, p0 = (int64_t)blockIdx.x * GN_PIX, p1 = p0 + GN_PIX < HW ? p0 + GN_PIX : HW;
    int slots = (int)(C / 8), s = threadIdx.x % slots, prow = threadIdx.x / slots, prows = blockDim.x / slots;
    float sc[8], sh[8], v[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        sc[i] = scsh[(b * C + 8 * s + i) * 2];
        sh[i] = scsh[(b * C + 8 * s + i) * 2 + 1];
    }
    const int64_t base = b * HW * C + 8 * s;
    for (int64_t p = p0 + prow; p < p1; p += prows) {
        zld8(x, xdt, base + p * C, v);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float o = v[i] * sc[i] + sh[i];
            v[i] = silu ? __fdividef(o, 1.0f + __expf(-o)) : o;
        }
        zst8(y, ydt, base + p * C, v);
    }
}

/* Generic apply (any C, alignment). */
__global__ void k_gn_apply(void *y, int ydt, const void *x, int xdt, int64_t HW, int64_t C, const float *scsh,
                           int64_t n, int silu) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        int64_t c = e % C, b = e / (HW * C);
        float o = zld(x, xdt, e) * scsh[(b * C + c) * 2] + scsh[(b * C + c) * 2 + 1];
        zst(y, ydt, e, silu ? o / (1.0f + expf(-o)) : o);
    }
}

void zcu_groupnorm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, int groups, float eps, int silu) {
    zcuda *zc = ZC(be);
    int64_t B = x->ne[0], HW = x->ne[1] * x->ne[2], C = x->ne[3], G = groups;
    if (B * HW * C == 0) return;
    if (2 * C * 4 > 48 * 1024) {
        zbackend_fail(be, ZE_UNSUPPORTED, "cuda groupnorm: %lld channels is more than this kernel takes",
                      (long long)C);
        return;
    }
    size_t stat_bytes = ((size_t)(B * G * 2) * sizeof(double) + 255) & ~(size_t)255;
    char *scr = (char *)zcu_scratch(be, ZCU_SCR_STATS, stat_bytes + (size_t)(B * C * 2) * 4);
    if (!scr) return;
    double *stats = (double *)scr;
    float *scsh = (float *)(scr + stat_bytes);
    if (!CUDA_OK(be, cudaMemsetAsync(stats, 0, (size_t)(B * G * 2) * sizeof(double), zc->stream))) return;
    int vec = C % 8 == 0 && GN_THREADS % (C / 8) == 0 && zcu_aligned16(x->data);
    dim3 grid((unsigned)((HW + GN_PIX - 1) / GN_PIX), (unsigned)B);
    k_gn_stats<<<grid, GN_THREADS, (size_t)(2 * C) * 4, zc->stream>>>(x->data, x->dtype, HW, C, (int)G, stats, vec);
    if (!LAUNCH_OK(be, "k_gn_stats")) return;
    k_gn_finalize<<<(unsigned)((B * C + 255) / 256), 256, 0, zc->stream>>>(
        x->data, x->dtype, HW, C, (int)G, stats, (const float *)w->data, (const float *)b->data, eps, scsh, B);
    if (!LAUNCH_OK(be, "k_gn_finalize")) return;
    int64_t n = B * HW * C;
    if (vec && zcu_aligned16(y->data)) {
        k_gn_apply_vec<<<grid, GN_THREADS, 0, zc->stream>>>(y->data, y->dtype, x->data, x->dtype, HW, C, scsh, silu);
        LAUNCH_OK(be, "k_gn_apply_vec");
        return;
    }
    k_gn_apply<<<zcu_blocks(be, n, 256), 256, 0, zc->stream>>>(y->data, y->dtype, x->data, x->dtype, HW, C, scsh, n,
                                                               silu);
    LAUNCH_OK(be, "k_gn_apply");
}
