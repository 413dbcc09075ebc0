/* cpu_norm.c - normalizations of the CPU backend: rmsnorm, layernorm,
 * norm_gate_add, groupnorm (NHWC).
 *
 * Rows [R, D] are split into `batch` equal groups of R/batch rows (samples);
 * sample b's scale / gate vector is vec.t->data[b * cols(vec.t) + vec.off ...].
 * Statistics are accumulated in double; the rest follows PyTorch fp32 order:
 *   rmsnorm    r = 1 / sqrt(f32(mean(x^2)) + eps);  y = ((x * r) * w) * (1 + s)
 *   layernorm  r = 1 / sqrt(f32(var) + eps) (biased var);
 *              y = ((x * r + (-mean * r)) * w + b) * (1 + s)      (ATen's form)
 *   norm_gate_add  x = x + tanh(g) * ((y * r) * w)   (tanh once per sample)
 *   groupnorm  per (sample, group) over H*W*(C/G): sc_c = r * w_c,
 *              sh_c = -sc_c * mean + b_c;  y = x * sc_c + sh_c, then
 *              optionally silu(y) = y / (1 + exp(-y))           (ATen's form)
 * Work buffers are per-thread slices of ZCPU_SCR_THREAD (rows) and
 * ZCPU_SCR_AUX (tanh gates, group statistics). */
#include <math.h>
#include <omp.h>

#include "cpu_internal.h"

#define ROWS_PAR_MIN 32768 /* values below which a norm runs on one thread */

static double sumsq(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* 1 / sqrt(mean(x^2) + eps) as torch computes it (mean rounded to f32). */
static inline float rms_factor(const float *x, int64_t n, float eps) {
    float var = (float)(sumsq(x, n) / (double)n);
    return 1.0f / sqrtf(var + eps);
}

/* Per-thread slices of `per` floats each; NULL after a failure. */
static float *thread_bufs(zbackend *be, int64_t per, size_t *slice) {
    *slice = zcpu_slice((size_t)per * 4);
    return zcpu_scratch(be, ZCPU_SCR_THREAD, *slice * (size_t)be->threads);
}
#define TBUF(base, slice) ((float *)((char *)(base) + (slice) * (size_t)omp_get_thread_num()))

void zcpu_rmsnorm(zbackend *be, zt *y, const zt *x, const zt *w, zvec scale, int64_t batch, float eps) {
    int64_t R = zt_rows(x), D = zt_cols(x), per = R / batch;
    size_t slice;
    float *bufs = thread_bufs(be, 3 * D, &slice);
    if (!bufs) return;
    const float *wv = w ? w->data : NULL;
#pragma omp parallel for schedule(static) num_threads(be->threads) if (R * D > ROWS_PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        float *bx = TBUF(bufs, slice), *by = bx + D, *bs = by + D;
        const float *xr = zcpu_in(x, r * D, D, bx);
        const float *sv = scale.t ? zcpu_in(scale.t, (r / per) * zt_cols(scale.t) + scale.off, D, bs) : NULL;
        float *yr = zcpu_out(y, r * D, by);
        float rf = rms_factor(xr, D, eps);
        for (int64_t j = 0; j < D; j++) {
            float v = xr[j] * rf;
            if (wv) v = v * wv[j];
            if (sv) v = v * (1.0f + sv[j]);
            yr[j] = v;
        }
        zcpu_put(y, r * D, D, yr);
    }
}

void zcpu_layernorm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch,
                    float eps) {
    int64_t R = zt_rows(x), D = zt_cols(x), per = R / batch;
    size_t slice;
    float *bufs = thread_bufs(be, 3 * D, &slice);
    if (!bufs) return;
    const float *wv = w ? w->data : NULL, *bv = b ? b->data : NULL;
#pragma omp parallel for schedule(static) num_threads(be->threads) if (R * D > ROWS_PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        float *bx = TBUF(bufs, slice), *by = bx + D, *bs = by + D;
        const float *xr = zcpu_in(x, r * D, D, bx);
        const float *sv = scale.t ? zcpu_in(scale.t, (r / per) * zt_cols(scale.t) + scale.off, D, bs) : NULL;
        float *yr = zcpu_out(y, r * D, by);
        double s = 0, ss = 0;
        for (int64_t j = 0; j < D; j++) s += xr[j];
        double mean = s / (double)D;
        for (int64_t j = 0; j < D; j++) ss += ((double)xr[j] - mean) * ((double)xr[j] - mean);
        float rstd = 1.0f / sqrtf((float)(ss / (double)D) + eps);
        float shift = -(float)mean * rstd;
        for (int64_t j = 0; j < D; j++) {
            float v = xr[j] * rstd + shift;
            if (wv) v = v * wv[j];
            if (bv) v = v + bv[j];
            if (sv) v = v * (1.0f + sv[j]);
            yr[j] = v;
        }
        zcpu_put(y, r * D, D, yr);
    }
}

