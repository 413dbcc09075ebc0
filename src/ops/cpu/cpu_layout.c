/* cpu_layout.c - layout ops of the CPU backend (dtype converted on the fly):
 *   patchify    tok[b, h*Wt + w, (ph*p + pw)*C + c] = x[b, c, h*p + ph, w*p + pw]
 *               x [B, C, H, W] (NCHW latents), tok [B, Ht*Wt, p*p*C]
 *   unpatchify  the inverse, from the first Ht*Wt rows of each sample of
 *               tok [B, N, p*p*C] (N >= Ht*Wt)
 *   nchw_to_nhwc  y[b, h, w, c] = x[b, c, h, w]
 *   upsample2x    y[b, 2h + i, 2w + j, c] = x[b, h, w, c]   (NHWC, nearest)
 */
#include <omp.h>

#include "cpu_internal.h"

#define LAYOUT_PAR_MIN 65536 /* values below which a layout op runs on one thread */

void zcpu_patchify(zbackend *be, zt *tok, const zt *x, int p) {
    int64_t B = x->ne[0], C = x->ne[1], H = x->ne[2], W = x->ne[3], Ht = H / p, Wt = W / p, F = (int64_t)p * p * C;
    int64_t ntok = B * Ht * Wt;
#pragma omp parallel for schedule(static) num_threads(be->threads) if (ntok * F > LAYOUT_PAR_MIN)
    for (int64_t n = 0; n < ntok; n++) {
        int64_t b = n / (Ht * Wt), h = (n / Wt) % Ht, w = n % Wt;
        for (int64_t ph = 0; ph < p; ph++)
            for (int64_t pw = 0; pw < p; pw++)
                for (int64_t c = 0; c < C; c++) {
                    int64_t src = ((b * C + c) * H + h * p + ph) * W + w * p + pw;
                    zcpu_st(tok->data, tok->dtype, n * F + (ph * p + pw) * C + c, zcpu_ld(x->data, x->dtype, src));
                }
    }
}

void zcpu_unpatchify(zbackend *be, zt *x, const zt *tok, int p) {
    int64_t B = x->ne[0], C = x->ne[1], H = x->ne[2], W = x->ne[3], Ht = H / p, Wt = W / p, F = (int64_t)p * p * C;
    int64_t N = tok->ne[1], ntok = B * Ht * Wt;
#pragma omp parallel for schedule(static) num_threads(be->threads) if (ntok * F > LAYOUT_PAR_MIN)
    for (int64_t n = 0; n < ntok; n++) {
        int64_t b = n / (Ht * Wt), i = n % (Ht * Wt), h = i / Wt, w = i % Wt;
        int64_t row = (b * N + i) * F;
        for (int64_t ph = 0; ph < p; ph++)
            for (int64_t pw = 0; pw < p; pw++)
                for (int64_t c = 0; c < C; c++) {
                    int64_t dst = ((b * C + c) * H + h * p + ph) * W + w * p + pw;
                    zcpu_st(x->data, x->dtype, dst, zcpu_ld(tok->data, tok->dtype, row + (ph * p + pw) * C + c));
                }
    }
}

void zcpu_nchw_to_nhwc(zbackend *be, zt *y, const zt *x) {
    int64_t B = x->ne[0], C = x->ne[1], H = x->ne[2], W = x->ne[3];
#pragma omp parallel for schedule(static) num_threads(be->threads) if (B * C * H * W > LAYOUT_PAR_MIN)
    for (int64_t bh = 0; bh < B * H; bh++) {
        int64_t b = bh / H, h = bh % H;
        for (int64_t w = 0; w < W; w++)
            for (int64_t c = 0; c < C; c++)
                zcpu_st(y->data, y->dtype, (bh * W + w) * C + c, zcpu_ld(x->data, x->dtype, ((b * C + c) * H + h) * W + w));
    }
}

void zcpu_upsample2x(zbackend *be, zt *y, const zt *x) {
    int64_t B = x->ne[0], H = x->ne[1], W = x->ne[2], C = x->ne[3];
    size_t yb = zt_dtype_size(y->dtype);
#pragma omp parallel for schedule(static) num_threads(be->threads) if (B * H * W * C * 4 > LAYOUT_PAR_MIN)
    for (int64_t r = 0; r < B * 2 * H; r++) { /* output row (b, oh) */
        int64_t b = r / (2 * H), ih = (r % (2 * H)) / 2;
        char *yr = zcpu_at(y, r * 2 * W * C);
        const char *xr = zcpu_at(x, (b * H + ih) * W * C);
        for (int64_t iw = 0; iw < W; iw++) {
            char *yp = yr + (size_t)(2 * iw * C) * yb;
            zcpu_convert(yp, y->dtype, xr + (size_t)(iw * C) * zt_dtype_size(x->dtype), x->dtype, C);
            memcpy(yp + (size_t)C * yb, yp, (size_t)C * yb);
        }
    }
}
