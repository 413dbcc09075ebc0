/* cpu_elementwise.c - elementwise and row ops of the CPU backend:
 * silu_mul, silu, add, axpby, affine, copy_rows, fill_rows, embed,
 * timestep_embed, cfg_combine; and the backend's 8-lane vector math
 * (e^x, silu, max) that softmax, silu and groupnorm use.
 *
 * Every op walks its tensors in chunks of ZCPU_CHUNK values (one chunk per
 * OpenMP iteration); non-F32 arguments are widened into stack buffers per
 * chunk, F32 ones are used in place.  Formulas follow PyTorch fp32:
 *   silu(x) = x / (1 + exp(-x))   (exp: the Cephes polynomial below, <= 2 ulp)
 *   timestep_embed: f_k = exp((-ln(max_period) as f32) * k / half), arg = tau * f_k,
 *                   y = [cos(arg) | sin(arg)], tau = t * scale, all in f32
 *                   (diffusers TimestepEmbedder.timestep_embedding).
 *   cfg_combine:    pred = pos + w * (pos - neg); norms accumulated in double,
 *                   rescale by (k * ||pos||) / ||pred|| in f32 when larger. */
#include <math.h>
#include <omp.h>

#include "cpu_internal.h"

#define PAR_MIN 32768 /* values below which an op runs on one thread */

/* ---- vector math: 4-lane e^x, silu, max (see cpu_internal.h) ---------------- */

/* 4 lanes = one SSE register (wider vectors would change the ABI of these
 * helpers on x86-64-v2) */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f splat(float v) { return (v4f){v, v, v, v}; }
/* m ? a : b, lane-wise (m: all-ones / zero lanes from a comparison) */
static inline v4f sel(v4i m, v4f a, v4f b) { return (v4f)((m & (v4i)a) | (~m & (v4i)b)); }
static inline v4f load4(const float *p) {
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void store4(float *p, v4f v) { memcpy(p, &v, sizeof v); }
/* first n < 4 values, the rest filled with `fill` */
static inline v4f load_part(const float *p, int64_t n, float fill) {
    float b[4];
    for (int i = 0; i < 4; i++) b[i] = i < n ? p[i] : fill;
    return load4(b);
}
static inline void store_part(float *p, v4f v, int64_t n) {
    float b[4];
    store4(b, v);
    for (int64_t i = 0; i < n; i++) p[i] = b[i];
}

static inline v4f vexp(v4f x) {
    const v4f hi = splat(88.0f), lo = splat(-87.33654f);
    v4f xc = sel(x > hi, hi, x);
    xc = sel(xc < lo, lo, xc);
    /* n = floor(x * log2(e) + 0.5) */
    v4f t = xc * 1.44269504088896341f + 0.5f;
    v4i ti = __builtin_convertvector(t, v4i); /* truncates toward zero */
    v4f tf = __builtin_convertvector(ti, v4f);
    v4i corr = tf > t; /* -1 where truncation rounded up (t < 0) */
    v4i n = ti + corr;
    v4f fx = tf + __builtin_convertvector(corr, v4f);
    v4f r = xc - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    v4f p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    v4f scale = (v4f)((n + 127) << 23);
    return sel(x < lo, splat(0.0f), p * scale);
}

static inline v4f vsilu(v4f x) { return x / (1.0f + vexp(-x)); }

void zcpu_vexp_sub(float *x, int64_t n, float sub) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) store4(x + i, vexp(load4(x + i) - sub));
    if (i < n) store_part(x + i, vexp(load_part(x + i, n - i, 0.0f) - sub), n - i);
}

void zcpu_vsilu(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) store4(y + i, vsilu(load4(x + i)));
    if (i < n) store_part(y + i, vsilu(load_part(x + i, n - i, 0.0f)), n - i);
}

void zcpu_vsilu_mul(float *y, const float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) store4(y + i, vsilu(load4(g + i)) * load4(u + i));
    if (i < n) store_part(y + i, vsilu(load_part(g + i, n - i, 0.0f)) * load_part(u + i, n - i, 0.0f), n - i);
}

float zcpu_vmax(const float *x, int64_t n) {
    v4f m = splat(x[0]);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v = load4(x + i);
        m = sel(v > m, v, m);
    }
    if (i < n) {
        v4f v = load_part(x + i, n - i, x[0]);
        m = sel(v > m, v, m);
    }
    float b[4], r;
    store4(b, m);
    r = b[0];
    for (int k = 1; k < 4; k++) r = b[k] > r ? b[k] : r;
    return r;
}

