/* safetensors.c - mmap'd safetensors reader with full header validation and
 * sharded sets via *.safetensors.index.json (see safetensors.h). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[ZST_NDTYPE] = {
    [ZST_F64] = {"F64", 8},   [ZST_F32] = {"F32", 4},         [ZST_F16] = {"F16", 2},
    [ZST_BF16] = {"BF16", 2}, [ZST_I64] = {"I64", 8},         [ZST_I32] = {"I32", 4},
    [ZST_I16] = {"I16", 2},   [ZST_I8] = {"I8", 1},           [ZST_U8] = {"U8", 1},
    [ZST_BOOL] = {"BOOL", 1}, [ZST_F8_E4M3] = {"F8_E4M3", 1}, [ZST_F8_E5M2] = {"F8_E5M2", 1},
};

size_t zst_dtype_size(zst_dtype t) { return (unsigned)t < ZST_NDTYPE ? dtypes[t].size : 0; }
const char *zst_dtype_name(zst_dtype t) { return (unsigned)t < ZST_NDTYPE ? dtypes[t].name : "?"; }

static int dtype_parse(const char *s, zst_dtype *out) {
    for (int i = 0; i < ZST_NDTYPE; i++)
        if (!strcmp(s, dtypes[i].name)) {
            *out = (zst_dtype)i;
            return 1;
        }
    return 0;
}

static const char *json_kind(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* "[a, b, c]" for messages. */
static const char *shape_str(const int64_t *s, int nd, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < nd && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

void zst_close(zst_file *f) {
    if (!f) return;
    if (f->mapped && f->buf) munmap((void *)f->buf, f->len);
    if (f->meta)
        for (int i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    free(f->t);
    free(f->strings);
    free(f->path);
    free(f);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const zst_tensor *)a)->name, ((const zst_tensor *)b)->name);
}

static int cmp_begin(const void *a, const void *b) {
    const zst_tensor *x = *(const zst_tensor *const *)a, *y = *(const zst_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Parse one tensor entry `val` named `key` into t (name set by the caller). */
static int parse_entry(zst_file *f, const char *key, json_t *val, uint64_t data_len, zst_tensor *t, zerr *e) {
    const char *P = f->path;
    if (!json_is_object(val))
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': header entry is %s, expected an object", P, key,
                        json_kind(val));
    json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"),
           *jo = json_object_get(val, "data_offsets");
    if (!jd || !js || !jo)
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': header entry lacks \"%s\"", P, key,
                        !jd ? "dtype" : !js ? "shape" : "data_offsets");
    if (!json_is_string(jd))
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': dtype is %s, expected a string", P, key, json_kind(jd));
    if (!dtype_parse(json_string_value(jd), &t->dtype))
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", P, key, json_string_value(jd));
    if (!json_is_array(js))
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': shape is %s, expected an array", P, key, json_kind(js));
    size_t nd = json_array_size(js);
    if (nd > ZST_MAXDIM)
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s' has rank %zu; at most %d dimensions are supported", P, key,
                        nd, ZST_MAXDIM);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", P, key, i);
        t->shape[i] = json_integer_value(d);
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel)) overflow = 1;
    }
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': data_offsets must be an array of 2 integers", P, key);
    json_t *b0 = json_array_get(jo, 0), *b1 = json_array_get(jo, 1);
    if (!json_is_integer(b0) || !json_is_integer(b1) || json_integer_value(b0) < 0 || json_integer_value(b1) < 0)
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': data_offsets must be non-negative integers", P, key);
    t->begin = (uint64_t)json_integer_value(b0);
    t->end = (uint64_t)json_integer_value(b1);
    if (t->begin > t->end)
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] have begin > end", P, key,
                        (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_len)
        return zerr_set(e, ZE_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] are outside the data section (%llu bytes; "
                        "file truncated?)",
                        P, key, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)data_len);
    uint64_t need;
    char sb[128];
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)zst_dtype_size(t->dtype), &need))
        return zerr_set(e, ZE_FORMAT, "%s: tensor '%s': shape %s is too large", P, key,
                        shape_str(t->shape, t->ndim, sb, sizeof sb));
    if (need != t->end - t->begin)
        return zerr_set(e, ZE_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s %s needs %llu", P,
                        key, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)(t->end - t->begin), shape_str(t->shape, t->ndim, sb, sizeof sb),
                        zst_dtype_name(t->dtype), (unsigned long long)need);
    t->data = f->buf + f->data_off + t->begin;
    return ZE_OK;
}

