/* cuda_conv.cu - NHWC 2-D convolution of the CUDA backend.
 *
 *   y[b, oh, ow, co] = bias[co] + sum_{i, j, ci} x[b, oh*s - pt + i, ow*s - pl + j, ci]
 *                                              * w[co, (i*kw + j)*Ci + ci]
 *   x [B, H, W, Ci], w [Co, kh*kw*Ci] bf16 (KRSC = cuDNN's NHWC filter
 *   layout), y [B, Ho, Wo, Co], zero padding (top, left, bottom, right).
 *
 * Paths
 *   1x1, stride 1, no padding: a GEMM over the B*H*W pixels (zcu_matmul).
 *   otherwise cuDNN's legacy API: cudnnConvolutionForward on NHWC bf16
 *   tensors, fp32 compute, CUDNN_TENSOR_OP_MATH; the algorithm is chosen
 *   once per shape (cudnnGetConvolutionForwardAlgorithm_v7, or with
 *   ZIMAGE_CUDNN_FIND=1 cudnnFindConvolutionForwardAlgorithmEx) and cached with
 *   its descriptors; the workspace is grow-once scratch (<= 256 MiB).
 *   Operands cuDNN cannot take directly are prepared in scratch first:
 *     - x not bf16, Ci % 8 != 0 or asymmetric padding (the VAE encoder's
 *       stride-2 Down pads (0,0,1,1)): x' = explicit zero pad + channel pad to
 *       a multiple of 8, converted to bf16; the conv then runs unpadded;
 *     - Ci or Co not a multiple of 8 (conv_out 128 -> 3): w' = w with zero
 *       channels / filters appended;
 *     - y not bf16 or Co % 8 != 0: cuDNN writes a bf16 [P, Co8] buffer and a
 *       finishing kernel adds the bias and writes y's Co channels in y's dtype.
 *   The bias is added by that finishing kernel (in place on y when cuDNN wrote
 *   y directly).  If cuDNN offers no algorithm, a plain direct kernel runs
 *   (correct, slow).
 * Fused epilogue: when cuDNN writes y directly with the implicit precomputed
 * GEMM algorithm, the bias and the optional residual (conv2d_add) go through
 * cudnnConvolutionBiasActivationForward (identity activation): y = conv(x) +
 * res + bias, rounded once, no extra pass over y.  The bias is tried as F32,
 * then as a bf16 copy; a plan that cuDNN refuses falls back to the passes
 * above (remembered per plan).  ZIMAGE_CUDA_NOFUSE=1 turns this off. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_internal.cuh"

#define CONV_WS_MAX ((size_t)256 << 20)

struct zcu_conv_plan {
    int64_t B, H, W, Ci, Co, kh, kw, stride, ph, pw; /* key (operands as cuDNN sees them) */
    int used;
    int mode; /* 0 cuDNN, 1 direct kernel */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t algo;
    size_t ws;
    int fuse; /* bias/residual epilogue: 0 untried, 1 F32 bias, 2 bf16 bias, -1 refused */
    cudnnTensorDescriptor_t bd;
    cudnnActivationDescriptor_t ad;
};

void zcu_conv_cache_free(zcuda *zc) {
    for (int i = 0; i < zc->conv_n; i++) {
        zcu_conv_plan *p = &zc->conv[i];
        if (p->xd) cudnnDestroyTensorDescriptor(p->xd);
        if (p->yd) cudnnDestroyTensorDescriptor(p->yd);
        if (p->wd) cudnnDestroyFilterDescriptor(p->wd);
        if (p->cd) cudnnDestroyConvolutionDescriptor(p->cd);
        if (p->bd) cudnnDestroyTensorDescriptor(p->bd);
        if (p->ad) cudnnDestroyActivationDescriptor(p->ad);
    }
    free(zc->conv);
    zc->conv = NULL;
    zc->conv_n = zc->conv_cap = 0;
}

size_t zcu_conv_describe(zcuda *zc, char *buf, size_t n) {
    size_t o = 0;
    for (int i = 0; i < zc->conv_n && o < n; i++) {
        zcu_conv_plan *p = &zc->conv[i];
        o += (size_t)snprintf(buf + o, n - o, "  conv %lldx%lldx%lld %lld->%lld k%lldx%lld s%lld pad %lld,%lld: %s algo %d (ws %zu)\n",
                              (long long)p->B, (long long)p->H, (long long)p->W, (long long)p->Ci, (long long)p->Co,
                              (long long)p->kh, (long long)p->kw, (long long)p->stride, (long long)p->ph,
                              (long long)p->pw, p->mode == 0 ? "cuDNN" : "DIRECT kernel", (int)p->algo, p->ws);
        if (o < n && p->fuse)
            o += (size_t)snprintf(buf + o, n - o, "    bias/residual epilogue: %s\n",
                                  p->fuse == 1 ? "fused (F32 bias)" : p->fuse == 2 ? "fused (bf16 bias)" : "refused by cuDNN");
    }
    return o;
}

