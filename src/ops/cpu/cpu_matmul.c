/* cpu_matmul.c - the GEMM core of the CPU backend and the matmul op.
 *
 *   y[M, N] = (accumulate ? y : 0) + x[M, K] · w[N, K]^T + bias[N]
 *
 * w is a "matrix" weight: F32, BF16 or F16.  F32 goes straight to
 * cblas_sgemm.  BF16/F16 weights are widened to F32 in backend scratch, tile
 * by tile: a task takes nt rows of w (nt*K <= ZCPU_WTILE_FLOATS), widens them
 * into its thread's slice and runs one sgemm into the matching nt columns of
 * y.  Only small weights (N*K <= threads * ZCPU_WTILE_FLOATS) that are shared
 * by row tasks or a single small GEMM are widened whole.  No weight is ever
 * converted as a whole into memory sized by the weight.
 *
 * Threads: the GEMM is cut into tasks (column tiles of y, or row blocks when
 * N is narrow), scheduled dynamically over the OpenMP threads; each task is
 * one single-threaded sgemm.
 *
 * Bias: like PyTorch's addmm, y is first filled with the bias (or the bias is
 * added to the accumulator) and the product is then accumulated with beta = 1.
 * x / y that are not F32 go through F32 scratch in row chunks (bounded size). */
#include <cblas.h>
#include <omp.h>

#include "cpu_internal.h"

#define SPLIT_MIN_FLOPS 4e6 /* below this a GEMM runs on one thread            */
#define XY_CHUNK_FLOATS (1 << 22) /* non-F32 x/y: floats per row chunk (x + y)  */

