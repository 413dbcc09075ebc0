/* cuda_matmul.cu - GEMM through cuBLASLt (bf16 x bf16, fp32 compute) and the
 * matmul op.
 *
 *   y[M, N] = (accumulate ? y : 0) + x[M, K] . w[N, K]^T + bias[N]
 *
 * Row-major to cuBLASLt's column-major: y^T[N, M] = op(w)[N, K] . x^T[K, M],
 * i.e. A = w (transposed for w [N, K], "TN"), B = x, D = C = y; m = N, n = M.
 * accumulate is beta = 1 with C = D = y; the bias is the BIAS epilogue (F32
 * bias vector of length N = rows of D).  D is BF16 or F32 (the residual
 * stream); other dtypes go through scratch:
 *   x F32/F16  -> bf16 copy in ZCU_SCR_MMX (the reference casts to bf16 too);
 *   y F16      -> F32 result in ZCU_SCR_MMY, then converted.
 * Plans (descriptors, layouts and the heuristic's algorithm) are cached in a
 * small hash table keyed by shape, leading dims, dtypes, epilogue, beta and
 * pointer alignment, so a repeated call does no host-side search.
 * Autotuning: the heuristic's first MM_CAND algorithms are kept; the first
 * call of a large GEMM (>= MM_TUNE_MAC multiply-adds, beta = 0, stream not
 * being captured) times each on the call's own operands (1 warm-up + 3 runs,
 * CUDA events) and keeps the fastest; the call's result is then recomputed
 * with it.  A plan first met during a graph capture uses the heuristic's
 * first choice (the pipeline runs a step eagerly before capturing it, so its
 * plans are tuned by then).  ZIMAGE_GEMM_TUNE=0 turns tuning off.  If the
 * heuristic offers nothing with the bias epilogue, the bias is added by a
 * separate kernel; if it offers nothing at all, a plain tiled kernel runs
 * (correct, slow; only for odd shapes). */
#include <stdlib.h>

#include "cuda_internal.cuh"

#define MM_CAND 8
#define MM_TUNE_MAC ((double)(1 << 30))

struct zcu_mm_plan {
    /* key */
    int64_t M, N, K, ldx, ldw, ldy;
    int w_kn, ydt, bias, beta1, align; /* align: log2 of min pointer alignment (<= 8) */
    /* value */
    int used;
    int mode; /* 0 cuBLASLt (+ F32 bias epilogue), 1 cuBLASLt + bias kernel, 2 fallback kernel,
               * 3 cuBLASLt with a bf16 copy of the bias */
    size_t ws;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
    int ncand, tuned;                     /* candidates kept for tuning; 1 once tuned */
    cublasLtMatmulAlgo_t cand[MM_CAND];
    size_t cand_ws[MM_CAND];
    float tune_ms;                        /* best time found (0: not tuned) */
};

static int align_log2(const void *p) {
    uintptr_t u = (uintptr_t)p;
    int a = 0;
    while (a < 8 && !(u & ((uintptr_t)1 << a))) a++;
    return a;
}

static int key_eq(const zcu_mm_plan *p, const zcu_mm_plan *k) {
    return p->M == k->M && p->N == k->N && p->K == k->K && p->ldx == k->ldx && p->ldw == k->ldw &&
           p->ldy == k->ldy && p->w_kn == k->w_kn && p->ydt == k->ydt && p->bias == k->bias &&
           p->beta1 == k->beta1 && p->align == k->align;
}

static size_t key_hash(const zcu_mm_plan *k) {
    uint64_t h = 1469598103934665603ull;
    const int64_t v[11] = {k->M, k->N, k->K, k->ldx, k->ldw, k->ldy, k->w_kn, k->ydt, k->bias, k->beta1, k->align};
    for (int i = 0; i < 11; i++) {
        h ^= (uint64_t)v[i];
        h *= 1099511628211ull;
        h ^= h >> 29;
    }
    return (size_t)h;
}

