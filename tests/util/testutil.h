/* testutil.h - helpers shared by the cmocka tests: fixture paths, .npy
 * goldens, and array comparison with a stated tolerance. */
#ifndef ZIMAGE_TESTUTIL_H
#define ZIMAGE_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the three above first */
#include <cmocka.h>

#include "base/npy.h"

/* $ZIMAGE_FIXTURES (default "tests/fixtures") joined with a relative path;
 * returns a static buffer (rotating among 8). */
const char *fixture_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 1 if the file exists. */
int fixture_exists(const char *path);
/* 1 if ZIMAGE_TEST_QUICK is set. */
int test_quick(void);
/* Load a float32 .npy golden (fails the test if missing / wrong dtype). */
void load_npy_f32(const char *path, npy_array *out);

/* Relative error max|a-b| / max|b| (0 if b is all zero and a == b);
 * NaN/Inf in a gives +inf. */
double rel_err(const float *a, const float *b, size_t n);
/* Assert rel_err <= tol; on failure print the first few mismatches with
 * their flat index, and the max abs error. */
void assert_close(const char *what, const float *got, const float *want, size_t n, double tol);

#endif
