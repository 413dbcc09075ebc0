/* test_server_parse.c - unit tests of the server's request parsing and
 * validation (src/server/json_req.c) for the OpenAI, A1111 and jobs APIs:
 * defaults, every field's type and range checks (the error names the
 * field; 400 for a malformed body, 422 for bad values), size strings,
 * A1111 options; plus base64, PNG-to-memory (decoded back with libpng,
 * text chunk included) and the Prometheus rendering. */
#include "util/testutil.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

#include "server/imgenc.h"
#include "server/json_req.h"
#include "server/metrics.h"

static const zs_limits LIM = {64, 1024, 1024, 8, 50, 8, 100};

typedef int (*parse_fn)(const char *, size_t, const zs_limits *, zs_gen_req *, zs_req_err *);

/* Expect failure with status and field. */
static void expect_err(parse_fn fn, const char *body, int status, const char *field) {
    zs_gen_req r;
    zs_req_err e;
    memset(&e, 0, sizeof e);
    int rc = fn(body, strlen(body), &LIM, &r, &e);
    if (rc == 0) {
        zs_gen_req_free(&r);
        fail_msg("accepted %s (expected %d on '%s')", body, status, field);
    }
    if (e.status != status || strcmp(e.field, field) != 0)
        fail_msg("%s: got %d field '%s' (%s), want %d field '%s'", body, e.status, e.field, e.msg, status, field);
    assert_true(strlen(e.msg) > 0);
}

static zs_gen_req expect_ok(parse_fn fn, const char *body) {
    zs_gen_req r;
    zs_req_err e;
    if (fn(body, strlen(body), &LIM, &r, &e)) fail_msg("rejected %s: %d '%s' %s", body, e.status, e.field, e.msg);
    return r;
}

static void test_size_strings(void **state) {
    (void)state;
    int w = 0, h = 0;
    assert_int_equal(zs_parse_size("1024x768", &w, &h), 0);
    assert_int_equal(w, 1024);
    assert_int_equal(h, 768);
    assert_int_equal(zs_parse_size("64X128", &w, &h), 0);
    assert_int_equal(h, 128);
    assert_int_equal(zs_parse_size("832\xc3\x97" "832", &w, &h), 0);
    assert_int_equal(w, 832);
    const char *bad[] = {"", "1024", "x1024", "1024x", "1024x768x2", "-16x16", "abc", "16 x 16", "0x16", "16x16 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (zs_parse_size(bad[i], &w, &h) == 0) fail_msg("accepted size '%s'", bad[i]);
}

static void test_openai(void **state) {
    (void)state;
    zs_gen_req r = expect_ok(zs_parse_openai, "{\"prompt\":\"a cat\"}");
    assert_string_equal(r.prompt, "a cat");
    assert_string_equal(r.negative_prompt, "");
    assert_int_equal(r.width, 1024);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.steps, 8);
    assert_int_equal(r.seed, -1);
    assert_true(r.cfg_scale == 1.0f);
    assert_int_equal(r.format, ZS_FMT_PNG);
    assert_int_equal(r.response_url, 0);
    assert_string_equal(r.size_str, "1024x1024");
    zs_gen_req_free(&r);

    r = expect_ok(zs_parse_openai,
                  "{\"prompt\":\"x\",\"model\":\"z\",\"n\":3,\"size\":\"512x768\",\"response_format\":\"url\","
                  "\"output_format\":\"jpeg\",\"output_compression\":70,\"negative_prompt\":\"blur\",\"seed\":42,"
                  "\"num_inference_steps\":4,\"guidance_scale\":2.5,\"stream\":true,\"partial_images\":2,"
                  "\"quality\":\"high\",\"user\":\"u\",\"unknown_field\":[1,2]}");
    assert_int_equal(r.n, 3);
    assert_int_equal(r.width, 512);
    assert_int_equal(r.height, 768);
    assert_int_equal(r.response_url, 1);
    assert_int_equal(r.format, ZS_FMT_JPEG);
    assert_int_equal(r.quality, 70);
    assert_string_equal(r.negative_prompt, "blur");
    assert_string_equal(r.model, "z");
    assert_int_equal(r.seed, 42);
    assert_int_equal(r.steps, 4);
    assert_true(r.cfg_scale == 3.5f); /* guidance_scale + 1 */
    assert_int_equal(r.stream, 1);
    assert_int_equal(r.partial_images, 2);
    assert_int_equal(r.preview, 1);
    zs_gen_req_free(&r);

    /* steps wins over num_inference_steps; cfg_scale over guidance_scale; null = default */
    r = expect_ok(zs_parse_openai, "{\"prompt\":\"x\",\"steps\":3,\"num_inference_steps\":9,\"cfg_scale\":2,"
                                   "\"guidance_scale\":7,\"size\":\"auto\",\"seed\":null,\"n\":2.0}");
    assert_int_equal(r.steps, 3);
    assert_true(r.cfg_scale == 2.0f);
    assert_int_equal(r.seed, -1);
    assert_int_equal(r.n, 2);
    zs_gen_req_free(&r);

    expect_err(zs_parse_openai, "", 400, "");
    expect_err(zs_parse_openai, "{\"prompt\":", 400, "");
    expect_err(zs_parse_openai, "[1,2]", 400, "");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"prompt\":\"b\"}", 400, "");
    expect_err(zs_parse_openai, "{}", 422, "prompt");
    expect_err(zs_parse_openai, "{\"prompt\":\"\"}", 422, "prompt");
    expect_err(zs_parse_openai, "{\"prompt\":5}", 422, "prompt");
    expect_err(zs_parse_openai,
               "{\"prompt\":\"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
               "8901234567890\"}",
               422, "prompt");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"n\":\"2\"}", 422, "n");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"n\":0}", 422, "n");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"n\":9}", 422, "n");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"n\":1.5}", 422, "n");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"size\":\"1000x1000\"}", 422, "size");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"size\":\"2048x1024\"}", 422, "size");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"size\":\"32x1024\"}", 422, "size");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"size\":\"big\"}", 422, "size");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"size\":1024}", 422, "size");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"response_format\":\"png\"}", 422, "response_format");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"output_format\":\"gif\"}", 422, "output_format");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"output_compression\":101}", 422, "output_compression");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"steps\":0}", 422, "steps");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"steps\":51}", 422, "steps");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"num_inference_steps\":\"4\"}", 422, "num_inference_steps");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"seed\":-2}", 422, "seed");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"seed\":\"7\"}", 422, "seed");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"guidance_scale\":-1}", 422, "guidance_scale");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"cfg_scale\":0.5}", 422, "cfg_scale");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"cfg_scale\":\"7\"}", 422, "cfg_scale");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"stream\":1}", 422, "stream");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"negative_prompt\":[]}", 422, "negative_prompt");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"quality\":3}", 422, "quality");
    expect_err(zs_parse_openai, "{\"prompt\":\"a\",\"model\":{}}", 422, "model");
}

