/* test_dit.c - the DiT (src/models/dit.c) on the CPU backend against
 * diffusers' ZImageTransformer2DModel (fp32 goldens).
 *
 * Fixtures: models/<m>/transformer/ and golden/dit/<m>/case<K>/
 * {x.npy [B,16,H,W], t.npy [B], cap<b>.npy [L_b, cap_feat_dim],
 * out.npy [B,16,H,W]} (raw model output, not negated).  The cases cover
 * image pad tokens (Nx not a multiple of 32), a batch of two captions of
 * different padded lengths (masked batch padding), and no padding at all.
 * Every sample of a batch is also run alone and compared with its rows of
 * the batched golden.  Tolerance: max|got - want| / max|want| <= 1e-4.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/testutil.h"
/* after testutil.h (cmocka) */
#include "io/weights.h"
#include "models/config.h"
#include "models/dit.h"
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

static zt upload(zbackend *be, int ndim, const int64_t *ne, const float *data) {
    zt t;
    assert_int_equal(zt_alloc(be, &t, ZT_F32, ndim, ne), 0);
    assert_int_equal(zt_upload(be, &t, data, ZT_F32), 0);
    return t;
}

/* One DiT call on B samples (latents x [B, C, H, W] floats, t [B], caps).
 * Returns malloc'd out [B, C, H, W]. */
static float *run_dit(zbackend *be, const dit_model *m, int B, int H, int W, const float *x, const float *t,
                      const float *const *caps, const int *L) {
    const int64_t C = m->cfg.in_channels, capd = m->cfg.cap_feat_dim;
    int64_t xne[4] = {B, C, H, W}, tne[1] = {B};
    zt xt = upload(be, 4, xne, x), tt = upload(be, 1, tne, t), out;
    assert_int_equal(zt_alloc(be, &out, ZT_F32, 4, xne), 0);
    zt ct[DIT_MAX_BATCH];
    const zt *feats[DIT_MAX_BATCH];
    for (int b = 0; b < B; b++) {
        int64_t ne[2] = {L[b], capd};
        ct[b] = upload(be, 2, ne, caps[b]);
        feats[b] = &ct[b];
    }
    /* measure both stages, then run */
    zarena pm = {0}, fm = {0}, pa, fa;
    zexec zp, zf;
    dit_batch bt;
    zx_begin(&zp, be, &pm, 1);
    dit_batch_prepare(&zp, m, feats, B, H, W, &bt);
    zx_begin(&zf, be, &fm, 1);
    dit_forward(&zf, m, &bt, &xt, &tt, &out);
    if (!zx_ok(&zp) || !zx_ok(&zf)) fprintf(stderr, "measure: %s\n", be->err->msg);
    assert_true(zx_ok(&zp) && zx_ok(&zf));
    assert_int_equal(zarena_alloc(be, &pa, pm.peak), 0);
    assert_int_equal(zarena_alloc(be, &fa, fm.peak), 0);
    zx_begin(&zp, be, &pa, 0);
    dit_batch_prepare(&zp, m, feats, B, H, W, &bt);
    if (!zx_ok(&zp)) fprintf(stderr, "prepare: %s\n", be->err->msg);
    assert_true(zx_ok(&zp));
    zx_begin(&zf, be, &fa, 0);
    dit_forward(&zf, m, &bt, &xt, &tt, &out);
    if (!zx_ok(&zf)) fprintf(stderr, "forward: %s\n", be->err->msg);
    assert_true(zx_ok(&zf));
    assert_int_equal(pa.peak, pm.peak);
    assert_int_equal(fa.peak, fm.peak);
    size_t n = (size_t)(B * C * H * W);
    float *got = malloc(n * sizeof *got);
    assert_non_null(got);
    assert_int_equal(zt_download_f32(be, &out, got), 0);
    zarena_free(be, &pa);
    zarena_free(be, &fa);
    for (int b = 0; b < B; b++) zt_free(be, &ct[b]);
    zt_free(be, &xt);
    zt_free(be, &tt);
    zt_free(be, &out);
    return got;
}

