/* test_pipeline.c - the whole pipeline through the public C API (CPU, fp32)
 * against diffusers' ZImagePipeline on the tiny fixture models
 * (tests/fixtures/golden/pipe/<case>/, see tests/fixtures/README.md):
 *   - latents after every scheduler step: rel. error <= 1e-4
 *     (noise drawn by zimage's torch-compatible CPU generator from the seed)
 *   - final pixels: max |difference| <= 1
 * plus: init latents, the prompt cache, batching of several requests,
 * cancellation, and validation errors. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/testutil.h"
#include "zimage.h"

#define TOL_LATENT 1e-4

typedef struct {
    const char *name;
    zimage_params p;
    char prompt[512], negative[512];
    int has_negative;
    int n;
    char model[64];
} pcase;

static void load_case(const char *name, pcase *c) {
    memset(c, 0, sizeof *c);
    c->name = name;
    json_error_t je;
    json_t *j = json_load_file(fixture_path("golden/pipe/%s/params.json", name), 0, &je);
    if (!j) fail_msg("cannot read params.json of %s: %s", name, je.text);
    zimage_params d = ZIMAGE_PARAMS_DEFAULT;
    c->p = d;
    snprintf(c->prompt, sizeof c->prompt, "%s", json_string_value(json_object_get(j, "prompt")));
    c->p.prompt = c->prompt;
    json_t *neg = json_object_get(j, "negative_prompt");
    if (json_is_string(neg)) {
        snprintf(c->negative, sizeof c->negative, "%s", json_string_value(neg));
        c->p.negative_prompt = c->negative;
    }
    c->p.width = (int)json_integer_value(json_object_get(j, "width"));
    c->p.height = (int)json_integer_value(json_object_get(j, "height"));
    c->p.steps = (int)json_integer_value(json_object_get(j, "num_inference_steps"));
    c->p.cfg_scale = (float)json_number_value(json_object_get(j, "guidance_scale")) + 1.0f;
    c->p.cfg_normalization = (float)json_number_value(json_object_get(j, "cfg_normalization"));
    c->p.cfg_truncation = (float)json_number_value(json_object_get(j, "cfg_truncation"));
    c->p.seed = (int64_t)json_integer_value(json_object_get(j, "seed"));
    c->p.max_sequence_length = (int)json_integer_value(json_object_get(j, "max_sequence_length"));
    c->p.batch = (int)json_integer_value(json_object_get(j, "num_images_per_prompt"));
    c->n = c->p.batch;
    snprintf(c->model, sizeof c->model, "%s", json_string_value(json_object_get(j, "model")));
    json_decref(j);
}

static zimage_ctx *open_model(const char *model, int cache) {
    zimage_options o = ZIMAGE_OPTIONS_DEFAULT;
    o.model = fixture_path("models/%s", model);
    o.device = "cpu";
    o.threads = 2;
    o.prompt_cache = cache;
    zimage_ctx *ctx = NULL;
    char err[1024];
    int rc = zimage_create(&ctx, &o, err, sizeof err);
    if (rc) fail_msg("zimage_create(%s): %s", model, err);
    return ctx;
}

typedef struct {
    const pcase *c;
    int steps_seen;
    double worst;
    size_t n;
} step_check;

static int check_step(const zimage_progress *pr, void *user) {
    step_check *s = user;
    if (strcmp(pr->stage, "denoise") || !pr->latents) return 0;
    npy_array want;
    load_npy_f32(fixture_path("golden/pipe/%s/latents_step%d.npy", s->c->name, pr->step - 1), &want);
    assert_int_equal((size_t)npy_numel(&want), s->n);
    char what[128];
    snprintf(what, sizeof what, "%s latents after step %d", s->c->name, pr->step - 1);
    assert_close(what, pr->latents, want.data, s->n, TOL_LATENT);
    double r = rel_err(pr->latents, want.data, s->n);
    if (r > s->worst) s->worst = r;
    npy_free(&want);
    s->steps_seen++;
    return 0;
}

static void check_pixels(const pcase *c, const zimage_result *r) {
    npy_array px = {0};
    zerr e = {0};
    assert_int_equal(npy_read(fixture_path("golden/pipe/%s/pixels.npy", c->name), &px, &e), 0);
    assert_int_equal(px.dtype, NPY_U8);
    size_t per = (size_t)c->p.width * c->p.height * 3;
    assert_int_equal((size_t)npy_numel(&px), per * (size_t)r->n);
    int maxd = 0;
    size_t ndiff = 0;
    for (int k = 0; k < r->n; k++)
        for (size_t i = 0; i < per; i++) {
            int d = abs((int)r->images[k][i] - (int)((uint8_t *)px.data)[k * per + i]);
            if (d > maxd) maxd = d;
            ndiff += d != 0;
        }
    printf("  %-40s max |dpixel| %d, %zu of %zu differ\n", c->name, maxd, ndiff, per * r->n);
    assert_true(maxd <= 1);
    npy_free(&px);
}

static void run_case(const char *name) {
    pcase c;
    load_case(name, &c);
    zimage_ctx *ctx = open_model(c.model, 0);
    int lc, lh, lw;
    zimage_latent_shape(ctx, c.p.width, c.p.height, &lc, &lh, &lw);
    step_check sc = {&c, 0, 0, (size_t)c.n * lc * lh * lw};
    c.p.progress = check_step;
    c.p.progress_user = &sc;
    c.p.progress_latents = 1;
    zimage_result r;
    int rc = zimage_generate(ctx, &c.p, &r);
    if (rc) fail_msg("generate %s: %s", name, zimage_errmsg(ctx));
    assert_int_equal(sc.steps_seen, c.p.steps);
    assert_int_equal(r.n, c.n);
    assert_int_equal(r.seeds[0], c.p.seed);
    check_pixels(&c, &r);
    zimage_result_free(&r);
    zimage_free(ctx);
}

static void test_plain(void **st) { (void)st; run_case("plain"); }
static void test_cfg(void **st) { (void)st; run_case("cfg"); }
static void test_batch(void **st) { (void)st; run_case("batch"); }
static void test_bigseed(void **st) { (void)st; run_case("bigseed"); }
static void test_tiny_b(void **st) { (void)st; run_case("tiny-b"); }

/* --init-latents path: the golden noise in, the golden final latents out. */
static void test_init_latents(void **st) {
    (void)st;
    pcase c;
    load_case("plain", &c);
    zimage_ctx *ctx = open_model(c.model, 0);
    npy_array init, fin;
    load_npy_f32(fixture_path("golden/pipe/plain/init_latents.npy"), &init);
    load_npy_f32(fixture_path("golden/pipe/plain/final_latents.npy"), &fin);
    float *out = malloc(sizeof(float) * (size_t)npy_numel(&fin));
    c.p.init_latents = init.data;
    c.p.out_latents = out;
    c.p.seed = 999; /* ignored: latents given */
    zimage_result r;
    assert_int_equal(zimage_generate(ctx, &c.p, &r), 0);
    assert_close("plain final latents from init_latents", out, fin.data, (size_t)npy_numel(&fin), TOL_LATENT);
    zimage_result_free(&r);
    free(out);
    npy_free(&init);
    npy_free(&fin);
    zimage_free(ctx);
}

