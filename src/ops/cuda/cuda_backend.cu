/* cuda_backend.cu - the CUDA backend: creation, device memory with
 * accounting, grow-once scratch, host <-> device copies, CUDA graph hooks,
 * device random fill, and the vtable.
 *
 * One device, one stream: every op enqueues on zc->stream; upload/download
 * are cudaMemcpyAsync on that stream followed by a stream synchronize (the
 * only host synchronisation points besides sync()).
 *
 * Memory: cudaMalloc'd blocks; a host-side open-addressing table remembers
 * each block's size so mem_stats() can report bytes in use and the peak
 * (scratch and the cuBLASLt workspace count too).
 *
 * Graphs: capture_begin/capture_end wrap cudaStreamBeginCapture (relaxed
 * mode, so a first-time scratch grow may cudaMalloc while capturing) and
 * cudaGraphInstantiate; graph_launch replays on the stream.
 *
 * Env: ZIMAGE_CUDA_ATTN=flash|chunked forces one attention path (tests);
 * default: cuDNN's fused attention where it takes the shape, else the own
 * flash kernel, else the chunked GEMM path (see cuda_attention.cu). */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_internal.cuh"

#define LT_WS_BYTES ((size_t)32 << 20) /* cuBLASLt workspace (Hopper wants 32 MiB) */

/* ---- errors -------------------------------------------------------------------- */

static const char *base_name(const char *f) {
    const char *s = strrchr(f, '/');
    return s ? s + 1 : f;
}

int zcu_ok_cuda(zbackend *be, cudaError_t e, const char *file, int line, const char *what) {
    if (e == cudaSuccess) return 1;
    zbackend_fail(be, e == cudaErrorMemoryAllocation ? ZE_NOMEM : ZE_BACKEND, "%s:%d %s: %s", base_name(file), line,
                  what, cudaGetErrorString(e));
    return 0;
}

static const char *blas_str(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "cuBLAS error";
    }
}

int zcu_ok_blas(zbackend *be, cublasStatus_t s, const char *file, int line, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return 1;
    zbackend_fail(be, ZE_BACKEND, "%s:%d %s: %s (%d)", base_name(file), line, what, blas_str(s), (int)s);
    return 0;
}

int zcu_ok_dnn(zbackend *be, cudnnStatus_t s, const char *file, int line, const char *what) {
    if (s == CUDNN_STATUS_SUCCESS) return 1;
    zbackend_fail(be, ZE_BACKEND, "%s:%d %s: %s", base_name(file), line, what, cudnnGetErrorString(s));
    return 0;
}

/* ---- allocation table ------------------------------------------------------------ */

static size_t ptr_hash(const void *p, size_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (size_t)h & (cap - 1);
}

static int atab_put(zcuda *zc, void *p, size_t n) {
    if (2 * (zc->atab_n + 1) > zc->atab_cap) { /* grow, keep load <= 1/2 */
        size_t ncap = zc->atab_cap ? 2 * zc->atab_cap : 1024;
        zcu_alloc_ent *nt = (zcu_alloc_ent *)calloc(ncap, sizeof *nt);
        if (!nt) return 0;
        for (size_t i = 0; i < zc->atab_cap; i++) {
            if (!zc->atab[i].p) continue;
            size_t j = ptr_hash(zc->atab[i].p, ncap);
            while (nt[j].p) j = (j + 1) & (ncap - 1);
            nt[j] = zc->atab[i];
        }
        free(zc->atab);
        zc->atab = nt;
        zc->atab_cap = ncap;
    }
    size_t j = ptr_hash(p, zc->atab_cap);
    while (zc->atab[j].p) j = (j + 1) & (zc->atab_cap - 1);
    zc->atab[j].p = p;
    zc->atab[j].n = n;
    zc->atab_n++;
    return 1;
}

