/* test_server_http.c - integration test of the HTTP server: starts it
 * in-process on a free loopback port and drives every endpoint with a real
 * HTTP client (libcurl).
 *
 * Part 1 runs on a fake engine (tests/server_fake.h) whose images encode
 * their seed and prompt, so every answer can be checked exactly: OpenAI
 * (b64, url, SSE stream), A1111 (txt2img, progress, interrupt, options,
 * sd-models), jobs (create, get, events in order, image, cancel), health,
 * readiness, metrics, the web page; 16 concurrent clients with every image
 * checked and every seed generated exactly once (no job lost or
 * duplicated); 429 + Retry-After under overload; 400/401/404/405/413/422;
 * a disconnecting client cancels its job; a failing job fails alone;
 * graceful shutdown; the server stays healthy throughout.
 *
 * Part 2 runs the same kind of traffic on the real library with the tiny
 * fixture model ($ZIMAGE_FIXTURES/models/tiny-a), 64x64, 2 steps: skipped
 * (reported) when the fixture is missing.
 */
#include "util/testutil.h"

#include <curl/curl.h>
#include <jansson.h>
#include <png.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "server/imgenc.h"
#include "server/server.h"
#include "server_fake.h"

/* ---- HTTP client ---------------------------------------------------------------- */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char retry_after[16], content_type[64], location[128], acao[128];
    int curl_rc;
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *u) {
    resp *r = u;
    size_t k = sz * n;
    char *b = realloc(r->body, r->len + k + 1);
    if (!b) return 0;
    r->body = b;
    memcpy(r->body + r->len, p, k);
    r->len += k;
    r->body[r->len] = 0;
    return k;
}

static void hdr_copy(const char *line, size_t n, const char *name, char *dst, size_t cap) {
    size_t nl = strlen(name);
    if (n > nl + 1 && !strncasecmp(line, name, nl) && line[nl] == ':') {
        const char *v = line + nl + 1;
        while (*v == ' ') v++;
        size_t k = (size_t)(line + n - v);
        while (k && (v[k - 1] == '\r' || v[k - 1] == '\n')) k--;
        if (k >= cap) k = cap - 1;
        memcpy(dst, v, k);
        dst[k] = 0;
    }
}

static size_t on_header(char *p, size_t sz, size_t n, void *u) {
    resp *r = u;
    size_t k = sz * n;
    hdr_copy(p, k, "Retry-After", r->retry_after, sizeof r->retry_after);
    hdr_copy(p, k, "Content-Type", r->content_type, sizeof r->content_type);
    hdr_copy(p, k, "Location", r->location, sizeof r->location);
    hdr_copy(p, k, "Access-Control-Allow-Origin", r->acao, sizeof r->acao);
    return k;
}

static char g_base[64];

/* method, path (relative to g_base), JSON body or NULL, bearer key or NULL. */
static resp http_ex(const char *base, const char *method, const char *path, const char *body, const char *key,
                    long timeout_ms) {
    resp r;
    memset(&r, 0, sizeof r);
    CURL *c = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct curl_slist *h = NULL;
    char auth[256];
    if (key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        h = curl_slist_append(h, auth);
    }
    if (body) h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 120000L);
    r.curl_rc = (int)curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body) r.body = calloc(1, 1);
    return r;
}

static resp http(const char *method, const char *path, const char *body) {
    return http_ex(g_base, method, path, body, NULL, 0);
}

static void resp_free(resp *r) { free(r->body); }

static json_t *resp_json(const resp *r) {
    json_error_t e;
    json_t *j = json_loadb(r->body, r->len, JSON_DECODE_ANY, &e);
    if (!j) fail_msg("not JSON (status %ld): %.300s", r->status, r->body);
    return j;
}

static void expect_status(const resp *r, long want, const char *what) {
    if (r->status != want)
        fail_msg("%s: status %ld (curl %d), want %ld; body: %.400s", what, r->status, r->curl_rc, want, r->body);
}

/* ---- PNG decoding ----------------------------------------------------------------- */

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

typedef struct image {
    int w, h;
    uint8_t *rgb;
    char text[1024];
} image;

static int png_decode(const uint8_t *p, size_t len, image *im) {
    memset(im, 0, sizeof *im);
    if (len < 8 || png_sig_cmp(p, 0, 8)) return -1;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    rd r = {p, len, 0};
    image *volatile imv = im;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(imv->rgb);
        imv->rgb = NULL;
        return -1;
    }
    png_set_read_fn(png, &r, rd_fn);
    png_read_info(png, info);
    im->w = (int)png_get_image_width(png, info);
    im->h = (int)png_get_image_height(png, info);
    if (png_get_color_type(png, info) != PNG_COLOR_TYPE_RGB || png_get_bit_depth(png, info) != 8)
        png_error(png, "not RGB8");
    im->rgb = malloc((size_t)im->w * im->h * 3);
    for (int y = 0; y < im->h; y++) png_read_row(png, im->rgb + (size_t)y * im->w * 3, NULL);
    png_read_end(png, info);
    png_textp text;
    int nt = 0;
    if (png_get_text(png, info, &text, &nt) > 0)
        for (int i = 0; i < nt; i++)
            if (!strcmp(text[i].key, "parameters")) snprintf(im->text, sizeof im->text, "%s", text[i].text);
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

static int b64_png(const char *b64, image *im) {
    size_t n;
    uint8_t *d = zs_base64_decode(b64, &n);
    if (!d) return -1;
    int rc = png_decode(d, n, im);
    free(d);
    return rc;
}

/* The fake engine's image for (prompt, seed, w): exact pixel check. */
static int fake_check(const image *im, const char *prompt, int64_t seed, int w) {
    if (!im->rgb || im->w != w) return -1;
    uint8_t want[6];
    uint8_t tmp[16 * 16 * 3];
    fake_image(tmp, 16, 16, prompt, seed);
    memcpy(want, tmp, 5);
    want[5] = (uint8_t)(w / 16);
    return memcmp(im->rgb, want, 6) ? -1 : 0;
}

/* ---- SSE parsing ---------------------------------------------------------------------- */

typedef struct sse_ev {
    char event[64];
    long id;
    json_t *data;
} sse_ev;