/* Same prompt twice: the second run skips the text encoder, same pixels. */
static void test_prompt_cache(void **st) {
    (void)st;
    pcase c;
    load_case("batch", &c);
    c.p.steps = 1;
    zimage_ctx *ctx = open_model(c.model, 4);
    zimage_result a, b;
    assert_int_equal(zimage_generate(ctx, &c.p, &a), 0);
    assert_int_equal(a.prompt_cache_hit, 0);
    assert_int_equal(zimage_generate(ctx, &c.p, &b), 0);
    assert_int_equal(b.prompt_cache_hit, 1);
    uint64_t hits, misses;
    zimage_cache_stats(ctx, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 1);
    for (int k = 0; k < a.n; k++)
        assert_memory_equal(a.images[k], b.images[k], (size_t)c.p.width * c.p.height * 3);
    zimage_result_free(&a);
    zimage_result_free(&b);
    zimage_free(ctx);
}

/* Two requests run as one DiT batch give what each gives alone. */
static void test_generate_many(void **st) {
    (void)st;
    pcase c;
    load_case("plain", &c);
    c.p.steps = 2;
    zimage_ctx *ctx = open_model(c.model, 0);
    zimage_params items[2] = {c.p, c.p};
    items[1].prompt = "a much longer prompt about a small wooden boat on a calm green lake at sunrise, film grain";
    items[1].seed = 5;
    zimage_result many[2], one[2];
    assert_int_equal(zimage_generate_many(ctx, items, 2, many), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(zimage_generate(ctx, &items[i], &one[i]), 0);
        size_t n = (size_t)c.p.width * c.p.height * 3;
        int maxd = 0;
        for (size_t k = 0; k < n; k++) {
            int d = abs((int)many[i].images[0][k] - (int)one[i].images[0][k]);
            if (d > maxd) maxd = d;
        }
        printf("  batched vs alone, item %d: max |dpixel| %d\n", i, maxd);
        assert_true(maxd <= 1);
        assert_int_equal(many[i].seeds[0], items[i].seed);
        zimage_result_free(&many[i]);
        zimage_result_free(&one[i]);
    }
    zimage_free(ctx);
}

