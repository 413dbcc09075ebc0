/* test_cuda_pipeline.c - the CUDA backend on whole models (run on a GPU
 * machine by `make cuda-check`; skipped where no GPU is usable):
 *   - the fixture pipelines (golden/pipe/<case>) on the GPU: latents after
 *     every step vs diffusers fp32 rel. error <= 2e-2, final image PSNR >= 35 dB;
 *   - the full-size Z-Image-Turbo DiT with random weights: one forward at
 *     256x256 on the GPU vs the CPU backend, rel. error <= 2e-2;
 *   - NaN/Inf checks on all of the above.
 * Uses the library's internals (pipeline.h) for the single-forward check. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "pipeline.h"
#include "util/testutil.h"
#include "zimage.h"

#define TOL_GPU 2e-2
#define MIN_PSNR 35.0

static int g_have_gpu = -1;

static int gpu_ok(void) {
    if (g_have_gpu < 0) {
        zbackend *be = NULL;
        zerr e = {0};
        g_have_gpu = zbackend_create(&be, "cuda", 0, &e) == 0;
        if (be) zbackend_destroy(be);
        if (!g_have_gpu) printf("  no usable CUDA device (%s): skipping\n", e.msg);
    }
    return g_have_gpu;
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

typedef struct {
    const char *name;
    double worst;
    size_t n;
    int steps;
} stepcheck;

static int on_step(const zimage_progress *p, void *user) {
    stepcheck *s = user;
    if (strcmp(p->stage, "denoise") || !p->latents) return 0;
    npy_array want;
    load_npy_f32(fixture_path("golden/pipe/%s/latents_step%d.npy", s->name, p->step - 1), &want);
    assert_true(all_finite(p->latents, s->n));
    double r = rel_err(p->latents, want.data, s->n);
    printf("  %-8s step %d: GPU latents rel.err %.3e (tol %.0e)\n", s->name, p->step - 1, r, TOL_GPU);
    if (r > s->worst) s->worst = r;
    npy_free(&want);
    s->steps++;
    return 0;
}

static void run_case(const char *name, int offload) {
    json_error_t je;
    json_t *j = json_load_file(fixture_path("golden/pipe/%s/params.json", name), 0, &je);
    assert_non_null(j);
    zimage_options o = ZIMAGE_OPTIONS_DEFAULT;
    o.model = fixture_path("models/%s", json_string_value(json_object_get(j, "model")));
    o.device = "cuda";
    o.offload_te = offload;
    zimage_ctx *ctx;
    char err[1024];
    if (zimage_create(&ctx, &o, err, sizeof err)) fail_msg("create: %s", err);
    zimage_params p = ZIMAGE_PARAMS_DEFAULT;
    p.prompt = json_string_value(json_object_get(j, "prompt"));
    json_t *neg = json_object_get(j, "negative_prompt");
    p.negative_prompt = json_is_string(neg) ? json_string_value(neg) : NULL;
    p.width = (int)json_integer_value(json_object_get(j, "width"));
    p.height = (int)json_integer_value(json_object_get(j, "height"));
    p.steps = (int)json_integer_value(json_object_get(j, "num_inference_steps"));
    p.cfg_scale = (float)json_number_value(json_object_get(j, "guidance_scale")) + 1.0f;
    p.cfg_normalization = (float)json_number_value(json_object_get(j, "cfg_normalization"));
    p.cfg_truncation = (float)json_number_value(json_object_get(j, "cfg_truncation"));
    p.seed = (int64_t)json_integer_value(json_object_get(j, "seed"));
    p.max_sequence_length = (int)json_integer_value(json_object_get(j, "max_sequence_length"));
    p.batch = (int)json_integer_value(json_object_get(j, "num_images_per_prompt"));
    int c, h, w;
    zimage_latent_shape(ctx, p.width, p.height, &c, &h, &w);
    stepcheck sc = {name, 0, (size_t)p.batch * c * h * w, 0};
    p.progress = on_step;
    p.progress_user = &sc;
    p.progress_latents = 1;
    zimage_result r;
    if (zimage_generate(ctx, &p, &r)) fail_msg("generate %s: %s", name, zimage_errmsg(ctx));
    assert_int_equal(sc.steps, p.steps);
    /* PSNR of the 8-bit image vs diffusers' pixels */
    npy_array px = {0};
    zerr e = {0};
    assert_int_equal(npy_read(fixture_path("golden/pipe/%s/pixels.npy", name), &px, &e), 0);
    size_t per = (size_t)p.width * p.height * 3;
    double se = 0;
    for (int k = 0; k < r.n; k++)
        for (size_t i = 0; i < per; i++) {
            double d = (double)r.images[k][i] - (double)((uint8_t *)px.data)[k * per + i];
            se += d * d;
        }
    double mse = se / (double)(per * r.n);
    double psnr = mse > 0 ? 10 * log10(255.0 * 255.0 / mse) : 99.0;
    printf("  %-8s%s worst latents rel.err %.3e, image PSNR %.1f dB (min %.0f)\n", name,
           offload ? " (offload-te)" : "", sc.worst, psnr, MIN_PSNR);
    assert_true(sc.worst <= TOL_GPU);
    assert_true(psnr >= MIN_PSNR);
    npy_free(&px);
    zimage_result_free(&r);
    zimage_free(ctx);
    json_decref(j);
}