static int plan_eq(const zcu_conv_plan *a, const zcu_conv_plan *b) {
    return a->B == b->B && a->H == b->H && a->W == b->W && a->Ci == b->Ci && a->Co == b->Co && a->kh == b->kh &&
           a->kw == b->kw && a->stride == b->stride && a->ph == b->ph && a->pw == b->pw;
}

/* Find or build the plan; x, w, y, ws are only used by the Find variant. */
static zcu_conv_plan *get_plan(zbackend *be, const zcu_conv_plan *key, const void *x, const void *w, void *y) {
    zcuda *zc = ZC(be);
    for (int i = 0; i < zc->conv_n; i++)
        if (plan_eq(&zc->conv[i], key)) return &zc->conv[i];
    if (zc->conv_n == zc->conv_cap) {
        int nc = zc->conv_cap ? 2 * zc->conv_cap : 32;
        zcu_conv_plan *np = (zcu_conv_plan *)realloc(zc->conv, (size_t)nc * sizeof *np);
        if (!np) {
            zbackend_fail(be, ZE_NOMEM, "cuda conv: out of host memory");
            return NULL;
        }
        zc->conv = np;
        zc->conv_cap = nc;
    }
    zcu_conv_plan *p = &zc->conv[zc->conv_n++];
    *p = *key;
    p->used = 1;
    p->mode = 1;
    p->xd = p->yd = NULL;
    p->wd = NULL;
    p->cd = NULL;
    p->ws = 0;
    p->fuse = 0;
    p->bd = NULL;
    p->ad = NULL;
    int64_t Ho = (key->H + 2 * key->ph - key->kh) / key->stride + 1, Wo = (key->W + 2 * key->pw - key->kw) / key->stride + 1;
    if (cudnnCreateTensorDescriptor(&p->xd) || cudnnCreateTensorDescriptor(&p->yd) ||
        cudnnCreateFilterDescriptor(&p->wd) || cudnnCreateConvolutionDescriptor(&p->cd))
        return p;
    if (cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, (int)key->B, (int)key->Ci,
                                   (int)key->H, (int)key->W) ||
        cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, (int)key->B, (int)key->Co, (int)Ho,
                                   (int)Wo) ||
        cudnnSetFilter4dDescriptor(p->wd, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NHWC, (int)key->Co, (int)key->Ci,
                                   (int)key->kh, (int)key->kw) ||
        cudnnSetConvolution2dDescriptor(p->cd, (int)key->ph, (int)key->pw, (int)key->stride, (int)key->stride, 1, 1,
                                        CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT) ||
        cudnnSetConvolutionMathType(p->cd, CUDNN_TENSOR_OP_MATH))
        return p;
    int n = 0, cn, co, chh, cww;
    if (cudnnGetConvolution2dForwardOutputDim(p->cd, p->xd, p->wd, &cn, &co, &chh, &cww) || chh != Ho || cww != Wo)
        return p;
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    const char *find = getenv("ZIMAGE_CUDNN_FIND");
    if (find && *find == '1') {
        void *ws = zcu_scratch(be, ZCU_SCR_CONVWS, CONV_WS_MAX);
        if (!ws) return p;
        if (cudnnFindConvolutionForwardAlgorithmEx(zc->dnn, p->xd, x, p->wd, w, p->cd, p->yd, y,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf, ws, CONV_WS_MAX))
            n = 0;
    } else if (cudnnGetConvolutionForwardAlgorithm_v7(zc->dnn, p->xd, p->wd, p->cd, p->yd,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf)) {
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > CONV_WS_MAX) continue;
        if (cudnnSetConvolutionMathType(p->cd, perf[i].mathType)) continue;
        p->algo = perf[i].algo;
        p->ws = perf[i].memory;
        p->mode = 0;
        break;
    }
    return p;
}

/* ---- helper kernels ------------------------------------------------------------------ */