static void test_a1111(void **state) {
    (void)state;
    zs_gen_req r = expect_ok(zs_parse_a1111, "{}");
    assert_string_equal(r.prompt, "");
    assert_int_equal(r.width, 1024);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.send_images, 1);
    assert_non_null(r.echo);
    zs_gen_req_free(&r);

    r = expect_ok(zs_parse_a1111,
                  "{\"prompt\":\"p\",\"negative_prompt\":\"n\",\"width\":512,\"height\":768,\"steps\":6,"
                  "\"cfg_scale\":4.5,\"seed\":-1,\"batch_size\":2,\"n_iter\":3,\"sampler_name\":\"Euler a\","
                  "\"send_images\":false,\"save_images\":true,\"styles\":[],\"override_settings\":{\"samples_format\":\"jpg\"},"
                  "\"alwayson_scripts\":{}}");
    assert_int_equal(r.width, 512);
    assert_int_equal(r.height, 768);
    assert_int_equal(r.steps, 6);
    assert_true(r.cfg_scale == 4.5f);
    assert_int_equal(r.n, 6);
    assert_int_equal(r.batch_size, 2);
    assert_int_equal(r.n_iter, 3);
    assert_int_equal(r.send_images, 0);
    assert_int_equal(r.format, ZS_FMT_JPEG);
    assert_string_equal(json_string_value(json_object_get(r.echo, "sampler_name")), "Euler a");
    assert_int_equal(json_integer_value(json_object_get(r.echo, "width")), 512);
    assert_int_equal(json_integer_value(json_object_get(r.echo, "n_iter")), 3);
    zs_gen_req_free(&r);

    expect_err(zs_parse_a1111, "nope", 400, "");
    expect_err(zs_parse_a1111, "{\"width\":500}", 422, "width");
    expect_err(zs_parse_a1111, "{\"height\":2048}", 422, "height");
    expect_err(zs_parse_a1111, "{\"height\":\"512\"}", 422, "height");
    expect_err(zs_parse_a1111, "{\"batch_size\":3,\"n_iter\":3}", 422, "batch_size");
    expect_err(zs_parse_a1111, "{\"n_iter\":0}", 422, "n_iter");
    expect_err(zs_parse_a1111, "{\"seed\":-5}", 422, "seed");
    expect_err(zs_parse_a1111, "{\"cfg_scale\":31}", 422, "cfg_scale");
    expect_err(zs_parse_a1111, "{\"steps\":100}", 422, "steps");
    expect_err(zs_parse_a1111, "{\"send_images\":\"yes\"}", 422, "send_images");
    expect_err(zs_parse_a1111, "{\"sampler_name\":1}", 422, "sampler_name");
    expect_err(zs_parse_a1111, "{\"override_settings\":[]}", 422, "override_settings");
    expect_err(zs_parse_a1111, "{\"override_settings\":{\"samples_format\":\"bmp\"}}", 422,
               "override_settings.samples_format");
}

