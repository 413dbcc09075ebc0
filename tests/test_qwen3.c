/* test_qwen3.c - the Qwen3 text encoder (src/models/qwen3.c) on the CPU
 * backend against transformers' hidden_states[-2] (fp32 goldens).
 *
 * Fixtures: models/<m>/text_encoder/ (tiny-a: sharded bf16, "model."
 * prefix, transformers 5 config; tiny-b: fp32, no prefix, transformers 4
 * config) and golden/te/<m>/case<K>/{ids.npy int32 [L], feat.npy f32 [L, D]}.
 * Tolerance: max|got - want| / max|want| <= 1e-4.
 * Also: the scratch measured in measure mode is exactly what the real run
 * uses, and the random-weights path builds and runs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/testutil.h"
/* after testutil.h (cmocka) */
#include "io/weights.h"
#include "models/config.h"
#include "models/qwen3.h"
#include "ops/ops.h"

#define TOL 1e-4

static const char *MODELS[] = {"tiny-a", "tiny-b"};

static zbackend *make_cpu(zerr *e) {
    zbackend *be = NULL;
    int rc = zbackend_create(&be, "cpu", 0, e);
    if (rc) fprintf(stderr, "backend: %s\n", e->msg);
    assert_int_equal(rc, 0);
    return be;
}

/* Encode ids with m: measure, allocate, run; returns malloc'd [L, D] floats. */
static float *encode(zbackend *be, const qwen3_model *m, const int32_t *ids, int L) {
    const int64_t D = m->cfg.hidden_size;
    zexec zx;
    zarena meas = {0};
    zx_begin(&zx, be, &meas, 1);
    zt out = zx_tensor2(&zx, ZT_F32, L, D);
    qwen3_encode(&zx, m, ids, L, &out);
    if (!zx_ok(&zx)) fprintf(stderr, "measure: %s\n", be->err->msg);
    assert_true(zx_ok(&zx));
    size_t need = meas.peak;

    zarena ar;
    assert_int_equal(zarena_alloc(be, &ar, need), 0);
    zx_begin(&zx, be, &ar, 0);
    out = zx_tensor2(&zx, ZT_F32, L, D);
    qwen3_encode(&zx, m, ids, L, &out);
    if (!zx_ok(&zx)) fprintf(stderr, "encode: %s\n", be->err->msg);
    assert_true(zx_ok(&zx));
    assert_int_equal(ar.peak, need); /* measure mode predicts the real run */
    float *got = malloc((size_t)L * D * sizeof *got);
    assert_non_null(got);
    assert_int_equal(zt_download_f32(be, &out, got), 0);
    zarena_free(be, &ar);
    return got;
}