static int parse_metadata(zst_file *f, json_t *meta, zerr *e) {
    if (!json_is_object(meta))
        return zerr_set(e, ZE_FORMAT, "%s: __metadata__ is %s, expected an object of strings", f->path,
                        json_kind(meta));
    size_t n = json_object_size(meta);
    f->meta = calloc(2 * n + 1, sizeof *f->meta);
    if (!f->meta) return zerr_set(e, ZE_NOMEM, "%s: out of memory", f->path);
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v))
            return zerr_set(e, ZE_FORMAT, "%s: __metadata__ value of '%s' is %s, expected a string", f->path, k,
                            json_kind(v));
        f->meta[2 * f->n_meta] = strdup(k);
        f->meta[2 * f->n_meta + 1] = strdup(json_string_value(v));
        f->n_meta++;
        if (!f->meta[2 * f->n_meta - 2] || !f->meta[2 * f->n_meta - 1])
            return zerr_set(e, ZE_NOMEM, "%s: out of memory", f->path);
    }
    return ZE_OK;
}

/* Validate f->buf / f->len (set by the caller) and fill the tensor table. */
static int parse_header(zst_file *f, zerr *e) {
    const char *P = f->path;
    if (f->len < 8)
        return zerr_set(e, ZE_FORMAT,
                        "%s: truncated: %zu bytes, but a safetensors file starts with an 8-byte header length", P,
                        f->len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | f->buf[i];
    if (hl > f->len - 8)
        return zerr_set(e, ZE_FORMAT, "%s: header length %llu extends beyond the end of the file (%zu bytes)", P,
                        (unsigned long long)hl, f->len);
    if (hl < 2) return zerr_set(e, ZE_FORMAT, "%s: header length %llu is too small", P, (unsigned long long)hl);
    if (hl > ZST_MAX_HEADER)
        return zerr_set(e, ZE_FORMAT, "%s: header length %llu exceeds the %u-byte limit", P,
                        (unsigned long long)hl, ZST_MAX_HEADER);
    if (f->buf[8] != '{')
        return zerr_set(e, ZE_FORMAT, "%s: header does not start with '{' (not a safetensors file?)", P);
    f->data_off = 8 + (size_t)hl;
    uint64_t data_len = f->len - f->data_off;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->buf + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return zerr_set(e, ZE_FORMAT, "%s: malformed header JSON (line %d, column %d): %s", P, jerr.line,
                        jerr.column, jerr.text);
    int rc = ZE_OK;
    if (!json_is_object(root)) {
        rc = zerr_set(e, ZE_FORMAT, "%s: header JSON is %s, expected an object", P, json_kind(root));
        goto done;
    }
    size_t n = json_object_size(root), names = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) names += strlen(key) + 1;
    f->t = calloc(n ? n : 1, sizeof *f->t);
    f->strings = malloc(names ? names : 1);
    if (!f->t || !f->strings) {
        rc = zerr_set(e, ZE_NOMEM, "%s: out of memory reading the header", P);
        goto done;
    }
    char *sp = f->strings;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if ((rc = parse_metadata(f, val, e))) goto done;
            continue;
        }
        zst_tensor *t = &f->t[f->n];
        size_t kl = strlen(key) + 1;
        memcpy(sp, key, kl);
        t->name = sp;
        sp += kl;
        if ((rc = parse_entry(f, key, val, data_len, t, e))) goto done;
        f->n++;
    }
    /* no two tensors share bytes */
    if (f->n > 1) {
        const zst_tensor **by = malloc((size_t)f->n * sizeof *by);
        if (!by) {
            rc = zerr_set(e, ZE_NOMEM, "%s: out of memory", P);
            goto done;
        }
        int m = 0;
        for (int i = 0; i < f->n; i++)
            if (f->t[i].end > f->t[i].begin) by[m++] = &f->t[i];
        qsort(by, (size_t)m, sizeof *by, cmp_begin);
        for (int i = 1; i < m; i++)
            if (by[i]->begin < by[i - 1]->end) {
                rc = zerr_set(e, ZE_FORMAT, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", P,
                              by[i - 1]->name, (unsigned long long)by[i - 1]->begin,
                              (unsigned long long)by[i - 1]->end, by[i]->name, (unsigned long long)by[i]->begin,
                              (unsigned long long)by[i]->end);
                break;
            }
        free(by);
        if (rc) goto done;
    }
    qsort(f->t, (size_t)f->n, sizeof *f->t, cmp_name);
done:
    json_decref(root);
    return rc;
}