static void test_golden(void **state) {
    (void)state;
    zerr e = {0};
    zbackend *be = make_cpu(&e);
    int ncases = 0;
    for (size_t mi = 0; mi < sizeof MODELS / sizeof *MODELS; mi++) {
        const char *model = MODELS[mi];
        const char *dir = fixture_path("models/%s/transformer", model);
        if (!fixture_exists(dir)) fail_msg("missing fixture %s (run `make fixtures`)", dir);
        dit_config cfg;
        dit_config_default(&cfg);
        int rc = dit_config_load(&cfg, fixture_path("models/%s/transformer/config.json", model), &e);
        if (!rc) rc = dit_config_finish(&cfg, &e);
        if (rc) fprintf(stderr, "config: %s\n", e.msg);
        assert_int_equal(rc, 0);
        zw_source *src = NULL;
        rc = zw_source_open(&src, dir, ZW_DIT, &e);
        if (rc) fprintf(stderr, "open: %s\n", e.msg);
        assert_int_equal(rc, 0);
        dit_model m;
        rc = dit_load(&m, &cfg, be, src, &e);
        if (rc) fprintf(stderr, "load: %s\n", e.msg);
        assert_int_equal(rc, 0);

        for (int k = 0;; k++) {
            const char *xp = fixture_path("golden/dit/%s/case%d/x.npy", model, k);
            if (!fixture_exists(xp)) break;
            npy_array x, t, want, cap[DIT_MAX_BATCH];
            load_npy_f32(xp, &x);
            load_npy_f32(fixture_path("golden/dit/%s/case%d/t.npy", model, k), &t);
            load_npy_f32(fixture_path("golden/dit/%s/case%d/out.npy", model, k), &want);
            assert_int_equal(x.ndim, 4);
            int B = (int)x.shape[0], C = (int)x.shape[1], H = (int)x.shape[2], W = (int)x.shape[3];
            assert_true(B >= 1 && B <= DIT_MAX_BATCH);
            assert_int_equal(C, cfg.in_channels);
            assert_int_equal(npy_numel(&t), B);
            assert_int_equal(npy_numel(&want), npy_numel(&x));
            const float *caps[DIT_MAX_BATCH];
            int L[DIT_MAX_BATCH] = {0};
            for (int b = 0; b < B; b++) {
                load_npy_f32(fixture_path("golden/dit/%s/case%d/cap%d.npy", model, k, b), &cap[b]);
                assert_int_equal(cap[b].ndim, 2);
                assert_int_equal(cap[b].shape[1], cfg.cap_feat_dim);
                caps[b] = cap[b].data;
                L[b] = (int)cap[b].shape[0];
            }
            float *got = run_dit(be, &m, B, H, W, x.data, t.data, caps, L);
            char what[128];
            snprintf(what, sizeof what, "dit %s case%d (B=%d, %dx%d, L0=%d)", model, k, B, H, W, L[0]);
            assert_close(what, got, want.data, (size_t)npy_numel(&want), TOL);
            free(got);
            if (B > 1) { /* each sample alone vs its rows of the batched golden */
                size_t per = (size_t)C * H * W;
                for (int b = 0; b < B; b++) {
                    float *one = run_dit(be, &m, 1, H, W, (const float *)x.data + b * per,
                                         (const float *)t.data + b, &caps[b], &L[b]);
                    snprintf(what, sizeof what, "dit %s case%d sample %d alone (L=%d)", model, k, b, L[b]);
                    assert_close(what, one, (const float *)want.data + b * per, per, TOL);
                    free(one);
                }
            }
            for (int b = 0; b < B; b++) npy_free(&cap[b]);
            npy_free(&x);
            npy_free(&t);
            npy_free(&want);
            ncases++;
        }
        dit_free(&m);
        zw_source_free(src);
    }
    assert_true(ncases >= 2);
    zbackend_destroy(be);
}

/* Random weights: a config unlike the fixtures (odd head count, no image
 * padding needed or needed, batch of 3) builds and runs in measure + real
 * mode and gives finite output; batch padding does not leak into samples. */
static void test_random_weights(void **state) {
    (void)state;
    zerr e = {0};
    zbackend *be = make_cpu(&e);
    dit_config cfg;
    dit_config_default(&cfg);
    cfg.dim = 40;
    cfg.n_heads = 2;
    cfg.n_kv_heads = 2;
    cfg.n_layers = 1;
    cfg.n_refiner_layers = 1;
    cfg.cap_feat_dim = 12;
    cfg.axes_dims[0] = 4;
    cfg.axes_dims[1] = 8;
    cfg.axes_dims[2] = 8;
    cfg.axes_lens[0] = 300;
    cfg.axes_lens[1] = 32;
    cfg.axes_lens[2] = 32;
    assert_int_equal(dit_config_finish(&cfg, &e), 0);
    dit_model m;
    int rc = dit_load(&m, &cfg, be, NULL, &e);
    if (rc) fprintf(stderr, "load: %s\n", e.msg);
    assert_int_equal(rc, 0);
    const int B = 3, H = 4, W = 6, C = cfg.in_channels;
    int L[3] = {3, 40, 70};
    float *x = malloc(sizeof(float) * B * C * H * W), t[3] = {0.0f, 0.5f, 0.9f};
    float *cap[3];
    unsigned s = 1;
    for (int i = 0; i < B * C * H * W; i++) x[i] = (float)((s = s * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
    for (int b = 0; b < B; b++) {
        cap[b] = malloc(sizeof(float) * L[b] * cfg.cap_feat_dim);
        for (int i = 0; i < L[b] * cfg.cap_feat_dim; i++)
            cap[b][i] = (float)((s = s * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
    }
    float *all = run_dit(be, &m, B, H, W, x, t, (const float *const *)cap, L);
    size_t per = (size_t)C * H * W;
    for (size_t i = 0; i < B * per; i++) assert_true(isfinite(all[i]));
    for (int b = 0; b < B; b++) {
        float *one = run_dit(be, &m, 1, H, W, x + b * per, t + b, (const float *const *)&cap[b], &L[b]);
        char what[64];
        snprintf(what, sizeof what, "random weights: sample %d alone", b);
        assert_close(what, one, all + b * per, per, 1e-5);
        free(one);
        free(cap[b]);
    }
    free(all);
    free(x);
    dit_free(&m);
    zbackend_destroy(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_random_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
