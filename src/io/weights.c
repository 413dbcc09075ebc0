/* weights.c - weight sources (safetensors + name map) and the loader that
 * turns stored tensors into backend tensors (see weights.h).
 *
 * Loading one tensor: map the canonical name to a stored key (namemap.c),
 * check it exists, is F32/F16/BF16 and has exactly the requested shape, then
 *   - host backend, dtype kept, no re-layout, aligned: ALIAS the mmap (zero
 *     copy; t->data points into the file mapping, which is read-only);
 *   - otherwise zt_alloc + zt_upload (dtype conversion on the way), and the
 *     allocation is remembered so zw_loader_free releases it.
 * Conv weights are permuted OIHW [co, ci, kh, kw] -> OHWI [co, kh*kw*ci] on
 * the host first.  zw_load_cat also takes blocks stored as 1x1 convs
 * [rows, cols, 1, 1] (LDM VAE attention q/k/v).  Every stored tensor consumed is marked (per row block for
 * fused tensors); zw_check_all_used names what nobody took.
 *
 * Random weights (src == NULL): value of element i of tensor `name` is a
 * counter-based hash of (seed, name, i) -> uniform in [-1, 1), so results do
 * not depend on the thread count or chunking.  Scaled to
 *   matrices (more than one row)    std 1/sqrt(fan_in)  (fan_in = cols, or ci*kh*kw)
 *   vectors whose name has "norm"   1 + 0.1 * unit noise
 *   other vectors (biases, pads)    0.02 * unit noise
 * Random matrices are made as if stored BF16 (the dtype of the shipped
 * single files), so the CPU backend keeps them BF16 too.
 */
#include "weights.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../base/half.h"
#include "namemap.h"
#include "safetensors.h"

typedef struct src_entry {
    char *key;               /* normalised stored name (namemap)      */
    const zst_tensor *t;
    const char *file;
    int ignored;             /* never used by design (lm_head, ...)   */
} src_entry;

struct zw_source {
    char *path;              /* the file or index json opened         */
    zw_kind kind;
    zst_set *set;
    znm nm;
    int n;
    src_entry *e;            /* sorted by key                         */
};

/* ---- sources ---------------------------------------------------------------- */

static int cmp_key(const void *a, const void *b) { return strcmp(((const src_entry *)a)->key, ((const src_entry *)b)->key); }

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Pick the weights inside a component folder. */
static int find_in_dir(const char *dir, char *out, size_t n, zerr *e) {
    static const char *const known[] = {"diffusion_pytorch_model.safetensors.index.json",
                                        "model.safetensors.index.json", "diffusion_pytorch_model.safetensors",
                                        "model.safetensors"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        snprintf(out, n, "%s/%s", dir, known[i]);
        if (is_file(out)) return ZE_OK;
    }
    DIR *d = opendir(dir);
    if (!d) return zerr_set(e, ZE_IO, "cannot open folder %s: %s", dir, strerror(errno));
    char idx[1024] = "", st[1024] = "", list[512] = "";
    int n_idx = 0, n_st = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (ends_with(nm, ".safetensors.index.json")) {
            n_idx++;
            snprintf(idx, sizeof idx, "%s", nm);
        } else if (ends_with(nm, ".safetensors")) {
            n_st++;
            snprintf(st, sizeof st, "%s", nm);
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", nm);
        }
    }
    closedir(d);
    if (n_idx == 1) {
        snprintf(out, n, "%s/%s", dir, idx);
        return ZE_OK;
    }
    if (n_idx == 0 && n_st == 1) {
        snprintf(out, n, "%s/%s", dir, st);
        return ZE_OK;
    }
    if (n_idx > 1 || n_st > 1)
        return zerr_set(e, ZE_INVALID, "%s holds several weight files (%s%s); pass the one to use", dir, list,
                        n_idx > 1 ? " and several index files" : "");
    return zerr_set(e, ZE_IO,
                    "no weights in %s (expected diffusion_pytorch_model.safetensors, model.safetensors or a "
                    "*.safetensors.index.json)",
                    dir);
}

void zw_source_free(zw_source *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->e[i].key);
    free(s->e);
    zst_set_close(s->set);
    free(s->path);
    free(s);
}

