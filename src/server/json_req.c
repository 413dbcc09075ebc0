/* json_req.c - request parsing and validation for the server APIs (see
 * json_req.h for the rules and limits).  JSON null counts as absent (clients
 * send null for "use the default"); unknown fields are ignored, as both
 * OpenAI's and A1111's clients send fields this server does not use. */
#include "server/json_req.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(zs_req_err *e, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(zs_req_err *e, int status, const char *field, const char *fmt, ...) {
    e->status = status;
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* The value of key, or NULL if absent or null. */
static json_t *field(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

/* Integer field in [lo, hi]: 0 absent, 1 set, -1 error.  Accepts integral
 * reals (8.0), as Python clients sometimes send them. */
static int get_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out, zs_req_err *e) {
    json_t *v = field(o, key);
    if (!v) return 0;
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d == floor(d)) || fabs(d) > 9.0e18) return fail(e, 422, key, "'%s' must be an integer", key);
        x = (int64_t)d;
    } else {
        return fail(e, 422, key, "'%s' must be an integer", key);
    }
    if (x < lo || x > hi)
        return fail(e, 422, key, "'%s' must be in [%lld, %lld], got %lld", key, (long long)lo, (long long)hi,
                    (long long)x);
    *out = x;
    return 1;
}

static int get_i32(json_t *o, const char *key, int lo, int hi, int *out, zs_req_err *e) {
    int64_t x;
    int rc = get_int(o, key, lo, hi, &x, e);
    if (rc == 1) *out = (int)x;
    return rc;
}

