/* cpu_backend.c - the CPU backend: creation, host memory with accounting,
 * grow-once scratch, dtype conversion helpers, and the vtable.
 *
 * Memory: alloc() returns 64-byte aligned host memory with a 64-byte header
 * that remembers the size, so mem_stats() can report bytes in use and the
 * peak (scratch buffers are counted too).  upload/download are memcpy, sync
 * is a no-op (everything is synchronous on the host).
 *
 * Threads: be->threads OpenMP threads (threads <= 0: all cores); OpenBLAS is
 * set to one thread and called from inside the OpenMP regions (see
 * cpu_internal.h for why). */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define ZCPU_X86 1
#endif

#define HDR 64 /* bytes in front of every allocation: its size */

/* ---- memory accounting ----------------------------------------------------- */

static void acct_add(zcpu *c, size_t bytes) {
    size_t now = __atomic_add_fetch(&c->in_use, bytes, __ATOMIC_RELAXED);
    size_t pk = __atomic_load_n(&c->peak, __ATOMIC_RELAXED);
    while (now > pk && !__atomic_compare_exchange_n(&c->peak, &pk, now, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

static void acct_sub(zcpu *c, size_t bytes) { __atomic_sub_fetch(&c->in_use, bytes, __ATOMIC_RELAXED); }

static int cpu_alloc(zbackend *be, size_t bytes, void **out) {
    void *p = NULL;
    *out = NULL;
    if (bytes > SIZE_MAX - HDR || posix_memalign(&p, 64, bytes + HDR) != 0 || !p)
        return zerr_set(be->err, ZE_NOMEM, "out of host memory allocating %zu bytes", bytes);
    *(size_t *)p = bytes;
    acct_add(be->impl, bytes);
    *out = (char *)p + HDR;
    return ZE_OK;
}

static void cpu_free(zbackend *be, void *p) {
    if (!p) return;
    char *base = (char *)p - HDR;
    acct_sub(be->impl, *(size_t *)base);
    free(base);
}

static int cpu_copy(zbackend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
    return ZE_OK;
}

static int cpu_sync(zbackend *be) {
    (void)be;
    return ZE_OK;
}

static void cpu_mem_stats(zbackend *be, size_t *in_use, size_t *peak) {
    zcpu *c = be->impl;
    if (in_use) *in_use = __atomic_load_n(&c->in_use, __ATOMIC_RELAXED);
    if (peak) *peak = __atomic_load_n(&c->peak, __ATOMIC_RELAXED);
}

void *zcpu_scratch(zbackend *be, int slot, size_t bytes) {
    zcpu *c = be->impl;
    if (bytes <= c->scr[slot].cap) return c->scr[slot].p;
    size_t cap = (bytes + 65535) & ~(size_t)65535; /* round to 64 KiB */
    if (c->scr[slot].p) {
        acct_sub(c, c->scr[slot].cap);
        free(c->scr[slot].p);
        c->scr[slot].p = NULL;
        c->scr[slot].cap = 0;
    }
    void *p = NULL;
    if (posix_memalign(&p, 64, cap) != 0 || !p) {
        zbackend_fail(be, ZE_NOMEM, "cpu backend: out of host memory for %zu bytes of scratch", bytes);
        return NULL;
    }
    acct_add(c, cap);
    c->scr[slot].p = p;
    c->scr[slot].cap = cap;
    return p;
}

/* ---- dtype conversion --------------------------------------------------------- */

#ifdef ZCPU_X86
/* F16C + AVX usable: CPUID.1:ECX bits 27 (OSXSAVE), 28 (AVX), 29 (F16C) and
 * the OS saving YMM state (XCR0 bits 1, 2).  Checked once. */
static int has_f16c(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v >= 0) return v;
    unsigned a, b, c, d;
    v = 0;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27)) && (c & (1u << 28)) && (c & (1u << 29))) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        v = (lo & 6u) == 6u;
    }
    __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    return v;
}

__attribute__((target("avx,f16c"))) static void widen_f16_f16c(float *dst, const uint16_t *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = zf16_to_f32(src[i]);
}
#endif

