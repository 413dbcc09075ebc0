/* cuda_norm.cu - normalizations of the CUDA backend: rmsnorm, layernorm,
 * norm_gate_add, norm_gate_add_norm, groupnorm (NHWC, optional SiLU).
 *
 * Row norms: one block per row of [R, D]; statistics in fp32 (block
 * reduction), the same operation order as the CPU reference:
 *   rmsnorm        r = 1/sqrt(mean(x^2) + eps);  y = ((x*r)*w)*(1 + s_b)
 *   layernorm      r = 1/sqrt(var + eps) (biased);  y = ((x*r + (-mean*r))*w + b)*(1 + s_b)
 *   norm_gate_add  x = x + tanh(g_b) * ((y*r)*w)   (tanh(g_b) computed once per
 *                  call into scratch by k_gate_tanh)
 *   norm_gate_add_norm: norm_gate_add, then rmsnorm of the updated row (as
 *                  stored, i.e. rounded to x's dtype) into h
 * Rows are split into `batch` samples of R/batch rows; sample b's vector is
 * vec.t[b * cols(vec.t) + vec.off ...].
 *
 * Quad path (rmsnorm, norm_gate_add, norm_gate_add_norm; D % 4 == 0, every
 * row and vector start aligned to 4 values): thread t owns the quads (4
 * consecutive values) t, t + T, t + 2T, t + 3T of the row (T = blockDim), kept
 * in registers between the passes (rows up to 16384 wide).  Every access is
 * one contiguous vector per thread (float4 for F32, 8 bytes for BF16/F16),
 * so a warp instruction covers 256-512 contiguous bytes - weights, gates and
 * scales included (v1/v2 used 8-value slots with 32-byte strides between
 * threads for F32 data and scalar weight loads: rmsnorm 0.037 -> 0.031 ms at
 * 4224x3840 on an H200).  The DiT's norm_gate_add_norm (x F32, y/h BF16) has
 * its own kernel with the dtypes fixed at compile time (k_ngan_f32).
 * Other shapes take a scalar path that reads the row again for the output.
 * y may alias x (each element is read and written by the same thread).
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
#define ROW_Q 4 /* quads a thread keeps in registers (quad path) */

/* Quad path for a row tensor: D % 4 == 0 and a start aligned to 4 values. */
static int rows_quad_ok(const void *p, int64_t D, zt_dtype dt) {
    return D % 4 == 0 && ((uintptr_t)p % (4 * zt_dtype_size(dt))) == 0;
}

/* A per-sample vector (modulation scale / gate) as the kernels see it. */
typedef struct {
    const void *p; /* NULL: absent */
    int dt;
    int64_t stride, off; /* sample b: p[b*stride + off + j] */
    int64_t per;         /* rows per sample */
} zvec_dev;

static zvec_dev vec_dev(zvec v, int64_t rows, int64_t batch) {
    zvec_dev d;
    d.p = v.t ? v.t->data : NULL;
    d.dt = v.t ? (int)v.t->dtype : 0;
    d.stride = v.t ? zt_cols(v.t) : 0;
    d.off = v.off;
    d.per = rows / batch;
    return d;
}

/* The vector can be read by quads (its sample rows and offset keep 4-value alignment). */
static int vec_quad_ok(zvec v) {
    return !v.t || (rows_quad_ok(v.t->data, zt_cols(v.t), v.t->dtype) && v.off % 4 == 0);
}

/* Column of quad slot k of this thread (may be >= D: slot unused). */
__device__ __forceinline__ int64_t qcol(int k) { return ((int64_t)threadIdx.x + (int64_t)k * blockDim.x) * 4; }

/* 1/sqrt(mean(v^2) + eps) of a row held in the thread's quad slots, reduced over the block. */
__device__ __forceinline__ float row_rms(float (*v)[4], int64_t D, float eps, float *red) {
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < ROW_Q; k++)
        if (qcol(k) < D) {
#pragma unroll
            for (int i = 0; i < 4; i++) ss += v[k][i] * v[k][i];
        }
    ss = zblock_sum(ss, red);
    return 1.0f / sqrtf(ss / (float)D + eps);
}