int zst_parse(zst_file **out, const void *buf, size_t len, const char *label, zerr *e) {
    *out = NULL;
    zst_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(label ? label : "<memory>"))) {
        free(f);
        return zerr_set(e, ZE_NOMEM, "out of memory");
    }
    f->buf = buf;
    f->len = len;
    int rc = parse_header(f, e);
    if (rc) {
        zst_close(f);
        return rc;
    }
    *out = f;
    return ZE_OK;
}

int zst_open(zst_file **out, const char *path, zerr *e) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return zerr_set(e, ZE_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return zerr_set(e, ZE_IO, "%s is not a regular file", path);
    }
    zst_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        close(fd);
        return zerr_set(e, ZE_NOMEM, "out of memory");
    }
    f->len = (size_t)st.st_size;
    if (f->len >= 8) {
        void *m = mmap(NULL, f->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int err = errno;
            close(fd);
            zst_close(f);
            return zerr_set(e, ZE_IO, "cannot mmap %s: %s", path, strerror(err));
        }
        f->buf = m;
        f->mapped = 1;
    } else {
        static const uint8_t empty[8];
        f->buf = empty; /* parse_header reports the truncation */
    }
    close(fd);
    int rc = parse_header(f, e);
    if (rc) {
        zst_close(f);
        return rc;
    }
    *out = f;
    return ZE_OK;
}

const zst_tensor *zst_find(const zst_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(f->t[mid].name, name);
        if (!c) return &f->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char *zst_meta(const zst_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[2 * i], key)) return f->meta[2 * i + 1];
    return NULL;
}

/* ---- index json / sharded sets ----------------------------------------------- */

void zst_index_free(char **names, char **shards, int n) {
    for (int i = 0; i < n; i++) {
        if (names) free(names[i]);
        if (shards) free(shards[i]);
    }
    free(names);
    free(shards);
}

int zst_index_parse(const char *json, size_t len, const char *label, char ***names_out, char ***shards_out,
                    int *n_out, zerr *e) {
    *names_out = *shards_out = NULL;
    *n_out = 0;
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return zerr_set(e, ZE_FORMAT, "%s: malformed JSON (line %d, column %d): %s", label, jerr.line, jerr.column,
                        jerr.text);
    int rc = ZE_OK, n = 0;
    char **names = NULL, **shards = NULL;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!wm || !json_is_object(wm)) {
        rc = zerr_set(e, ZE_FORMAT, "%s: no \"weight_map\" object (not a safetensors index?)", label);
        goto done;
    }
    size_t cnt = json_object_size(wm);
    names = calloc(cnt + 1, sizeof *names);
    shards = calloc(cnt + 1, sizeof *shards);
    if (!names || !shards) {
        rc = zerr_set(e, ZE_NOMEM, "%s: out of memory", label);
        goto done;
    }
    const char *k;
    json_t *v;
    json_object_foreach(wm, k, v) {
        if (!json_is_string(v)) {
            rc = zerr_set(e, ZE_FORMAT, "%s: weight_map['%s'] is %s, expected a shard file name", label, k,
                          json_kind(v));
            goto done;
        }
        const char *s = json_string_value(v);
        if (!*s || s[0] == '/' || strstr(s, "..")) {
            rc = zerr_set(e, ZE_FORMAT, "%s: weight_map['%s'] = '%s' is not a plain shard file name", label, k, s);
            goto done;
        }
        names[n] = strdup(k);
        shards[n] = strdup(s);
        n++;
        if (!names[n - 1] || !shards[n - 1]) {
            rc = zerr_set(e, ZE_NOMEM, "%s: out of memory", label);
            goto done;
        }
    }
done:
    json_decref(root);
    if (rc) {
        zst_index_free(names, shards, n);
        return rc;
    }
    *names_out = names;
    *shards_out = shards;
    *n_out = n;
    return ZE_OK;
}

void zst_set_close(zst_set *s) {
    if (!s) return;
    for (int i = 0; i < s->nfiles; i++) zst_close(s->files[i]);
    free(s->files);
    free(s->all);
    free(s->path);
    free(s);
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const zst_entry *)a)->t->name, ((const zst_entry *)b)->t->name);
}