/* x'[b, h', w', c'] (Hp x Wp x Ci8) = x[b, h' - pt, w' - pl, c'] or 0, as bf16. */
__global__ void k_conv_prep_x(__nv_bfloat16 *xp, const void *x, int xdt, int64_t B, int64_t H, int64_t W, int64_t Ci,
                              int64_t Hp, int64_t Wp, int64_t Ci8, int pt, int pl) {
    int64_t total = B * Hp * Wp * Ci8, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t c = i % Ci8, w = (i / Ci8) % Wp, h = (i / (Ci8 * Wp)) % Hp, b = i / (Ci8 * Wp * Hp);
        int64_t hs = h - pt, ws = w - pl;
        float v = 0.0f;
        if (c < Ci && hs >= 0 && hs < H && ws >= 0 && ws < W) v = zld(x, xdt, ((b * H + hs) * W + ws) * Ci + c);
        xp[i] = __float2bfloat16(v);
    }
}

/* w'[co, t, c'] (Co8 x taps x Ci8) = w[co, t, c'] or 0. */
__global__ void k_conv_prep_w(__nv_bfloat16 *wp, const __nv_bfloat16 *w, int64_t Co, int64_t taps, int64_t Ci,
                              int64_t Co8, int64_t Ci8) {
    int64_t total = Co8 * taps * Ci8, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t c = i % Ci8, t = (i / Ci8) % taps, co = i / (Ci8 * taps);
        wp[i] = (co < Co && c < Ci) ? w[(co * taps + t) * Ci + c] : __float2bfloat16(0.0f);
    }
}

/* y[p, co] = src[p, co] (bf16, row stride Co8) + bias[co], for co < Co. */
__global__ void k_conv_finish(void *y, int ydt, const __nv_bfloat16 *src, int64_t P, int64_t Co, int64_t Co8,
                              const float *bias) {
    int64_t total = P * Co, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t p = i / Co, co = i % Co;
        float v = __bfloat162float(src[p * Co8 + co]);
        if (bias) v += bias[co];
        zst(y, ydt, i, v);
    }
}

/* In place on bf16 y [P, Co] (Co % 8 == 0, aligned): y += bias. */
__global__ void k_conv_bias8(__nv_bfloat16 *y, int64_t n, int64_t Co, const float *bias) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    float v[8];
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8; i < n; i += stride * 8) {
        int64_t c0 = i % Co;
        zld8(y, ZT_BF16, i, v);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] += bias[c0 + j];
        zst8(y, ZT_BF16, i, v);
    }
}

/* Direct convolution, one thread per output value (fallback only). */
__global__ void k_conv_direct(void *y, int ydt, const void *x, int xdt, const __nv_bfloat16 *w, const float *bias,
                              int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Ho, int64_t Wo, int64_t Co, int kh,
                              int kw, int s, int pt, int pl) {
    int64_t total = B * Ho * Wo * Co, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t co = i % Co, ow = (i / Co) % Wo, oh = (i / (Co * Wo)) % Ho, b = i / (Co * Wo * Ho);
        float acc = bias ? bias[co] : 0.0f;
        for (int a = 0; a < kh; a++) {
            int64_t ih = oh * s - pt + a;
            if (ih < 0 || ih >= H) continue;
            for (int c = 0; c < kw; c++) {
                int64_t iw = ow * s - pl + c;
                if (iw < 0 || iw >= W) continue;
                const int64_t xo = ((b * H + ih) * W + iw) * Ci, wo = (co * kh * kw + a * kw + c) * Ci;
                for (int64_t ci = 0; ci < Ci; ci++) acc += zld(x, xdt, xo + ci) * __bfloat162float(w[wo + ci]);
            }
        }
        zst(y, ydt, i, acc);
    }
}

/* ---- fused bias / residual epilogue ------------------------------------------------------ */

/* y = conv(x) + res + bias through cudnnConvolutionBiasActivationForward.
 * Returns 1 if it ran (or recorded an error), 0 if cuDNN refused the
 * configuration (p->fuse = -1; nothing enqueued). */