/* Load row offset o of x into the quad slots and return its row_rms. */
__device__ __forceinline__ float row_load_rms(const void *x, int xdt, int64_t o, int64_t D, float eps, float (*v)[4],
                                              float *red) {
#pragma unroll
    for (int k = 0; k < ROW_Q; k++)
        if (qcol(k) < D) zld4(x, xdt, o + qcol(k), v[k]);
    return row_rms(v, D, eps, red);
}

/* rmsnorm output of the row in the quad slots: ((v*rf)*w)*(1 + s), stored at y[yo + j]. */
__device__ __forceinline__ void rms_out(float (*v)[4], float rf, const float *w, int64_t D, const zvec_dev &sc,
                                        int64_t so, void *y, int ydt, int64_t yo) {
#pragma unroll
    for (int k = 0; k < ROW_Q; k++) {
        int64_t j = qcol(k);
        if (j >= D) continue;
        float w4[4], s4[4];
        if (w) zld4(w, ZT_F32, j, w4);
        if (sc.p) zld4(sc.p, sc.dt, so + j, s4);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float o = v[k][i] * rf;
            if (w) o = o * w4[i];
            if (sc.p) o = o * (1.0f + s4[i]);
            v[k][i] = o;
        }
        zst4(y, ydt, yo + j, v[k]);
    }
}

/* Value as stored in a tensor of dtype dt (what a later load would return). */
__device__ __forceinline__ float zround(int dt, float v) {
    if (dt == ZT_BF16) return __bfloat162float(__float2bfloat16(v));
    if (dt == ZT_F16) return __half2float(__float2half(v));
    return v;
}

/* norm_gate_add on the row at offset o, quad path: y's row stays in the slots
 * between the two passes; on return v holds the updated row of x as stored. */
__device__ __forceinline__ void nga_row(void *x, int xdt, const void *y, int ydt, int64_t D, const float *w,
                                        const zvec_dev &g, int64_t go, float eps, int64_t o, float (*v)[4],
                                        float *red) {
    float rf = row_load_rms(y, ydt, o, D, eps, v, red);
#pragma unroll
    for (int k = 0; k < ROW_Q; k++) {
        int64_t j = qcol(k);
        if (j >= D) continue;
        float xv[4], w4[4], g4[4];
        zld4(x, xdt, o + j, xv);
        if (w) zld4(w, ZT_F32, j, w4);
        if (g.p) zld4(g.p, g.dt, go + j, g4);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float t = v[k][i] * rf;
            if (w) t = t * w4[i];
            if (g.p) t = g4[i] * t; /* g holds tanh(gate) (gate_tanh) */
            xv[i] = xv[i] + t;
        }
        zst4(x, xdt, o + j, xv);
#pragma unroll
        for (int i = 0; i < 4; i++) v[k][i] = zround(xdt, xv[i]);
    }
}

/* Threads per row: quad paths use ceil(D / 4 / ROW_Q) rounded up to warps
 * (<= 1024; larger rows fall back to the scalar path), scalar paths up to 256. */
static int row_threads(int64_t D, int *quad) {
    if (*quad) {
        int64_t t = (D / 4 + ROW_Q - 1) / ROW_Q;
        t = (t + 31) / 32 * 32;
        if (t <= 1024) return (int)(t < 32 ? 32 : t);
        *quad = 0;
    }
    int t = 32;
    while (t < NORM_THREADS && t < D) t *= 2;
    return t;
}

/* ---- rmsnorm / layernorm ------------------------------------------------------------ */

/* mode 0 rmsnorm, 1 layernorm.  quad: rmsnorm only. */
__global__ void k_rowafter(void *y, int ydt, const void *x, int xdt, int64_t D, const float *w, const float *bias,
                           zvec_dev sc, float eps, int mode, int quad) {
    __shared__ float red[32];
    int64_t r = blockIdx.x;
    int64_t xo = r * D;
    int64_t so = sc.p ? (r / sc.per) * sc.stride + sc.off : 0;
    if (quad) {
        float v[ROW_Q][4];
        float rf = row_load_rms(x, xdt, xo, D, eps, v, red);
        rms_out(v, rf, w, D, sc, so, y, ydt, xo);
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
        if (w) o = o * w[j];
        if (bias) o = o + bias[j];
        if (sc.p) o = o * (1.0f + zld(sc.p, sc.dt, so + j));
        zst(y, ydt, xo + j, o);
    }
}