/* Remove p; returns its size (0 if unknown).  Backward-shift deletion. */
static size_t atab_del(zcuda *zc, void *p) {
    if (!zc->atab_cap) return 0;
    size_t m = zc->atab_cap - 1, j = ptr_hash(p, zc->atab_cap);
    while (zc->atab[j].p && zc->atab[j].p != p) j = (j + 1) & m;
    if (!zc->atab[j].p) return 0;
    size_t n = zc->atab[j].n;
    zc->atab[j].p = NULL;
    zc->atab_n--;
    size_t i = j;
    for (size_t k = (i + 1) & m; zc->atab[k].p; k = (k + 1) & m) {
        size_t h = ptr_hash(zc->atab[k].p, zc->atab_cap);
        /* move k into the hole i if its home h is not in (i, k] cyclically */
        int move = i <= k ? (h <= i || h > k) : (h <= i && h > k);
        if (move) {
            zc->atab[i] = zc->atab[k];
            zc->atab[k].p = NULL;
            i = k;
        }
    }
    return n;
}

static void acct(zcuda *zc, size_t add, size_t sub) {
    zc->in_use += add;
    zc->in_use -= sub;
    if (zc->in_use > zc->peak) zc->peak = zc->in_use;
}

/* Raw device allocation with accounting (used by alloc() and scratch). */
static int dev_alloc(zbackend *be, size_t bytes, void **out) {
    zcuda *zc = ZC(be);
    *out = NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return zerr_set(be->err, ZE_NOMEM, "cuda: out of device memory allocating %zu bytes (%zu of %zu free): %s",
                        bytes, fr, tot, cudaGetErrorString(e));
    }
    if (!atab_put(zc, p, bytes)) {
        cudaFree(p);
        return zerr_set(be->err, ZE_NOMEM, "cuda: out of host memory for the allocation table");
    }
    acct(zc, bytes, 0);
    *out = p;
    return ZE_OK;
}

static void dev_free(zbackend *be, void *p) {
    if (!p) return;
    zcuda *zc = ZC(be);
    acct(zc, 0, atab_del(zc, p));
    cudaFree(p);
}

static int cu_alloc(zbackend *be, size_t bytes, void **out) {
    CUDA_OK(be, cudaSetDevice(ZC(be)->dev));
    return dev_alloc(be, bytes, out);
}

static void cu_free(zbackend *be, void *p) { dev_free(be, p); }

static void cu_mem_stats(zbackend *be, size_t *in_use, size_t *peak) {
    zcuda *zc = ZC(be);
    if (in_use) *in_use = zc->in_use;
    if (peak) *peak = zc->peak;
}

void *zcu_scratch(zbackend *be, int slot, size_t bytes) {
    zcuda *zc = ZC(be);
    if (bytes <= zc->scr[slot].cap && zc->scr[slot].p) return zc->scr[slot].p;
    size_t cap = (bytes + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1); /* round to 1 MiB */
    if (zc->scr[slot].p) { /* retire: a captured graph may still use it */
        if (zc->nretired == zc->cap_retired) {
            int nc = zc->cap_retired ? 2 * zc->cap_retired : 16;
            void **nr = (void **)realloc(zc->retired, (size_t)nc * sizeof *nr);
            if (!nr) {
                zbackend_fail(be, ZE_NOMEM, "cuda: out of host memory");
                return NULL;
            }
            zc->retired = nr;
            zc->cap_retired = nc;
        }
        zc->retired[zc->nretired++] = zc->scr[slot].p;
        zc->scr[slot].p = NULL;
        zc->scr[slot].cap = 0;
    }
    void *p = NULL;
    int rc = dev_alloc(be, cap, &p);
    if (rc) {
        if (be->status == ZE_OK) be->status = rc;
        return NULL;
    }
    zc->scr[slot].p = p;
    zc->scr[slot].cap = cap;
    return p;
}