static void test_pipe_plain(void **st) {
    (void)st;
    if (!gpu_ok()) skip();
    run_case("plain", 0);
}
static void test_pipe_cfg(void **st) {
    (void)st;
    if (!gpu_ok()) skip();
    run_case("cfg", 0);
}
static void test_pipe_batch(void **st) {
    (void)st;
    if (!gpu_ok()) skip();
    run_case("batch", 0);
}
static void test_pipe_tiny_b(void **st) {
    (void)st;
    if (!gpu_ok()) skip();
    run_case("tiny-b", 0);
}

/* --offload-te: the text encoder streams through the GPU layer by layer. */
static void test_pipe_offload(void **st) {
    (void)st;
    if (!gpu_ok()) skip();
    run_case("cfg", 1);
}

/* One full-size DiT forward at 256x256 with a 64-token caption: GPU vs CPU. */
static void dit_forward_on(zimage_ctx *ctx, const float *xin, const float *cap, int L, float tval, float *out) {
    zbackend *be = ctx->be;
    zexec zx;
    int hl = 32, wl = 32, cl = ctx->dit_cfg.in_channels;
    for (int pass = 0; pass < 2; pass++) {
        zx_begin(&zx, be, &ctx->persist, pass == 0);
        zt feat = zx_tensor2(&zx, be->act, L, ctx->dit_cfg.cap_feat_dim);
        zx_upload(&zx, &feat, cap, ZT_F32);
        const zt *fp = &feat;
        dit_batch bt;
        dit_batch_prepare(&zx, &ctx->dit, &fp, 1, hl, wl, &bt);
        zt x = zx_tensor4(&zx, ZT_F32, 1, cl, hl, wl), o = zx_tensor4(&zx, ZT_F32, 1, cl, hl, wl);
        int64_t one = 1;
        zt tt = zx_tensor(&zx, ZT_F32, 1, &one);
        zx_upload(&zx, &x, xin, ZT_F32);
        zx_upload(&zx, &tt, &tval, ZT_F32);
        dit_forward(&zx, &ctx->dit, &bt, &x, &tt, &o);
        if (!zx_ok(&zx)) fail_msg("dit forward on %s: %s", zimage_device_name(ctx), zimage_errmsg(ctx));
        if (pass == 0) {
            assert_int_equal(zpipe_arena_reserve(ctx, &ctx->persist, ctx->persist.peak), 0);
            continue;
        }
        assert_int_equal(zt_download_f32(be, &o, out), 0);
    }
}

static void test_fullsize_dit_vs_cpu(void **st) {
    (void)st;
    if (!gpu_ok()) skip();
    if (getenv("ZIMAGE_SKIP_FULLSIZE")) skip();
    zimage_options o = ZIMAGE_OPTIONS_DEFAULT;
    o.random_weights = 1;
    o.components = ZIMAGE_LOAD_DIT;
    char err[1024];
    zimage_ctx *gpu, *cpu;
    o.device = "cuda";
    if (zimage_create(&gpu, &o, err, sizeof err)) fail_msg("cuda: %s", err);
    o.device = "cpu";
    if (zimage_create(&cpu, &o, err, sizeof err)) fail_msg("cpu: %s", err);
    int L = 64, cl = gpu->dit_cfg.in_channels;
    size_t nx = (size_t)cl * 32 * 32, nc = (size_t)L * gpu->dit_cfg.cap_feat_dim;
    float *x = malloc(nx * 4), *cap = malloc(nc * 4), *og = malloc(nx * 4), *oc = malloc(nx * 4);
    uint32_t s = 7;
    for (size_t i = 0; i < nx; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 3.4f;
    }
    for (size_t i = 0; i < nc; i++) {
        s = s * 1664525u + 1013904223u;
        cap[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 2.0f;
    }
    double t0 = ztime_now();
    dit_forward_on(gpu, x, cap, L, 0.3f, og);
    double t1 = ztime_now();
    dit_forward_on(cpu, x, cap, L, 0.3f, oc);
    double t2 = ztime_now();
    assert_true(all_finite(og, nx));
    assert_true(all_finite(oc, nx));
    printf("  full-size DiT 256x256: GPU %.3f s (incl. setup), CPU %.1f s\n", t1 - t0, t2 - t1);
    assert_close("full-size DiT forward, GPU vs CPU", og, oc, nx, TOL_GPU);
    free(x);
    free(cap);
    free(og);
    free(oc);
    zimage_free(gpu);
    zimage_free(cpu);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipe_plain),  cmocka_unit_test(test_pipe_cfg),
        cmocka_unit_test(test_pipe_batch),  cmocka_unit_test(test_pipe_tiny_b),
        cmocka_unit_test(test_pipe_offload),
        cmocka_unit_test(test_fullsize_dit_vs_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