static void row_norm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch, float eps,
                     int mode) {
    int64_t R = zt_rows(x), D = zt_cols(x);
    if (R == 0 || D == 0) return;
    int quad = mode == 0 && rows_quad_ok(x->data, D, x->dtype) && rows_quad_ok(y->data, D, y->dtype) &&
               vec_quad_ok(scale) && (!w || rows_quad_ok(w->data, D, ZT_F32));
    int th = row_threads(D, &quad);
    k_rowafter<<<(unsigned)R, th, 0, ZC(be)->stream>>>(y->data, y->dtype, x->data, x->dtype, D,
                                                        w ? (const float *)w->data : NULL,
                                                        b ? (const float *)b->data : NULL, vec_dev(scale, R, batch),
                                                        eps, mode, quad);
    LAUNCH_OK(be, "k_rowafter");
}

void zcu_rmsnorm(zbackend *be, zt *y, const zt *x, const zt *w, zvec scale, int64_t batch, float eps) {
    row_norm(be, y, x, w, NULL, scale, batch, eps, 0);
}

void zcu_layernorm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch, float eps) {
    row_norm(be, y, x, w, b, scale, batch, eps, 1);
}

/* ---- norm_gate_add -------------------------------------------------------------------- */

/* tanh of the per-sample gate vectors, once per call: batch x D values into
 * scratch (F32), which the row kernels then read as their gate.  The same
 * tanhf values the kernels computed per element before (v2: 4224 tanhf per
 * value per call; ncu: SM throughput 61 % vs DRAM 40 % in
 * norm_gate_add_norm at 4224x3840), the same order (tanh(g) * t) as the CPU. */
__global__ void k_gate_tanh(float *t, zvec_dev g, int64_t batch, int64_t D) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batch * D) return;
    int64_t b = i / D, j = i % D;
    t[i] = tanhf(zld(g.p, g.dt, b * g.stride + g.off + j));
}

/* The gate as the row kernels take it: tanh(gate) in scratch ([batch, D] F32),
 * or absent.  *ok = 0 after a failure (recorded on be). */
static zvec_dev gate_tanh(zbackend *be, zvec gate, int64_t R, int64_t batch, int64_t D, int *ok) {
    zvec_dev g = vec_dev(gate, R, batch);
    *ok = 1;
    if (!g.p) return g;
    float *t = (float *)zcu_scratch(be, ZCU_SCR_GATE, (size_t)(batch * D) * sizeof(float));
    if (!t) {
        *ok = 0;
        return g;
    }
    k_gate_tanh<<<(unsigned)((batch * D + 255) / 256), 256, 0, ZC(be)->stream>>>(t, g, batch, D);
    *ok = LAUNCH_OK(be, "k_gate_tanh");
    g.p = t, g.dt = ZT_F32, g.stride = D, g.off = 0;
    return g;
}

__global__ void k_norm_gate_add(void *x, int xdt, const void *y, int ydt, int64_t D, const float *w, zvec_dev g,
                                float eps, int quad) {
    __shared__ float red[32];
    int64_t r = blockIdx.x, o = r * D;
    int64_t go = g.p ? (r / g.per) * g.stride + g.off : 0;
    if (quad) {
        float v[ROW_Q][4];
        nga_row(x, xdt, y, ydt, D, w, g, go, eps, o, v, red);
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
        if (g.p) t = zld(g.p, g.dt, go + j) * t; /* tanh(gate) */
        zst(x, xdt, o + j, zld(x, xdt, o + j) + t);
    }
}

static int nga_quad_ok(const zt *x, const zt *y, const zt *w, zvec gate) {
    int64_t D = zt_cols(x);
    return rows_quad_ok(x->data, D, x->dtype) && rows_quad_ok(y->data, D, y->dtype) && vec_quad_ok(gate) &&
           (!w || rows_quad_ok(w->data, D, ZT_F32));
}