void zcpu_silu(zbackend *be, zt *y, const zt *x) {
    int64_t n = zt_numel(x);
#pragma omp parallel for schedule(static) num_threads(be->threads) if (n > PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += ZCPU_CHUNK) {
        float bx[ZCPU_CHUNK], by[ZCPU_CHUNK];
        int64_t m = n - i0 < ZCPU_CHUNK ? n - i0 : ZCPU_CHUNK;
        const float *xs = zcpu_in(x, i0, m, bx);
        float *ys = zcpu_out(y, i0, by);
        zcpu_vsilu(ys, xs, m);
        zcpu_put(y, i0, m, ys);
    }
}

void zcpu_silu_mul(zbackend *be, zt *y, const zt *gu) {
    int64_t R = zt_rows(y), F = zt_cols(y);
    int64_t per_row = (F + ZCPU_CHUNK - 1) / ZCPU_CHUNK, tasks = R * per_row;
#pragma omp parallel for schedule(static) num_threads(be->threads) if (R * F > PAR_MIN)
    for (int64_t t = 0; t < tasks; t++) {
        float bg[ZCPU_CHUNK], bu[ZCPU_CHUNK], by[ZCPU_CHUNK];
        int64_t r = t / per_row, c0 = (t % per_row) * ZCPU_CHUNK;
        int64_t m = F - c0 < ZCPU_CHUNK ? F - c0 : ZCPU_CHUNK;
        const float *g = zcpu_in(gu, r * 2 * F + c0, m, bg);
        const float *u = zcpu_in(gu, r * 2 * F + F + c0, m, bu);
        float *ys = zcpu_out(y, r * F + c0, by);
        zcpu_vsilu_mul(ys, g, u, m);
        zcpu_put(y, r * F + c0, m, ys);
    }
}

void zcpu_add(zbackend *be, zt *y, const zt *a, const zt *b) {
    int64_t n = zt_numel(y);
#pragma omp parallel for schedule(static) num_threads(be->threads) if (n > PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += ZCPU_CHUNK) {
        float ba[ZCPU_CHUNK], bb[ZCPU_CHUNK], by[ZCPU_CHUNK];
        int64_t m = n - i0 < ZCPU_CHUNK ? n - i0 : ZCPU_CHUNK;
        const float *as = zcpu_in(a, i0, m, ba);
        const float *bs = zcpu_in(b, i0, m, bb);
        float *ys = zcpu_out(y, i0, by);
        for (int64_t j = 0; j < m; j++) ys[j] = as[j] + bs[j];
        zcpu_put(y, i0, m, ys);
    }
}

void zcpu_axpby(zbackend *be, zt *y, float a, const zt *x, float b) {
    int64_t n = zt_numel(y);
#pragma omp parallel for schedule(static) num_threads(be->threads) if (n > PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += ZCPU_CHUNK) {
        float bx[ZCPU_CHUNK], byi[ZCPU_CHUNK], by[ZCPU_CHUNK];
        int64_t m = n - i0 < ZCPU_CHUNK ? n - i0 : ZCPU_CHUNK;
        const float *xs = zcpu_in(x, i0, m, bx);
        const float *yi = zcpu_in(y, i0, m, byi);
        float *ys = zcpu_out(y, i0, by);
        for (int64_t j = 0; j < m; j++) ys[j] = a * xs[j] + b * yi[j];
        zcpu_put(y, i0, m, ys);
    }
}

void zcpu_affine(zbackend *be, zt *y, const zt *x, float a, float b) {
    int64_t n = zt_numel(y);
#pragma omp parallel for schedule(static) num_threads(be->threads) if (n > PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += ZCPU_CHUNK) {
        float bx[ZCPU_CHUNK], by[ZCPU_CHUNK];
        int64_t m = n - i0 < ZCPU_CHUNK ? n - i0 : ZCPU_CHUNK;
        const float *xs = zcpu_in(x, i0, m, bx);
        float *ys = zcpu_out(y, i0, by);
        for (int64_t j = 0; j < m; j++) ys[j] = a * xs[j] + b;
        zcpu_put(y, i0, m, ys);
    }
}

/* ---- row copies --------------------------------------------------------------- */

#define COPY_CHUNK (1 << 16) /* values per parallel copy task */

