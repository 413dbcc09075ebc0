/* cuda_layout.cu - layout ops of the CUDA backend (dtype converted on the fly):
 *   patchify      tok[b, h*Wt + w, (ph*p + pw)*C + c] = x[b, c, h*p + ph, w*p + pw]
 *                 x [B, C, H, W] (NCHW latents), tok [B, Ht*Wt, p*p*C]
 *   unpatchify    the inverse, from the first Ht*Wt rows of each sample of
 *                 tok [B, N, p*p*C] (N >= Ht*Wt); x is usually F32 NCHW
 *   nchw_to_nhwc  y[b, h, w, c] = x[b, c, h, w]
 *   upsample2x    y[b, 2h + i, 2w + j, c] = x[b, h, w, c]   (NHWC, nearest)
 *   download_rgb8 host u8[i] = rint(clamp(x[i]*0.5 + 0.5, 0, 1) * 255), NaN -> 0
 *                 (zimg_to_u8's arithmetic, unfused, so the bytes are the
 *                 host conversion's), converted on the device so 1 byte per
 *                 value crosses PCIe instead of 4
 * One thread per output element (grid-stride), indexed so that writes are
 * contiguous; the latent-sized ops are tiny, upsample2x uses 8-value vectors
 * when C % 8 == 0. */
#include "cuda_internal.cuh"

__global__ void k_patchify(void *tok, int tdt, const void *x, int xdt, int64_t B, int64_t C, int64_t H, int64_t W,
                           int p) {
    int64_t Ht = H / p, Wt = W / p, F = (int64_t)p * p * C, total = B * Ht * Wt * F;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t n = i / F, f = i % F;
        int64_t b = n / (Ht * Wt), h = (n / Wt) % Ht, w = n % Wt;
        int64_t c = f % C, pp = f / C, ph = pp / p, pw = pp % p;
        zst(tok, tdt, i, zld(x, xdt, ((b * C + c) * H + h * p + ph) * W + w * p + pw));
    }
}

void zcu_patchify(zbackend *be, zt *tok, const zt *x, int p) {
    int64_t n = zt_numel(tok);
    if (n == 0) return;
    k_patchify<<<zcu_blocks(be, n, 256), 256, 0, ZC(be)->stream>>>(tok->data, tok->dtype, x->data, x->dtype,
                                                                  x->ne[0], x->ne[1], x->ne[2], x->ne[3], p);
    LAUNCH_OK(be, "k_patchify");
}

__global__ void k_unpatchify(void *x, int xdt, const void *tok, int tdt, int64_t B, int64_t C, int64_t H, int64_t W,
                             int p, int64_t N) {
    int64_t Wt = W / p, F = (int64_t)p * p * C, total = B * C * H * W;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t ww = i % W, hh = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
        int64_t h = hh / p, ph = hh % p, w = ww / p, pw = ww % p;
        int64_t row = b * N + h * Wt + w;
        zst(x, xdt, i, zld(tok, tdt, row * F + (ph * p + pw) * C + c));
    }
}

void zcu_unpatchify(zbackend *be, zt *x, const zt *tok, int p) {
    int64_t n = zt_numel(x);
    if (n == 0) return;
    k_unpatchify<<<zcu_blocks(be, n, 256), 256, 0, ZC(be)->stream>>>(x->data, x->dtype, tok->data, tok->dtype,
                                                                    x->ne[0], x->ne[1], x->ne[2], x->ne[3], p,
                                                                    tok->ne[1]);
    LAUNCH_OK(be, "k_unpatchify");
}

__global__ void k_nchw_to_nhwc(void *y, int ydt, const void *x, int xdt, int64_t B, int64_t C, int64_t H, int64_t W) {
    int64_t total = B * C * H * W, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t c = i % C, w = (i / C) % W, h = (i / (C * W)) % H, b = i / (C * W * H);
        zst(y, ydt, i, zld(x, xdt, ((b * C + c) * H + h) * W + w));
    }
}

void zcu_nchw_to_nhwc(zbackend *be, zt *y, const zt *x) {
    int64_t n = zt_numel(x);
    if (n == 0) return;
    k_nchw_to_nhwc<<<zcu_blocks(be, n, 256), 256, 0, ZC(be)->stream>>>(y->data, y->dtype, x->data, x->dtype, x->ne[0],
                                                                      x->ne[1], x->ne[2], x->ne[3]);
    LAUNCH_OK(be, "k_nchw_to_nhwc");
}

