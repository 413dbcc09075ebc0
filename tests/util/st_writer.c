/* st_writer.c - safetensors writer and temp folders for tests (st_writer.h). */
#include "st_writer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct stw_t {
    char *name, dtype[16];
    int ndim;
    int64_t shape[8];
    void *data;
    size_t nbytes;
} stw_t;

struct stw {
    stw_t *t;
    int n, cap;
    char mk[256], mv[256];
};

static void die(const char *what, const char *path) {
    fprintf(stderr, "st_writer: %s %s failed\n", what, path);
    abort();
}

stw *stw_new(void) {
    stw *w = calloc(1, sizeof *w);
    if (!w) die("calloc", "");
    return w;
}

void stw_add(stw *w, const char *name, const char *dtype, int ndim, const int64_t *shape, const void *data,
             size_t nbytes) {
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->t = realloc(w->t, (size_t)w->cap * sizeof *w->t);
        if (!w->t) die("realloc", "");
    }
    stw_t *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    for (int i = 0; i < ndim && i < 8; i++) t->shape[i] = shape[i];
    t->data = malloc(nbytes ? nbytes : 1);
    if (!t->name || !t->data) die("malloc", "");
    if (nbytes) memcpy(t->data, data, nbytes);
    t->nbytes = nbytes;
}

void stw_add_f32(stw *w, const char *name, int ndim, const int64_t *shape, const float *data) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    stw_add(w, name, "F32", ndim, shape, data, n * 4);
}

void stw_meta(stw *w, const char *key, const char *value) {
    snprintf(w->mk, sizeof w->mk, "%s", key);
    snprintf(w->mv, sizeof w->mv, "%s", value);
}

static void put_le64(unsigned char *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

int stw_write(stw *w, const char *path) {
    size_t cap = 256 + (size_t)w->n * 512, o = 0, off = 0;
    char *h = malloc(cap);
    if (!h) die("malloc", path);
    o += (size_t)snprintf(h + o, cap - o, "{");
    if (w->mk[0]) o += (size_t)snprintf(h + o, cap - o, "\"__metadata__\":{\"%s\":\"%s\"}%s", w->mk, w->mv, w->n ? "," : "");
    for (int i = 0; i < w->n; i++) {
        stw_t *t = &w->t[i];
        o += (size_t)snprintf(h + o, cap - o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t->name, t->dtype);
        for (int d = 0; d < t->ndim; d++) o += (size_t)snprintf(h + o, cap - o, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        o += (size_t)snprintf(h + o, cap - o, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    o += (size_t)snprintf(h + o, cap - o, "}");
    while (o % 8) h[o++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) die("fopen", path);
    unsigned char len[8];
    put_le64(len, o);
    if (fwrite(len, 1, 8, f) != 8 || fwrite(h, 1, o, f) != o) die("fwrite", path);
    for (int i = 0; i < w->n; i++)
        if (w->t[i].nbytes && fwrite(w->t[i].data, 1, w->t[i].nbytes, f) != w->t[i].nbytes) die("fwrite", path);
    if (fclose(f)) die("fclose", path);
    free(h);
    return 0;
}

void stw_free(stw *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w);
}

void st_write_raw(const char *path, const char *header, int64_t hlen_override, const void *data, size_t nbytes) {
    FILE *f = fopen(path, "wb");
    if (!f) die("fopen", path);
    size_t hl = strlen(header);
    unsigned char len[8];
    put_le64(len, hlen_override >= 0 ? (uint64_t)hlen_override : hl);
    if (fwrite(len, 1, 8, f) != 8 || fwrite(header, 1, hl, f) != hl) die("fwrite", path);
    if (nbytes && fwrite(data, 1, nbytes, f) != nbytes) die("fwrite", path);
    if (fclose(f)) die("fclose", path);
}

void st_write_bytes(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) die("fopen", path);
    if (n && fwrite(buf, 1, n, f) != n) die("fwrite", path);
    if (fclose(f)) die("fclose", path);
}

void st_write_text(const char *path, const char *text) { st_write_bytes(path, text, strlen(text)); }

const char *st_tmpdir(void) {
    static char buf[512];
    const char *t = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/zimage-test-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(buf)) die("mkdtemp", buf);
    return buf;
}

void st_rmtree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                char sub[4096];
                snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
                st_rmtree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

const char *st_path(const char *dir, const char *name) {
    static char bufs[8][4096];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}