void zcpu_copy_rows(zbackend *be, zt *dst, int64_t dst_row, const zt *src, int64_t src_row, int64_t n) {
    int64_t c = zt_cols(dst), total = n * c;
    char *d = zcpu_at(dst, dst_row * c);
    const char *s = zcpu_at(src, src_row * c);
    size_t db = zt_dtype_size(dst->dtype), sb = zt_dtype_size(src->dtype);
    /* overlapping ranges of one buffer: one memmove-like pass */
    uintptr_t du = (uintptr_t)d, su = (uintptr_t)s;
    if (du < su + (size_t)total * sb && su < du + (size_t)total * db) {
        if (dst->dtype == src->dtype) {
            memmove(d, s, (size_t)total * db);
            return;
        }
        zbackend_fail(be, ZE_INVALID, "copy_rows: overlapping source and destination of different dtypes");
        return;
    }
#pragma omp parallel for schedule(static) num_threads(be->threads) if (total > 4 * COPY_CHUNK)
    for (int64_t i0 = 0; i0 < total; i0 += COPY_CHUNK) {
        int64_t m = total - i0 < COPY_CHUNK ? total - i0 : COPY_CHUNK;
        zcpu_convert(d + (size_t)i0 * db, dst->dtype, s + (size_t)i0 * sb, src->dtype, m);
    }
}

void zcpu_fill_rows(zbackend *be, zt *dst, int64_t row0, int64_t n, const zt *row) {
    int64_t c = zt_cols(dst);
    size_t rb = (size_t)c * zt_dtype_size(dst->dtype);
    char *conv = zcpu_scratch(be, ZCPU_SCR_AUX, rb);
    if (!conv) return;
    zcpu_convert(conv, dst->dtype, row->data, row->dtype, c);
    char *d = zcpu_at(dst, row0 * c);
#pragma omp parallel for schedule(static) num_threads(be->threads) if (n * c > 4 * COPY_CHUNK)
    for (int64_t r = 0; r < n; r++) memcpy(d + (size_t)r * rb, conv, rb);
}

void zcpu_embed(zbackend *be, zt *y, const zt *table, const int32_t *ids, int64_t n) {
    int64_t D = zt_cols(y);
#pragma omp parallel for schedule(static) num_threads(be->threads) if (n * D > 4 * COPY_CHUNK)
    for (int64_t i = 0; i < n; i++)
        zcpu_convert(zcpu_at(y, i * D), y->dtype, zcpu_at(table, (int64_t)ids[i] * D), table->dtype, D);
}

/* ---- timestep embedding ----------------------------------------------------------- */

void zcpu_timestep_embed(zbackend *be, zt *y, const zt *t, float scale, float max_period) {
    (void)be;
    int64_t B = zt_rows(y), D = zt_cols(y), half = D / 2;
    /* torch: exp(-math.log(max_period) * arange(half, f32) / half): the Python
     * double becomes an f32 scalar; product and quotient are f32 ops */
    const float neg_log = (float)(-log((double)max_period));
    const float *tv = t->data;
    for (int64_t b = 0; b < B; b++) {
        float tau = tv[b] * scale;
        for (int64_t k = 0; k < half; k++) {
            float f = expf(neg_log * (float)k / (float)half);
            float arg = tau * f;
            zcpu_st(y->data, y->dtype, b * D + k, cosf(arg));
            zcpu_st(y->data, y->dtype, b * D + half + k, sinf(arg));
        }
    }
}

/* ---- classifier-free guidance ------------------------------------------------------ */

void zcpu_cfg_combine(zbackend *be, zt *out, const zt *pos, const zt *neg, float w, float norm_k) {
    int64_t B = out->ne[0], n = zt_numel(out) / (B ? B : 1);
    for (int64_t b = 0; b < B; b++) {
        const float *p = (const float *)pos->data + b * n, *q = (const float *)neg->data + b * n;
        float *o = (float *)out->data + b * n;
        float factor = 1.0f;
        if (norm_k > 0.0f) {
            double sp = 0, so = 0;
#pragma omp parallel for schedule(static) num_threads(be->threads) reduction(+ : sp, so) if (n > PAR_MIN)
            for (int64_t i = 0; i < n; i++) {
                float pr = p[i] + w * (p[i] - q[i]);
                sp += (double)p[i] * p[i];
                so += (double)pr * pr;
            }
            float pn = (float)sqrt(sp), on = (float)sqrt(so);
            float maxn = pn * norm_k;
            if (on > maxn) factor = maxn / on;
        }
        /* out may alias pos: every norm is taken before the first write */
#pragma omp parallel for schedule(static) num_threads(be->threads) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float pr = p[i] + w * (p[i] - q[i]);
            o[i] = factor == 1.0f ? pr : pr * factor;
        }
    }
}