/* vec: units of 8 channels (C % 8 == 0, aligned); else single values.
 * Grid (source units of one row, source rows b*H + h): each thread reads one
 * unit and writes it to its 2x2 destinations; 32-bit index math (v1 was a
 * grid-stride loop over destination units with four 64-bit divisions each:
 * issue-bound, ~0.2 ms for the 512^2 -> 1024^2 x 256 step). */
__global__ void k_upsample2x(void *y, int ydt, const void *x, int xdt, int64_t BH, int64_t H, int64_t W, int64_t C,
                             int vec) {
    const unsigned U = vec ? (unsigned)(C / 8) : (unsigned)C, i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (unsigned)W * U) return;
    const unsigned w = i / U, u = i % U;
    for (int64_t bh = blockIdx.y; bh < BH; bh += gridDim.y) {
        int64_t b = bh / H, h = bh % H;
        int64_t src = (bh * W + w) * C, d0 = ((b * 2 * H + 2 * h) * 2 * W + 2 * w) * C, drow = 2 * W * C;
        if (vec) {
            float v[8];
            zld8(x, xdt, src + u * 8, v);
            zst8(y, ydt, d0 + u * 8, v);
            zst8(y, ydt, d0 + C + u * 8, v);
            zst8(y, ydt, d0 + drow + u * 8, v);
            zst8(y, ydt, d0 + drow + C + u * 8, v);
        } else {
            float v = zld(x, xdt, src + u);
            zst(y, ydt, d0 + u, v);
            zst(y, ydt, d0 + C + u, v);
            zst(y, ydt, d0 + drow + u, v);
            zst(y, ydt, d0 + drow + C + u, v);
        }
    }
}

void zcu_upsample2x(zbackend *be, zt *y, const zt *x) {
    int64_t B = x->ne[0], H = x->ne[1], W = x->ne[2], C = x->ne[3];
    if (B * H * W * C == 0) return;
    int vec = C % 8 == 0 && zcu_aligned16(x->data) && zcu_aligned16(y->data);
    int64_t units = W * (vec ? C / 8 : C);
    if (units > 0x7fffffff) {
        zbackend_fail(be, ZE_UNSUPPORTED, "cuda upsample2x: rows of %lld values are more than this kernel takes",
                      (long long)(W * C));
        return;
    }
    dim3 grid((unsigned)((units + 255) / 256), (unsigned)(B * H < 65535 ? B * H : 65535));
    k_upsample2x<<<grid, 256, 0, ZC(be)->stream>>>(y->data, y->dtype, x->data, x->dtype, B * H, H, W, C, vec);
    LAUNCH_OK(be, "k_upsample2x");
}

/* ---- 8-bit image download ---------------------------------------------------------------- */

__global__ void k_rgb8(uint8_t *y, const void *x, int xdt, int64_t n) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = __fadd_rn(__fmul_rn(zld(x, xdt, i), 0.5f), 0.5f); /* no FMA: same rounding as the host */
        v = !(v == v) ? 0.0f : v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        y[i] = (uint8_t)__float2int_rn(__fmul_rn(v, 255.0f)); /* round half to even, like rintf */
    }
}

int zcu_download_rgb8(zbackend *be, const zt *img, uint8_t *dst) {
    zcuda *zc = ZC(be);
    int64_t n = zt_numel(img);
    if (n == 0) return ZE_OK;
    uint8_t *buf = (uint8_t *)zcu_scratch(be, ZCU_SCR_RGB8, (size_t)n);
    if (!buf) return be->status;
    k_rgb8<<<zcu_blocks(be, n, 256), 256, 0, zc->stream>>>(buf, img->data, img->dtype, n);
    if (!LAUNCH_OK(be, "k_rgb8")) return be->status;
    if (!CUDA_OK(be, cudaMemcpyAsync(dst, buf, (size_t)n, cudaMemcpyDeviceToHost, zc->stream))) return be->status;
    if (!CUDA_OK(be, cudaStreamSynchronize(zc->stream))) return be->status;
    return ZE_OK;
}