static int sse_parse(const char *s, sse_ev *ev, int max) {
    int n = 0;
    while (*s && n < max) {
        const char *end = strstr(s, "\n\n");
        if (!end) break;
        sse_ev *e = &ev[n];
        memset(e, 0, sizeof *e);
        snprintf(e->event, sizeof e->event, "message");
        const char *line = s;
        while (line < end) {
            const char *nl = memchr(line, '\n', (size_t)(end - line));
            if (!nl) nl = end;
            if (!strncmp(line, "event: ", 7)) snprintf(e->event, sizeof e->event, "%.*s", (int)(nl - line - 7), line + 7);
            else if (!strncmp(line, "id: ", 4)) e->id = strtol(line + 4, NULL, 10);
            else if (!strncmp(line, "data: ", 6)) e->data = json_loadb(line + 6, (size_t)(nl - line - 6), 0, NULL);
            line = nl + 1;
        }
        s = end + 2;
        if (e->data) n++;
    }
    return n;
}

static void sse_free(sse_ev *ev, int n) {
    for (int i = 0; i < n; i++) json_decref(ev[i].data);
}

/* ---- metrics -------------------------------------------------------------------------- */

static double metric(const char *name_and_labels) {
    resp r = http("GET", "/metrics", NULL);
    expect_status(&r, 200, "metrics");
    double v = -1;
    char key[256];
    snprintf(key, sizeof key, "\n%s ", name_and_labels);
    const char *p = strstr(r.body, key);
    if (p) v = strtod(p + strlen(key), NULL);
    resp_free(&r);
    return v;
}

/* ---- servers ------------------------------------------------------------------------------ */

static zs_server *start_fake(zs_config *cfg, int step_ms, fake_engine **fe) {
    zs_engine e = fake_new(step_ms, fe);
    zs_server *s;
    char err[256];
    cfg->host = "127.0.0.1";
    cfg->port = 0;
    cfg->quiet = 1;
    if (zs_start(&s, cfg, &e, 1, err, sizeof err)) fail_msg("zs_start: %s", err);
    snprintf(g_base, sizeof g_base, "http://127.0.0.1:%d", zs_port(s));
    return s;
}

static void small_config(zs_config *c) {
    zs_config_defaults(c);
    c->min_size = 32;
    c->max_size = 256;
    c->default_size = 64;
    c->default_steps = 2;
    c->max_body = 64 * 1024;
    c->model_name = "fake-model";
}

/* ---- part 1: fake engine ---------------------------------------------------------------------- */

static void test_basic_endpoints(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    fake_engine *f;
    zs_server *s = start_fake(&c, 0, &f);
    resp r = http("GET", "/healthz", NULL);
    expect_status(&r, 200, "healthz");
    resp_free(&r);
    r = http("GET", "/readyz", NULL);
    expect_status(&r, 200, "readyz");
    json_t *j = resp_json(&r);
    assert_true(json_is_true(json_object_get(j, "ready")));
    json_decref(j);
    resp_free(&r);
    r = http("GET", "/v1/models", NULL);
    expect_status(&r, 200, "models");
    j = resp_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id")),
                        "fake-model");
    json_decref(j);
    resp_free(&r);
    r = http("GET", "/v1/models/fake-model", NULL);
    expect_status(&r, 200, "model");
    resp_free(&r);
    r = http("GET", "/v1/info", NULL);
    expect_status(&r, 200, "info");
    j = resp_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "min_size")), 32);
    assert_int_equal(json_integer_value(json_object_get(j, "default_size")), 64);
    json_decref(j);
    resp_free(&r);
    r = http("GET", "/", NULL);
    expect_status(&r, 200, "page");
    assert_non_null(strstr(r.content_type, "text/html"));
    assert_non_null(strstr(r.body, "<title>zimage</title>"));
    assert_null(strstr(r.body, "https://")); /* no CDN */
    resp_free(&r);
    r = http("GET", "/sdapi/v1/sd-models", NULL);
    expect_status(&r, 200, "sd-models");
    j = resp_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "model_name")), "fake-model");
    json_decref(j);
    resp_free(&r);
    r = http("GET", "/sdapi/v1/samplers", NULL);
    expect_status(&r, 200, "samplers");
    resp_free(&r);
    r = http("GET", "/sdapi/v1/options", NULL);
    expect_status(&r, 200, "options");
    j = resp_json(&r);
    assert_true(json_is_true(json_object_get(j, "live_previews_enable")));
    assert_string_equal(json_string_value(json_object_get(j, "sd_model_checkpoint")), "fake-model");
    json_decref(j);
    resp_free(&r);
    r = http("POST", "/sdapi/v1/options", "{\"live_previews_enable\":false,\"unknown\":1}");
    expect_status(&r, 200, "options post");
    resp_free(&r);
    r = http("GET", "/sdapi/v1/options", NULL);
    j = resp_json(&r);
    assert_true(json_is_false(json_object_get(j, "live_previews_enable")));
    json_decref(j);
    resp_free(&r);
    r = http("POST", "/sdapi/v1/options", "{\"sd_model_checkpoint\":\"nope\"}");
    expect_status(&r, 422, "options bad model");
    resp_free(&r);
    r = http("GET", "/sdapi/v1/progress", NULL);
    expect_status(&r, 200, "progress idle");
    j = resp_json(&r);
    assert_true(json_real_value(json_object_get(j, "progress")) == 0.0);
    json_decref(j);
    resp_free(&r);
    r = http("GET", "/metrics", NULL);
    expect_status(&r, 200, "metrics");
    assert_non_null(strstr(r.content_type, "text/plain"));
    const char *names[] = {"zimage_http_requests_total{endpoint=\"/healthz\",method=\"GET\",status=\"200\"} 1",
                           "# TYPE zimage_http_request_duration_seconds histogram",
                           "# TYPE zimage_queue_wait_seconds histogram",
                           "zimage_queue_depth 0",
                           "zimage_images_generated_total 0",
                           "zimage_stage_seconds_total{stage=\"denoise\"}",
                           "zimage_prompt_cache_hits_total",
                           "zimage_prompt_cache_misses_total",
                           "zimage_gpu_memory_peak_bytes"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strstr(r.body, names[i])) fail_msg("metrics lack '%s'", names[i]);
    resp_free(&r);
    zs_free(s);
}

