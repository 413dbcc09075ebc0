/* npy.c - NumPy .npy reader/writer (see npy.h). */
#include "npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

size_t npy_elem_size(npy_dtype t) {
    switch (t) {
    case NPY_F32: return 4;
    case NPY_F16: return 2;
    case NPY_I32: return 4;
    case NPY_I64: return 8;
    case NPY_U8: return 1;
    }
    return 0;
}

int64_t npy_numel(const npy_array *a) {
    int64_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

static const char *descr_of(npy_dtype t) {
    switch (t) {
    case NPY_F32: return "<f4";
    case NPY_F16: return "<f2";
    case NPY_I32: return "<i4";
    case NPY_I64: return "<i8";
    case NPY_U8: return "|u1";
    }
    return "?";
}

/* Find the value text after 'key': in the header dict. */
static const char *find_key(const char *h, size_t n, const char *key) {
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 2 < n; i++) {
        if ((h[i] == '\'' || h[i] == '"') && !memcmp(h + i + 1, key, kl) && h[i + 1 + kl] == h[i]) {
            const char *p = h + i + kl + 2;
            while (p < h + n && (*p == ' ' || *p == ':')) p++;
            return p < h + n ? p : NULL;
        }
    }
    return NULL;
}

int npy_parse(const void *buf, size_t len, npy_array *out, zerr *e) {
    memset(out, 0, sizeof *out);
    const unsigned char *b = buf;
    if (len < 10 || memcmp(b, "\x93NUMPY", 6)) return zerr_set(e, ZE_FORMAT, "not a .npy file (bad magic)");
    int major = b[6];
    size_t hl, off;
    if (major == 1) {
        hl = (size_t)b[8] | ((size_t)b[9] << 8);
        off = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) return zerr_set(e, ZE_FORMAT, ".npy header truncated");
        hl = (size_t)b[8] | ((size_t)b[9] << 8) | ((size_t)b[10] << 16) | ((size_t)b[11] << 24);
        off = 12;
    } else {
        return zerr_set(e, ZE_FORMAT, "unsupported .npy version %d", major);
    }
    if (hl > len - off) return zerr_set(e, ZE_FORMAT, ".npy header length %zu beyond the file (%zu bytes)", hl, len);
    const char *h = (const char *)b + off;
    const char *d = find_key(h, hl, "descr");
    const char *f = find_key(h, hl, "fortran_order");
    const char *s = find_key(h, hl, "shape");
    if (!d || !f || !s) return zerr_set(e, ZE_FORMAT, ".npy header lacks descr/fortran_order/shape");
    static const struct {
        const char *txt;
        npy_dtype t;
    } kinds[] = {{"<f4", NPY_F32}, {"<f2", NPY_F16}, {"<i4", NPY_I32}, {"<i8", NPY_I64}, {"|u1", NPY_U8}};
    int found = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if ((size_t)(h + hl - d) > 4 && (d[0] == '\'' || d[0] == '"') && !memcmp(d + 1, kinds[i].txt, 3) &&
            d[4] == d[0]) {
            out->dtype = kinds[i].t;
            found = 1;
        }
    }
    if (!found) return zerr_set(e, ZE_FORMAT, "unsupported .npy dtype (need <f4, <f2, <i4, <i8 or |u1)");
    if ((size_t)(h + hl - f) < 5 || memcmp(f, "False", 5))
        return zerr_set(e, ZE_FORMAT, ".npy in Fortran order is not supported");
    if (*s != '(') return zerr_set(e, ZE_FORMAT, "bad .npy shape");
    const char *p = s + 1, *end = h + hl;
    int nd = 0;
    int64_t numel = 1;
    while (p < end && *p != ')') {
        while (p < end && (*p == ' ' || *p == ',')) p++;
        if (p < end && *p == ')') break;
        if (p >= end || *p < '0' || *p > '9') return zerr_set(e, ZE_FORMAT, "bad .npy shape");
        int64_t v = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (v > (INT64_C(1) << 40)) return zerr_set(e, ZE_FORMAT, ".npy dimension too large");
            v = v * 10 + (*p++ - '0');
        }
        if (nd >= NPY_MAXDIM) return zerr_set(e, ZE_FORMAT, ".npy has more than %d dimensions", NPY_MAXDIM);
        out->shape[nd++] = v;
        if (v && numel > (INT64_C(1) << 40) / v) return zerr_set(e, ZE_FORMAT, ".npy too large");
        numel *= v;
    }
    if (p >= end) return zerr_set(e, ZE_FORMAT, "bad .npy shape");
    out->ndim = nd;
    size_t bytes = (size_t)numel * npy_elem_size(out->dtype);
    if (len - off - hl != bytes)
        return zerr_set(e, ZE_FORMAT, ".npy data is %zu bytes, shape needs %zu", len - off - hl, bytes);
    out->data = malloc(bytes ? bytes : 1);
    if (!out->data) return zerr_set(e, ZE_NOMEM, "out of memory reading .npy");
    memcpy(out->data, b + off + hl, bytes);
    return ZE_OK;
}

int npy_read(const char *path, npy_array *out, zerr *e) {
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "rb");
    if (!fp) return zerr_set(e, ZE_IO, "cannot open %s: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END)) {
        fclose(fp);
        return zerr_set(e, ZE_IO, "cannot seek %s", path);
    }
    long n = ftell(fp);
    rewind(fp);
    if (n < 0) {
        fclose(fp);
        return zerr_set(e, ZE_IO, "cannot size %s", path);
    }
    void *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(fp);
        return zerr_set(e, ZE_NOMEM, "out of memory reading %s", path);
    }
    size_t got = fread(buf, 1, (size_t)n, fp);
    fclose(fp);
    if (got != (size_t)n) {
        free(buf);
        return zerr_set(e, ZE_IO, "short read on %s", path);
    }
    int rc = npy_parse(buf, (size_t)n, out, e);
    free(buf);
    if (rc) zerr_prefix(e, "%s", path);
    return rc;
}

int npy_write(const char *path, npy_dtype dtype, int ndim, const int64_t *shape, const void *data, zerr *e) {
    char hdr[512];
    int o = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr_of(dtype));
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        o += snprintf(hdr + o, sizeof hdr - (size_t)o, "%lld%s", (long long)shape[i], ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        numel *= shape[i];
    }
    o += snprintf(hdr + o, sizeof hdr - (size_t)o, "), }");
    /* pad so that 10 + header length is a multiple of 64, ending in '\n' */
    int total = 10 + o + 1;
    int pad = (64 - total % 64) % 64;
    for (int i = 0; i < pad; i++) hdr[o++] = ' ';
    hdr[o++] = '\n';
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return zerr_set(e, ZE_IO, "cannot write %s: %s", path, strerror(errno));
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(o & 0xff), (unsigned char)(o >> 8)};
    size_t bytes = (size_t)numel * npy_elem_size(dtype);
    int ok = fwrite(pre, 1, 10, fp) == 10 && fwrite(hdr, 1, (size_t)o, fp) == (size_t)o &&
             (bytes == 0 || fwrite(data, 1, bytes, fp) == bytes);
    ok = (fclose(fp) == 0) && ok;
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return zerr_set(e, ZE_IO, "cannot write %s: %s", path, strerror(errno));
    }
    return ZE_OK;
}

void npy_free(npy_array *a) {
    free(a->data);
    a->data = NULL;
}
