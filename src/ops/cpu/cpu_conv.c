/* cpu_conv.c - NHWC 2-D convolution of the CPU backend.
 *
 *   y[b, oh, ow, co] = bias[co] + sum_{i, j, ci} x[b, oh*s - pt + i, ow*s - pl + j, ci]
 *                                              * w[co, (i*kw + j)*Ci + ci]
 *   x [B, H, W, Ci], w [Co, kh*kw*Ci] (OHWI flattened), y [B, Ho, Wo, Co],
 *   zero padding (top pt, left pl, bottom pb, right pr), stride s.
 *
 * 1x1 stride-1 unpadded convs are a plain matmul over the B*H*W pixels.  The
 * rest is im2col + GEMM over tasks of T output pixels: a task builds the rows
 * col[T, kh*kw*Ci] of its pixels (out-of-image taps are zeros) in its
 * thread's tile and runs one sgemm into the T contiguous output rows (output
 * pixels of an NHWC tensor are its rows).  Tasks are scheduled dynamically,
 * with no barrier between im2col and GEMM.  T * kh*kw*Ci <= ZCPU_COL_FLOATS
 * per thread, so the scratch stays bounded whatever the image size (a full
 * im2col of a 1024x1024x256 3x3 conv would be ~10 GB).  BF16/F16 weights are
 * widened once per call (VAE convs are at most 2.4M elements); weights over
 * CONV_WHOLE_FLOATS take a slower path: shared im2col tiles and zcpu_gemm,
 * which widens them tile by tile. */
#include <omp.h>

#include "cpu_internal.h"

/* Row `pi` of the im2col tile for output pixel p. */
static void im2col_row(float *dst, const zt *x, int64_t p, int64_t Ho, int64_t Wo, int kh, int kw, int stride,
                       int pt, int pl) {
    int64_t H = x->ne[1], W = x->ne[2], Ci = x->ne[3];
    int64_t b = p / (Ho * Wo), oh = (p / Wo) % Ho, ow = p % Wo;
    int64_t ih0 = oh * stride - pt, iw0 = ow * stride - pl;
    /* valid tap range along w: iw0 + j in [0, W) */
    int64_t jlo = iw0 < 0 ? -iw0 : 0, jhi = W - iw0 < kw ? W - iw0 : kw;
    if (jhi < jlo) jhi = jlo;
    for (int i = 0; i < kh; i++) {
        float *d = dst + (int64_t)i * kw * Ci;
        int64_t ih = ih0 + i;
        if (ih < 0 || ih >= H || jlo >= jhi) {
            memset(d, 0, (size_t)(kw * Ci) * 4);
            continue;
        }
        if (jlo > 0) memset(d, 0, (size_t)(jlo * Ci) * 4);
        if (jhi < kw) memset(d + jhi * Ci, 0, (size_t)((kw - jhi) * Ci) * 4);
        int64_t src = ((b * H + ih) * W + iw0) * Ci;
        if (stride == 1) { /* the taps of one kernel row are contiguous in x */
            zcpu_widen(d + jlo * Ci, zcpu_at(x, src + jlo * Ci), x->dtype, (jhi - jlo) * Ci);
        } else {
            for (int64_t j = jlo; j < jhi; j++) zcpu_widen(d + j * Ci, zcpu_at(x, src + j * Ci), x->dtype, Ci);
        }
    }
}

/* Weights up to this many elements are widened whole (BF16/F16) and shared by
 * all pixel tasks; the VAE's largest conv has 512 * 4608 = 2.4M. */
#define CONV_WHOLE_FLOATS (1 << 23)