static void test_openai(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    fake_engine *f;
    zs_server *s = start_fake(&c, 2, &f);
    resp r = http("POST", "/v1/images/generations",
                  "{\"prompt\":\"a red fox\",\"n\":2,\"size\":\"64x96\",\"seed\":1234,\"steps\":3}");
    expect_status(&r, 200, "openai");
    json_t *j = resp_json(&r);
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 2);
    assert_true(json_integer_value(json_object_get(j, "created")) > 0);
    assert_string_equal(json_string_value(json_object_get(j, "output_format")), "png");
    for (int i = 0; i < 2; i++) {
        json_t *it = json_array_get(data, (size_t)i);
        image im;
        assert_int_equal(b64_png(json_string_value(json_object_get(it, "b64_json")), &im), 0);
        assert_int_equal(im.h, 96);
        if (fake_check(&im, "a red fox", 1234 + i, 64)) fail_msg("openai image %d has the wrong content", i);
        assert_non_null(strstr(im.text, "Seed: ")); /* A1111 parameters chunk */
        assert_int_equal(json_integer_value(json_object_get(it, "seed")), 1234 + i);
        free(im.rgb);
    }
    json_decref(j);
    resp_free(&r);

    /* response_format url: the image can be fetched */
    r = http("POST", "/v1/images/generations", "{\"prompt\":\"u\",\"response_format\":\"url\",\"seed\":5}");
    expect_status(&r, 200, "openai url");
    j = resp_json(&r);
    const char *url = json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "url"));
    assert_non_null(url);
    assert_true(!strncmp(url, g_base, strlen(g_base)));
    resp ri = http("GET", url + strlen(g_base), NULL);
    expect_status(&ri, 200, "url image");
    assert_string_equal(ri.content_type, "image/png");
    image im;
    assert_int_equal(png_decode((uint8_t *)ri.body, ri.len, &im), 0);
    assert_int_equal(fake_check(&im, "u", 5, 64), 0);
    free(im.rgb);
    resp_free(&ri);
    json_decref(j);
    resp_free(&r);

    /* stream: partial images (previews) in order, then completed */
    f->step_ms = 30;
    r = http("POST", "/v1/images/generations", "{\"prompt\":\"s\",\"stream\":true,\"seed\":77,\"steps\":5}");
    expect_status(&r, 200, "openai stream");
    assert_non_null(strstr(r.content_type, "text/event-stream"));
    sse_ev ev[64];
    int n = sse_parse(r.body, ev, 64);
    assert_true(n >= 2); /* at least one preview (a slow reader may skip some) */
    int partial = 0;
    for (int i = 0; i < n - 1; i++) {
        assert_string_equal(ev[i].event, "image_generation.partial_image");
        assert_int_equal(json_integer_value(json_object_get(ev[i].data, "partial_image_index")), partial);
        image pv;
        assert_int_equal(b64_png(json_string_value(json_object_get(ev[i].data, "b64_json")), &pv), 0);
        assert_int_equal(pv.w, 8);
        free(pv.rgb);
        partial++;
    }
    assert_string_equal(ev[n - 1].event, "image_generation.completed");
    assert_string_equal(json_string_value(json_object_get(ev[n - 1].data, "type")), "image_generation.completed");
    assert_int_equal(b64_png(json_string_value(json_object_get(ev[n - 1].data, "b64_json")), &im), 0);
    assert_int_equal(fake_check(&im, "s", 77, 64), 0);
    free(im.rgb);
    sse_free(ev, n);
    resp_free(&r);

    /* partial_images limits the previews */
    r = http("POST", "/v1/images/generations",
             "{\"prompt\":\"s\",\"stream\":true,\"seed\":78,\"steps\":8,\"partial_images\":2}");
    expect_status(&r, 200, "openai stream 2");
    n = sse_parse(r.body, ev, 64);
    int np = 0;
    for (int i = 0; i < n; i++) np += !strcmp(ev[i].event, "image_generation.partial_image");
    assert_true(np <= 2);
    assert_string_equal(ev[n - 1].event, "image_generation.completed");
    sse_free(ev, n);
    resp_free(&r);
    zs_free(s);
}

typedef struct bg_req {
    const char *method, *path, *body;
    long timeout_ms;
    resp r;
    pthread_t th;
} bg_req;

static void *bg_main(void *arg) {
    bg_req *b = arg;
    b->r = http_ex(g_base, b->method, b->path, b->body, NULL, b->timeout_ms);
    return NULL;
}

static void bg_start(bg_req *b, const char *method, const char *path, const char *body, long timeout_ms) {
    b->method = method;
    b->path = path;
    b->body = body;
    b->timeout_ms = timeout_ms;
    pthread_create(&b->th, NULL, bg_main, b);
}