static void plan_release(zcu_mm_plan *p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->ld) cublasLtMatrixLayoutDestroy(p->ld);
}

void zcu_mm_cache_free(zcuda *zc) {
    for (int i = 0; i < zc->mm_cap; i++)
        if (zc->mm[i].used) plan_release(&zc->mm[i]);
    free(zc->mm);
    zc->mm = NULL;
    zc->mm_n = zc->mm_cap = 0;
}

/* Slot for key k (found, or a free one to fill); NULL on host OOM. */
static zcu_mm_plan *cache_slot(zcuda *zc, const zcu_mm_plan *k) {
    if (2 * (zc->mm_n + 1) > zc->mm_cap) {
        int ncap = zc->mm_cap ? 2 * zc->mm_cap : 256;
        zcu_mm_plan *nt = (zcu_mm_plan *)calloc((size_t)ncap, sizeof *nt);
        if (!nt) return NULL;
        for (int i = 0; i < zc->mm_cap; i++) {
            if (!zc->mm[i].used) continue;
            size_t j = key_hash(&zc->mm[i]) & (size_t)(ncap - 1);
            while (nt[j].used) j = (j + 1) & (size_t)(ncap - 1);
            nt[j] = zc->mm[i];
        }
        free(zc->mm);
        zc->mm = nt;
        zc->mm_cap = ncap;
    }
    size_t m = (size_t)zc->mm_cap - 1, j = key_hash(k) & m;
    while (zc->mm[j].used && !key_eq(&zc->mm[j], k)) j = (j + 1) & m;
    return &zc->mm[j];
}

/* One attempt: a fresh descriptor with epilogue `epi` (bias of type bty), then
 * the heuristic.  Returns 1 and fills p->desc / p->algo on success. */
static int plan_try(zcuda *zc, zcu_mm_plan *p, cublasLtMatmulPreference_t pref, cublasLtEpilogue_t epi,
                    cudaDataType_t bty) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    p->desc = NULL;
    cublasOperation_t ta = p->w_kn ? CUBLAS_OP_N : CUBLAS_OP_T, tb = CUBLAS_OP_N;
    if (cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return 0;
    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (epi != CUBLASLT_EPILOGUE_DEFAULT) {
        if (cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) ||
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bty, sizeof bty))
            return 0;
    }
    cublasLtMatmulHeuristicResult_t res[MM_CAND];
    int nres = 0;
    cublasStatus_t s =
        cublasLtMatmulAlgoGetHeuristic(zc->lt, p->desc, p->la, p->lb, p->ld, p->ld, pref, MM_CAND, res, &nres);
    p->ncand = 0;
    for (int i = 0; s == CUBLAS_STATUS_SUCCESS && i < nres; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= zc->lt_ws_size) {
            p->cand[p->ncand] = res[i].algo;
            p->cand_ws[p->ncand++] = res[i].workspaceSize;
        }
    if (!p->ncand) return 0;
    p->algo = p->cand[0];
    p->ws = p->cand_ws[0];
    return 1;
}

static int tune_enabled(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("ZIMAGE_GEMM_TUNE");
        on = !(e && !strcmp(e, "0"));
    }
    return on;
}

/* Time the candidates of p on this call's operands (see the header); keeps
 * the fastest in p->algo.  Only for beta = 0 (the runs overwrite y). */
