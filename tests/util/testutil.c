/* testutil.c - see testutil.h */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *fixture_path(const char *fmt, ...) {
    static char bufs[8][1024];
    static int k;
    char *b = bufs[k++ & 7];
    const char *root = getenv("ZIMAGE_FIXTURES");
    if (!root || !*root) root = "tests/fixtures";
    int o = snprintf(b, 1024, "%s/", root);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b + o, (size_t)(1024 - o), fmt, ap);
    va_end(ap);
    return b;
}

int fixture_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int test_quick(void) {
    const char *q = getenv("ZIMAGE_TEST_QUICK");
    return q && *q && strcmp(q, "0");
}

void load_npy_f32(const char *path, npy_array *out) {
    zerr e = {0};
    int rc = npy_read(path, out, &e);
    if (rc) fprintf(stderr, "cannot load golden: %s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(out->dtype, NPY_F32);
}

double rel_err(const float *a, const float *b, size_t n) {
    double maxd = 0, maxb = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > maxd) maxd = d;
        if (fabs((double)b[i]) > maxb) maxb = fabs((double)b[i]);
    }
    if (maxb == 0) return maxd == 0 ? 0 : INFINITY;
    return maxd / maxb;
}

void assert_close(const char *what, const float *got, const float *want, size_t n, double tol) {
    double r = rel_err(got, want, n);
    printf("  %-40s n=%-9zu rel.err %.3e (tol %.1e)\n", what, n, r, tol);
    if (!(r <= tol)) {
        double maxb = 0;
        for (size_t i = 0; i < n; i++)
            if (fabs((double)want[i]) > maxb) maxb = fabs((double)want[i]);
        int shown = 0;
        for (size_t i = 0; i < n && shown < 8; i++) {
            double d = fabs((double)got[i] - (double)want[i]);
            if (!(d <= tol * maxb)) {
                fprintf(stderr, "    mismatch [%zu]: got %.8g want %.8g\n", i, got[i], want[i]);
                shown++;
            }
        }
        fail_msg("%s: relative error %.3e exceeds %.1e", what, r, tol);
    }
}