static void test_a1111(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    fake_engine *f;
    zs_server *s = start_fake(&c, 1, &f);
    resp r = http("POST", "/sdapi/v1/txt2img",
                  "{\"prompt\":\"castle\",\"negative_prompt\":\"fog\",\"width\":64,\"height\":64,\"steps\":2,"
                  "\"cfg_scale\":1,\"seed\":500,\"batch_size\":2,\"n_iter\":2,\"sampler_name\":\"Euler\"}");
    expect_status(&r, 200, "txt2img");
    json_t *j = resp_json(&r);
    json_t *imgs = json_object_get(j, "images");
    assert_int_equal(json_array_size(imgs), 4);
    json_t *info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    assert_non_null(info);
    json_t *seeds = json_object_get(info, "all_seeds");
    assert_int_equal(json_array_size(seeds), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(json_integer_value(json_array_get(seeds, (size_t)i)), 500 + i);
        image im;
        assert_int_equal(b64_png(json_string_value(json_array_get(imgs, (size_t)i)), &im), 0);
        if (fake_check(&im, "castle", 500 + i, 64)) fail_msg("txt2img image %d wrong", i);
        assert_non_null(strstr(im.text, "castle"));
        free(im.rgb);
    }
    assert_int_equal(json_integer_value(json_object_get(info, "seed")), 500);
    assert_string_equal(json_string_value(json_object_get(info, "negative_prompt")), "fog");
    assert_int_equal(json_array_size(json_object_get(info, "infotexts")), 4);
    json_t *params = json_object_get(j, "parameters");
    assert_int_equal(json_integer_value(json_object_get(params, "batch_size")), 2);
    assert_string_equal(json_string_value(json_object_get(params, "prompt")), "castle");
    json_decref(info);
    json_decref(j);
    resp_free(&r);

    /* random seed: all_seeds consecutive from a non-negative seed */
    r = http("POST", "/sdapi/v1/txt2img", "{\"prompt\":\"r\",\"width\":32,\"height\":32,\"seed\":-1,\"batch_size\":2}");
    expect_status(&r, 200, "txt2img random");
    j = resp_json(&r);
    info = json_loads(json_string_value(json_object_get(j, "info")), 0, NULL);
    seeds = json_object_get(info, "all_seeds");
    json_int_t s0 = json_integer_value(json_array_get(seeds, 0));
    assert_true(s0 >= 0);
    assert_int_equal(json_integer_value(json_array_get(seeds, 1)), s0 + 1);
    json_decref(info);
    json_decref(j);
    resp_free(&r);

    /* progress while running, then interrupt: the request returns what is done */
    f->step_ms = 100;
    bg_req b;
    bg_start(&b, "POST", "/sdapi/v1/txt2img",
             "{\"prompt\":\"long\",\"width\":32,\"height\":32,\"steps\":10,\"seed\":9,\"n_iter\":3}", 0);
    double prog = 0;
    json_t *cur = NULL;
    for (int i = 0; i < 100 && prog <= 0; i++) {
        fake_sleep_ms(50);
        r = http("GET", "/sdapi/v1/progress", NULL);
        j = resp_json(&r);
        prog = json_number_value(json_object_get(j, "progress"));
        if (prog > 0) {
            json_t *st = json_object_get(j, "state");
            assert_int_equal(json_integer_value(json_object_get(st, "sampling_steps")), 10);
            assert_true(json_integer_value(json_object_get(st, "job_count")) >= 1);
            cur = json_incref(json_object_get(j, "current_image"));
        }
        json_decref(j);
        resp_free(&r);
    }
    assert_true(prog > 0);
    assert_true(json_is_string(cur)); /* live preview of the running job */
    json_decref(cur);
    r = http("POST", "/sdapi/v1/interrupt", NULL);
    expect_status(&r, 200, "interrupt");
    resp_free(&r);
    pthread_join(b.th, NULL);
    expect_status(&b.r, 200, "interrupted txt2img");
    j = resp_json(&b.r);
    assert_true(json_array_size(json_object_get(j, "images")) < 3);
    json_decref(j);
    resp_free(&b.r);
    f->step_ms = 1;
    r = http("GET", "/healthz", NULL);
    expect_status(&r, 200, "healthz after interrupt");
    resp_free(&r);
    zs_free(s);
}

static void test_jobs(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    fake_engine *f;
    zs_server *s = start_fake(&c, 20, &f);
    fake_close_gate(f); /* the job waits until its event stream is open */
    resp r = http("POST", "/v1/jobs", "{\"prompt\":\"job one\",\"width\":64,\"height\":32,\"steps\":6,\"seed\":31,"
                                      "\"n\":2,\"preview\":true}");
    expect_status(&r, 202, "jobs create");
    json_t *j = resp_json(&r);
    char id[64];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "id")));
    assert_true(!strncmp(id, "job_", 4));
    char loc[128];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", id);
    assert_string_equal(r.location, loc);
    const char *st = json_string_value(json_object_get(j, "status"));
    assert_true(!strcmp(st, "queued") || !strcmp(st, "running"));
    json_decref(j);
    resp_free(&r);

    char path[160];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    bg_req ev_req;
    bg_start(&ev_req, "GET", path, NULL, 0);
    fake_wait_gate(f);
    fake_sleep_ms(200);
    fake_open_gate(f);
    pthread_join(ev_req.th, NULL);
    r = ev_req.r;
    expect_status(&r, 200, "events");
    sse_ev ev[128];
    int n = sse_parse(r.body, ev, 128);
    assert_true(n >= 3);
    assert_string_equal(ev[0].event, "status");
    long last_id = 0;
    double last_p = -1;
    int previews = 0;
    for (int i = 0; i < n; i++) {
        if (ev[i].id <= last_id) fail_msg("event ids out of order: %ld after %ld", ev[i].id, last_id);
        last_id = ev[i].id;
        if (!strcmp(ev[i].event, "progress")) {
            double p = json_number_value(json_object_get(ev[i].data, "progress"));
            if (p < last_p) fail_msg("progress went back: %f after %f (event %d)", p, last_p, i);
            last_p = p;
            previews += json_object_get(ev[i].data, "preview") != NULL;
            if (i == n - 1) fail_msg("last event is progress");
        }
    }
    assert_true(previews >= 1);
    assert_string_equal(ev[n - 1].event, "completed");
    json_t *fin = ev[n - 1].data;
    assert_string_equal(json_string_value(json_object_get(fin, "status")), "completed");
    json_t *imgs = json_object_get(json_object_get(fin, "result"), "images");
    assert_int_equal(json_array_size(imgs), 2);
    for (int i = 0; i < 2; i++) {
        image im;
        assert_int_equal(b64_png(json_string_value(json_object_get(json_array_get(imgs, (size_t)i), "b64_json")), &im), 0);
        assert_int_equal(fake_check(&im, "job one", 31 + i, 64), 0);
        free(im.rgb);
    }
    sse_free(ev, n);
    resp_free(&r);

    r = http("GET", loc, NULL);
    expect_status(&r, 200, "job get");
    j = resp_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "completed");
    assert_true(json_number_value(json_object_get(j, "progress")) == 1.0);
    json_decref(j);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/images/1", id);
    r = http("GET", path, NULL);
    expect_status(&r, 200, "job image");
    image im;
    assert_int_equal(png_decode((uint8_t *)r.body, r.len, &im), 0);
    assert_int_equal(fake_check(&im, "job one", 32, 64), 0);
    free(im.rgb);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/images/7", id);
    r = http("GET", path, NULL);
    expect_status(&r, 404, "job image out of range");
    resp_free(&r);

    /* cancel a queued job */
    f->step_ms = 50;
    r = http("POST", "/v1/jobs", "{\"prompt\":\"blocker\",\"steps\":10,\"seed\":1,\"width\":32,\"height\":32}");
    expect_status(&r, 202, "blocker");
    j = resp_json(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s?b64=0", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    resp_free(&r);
    int running = 0; /* wait until the worker has taken the blocker */
    for (int i = 0; i < 200 && !running; i++) {
        r = http("GET", path, NULL);
        j = resp_json(&r);
        running = !strcmp(json_string_value(json_object_get(j, "status")), "running");
        json_decref(j);
        resp_free(&r);
        if (!running) fake_sleep_ms(10);
    }
    assert_true(running);
    r = http("POST", "/v1/jobs", "{\"prompt\":\"victim\",\"steps\":10,\"seed\":4242,\"width\":64,\"height\":64}");
    expect_status(&r, 202, "victim");
    j = resp_json(&r);
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "id")));
    assert_int_equal(json_integer_value(json_object_get(j, "queue_position")), 0);
    json_decref(j);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", id);
    r = http("POST", path, NULL);
    expect_status(&r, 200, "cancel");
    j = resp_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "cancelled");
    json_decref(j);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    r = http("GET", path, NULL);
    n = sse_parse(r.body, ev, 8);
    assert_true(n >= 1);
    assert_string_equal(ev[n - 1].event, "cancelled");
    sse_free(ev, n);
    resp_free(&r);
    r = http("GET", "/v1/jobs/job_doesnotexist", NULL);
    expect_status(&r, 404, "unknown job");
    resp_free(&r);
    fake_sleep_ms(600); /* the blocker finishes; the victim must not run */
    assert_int_equal(fake_count_seed(f, 4242), 0);
    zs_free(s);
}