int zw_source_open(zw_source **out, const char *path, zw_kind kind, zerr *e) {
    *out = NULL;
    char file[4096];
    if (!path || !*path) return zerr_set(e, ZE_INVALID, "no weight path given");
    if (is_dir(path)) ZTRY(find_in_dir(path, file, sizeof file, e));
    else if (snprintf(file, sizeof file, "%s", path) >= (int)sizeof file)
        return zerr_set(e, ZE_INVALID, "path too long: %.100s...", path);
    zw_source *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(file))) {
        free(s);
        return zerr_set(e, ZE_NOMEM, "out of memory");
    }
    s->kind = kind;
    int rc = zst_set_open(&s->set, file, e);
    if (rc) goto fail;
    if (s->set->n == 0) {
        rc = zerr_set(e, ZE_FORMAT, "%s holds no tensors", file);
        goto fail;
    }
    s->e = calloc((size_t)s->set->n, sizeof *s->e);
    const char **keys = malloc((size_t)s->set->n * sizeof *keys);
    if (!s->e || !keys) {
        free(keys);
        rc = zerr_set(e, ZE_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < s->set->n; i++) {
        const zst_entry *en = &s->set->all[i];
        char key[ZNM_MAX_NAME];
        int k = znm_stored_key((int)kind, en->t->name, key, sizeof key);
        if (k == ZNM_KEY_TOOLONG) {
            free(keys);
            rc = zerr_set(e, ZE_FORMAT, "%s: tensor name '%.80s...' is too long", s->set->files[en->file]->path,
                          en->t->name);
            goto fail;
        }
        src_entry *se = &s->e[s->n++];
        se->key = strdup(key);
        se->t = en->t;
        se->file = s->set->files[en->file]->path;
        se->ignored = k == ZNM_KEY_IGNORED;
        if (!se->key) {
            free(keys);
            rc = zerr_set(e, ZE_NOMEM, "out of memory");
            goto fail;
        }
    }
    qsort(s->e, (size_t)s->n, sizeof *s->e, cmp_key);
    for (int i = 0; i < s->n; i++) {
        if (i && !strcmp(s->e[i].key, s->e[i - 1].key)) {
            free(keys);
            rc = zerr_set(e, ZE_FORMAT, "%s: tensors '%s' and '%s' are the same tensor under two names", file,
                          s->e[i - 1].t->name, s->e[i].t->name);
            goto fail;
        }
        keys[i] = s->e[i].key;
    }
    znm_detect(&s->nm, (int)kind, keys, s->n);
    free(keys);
    *out = s;
    return ZE_OK;
fail:
    zw_source_free(s);
    return rc;
}

int zw_source_count(const zw_source *s) { return s ? s->n : 0; }
const char *zw_source_path(const zw_source *s) { return s ? s->path : ""; }

static int find_key(const zw_source *s, const char *key) {
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(s->e[mid].key, key);
        if (!c) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static int zst_to_zt(zst_dtype d, zt_dtype *out) {
    switch (d) {
    case ZST_F32: *out = ZT_F32; return 1;
    case ZST_F16: *out = ZT_F16; return 1;
    case ZST_BF16: *out = ZT_BF16; return 1;
    default: return 0;
    }
}

/* A canonical name resolved to (a row block of) a stored tensor. */
typedef struct resolved {
    znm_ref ref;
    int entry;               /* -1: not found                          */
    const zst_tensor *t;
    int float_ok;            /* stored dtype is F32/F16/BF16           */
    zw_view v;               /* the (row block) view                   */
} resolved;

/* Returns 1 found, 0 not found, -1 the row-block split is impossible. */
static int resolve(const zw_source *s, const char *canonical, resolved *r) {
    memset(r, 0, sizeof *r);
    r->entry = -1;
    if (znm_map(&s->nm, canonical, &r->ref) != 0) snprintf(r->ref.key, sizeof r->ref.key, "%s", canonical);
    int i = find_key(s, r->ref.key);
    if (i < 0 || s->e[i].ignored) return 0;
    const zst_tensor *t = s->e[i].t;
    r->entry = i;
    r->t = t;
    r->float_ok = zst_to_zt(t->dtype, &r->v.dtype);
    r->v.ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) r->v.ne[d] = t->shape[d];
    r->v.data = t->data;
    r->v.file = s->e[i].file;
    r->v.stored_name = t->name;
    if (r->ref.nblocks > 1) {
        if (t->ndim < 1 || t->shape[0] % r->ref.nblocks) return -1;
        int64_t rows = t->shape[0] / r->ref.nblocks, rowbytes = (int64_t)zst_dtype_size(t->dtype);
        for (int d = 1; d < t->ndim; d++) rowbytes *= t->shape[d];
        r->v.ne[0] = rows;
        r->v.data = (const char *)t->data + (size_t)(r->ref.block * rows * rowbytes);
    }
    return 1;
}

