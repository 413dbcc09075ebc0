/* ops.c - tensor helpers, the scratch arena, backend selection, and the
 * zop_* dispatchers: each checks shapes and dtypes once for every backend,
 * honours the sticky status and measure mode, then calls the backend. */
#include "ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/half.h"
#include "../base/log.h"
#include "cpu/cpu_backend.h"
#ifdef ZIMAGE_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

/* ---- tensors ------------------------------------------------------------ */

size_t zt_dtype_size(zt_dtype t) { return t == ZT_F32 ? 4 : 2; }

const char *zt_dtype_name(zt_dtype t) {
    switch (t) {
    case ZT_F32: return "f32";
    case ZT_BF16: return "bf16";
    case ZT_F16: return "f16";
    }
    return "?";
}

int64_t zt_numel(const zt *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->ne[i];
    return n;
}

size_t zt_nbytes(const zt *t) { return (size_t)zt_numel(t) * zt_dtype_size(t->dtype); }
int64_t zt_cols(const zt *t) { return t->ndim ? t->ne[t->ndim - 1] : 1; }
int64_t zt_rows(const zt *t) {
    int64_t c = zt_cols(t);
    return c ? zt_numel(t) / c : 0;
}

const char *zt_describe(const zt *t, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->ne[i]);
    if (o < n) snprintf(buf + o, n - o, "] %s", zt_dtype_name(t->dtype));
    return buf;
}

zt zt_rows_view(const zt *t, int64_t r0, int64_t n) {
    zt v = *t;
    int64_t c = zt_cols(t);
    v.ndim = 2;
    v.ne[0] = n;
    v.ne[1] = c;
    v.ne[2] = v.ne[3] = 0;
    v.data = t->data ? (char *)t->data + (size_t)(r0 * c) * zt_dtype_size(t->dtype) : NULL;
    return v;
}

zt zt_reshape(const zt *t, int ndim, const int64_t *ne) {
    zt v = *t;
    v.ndim = ndim;
    for (int i = 0; i < ZT_MAXDIM; i++) v.ne[i] = i < ndim ? ne[i] : 0;
    return v;
}

/* ---- backends ----------------------------------------------------------- */

int zbackend_create(zbackend **out, const char *device, int threads, zerr *err) {
    *out = NULL;
    (void)zop_profiling(); /* reads ZIMAGE_PROFILE once */
    if (!device || !*device || !strcmp(device, "auto")) {
#ifdef ZIMAGE_HAVE_CUDA
        if (zcuda_available()) return zcuda_backend_create(out, 0, err);
#endif
        return zcpu_backend_create(out, threads, err);
    }
    if (!strcmp(device, "cpu")) return zcpu_backend_create(out, threads, err);
    if (!strncmp(device, "cuda", 4)) {
        int idx = 0;
        if (device[4] == ':') {
            char *end;
            long v = strtol(device + 5, &end, 10);
            if (*end || v < 0 || v > 64) return zerr_set(err, ZE_INVALID, "bad device '%s' (use cuda:N)", device);
            idx = (int)v;
        } else if (device[4]) {
            return zerr_set(err, ZE_INVALID, "unknown device '%s' (use cpu, cuda or cuda:N)", device);
        }
#ifdef ZIMAGE_HAVE_CUDA
        return zcuda_backend_create(out, idx, err);
#else
        (void)idx;
        return zerr_set(err, ZE_UNSUPPORTED, "this zimage was built without CUDA (build with `make cuda`)");
#endif
    }
    return zerr_set(err, ZE_INVALID, "unknown device '%s' (use cpu, cuda or cuda:N)", device);
}

void zbackend_destroy(zbackend *be) {
    if (be && be->vt && be->vt->destroy) be->vt->destroy(be);
}

zt_dtype zbackend_weight_dtype(const zbackend *be, zt_dtype stored, int is_matrix) {
    if (!is_matrix) return ZT_F32;
    if (be->is_host) return stored; /* CPU: keep what the file has (mmap, no copy) */
    return ZT_BF16;                 /* GPU: bf16 tensor cores */
}

int zbackend_fail(zbackend *be, int code, const char *fmt, ...) {
    if (be->status != ZE_OK) return be->status; /* keep the first failure */
    va_list ap;
    va_start(ap, fmt);
    zerr_vset(be->err, code, fmt, ap);
    va_end(ap);
    be->status = code;
    return code;
}