static void test_golden(void **state) {
    (void)state;
    zerr e = {0};
    zbackend *be = make_cpu(&e);
    int ncases = 0;
    for (size_t mi = 0; mi < sizeof MODELS / sizeof *MODELS; mi++) {
        const char *model = MODELS[mi];
        const char *dir = fixture_path("models/%s/text_encoder", model);
        if (!fixture_exists(dir)) fail_msg("missing fixture %s (run `make fixtures`)", dir);
        qwen3_config cfg;
        qwen3_config_default(&cfg);
        int rc = qwen3_config_load(&cfg, fixture_path("models/%s/text_encoder/config.json", model), &e);
        if (rc) fprintf(stderr, "config: %s\n", e.msg);
        assert_int_equal(rc, 0);
        zw_source *src = NULL;
        rc = zw_source_open(&src, dir, ZW_TE, &e);
        if (rc) fprintf(stderr, "open: %s\n", e.msg);
        assert_int_equal(rc, 0);
        qwen3_model m;
        rc = qwen3_load(&m, &cfg, be, src, &e);
        if (rc) fprintf(stderr, "load: %s\n", e.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(m.n_run, cfg.num_hidden_layers - 1);

        for (int k = 0;; k++) {
            const char *ids_p = fixture_path("golden/te/%s/case%d/ids.npy", model, k);
            if (!fixture_exists(ids_p)) break;
            npy_array ids, feat;
            assert_int_equal(npy_read(ids_p, &ids, &e), 0);
            assert_int_equal(ids.dtype, NPY_I32);
            load_npy_f32(fixture_path("golden/te/%s/case%d/feat.npy", model, k), &feat);
            int L = (int)npy_numel(&ids);
            assert_int_equal(feat.ndim, 2);
            assert_int_equal(feat.shape[0], L);
            assert_int_equal(feat.shape[1], cfg.hidden_size);
            float *got = encode(be, &m, (const int32_t *)ids.data, L);
            char what[96];
            snprintf(what, sizeof what, "te %s case%d (L=%d)", model, k, L);
            assert_close(what, got, (const float *)feat.data, (size_t)L * cfg.hidden_size, TOL);
            free(got);
            npy_free(&ids);
            npy_free(&feat);
            ncases++;
        }
        qwen3_free(&m);
        zw_source_free(src);
    }
    assert_true(ncases >= 2);
    zbackend_destroy(be);
}

/* Streamed mode (--offload-te): weights on a second (host) backend, layers
 * copied one at a time into the compute backend's slot: same features. */
static void test_streamed(void **state) {
    (void)state;
    zerr e = {0};
    zbackend *dev = make_cpu(&e), *host = make_cpu(&e);
    qwen3_config cfg;
    qwen3_config_default(&cfg);
    assert_int_equal(qwen3_config_load(&cfg, fixture_path("models/tiny-a/text_encoder/config.json"), &e), 0);
    zw_source *src = NULL;
    assert_int_equal(zw_source_open(&src, fixture_path("models/tiny-a/text_encoder"), ZW_TE, &e), 0);
    qwen3_model m;
    int rc = qwen3_load_streamed(&m, &cfg, dev, host, src, &e);
    if (rc) fprintf(stderr, "load: %s\n", e.msg);
    assert_int_equal(rc, 0);
    npy_array ids, feat;
    assert_int_equal(npy_read(fixture_path("golden/te/tiny-a/case2/ids.npy"), &ids, &e), 0);
    load_npy_f32(fixture_path("golden/te/tiny-a/case2/feat.npy"), &feat);
    int L = (int)npy_numel(&ids);
    float *got = encode(dev, &m, (const int32_t *)ids.data, L);
    assert_close("te tiny-a case2, streamed layers", got, (const float *)feat.data, (size_t)L * cfg.hidden_size, TOL);
    free(got);
    npy_free(&ids);
    npy_free(&feat);
    qwen3_free(&m);
    zw_source_free(src);
    zbackend_destroy(dev);
    zbackend_destroy(host);
}

/* Random weights (src NULL) for a config shaped unlike the fixtures: builds,
 * runs, gives finite numbers, and a prefix of the ids gives the same rows
 * (causal attention). */
static void test_random_weights(void **state) {
    (void)state;
    zerr e = {0};
    zbackend *be = make_cpu(&e);
    qwen3_config cfg;
    qwen3_config_default(&cfg);
    cfg.hidden_size = 24;
    cfg.intermediate_size = 40;
    cfg.num_hidden_layers = 4;
    cfg.num_attention_heads = 6;
    cfg.num_key_value_heads = 3;
    cfg.head_dim = 10;
    cfg.vocab_size = 100;
    qwen3_model m;
    int rc = qwen3_load(&m, &cfg, be, NULL, &e);
    if (rc) fprintf(stderr, "load: %s\n", e.msg);
    assert_int_equal(rc, 0);
    int32_t ids[7] = {5, 17, 99, 0, 42, 42, 3};
    float *a = encode(be, &m, ids, 7);
    float *b = encode(be, &m, ids, 4);
    for (int i = 0; i < 7 * 24; i++) assert_true(isfinite(a[i]));
    assert_close("random weights: prefix rows", b, a, 4 * 24, 1e-6);
    free(a);
    free(b);
    qwen3_free(&m);
    zbackend_destroy(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_streamed),
        cmocka_unit_test(test_random_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