void zcpu_widen(float *dst, const void *src, zt_dtype dt, int64_t n) {
    if (dt == ZT_F32) {
        memmove(dst, src, (size_t)n * 4);
    } else if (dt == ZT_BF16) {
        const uint16_t *s = src;
        uint32_t *d = (uint32_t *)dst; /* bf16 is the top half of an f32 */
        for (int64_t i = 0; i < n; i++) d[i] = (uint32_t)s[i] << 16;
    } else {
        const uint16_t *s = src;
#ifdef ZCPU_X86
        if (has_f16c()) {
            widen_f16_f16c(dst, s, n);
            return;
        }
#endif
        for (int64_t i = 0; i < n; i++) dst[i] = zf16_to_f32(s[i]);
    }
}

void zcpu_narrow(void *dst, zt_dtype dt, const float *src, int64_t n) {
    if (dt == ZT_F32) {
        memmove(dst, src, (size_t)n * 4);
    } else if (dt == ZT_BF16) {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = zf32_to_bf16(src[i]);
    } else {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = zf32_to_f16(src[i]);
    }
}

void zcpu_convert(void *dst, zt_dtype dd, const void *src, zt_dtype sd, int64_t n) {
    if (dd == sd) {
        memmove(dst, src, (size_t)n * zt_dtype_size(dd));
    } else if (dd == ZT_F32) {
        zcpu_widen(dst, src, sd, n);
    } else if (sd == ZT_F32) {
        zcpu_narrow(dst, dd, src, n);
    } else { /* bf16 <-> f16 through a small f32 buffer */
        float buf[ZCPU_CHUNK];
        for (int64_t i = 0; i < n; i += ZCPU_CHUNK) {
            int64_t m = n - i < ZCPU_CHUNK ? n - i : ZCPU_CHUNK;
            zcpu_widen(buf, (const uint16_t *)src + i, sd, m);
            zcpu_narrow((uint16_t *)dst + i, dd, buf, m);
        }
    }
}

/* ---- creation --------------------------------------------------------------------- */

static void cpu_destroy(zbackend *be) {
    if (!be) return;
    zcpu *c = be->impl;
    if (c) {
        for (int i = 0; i < ZCPU_SCR_N; i++) free(c->scr[i].p);
        free(c);
    }
    free(be);
}

static const zbackend_vt cpu_vt = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .mem_stats = cpu_mem_stats,
    .matmul = zcpu_matmul,
    .embed = zcpu_embed,
    .rmsnorm = zcpu_rmsnorm,
    .layernorm = zcpu_layernorm,
    .norm_gate_add = zcpu_norm_gate_add,
    .groupnorm = zcpu_groupnorm,
    .qkv_norm_rope = zcpu_qkv_norm_rope,
    .attention = zcpu_attention,
    .silu_mul = zcpu_silu_mul,
    .silu = zcpu_silu,
    .add = zcpu_add,
    .axpby = zcpu_axpby,
    .affine = zcpu_affine,
    .copy_rows = zcpu_copy_rows,
    .fill_rows = zcpu_fill_rows,
    .timestep_embed = zcpu_timestep_embed,
    .patchify = zcpu_patchify,
    .unpatchify = zcpu_unpatchify,
    .conv2d = zcpu_conv2d,
    .upsample2x = zcpu_upsample2x,
    .nchw_to_nhwc = zcpu_nchw_to_nhwc,
    .cfg_combine = zcpu_cfg_combine,
};

int zcpu_backend_create(zbackend **out, int threads, zerr *err) {
    *out = NULL;
    zbackend *be = calloc(1, sizeof *be);
    zcpu *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return zerr_set(err, ZE_NOMEM, "out of host memory creating the CPU backend");
    }
    if (threads <= 0) threads = omp_get_num_procs();
    if (threads < 1) threads = 1;
    be->vt = &cpu_vt;
    be->err = err;
    be->status = ZE_OK;
    be->threads = threads;
    be->act = ZT_F32;
    be->is_host = 1;
    be->impl = c;
    /* OpenBLAS runs single-threaded inside our OpenMP regions. */
    openblas_set_num_threads(1);
    *out = be;
    return ZE_OK;
}