static int get_num(json_t *o, const char *key, double lo, double hi, double *out, zs_req_err *e) {
    json_t *v = field(o, key);
    if (!v) return 0;
    if (!json_is_number(v)) return fail(e, 422, key, "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return fail(e, 422, key, "'%s' must be in [%g, %g], got %g", key, lo, hi, x);
    *out = x;
    return 1;
}

static int get_bool(json_t *o, const char *key, int *out, zs_req_err *e) {
    json_t *v = field(o, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return fail(e, 422, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 1;
}

/* String field: 0 absent, 1 set (*out borrowed from o), -1 error. */
static int get_str(json_t *o, const char *key, size_t maxlen, const char **out, zs_req_err *e) {
    json_t *v = field(o, key);
    if (!v) return 0;
    if (!json_is_string(v)) return fail(e, 422, key, "'%s' must be a string", key);
    if (json_string_length(v) > maxlen)
        return fail(e, 422, key, "'%s' is too long (%zu bytes, limit %zu)", key, json_string_length(v), maxlen);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fail(e, 422, key, "'%s' contains a NUL character", key);
    *out = json_string_value(v);
    return 1;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int zs_parse_size(const char *s, int *w, int *h) {
    if (!s) return -1;
    char *end;
    long a = strtol(s, &end, 10);
    if (end == s || a <= 0 || a > 1000000) return -1;
    if (*end == 'x' || *end == 'X') {
        end++;
    } else if ((unsigned char)end[0] == 0xC3 && (unsigned char)end[1] == 0x97) { /* U+00D7 */
        end += 2;
    } else {
        return -1;
    }
    if (*end < '0' || *end > '9') return -1;
    const char *p = end;
    long b = strtol(p, &end, 10);
    if (end == p || *end || b <= 0 || b > 1000000) return -1;
    *w = (int)a;
    *h = (int)b;
    return 0;
}

const char *zs_format_name(int fmt) { return fmt == ZS_FMT_JPEG ? "jpeg" : fmt == ZS_FMT_WEBP ? "webp" : "png"; }
const char *zs_format_mime(int fmt) {
    return fmt == ZS_FMT_JPEG ? "image/jpeg" : fmt == ZS_FMT_WEBP ? "image/webp" : "image/png";
}

static int parse_format(const char *s, int *fmt) {
    if (!strcmp(s, "png")) *fmt = ZS_FMT_PNG;
    else if (!strcmp(s, "jpeg") || !strcmp(s, "jpg")) *fmt = ZS_FMT_JPEG;
    else if (!strcmp(s, "webp")) *fmt = ZS_FMT_WEBP;
    else return -1;
    return 0;
}

static int check_side(const char *key, int v, const zs_limits *l, zs_req_err *e) {
    if (v % 16) return fail(e, 422, key, "'%s' must be a multiple of 16, got %d", key, v);
    if (v < l->min_size || v > l->max_size)
        return fail(e, 422, key, "'%s' must be in [%d, %d], got %d", key, l->min_size, l->max_size, v);
    return 0;
}

static json_t *load_object(const char *body, size_t len, zs_req_err *e) {
    if (!body || len == 0) {
        fail(e, 400, "", "request body is empty (expected a JSON object)");
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        fail(e, 400, "", "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        fail(e, 400, "", "request body must be a JSON object");
        return NULL;
    }
    return root;
}

static void req_init(zs_gen_req *r, const zs_limits *l) {
    memset(r, 0, sizeof *r);
    r->width = r->height = l->default_size;
    r->steps = l->default_steps;
    r->cfg_scale = 1.0f;
    r->seed = -1;
    r->n = r->batch_size = r->n_iter = 1;
    r->quality = 90;
    r->partial_images = -1;
    r->send_images = 1;
}

void zs_gen_req_free(zs_gen_req *r) {
    if (!r) return;
    free(r->prompt);
    free(r->negative_prompt);
    free(r->model);
    free(r->size_str);
    if (r->echo) json_decref(r->echo);
    memset(r, 0, sizeof *r);
}

/* Fields shared by all three APIs: negative_prompt, seed, steps,
 * cfg_scale / guidance_scale.  Returns -1 on error. */
static int common_fields(json_t *o, const zs_limits *l, zs_gen_req *r, const char **neg, zs_req_err *e) {
    if (get_str(o, "negative_prompt", l->max_prompt, neg, e) < 0) return -1;
    if (get_int(o, "seed", -1, ZS_SEED_MAX, &r->seed, e) < 0) return -1;
    if (get_i32(o, "steps", 1, l->max_steps, &r->steps, e) < 0) return -1;
    double cfg = 1.0;
    int rc = get_num(o, "cfg_scale", 1.0, ZS_CFG_MAX, &cfg, e);
    if (rc < 0) return -1;
    if (rc == 1) r->cfg_scale = (float)cfg;
    double g = 0.0;
    rc = get_num(o, "guidance_scale", 0.0, ZS_CFG_MAX - 1.0, &g, e);
    if (rc < 0) return -1;
    if (rc == 1 && !field(o, "cfg_scale")) r->cfg_scale = (float)(g + 1.0);
    return 0;
}

static int finish(zs_gen_req *r, const char *prompt, const char *neg, zs_req_err *e) {
    r->prompt = xstrdup(prompt ? prompt : "");
    r->negative_prompt = xstrdup(neg ? neg : "");
    if (!r->prompt || !r->negative_prompt) return fail(e, 500, "", "out of memory");
    return 0;
}

/* ---- OpenAI: POST /v1/images/generations ---------------------------------- */

int zs_parse_openai(const char *body, size_t len, const zs_limits *l, zs_gen_req *r, zs_req_err *e) {
    req_init(r, l);
    json_t *o = load_object(body, len, e);
    if (!o) return -1;
    const char *prompt = NULL, *neg = NULL, *s = NULL;
    int rc = get_str(o, "prompt", l->max_prompt, &prompt, e);
    if (rc < 0) goto bad;
    if (rc == 0) {
        fail(e, 422, "prompt", "'prompt' is required");
        goto bad;
    }
    if (!prompt[0]) {
        fail(e, 422, "prompt", "'prompt' must not be empty");
        goto bad;
    }
    if (common_fields(o, l, r, &neg, e) < 0) goto bad;
    if (!field(o, "steps") && get_i32(o, "num_inference_steps", 1, l->max_steps, &r->steps, e) < 0) goto bad;
    if (get_i32(o, "n", 1, l->max_n, &r->n, e) < 0) goto bad;
    r->n_iter = r->n;
    if ((rc = get_str(o, "model", 256, &s, e)) < 0) goto bad;
    if (rc == 1 && !(r->model = xstrdup(s))) goto oom;
    if ((rc = get_str(o, "size", 32, &s, e)) < 0) goto bad;
    if (rc == 1 && strcmp(s, "auto") != 0) {
        if (zs_parse_size(s, &r->width, &r->height)) {
            fail(e, 422, "size", "'size' must be \"WIDTHxHEIGHT\" (e.g. \"1024x1024\") or \"auto\", got \"%s\"", s);
            goto bad;
        }
        if (check_side("size", r->width, l, e) || check_side("size", r->height, l, e)) goto bad;
    }
    if ((rc = get_str(o, "response_format", 32, &s, e)) < 0) goto bad;
    if (rc == 1) {
        if (!strcmp(s, "url")) r->response_url = 1;
        else if (strcmp(s, "b64_json") != 0) {
            fail(e, 422, "response_format", "'response_format' must be \"b64_json\" or \"url\", got \"%s\"", s);
            goto bad;
        }
    }
    if ((rc = get_str(o, "output_format", 32, &s, e)) < 0) goto bad;
    if (rc == 1 && parse_format(s, &r->format)) {
        fail(e, 422, "output_format", "'output_format' must be \"png\", \"jpeg\" or \"webp\", got \"%s\"", s);
        goto bad;
    }
    if (get_i32(o, "output_compression", 0, 100, &r->quality, e) < 0) goto bad;
    if (get_bool(o, "stream", &r->stream, e) < 0) goto bad;
    if (get_i32(o, "partial_images", 0, l->max_steps, &r->partial_images, e) < 0) goto bad;
    r->preview = r->stream && r->partial_images != 0;
    static const char *const str_fields[] = {"quality", "background", "moderation", "style", "user"};
    for (size_t i = 0; i < sizeof str_fields / sizeof *str_fields; i++)
        if (get_str(o, str_fields[i], 256, &s, e) < 0) goto bad;
    char sz[32];
    snprintf(sz, sizeof sz, "%dx%d", r->width, r->height);
    if (!(r->size_str = xstrdup(sz))) goto oom;
    if (finish(r, prompt, neg, e)) goto bad;
    json_decref(o);
    return 0;
oom:
    fail(e, 500, "", "out of memory");
bad:
    json_decref(o);
    zs_gen_req_free(r);
    return -1;
}

/* ---- A1111: POST /sdapi/v1/txt2img ---------------------------------------- */

int zs_parse_a1111(const char *body, size_t len, const zs_limits *l, zs_gen_req *r, zs_req_err *e) {
    req_init(r, l);
    json_t *o = load_object(body, len, e);
    if (!o) return -1;
    const char *prompt = NULL, *neg = NULL, *s = NULL;
    if (get_str(o, "prompt", l->max_prompt, &prompt, e) < 0) goto bad;
    if (common_fields(o, l, r, &neg, e) < 0) goto bad;
    if (get_i32(o, "width", 1, 1 << 20, &r->width, e) < 0 || check_side("width", r->width, l, e)) goto bad;
    if (get_i32(o, "height", 1, 1 << 20, &r->height, e) < 0 || check_side("height", r->height, l, e)) goto bad;
    if (get_i32(o, "batch_size", 1, l->max_n, &r->batch_size, e) < 0) goto bad;
    if (get_i32(o, "n_iter", 1, l->max_n, &r->n_iter, e) < 0) goto bad;
    if (r->batch_size * r->n_iter > l->max_n) {
        fail(e, 422, "batch_size", "batch_size * n_iter must be at most %d, got %d", l->max_n,
             r->batch_size * r->n_iter);
        goto bad;
    }
    r->n = r->batch_size * r->n_iter;
    if (get_bool(o, "send_images", &r->send_images, e) < 0) goto bad;
    if (get_bool(o, "save_images", &(int){0}, e) < 0) goto bad;
    static const char *const str_fields[] = {"sampler_name", "sampler_index", "scheduler"};
    for (size_t i = 0; i < sizeof str_fields / sizeof *str_fields; i++)
        if (get_str(o, str_fields[i], 256, &s, e) < 0) goto bad;
    json_t *ov = field(o, "override_settings");
    if (ov && !json_is_object(ov)) {
        fail(e, 422, "override_settings", "'override_settings' must be an object");
        goto bad;
    }
    if (ov && field(ov, "samples_format")) {
        if (get_str(ov, "samples_format", 16, &s, e) < 0) goto bad;
        if (parse_format(s, &r->format)) {
            fail(e, 422, "override_settings.samples_format", "samples_format must be png, jpg or webp");
            goto bad;
        }
    }
    if (finish(r, prompt, neg, e)) goto bad;
    /* "parameters": the request as A1111 echoes it, defaults filled in. */
    r->echo = json_deep_copy(o);
    if (!r->echo) goto oom;
    json_object_set_new(r->echo, "prompt", json_string(r->prompt));
    json_object_set_new(r->echo, "negative_prompt", json_string(r->negative_prompt));
    json_object_set_new(r->echo, "seed", json_integer(r->seed));
    json_object_set_new(r->echo, "width", json_integer(r->width));
    json_object_set_new(r->echo, "height", json_integer(r->height));
    json_object_set_new(r->echo, "steps", json_integer(r->steps));
    json_object_set_new(r->echo, "cfg_scale", json_real(r->cfg_scale));
    json_object_set_new(r->echo, "batch_size", json_integer(r->batch_size));
    json_object_set_new(r->echo, "n_iter", json_integer(r->n_iter));
    if (!field(o, "sampler_name")) json_object_set_new(r->echo, "sampler_name", json_string("Euler"));
    if (!field(o, "send_images")) json_object_set_new(r->echo, "send_images", json_true());
    if (!field(o, "save_images")) json_object_set_new(r->echo, "save_images", json_false());
    r->preview = 1; /* the A1111 progress endpoint shows previews (option) */
    json_decref(o);
    return 0;
oom:
    fail(e, 500, "", "out of memory");
bad:
    json_decref(o);
    zs_gen_req_free(r);
    return -1;
}

/* ---- zimage jobs: POST /v1/jobs --------------------------------------------- */

int zs_parse_job(const char *body, size_t len, const zs_limits *l, zs_gen_req *r, zs_req_err *e) {
    req_init(r, l);
    json_t *o = load_object(body, len, e);
    if (!o) return -1;
    const char *prompt = NULL, *neg = NULL, *s = NULL;
    int rc = get_str(o, "prompt", l->max_prompt, &prompt, e);
    if (rc < 0) goto bad;
    if (rc == 0) {
        fail(e, 422, "prompt", "'prompt' is required");
        goto bad;
    }
    if (common_fields(o, l, r, &neg, e) < 0) goto bad;
    if ((rc = get_str(o, "size", 32, &s, e)) < 0) goto bad;
    if (rc == 1) {
        if (zs_parse_size(s, &r->width, &r->height)) {
            fail(e, 422, "size", "'size' must be \"WIDTHxHEIGHT\", got \"%s\"", s);
            goto bad;
        }
        if (check_side("size", r->width, l, e) || check_side("size", r->height, l, e)) goto bad;
    }
    if (get_i32(o, "width", 1, 1 << 20, &r->width, e) < 0 || check_side("width", r->width, l, e)) goto bad;
    if (get_i32(o, "height", 1, 1 << 20, &r->height, e) < 0 || check_side("height", r->height, l, e)) goto bad;
    if (get_i32(o, "n", 1, l->max_n, &r->n, e) < 0) goto bad;
    r->n_iter = r->n;
    if ((rc = get_str(o, "output_format", 32, &s, e)) < 0) goto bad;
    if (rc == 1 && parse_format(s, &r->format)) {
        fail(e, 422, "output_format", "'output_format' must be \"png\", \"jpeg\" or \"webp\", got \"%s\"", s);
        goto bad;
    }
    if (get_i32(o, "quality", 0, 100, &r->quality, e) < 0) goto bad;
    if (get_bool(o, "preview", &r->preview, e) < 0) goto bad;
    if (finish(r, prompt, neg, e)) goto bad;
    json_decref(o);
    return 0;
bad:
    json_decref(o);
    zs_gen_req_free(r);
    return -1;
}

/* ---- A1111 options ------------------------------------------------------------ */

int zs_parse_a1111_options(const char *body, size_t len, const char *model_title, zs_a1111_opts *o,
                           zs_req_err *e) {
    json_t *root = load_object(body, len, e);
    if (!root) return -1;
    zs_a1111_opts n = *o;
    const char *s;
    int rc = get_str(root, "sd_model_checkpoint", 1024, &s, e);
    if (rc < 0) goto bad;
    if (rc == 1 && strcmp(s, model_title) != 0) {
        /* A1111 accepts the title, the name, or the file name; we accept the
         * title and its "name" prefix (before " ["). */
        size_t k = strcspn(model_title, " ");
        if (!(strlen(s) == k && !strncmp(s, model_title, k))) {
            fail(e, 422, "sd_model_checkpoint", "model '%s' not found (loaded: '%s')", s, model_title);
            goto bad;
        }
    }
    if (get_bool(root, "live_previews_enable", &n.live_previews_enable, e) < 0) goto bad;
    if (get_i32(root, "show_progress_every_n_steps", -1, 1000, &n.show_progress_every_n_steps, e) < 0) goto bad;
    if ((rc = get_str(root, "samples_format", 16, &s, e)) < 0) goto bad;
    if (rc == 1 && parse_format(s, &n.samples_format)) {
        fail(e, 422, "samples_format", "'samples_format' must be png, jpg or webp");
        goto bad;
    }
    *o = n;
    json_decref(root);
    return 0;
bad:
    json_decref(root);
    return -1;
}
