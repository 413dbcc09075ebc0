/* cpu_conv.c - NHWC 2-D convolution of the CPU backend.
 *
 *   y[b, oh, ow, co] = bias[co] + sum_{i, j, ci} x[b, oh*s - pt + i, ow*s - pl + j, ci]
 *                                              * w[co, (i*kw + j)*Ci + ci]
 *   x [B, H, W, Ci], w [Co, kh*kw*Ci] (OHWI flattened), y [B, Ho, Wo, Co],
 *   zero padding (top pt, left pl, bottom pb, right pr), stride s.
 *
 * 1x1 stride-1 unpadded convs are a plain matmul over the B*H*W pixels.  The
 * rest is im2col + GEMM over tiles of T output pixels: the tile's rows
 * col[T, kh*kw*Ci] (out-of-image taps are zeros) are built in parallel, then
 * one GEMM (zcpu_gemm: threads, BF16/F16 weights widened) writes the T
 * contiguous output pixels.  T * kh*kw*Ci <= threads * ZCPU_COL_FLOATS, so the
 * scratch stays bounded whatever the image size (a full im2col of a
 * 1024x1024x256 3x3 conv would be ~10 GB).  Output pixels of an NHWC tensor
 * are its rows, so y needs no reordering. */
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
    int64_t T = (int64_t)nth * ZCPU_COL_FLOATS / K;
    if (T < 1) T = 1;
    if (T > P) T = P;
    float *col = zcpu_scratch(be, ZCPU_SCR_COL, (size_t)(T * K) * 4);
    float *ybuf = y->dtype == ZT_F32 ? NULL : zcpu_scratch(be, ZCPU_SCR_CONVY, (size_t)(T * Co) * 4);
    if (!col || (y->dtype != ZT_F32 && !ybuf)) return;
    const float *bv = b ? b->data : NULL;
    for (int64_t p0 = 0; p0 < P && be->status == ZE_OK; p0 += T) {
        int64_t pn = P - p0 < T ? P - p0 : T;
        float *yf = ybuf ? ybuf : (float *)y->data + p0 * Co;
#pragma omp parallel for schedule(static) num_threads(nth) if (pn * K > 32768)
        for (int64_t i = 0; i < pn; i++) {
            im2col_row(col + i * K, x, p0 + i, Ho, Wo, kh, kw, stride, pad_t, pad_l);
            if (bv) memcpy(yf + i * Co, bv, (size_t)Co * 4);
        }
        zcpu_gemm(be, pn, Co, K, col, K, w, yf, Co, bv ? 1.0f : 0.0f);
        if (ybuf) {
#pragma omp parallel for schedule(static) num_threads(nth) if (pn * Co > 32768)
            for (int64_t i = 0; i < pn; i++) zcpu_narrow(zcpu_at(y, (p0 + i) * Co), y->dtype, ybuf + i * Co, Co);
        }
    }
}