void zcpu_conv2d(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, int kh, int kw, int stride, int pad_t,
                 int pad_l, int pad_b, int pad_r) {
    int64_t B = x->ne[0], H = x->ne[1], W = x->ne[2], Ci = x->ne[3];
    int64_t Ho = y->ne[1], Wo = y->ne[2], Co = y->ne[3], K = (int64_t)kh * kw * Ci;
    int nth = be->threads;
    if (kh == 1 && kw == 1 && stride == 1 && !pad_t && !pad_l && !pad_b && !pad_r) {
        zt xv = zt_rows_view(x, 0, B * H * W), yv = zt_rows_view(y, 0, B * Ho * Wo);
        zcpu_matmul(be, &yv, &xv, w, b, 0);
        return;
    }
    int64_t P = B * Ho * Wo;
    if (P == 0 || Co == 0) return;
    const float *bv = b ? b->data : NULL;
    float beta = bv ? 1.0f : 0.0f;
    int ybf = y->dtype != ZT_F32;

    if (w->dtype == ZT_F32 || Co * K <= CONV_WHOLE_FLOATS) {
        /* one task = T output pixels: im2col into the thread's tile, then one
         * sgemm; tasks are independent (no barrier between im2col and GEMM) */
        const float *wf = w->data;
        if (w->dtype != ZT_F32) {
            float *buf = zcpu_scratch(be, ZCPU_SCR_WTILE, (size_t)(Co * K) * 4);
            if (!buf) return;
            int64_t rows = 65536 / K + 1;
#pragma omp parallel for schedule(static) num_threads(nth) if (Co * K > 65536)
            for (int64_t r0 = 0; r0 < Co; r0 += rows)
                zcpu_widen(buf + r0 * K, zcpu_at(w, r0 * K), w->dtype, (Co - r0 < rows ? Co - r0 : rows) * K);
            wf = buf;
        }
        int64_t T = ZCPU_COL_FLOATS / K;
        int64_t even = (P + 4 * nth - 1) / (4 * nth); /* at least 4 tasks per thread */
        if (T > even) T = even;
        if (T < 1) T = 1;
        size_t slice = zcpu_slice((size_t)(T * (K + (ybf ? Co : 0))) * 4);
        char *bufs = zcpu_scratch(be, ZCPU_SCR_COL, slice * (size_t)nth);
        if (!bufs) return;
        int64_t ntask = (P + T - 1) / T;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (P * K * Co > 1000000)
        for (int64_t t = 0; t < ntask; t++) {
            float *col = (float *)(bufs + slice * (size_t)omp_get_thread_num());
            int64_t p0 = t * T, pn = P - p0 < T ? P - p0 : T;
            float *yf = ybf ? col + T * K : (float *)y->data + p0 * Co;
            for (int64_t i = 0; i < pn; i++) {
                im2col_row(col + i * K, x, p0 + i, Ho, Wo, kh, kw, stride, pad_t, pad_l);
                if (bv) memcpy(yf + i * Co, bv, (size_t)Co * 4);
            }
            zcpu_sgemm1(pn, Co, K, 1.0f, col, K, wf, K, 1, beta, yf, Co);
            if (ybf) zcpu_narrow(zcpu_at(y, p0 * Co), y->dtype, yf, pn * Co);
        }
        return;
    }

    /* very large BF16/F16 weights: shared im2col tiles, zcpu_gemm widens w tile by tile */
    int64_t T = (int64_t)nth * ZCPU_COL_FLOATS / K;
    if (T < 1) T = 1;
    if (T > P) T = P;
    float *col = zcpu_scratch(be, ZCPU_SCR_COL, (size_t)(T * K) * 4);
    float *ybuf = ybf ? zcpu_scratch(be, ZCPU_SCR_CONVY, (size_t)(T * Co) * 4) : NULL;
    if (!col || (ybf && !ybuf)) return;
    for (int64_t p0 = 0; p0 < P && be->status == ZE_OK; p0 += T) {
        int64_t pn = P - p0 < T ? P - p0 : T;
        float *yf = ybuf ? ybuf : (float *)y->data + p0 * Co;
#pragma omp parallel for schedule(static) num_threads(nth) if (pn * K > 32768)
        for (int64_t i = 0; i < pn; i++) {
            im2col_row(col + i * K, x, p0 + i, Ho, Wo, kh, kw, stride, pad_t, pad_l);
            if (bv) memcpy(yf + i * Co, bv, (size_t)Co * 4);
        }
        zcpu_gemm(be, pn, Co, K, col, K, w, yf, Co, beta);
        if (ybuf) {
#pragma omp parallel for schedule(static) num_threads(nth) if (pn * Co > 32768)
            for (int64_t i = 0; i < pn; i++) zcpu_narrow(zcpu_at(y, (p0 + i) * Co), y->dtype, ybuf + i * Co, Co);
        }
    }
}