static int conv_fused(zbackend *be, zcu_conv_plan *p, const void *xc, const void *wc, void *ws, const float *bias,
                      const void *res, void *y) {
    zcuda *zc = ZC(be);
    if (!p->ad) {
        if (cudnnCreateActivationDescriptor(&p->ad) ||
            cudnnSetActivationDescriptor(p->ad, CUDNN_ACTIVATION_IDENTITY, CUDNN_NOT_PROPAGATE_NAN, 0.0)) {
            p->fuse = -1;
            return 0;
        }
    }
    if (!p->bd && cudnnCreateTensorDescriptor(&p->bd)) {
        p->fuse = -1;
        return 0;
    }
    const float a1 = 1.0f, a2 = res ? 1.0f : 0.0f;
    for (int mode = p->fuse ? p->fuse : 1; mode <= 2; mode++) {
        if (cudnnSetTensor4dDescriptor(p->bd, CUDNN_TENSOR_NCHW, mode == 1 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16, 1,
                                       (int)p->Co, 1, 1))
            continue;
        const void *bp = bias;
        if (mode == 2) {
            void *bb = zcu_scratch(be, ZCU_SCR_CONVB, (size_t)p->Co * 2);
            if (!bb) return 1;
            zcu_convert(be, bb, ZT_BF16, bias, ZT_F32, p->Co);
            bp = bb;
        }
        cudnnStatus_t s = cudnnConvolutionBiasActivationForward(zc->dnn, &a1, p->xd, xc, p->wd, wc, p->cd, p->algo, ws,
                                                                p->ws, &a2, p->yd, res ? res : y, p->bd, bp, p->ad,
                                                                p->yd, y);
        if (s == CUDNN_STATUS_SUCCESS) {
            p->fuse = mode;
            return 1;
        }
        /* cuDNN 9 statuses are families: 2xxx bad parameter, 3xxx not supported
         * (e.g. 3xxx NOT_SUPPORTED_DATA_TYPE for an F32 bias): refused, nothing ran */
        if (!(s >= CUDNN_STATUS_BAD_PARAM && s < CUDNN_STATUS_NOT_SUPPORTED + 1000)) {
            DNN_OK(be, s);
            return 1;
        }
        if (p->fuse) break; /* a mode that worked before stopped working: give up on fusion */
    }
    p->fuse = -1;
    return 0;
}

/* ---- the op ------------------------------------------------------------------------------ */