static void plan_tune(zbackend *be, zcu_mm_plan *p, const zcu_gemm_args *a) {
    zcuda *zc = ZC(be);
    p->tuned = 1;
    if (p->ncand < 2) return;
    cudaEvent_t e0 = NULL, e1 = NULL;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
        if (e0) cudaEventDestroy(e0);
        (void)cudaGetLastError();
        return;
    }
    float best = 0;
    int bi = -1;
    for (int c = 0; c < p->ncand; c++) {
        cublasStatus_t s = cublasLtMatmul(zc->lt, p->desc, &a->alpha, a->w, p->la, a->x, p->lb, &a->beta, a->y, p->ld,
                                          a->y, p->ld, &p->cand[c], zc->lt_ws, zc->lt_ws_size, zc->stream);
        if (s != CUBLAS_STATUS_SUCCESS) continue;
        cudaEventRecord(e0, zc->stream);
        for (int r = 0; r < 3 && s == CUBLAS_STATUS_SUCCESS; r++)
            s = cublasLtMatmul(zc->lt, p->desc, &a->alpha, a->w, p->la, a->x, p->lb, &a->beta, a->y, p->ld, a->y,
                               p->ld, &p->cand[c], zc->lt_ws, zc->lt_ws_size, zc->stream);
        cudaEventRecord(e1, zc->stream);
        float ms = 0;
        if (cudaEventSynchronize(e1) != cudaSuccess || cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        if (s == CUBLAS_STATUS_SUCCESS && (bi < 0 || ms < best)) best = ms, bi = c;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    if (bi >= 0) {
        p->algo = p->cand[bi];
        p->ws = p->cand_ws[bi];
        p->tune_ms = best / 3;
    }
}

/* Build layouts + pick an algorithm for plan p (key filled in).  Modes, in
 * order of preference: fused bias epilogue with the F32 bias (0), with a bf16
 * copy of the bias (3, bf16 outputs: what a bf16 Linear does anyway), plain
 * GEMM + bias kernel (1), fallback kernel (2). */
static void plan_build(zbackend *be, zcu_mm_plan *p) {
    zcuda *zc = ZC(be);
    cudaDataType_t dty = p->ydt == ZT_F32 ? CUDA_R_32F : CUDA_R_16BF;
    p->mode = 2;
    /* A = w: [N, K] row-major is col-major K x N (op T); [K, N] is N x K (op N) */
    if (p->w_kn)
        cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, (uint64_t)p->N, (uint64_t)p->K, p->ldw);
    else
        cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, (uint64_t)p->K, (uint64_t)p->N, p->ldw);
    cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, (uint64_t)p->K, (uint64_t)p->M, p->ldx);
    cublasLtMatrixLayoutCreate(&p->ld, dty, (uint64_t)p->N, (uint64_t)p->M, p->ldy);
    if (!p->la || !p->lb || !p->ld) return;

    cublasLtMatmulPreference_t pref = NULL;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return;
    uint64_t ws = zc->lt_ws_size;
    uint32_t al = 1u << p->align;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al);
    if (p->bias && plan_try(zc, p, pref, CUBLASLT_EPILOGUE_BIAS, CUDA_R_32F))
        p->mode = 0;
    else if (p->bias && p->ydt == ZT_BF16 && plan_try(zc, p, pref, CUBLASLT_EPILOGUE_BIAS, CUDA_R_16BF))
        p->mode = 3;
    else if (plan_try(zc, p, pref, CUBLASLT_EPILOGUE_DEFAULT, CUDA_R_32F))
        p->mode = p->bias ? 1 : 0;
    cublasLtMatmulPreferenceDestroy(pref);
}

size_t zcu_mm_describe(zcuda *zc, char *buf, size_t n) {
    static const char *mname[4] = {"cuBLASLt", "cuBLASLt + bias kernel", "FALLBACK kernel", "cuBLASLt bf16-bias"};
    size_t o = 0;
    for (int i = 0; i < zc->mm_cap && o < n; i++) {
        zcu_mm_plan *p = &zc->mm[i];
        if (!p->used) continue;
        int id = -1;
        if (p->mode != 2) cublasLtMatmulAlgoConfigGetAttribute(&p->algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, NULL);
        char tn[64] = "";
        if (p->tune_ms > 0)
            snprintf(tn, sizeof tn, ", tuned over %d: %.3f ms = %.0f TFLOP/s", p->ncand, (double)p->tune_ms,
                     2.0 * (double)p->M * (double)p->N * (double)p->K / (p->tune_ms * 1e-3) / 1e12);
        o += (size_t)snprintf(buf + o, n - o, "  matmul %lldx%lld->%lld%s y%s%s%s align%d: %s (algo %d, ws %zu%s)\n",
                              (long long)p->M, (long long)p->K, (long long)p->N, p->w_kn ? " (w KxN)" : "",
                              zt_dtype_name((zt_dtype)p->ydt), p->bias ? " bias" : "", p->beta1 ? " acc" : "",
                              1 << p->align, mname[p->mode], id, p->ws, tn);
    }
    return o;
}