void zcpu_norm_gate_add(zbackend *be, zt *x, const zt *y, const zt *w, zvec gate, int64_t batch, float eps) {
    int64_t R = zt_rows(x), D = zt_cols(x), per = R / batch;
    float *tg = NULL;
    if (gate.t) { /* tanh of every sample's gate, once */
        tg = zcpu_scratch(be, ZCPU_SCR_AUX, (size_t)(batch * D) * 4);
        if (!tg) return;
        for (int64_t b = 0; b < batch; b++)
            for (int64_t j = 0; j < D; j++)
                tg[b * D + j] = tanhf(zcpu_ld(gate.t->data, gate.t->dtype, b * zt_cols(gate.t) + gate.off + j));
    }
    size_t slice;
    float *bufs = thread_bufs(be, 3 * D, &slice);
    if (!bufs) return;
    const float *wv = w ? w->data : NULL;
#pragma omp parallel for schedule(static) num_threads(be->threads) if (R * D > ROWS_PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        float *by = TBUF(bufs, slice), *bx = by + D, *bo = bx + D;
        const float *yr = zcpu_in(y, r * D, D, by);
        const float *xr = zcpu_in(x, r * D, D, bx);
        const float *g = tg ? tg + (r / per) * D : NULL;
        float *xo = zcpu_out(x, r * D, bo);
        float rf = rms_factor(yr, D, eps);
        for (int64_t j = 0; j < D; j++) {
            float v = yr[j] * rf;
            if (wv) v = v * wv[j];
            if (g) v = g[j] * v;
            xo[j] = xr[j] + v;
        }
        zcpu_put(x, r * D, D, xo);
    }
}

/* ---- group norm (NHWC) --------------------------------------------------------- */

void zcpu_groupnorm(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, int groups, float eps, int silu) {
    int64_t B = x->ne[0], HW = x->ne[1] * x->ne[2], C = x->ne[3], G = groups, cg = C / G;
    int nth = be->threads;
    int64_t P = B * HW; /* pixels */
    /* AUX: per-thread partial sums [nth][B*G][2] doubles, then sc/sh [B*C][2] floats */
    size_t part_bytes = zcpu_slice((size_t)(nth * B * G * 2) * sizeof(double));
    char *aux = zcpu_scratch(be, ZCPU_SCR_AUX, part_bytes + (size_t)(B * C * 2) * 4);
    if (!aux) return;
    double *part = (double *)aux;
    float *sc = (float *)(aux + part_bytes), *sh = sc + B * C;
    memset(part, 0, (size_t)(nth * B * G * 2) * sizeof(double));
    /* pixels per task, and per-thread F32 rows for non-F32 x / y */
    int64_t ppt = C >= ZCPU_CHUNK ? 1 : ZCPU_CHUNK / C;
    int64_t ntask = (P + ppt - 1) / ppt;
    size_t slice;
    float *bufs = thread_bufs(be, 2 * ppt * C, &slice);
    if (!bufs) return;

    /* pass 1: sums and sums of squares per (sample, group) */
#pragma omp parallel for schedule(static) num_threads(nth) if (P * C > ROWS_PAR_MIN)
    for (int64_t t = 0; t < ntask; t++) {
        double *acc = part + (int64_t)omp_get_thread_num() * B * G * 2;
        int64_t p0 = t * ppt, p1 = p0 + ppt < P ? p0 + ppt : P;
        const float *xs = zcpu_in(x, p0 * C, (p1 - p0) * C, TBUF(bufs, slice));
        for (int64_t p = p0; p < p1; p++) {
            const float *xp = xs + (p - p0) * C;
            double *a = acc + (p / HW) * G * 2;
            for (int64_t g = 0; g < G; g++) {
                double s = 0, ss = 0;
                for (int64_t j = 0; j < cg; j++) {
                    double v = xp[g * cg + j];
                    s += v;
                    ss += v * v;
                }
                a[2 * g] += s;
                a[2 * g + 1] += ss;
            }
        }
    }
    /* statistics -> per-channel scale and shift */
    const float *wv = w->data, *bv = b->data;
    double n = (double)(HW * cg);
    for (int64_t bg = 0; bg < B * G; bg++) {
        double s = 0, ss = 0;
        for (int t = 0; t < nth; t++) {
            s += part[(t * B * G + bg) * 2];
            ss += part[(t * B * G + bg) * 2 + 1];
        }
        double mean = s / n, var = ss / n - mean * mean;
        if (var < 0) var = 0;
        float rstd = 1.0f / sqrtf((float)var + eps), meanf = (float)mean;
        int64_t bi = bg / G, g = bg % G;
        for (int64_t j = 0; j < cg; j++) {
            int64_t c = g * cg + j;
            float s_c = rstd * wv[c];
            sc[bi * C + c] = s_c;
            sh[bi * C + c] = -s_c * meanf + bv[c];
        }
    }
    /* pass 2: y = x * sc + sh (then silu) */
#pragma omp parallel for schedule(static) num_threads(nth) if (P * C > ROWS_PAR_MIN)
    for (int64_t t = 0; t < ntask; t++) {
        float *bx = TBUF(bufs, slice), *by = bx + ppt * C;
        int64_t p0 = t * ppt, p1 = p0 + ppt < P ? p0 + ppt : P;
        const float *xs = zcpu_in(x, p0 * C, (p1 - p0) * C, bx);
        float *ys = zcpu_out(y, p0 * C, by);
        for (int64_t p = p0; p < p1; p++) {
            const float *xp = xs + (p - p0) * C, *scp = sc + (p / HW) * C, *shp = sh + (p / HW) * C;
            float *yp = ys + (p - p0) * C;
            for (int64_t c = 0; c < C; c++) yp[c] = xp[c] * scp[c] + shp[c];
            if (silu) zcpu_vsilu(yp, yp, C);
        }
        zcpu_put(y, p0 * C, (p1 - p0) * C, ys);
    }
}