static void test_errors(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    fake_engine *f;
    zs_server *s = start_fake(&c, 0, &f);
    struct {
        const char *method, *path, *body;
        long status;
        const char *field;
    } cases[] = {
        {"POST", "/v1/images/generations", "{not json", 400, NULL},
        {"POST", "/v1/images/generations", "{\"n\":1}", 400, "prompt"},
        {"POST", "/v1/images/generations", "{\"prompt\":\"a\",\"n\":\"2\"}", 400, "n"},
        {"POST", "/v1/images/generations", "{\"prompt\":\"a\",\"size\":\"50x50\"}", 400, "size"},
        {"POST", "/v1/images/generations", "{\"prompt\":\"a\",\"size\":\"512x512\"}", 400, "size"},
        {"POST", "/v1/images/generations", "{\"prompt\":\"a\",\"steps\":51}", 400, "steps"},
        {"POST", "/v1/images/generations", "{\"prompt\":\"a\",\"n\":9}", 400, "n"},
        {"POST", "/v1/images/generations", "{\"prompt\":\"a\",\"output_format\":\"gif\"}", 400, "output_format"},
        {"POST", "/sdapi/v1/txt2img", "[]", 400, NULL},
        {"POST", "/sdapi/v1/txt2img", "{\"width\":33}", 422, "width"},
        {"POST", "/sdapi/v1/txt2img", "{\"steps\":\"many\"}", 422, "steps"},
        {"POST", "/sdapi/v1/txt2img", "{\"batch_size\":4,\"n_iter\":4}", 422, "batch_size"},
        {"POST", "/v1/jobs", "{\"prompt\":1}", 422, "prompt"},
        {"POST", "/v1/jobs", "", 400, NULL},
        {"GET", "/nope", NULL, 404, NULL},
        {"GET", "/v1/images/generations", NULL, 405, NULL},
        {"DELETE", "/healthz", NULL, 405, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        resp r = http(cases[i].method, cases[i].path, cases[i].body);
        char what[256];
        snprintf(what, sizeof what, "%s %s %s", cases[i].method, cases[i].path, cases[i].body ? cases[i].body : "");
        expect_status(&r, cases[i].status, what);
        json_t *j = resp_json(&r);
        if (cases[i].field) {
            const char *got = NULL;
            if (!strncmp(cases[i].path, "/sdapi", 6)) {
                json_t *loc = json_object_get(json_array_get(json_object_get(j, "detail"), 0), "loc");
                got = json_string_value(json_array_get(loc, 1));
            } else {
                got = json_string_value(json_object_get(json_object_get(j, "error"), "param"));
            }
            if (!got || strcmp(got, cases[i].field)) fail_msg("%s: field %s, want %s", what, got ? got : "(none)", cases[i].field);
        } else if (cases[i].status != 404 || strncmp(cases[i].path, "/nope", 5) == 0) {
            assert_true(json_object_get(j, "error") || json_object_get(j, "detail"));
        }
        json_decref(j);
        resp_free(&r);
    }
    /* body over the limit */
    size_t big = 100 * 1024;
    char *body = malloc(big + 64);
    snprintf(body, big + 64, "{\"prompt\":\"");
    size_t k = strlen(body);
    memset(body + k, 'a', big);
    strcpy(body + k + big, "\"}");
    resp r = http("POST", "/v1/images/generations", body);
    expect_status(&r, 413, "body too large");
    resp_free(&r);
    free(body);
    /* a failing job fails alone; the server keeps serving */
    r = http("POST", "/v1/images/generations", "{\"prompt\":\"please FAIL\",\"seed\":1}");
    expect_status(&r, 500, "failing job");
    json_t *j = resp_json(&r);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")), "fake failure"));
    json_decref(j);
    resp_free(&r);
    r = http("POST", "/sdapi/v1/txt2img", "{\"prompt\":\"FAIL again\",\"width\":32,\"height\":32}");
    expect_status(&r, 500, "failing a1111 job");
    resp_free(&r);
    r = http("POST", "/v1/images/generations", "{\"prompt\":\"fine\",\"seed\":2}");
    expect_status(&r, 200, "after failure");
    resp_free(&r);
    r = http("GET", "/healthz", NULL);
    expect_status(&r, 200, "healthz after errors");
    resp_free(&r);
    assert_true(metric("zimage_jobs_total{status=\"failed\"}") == 2);
    zs_free(s);
}

static void test_auth_cors(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    c.api_key = "sekret";
    c.cors = "http://example.com";
    fake_engine *f;
    zs_server *s = start_fake(&c, 0, &f);
    resp r = http("GET", "/healthz", NULL);
    expect_status(&r, 401, "no key");
    resp_free(&r);
    r = http_ex(g_base, "GET", "/v1/models", NULL, "wrong", 0);
    expect_status(&r, 401, "wrong key");
    resp_free(&r);
    r = http_ex(g_base, "GET", "/v1/models", NULL, "sekretX", 0);
    expect_status(&r, 401, "longer key");
    resp_free(&r);
    r = http_ex(g_base, "POST", "/v1/images/generations", "{\"prompt\":\"k\",\"seed\":3}", "sekret", 0);
    expect_status(&r, 200, "right key");
    assert_string_equal(r.acao, "http://example.com");
    resp_free(&r);
    r = http("GET", "/", NULL);
    expect_status(&r, 200, "page is public");
    resp_free(&r);
    r = http("OPTIONS", "/v1/images/generations", NULL);
    expect_status(&r, 204, "preflight");
    assert_string_equal(r.acao, "http://example.com");
    resp_free(&r);
    zs_free(s);
}

/* 16 concurrent clients, each a mix of the three APIs; every image checked,
 * every seed generated exactly once. */
#define NCLIENTS 16
#define PER_CLIENT 3

typedef struct client {
    int id;
    int ok, bad;
    char msg[256];
    pthread_t th;
    const char *base;
    int real; /* real model: check sizes only */
    int size;
} client;

static void client_fail(client *cl, const char *fmt, const char *detail) {
    cl->bad++;
    if (!cl->msg[0]) snprintf(cl->msg, sizeof cl->msg, fmt, detail);
}

static int check_b64(client *cl, const char *b64, const char *prompt, int64_t seed) {
    image im;
    if (!b64 || b64_png(b64, &im)) return -1;
    int rc = cl->real ? (im.w == cl->size && im.h == cl->size ? 0 : -1) : fake_check(&im, prompt, seed, cl->size);
    free(im.rgb);
    return rc;
}

static void *client_main(void *arg) {
    client *cl = arg;
    for (int k = 0; k < PER_CLIENT; k++) {
        int64_t seed = 10000 + cl->id * 100 + k * 10;
        char prompt[64], body[512];
        snprintf(prompt, sizeof prompt, "client %d request %d", cl->id, k);
        int kind = (cl->id + k) % 3;
        if (kind == 0) {
            snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"n\":2,\"size\":\"%dx%d\",\"seed\":%lld,\"steps\":2}", prompt,
                     cl->size, cl->size, (long long)seed);
            resp r = http_ex(cl->base, "POST", "/v1/images/generations", body, NULL, 0);
            json_t *j = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
            json_t *d = json_object_get(j, "data");
            if (!j || json_array_size(d) != 2) client_fail(cl, "openai: %.200s", r.body);
            else
                for (int i = 0; i < 2; i++)
                    if (check_b64(cl, json_string_value(json_object_get(json_array_get(d, (size_t)i), "b64_json")),
                                  prompt, seed + i))
                        client_fail(cl, "openai image wrong (%s)", prompt);
            json_decref(j);
            resp_free(&r);
        } else if (kind == 1) {
            snprintf(body, sizeof body,
                     "{\"prompt\":\"%s\",\"width\":%d,\"height\":%d,\"seed\":%lld,\"steps\":2,\"batch_size\":2}",
                     prompt, cl->size, cl->size, (long long)seed);
            resp r = http_ex(cl->base, "POST", "/sdapi/v1/txt2img", body, NULL, 0);
            json_t *j = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
            json_t *im = json_object_get(j, "images");
            if (!j || json_array_size(im) != 2) client_fail(cl, "a1111: %.200s", r.body);
            else
                for (int i = 0; i < 2; i++)
                    if (check_b64(cl, json_string_value(json_array_get(im, (size_t)i)), prompt, seed + i))
                        client_fail(cl, "a1111 image wrong (%s)", prompt);
            json_decref(j);
            resp_free(&r);
        } else {
            snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"size\":\"%dx%d\",\"seed\":%lld,\"steps\":2}", prompt,
                     cl->size, cl->size, (long long)seed);
            resp r = http_ex(cl->base, "POST", "/v1/jobs", body, NULL, 0);
            json_t *j = r.status == 202 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
            if (!j) {
                client_fail(cl, "jobs create: %.200s", r.body);
                resp_free(&r);
                continue;
            }
            char path[128];
            snprintf(path, sizeof path, "/v1/jobs/%s/events", json_string_value(json_object_get(j, "id")));
            json_decref(j);
            resp_free(&r);
            r = http_ex(cl->base, "GET", path, NULL, NULL, 0);
            sse_ev ev[64];
            int n = sse_parse(r.body, ev, 64);
            if (n < 2 || strcmp(ev[n - 1].event, "completed")) {
                client_fail(cl, "events: %.200s", r.body);
            } else {
                json_t *imgs = json_object_get(json_object_get(ev[n - 1].data, "result"), "images");
                if (json_array_size(imgs) != 1 ||
                    check_b64(cl, json_string_value(json_object_get(json_array_get(imgs, 0), "b64_json")), prompt, seed))
                    client_fail(cl, "jobs image wrong (%s)", prompt);
                double last = -1;
                for (int i = 0; i < n; i++) {
                    json_t *p = json_object_get(ev[i].data, "progress");
                    if (p && !strcmp(ev[i].event, "progress")) {
                        if (json_number_value(p) < last) client_fail(cl, "progress out of order (%s)", prompt);
                        last = json_number_value(p);
                    }
                }
            }
            sse_free(ev, n);
            resp_free(&r);
        }
        cl->ok++;
    }
    return NULL;
}