void zcu_norm_gate_add(zbackend *be, zt *x, const zt *y, const zt *w, zvec gate, int64_t batch, float eps) {
    int64_t R = zt_rows(x), D = zt_cols(x);
    if (R == 0 || D == 0) return;
    int quad = nga_quad_ok(x, y, w, gate), ok;
    int th = row_threads(D, &quad);
    zvec_dev g = gate_tanh(be, gate, R, batch, D, &ok);
    if (!ok) return;
    k_norm_gate_add<<<(unsigned)R, th, 0, ZC(be)->stream>>>(x->data, x->dtype, y->data, y->dtype, D,
                                                            w ? (const float *)w->data : NULL, g, eps, quad);
    LAUNCH_OK(be, "k_norm_gate_add");
}

/* ---- norm_gate_add + the next pre-norm ------------------------------------------------ */

/* Quad path only: the k_norm_gate_add update, then the updated row (kept in
 * registers) goes through k_rowafter's rmsnorm arithmetic in the same order,
 * so h is what the two kernels in sequence produce.  Bytes: x read + written
 * once, y read, h written (the separate kernels read x twice more).
 * (Measured at 4224x3840 on an H200 and dropped: a persistent kernel with 2
 * and 3 cp.async row stages, 0.079 / 0.085 ms; x loaded before the first
 * reduction, 0.090-0.095 ms; tanh hoisted out alone, 0.077 ms.  Bytes in
 * flight were not what held it back: instruction issue was.) */
__global__ void k_norm_gate_add_norm(void *x, int xdt, const void *y, int ydt, void *h, int hdt, int64_t D,
                                     const float *w, zvec_dev g, const float *w2, zvec_dev sc, float eps) {
    __shared__ float red[32];
    int64_t r = blockIdx.x, o = r * D;
    int64_t go = g.p ? (r / g.per) * g.stride + g.off : 0;
    int64_t so = sc.p ? (r / sc.per) * sc.stride + sc.off : 0;
    float v[ROW_Q][4];
    nga_row(x, xdt, y, ydt, D, w, g, go, eps, o, v, red);
    float rf2 = row_rms(v, D, eps, red);
    rms_out(v, rf2, w2, D, sc, so, h, hdt, o);
}

/* The DiT's case with the dtypes fixed at compile time (x F32 residual, y and
 * h BF16, gate = tanh scratch F32, scale F32): no dtype branches, row
 * pointers formed once, 32-bit column math; arithmetic and summation order
 * exactly those of k_norm_gate_add_norm.  0.057 ms at 4224x3840 on an H200
 * (3.4 TB/s) against 0.077 ms for the generic kernel, which ncu showed
 * issue-bound (61 % SM vs 40 % DRAM throughput, 47 % occupancy). */
__global__ void k_ngan_f32(float *x, const __nv_bfloat16 *y, __nv_bfloat16 *h, int D, const float *w, const float *tg,
                           int64_t gper, const float *w2, const float *sc, int64_t sstride, int64_t soff,
                           int64_t sper, float eps) {
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    float *xr = x + r * D;
    const __nv_bfloat16 *yr = y + r * D;
    __nv_bfloat16 *hr = h + r * D;
    const float *gr = tg ? tg + (r / gper) * D : NULL, *sr = sc ? sc + (r / sper) * sstride + soff : NULL;
    float v[ROW_Q][4], ss = 0.0f;
#pragma unroll
    for (int k = 0; k < ROW_Q; k++) {
        int j = ((int)threadIdx.x + k * (int)blockDim.x) * 4;
        if (j >= D) continue;
        zld4(yr + j, ZT_BF16, 0, v[k]);
#pragma unroll
        for (int i = 0; i < 4; i++) ss += v[k][i] * v[k][i];
    }
    float rf = 1.0f / sqrtf(zblock_sum(ss, red) / (float)D + eps);
#pragma unroll
    for (int k = 0; k < ROW_Q; k++) {
        int j = ((int)threadIdx.x + k * (int)blockDim.x) * 4;
        if (j >= D) continue;
        float xa[4], w4[4], g4[4];
        zld4(xr + j, ZT_F32, 0, xa);
        if (w) zld4(w + j, ZT_F32, 0, w4);
        if (gr) zld4(gr + j, ZT_F32, 0, g4);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float t = v[k][i] * rf;
            if (w) t = t * w4[i];
            if (gr) t = g4[i] * t;
            xa[i] = xa[i] + t;
            v[k][i] = xa[i];
        }
        zst4(xr + j, ZT_F32, 0, xa);
    }
    float ss2 = 0.0f;