/* y = conv(x) + b, and + res when the fused epilogue takes it (*res_done = 1). */
static void conv_core(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, const zt *res, int kh, int kw,
                      int stride, int pad_t, int pad_l, int pad_b, int pad_r, int *res_done) {
    zcuda *zc = ZC(be);
    int64_t B = x->ne[0], H = x->ne[1], W = x->ne[2], Ci = x->ne[3];
    int64_t Ho = y->ne[1], Wo = y->ne[2], Co = y->ne[3], P = B * Ho * Wo;
    const float *bias = b ? (const float *)b->data : NULL;
    if (P == 0 || Co == 0) return;
    if (w->dtype != ZT_BF16) {
        zbackend_fail(be, ZE_UNSUPPORTED, "cuda conv2d: weight must be bf16 on this backend, got %s",
                      zt_dtype_name(w->dtype));
        return;
    }
    if (kh == 1 && kw == 1 && stride == 1 && !pad_t && !pad_l && !pad_b && !pad_r) {
        zt xv = zt_rows_view(x, 0, B * H * W), yv = zt_rows_view(y, 0, P);
        zcu_matmul(be, &yv, &xv, w, b, 0);
        return;
    }
    int64_t Ci8 = (Ci + 7) / 8 * 8, Co8 = (Co + 7) / 8 * 8, taps = (int64_t)kh * kw;
    int sym = pad_t == pad_b && pad_l == pad_r;
    int prep_x = x->dtype != ZT_BF16 || Ci8 != Ci || !sym || !zcu_aligned16(x->data);
    int prep_w = Ci8 != Ci || Co8 != Co || !zcu_aligned16(w->data);
    int direct_y = y->dtype == ZT_BF16 && Co8 == Co && zcu_aligned16(y->data);

    zcu_conv_plan key;
    memset(&key, 0, sizeof key);
    key.B = B, key.Ci = Ci8, key.Co = Co8, key.kh = kh, key.kw = kw, key.stride = stride;
    int64_t Hc = H, Wc = W;
    if (prep_x && !sym) {
        Hc = H + pad_t + pad_b, Wc = W + pad_l + pad_r;
        key.ph = key.pw = 0;
    } else {
        key.ph = pad_t, key.pw = pad_l;
    }
    key.H = Hc, key.W = Wc;

    /* operands as cuDNN sees them */
    const void *xc = x->data, *wc = w->data;
    void *yc = y->data;
    if (prep_x) {
        __nv_bfloat16 *xp = (__nv_bfloat16 *)zcu_scratch(be, ZCU_SCR_CONVX, (size_t)(B * Hc * Wc * Ci8) * 2);
        if (!xp) return;
        int pt = sym ? 0 : pad_t, pl = sym ? 0 : pad_l;
        k_conv_prep_x<<<zcu_blocks(be, B * Hc * Wc * Ci8, 256), 256, 0, zc->stream>>>(xp, x->data, x->dtype, B, H, W,
                                                                                      Ci, Hc, Wc, Ci8, pt, pl);
        if (!LAUNCH_OK(be, "k_conv_prep_x")) return;
        xc = xp;
    }
    size_t wbytes = (size_t)(Co8 * taps * Ci8) * 2;
    size_t ybytes = direct_y ? 0 : (size_t)(P * Co8) * 2;
    char *wy = NULL;
    if (prep_w || !direct_y) {
        wy = (char *)zcu_scratch(be, ZCU_SCR_CONVY, ((wbytes + 255) & ~(size_t)255) + ybytes);
        if (!wy) return;
    }
    if (prep_w) {
        k_conv_prep_w<<<zcu_blocks(be, Co8 * taps * Ci8, 256), 256, 0, zc->stream>>>(
            (__nv_bfloat16 *)wy, (const __nv_bfloat16 *)w->data, Co, taps, Ci, Co8, Ci8);
        if (!LAUNCH_OK(be, "k_conv_prep_w")) return;
        wc = wy;
    }
    if (!direct_y) yc = wy + ((wbytes + 255) & ~(size_t)255);

    zcu_conv_plan *p = get_plan(be, &key, xc, wc, yc);
    if (!p) return;
    if (p->mode == 0) {
        void *ws = NULL;
        if (p->ws && !(ws = zcu_scratch(be, ZCU_SCR_CONVWS, p->ws))) return;
        const float one = 1.0f, zero = 0.0f;
        int res_ok = !res || (res->dtype == ZT_BF16 && zcu_aligned16(res->data));
        if (direct_y && bias && res_ok && p->fuse >= 0 && p->algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM &&
            !zcu_nofuse() && conv_fused(be, p, xc, wc, ws, bias, res ? res->data : NULL, y->data)) {
            *res_done = res != NULL;
            return;
        }
        cudnnStatus_t s = cudnnConvolutionForward(zc->dnn, &one, p->xd, xc, p->wd, wc, p->cd, p->algo, ws, p->ws,
                                                  &zero, p->yd, yc);
        if (s == CUDNN_STATUS_NOT_SUPPORTED) {
            p->mode = 1; /* fall through to the direct kernel, now and later */
        } else if (!DNN_OK(be, s)) {
            return;
        } else {
            if (direct_y) {
                if (bias) {
                    int64_t n = P * Co;
                    k_conv_bias8<<<zcu_blocks(be, n / 8, 256), 256, 0, zc->stream>>>((__nv_bfloat16 *)y->data, n, Co,
                                                                                     bias);
                    LAUNCH_OK(be, "k_conv_bias8");
                }
            } else {
                k_conv_finish<<<zcu_blocks(be, P * Co, 256), 256, 0, zc->stream>>>(
                    y->data, y->dtype, (const __nv_bfloat16 *)yc, P, Co, Co8, bias);
                LAUNCH_OK(be, "k_conv_finish");
            }
            return;
        }
    }
    k_conv_direct<<<zcu_blocks(be, P * Co, 256), 256, 0, zc->stream>>>(
        y->data, y->dtype, x->data, x->dtype, (const __nv_bfloat16 *)w->data, bias, B, H, W, Ci, Ho, Wo, Co, kh, kw,
        stride, pad_t, pad_l);
    LAUNCH_OK(be, "k_conv_direct");
}

static void conv_impl(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, const zt *res, int kh, int kw,
                      int stride, int pad_t, int pad_l, int pad_b, int pad_r) {
    int res_done = 0;
    conv_core(be, y, x, w, b, res, kh, kw, stride, pad_t, pad_l, pad_b, pad_r, &res_done);
    if (res && !res_done && be->status == ZE_OK) zcu_add(be, y, y, res);
}

void zcu_conv2d(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, int kh, int kw, int stride, int pad_t,
                int pad_l, int pad_b, int pad_r) {
    conv_impl(be, y, x, w, b, NULL, kh, kw, stride, pad_t, pad_l, pad_b, pad_r);
}

void zcu_conv2d_add(zbackend *be, zt *y, const zt *x, const zt *w, const zt *b, const zt *res, int kh, int kw,
                    int stride, int pad_t, int pad_l, int pad_b, int pad_r) {
    conv_impl(be, y, x, w, b, res, kh, kw, stride, pad_t, pad_l, pad_b, pad_r);
}