static void run_clients(const char *base, int real, int size) {
    client cl[NCLIENTS];
    memset(cl, 0, sizeof cl);
    for (int i = 0; i < NCLIENTS; i++) {
        cl[i].id = i;
        cl[i].base = base;
        cl[i].real = real;
        cl[i].size = size;
        pthread_create(&cl[i].th, NULL, client_main, &cl[i]);
    }
    int bad = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        pthread_join(cl[i].th, NULL);
        if (cl[i].bad) {
            bad++;
            print_error("client %d: %d bad answers, first: %s\n", i, cl[i].bad, cl[i].msg);
        }
    }
    assert_int_equal(bad, 0);
}

static void test_concurrency(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    c.max_batch = 4;
    fake_engine *f;
    zs_server *s = start_fake(&c, 3, &f);
    run_clients(g_base, 0, 64);
    /* no job lost or duplicated: each seed generated exactly once */
    int expected_images = 0;
    for (int i = 0; i < NCLIENTS; i++)
        for (int k = 0; k < PER_CLIENT; k++) {
            int64_t seed = 10000 + i * 100 + k * 10;
            int kind = (i + k) % 3, n = kind == 2 ? 1 : 2;
            expected_images += n;
            for (int m = 0; m < n; m++)
                if (fake_count_seed(f, seed + m) != 1)
                    fail_msg("seed %lld generated %d times", (long long)(seed + m), fake_count_seed(f, seed + m));
        }
    assert_int_equal(f->n_run, expected_images);
    assert_true(metric("zimage_images_generated_total") == expected_images);
    /* batching happened: fewer engine calls than images */
    print_message("concurrency: %d images in %d engine calls\n", expected_images, f->calls);
    assert_true(f->calls < expected_images);
    assert_true(metric("zimage_queue_depth") == 0);
    resp r = http("GET", "/readyz", NULL);
    expect_status(&r, 200, "readyz after load");
    resp_free(&r);
    zs_free(s);
}

