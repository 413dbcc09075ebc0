/* cli_common.c - see cli_common.h */
#include "cli_common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/err.h"
#include "io/hub.h"

int cli_parse_int(const char *s, const char *name, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "zimage: --%s: '%s' is not an integer in [%ld, %ld]\n", name, s, lo, hi);
        return 2;
    }
    *out = (int)v;
    return 0;
}

int cli_parse_i64(const char *s, const char *name, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) {
        fprintf(stderr, "zimage: --%s: '%s' is not an integer\n", name, s);
        return 2;
    }
    *out = v;
    return 0;
}

int cli_parse_float(const char *s, const char *name, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        fprintf(stderr, "zimage: --%s: '%s' is not a number\n", name, s);
        return 2;
    }
    *out = v;
    return 0;
}

int cli_check_writable(const char *path, char *err, size_t errlen) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "cannot write %s: folder %s does not exist", path, dir);
        return 1;
    }
    if (access(dir, W_OK)) {
        snprintf(err, errlen, "cannot write %s: folder %s is not writable", path, dir);
        return 1;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "cannot write %s: it is a folder", path);
        return 1;
    }
    return 0;
}

int cli_resolve_model(const char *spec, int yes, char *out, size_t n) {
    struct stat st;
    if (stat(spec, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(out, n, "%s", spec);
        return 0;
    }
    zhub_opts o;
    zhub_opts_default(&o);
    o.allow_download = 1;
    o.assume_yes = yes;
    zerr e = {0};
    if (zhub_resolve_model(spec, &o, out, n, &e)) {
        fprintf(stderr, "zimage: %s\n", e.msg);
        return 1;
    }
    return 0;
}

const char *cli_model_name(const char *model) {
    static char buf[256];
    if (!model || !*model) return "Z-Image-Turbo";
    snprintf(buf, sizeof buf, "%s", model);
    size_t l = strlen(buf);
    while (l > 1 && buf[l - 1] == '/') buf[--l] = 0;
    char *s = strrchr(buf, '/');
    /* a HF snapshot folder: .../models--ORG--NAME/snapshots/<sha> */
    const char *m = strstr(buf, "models--");
    if (m) {
        static char name[256];
        const char *p = m + 8, *dd = strstr(p, "--");
        if (dd) p = dd + 2;
        size_t k = 0;
        while (p[k] && p[k] != '/' && k < sizeof name - 1) {
            name[k] = p[k];
            k++;
        }
        name[k] = 0;
        return name;
    }
    return s ? s + 1 : buf;
}

void cli_latent_shape(const zimage_ctx *ctx, const zimage_params *p, int *c, int *h, int *w) {
    zimage_latent_shape(ctx, p->width, p->height, c, h, w);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