#pragma unroll
    for (int k = 0; k < ROW_Q; k++)
        if (((int)threadIdx.x + k * (int)blockDim.x) * 4 < D) {
#pragma unroll
            for (int i = 0; i < 4; i++) ss2 += v[k][i] * v[k][i];
        }
    float rf2 = 1.0f / sqrtf(zblock_sum(ss2, red) / (float)D + eps);
#pragma unroll
    for (int k = 0; k < ROW_Q; k++) {
        int j = ((int)threadIdx.x + k * (int)blockDim.x) * 4;
        if (j >= D) continue;
        float w4[4], s4[4], o[4];
        if (w2) zld4(w2 + j, ZT_F32, 0, w4);
        if (sr) zld4(sr + j, ZT_F32, 0, s4);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            o[i] = v[k][i] * rf2;
            if (w2) o[i] = o[i] * w4[i];
            if (sr) o[i] = o[i] * (1.0f + s4[i]);
        }
        zst4(hr + j, ZT_BF16, 0, o);
    }
}

void zcu_norm_gate_add_norm(zbackend *be, zt *x, const zt *y, const zt *w, zvec gate, zt *h, const zt *w2, zvec scale2,
                            int64_t batch, float eps) {
    int64_t R = zt_rows(x), D = zt_cols(x);
    if (R == 0 || D == 0) return;
    int quad = nga_quad_ok(x, y, w, gate) && rows_quad_ok(h->data, D, h->dtype) && vec_quad_ok(scale2) &&
               (!w2 || rows_quad_ok(w2->data, D, ZT_F32));
    int th = row_threads(D, &quad);
    if (!quad) { /* unaligned or very wide rows: the two kernels */
        zcu_norm_gate_add(be, x, y, w, gate, batch, eps);
        zcu_rmsnorm(be, h, x, w2, scale2, batch, eps);
        return;
    }
    int ok;
    zvec_dev g = gate_tanh(be, gate, R, batch, D, &ok);
    if (!ok) return;
    zvec_dev sc = vec_dev(scale2, R, batch);
    if (x->dtype == ZT_F32 && y->dtype == ZT_BF16 && h->dtype == ZT_BF16 && (!sc.p || sc.dt == ZT_F32) &&
        D < (1 << 30)) {
        k_ngan_f32<<<(unsigned)R, th, 0, ZC(be)->stream>>>(
            (float *)x->data, (const __nv_bfloat16 *)y->data, (__nv_bfloat16 *)h->data, (int)D,
            w ? (const float *)w->data : NULL, (const float *)g.p, g.per, w2 ? (const float *)w2->data : NULL,
            (const float *)sc.p, sc.stride, sc.off, sc.per, eps);
        LAUNCH_OK(be, "k_ngan_f32");
        return;
    }
    k_norm_gate_add_norm<<<(unsigned)R, th, 0, ZC(be)->stream>>>(
        x->data, x->dtype, y->data, y->dtype, h->data, h->dtype, D, w ? (const float *)w->data : NULL, g,
        w2 ? (const float *)w2->data : NULL, sc, eps);
    LAUNCH_OK(be, "k_norm_gate_add_norm");
}

/* ---- groupnorm ------------------------------------------------------------------------- */

#define GN_THREADS 256
#define GN_PIX 512 /* pixels per stats block */
#define GN_UNROLL 4 /* stats: loads in flight per thread (v1, one: 1.55 TB/s under ncu, latency-bound) */

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
        int64_t p = p0 + prow;
        if (xdt != ZT_F32) /* GN_UNROLL raw 16-byte loads in flight before any use */
            for (; p + (GN_UNROLL - 1) * prows < p1; p += GN_UNROLL * prows) {
                uint4 raw[GN_UNROLL];
#pragma unroll
                for (int u = 0; u < GN_UNROLL; u++) raw[u] = ((const uint4 *)x)[(base + (p + u * prows) * C) / 8 + s];
#pragma unroll
                for (int u = 0; u < GN_UNROLL; u++) {
                    zld8(raw + u, xdt, 0, v);
#pragma unroll
                    for (int i = 0; i < 8; i++) {
                        float d = v[i] - kk[i];
                        a[i] += d;
                        q[i] += d * d;
                    }
                }
            }
        for (; p < p1; p += prows) {
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