unsigned zcu_blocks(zbackend *be, int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads, cap = (int64_t)ZC(be)->sm_count * 16;
    if (b > cap) b = cap;
    return (unsigned)(b < 1 ? 1 : b);
}

/* ---- copies ---------------------------------------------------------------------- */

static int cu_upload(zbackend *be, void *dst, const void *src, size_t bytes) {
    zcuda *zc = ZC(be);
    if (!bytes) return ZE_OK;
    if (!CUDA_OK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, zc->stream))) return be->status;
    if (!CUDA_OK(be, cudaStreamSynchronize(zc->stream))) return be->status;
    return ZE_OK;
}

static int cu_download(zbackend *be, void *dst, const void *src, size_t bytes) {
    zcuda *zc = ZC(be);
    if (!bytes) return ZE_OK;
    if (!CUDA_OK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, zc->stream))) return be->status;
    if (!CUDA_OK(be, cudaStreamSynchronize(zc->stream))) return be->status;
    return ZE_OK;
}

static int cu_sync(zbackend *be) {
    if (!CUDA_OK(be, cudaStreamSynchronize(ZC(be)->stream))) return be->status;
    return ZE_OK;
}

/* ---- dtype conversion -------------------------------------------------------------- */

__global__ void k_convert(void *dst, int dd, const void *src, int sd, int64_t n, int vec) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    if (vec) {
        float v[8];
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n / 8; i += stride) {
            zld8(src, sd, i * 8, v);
            zst8(dst, dd, i * 8, v);
        }
    } else {
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
            zst(dst, dd, i, zld(src, sd, i));
    }
}

void zcu_convert(zbackend *be, void *dst, zt_dtype dd, const void *src, zt_dtype sd, int64_t n) {
    zcuda *zc = ZC(be);
    if (n <= 0) return;
    if (dd == sd) {
        CUDA_OK(be, cudaMemcpyAsync(dst, src, (size_t)n * zt_dtype_size(dd), cudaMemcpyDeviceToDevice, zc->stream));
        return;
    }
    int vec = n % 8 == 0 && zcu_aligned16(dst) && zcu_aligned16(src);
    k_convert<<<zcu_blocks(be, vec ? n / 8 : n, 256), 256, 0, zc->stream>>>(dst, dd, src, sd, n, vec);
    LAUNCH_OK(be, "k_convert");
}

/* ---- graphs ------------------------------------------------------------------------ */

static int cu_capture_begin(zbackend *be) {
    zcuda *zc = ZC(be);
    if (!CUDA_OK(be, cudaStreamBeginCapture(zc->stream, cudaStreamCaptureModeRelaxed))) return be->status;
    zc->capturing = 1;
    return ZE_OK;
}

static int cu_capture_end(zbackend *be, void **graph) {
    zcuda *zc = ZC(be);
    *graph = NULL;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(zc->stream, &g);
    zc->capturing = 0;
    if (!CUDA_OK(be, e)) {
        if (g) cudaGraphDestroy(g);
        return be->status;
    }
    if (be->status != ZE_OK) { /* an op failed while capturing */
        cudaGraphDestroy(g);
        return be->status;
    }
    cudaGraphExec_t ex = NULL;
    e = cudaGraphInstantiate(&ex, g, 0);
    cudaGraphDestroy(g);
    if (!CUDA_OK(be, e)) return be->status;
    *graph = (void *)ex;
    return ZE_OK;
}

static int cu_graph_launch(zbackend *be, void *graph) {
    if (!CUDA_OK(be, cudaGraphLaunch((cudaGraphExec_t)graph, ZC(be)->stream))) return be->status;
    return ZE_OK;
}

static void cu_graph_destroy(zbackend *be, void *graph) {
    (void)be;
    if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ---- random fill --------------------------------------------------------------------- */

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

__global__ void k_fill_random(void *t, int dt, int64_t n, uint64_t seed, float scale, float offset) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        uint64_t r = splitmix64(seed ^ splitmix64((uint64_t)i));
        float u = (float)(r >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        zst(t, dt, i, (2.0f * u - 1.0f) * scale + offset);
    }
}