int zw_source_find(zw_source *s, const char *canonical, zw_view *v) {
    resolved r;
    if (resolve(s, canonical, &r) != 1 || !r.float_ok) return 0;
    *v = r.v;
    return 1;
}

/* ---- loader state ------------------------------------------------------------ */

typedef struct zw_priv {
    uint8_t *used;           /* per source entry: bitmask of row blocks taken */
    uint8_t *nblk;           /* per source entry: blocks it was split into   */
    void **allocs;
    int n_allocs, cap_allocs;
    char **ignore;
    int n_ignore, cap_ignore;
} zw_priv;

static int lerr(zw_loader *L, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int lerr(zw_loader *L, int code, const char *fmt, ...) {
    char msg[ZERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return zerr_set(L->err, code, "%s: %s", L->component ? L->component : "weights", msg);
}

/* A backend call failed with rc; make sure L->err carries a message. */
static int be_fail(zw_loader *L, int rc, const char *what, const char *name) {
    zerr *be_e = L->be->err;
    if (be_e && be_e != L->err && be_e->code != ZE_OK)
        return lerr(L, rc, "%s '%s': %s", what, name, be_e->msg);
    if (L->err && L->err->code != ZE_OK && be_e == L->err)
        return zerr_prefix(L->err, "%s: %s '%s'", L->component ? L->component : "weights", what, name);
    return lerr(L, rc, "%s '%s' failed (%s)", what, name, zerr_name(rc));
}

int zw_loader_init(zw_loader *L, zbackend *be, zw_source *src, const char *component, zerr *err) {
    memset(L, 0, sizeof *L);
    L->be = be;
    L->err = err;
    L->src = src;
    L->component = component ? component : "weights";
    zw_priv *p = calloc(1, sizeof *p);
    if (!p) return zerr_set(err, ZE_NOMEM, "%s: out of memory", L->component);
    if (src) {
        p->used = calloc((size_t)src->n + 1, 1);
        p->nblk = calloc((size_t)src->n + 1, 1);
        if (!p->used || !p->nblk) {
            free(p->used);
            free(p->nblk);
            free(p);
            return zerr_set(err, ZE_NOMEM, "%s: out of memory", L->component);
        }
    }
    L->priv = p;
    return ZE_OK;
}

void zw_loader_free(zw_loader *L) {
    zw_priv *p = L->priv;
    if (!p) return;
    for (int i = 0; i < p->n_allocs; i++) L->be->vt->free(L->be, p->allocs[i]);
    for (int i = 0; i < p->n_ignore; i++) free(p->ignore[i]);
    free(p->allocs);
    free(p->ignore);
    free(p->used);
    free(p->nblk);
    free(p);
    L->priv = NULL;
}

static void mark_used(zw_loader *L, const resolved *r) {
    zw_priv *p = L->priv;
    if (!p || !p->used || r->entry < 0) return;
    p->used[r->entry] |= (uint8_t)(1u << r->ref.block);
    p->nblk[r->entry] = (uint8_t)r->ref.nblocks;
}

/* Allocate a backend tensor the loader owns. */
static int alloc_owned(zw_loader *L, zt *out, zt_dtype dt, int ndim, const int64_t *ne, const char *name) {
    zw_priv *p = L->priv;
    if (p->n_allocs == p->cap_allocs) {
        int cap = p->cap_allocs ? 2 * p->cap_allocs : 64;
        void **na = realloc(p->allocs, (size_t)cap * sizeof *na);
        if (!na) return lerr(L, ZE_NOMEM, "out of host memory");
        p->allocs = na;
        p->cap_allocs = cap;
    }
    int rc = zt_alloc(L->be, out, dt, ndim, ne);
    if (rc != ZE_OK || !out->data) {
        char sb[96];
        char what[160];
        snprintf(what, sizeof what, "allocating %s for", zt_describe(out, sb, sizeof sb));
        return be_fail(L, rc ? rc : ZE_NOMEM, what, name);
    }
    p->allocs[p->n_allocs++] = out->data;
    L->n_bytes += zt_nbytes(out);
    return ZE_OK;
}

static const char *shape_str(const int64_t *s, int nd, char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < nd && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

/* Look `name` up and check it is a float tensor. */
static int fetch(zw_loader *L, const char *name, resolved *r) {
    zw_source *s = L->src;
    int f = resolve(s, name, r);
    if (f == 0) {
        char how[ZNM_MAX_NAME + 64] = "";
        if (strcmp(r->ref.key, name))
            snprintf(how, sizeof how, "; looked for '%s', %s format", r->ref.key, znm_format_name(s->nm.fmt));
        return lerr(L, ZE_MODEL, "tensor '%s' not found in %s (%d tensors%s)", name, s->path, s->n, how);
    }
    char sb[96];
    if (f < 0)
        return lerr(L, ZE_MODEL, "tensor '%s' is row block %d of %d of '%s' %s in %s, whose rows do not split evenly",
                    name, r->ref.block, r->ref.nblocks, r->t->name, shape_str(r->t->shape, r->t->ndim, sb, sizeof sb),
                    r->v.file);
    if (!r->float_ok)
        return lerr(L, ZE_MODEL, "tensor '%s' in %s is %s; only F32, F16 and BF16 weights are supported", name,
                    r->v.file, zst_dtype_name(r->t->dtype));
    return ZE_OK;
}

static int shape_is(const zw_view *v, int nd, const int64_t *ne) {
    if (v->ndim != nd) return 0;
    for (int i = 0; i < nd; i++)
        if (v->ne[i] != ne[i]) return 0;
    return 1;
}

static int shape_error(zw_loader *L, const char *name, const resolved *r, const char *expected) {
    char sb[96], sb2[96], blk[ZNM_MAX_NAME + 160] = "";
    if (r->ref.nblocks > 1)
        snprintf(blk, sizeof blk, " (row block %d of %d of stored '%s' %s)", r->ref.block, r->ref.nblocks,
                 r->t->name, shape_str(r->t->shape, r->t->ndim, sb2, sizeof sb2));
    return lerr(L, ZE_MODEL, "tensor '%s' has the wrong shape: expected %s, found %s in %s%s", name, expected,
                shape_str(r->v.ne, r->v.ndim, sb, sizeof sb), r->v.file, blk);
}

static int aligned(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

/* Make *out [ndim, ne] from host data in dtype sd (already checked). */
static int place(zw_loader *L, zt *out, const void *data, zt_dtype sd, int ndim, const int64_t *ne, int may_alias,
                 const char *name) {
    zt_dtype dt = zbackend_weight_dtype(L->be, sd, ndim >= 2);
    memset(out, 0, sizeof *out);
    if (may_alias && L->be->is_host && dt == sd && aligned(data, zt_dtype_size(dt))) {
        out->data = (void *)data; /* zero copy: points into the read-only mapping */
        out->dtype = dt;
        out->ndim = ndim;
        for (int i = 0; i < ndim; i++) out->ne[i] = ne[i];
    } else {
        ZTRY(alloc_owned(L, out, dt, ndim, ne, name));
        int rc = zt_upload(L->be, out, data, sd);
        if (rc) return be_fail(L, rc, "uploading", name);
    }
    L->n_params += (uint64_t)zt_numel(out);
    return ZE_OK;
}

/* ---- random weights ---------------------------------------------------------- */

static inline uint64_t mix64(uint64_t z) {
    z ^= z >> 30;
    z *= 0xbf58476d1ce4e5b9ull;
    z ^= z >> 27;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z;
}

static uint64_t name_key(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) h = (h ^ *c) * 0x100000001b3ull;
    return mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ h);
}

/* Uniform in [-1, 1): element i takes one 24-bit half of the hash of pair i/2. */
static inline uint64_t pair_hash(uint64_t key, uint64_t pair) { return mix64(key + (pair + 1) * 0x9e3779b97f4a7c15ull); }
static inline float u24(uint64_t bits) { return (float)((int32_t)(bits & 0xffffff) - (1 << 23)) * (1.0f / (float)(1 << 23)); }
static inline float rnd(uint64_t key, uint64_t i) {
    uint64_t u = pair_hash(key, i >> 1);
    return u24((i & 1) ? u >> 8 : u >> 40);
}

static inline void put(void *dst, zt_dtype dt, size_t j, float v) {
    if (dt == ZT_F32) ((float *)dst)[j] = v;
    else if (dt == ZT_BF16) ((uint16_t *)dst)[j] = zf32_to_bf16(v);
    else ((uint16_t *)dst)[j] = zf32_to_f16(v);
}

static void gen_range(void *dst, zt_dtype dt, uint64_t key, uint64_t i0, size_t m, float a, float b) {
    size_t j = 0;
    if ((i0 & 1) && m) put(dst, dt, j++, a * rnd(key, i0) + b);
    for (; j + 1 < m; j += 2) { /* i0 + j even: both halves of one hash */
        uint64_t u = pair_hash(key, (i0 + j) >> 1);
        put(dst, dt, j, a * u24(u >> 40) + b);
        put(dst, dt, j + 1, a * u24(u >> 8) + b);
    }
    if (j < m) put(dst, dt, j, a * rnd(key, i0 + j) + b);
}

#define GEN_CHUNK ((size_t)1 << 16)

/* Fill the allocated tensor t with the random values of `name`. */
static int gen_fill(zw_loader *L, zt *t, const char *name, int64_t fan_in) {
    size_t n = (size_t)zt_numel(t), es = zt_dtype_size(t->dtype);
    uint64_t key = name_key(L->seed, name);
    float a, b = 0.0f;
    const float s3 = 1.7320508075688772f; /* uniform[-1,1) * sqrt(3) has unit std */
    if (zt_rows(t) > 1) a = s3 / sqrtf((float)(fan_in > 0 ? fan_in : 1));
    else if (strstr(name, "norm")) a = 0.1f * s3, b = 1.0f;
    else a = 0.02f * s3;
    long nchunks = (long)((n + GEN_CHUNK - 1) / GEN_CHUNK);
    if (L->be->is_host) {
        char *base = t->data;
#pragma omp parallel for schedule(static)
        for (long c = 0; c < nchunks; c++) {
            size_t i0 = (size_t)c * GEN_CHUNK, m = n - i0 < GEN_CHUNK ? n - i0 : GEN_CHUNK;
            gen_range(base + i0 * es, t->dtype, key, i0, m, a, b);
        }
        return ZE_OK;
    }
    /* device: generate super-chunks on the host, upload each */
    size_t super = (size_t)64 * GEN_CHUNK;
    char *tmp = malloc((n < super ? n : super) * es + 1);
    if (!tmp) return lerr(L, ZE_NOMEM, "out of host memory generating '%s'", name);
    int rc = ZE_OK;
    for (size_t s0 = 0; s0 < n && rc == ZE_OK; s0 += super) {
        size_t sm = n - s0 < super ? n - s0 : super;
        long nc = (long)((sm + GEN_CHUNK - 1) / GEN_CHUNK);
#pragma omp parallel for schedule(static)
        for (long c = 0; c < nc; c++) {
            size_t i0 = (size_t)c * GEN_CHUNK, m = sm - i0 < GEN_CHUNK ? sm - i0 : GEN_CHUNK;
            gen_range(tmp + i0 * es, t->dtype, key, s0 + i0, m, a, b);
        }
        rc = L->be->vt->upload(L->be, (char *)t->data + s0 * es, tmp, sm * es);
    }
    free(tmp);
    if (rc) return be_fail(L, rc, "uploading", name);
    return ZE_OK;
}

static int gen_random(zw_loader *L, zt *out, const char *name, int ndim, const int64_t *ne, int64_t fan_in) {
    zt_dtype dt = zbackend_weight_dtype(L->be, ZT_BF16, ndim >= 2);
    ZTRY(alloc_owned(L, out, dt, ndim, ne, name));
    ZTRY(gen_fill(L, out, name, fan_in));
    L->n_params += (uint64_t)zt_numel(out);
    return ZE_OK;
}

/* ---- public loading calls ---------------------------------------------------- */

static int check_args(zw_loader *L, const char *name, int ndim, const int64_t *ne) {
    if (!L->priv) return zerr_set(L->err, ZE_INVALID, "weights: loader not initialised");
    if (!name || ndim < 1 || ndim > ZT_MAXDIM) return lerr(L, ZE_INVALID, "bad request for '%s'", name ? name : "?");
    for (int i = 0; i < ndim; i++)
        if (ne[i] <= 0) return lerr(L, ZE_INVALID, "bad requested shape for '%s'", name);
    return ZE_OK;
}

int zw_load(zw_loader *L, zt *out, const char *name, int ndim, const int64_t *ne) {
    memset(out, 0, sizeof *out);
    ZTRY(check_args(L, name, ndim, ne));
    if (!L->src) return gen_random(L, out, name, ndim, ne, ne[ndim - 1]);
    resolved r;
    ZTRY(fetch(L, name, &r));
    if (!shape_is(&r.v, ndim, ne)) {
        char sb[96];
        return shape_error(L, name, &r, shape_str(ne, ndim, sb, sizeof sb));
    }
    ZTRY(place(L, out, r.v.data, r.v.dtype, ndim, ne, 1, name));
    mark_used(L, &r);
    return ZE_OK;
}

int zw_load1(zw_loader *L, zt *out, const char *name, int64_t n0) { return zw_load(L, out, name, 1, &n0); }

int zw_load2(zw_loader *L, zt *out, const char *name, int64_t n0, int64_t n1) {
    int64_t ne[2] = {n0, n1};
    return zw_load(L, out, name, 2, ne);
}

int zw_load_cat(zw_loader *L, zt *out, const char *const *names, int n, const int64_t *rows, int64_t cols) {
    memset(out, 0, sizeof *out);
    if (n < 1) return lerr(L, ZE_INVALID, "zw_load_cat with no tensors");
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        int64_t ne[2] = {rows[i], cols};
        ZTRY(check_args(L, names[i], 2, ne));
        total += rows[i];
    }
    int64_t ne[2] = {total, cols};
    if (!L->src) {
        zt_dtype dt = zbackend_weight_dtype(L->be, ZT_BF16, 1);
        ZTRY(alloc_owned(L, out, dt, 2, ne, names[0]));
        for (int64_t i = 0, r0 = 0; i < n; r0 += rows[i], i++) {
            zt v = zt_rows_view(out, r0, rows[i]);
            ZTRY(gen_fill(L, &v, names[i], cols));
        }
        L->n_params += (uint64_t)zt_numel(out);
        return ZE_OK;
    }
    resolved *r = calloc((size_t)n, sizeof *r);
    if (!r) return lerr(L, ZE_NOMEM, "out of host memory");
    int rc = ZE_OK;
    for (int i = 0; i < n && rc == ZE_OK; i++) {
        int64_t nei[4] = {rows[i], cols, 1, 1}; /* a 1x1 conv is a matrix too (LDM attention) */
        rc = fetch(L, names[i], &r[i]);
        if (rc == ZE_OK && !shape_is(&r[i].v, 2, nei) && !shape_is(&r[i].v, 4, nei)) {
            char sb[96], exp[200];
            snprintf(exp, sizeof exp, "%s or [%lld, %lld, 1, 1]", shape_str(nei, 2, sb, sizeof sb), (long long)rows[i],
                     (long long)cols);
            rc = shape_error(L, names[i], &r[i], exp);
        }
    }
    if (rc) goto done;
    zt_dtype dt = zbackend_weight_dtype(L->be, r[0].v.dtype, 1);
    /* zero copy when the blocks already lie back to back (ComfyUI's fused qkv) */
    int contiguous = 1;
    for (int i = 0; i < n; i++) {
        if (r[i].v.dtype != dt) contiguous = 0;
        if (i && (const char *)r[i].v.data !=
                     (const char *)r[i - 1].v.data + (size_t)(rows[i - 1] * cols) * zt_dtype_size(dt))
            contiguous = 0;
    }
    if (contiguous) {
        rc = place(L, out, r[0].v.data, dt, 2, ne, 1, names[0]);
    } else {
        rc = alloc_owned(L, out, dt, 2, ne, names[0]);
        for (int64_t i = 0, r0 = 0; i < n && rc == ZE_OK; r0 += rows[i], i++) {
            zt v = zt_rows_view(out, r0, rows[i]);
            rc = zt_upload(L->be, &v, r[i].v.data, r[i].v.dtype);
            if (rc) rc = be_fail(L, rc, "uploading", names[i]);
        }
        if (rc == ZE_OK) L->n_params += (uint64_t)zt_numel(out);
    }
    if (rc == ZE_OK)
        for (int i = 0; i < n; i++) mark_used(L, &r[i]);
done:
    free(r);
    return rc;
}

/* OIHW -> OHWI of es-byte elements. */
static void permute_oihw(void *dst, const void *src, size_t es, int64_t co, int64_t ci, int64_t kh, int64_t kw) {
    int64_t hw = kh * kw;
    for (int64_t o = 0; o < co; o++)
        for (int64_t i = 0; i < ci; i++)
            for (int64_t k = 0; k < hw; k++) {
                size_t s = (size_t)((o * ci + i) * hw + k), d = (size_t)((o * hw + k) * ci + i);
                if (es == 4) ((uint32_t *)dst)[d] = ((const uint32_t *)src)[s];
                else ((uint16_t *)dst)[d] = ((const uint16_t *)src)[s];
            }
}

int zw_load_conv(zw_loader *L, zt *out, const char *name, int64_t co, int64_t ci, int kh, int kw) {
    memset(out, 0, sizeof *out);
    int64_t ne4[4] = {co, ci, kh, kw}, ne2[2] = {co, (int64_t)kh * kw * ci};
    ZTRY(check_args(L, name, 4, ne4));
    if (!L->src) return gen_random(L, out, name, 2, ne2, ci * kh * kw);
    resolved r;
    ZTRY(fetch(L, name, &r));
    int one = kh == 1 && kw == 1;
    int64_t lin[2] = {co, ci};
    if (!shape_is(&r.v, 4, ne4) && !(one && shape_is(&r.v, 2, lin))) {
        char sb[96], exp[200];
        shape_str(ne4, 4, sb, sizeof sb);
        if (one) snprintf(exp, sizeof exp, "[%lld, %lld] or %s", (long long)co, (long long)ci, sb);
        else snprintf(exp, sizeof exp, "%s", sb);
        return shape_error(L, name, &r, exp);
    }
    if (one || ci == 1) { /* OIHW and OHWI coincide */
        ZTRY(place(L, out, r.v.data, r.v.dtype, 2, ne2, 1, name));
    } else {
        size_t es = zt_dtype_size(r.v.dtype);
        void *tmp = malloc((size_t)(co * ci * kh * kw) * es);
        if (!tmp) return lerr(L, ZE_NOMEM, "out of host memory permuting '%s'", name);
        permute_oihw(tmp, r.v.data, es, co, ci, kh, kw);
        int rc = place(L, out, tmp, r.v.dtype, 2, ne2, 0, name);
        free(tmp);
        ZTRY(rc);
    }
    mark_used(L, &r);
    return ZE_OK;
}

int zw_load_linear_or_conv1x1(zw_loader *L, zt *out, const char *name, int64_t co, int64_t ci) {
    return zw_load_conv(L, out, name, co, ci, 1, 1);
}

void zw_ignore_prefix(zw_loader *L, const char *prefix) {
    zw_priv *p = L->priv;
    if (!p || !prefix) return;
    if (p->n_ignore == p->cap_ignore) {
        int cap = p->cap_ignore ? 2 * p->cap_ignore : 8;
        char **ni = realloc(p->ignore, (size_t)cap * sizeof *ni);
        if (!ni) return;
        p->ignore = ni;
        p->cap_ignore = cap;
    }
    char *s = strdup(prefix);
    if (s) p->ignore[p->n_ignore++] = s;
}

int zw_check_all_used(zw_loader *L) {
    zw_priv *p = L->priv;
    if (!p) return zerr_set(L->err, ZE_INVALID, "weights: loader not initialised");
    zw_source *s = L->src;
    if (!s) return ZE_OK;
    char list[600] = "";
    int n_unused = 0, listed = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->e[i].ignored) continue;
        int nb = p->nblk[i] ? p->nblk[i] : 1;
        if (p->used[i] == (uint8_t)((1u << nb) - 1)) continue;
        char canon[ZNM_MAX_NAME];
        znm_unmap(&s->nm, s->e[i].key, canon, sizeof canon);
        int skip = 0;
        for (int k = 0; k < p->n_ignore && !skip; k++) {
            size_t pl = strlen(p->ignore[k]);
            skip = !strncmp(canon, p->ignore[k], pl) || !strncmp(s->e[i].key, p->ignore[k], pl);
        }
        if (skip) continue;
        n_unused++;
        if (listed < 4) {
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s'%s'%s", listed ? ", " : "", s->e[i].t->name,
                     p->used[i] ? " (partly)" : "");
            listed++;
        }
    }
    if (!n_unused) return ZE_OK;
    return lerr(L, ZE_MODEL, "%d tensor%s in %s %s not used (checkpoint does not match its config?): %s%s", n_unused,
                n_unused == 1 ? "" : "s", s->path, n_unused == 1 ? "was" : "were", list,
                n_unused > listed ? ", ..." : "");
}