/* ---- fallback GEMM and bias kernels ------------------------------------------------ */

#define FB_T 16
/* y[m, n] = alpha * sum_k x[m, k] w(n, k) + beta * y + bias[n]; 16x16 tiles. */
__global__ void k_gemm_fallback(int64_t M, int64_t N, int64_t K, const __nv_bfloat16 *x, int64_t ldx,
                                const __nv_bfloat16 *w, int64_t ldw, int w_kn, void *y, int64_t ldy, int ydt,
                                const float *bias, float alpha, float beta) {
    __shared__ float sx[FB_T][FB_T + 1], sw[FB_T][FB_T + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t m = (int64_t)blockIdx.x * FB_T + ty, n = (int64_t)blockIdx.y * FB_T + tx;
    int64_t nw = (int64_t)blockIdx.y * FB_T + ty; /* w row loaded by this thread */
    float acc = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += FB_T) {
        int64_t k = k0 + tx;
        sx[ty][tx] = (m < M && k < K) ? __bfloat162float(x[m * ldx + k]) : 0.0f;
        float wv = 0.0f;
        if (nw < N && k < K) wv = __bfloat162float(w_kn ? w[k * ldw + nw] : w[nw * ldw + k]);
        sw[ty][tx] = wv;
        __syncthreads();
#pragma unroll
        for (int j = 0; j < FB_T; j++) acc += sx[ty][j] * sw[tx][j];
        __syncthreads();
    }
    if (m < M && n < N) {
        float v = alpha * acc;
        if (beta != 0.0f) v += beta * zld(y, ydt, m * ldy + n);
        if (bias) v += bias[n];
        zst(y, ydt, m * ldy + n, v);
    }
}

__global__ void k_add_bias(void *y, int ydt, int64_t M, int64_t N, int64_t ldy, const float *bias) {
    int64_t total = M * N, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t m = i / N, n = i % N;
        zst(y, ydt, m * ldy + n, zld(y, ydt, m * ldy + n) + bias[n]);
    }
}

