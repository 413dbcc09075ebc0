/* test_scheduler.c - src/sample/scheduler.c against diffusers, bit for bit.
 *
 * Goldens: $ZIMAGE_FIXTURES/golden/sched/{sigmas_N,timesteps_N,t_N}.npy for
 * N in 1,2,4,8,9,50 (tools/fixtures/models.py: ZImagePipeline's own
 * retrieve_timesteps on the CPU, diffusers 0.42.1).  Tolerance: 0 bits.
 * Also: the float32 bit patterns of shared/spec/zimage-turbo.md 5.3 (N = 8),
 * torch.linspace's FMA behaviour, the CUDA-device t variant, the Euler step
 * (one float32 multiply then one add, never fused), and argument errors.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sample/scheduler.h"
#include "util/testutil.h"

static uint32_t fbits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static float bitsf(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static int cmp_bits(const char *what, const float *got, const float *want, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (fbits(got[i]) != fbits(want[i])) {
            if (bad < 8)
                fprintf(stderr, "    %s: mismatch [%d]: got %.9g (%08x) want %.9g (%08x)\n", what, i, got[i],
                        fbits(got[i]), want[i], fbits(want[i]));
            bad++;
        }
    return bad;
}

static void default_cfg(sched_config *c) {
    c->num_train_timesteps = 1000;
    c->shift = 3.0f;
    c->use_dynamic_shifting = 0;
}

static void test_goldens(void **state) {
    (void)state;
    static const int Ns[] = {1, 2, 4, 8, 9, 50};
    if (!fixture_exists(fixture_path("golden/sched/sigmas_8.npy"))) {
        printf("  SKIP: %s missing (generate with python3 tools/make_fixtures.py)\n",
               fixture_path("golden/sched/sigmas_8.npy"));
        skip();
    }
    sched_config c;
    default_cfg(&c);
    int fails = 0;
    for (size_t k = 0; k < sizeof Ns / sizeof Ns[0]; k++) {
        int N = Ns[k];
        float sig[64], ts[64], t[64];
        assert_int_equal(zsched_sigmas(&c, N, sig, t, ts, NULL), 0);
        const char *names[3] = {"sigmas", "timesteps", "t"};
        const float *got[3] = {sig, ts, t};
        int lens[3] = {N + 1, N, N};
        for (int w = 0; w < 3; w++) {
            npy_array a;
            load_npy_f32(fixture_path("golden/sched/%s_%d.npy", names[w], N), &a);
            assert_int_equal(npy_numel(&a), lens[w]);
            char label[64];
            snprintf(label, sizeof label, "%s N=%d", names[w], N);
            int bad = cmp_bits(label, got[w], a.data, lens[w]);
            printf("  %-16s %3d values, %d mismatching bits (tolerance 0)\n", label, lens[w], bad);
            fails += bad;
            npy_free(&a);
        }
    }
    assert_int_equal(fails, 0);
}

/* shared/spec/zimage-turbo.md 5.3, N = 8. */
static void test_spec_table(void **state) {
    (void)state;
    static const uint32_t sig_hex[9] = {0x3f800000, 0x3f745d17, 0x3f666666, 0x3f555555, 0x3f400000,
                                        0x3f249249, 0x3f000000, 0x3e99999a, 0};
    static const double ts_dec[8] = {1000.0, 954.54541, 900.0, 833.333313, 750.0, 642.857117, 500.0, 300.0};
    static const double t_dec[8] = {0.0,  0.045454592, 0.100000001, 0.166666687,
                                    0.25, 0.357142895, 0.5,         0.699999988};
    static const double dt_dec[8] = {-0.045454562, -0.054545462, -0.066666663, -0.083333313,
                                     -0.107142866, -0.142857134, -0.199999988, -0.300000012};
    sched_config c;
    default_cfg(&c);
    float sig[9], ts[8], t[8];
    assert_int_equal(zsched_sigmas(&c, 8, sig, t, ts, NULL), 0);
    for (int i = 0; i < 9; i++) assert_int_equal(fbits(sig[i]), sig_hex[i]);
    for (int i = 0; i < 8; i++) {
        /* the table prints 9 significant digits: the float nearest to it is ours */
        assert_int_equal(fbits(ts[i]), fbits((float)ts_dec[i]));
        assert_int_equal(fbits(t[i]), fbits((float)t_dec[i]));
        assert_int_equal(fbits(sig[i + 1] - sig[i]), fbits((float)dt_dec[i]));
    }
    /* diffusers on a CUDA device multiplies by 1/1000: 1 ulp off at steps 3 and 7 */
    float tc[8];
    zsched_t_in_cuda(ts, 8, tc);
    for (int i = 0; i < 8; i++) {
        if (i == 3 || i == 7) assert_int_equal(fbits(tc[i]), fbits(t[i]) + 1);
        else assert_int_equal(fbits(tc[i]), fbits(t[i]));
    }
    assert_true(tc[3] == 0.166666701f && tc[7] == 0.700000048f);
}

