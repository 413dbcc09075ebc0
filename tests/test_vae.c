/* test_vae.c - the VAE decoder (src/models/vae.c) on the CPU backend
 * against diffusers' AutoencoderKL.decode (fp32 goldens).
 *
 * Fixtures: models/<m>/vae/ (tiny-a: 4 blocks, layers_per_block 1, 8 groups,
 * bf16 file; tiny-b: 2 blocks, layers_per_block 2, 32 groups, fp32) and
 * golden/vae/<m>/{latents.npy [2,16,h,w], image.npy [2,H,W,3] NHWC}, where
 * image = decode(latents / scaling_factor + shift_factor).
 * Tolerance: max|got - want| / max|want| <= 1e-4.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/testutil.h"
/* after testutil.h (cmocka) */
#include "io/weights.h"
#include "models/config.h"
#include "models/vae.h"
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

/* latents [B, Cl, h, w] -> malloc'd image [B, f*h, f*w, out_channels]. */
static float *decode(zbackend *be, const vae_model *m, const int64_t lne[4], const float *lat) {
    const int64_t f = (int64_t)1 << (m->cfg.n_blocks - 1);
    int64_t ine[4] = {lne[0], f * lne[2], f * lne[3], m->cfg.out_channels};
    zt lt, img;
    assert_int_equal(zt_alloc(be, &lt, ZT_F32, 4, lne), 0);
    assert_int_equal(zt_upload(be, &lt, lat, ZT_F32), 0);
    assert_int_equal(zt_alloc(be, &img, ZT_F32, 4, ine), 0);
    zarena meas = {0}, ar;
    zexec zx;
    zx_begin(&zx, be, &meas, 1);
    vae_decode(&zx, m, &lt, &img);
    if (!zx_ok(&zx)) fprintf(stderr, "measure: %s\n", be->err->msg);
    assert_true(zx_ok(&zx));
    assert_int_equal(zarena_alloc(be, &ar, meas.peak), 0);
    zx_begin(&zx, be, &ar, 0);
    vae_decode(&zx, m, &lt, &img);
    if (!zx_ok(&zx)) fprintf(stderr, "decode: %s\n", be->err->msg);
    assert_true(zx_ok(&zx));
    assert_int_equal(ar.peak, meas.peak);
    size_t n = (size_t)zt_numel(&img);
    float *got = malloc(n * sizeof *got);
    assert_non_null(got);
    assert_int_equal(zt_download_f32(be, &img, got), 0);
    zarena_free(be, &ar);
    zt_free(be, &lt);
    zt_free(be, &img);
    return got;
}

static void test_golden(void **state) {
    (void)state;
    zerr e = {0};
    zbackend *be = make_cpu(&e);
    for (size_t mi = 0; mi < sizeof MODELS / sizeof *MODELS; mi++) {
        const char *model = MODELS[mi];
        const char *dir = fixture_path("models/%s/vae", model);
        if (!fixture_exists(dir)) fail_msg("missing fixture %s (run `make fixtures`)", dir);
        vae_config cfg;
        vae_config_default(&cfg);
        int rc = vae_config_load(&cfg, fixture_path("models/%s/vae/config.json", model), &e);
        if (rc) fprintf(stderr, "config: %s\n", e.msg);
        assert_int_equal(rc, 0);
        zw_source *src = NULL;
        rc = zw_source_open(&src, dir, ZW_VAE, &e);
        if (rc) fprintf(stderr, "open: %s\n", e.msg);
        assert_int_equal(rc, 0);
        vae_model m;
        rc = vae_load(&m, &cfg, be, src, &e);
        if (rc) fprintf(stderr, "load: %s\n", e.msg);
        assert_int_equal(rc, 0);

        npy_array lat, want;
        load_npy_f32(fixture_path("golden/vae/%s/latents.npy", model), &lat);
        load_npy_f32(fixture_path("golden/vae/%s/image.npy", model), &want);
        assert_int_equal(lat.ndim, 4);
        assert_int_equal(lat.shape[1], cfg.latent_channels);
        float *got = decode(be, &m, lat.shape, lat.data);
        assert_int_equal(want.ndim, 4);
        assert_int_equal(want.shape[0], lat.shape[0]);
        assert_int_equal(want.shape[1], lat.shape[2] << (cfg.n_blocks - 1));
        assert_int_equal(want.shape[2], lat.shape[3] << (cfg.n_blocks - 1));
        assert_int_equal(want.shape[3], cfg.out_channels);
        char what[96];
        snprintf(what, sizeof what, "vae %s decode [%lld,%lld,%lld,%lld]", model, (long long)lat.shape[0],
                 (long long)lat.shape[1], (long long)lat.shape[2], (long long)lat.shape[3]);
        assert_close(what, got, want.data, (size_t)npy_numel(&want), TOL);
        free(got);
        npy_free(&lat);
        npy_free(&want);
        vae_free(&m);
        zw_source_free(src);
    }
    zbackend_destroy(be);
}

/* Random weights, 3 blocks, layers_per_block 3, no mid attention: builds,
 * runs, gives finite output of the right size; batch rows independent. */
static void test_random_weights(void **state) {
    (void)state;
    zerr e = {0};
    zbackend *be = make_cpu(&e);
    vae_config cfg;
    vae_config_default(&cfg);
    cfg.n_blocks = 3;
    cfg.block_out_channels[0] = 8;
    cfg.block_out_channels[1] = 16;
    cfg.block_out_channels[2] = 16;
    cfg.layers_per_block = 3;
    cfg.norm_num_groups = 4;
    cfg.mid_block_add_attention = 0;
    vae_model m;
    int rc = vae_load(&m, &cfg, be, NULL, &e);
    if (rc) fprintf(stderr, "load: %s\n", e.msg);
    assert_int_equal(rc, 0);
    int64_t lne[4] = {2, 16, 3, 5}, one[4] = {1, 16, 3, 5};
    float lat[2 * 16 * 15];
    unsigned s = 7;
    for (int i = 0; i < 2 * 16 * 15; i++) lat[i] = (float)((s = s * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
    float *a = decode(be, &m, lne, lat);
    float *b = decode(be, &m, one, lat + 16 * 15);
    size_t per = 12 * 20 * 3;
    for (size_t i = 0; i < 2 * per; i++) assert_true(isfinite(a[i]));
    assert_close("random weights: sample 1 alone", b, a + per, per, 1e-5);
    free(a);
    free(b);
    vae_free(&m);
    zbackend_destroy(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_random_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