const zst_entry *zst_set_find(const zst_set *s, const char *name) {
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(s->all[mid].t->name, name);
        if (!c) return &s->all[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int read_small_file(const char *path, char **buf, size_t *len, zerr *e) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return zerr_set(e, ZE_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, fp);
        if (n < cap) break;
        if (cap >= (256u << 20)) {
            free(b);
            fclose(fp);
            return zerr_set(e, ZE_FORMAT, "%s: larger than 256 MiB (not an index json?)", path);
        }
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (!b) return zerr_set(e, ZE_NOMEM, "out of memory reading %s", path);
    if (bad) {
        free(b);
        return zerr_set(e, ZE_IO, "cannot read %s", path);
    }
    *buf = b;
    *len = n;
    return ZE_OK;
}

/* Fill s->all from s->files, sort, reject names present in two shards. */
static int build_table(zst_set *s, zerr *e) {
    size_t total = 0;
    for (int i = 0; i < s->nfiles; i++) total += (size_t)s->files[i]->n;
    s->all = calloc(total ? total : 1, sizeof *s->all);
    if (!s->all) return zerr_set(e, ZE_NOMEM, "%s: out of memory", s->path);
    for (int i = 0; i < s->nfiles; i++)
        for (int j = 0; j < s->files[i]->n; j++) {
            s->all[s->n].t = &s->files[i]->t[j];
            s->all[s->n].file = i;
            s->n++;
        }
    qsort(s->all, (size_t)s->n, sizeof *s->all, cmp_entry);
    for (int i = 1; i < s->n; i++)
        if (!strcmp(s->all[i].t->name, s->all[i - 1].t->name))
            return zerr_set(e, ZE_FORMAT, "%s: tensor '%s' is stored in both %s and %s", s->path, s->all[i].t->name,
                            s->files[s->all[i - 1].file]->path, s->files[s->all[i].file]->path);
    return ZE_OK;
}

static int open_index(zst_set *s, zerr *e) {
    char *json = NULL;
    size_t len = 0;
    ZTRY(read_small_file(s->path, &json, &len, e));
    char **names = NULL, **shards = NULL;
    int n = 0;
    int rc = zst_index_parse(json, len, s->path, &names, &shards, &n, e);
    free(json);
    if (rc) return rc;
    if (n == 0) {
        zst_index_free(names, shards, n);
        return zerr_set(e, ZE_FORMAT, "%s: weight_map is empty", s->path);
    }
    /* directory of the index */
    const char *slash = strrchr(s->path, '/');
    size_t dl = slash ? (size_t)(slash - s->path + 1) : 0;
    int *shard_of = calloc((size_t)n, sizeof *shard_of);
    s->files = calloc((size_t)n, sizeof *s->files);
    char **fnames = calloc((size_t)n, sizeof *fnames);
    if (!shard_of || !s->files || !fnames) {
        rc = zerr_set(e, ZE_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        int f = 0;
        while (f < s->nfiles && strcmp(fnames[f], shards[i])) f++;
        if (f == s->nfiles) {
            size_t pl = dl + strlen(shards[i]) + 1;
            char *p = malloc(pl);
            if (!p) {
                rc = zerr_set(e, ZE_NOMEM, "out of memory");
                goto done;
            }
            memcpy(p, s->path, dl);
            strcpy(p + dl, shards[i]);
            zst_file *zf = NULL;
            rc = zst_open(&zf, p, e);
            free(p);
            if (rc) {
                zerr_prefix(e, "shard '%s' listed in %s: ", shards[i], s->path);
                goto done;
            }
            fnames[s->nfiles] = shards[i];
            s->files[s->nfiles++] = zf;
        }
        shard_of[i] = f;
    }
    for (int i = 0; i < n; i++)
        if (!zst_find(s->files[shard_of[i]], names[i])) {
            rc = zerr_set(e, ZE_FORMAT, "%s maps tensor '%s' to %s, but that shard has no such tensor (%d tensors)",
                          s->path, names[i], s->files[shard_of[i]]->path, s->files[shard_of[i]]->n);
            goto done;
        }
    rc = build_table(s, e);
done:
    free(fnames);
    free(shard_of);
    zst_index_free(names, shards, n);
    return rc;
}

int zst_set_open(zst_set **out, const char *path, zerr *e) {
    *out = NULL;
    zst_set *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return zerr_set(e, ZE_NOMEM, "out of memory");
    }
    int rc;
    if (ends_with(path, ".json")) {
        rc = open_index(s, e);
    } else {
        s->files = calloc(1, sizeof *s->files);
        if (!s->files) rc = zerr_set(e, ZE_NOMEM, "out of memory");
        else if (!(rc = zst_open(&s->files[0], path, e))) {
            s->nfiles = 1;
            rc = build_table(s, e);
        }
    }
    if (rc) {
        zst_set_close(s);
        return rc;
    }
    *out = s;
    return ZE_OK;
}