/* torch.linspace(1, 1/9, 9) in the AVX2/AVX-512 kernel is fused: check the
 * values that differ from the unfused (ATEN_CPU_CAPABILITY=default) kernel. */
static void test_linspace_fma(void **state) {
    (void)state;
    float s[9];
    zsched_linspace(1.0f, (float)(1.0 / 9), 9, s);
    float step = ((float)(1.0 / 9) - 1.0f) / 8.0f;
    int differ = 0;
    for (int i = 0; i < 9; i++) {
        float p = i < 4 ? step * (float)i : step * (float)(8 - i);
        float unf = i < 4 ? 1.0f + p : (float)(1.0 / 9) - p;
        differ += fbits(unf) != fbits(s[i]);
    }
    printf("  linspace(1, 1/9, 9): %d of 9 values differ from the unfused kernel\n", differ);
    assert_true(differ > 0);
    assert_true(s[0] == 1.0f && s[8] == (float)(1.0 / 9));
    float one[1];
    zsched_linspace(1.0f, 1.0f, 1, one);
    assert_true(one[0] == 1.0f);
}

static void test_step_unfused(void **state) {
    (void)state;
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x), *v = malloc(N * sizeof *v), *want = malloc(N * sizeof *want);
    assert_true(x && v && want);
    float sig[9];
    sched_config c;
    default_cfg(&c);
    assert_int_equal(zsched_sigmas(&c, 8, sig, NULL, NULL, NULL), 0);
    uint32_t r = 12345;
    int fused_differs = 0;
    for (int i = 0; i < N; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)((int32_t)r) * 0x1p-31f * 3.0f;
        r = r * 1664525u + 1013904223u;
        v[i] = (float)((int32_t)r) * 0x1p-31f * 2.0f;
    }
    for (int step = 0; step < 8; step++) {
        float dt = sig[step + 1] - sig[step];
        for (int i = 0; i < N; i++) {
            volatile float p = dt * v[i]; /* one rounding each */
            volatile float s = x[i] + p;
            want[i] = s;
            if (fbits(fmaf(dt, v[i], x[i])) != fbits(s)) fused_differs++;
        }
        zsched_step(x, v, N, sig, step);
        assert_int_equal(cmp_bits("euler step", x, want, N), 0);
    }
    printf("  euler step: 8 x %d values bit-exact; a fused multiply-add would differ in %d\n", N, fused_differs);
    assert_true(fused_differs > 0);
    free(x);
    free(v);
    free(want);
}

static void test_errors(void **state) {
    (void)state;
    sched_config c;
    default_cfg(&c);
    float sig[4];
    zerr e = {0};
    assert_int_equal(zsched_sigmas(&c, 0, sig, NULL, NULL, &e), ZE_INVALID);
    assert_non_null(strstr(e.msg, "steps"));
    assert_int_equal(zsched_sigmas(&c, ZSCHED_MAX_STEPS + 1, sig, NULL, NULL, &e), ZE_INVALID);
    c.use_dynamic_shifting = 1;
    assert_int_equal(zsched_sigmas(&c, 3, sig, NULL, NULL, &e), ZE_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "dynamic"));
    c.use_dynamic_shifting = 0;
    c.shift = -1.0f;
    assert_int_equal(zsched_sigmas(&c, 3, sig, NULL, NULL, &e), ZE_INVALID);
    c.shift = 1.0f; /* shift 1: sigmas are the linspace itself */
    assert_int_equal(zsched_sigmas(&c, 3, sig, NULL, NULL, NULL), 0);
    assert_true(sig[0] == 1.0f && sig[3] == 0.0f && fabsf(sig[2] - 1.0f / 3) < 1e-7f);
    (void)bitsf;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goldens),      cmocka_unit_test(test_spec_table),
        cmocka_unit_test(test_linspace_fma), cmocka_unit_test(test_step_unfused),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