static void test_jobs(void **state) {
    (void)state;
    zs_gen_req r = expect_ok(zs_parse_job, "{\"prompt\":\"p\",\"size\":\"128x64\",\"preview\":true,\"n\":2}");
    assert_int_equal(r.width, 128);
    assert_int_equal(r.height, 64);
    assert_int_equal(r.preview, 1);
    assert_int_equal(r.n, 2);
    zs_gen_req_free(&r);
    r = expect_ok(zs_parse_job, "{\"prompt\":\"\",\"width\":64,\"height\":96,\"output_format\":\"webp\",\"quality\":5}");
    assert_int_equal(r.height, 96);
    assert_int_equal(r.format, ZS_FMT_WEBP);
    assert_int_equal(r.quality, 5);
    zs_gen_req_free(&r);
    expect_err(zs_parse_job, "{}", 422, "prompt");
    expect_err(zs_parse_job, "{\"prompt\":\"p\",\"width\":70}", 422, "width");
    expect_err(zs_parse_job, "{\"prompt\":\"p\",\"size\":\"64\"}", 422, "size");
    expect_err(zs_parse_job, "{\"prompt\":\"p\",\"preview\":\"true\"}", 422, "preview");
    expect_err(zs_parse_job, "{\"prompt\":\"p\",\"n\":-1}", 422, "n");
    expect_err(zs_parse_job, "\"just a string\"", 400, "");
}

static void test_options(void **state) {
    (void)state;
    zs_a1111_opts o = {1, 1, ZS_FMT_PNG};
    zs_req_err e;
    const char *b = "{\"live_previews_enable\":false,\"show_progress_every_n_steps\":3,\"samples_format\":\"jpg\","
                    "\"sd_model_checkpoint\":\"tiny\",\"unknown_option\":7}";
    assert_int_equal(zs_parse_a1111_options(b, strlen(b), "tiny", &o, &e), 0);
    assert_int_equal(o.live_previews_enable, 0);
    assert_int_equal(o.show_progress_every_n_steps, 3);
    assert_int_equal(o.samples_format, ZS_FMT_JPEG);
    zs_a1111_opts keep = o;
    b = "{\"live_previews_enable\":true,\"sd_model_checkpoint\":\"other\"}";
    assert_int_equal(zs_parse_a1111_options(b, strlen(b), "tiny", &o, &e), -1);
    assert_string_equal(e.field, "sd_model_checkpoint");
    assert_memory_equal(&o, &keep, sizeof o); /* all or nothing */
    b = "{\"live_previews_enable\":1}";
    assert_int_equal(zs_parse_a1111_options(b, strlen(b), "tiny", &o, &e), -1);
    assert_string_equal(e.field, "live_previews_enable");
    b = "{\"sd_model_checkpoint\":\"tiny\"}";
    assert_int_equal(zs_parse_a1111_options(b, strlen(b), "tiny [abc]", &o, &e), 0);
}

static void test_base64(void **state) {
    (void)state;
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *b = zs_base64((const uint8_t *)in[i], strlen(in[i]));
        assert_string_equal(b, out[i]);
        size_t n;
        uint8_t *d = zs_base64_decode(b, &n);
        assert_non_null(d);
        assert_int_equal(n, strlen(in[i]));
        assert_memory_equal(d, in[i], n);
        free(d);
        free(b);
    }
    size_t n;
    assert_null(zs_base64_decode("Zm9", &n));
    assert_null(zs_base64_decode("Zm=v", &n));
    assert_null(zs_base64_decode("Zm9v!A==", &n));
}

typedef struct rd {
    const uint8_t *p;
    size_t len, pos;
} rd;
static void rd_fn(png_structp png, png_bytep out, png_size_t n) {
    rd *r = png_get_io_ptr(png);
    if (r->pos + n > r->len) png_error(png, "eof");
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
}