int zt_alloc(zbackend *be, zt *t, zt_dtype dt, int ndim, const int64_t *ne) {
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->ne[i] = ne[i];
    size_t bytes = zt_nbytes(t);
    return be->vt->alloc(be, bytes ? bytes : 1, &t->data);
}

void zt_free(zbackend *be, zt *t) {
    if (t->data) be->vt->free(be, t->data);
    t->data = NULL;
}

/* Convert n elements between dtypes on the host. */
static void convert_host(void *dst, zt_dtype dd, const void *src, zt_dtype sd, size_t n) {
    if (dd == sd) {
        memcpy(dst, src, n * zt_dtype_size(dd));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float f;
        switch (sd) {
        case ZT_F32: f = ((const float *)src)[i]; break;
        case ZT_BF16: f = zbf16_to_f32(((const uint16_t *)src)[i]); break;
        default: f = zf16_to_f32(((const uint16_t *)src)[i]); break;
        }
        switch (dd) {
        case ZT_F32: ((float *)dst)[i] = f; break;
        case ZT_BF16: ((uint16_t *)dst)[i] = zf32_to_bf16(f); break;
        default: ((uint16_t *)dst)[i] = zf32_to_f16(f); break;
        }
    }
}

int zt_upload(zbackend *be, zt *t, const void *src, zt_dtype src_dtype) {
    size_t n = (size_t)zt_numel(t);
    if (src_dtype == t->dtype) return be->vt->upload(be, t->data, src, zt_nbytes(t));
    if (be->is_host) {
        convert_host(t->data, t->dtype, src, src_dtype, n);
        return ZE_OK;
    }
    /* convert in bounded chunks, then upload */
    size_t chunk = 1 << 20;
    void *tmp = malloc(chunk * zt_dtype_size(t->dtype));
    if (!tmp) return zerr_set(be->err, ZE_NOMEM, "out of host memory converting a tensor");
    int rc = ZE_OK;
    for (size_t i = 0; i < n && rc == ZE_OK; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        convert_host(tmp, t->dtype, (const char *)src + i * zt_dtype_size(src_dtype), src_dtype, m);
        rc = be->vt->upload(be, (char *)t->data + i * zt_dtype_size(t->dtype), tmp, m * zt_dtype_size(t->dtype));
    }
    free(tmp);
    return rc;
}

int zt_download_f32(zbackend *be, const zt *t, float *dst) {
    size_t n = (size_t)zt_numel(t);
    if (t->dtype == ZT_F32) return be->vt->download(be, dst, t->data, n * 4);
    if (be->is_host) {
        convert_host(dst, ZT_F32, t->data, t->dtype, n);
        return ZE_OK;
    }
    uint16_t *tmp = malloc(n * 2);
    if (!tmp) return zerr_set(be->err, ZE_NOMEM, "out of host memory reading a tensor");
    int rc = be->vt->download(be, tmp, t->data, n * 2);
    if (rc == ZE_OK) convert_host(dst, ZT_F32, tmp, t->dtype, n);
    free(tmp);
    return rc;
}

/* ---- arena / exec ------------------------------------------------------- */

int zarena_alloc(zbackend *be, zarena *a, size_t bytes) {
    memset(a, 0, sizeof *a);
    if (!bytes) return ZE_OK;
    void *p = NULL;
    int rc = be->vt->alloc(be, bytes, &p);
    if (rc) return rc;
    a->base = p;
    a->cap = bytes;
    return ZE_OK;
}

void zarena_free(zbackend *be, zarena *a) {
    if (a->base) be->vt->free(be, a->base);
    memset(a, 0, sizeof *a);
}

void zx_begin(zexec *zx, zbackend *be, zarena *arena, int measure) {
    zx->be = be;
    zx->arena = arena;
    zx->measure = measure;
    zx->status = ZE_OK;
    be->status = ZE_OK;
    if (arena) arena->off = 0;
}

int zx_ok(const zexec *zx) { return zx->status == ZE_OK && zx->be->status == ZE_OK; }