typedef struct flood {
    resp r;
    pthread_t th;
    int i;
} flood;

static void *flood_main(void *arg) {
    flood *fl = arg;
    char body[128];
    snprintf(body, sizeof body, "{\"prompt\":\"flood\",\"seed\":%d,\"steps\":4,\"size\":\"32x32\"}", 700 + fl->i);
    fl->r = http_ex(g_base, "POST", "/v1/images/generations", body, NULL, 0);
    return NULL;
}

static void test_overload(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    c.max_queue = 2;
    c.max_batch = 1;
    fake_engine *f;
    zs_server *s = start_fake(&c, 40, &f);
    enum { N = 12 };
    flood fl[N];
    memset(fl, 0, sizeof fl);
    for (int i = 0; i < N; i++) {
        fl[i].i = i;
        pthread_create(&fl[i].th, NULL, flood_main, &fl[i]);
    }
    /* readiness reflects the full queue while it is full */
    int not_ready = 0;
    for (int i = 0; i < 100 && !not_ready; i++) {
        resp r = http("GET", "/readyz", NULL);
        not_ready = r.status == 503;
        resp_free(&r);
        fake_sleep_ms(10);
    }
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(fl[i].th, NULL);
        if (fl[i].r.status == 200) ok++;
        else if (fl[i].r.status == 429) {
            busy++;
            assert_true(atoi(fl[i].r.retry_after) >= 1);
            json_t *j = resp_json(&fl[i].r);
            assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "queue_full");
            json_decref(j);
        } else {
            fail_msg("flood %d: status %ld %s", i, fl[i].r.status, fl[i].r.body);
        }
        resp_free(&fl[i].r);
    }
    print_message("overload: %d ok, %d got 429 (readyz 503 seen: %d)\n", ok, busy, not_ready);
    assert_true(ok >= 2); /* the queue's capacity (more if the worker took one early) */
    assert_true(busy >= 1);
    assert_int_equal(ok + busy, N);
    assert_true(not_ready);
    assert_true(metric("zimage_queue_rejected_total") == busy);
    resp r = http("GET", "/readyz", NULL);
    expect_status(&r, 200, "ready again");
    resp_free(&r);
    zs_free(s);
}

static void test_disconnect_cancels(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    c.max_batch = 1;
    fake_engine *f;
    zs_server *s = start_fake(&c, 50, &f);
    /* first request occupies the worker, the second waits in the queue;
     * both clients give up early */
    bg_req a, b;
    bg_start(&a, "POST", "/v1/images/generations", "{\"prompt\":\"slow\",\"seed\":811,\"steps\":40,\"size\":\"32x32\"}",
             1200);
    fake_sleep_ms(50);
    bg_start(&b, "POST", "/v1/images/generations", "{\"prompt\":\"queued\",\"seed\":822,\"steps\":10,\"size\":\"32x32\"}",
             200);
    pthread_join(a.th, NULL);
    pthread_join(b.th, NULL);
    assert_int_equal(a.r.curl_rc, CURLE_OPERATION_TIMEDOUT);
    resp_free(&a.r);
    resp_free(&b.r);
    for (int i = 0; i < 40 && metric("zimage_jobs_total{status=\"cancelled\"}") < 2; i++) fake_sleep_ms(50);
    assert_true(metric("zimage_jobs_total{status=\"cancelled\"}") == 2);
    fake_sleep_ms(100);
    assert_int_equal(fake_count_seed(f, 811), 0); /* running one stopped */
    assert_int_equal(fake_count_seed(f, 822), 0); /* queued one never ran */
    assert_int_equal(f->cancels, 1);
    /* a streaming client that leaves cancels too */
    bg_start(&a, "POST", "/v1/images/generations",
             "{\"prompt\":\"slow stream\",\"seed\":833,\"steps\":10,\"size\":\"32x32\",\"stream\":true}", 250);
    pthread_join(a.th, NULL);
    resp_free(&a.r);
    for (int i = 0; i < 40 && metric("zimage_jobs_total{status=\"cancelled\"}") < 3; i++) fake_sleep_ms(50);
    assert_true(metric("zimage_jobs_total{status=\"cancelled\"}") == 3);
    resp r = http("GET", "/healthz", NULL);
    expect_status(&r, 200, "healthz");
    resp_free(&r);
    zs_free(s);
}

/* A request (and an SSE stream) that outlasts the idle timeout is answered. */
static void test_long_request(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    c.idle_timeout = 1;
    fake_engine *f;
    zs_server *s = start_fake(&c, 250, &f);
    resp r = http("POST", "/v1/images/generations", "{\"prompt\":\"long\",\"seed\":5,\"steps\":10,\"size\":\"32x32\"}");
    expect_status(&r, 200, "2.5 s request with a 1 s idle timeout");
    resp_free(&r);
    r = http("POST", "/v1/images/generations",
             "{\"prompt\":\"long\",\"seed\":6,\"steps\":10,\"size\":\"32x32\",\"stream\":true,\"partial_images\":0}");
    expect_status(&r, 200, "2.5 s stream");
    assert_non_null(strstr(r.body, "image_generation.completed"));
    resp_free(&r);
    zs_free(s);
}