static void test_png(void **state) {
    (void)state;
    int w = 48, h = 32;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i * 13 + 7);
    uint8_t *png;
    size_t len;
    assert_int_equal(zs_encode_image(ZS_FMT_PNG, rgb, w, h, "a cat\nSteps: 8, Seed: 42", 0, &png, &len), 0);
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    rd r = {png, len, 0};
    png_set_read_fn(p, &r, rd_fn);
    png_read_info(p, info);
    assert_int_equal(png_get_image_width(p, info), w);
    assert_int_equal(png_get_image_height(p, info), h);
    assert_int_equal(png_get_color_type(p, info), PNG_COLOR_TYPE_RGB);
    png_textp text;
    int nt = 0;
    png_get_text(p, info, &text, &nt);
    assert_int_equal(nt, 1);
    assert_string_equal(text[0].key, "parameters");
    assert_string_equal(text[0].text, "a cat\nSteps: 8, Seed: 42");
    uint8_t *row = malloc((size_t)w * 3);
    int mism = 0;
    for (int y = 0; y < h; y++) {
        png_read_row(p, row, NULL);
        mism += memcmp(row, rgb + (size_t)y * w * 3, (size_t)w * 3) != 0;
    }
    assert_int_equal(mism, 0);
    png_destroy_read_struct(&p, &info, NULL);
    free(row);
    free(png);
    assert_int_equal(zs_format_available(ZS_FMT_PNG), 1);
    /* JPEG / WebP: encoded when the build has them (ZIMAGE_HAVE_JPEG / _WEBP), refused otherwise */
    static const uint8_t magic[3][4] = {{0x89, 'P', 'N', 'G'}, {0xFF, 0xD8, 0xFF, 0}, {'R', 'I', 'F', 'F'}};
    for (int f = ZS_FMT_JPEG; f <= ZS_FMT_WEBP; f++) {
        uint8_t *out = NULL;
        size_t n = 0;
        int rc = zs_encode_image(f, rgb, w, h, "text", 80, &out, &n);
        if (zs_format_available(f)) {
            assert_int_equal(rc, 0);
            assert_true(n > 16);
            assert_memory_equal(out, magic[f], f == ZS_FMT_JPEG ? 3 : 4);
            free(out);
        } else {
            assert_int_equal(rc, -1);
            assert_null(out);
        }
    }
    free(rgb);
}

static void test_metrics(void **state) {
    (void)state;
    zs_metrics *m = zs_metrics_new();
    zs_metrics_request(m, "/v1/images/generations", "POST", 200, 0.3);
    zs_metrics_request(m, "/v1/images/generations", "POST", 200, 7.0);
    zs_metrics_request(m, "/v1/images/generations", "POST", 429, 0.001);
    zs_metrics_queue_wait(m, 0.02);
    zimage_timings t = {.tokenize = 0.1, .encode = 0.2, .denoise = 1.5, .decode = 0.3, .total = 2.1,
                        .peak_device_bytes = 12345};
    zs_metrics_batch(m, 3, &t);
    zs_metrics_job(m, "completed", 3);
    zs_metrics_job(m, "failed", 0);
    zs_gauges g = {.queue_jobs = 2, .queue_capacity = 64, .cache_hits = 5, .cache_misses = 2, .model_loaded = 1};
    char *txt = zs_metrics_render(m, &g);
    const char *want[] = {
        "zimage_http_requests_total{endpoint=\"/v1/images/generations\",method=\"POST\",status=\"200\"} 2\n",
        "zimage_http_requests_total{endpoint=\"/v1/images/generations\",method=\"POST\",status=\"429\"} 1\n",
        "zimage_http_request_duration_seconds_bucket{endpoint=\"/v1/images/generations\",le=\"0.5\"} 2\n",
        "zimage_http_request_duration_seconds_bucket{endpoint=\"/v1/images/generations\",le=\"+Inf\"} 3\n",
        "zimage_http_request_duration_seconds_count{endpoint=\"/v1/images/generations\"} 3\n",
        "zimage_queue_wait_seconds_count 1\n",
        "zimage_batch_size_bucket{le=\"4\"} 1\n",
        "zimage_stage_seconds_total{stage=\"denoise\"} 1.500000\n",
        "zimage_images_generated_total 3\n",
        "zimage_jobs_total{status=\"failed\"} 1\n",
        "zimage_prompt_cache_hits_total 5\n",
        "zimage_prompt_cache_misses_total 2\n",
        "zimage_queue_depth 2\n",
        "zimage_gpu_memory_peak_bytes 12345\n",
        "# TYPE zimage_queue_wait_seconds histogram\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(txt, want[i])) fail_msg("metrics lack: %s\n--- got ---\n%s", want[i], txt);
    free(txt);
    zs_metrics_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_strings), cmocka_unit_test(test_openai), cmocka_unit_test(test_a1111),
        cmocka_unit_test(test_jobs),         cmocka_unit_test(test_options), cmocka_unit_test(test_base64),
        cmocka_unit_test(test_png),          cmocka_unit_test(test_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