static int zx_live(zexec *zx) {
    if (zx->status == ZE_OK && zx->be->status != ZE_OK) zx->status = zx->be->status;
    return zx->status == ZE_OK && !zx->measure;
}

static void zx_fail(zexec *zx, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void zx_fail(zexec *zx, int code, const char *fmt, ...) {
    if (zx->status != ZE_OK) return;
    va_list ap;
    va_start(ap, fmt);
    zerr_vset(zx->be->err, code, fmt, ap);
    va_end(ap);
    zx->status = code;
    zx->be->status = code;
}

zt zx_tensor(zexec *zx, zt_dtype dt, int ndim, const int64_t *ne) {
    zt t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.ne[i] = ne[i];
    zarena *a = zx->arena;
    if (!a) {
        zx_fail(zx, ZE_INVALID, "scratch tensor requested without an arena");
        return t;
    }
    size_t bytes = (zt_nbytes(&t) + 255) & ~(size_t)255;
    size_t off = a->off;
    a->off += bytes;
    if (a->off > a->peak) a->peak = a->off;
    if (zx->measure) return t;
    if (a->off > a->cap) {
        zx_fail(zx, ZE_NOMEM, "scratch arena too small (%zu of %zu bytes needed)", a->off, a->cap);
        return t;
    }
    t.data = a->base + off;
    return t;
}

zt zx_tensor2(zexec *zx, zt_dtype dt, int64_t n0, int64_t n1) {
    int64_t ne[2] = {n0, n1};
    return zx_tensor(zx, dt, 2, ne);
}
zt zx_tensor3(zexec *zx, zt_dtype dt, int64_t n0, int64_t n1, int64_t n2) {
    int64_t ne[3] = {n0, n1, n2};
    return zx_tensor(zx, dt, 3, ne);
}
zt zx_tensor4(zexec *zx, zt_dtype dt, int64_t n0, int64_t n1, int64_t n2, int64_t n3) {
    int64_t ne[4] = {n0, n1, n2, n3};
    return zx_tensor(zx, dt, 4, ne);
}

size_t zx_mark(zexec *zx) { return zx->arena ? zx->arena->off : 0; }
void zx_release(zexec *zx, size_t mark) {
    if (zx->arena) zx->arena->off = mark;
}

void zx_upload(zexec *zx, zt *t, const void *src, zt_dtype src_dtype) {
    if (!zx_live(zx)) return;
    int rc = zt_upload(zx->be, t, src, src_dtype);
    if (rc) zx_fail(zx, rc, "upload failed: %s", zx->be->err ? zx->be->err->msg : "");
}

/* ---- validation helpers --------------------------------------------------- */

#define CHECK(cond, ...)                              \
    do {                                              \
        if (!(cond)) {                                \
            zx_fail(zx, ZE_INVALID, __VA_ARGS__);     \
            return;                                   \
        }                                             \
    } while (0)

static int vec_ok(zvec v, int64_t batch, int64_t n) {
    if (!v.t) return 1;
    return zt_rows(v.t) == batch && v.off >= 0 && v.off + n <= zt_cols(v.t);
}

#define PRE(op)                           \
    static const char zop_name_[] = #op;  \
    if (zx->status != ZE_OK) return;      \
    (void)0
#define RUN(call)                                        \
    do {                                                 \
        if (!zx_live(zx)) return;                        \
        double prof_t0_ = prof_on > 0 ? prof_begin(zx) : -1; \
        call;                                            \
        if (prof_t0_ >= 0) prof_end(zx, zop_name_, prof_t0_); \
        zx_live(zx);                                     \
    } while (0)

/* ---- op profiler (ZIMAGE_PROFILE=1) -------------------------------------
 * A debugging aid, not a benchmark: with ZIMAGE_PROFILE set, every op that
 * runs (outside a graph capture) is followed by a backend sync (where the
 * backend has one: CPU ops are synchronous) and its wall
 * time is added to a "phase/op" row; the table goes to stderr at exit.  The
 * sync makes each row include one launch latency (~5-10 us on CUDA).  The
 * pipeline does not capture graphs while profiling (ops recorded into a graph
 * are not timed).  One thread at a time (the profile is process-wide). */
#define PROF_ROWS 128
typedef struct {
    char key[48];
    long n;
    double s;
} prof_row;
static prof_row prof_rows[PROF_ROWS];
static int prof_nrows, prof_on = -1, prof_capturing;
static const char *prof_phase = "-";

static int prof_cmp(const void *a, const void *b) {
    double x = ((const prof_row *)a)->s, y = ((const prof_row *)b)->s;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void prof_report(void) {
    double tot = 0;
    for (int i = 0; i < prof_nrows; i++) tot += prof_rows[i].s;
    if (!prof_nrows) return;
    qsort(prof_rows, (size_t)prof_nrows, sizeof prof_rows[0], prof_cmp);
    fprintf(stderr, "zimage op profile (synchronised per op): %.4f s in %d rows\n", tot, prof_nrows);
    fprintf(stderr, "  %-32s %8s %10s %10s %6s\n", "phase/op", "calls", "total ms", "mean us", "%");
    for (int i = 0; i < prof_nrows; i++)
        fprintf(stderr, "  %-32s %8ld %10.3f %10.1f %6.2f\n", prof_rows[i].key, prof_rows[i].n, prof_rows[i].s * 1e3,
                prof_rows[i].s * 1e6 / (double)prof_rows[i].n, 100.0 * prof_rows[i].s / tot);
}

int zop_profiling(void) {
    if (prof_on < 0) {
        const char *v = getenv("ZIMAGE_PROFILE");
        prof_on = v && *v && strcmp(v, "0");
        if (prof_on) atexit(prof_report);
    }
    return prof_on > 0;
}

void zop_profile_phase(const char *phase) { prof_phase = phase ? phase : "-"; }
void zop_profile_capturing(int on) { prof_capturing = on; }
void zop_profile_reset(void) {
    memset(prof_rows, 0, sizeof prof_rows);
    prof_nrows = 0;
}

static double prof_begin(zexec *zx) {
    if (prof_capturing) return -1;
    return ztime_now();
}

static void prof_end(zexec *zx, const char *op, double t0) {
    if (zx->be->vt->sync && zx->be->vt->sync(zx->be)) return;
    double dt = ztime_now() - t0;
    char key[48];
    snprintf(key, sizeof key, "%s/%s", prof_phase, op);
    int i = 0;
    while (i < prof_nrows && strcmp(prof_rows[i].key, key)) i++;
    if (i == prof_nrows) {
        if (prof_nrows == PROF_ROWS) return;
        snprintf(prof_rows[prof_nrows++].key, sizeof prof_rows[0].key, "%s", key);
    }
    prof_rows[i].n++;
    prof_rows[i].s += dt;
}

/* ---- dispatchers ------------------------------------------------------------ */

void zop_matmul(zexec *zx, zt *y, const zt *x, const zt *w, const zt *bias, int accumulate) {
    PRE(matmul);
    char a[64], b[64], c[64];
    CHECK(w->ndim == 2, "matmul: weight must be 2-D, got %s", zt_describe(w, a, sizeof a));
    CHECK(zt_cols(x) == w->ne[1] && zt_cols(y) == w->ne[0] && zt_rows(x) == zt_rows(y),
          "matmul: shapes x %s, w %s, y %s disagree", zt_describe(x, a, sizeof a), zt_describe(w, b, sizeof b),
          zt_describe(y, c, sizeof c));
    CHECK(!bias || (zt_numel(bias) == w->ne[0] && bias->dtype == ZT_F32), "matmul: bias must be F32 [%lld]",
          (long long)w->ne[0]);
    RUN(zx->be->vt->matmul(zx->be, y, x, w, bias, accumulate));
}

void zop_embed(zexec *zx, zt *y, const zt *table, const int32_t *ids, int64_t n) {
    PRE(embed);
    CHECK(table->ndim == 2 && zt_cols(y) == table->ne[1] && zt_rows(y) == n, "embed: bad shapes");
    for (int64_t i = 0; i < n; i++)
        CHECK(ids[i] >= 0 && ids[i] < table->ne[0], "embed: token id %d out of range [0, %lld)", ids[i],
              (long long)table->ne[0]);
    RUN(zx->be->vt->embed(zx->be, y, table, ids, n));
}

void zop_rmsnorm(zexec *zx, zt *y, const zt *x, const zt *w, zvec scale, int64_t batch, float eps) {
    PRE(rmsnorm);
    int64_t d = zt_cols(x);
    CHECK(zt_numel(y) == zt_numel(x) && zt_cols(y) == d, "rmsnorm: y and x differ");
    CHECK(!w || (zt_numel(w) == d && w->dtype == ZT_F32), "rmsnorm: weight must be F32 [%lld]", (long long)d);
    CHECK(batch >= 1 && zt_rows(x) % batch == 0 && vec_ok(scale, batch, d), "rmsnorm: bad batch/scale");
    RUN(zx->be->vt->rmsnorm(zx->be, y, x, w, scale, batch, eps));
}

void zop_layernorm(zexec *zx, zt *y, const zt *x, const zt *w, const zt *b, zvec scale, int64_t batch, float eps) {
    PRE(layernorm);
    int64_t d = zt_cols(x);
    CHECK(zt_numel(y) == zt_numel(x) && zt_cols(y) == d, "layernorm: y and x differ");
    CHECK(!w || (zt_numel(w) == d && w->dtype == ZT_F32), "layernorm: bad weight");
    CHECK(!b || (zt_numel(b) == d && b->dtype == ZT_F32), "layernorm: bad bias");
    CHECK(batch >= 1 && zt_rows(x) % batch == 0 && vec_ok(scale, batch, d), "layernorm: bad batch/scale");
    RUN(zx->be->vt->layernorm(zx->be, y, x, w, b, scale, batch, eps));
}

void zop_norm_gate_add(zexec *zx, zt *x, const zt *y, const zt *w, zvec gate, int64_t batch, float eps) {
    PRE(norm_gate_add);
    int64_t d = zt_cols(y);
    CHECK(zt_numel(y) == zt_numel(x) && zt_cols(x) == d, "norm_gate_add: x and y differ");
    CHECK(!w || (zt_numel(w) == d && w->dtype == ZT_F32), "norm_gate_add: bad weight");
    CHECK(batch >= 1 && zt_rows(x) % batch == 0 && vec_ok(gate, batch, d), "norm_gate_add: bad batch/gate");
    RUN(zx->be->vt->norm_gate_add(zx->be, x, y, w, gate, batch, eps));
}

void zop_norm_gate_add_norm(zexec *zx, zt *x, const zt *y, const zt *w, zvec gate, zt *h, const zt *w2, zvec scale2,
                            int64_t batch, float eps) {
    PRE(norm_gate_add_norm);
    if (!zx->be->vt->norm_gate_add_norm) {
        zop_norm_gate_add(zx, x, y, w, gate, batch, eps);
        zop_rmsnorm(zx, h, x, w2, scale2, batch, eps);
        return;
    }
    int64_t d = zt_cols(y);
    CHECK(zt_numel(y) == zt_numel(x) && zt_cols(x) == d, "norm_gate_add_norm: x and y differ");
    CHECK(zt_numel(h) == zt_numel(x) && zt_cols(h) == d, "norm_gate_add_norm: h and x differ");
    CHECK(!h->data || (h->data != x->data && h->data != y->data), "norm_gate_add_norm: h aliases x or y");
    CHECK(!w || (zt_numel(w) == d && w->dtype == ZT_F32), "norm_gate_add_norm: bad weight");
    CHECK(!w2 || (zt_numel(w2) == d && w2->dtype == ZT_F32), "norm_gate_add_norm: bad norm weight");
    CHECK(batch >= 1 && zt_rows(x) % batch == 0 && vec_ok(gate, batch, d) && vec_ok(scale2, batch, d),
          "norm_gate_add_norm: bad batch/gate/scale");
    RUN(zx->be->vt->norm_gate_add_norm(zx->be, x, y, w, gate, h, w2, scale2, batch, eps));
}

void zop_groupnorm(zexec *zx, zt *y, const zt *x, const zt *w, const zt *b, int groups, float eps, int silu) {
    PRE(groupnorm);
    int64_t c = zt_cols(x);
    CHECK(x->ndim == 4 && zt_numel(y) == zt_numel(x), "groupnorm: x must be NHWC and match y");
    CHECK(groups > 0 && c % groups == 0, "groupnorm: %lld channels not divisible by %d groups", (long long)c, groups);
    CHECK(w && b && zt_numel(w) == c && zt_numel(b) == c && w->dtype == ZT_F32 && b->dtype == ZT_F32,
          "groupnorm: bad affine params");
    RUN(zx->be->vt->groupnorm(zx->be, y, x, w, b, groups, eps, silu));
}

void zop_qkv_norm_rope(zexec *zx, zt *q, zt *k, zt *v, const zt *qkv, const zt *wq, const zt *wk, const zt *cos,
                       const zt *sin, int hq, int hkv, float eps, zrope_pairing pairing) {
    PRE(qkv_norm_rope);
    int64_t r = zt_rows(qkv);
    CHECK(hq > 0 && hkv > 0 && hq % hkv == 0, "qkv_norm_rope: bad head counts %d/%d", hq, hkv);
    CHECK(zt_cols(qkv) % (hq + 2 * hkv) == 0, "qkv_norm_rope: qkv width not divisible by heads");
    int64_t d = zt_cols(qkv) / (hq + 2 * hkv);
    CHECK(d % 2 == 0, "qkv_norm_rope: odd head dim");
    CHECK(zt_rows(q) == r && zt_cols(q) == hq * d && zt_rows(k) == r && zt_cols(k) == hkv * d && zt_rows(v) == r &&
              zt_cols(v) == hkv * d,
          "qkv_norm_rope: q/k/v shapes disagree with qkv");
    CHECK((!wq || (zt_numel(wq) == d && wq->dtype == ZT_F32)) && (!wk || (zt_numel(wk) == d && wk->dtype == ZT_F32)),
          "qkv_norm_rope: norm weights must be F32 [%lld]", (long long)d);
    CHECK(!cos || (sin && cos->dtype == ZT_F32 && sin->dtype == ZT_F32 && zt_rows(cos) == r &&
                   zt_cols(cos) == d / 2 && zt_numel(sin) == zt_numel(cos)),
          "qkv_norm_rope: rope tables must be F32 [%lld, %lld]", (long long)r, (long long)d / 2);
    RUN(zx->be->vt->qkv_norm_rope(zx->be, q, k, v, qkv, wq, wk, cos, sin, hq, hkv, eps, pairing));
}

void zop_attention(zexec *zx, zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv, const int32_t *kv_len,
                   int causal, float scale) {
    PRE(attention);
    CHECK(q->ndim == 3 && k->ndim == 3 && v->ndim == 3 && o->ndim == 3, "attention: tensors must be [B, N, H*d]");
    CHECK(hq > 0 && hkv > 0 && hq % hkv == 0, "attention: bad head counts %d/%d", hq, hkv);
    int64_t b = q->ne[0], d = q->ne[2] / hq;
    CHECK(q->ne[2] == hq * d && k->ne[2] == hkv * d && v->ne[2] == hkv * d, "attention: head dims disagree");
    CHECK(k->ne[0] == b && v->ne[0] == b && o->ne[0] == b && k->ne[1] == v->ne[1] && o->ne[1] == q->ne[1] &&
              o->ne[2] == q->ne[2],
          "attention: shapes disagree");
    if (kv_len)
        for (int64_t i = 0; i < b; i++)
            CHECK(kv_len[i] >= 1 && kv_len[i] <= k->ne[1], "attention: kv_len[%lld] = %d out of range",
                  (long long)i, kv_len[i]);
    RUN(zx->be->vt->attention(zx->be, o, q, k, v, hq, hkv, kv_len, causal, scale));
}

void zop_silu_mul(zexec *zx, zt *y, const zt *gu) {
    PRE(silu_mul);
    CHECK(zt_rows(y) == zt_rows(gu) && 2 * zt_cols(y) == zt_cols(gu), "silu_mul: y must be [R, F], gu [R, 2F]");
    RUN(zx->be->vt->silu_mul(zx->be, y, gu));
}

void zop_silu(zexec *zx, zt *y, const zt *x) {
    PRE(silu);
    CHECK(zt_numel(y) == zt_numel(x), "silu: size mismatch");
    RUN(zx->be->vt->silu(zx->be, y, x));
}

void zop_add(zexec *zx, zt *y, const zt *a, const zt *b) {
    PRE(add);
    CHECK(zt_numel(y) == zt_numel(a) && zt_numel(a) == zt_numel(b), "add: size mismatch");
    RUN(zx->be->vt->add(zx->be, y, a, b));
}

void zop_axpby(zexec *zx, zt *y, float a, const zt *x, float b) {
    PRE(axpby);
    CHECK(zt_numel(y) == zt_numel(x), "axpby: size mismatch");
    RUN(zx->be->vt->axpby(zx->be, y, a, x, b));
}

void zop_affine(zexec *zx, zt *y, const zt *x, float a, float b) {
    PRE(affine);
    CHECK(zt_numel(y) == zt_numel(x), "affine: size mismatch");
    RUN(zx->be->vt->affine(zx->be, y, x, a, b));
}

void zop_copy_rows(zexec *zx, zt *dst, int64_t dst_row, const zt *src, int64_t src_row, int64_t n) {
    PRE(copy_rows);
    CHECK(zt_cols(dst) == zt_cols(src), "copy_rows: column counts differ (%lld vs %lld)", (long long)zt_cols(dst),
          (long long)zt_cols(src));
    CHECK(n >= 0 && dst_row >= 0 && src_row >= 0 && dst_row + n <= zt_rows(dst) && src_row + n <= zt_rows(src),
          "copy_rows: row range out of bounds");
    if (n == 0) return;
    RUN(zx->be->vt->copy_rows(zx->be, dst, dst_row, src, src_row, n));
}

void zop_fill_rows(zexec *zx, zt *dst, int64_t row0, int64_t n, const zt *row) {
    PRE(fill_rows);
    CHECK(zt_numel(row) == zt_cols(dst), "fill_rows: row has %lld values, dst rows %lld", (long long)zt_numel(row),
          (long long)zt_cols(dst));
    CHECK(n >= 0 && row0 >= 0 && row0 + n <= zt_rows(dst), "fill_rows: row range out of bounds");
    if (n == 0) return;
    RUN(zx->be->vt->fill_rows(zx->be, dst, row0, n, row));
}

void zop_timestep_embed(zexec *zx, zt *y, const zt *t, float scale, float max_period) {
    PRE(timestep_embed);
    CHECK(t->dtype == ZT_F32 && zt_numel(t) == zt_rows(y) && zt_cols(y) % 2 == 0, "timestep_embed: bad shapes");
    RUN(zx->be->vt->timestep_embed(zx->be, y, t, scale, max_period));
}

void zop_patchify(zexec *zx, zt *tok, const zt *x, int p) {
    PRE(patchify);
    CHECK(x->ndim == 4 && tok->ndim == 3, "patchify: x must be [B, C, H, W], tok [B, N, F]");
    int64_t b = x->ne[0], c = x->ne[1], h = x->ne[2], w = x->ne[3];
    CHECK(p > 0 && h % p == 0 && w % p == 0, "patchify: %lldx%lld not divisible by patch %d", (long long)h,
          (long long)w, p);
    CHECK(tok->ne[0] == b && tok->ne[1] == (h / p) * (w / p) && tok->ne[2] == p * p * c, "patchify: bad tok shape");
    RUN(zx->be->vt->patchify(zx->be, tok, x, p));
}

void zop_unpatchify(zexec *zx, zt *x, const zt *tok, int p) {
    PRE(unpatchify);
    CHECK(x->ndim == 4 && tok->ndim == 3, "unpatchify: x must be [B, C, H, W], tok [B, N, F]");
    int64_t b = x->ne[0], c = x->ne[1], h = x->ne[2], w = x->ne[3];
    CHECK(p > 0 && h % p == 0 && w % p == 0, "unpatchify: bad patch");
    CHECK(tok->ne[0] == b && tok->ne[1] >= (h / p) * (w / p) && tok->ne[2] == p * p * c, "unpatchify: bad tok shape");
    RUN(zx->be->vt->unpatchify(zx->be, x, tok, p));
}

/* Shapes of a convolution (conv2d, conv2d_add); failures go to zx's status. */
static void conv_check(zexec *zx, const char *op, const zt *y, const zt *x, const zt *w, const zt *b, int kh, int kw,
                       int stride, int pad_t, int pad_l, int pad_b, int pad_r) {
    CHECK(x->ndim == 4 && y->ndim == 4 && w->ndim == 2, "%s: x, y must be NHWC, w [Co, kh*kw*Ci]", op);
    int64_t ci = x->ne[3], co = y->ne[3];
    CHECK(w->ne[0] == co && w->ne[1] == kh * kw * ci, "%s: weight [%lld, %lld] does not fit %dx%d %lld->%lld", op,
          (long long)w->ne[0], (long long)w->ne[1], kh, kw, (long long)ci, (long long)co);
    CHECK(!b || (zt_numel(b) == co && b->dtype == ZT_F32), "%s: bias must be F32 [%lld]", op, (long long)co);
    CHECK(stride >= 1, "%s: bad stride", op);
    int64_t ho = (x->ne[1] + pad_t + pad_b - kh) / stride + 1, wo = (x->ne[2] + pad_l + pad_r - kw) / stride + 1;
    CHECK(y->ne[0] == x->ne[0] && y->ne[1] == ho && y->ne[2] == wo, "%s: output must be [%lld, %lld, %lld, %lld]", op,
          (long long)x->ne[0], (long long)ho, (long long)wo, (long long)co);
}

void zop_conv2d(zexec *zx, zt *y, const zt *x, const zt *w, const zt *b, int kh, int kw, int stride, int pad_t,
                int pad_l, int pad_b, int pad_r) {
    PRE(conv2d);
    conv_check(zx, "conv2d", y, x, w, b, kh, kw, stride, pad_t, pad_l, pad_b, pad_r);
    RUN(zx->be->vt->conv2d(zx->be, y, x, w, b, kh, kw, stride, pad_t, pad_l, pad_b, pad_r));
}

void zop_conv2d_add(zexec *zx, zt *y, const zt *x, const zt *w, const zt *b, const zt *res, int kh, int kw, int stride,
                    int pad_t, int pad_l, int pad_b, int pad_r) {
    PRE(conv2d_add);
    CHECK(zt_numel(res) == zt_numel(y), "conv2d_add: residual and output differ in size");
    CHECK(!res->data || (res->data != y->data && res->data != x->data), "conv2d_add: residual aliases x or y");
    if (!zx->be->vt->conv2d_add) {
        zop_conv2d(zx, y, x, w, b, kh, kw, stride, pad_t, pad_l, pad_b, pad_r);
        zop_add(zx, y, y, res);
        return;
    }
    conv_check(zx, "conv2d_add", y, x, w, b, kh, kw, stride, pad_t, pad_l, pad_b, pad_r);
    RUN(zx->be->vt->conv2d_add(zx->be, y, x, w, b, res, kh, kw, stride, pad_t, pad_l, pad_b, pad_r));
}

void zop_upsample2x(zexec *zx, zt *y, const zt *x) {
    PRE(upsample2x);
    CHECK(x->ndim == 4 && y->ndim == 4 && y->ne[0] == x->ne[0] && y->ne[1] == 2 * x->ne[1] &&
              y->ne[2] == 2 * x->ne[2] && y->ne[3] == x->ne[3],
          "upsample2x: y must be [B, 2H, 2W, C]");
    RUN(zx->be->vt->upsample2x(zx->be, y, x));
}

void zop_nchw_to_nhwc(zexec *zx, zt *y, const zt *x) {
    PRE(nchw_to_nhwc);
    CHECK(x->ndim == 4 && y->ndim == 4 && y->ne[0] == x->ne[0] && y->ne[1] == x->ne[2] && y->ne[2] == x->ne[3] &&
              y->ne[3] == x->ne[1],
          "nchw_to_nhwc: y must be [B, H, W, C] for x [B, C, H, W]");
    RUN(zx->be->vt->nchw_to_nhwc(zx->be, y, x));
}

void zop_cfg_combine(zexec *zx, zt *out, const zt *pos, const zt *neg, float w, float norm_k) {
    PRE(cfg_combine);
    CHECK(out->dtype == ZT_F32 && pos->dtype == ZT_F32 && neg->dtype == ZT_F32, "cfg_combine: tensors must be F32");
    CHECK(zt_numel(out) == zt_numel(pos) && zt_numel(pos) == zt_numel(neg) && out->ne[0] == pos->ne[0],
          "cfg_combine: shapes differ");
    RUN(zx->be->vt->cfg_combine(zx->be, out, pos, neg, w, norm_k));
}