static int cancel_at_2(const zimage_progress *p, void *user) {
    (void)user;
    return !strcmp(p->stage, "denoise") && p->step >= 2;
}

static void test_cancel_and_errors(void **st) {
    (void)st;
    pcase c;
    load_case("plain", &c);
    zimage_ctx *ctx = open_model(c.model, 0);
    zimage_result r;
    zimage_params p = c.p;
    p.progress = cancel_at_2;
    assert_int_equal(zimage_generate(ctx, &p, &r), ZIMAGE_ECANCELLED);
    assert_null(r.images);
    static const struct {
        int w, h, steps, batch;
        const char *needle;
    } bad[] = {
        {60, 48, 8, 1, "multiples of 16"}, {64, 40, 8, 1, "multiples of 16"}, {0, 48, 8, 1, "out of range"},
        {64, 48, 0, 1, "steps"},           {64, 48, 8, 0, "batch"},           {16384, 48, 8, 1, "out of range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = c.p;
        p.width = bad[i].w;
        p.height = bad[i].h;
        p.steps = bad[i].steps;
        p.batch = bad[i].batch;
        assert_int_equal(zimage_generate(ctx, &p, &r), ZIMAGE_EINVAL);
        if (!strstr(zimage_errmsg(ctx), bad[i].needle))
            fail_msg("error for case %zu lacks '%s': %s", i, bad[i].needle, zimage_errmsg(ctx));
    }
    /* still works afterwards */
    p = c.p;
    p.steps = 1;
    assert_int_equal(zimage_generate(ctx, &p, &r), 0);
    zimage_result_free(&r);
    zimage_free(ctx);
}

static void test_bad_model(void **st) {
    (void)st;
    zimage_options o = ZIMAGE_OPTIONS_DEFAULT;
    o.model = "/nonexistent/model/folder";
    o.device = "cpu";
    zimage_ctx *ctx = (zimage_ctx *)1;
    char err[1024] = "";
    assert_true(zimage_create(&ctx, &o, err, sizeof err) != 0);
    assert_null(ctx);
    printf("  bad model: %s\n", err);
    assert_true(strlen(err) > 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),        cmocka_unit_test(test_cfg),
        cmocka_unit_test(test_batch),        cmocka_unit_test(test_bigseed),
        cmocka_unit_test(test_tiny_b),       cmocka_unit_test(test_init_latents),
        cmocka_unit_test(test_prompt_cache), cmocka_unit_test(test_generate_many),
        cmocka_unit_test(test_cancel_and_errors), cmocka_unit_test(test_bad_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