static void test_shutdown(void **state) {
    (void)state;
    zs_config c;
    small_config(&c);
    c.max_batch = 1;
    c.shutdown_grace = 10;
    fake_engine *f;
    zs_server *s = start_fake(&c, 30, &f);
    char base[64];
    snprintf(base, sizeof base, "%s", g_base);
    bg_req a, b;
    bg_start(&a, "POST", "/v1/images/generations", "{\"prompt\":\"in flight\",\"seed\":901,\"steps\":10,\"size\":\"32x32\"}",
             0);
    fake_sleep_ms(100);
    bg_start(&b, "POST", "/v1/images/generations", "{\"prompt\":\"waiting\",\"seed\":902,\"steps\":10,\"size\":\"32x32\"}",
             0);
    int both = 0; /* one running, one waiting */
    for (int i = 0; i < 200 && !both; i++) {
        resp pr = http("GET", "/sdapi/v1/progress", NULL);
        json_t *j = resp_json(&pr);
        both = json_integer_value(json_object_get(json_object_get(j, "state"), "job_count")) == 2 &&
               json_number_value(json_object_get(j, "progress")) > 0;
        json_decref(j);
        resp_free(&pr);
        if (!both) fake_sleep_ms(10);
    }
    assert_true(both);
    zs_shutdown(s);
    pthread_join(a.th, NULL);
    pthread_join(b.th, NULL);
    expect_status(&a.r, 200, "running request finished during shutdown");
    expect_status(&b.r, 503, "queued request cancelled by shutdown");
    resp_free(&a.r);
    resp_free(&b.r);
    resp r = http_ex(base, "GET", "/healthz", NULL, NULL, 2000);
    assert_int_not_equal(r.curl_rc, CURLE_OK); /* no longer listening */
    resp_free(&r);
    zs_free(s);
}

/* ---- part 2: the real library on the tiny fixture model ------------------------------------- */

static void test_real_model(void **state) {
    (void)state;
    const char *model = fixture_path("models/tiny-a");
    if (!fixture_exists(model)) {
        print_message("SKIP: %s missing (the real-model part needs the fixture)\n", model);
        skip();
    }
    zimage_options o = ZIMAGE_OPTIONS_DEFAULT;
    o.model = model;
    o.device = "cpu";
    o.threads = 2;
    o.prompt_cache = 8;
    zs_engine e;
    char err[1024];
    if (zs_engine_zimage(&e, &o, err, sizeof err)) fail_msg("zimage_create(%s): %s", model, err);
    zs_config c;
    small_config(&c);
    c.model_name = "tiny-a";
    c.max_batch = 4;
    zs_server *s;
    c.port = 0;
    c.quiet = 1;
    if (zs_start(&s, &c, &e, 1, err, sizeof err)) fail_msg("zs_start: %s", err);
    snprintf(g_base, sizeof g_base, "http://127.0.0.1:%d", zs_port(s));
    const int S = 64;

    /* one image alone, remembered for the batching check */
    resp r = http("POST", "/v1/images/generations", "{\"prompt\":\"a tiny test\",\"size\":\"64x64\",\"seed\":4321,\"steps\":2}");
    expect_status(&r, 200, "real openai");
    json_t *j = resp_json(&r);
    image alone;
    assert_int_equal(b64_png(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "b64_json")),
                             &alone),
                     0);
    assert_int_equal(alone.w, S);
    assert_int_equal(alone.h, S);
    json_decref(j);
    resp_free(&r);
    /* same prompt again: the prompt cache hits */
    double hits0 = metric("zimage_prompt_cache_hits_total");
    r = http("POST", "/v1/images/generations", "{\"prompt\":\"a tiny test\",\"size\":\"64x64\",\"seed\":4322,\"steps\":2}");
    expect_status(&r, 200, "real openai again");
    resp_free(&r);
    assert_true(metric("zimage_prompt_cache_hits_total") > hits0);

    /* the same seed inside a batch of 4 gives the same image (within 2 levels) */
    r = http("POST", "/v1/jobs", "{\"prompt\":\"a tiny test\",\"size\":\"64x64\",\"seed\":4320,\"steps\":2,\"n\":4}");
    expect_status(&r, 202, "real job");
    j = resp_json(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    resp_free(&r);
    r = http("GET", path, NULL);
    sse_ev ev[64];
    int n = sse_parse(r.body, ev, 64);
    assert_true(n >= 2);
    assert_string_equal(ev[n - 1].event, "completed");
    json_t *imgs = json_object_get(json_object_get(ev[n - 1].data, "result"), "images");
    assert_int_equal(json_array_size(imgs), 4);
    image in_batch;
    assert_int_equal(json_integer_value(json_object_get(json_array_get(imgs, 1), "seed")), 4321);
    assert_int_equal(b64_png(json_string_value(json_object_get(json_array_get(imgs, 1), "b64_json")), &in_batch), 0);
    int maxd = 0;
    for (int i = 0; i < S * S * 3; i++) {
        int d = abs((int)alone.rgb[i] - (int)in_batch.rgb[i]);
        if (d > maxd) maxd = d;
    }
    print_message("real model: seed 4321 alone vs in a batch of 4: max pixel diff %d\n", maxd);
    if (maxd > 2) fail_msg("batched image differs from the image generated alone: max diff %d > 2", maxd);
    free(alone.rgb);
    free(in_batch.rgb);
    sse_free(ev, n);
    resp_free(&r);

    /* A1111 with batch */
    r = http("POST", "/sdapi/v1/txt2img", "{\"prompt\":\"a1111\",\"width\":64,\"height\":64,\"steps\":2,\"seed\":7,\"batch_size\":2}");
    expect_status(&r, 200, "real txt2img");
    j = resp_json(&r);
    assert_int_equal(json_array_size(json_object_get(j, "images")), 2);
    json_decref(j);
    resp_free(&r);

    run_clients(g_base, 1, S);
    assert_true(metric("zimage_jobs_total{status=\"failed\"}") == 0);
    r = http("GET", "/healthz", NULL);
    expect_status(&r, 200, "real healthz");
    resp_free(&r);
    zs_free(s);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_ALL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_endpoints), cmocka_unit_test(test_openai),
        cmocka_unit_test(test_a1111),           cmocka_unit_test(test_jobs),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_auth_cors),
        cmocka_unit_test(test_concurrency),     cmocka_unit_test(test_overload),
        cmocka_unit_test(test_disconnect_cancels), cmocka_unit_test(test_long_request),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_real_model),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