int zcu_fill_random(zbackend *be, zt *t, uint64_t seed, float scale, float offset) {
    int64_t n = zt_numel(t);
    if (n <= 0) return ZE_OK;
    k_fill_random<<<zcu_blocks(be, n, 256), 256, 0, ZC(be)->stream>>>(t->data, t->dtype, n, seed, scale, offset);
    if (!LAUNCH_OK(be, "k_fill_random")) return be->status;
    return ZE_OK;
}

/* ---- diagnostics ------------------------------------------------------------------------ */

extern "C" int zcuda_describe(zbackend *be, char *buf, size_t n) {
    if (!be || !be->vt || strcmp(be->vt->name, "cuda") || !n) return 0;
    zcuda *zc = ZC(be);
    cudaDeviceProp prop;
    size_t o = 0;
    if (cudaGetDeviceProperties(&prop, zc->dev) == cudaSuccess)
        o += (size_t)snprintf(buf + o, n - o, "device %d: %s, cc %d.%d, %d SMs\n", zc->dev, prop.name, prop.major,
                              prop.minor, prop.multiProcessorCount);
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    if (o < n)
        o += (size_t)snprintf(buf + o, n - o, "cuda runtime %d, driver %d, cuBLASLt %zu, cuDNN %zu; attention mode %d\n",
                              rt, drv, cublasLtGetVersion(), cudnnGetVersion(), zc->attn_mode);
    if (o < n) o += zcu_mm_describe(zc, buf + o, n - o);
    if (o < n) o += zcu_conv_describe(zc, buf + o, n - o);
    if (o < n) o += zcu_sdpa_describe(zc, buf + o, n - o);
    if (o >= n) o = n - 1;
    return (int)o;
}

/* ---- creation ------------------------------------------------------------------------- */

extern "C" int zcuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n > 0;
}

static void cu_destroy(zbackend *be) {
    if (!be) return;
    zcuda *zc = ZC(be);
    if (zc) {
        cudaSetDevice(zc->dev);
        if (zc->stream) cudaStreamSynchronize(zc->stream);
        zcu_mm_cache_free(zc);
        zcu_conv_cache_free(zc);
        zcu_sdpa_cache_free(zc);
        for (int i = 0; i < ZCU_SCR_N; i++)
            if (zc->scr[i].p) cudaFree(zc->scr[i].p);
        for (int i = 0; i < zc->nretired; i++) cudaFree(zc->retired[i]);
        free(zc->retired);
        if (zc->lt_ws) cudaFree(zc->lt_ws);
        if (zc->lt) cublasLtDestroy(zc->lt);
        if (zc->dnn) cudnnDestroy(zc->dnn);
        if (zc->stream) cudaStreamDestroy(zc->stream);
        free(zc->atab);
        free(zc);
    }
    free(be);
}

static zbackend_vt g_vt;

int zcu_nofuse(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("ZIMAGE_CUDA_NOFUSE");
        v = e && *e == '1';
    }
    return v;
}