int zcu_gemm(zbackend *be, const zcu_gemm_args *a) {
    zcuda *zc = ZC(be);
    if (a->M <= 0 || a->N <= 0) return ZE_OK;
    zcu_mm_plan key;
    memset(&key, 0, sizeof key);
    key.M = a->M, key.N = a->N, key.K = a->K, key.ldx = a->ldx, key.ldw = a->ldw, key.ldy = a->ldy;
    key.w_kn = a->w_kn, key.ydt = a->ydt, key.bias = a->bias != NULL, key.beta1 = a->beta != 0.0f;
    int al = align_log2(a->x), t;
    if ((t = align_log2(a->w)) < al) al = t;
    if ((t = align_log2(a->y)) < al) al = t;
    key.align = al;
    zcu_mm_plan *p = cache_slot(zc, &key);
    if (!p) return zbackend_fail(be, ZE_NOMEM, "cuda matmul: out of host memory for the plan cache");
    if (!p->used) {
        *p = key;
        p->used = 1;
        zc->mm_n++;
        if (a->K > 0) plan_build(be, p);
        else p->mode = 2;
    }
    if (p->mode != 2) {
        const void *bp = a->bias;
        if (p->mode == 3) { /* bf16 copy of the bias */
            void *bb = zcu_scratch(be, ZCU_SCR_MMBIAS, (size_t)a->N * 2);
            if (!bb) return be->status;
            zcu_convert(be, bb, ZT_BF16, a->bias, ZT_F32, a->N);
            bp = bb;
        }
        if ((p->mode == 0 || p->mode == 3) && bp)
            if (!BLAS_OK(be, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp,
                                                            sizeof bp)))
                return be->status;
        if (!p->tuned && a->beta == 0.0f && (double)a->M * (double)a->N * (double)a->K >= MM_TUNE_MAC &&
            tune_enabled()) {
            cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
            if (cudaStreamIsCapturing(zc->stream, &cs) == cudaSuccess && cs == cudaStreamCaptureStatusNone)
                plan_tune(be, p, a);
        }
        if (!BLAS_OK(be, cublasLtMatmul(zc->lt, p->desc, &a->alpha, a->w, p->la, a->x, p->lb, &a->beta, a->y, p->ld,
                                        a->y, p->ld, &p->algo, zc->lt_ws, zc->lt_ws_size, zc->stream)))
            return be->status;
        if (p->mode == 1) {
            k_add_bias<<<zcu_blocks(be, a->M * a->N, 256), 256, 0, zc->stream>>>(a->y, a->ydt, a->M, a->N, a->ldy,
                                                                                a->bias);
            if (!LAUNCH_OK(be, "k_add_bias")) return be->status;
        }
        return ZE_OK;
    }
    if ((a->N + FB_T - 1) / FB_T > 65535)
        return zbackend_fail(be, ZE_UNSUPPORTED, "cuda matmul: N = %lld too large for the fallback kernel",
                             (long long)a->N);
    dim3 grid((unsigned)((a->M + FB_T - 1) / FB_T), (unsigned)((a->N + FB_T - 1) / FB_T)), blk(FB_T, FB_T);
    k_gemm_fallback<<<grid, blk, 0, zc->stream>>>(a->M, a->N, a->K, (const __nv_bfloat16 *)a->x, a->ldx,
                                                  (const __nv_bfloat16 *)a->w, a->ldw, a->w_kn, a->y, a->ldy,
                                                  a->ydt, a->bias, a->alpha, a->beta);
    if (!LAUNCH_OK(be, "k_gemm_fallback")) return be->status;
    return ZE_OK;
}

/* ---- the op --------------------------------------------------------------------------- */

void zcu_matmul(zbackend *be, zt *y, const zt *x, const zt *w, const zt *bias, int accumulate) {
    int64_t M = zt_rows(x), K = zt_cols(x), N = w->ne[0];
    if (M == 0 || N == 0) return;
    if (w->dtype != ZT_BF16) {
        zbackend_fail(be, ZE_UNSUPPORTED, "cuda matmul: weight must be bf16 on this backend, got %s",
                      zt_dtype_name(w->dtype));
        return;
    }
    const void *xb = x->data;
    if (x->dtype != ZT_BF16) {
        void *s = zcu_scratch(be, ZCU_SCR_MMX, (size_t)(M * K) * 2);
        if (!s) return;
        zcu_convert(be, s, ZT_BF16, x->data, x->dtype, M * K);
        xb = s;
    }
    zcu_gemm_args a;
    memset(&a, 0, sizeof a);
    a.M = M, a.N = N, a.K = K, a.x = xb, a.ldx = K, a.w = w->data, a.ldw = K, a.w_kn = 0;
    a.bias = bias ? (const float *)bias->data : NULL;
    a.alpha = 1.0f, a.beta = accumulate ? 1.0f : 0.0f;
    a.ldy = N;
    if (y->dtype == ZT_F16) { /* no bf16 x bf16 -> f16 in cuBLASLt: f32 result, then convert */
        float *yf = (float *)zcu_scratch(be, ZCU_SCR_MMY, (size_t)(M * N) * 4);
        if (!yf) return;
        if (accumulate) zcu_convert(be, yf, ZT_F32, y->data, ZT_F16, M * N);
        a.y = yf, a.ydt = ZT_F32;
        if (zcu_gemm(be, &a)) return;
        zcu_convert(be, y->data, ZT_F16, yf, ZT_F32, M * N);
        return;
    }
    a.y = y->data, a.ydt = y->dtype;
    zcu_gemm(be, &a);
}