void zcpu_sgemm1(int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                 int64_t ldb, int bt, float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { /* C = beta * C (BLAS would reject lda < 1) */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, bt ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k,
                alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

/* Widen rows [r0, r0+n) of w into dst (F32 rows of K). */
static void widen_rows(float *dst, const zt *w, int64_t r0, int64_t n, int64_t K) {
    zcpu_widen(dst, zcpu_at(w, r0 * K), w->dtype, n * K);
}

int zcpu_gemm(zbackend *be, int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx, const zt *w, float *y,
              int64_t ldy, float beta) {
    if (M <= 0 || N <= 0) return ZE_OK;
    int nth = be->threads, f32 = w->dtype == ZT_F32;
    /* a weight that may be widened whole: at most threads * ZCPU_WTILE_FLOATS */
    int whole = f32 || N * K <= (int64_t)nth * ZCPU_WTILE_FLOATS;
    int small = whole && (nth <= 1 || 2.0 * (double)M * (double)N * (double)K < SPLIT_MIN_FLOPS);
    int by_rows = whole && !small && N < 128 * (int64_t)nth && M >= 8 * (int64_t)nth;

    if (small || by_rows) {
        /* one sgemm, or tasks of rows of x and y that all read the whole w */
        const float *wf = w->data;
        if (!f32) {
            float *buf = zcpu_scratch(be, ZCPU_SCR_WTILE, (size_t)(N * K) * 4);
            if (!buf) return be->status;
            int64_t rows = 65536 / (K > 0 ? K : 1) + 1;
#pragma omp parallel for schedule(static) num_threads(nth) if (N * K > 65536)
            for (int64_t r0 = 0; r0 < N; r0 += rows) widen_rows(buf + r0 * K, w, r0, N - r0 < rows ? N - r0 : rows, K);
            wf = buf;
        }
        if (small) {
            zcpu_sgemm1(M, N, K, 1.0f, x, ldx, wf, K, 1, beta, y, ldy);
            return ZE_OK;
        }
        int64_t mt = (M + 4 * nth - 1) / (4 * nth);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
        for (int64_t m0 = 0; m0 < M; m0 += mt)
            zcpu_sgemm1(M - m0 < mt ? M - m0 : mt, N, K, 1.0f, x + m0 * ldx, ldx, wf, K, 1, beta, y + m0 * ldy, ldy);
        return ZE_OK;
    }
    /* tasks of nt rows of w (= columns of y), scheduled dynamically so that a
     * core taken by another process does not stall the whole GEMM; BF16/F16
     * tiles are widened into the running thread's slice first */
    int64_t nt = ((N + 2 * nth - 1) / (2 * nth) + 15) / 16 * 16;
    if (nt < 64) nt = 64;
    if (!f32) {
        int64_t cap = ZCPU_WTILE_FLOATS / (K > 0 ? K : 1);
        if (cap >= 32) cap = cap / 16 * 16;
        if (cap < 1) cap = 1;
        if (nt > cap) nt = cap;
    }
    if (nt > N) nt = N;
    size_t slice = zcpu_slice((size_t)(nt * K) * 4);
    char *ws = f32 ? NULL : zcpu_scratch(be, ZCPU_SCR_WTILE, slice * (size_t)nth);
    if (!f32 && !ws) return be->status;
    int64_t ntiles = (N + nt - 1) / nt;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
    for (int64_t ti = 0; ti < ntiles; ti++) {
        int64_t n0 = ti * nt, nb = N - n0 < nt ? N - n0 : nt;
        const float *wt;
        if (f32) {
            wt = (const float *)w->data + n0 * K;
        } else {
            float *buf = (float *)(ws + slice * (size_t)omp_get_thread_num());
            widen_rows(buf, w, n0, nb, K);
            wt = buf;
        }
        zcpu_sgemm1(M, nb, K, 1.0f, x, ldx, wt, K, 1, beta, y + n0, ldy);
    }
    return ZE_OK;
}

/* y[r, :] = (acc ? y[r, :] : 0) + bias for r < M (F32 y, row stride N). */
static void bias_rows(zbackend *be, float *y, const float *bias, int64_t M, int64_t N, int acc) {
#pragma omp parallel for schedule(static) num_threads(be->threads) if (M * N > 65536)
    for (int64_t r = 0; r < M; r++) {
        float *yr = y + r * N;
        if (acc)
            for (int64_t j = 0; j < N; j++) yr[j] += bias[j];
        else
            memcpy(yr, bias, (size_t)N * 4);
    }
}

void zcpu_matmul(zbackend *be, zt *y, const zt *x, const zt *w, const zt *bias, int accumulate) {
    int64_t M = zt_rows(x), K = zt_cols(x), N = w->ne[0];
    const float *bv = bias ? bias->data : NULL;
    float beta = (accumulate || bv) ? 1.0f : 0.0f;
    if (M == 0 || N == 0) return;
    if (x->dtype == ZT_F32 && y->dtype == ZT_F32) {
        if (bv) bias_rows(be, y->data, bv, M, N, accumulate);
        zcpu_gemm(be, M, N, K, x->data, K, w, y->data, N, beta);
        return;
    }
    /* generic dtypes: F32 copies of row chunks of x and y */
    int64_t mt = XY_CHUNK_FLOATS / (K + N);
    if (mt < 1) mt = 1;
    if (mt > M) mt = M;
    float *xs = x->dtype == ZT_F32 ? NULL : zcpu_scratch(be, ZCPU_SCR_X, (size_t)(mt * K) * 4);
    float *ys = y->dtype == ZT_F32 ? NULL : zcpu_scratch(be, ZCPU_SCR_Y, (size_t)(mt * N) * 4);
    if ((x->dtype != ZT_F32 && !xs) || (y->dtype != ZT_F32 && !ys)) return;
    for (int64_t m0 = 0; m0 < M && be->status == ZE_OK; m0 += mt) {
        int64_t mb = M - m0 < mt ? M - m0 : mt;
        const float *xf = x->dtype == ZT_F32 ? (const float *)x->data + m0 * K : xs;
        float *yf = y->dtype == ZT_F32 ? (float *)y->data + m0 * N : ys;
#pragma omp parallel for schedule(static) num_threads(be->threads) if (mb * (K + N) > 65536)
        for (int64_t r = 0; r < mb; r++) {
            if (xs) zcpu_widen(xs + r * K, zcpu_at(x, (m0 + r) * K), x->dtype, K);
            if (ys && accumulate) zcpu_widen(ys + r * N, zcpu_at(y, (m0 + r) * N), y->dtype, N);
        }
        if (bv) bias_rows(be, yf, bv, mb, N, accumulate);
        zcpu_gemm(be, mb, N, K, xf, K, w, yf, N, beta);
        if (ys) {
#pragma omp parallel for schedule(static) num_threads(be->threads) if (mb * N > 65536)
            for (int64_t r = 0; r < mb; r++) zcpu_narrow(zcpu_at(y, (m0 + r) * N), y->dtype, ys + r * N, N);
        }
    }
}