static void init_vt(void) {
    zbackend_vt *v = &g_vt;
    v->name = "cuda";
    v->destroy = cu_destroy;
    v->alloc = cu_alloc;
    v->free = cu_free;
    v->upload = cu_upload;
    v->download = cu_download;
    v->sync = cu_sync;
    v->mem_stats = cu_mem_stats;
    v->matmul = zcu_matmul;
    v->embed = zcu_embed;
    v->rmsnorm = zcu_rmsnorm;
    v->layernorm = zcu_layernorm;
    v->norm_gate_add = zcu_norm_gate_add;
    /* ZIMAGE_CUDA_NOFUSE=1: ops.c runs the unfused pairs (for A/B timings) */
    v->norm_gate_add_norm = zcu_nofuse() ? NULL : zcu_norm_gate_add_norm;
    v->conv2d_add = zcu_nofuse() ? NULL : zcu_conv2d_add;
    v->download_rgb8 = zcu_download_rgb8;
    v->groupnorm = zcu_groupnorm;
    v->qkv_norm_rope = zcu_qkv_norm_rope;
    v->attention = zcu_attention;
    v->silu_mul = zcu_silu_mul;
    v->silu = zcu_silu;
    v->add = zcu_add;
    v->axpby = zcu_axpby;
    v->affine = zcu_affine;
    v->copy_rows = zcu_copy_rows;
    v->fill_rows = zcu_fill_rows;
    v->timestep_embed = zcu_timestep_embed;
    v->patchify = zcu_patchify;
    v->unpatchify = zcu_unpatchify;
    v->conv2d = zcu_conv2d;
    v->upsample2x = zcu_upsample2x;
    v->nchw_to_nhwc = zcu_nchw_to_nhwc;
    v->cfg_combine = zcu_cfg_combine;
    v->capture_begin = cu_capture_begin;
    v->capture_end = cu_capture_end;
    v->graph_launch = cu_graph_launch;
    v->graph_destroy = cu_graph_destroy;
    v->fill_random = zcu_fill_random;
}

extern "C" int zcuda_backend_create(zbackend **out, int device_index, zerr *err) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return zerr_set(err, ZE_UNSUPPORTED, "cuda: no usable GPU (%s)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
    }
    if (device_index < 0 || device_index >= n)
        return zerr_set(err, ZE_INVALID, "cuda: device %d does not exist (%d device%s)", device_index, n,
                        n == 1 ? "" : "s");
    zbackend *be = (zbackend *)calloc(1, sizeof *be);
    zcuda *zc = (zcuda *)calloc(1, sizeof *zc);
    if (!be || !zc) {
        free(be);
        free(zc);
        return zerr_set(err, ZE_NOMEM, "out of host memory creating the CUDA backend");
    }
    if (!g_vt.name) init_vt();
    be->vt = &g_vt;
    be->err = err;
    be->status = ZE_OK;
    be->threads = 1;
    be->act = ZT_BF16;
    be->is_host = 0;
    be->impl = zc;
    zc->dev = device_index;
    const char *am = getenv("ZIMAGE_CUDA_ATTN");
    zc->attn_mode = am && !strcmp(am, "flash") ? 1 : am && !strcmp(am, "chunked") ? 2 : 0;

    int rc = ZE_OK;
    cudaDeviceProp prop;
    if (!CUDA_OK(be, cudaSetDevice(device_index)) || !CUDA_OK(be, cudaGetDeviceProperties(&prop, device_index)))
        goto fail;
    if (prop.major < 8) {
        zbackend_fail(be, ZE_UNSUPPORTED, "cuda: %s is compute capability %d.%d; bf16 tensor cores need 8.0+",
                      prop.name, prop.major, prop.minor);
        goto fail;
    }
    zc->sm_count = prop.multiProcessorCount;
    zc->smem_optin = prop.sharedMemPerBlockOptin;
    if (!CUDA_OK(be, cudaStreamCreateWithFlags(&zc->stream, cudaStreamNonBlocking))) goto fail;
    if (!BLAS_OK(be, cublasLtCreate(&zc->lt))) goto fail;
    if (!DNN_OK(be, cudnnCreate(&zc->dnn))) goto fail;
    if (!DNN_OK(be, cudnnSetStream(zc->dnn, zc->stream))) goto fail;
    zc->lt_ws_size = LT_WS_BYTES;
    if ((rc = dev_alloc(be, zc->lt_ws_size, &zc->lt_ws))) goto fail_rc;
    *out = be;
    return ZE_OK;
fail:
    rc = be->status != ZE_OK ? be->status : ZE_BACKEND;
fail_rc:
    cu_destroy(be);
    return rc;
}
