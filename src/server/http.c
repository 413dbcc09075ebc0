/* http.c - libmicrohttpd glue of the server: daemon setup, routing, auth,
 * CORS, body limits, JSON / error / SSE replies, health, readiness, metrics,
 * server info, and start / graceful shutdown.
 *
 * Threading: MHD runs one thread per connection, so a handler may block
 * until its job is done (synchronous OpenAI / A1111 calls) and an SSE
 * reader may block until the next event.  While blocked, both poll the
 * client's socket every 0.25 s; a client that went away cancels its work.
 *
 * Auth: with an API key every request needs "Authorization: Bearer KEY",
 * except the static page at / (it holds no data and asks for the key) and
 * CORS preflights (browsers send them without credentials).
 */
#include "server/http.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "server/imgenc.h"

#define SSE_KEEPALIVE_S 15.0
#define POLL_S 0.25

void zs_config_defaults(zs_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 7860;
    c->model_name = "z-image-turbo";
    c->max_queue = 64;
    c->max_batch = 4;
    c->min_size = 256;
    c->max_size = 2048;
    c->default_steps = 8;
    c->max_steps = 50;
    c->max_n = 8;
    c->max_body = 1 << 20;
    c->max_prompt = 8192;
    c->job_ttl = 600;
    c->max_retained = (size_t)512 << 20;
    c->max_conns = 256;
    c->shutdown_grace = 30;
    c->idle_timeout = 60;
}

/* ---- replies ------------------------------------------------------------------------ */

static void common_headers(zs_req *r, struct MHD_Response *resp) {
    if (r->s->cors) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->s->cors);
        MHD_add_response_header(resp, "Vary", "Origin");
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After, Location");
    }
}

static enum MHD_Result queue(zs_req *r, int status, struct MHD_Response *resp) {
    if (!resp) return MHD_NO;
    common_headers(r, resp);
    r->status = status;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result zs_reply_bytes(zs_req *r, int status, const char *mime, const void *data, size_t len, int copy) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        if (!copy) free((void *)data);
        return MHD_NO;
    }
    if (mime) MHD_add_response_header(resp, "Content-Type", mime);
    return queue(r, status, resp);
}

static struct MHD_Response *json_response(json_t *body) {
    char *txt = json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
    json_decref(body);
    if (!txt) return NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(txt);
        return NULL;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    return resp;
}

enum MHD_Result zs_reply_json(zs_req *r, int status, json_t *body) {
    if (!body) return zs_reply_bytes(r, 500, "application/json", "{\"error\":{\"message\":\"out of memory\"}}", 38, 1);
    return queue(r, status, json_response(body));
}

enum MHD_Result zs_reply_error(zs_req *r, int status, const char *type, const char *param, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_pack("{s:s, s:s, s:o, s:o}", "message", msg, "type", type ? type : "invalid_request_error", "param",
                          param && param[0] ? json_string(param) : json_null(), "code", json_null());
    return zs_reply_json(r, status, json_pack("{s:o}", "error", e));
}

enum MHD_Result zs_reply_a1111_error(zs_req *r, int status, const char *field, const char *msg) {
    json_t *loc = field && field[0] ? json_pack("[s,s]", "body", field) : json_pack("[s]", "body");
    json_t *d = json_pack("[{s:o, s:s, s:s}]", "loc", loc, "msg", msg, "type", status == 400 ? "json_invalid" : "value_error");
    return zs_reply_json(r, status, json_pack("{s:o, s:s}", "detail", d, "error", msg));
}

enum MHD_Result zs_reply_submit_error(zs_req *r, int qrc, int a1111) {
    if (qrc == ZS_Q_FULL) {
        zs_queue_stats st;
        zs_queue_stats_get(r->s->q, &st);
        double est = st.avg_batch_s * (1.0 + (double)st.waiting_items / r->s->cfg.max_batch) / st.workers;
        int after = (int)ceil(est);
        if (after < 1) after = 1;
        if (after > 600) after = 600;
        char ra[16];
        snprintf(ra, sizeof ra, "%d", after);
        json_t *e = json_pack("{s:s, s:s, s:n, s:s}", "message", "the queue is full, retry later", "type",
                              "rate_limit_error", "param", "code", "queue_full");
        struct MHD_Response *resp = json_response(json_pack("{s:o, s:i}", "error", e, "retry_after", after));
        if (resp) MHD_add_response_header(resp, "Retry-After", ra);
        return queue(r, 429, resp);
    }
    if (qrc == ZS_Q_CLOSED) {
        struct MHD_Response *resp = json_response(json_pack(
            "{s:{s:s, s:s}}", "error", "message", "the server is shutting down", "type", "server_error"));
        if (resp) MHD_add_response_header(resp, "Retry-After", "5");
        return queue(r, 503, resp);
    }
    (void)a1111;
    return zs_reply_error(r, 500, "server_error", NULL, "out of memory");
}

/* ---- SSE ------------------------------------------------------------------------------ */

static void sse_append(zs_sse *e, const char *s, size_t n) {
    if (e->len + n + 1 > e->cap) {
        size_t cap = e->cap ? e->cap : 4096;
        while (cap < e->len + n + 1) cap *= 2;
        char *b = realloc(e->buf, cap);
        if (!b) return;
        e->buf = b;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    e->buf[e->len] = 0;
}

void zs_sse_event(zs_sse *e, const char *event, unsigned id, json_t *data) {
    char head[128];
    int k = 0;
    if (id) k += snprintf(head + k, sizeof head - (size_t)k, "id: %u\n", id);
    if (event) k += snprintf(head + k, sizeof head - (size_t)k, "event: %s\n", event);
    sse_append(e, head, (size_t)k);
    char *txt = data ? json_dumps(data, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY) : NULL;
    sse_append(e, "data: ", 6);
    if (txt) sse_append(e, txt, strlen(txt));
    sse_append(e, "\n\n", 2);
    free(txt);
    if (data) json_decref(data);
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    zs_sse *e = cls;
    (void)pos;
    for (;;) {
        if (e->pos < e->len) {
            size_t n = e->len - e->pos;
            if (n > max) n = max;
            memcpy(buf, e->buf + e->pos, n);
            e->pos += n;
            if (e->pos == e->len) e->pos = e->len = 0;
            e->last_write = ztime_now();
            return (ssize_t)n;
        }
        if (e->done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (zs_client_gone(e->fd)) {
            e->gone = 1;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        e->produce(e);
        if (e->len == 0 && !e->done && ztime_now() - e->last_write > SSE_KEEPALIVE_S) sse_append(e, ": keepalive\n\n", 13);
    }
}

static void sse_free(void *cls) {
    zs_sse *e = cls;
    if (!e->done) e->gone = 1;
    if (e->on_close) e->on_close(e);
    free(e->buf);
    free(e);
}

enum MHD_Result zs_reply_sse(zs_req *r, zs_sse *e) {
    e->s = r->s;
    e->fd = r->fd;
    e->last_write = ztime_now();
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, e, sse_free);
    if (!resp) {
        sse_free(e);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    r->long_poll = 1;
    return queue(r, 200, resp);
}

/* ---- helpers ------------------------------------------------------------------------------ */

int zs_client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL | POLLRDHUP)) return 1;
    if (p.revents & POLLIN) {
        char c;
        ssize_t k = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (k == 0) return 1;
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return 1;
    }
    return 0;
}

int zs_wait_final(zs_req *r, zs_job *j) {
    unsigned ver = 0;
    /* no idle timeout while the client waits for its job (restored when the
     * request completes) */
    MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    r->long_poll = 1;
    for (;;) {
        zs_job_view v;
        zs_queue_view(r->s->q, j, 0, 0, &v);
        if (zs_job_final(v.status)) return 0;
        if (zs_client_gone(r->fd)) {
            zs_queue_cancel(r->s->q, j, ZS_CANCEL_CLIENT);
            return -1;
        }
        zs_queue_wait(r->s->q, j, &ver, POLL_S);
    }
}

const char *zs_query(zs_req *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

void zs_base_url(zs_req *r, char *buf, size_t n) {
    const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Host");
    if (host && strlen(host) < 256 && !strpbrk(host, "\"<> \r\n"))
        snprintf(buf, n, "http://%s", host);
    else
        snprintf(buf, n, "http://%s:%d", r->s->cfg.host, r->s->port);
}

char *zs_job_image_b64(zs_server *s, zs_job *j, int i) {
    size_t len;
    const uint8_t *d = zs_job_image(s->q, j, i, &len);
    return d ? zs_base64(d, len) : NULL;
}

char *zs_preview_data_url(const uint8_t *rgb, int w, int h) {
    uint8_t *png;
    size_t n;
    if (zs_encode_image(ZS_FMT_PNG, rgb, w, h, NULL, 0, &png, &n)) return NULL;
    char *b = zs_base64(png, n);
    free(png);
    if (!b) return NULL;
    size_t bl = strlen(b);
    char *u = malloc(bl + 23);
    if (u) {
        memcpy(u, "data:image/png;base64,", 22);
        memcpy(u + 22, b, bl + 1);
    }
    free(b);
    return u;
}

/* ---- health, readiness, metrics, info ------------------------------------------------------------ */

static enum MHD_Result h_healthz(zs_req *r) {
    return zs_reply_json(r, 200, json_pack("{s:s, s:f}", "status", "ok", "uptime_s", ztime_now() - r->s->t_start));
}

static enum MHD_Result h_readyz(zs_req *r) {
    zs_queue_stats st;
    zs_queue_stats_get(r->s->q, &st);
    int full = zs_queue_full(r->s->q);
    int ready = !r->s->draining && !full;
    const char *why = r->s->draining ? "shutting down" : full ? "queue full" : "ok";
    return zs_reply_json(r, ready ? 200 : 503,
                         json_pack("{s:b, s:s, s:b, s:i, s:i}", "ready", ready, "status", why, "model_loaded", 1,
                                   "queue_depth", st.waiting_jobs, "queue_capacity", st.capacity));
}

static enum MHD_Result h_metrics(zs_req *r) {
    zs_queue_stats st;
    zs_queue_stats_get(r->s->q, &st);
    zs_gauges g = {
        .queue_jobs = st.waiting_jobs,
        .queue_items = st.waiting_items,
        .queue_capacity = st.capacity,
        .running_jobs = st.running_jobs,
        .retained_jobs = st.retained_jobs,
        .retained_bytes = st.retained_bytes,
        .cache_hits = st.cache_hits,
        .cache_misses = st.cache_misses,
        .model_loaded = 1,
        .workers = st.workers,
    };
    char *txt = zs_metrics_render(r->s->m, &g);
    if (!txt) return zs_reply_error(r, 500, "server_error", NULL, "out of memory");
    return zs_reply_bytes(r, 200, "text/plain; version=0.0.4; charset=utf-8", txt, strlen(txt), 0);
}

static enum MHD_Result h_info(zs_req *r) {
    zs_server *s = r->s;
    static const int presets[][2] = {{1024, 1024}, {832, 832}, {768, 768}, {576, 1024}, {1024, 576}};
    json_t *pre = json_array();
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++) {
        int w = presets[i][0], h = presets[i][1];
        int ok = w >= s->lim.min_size && w <= s->lim.max_size && h >= s->lim.min_size && h <= s->lim.max_size;
        json_array_append_new(pre, json_pack("{s:i, s:i, s:b}", "width", w, "height", h, "allowed", ok));
    }
    json_t *fmts = json_array();
    for (int f = 0; f < 3; f++)
        if (zs_format_available(f)) json_array_append_new(fmts, json_string(zs_format_name(f)));
    return zs_reply_json(
        r, 200,
        json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:o, s:o, s:i}", "version", ZIMAGE_VERSION,
                  "model", s->model_name, "device", s->device_name, "min_size", s->lim.min_size, "max_size",
                  s->lim.max_size, "default_size", s->lim.default_size, "default_steps", s->lim.default_steps,
                  "max_steps", s->lim.max_steps, "max_n", s->lim.max_n, "max_batch", s->cfg.max_batch, "workers",
                  s->n_engines, "presets", pre, "output_formats", fmts, "max_prompt", (int)s->lim.max_prompt));
}

/* ---- routing -------------------------------------------------------------------------------------- */

typedef enum MHD_Result (*handler_fn)(zs_req *r);

typedef struct route {
    const char *method;
    const char *pattern; /* '*' matches one path segment ({id}) */
    handler_fn fn;
    int public_route;    /* no API key needed */
} route;

static const route ROUTES[] = {
    {"GET", "/", zs_web_page, 1},
    {"GET", "/healthz", h_healthz, 0},
    {"GET", "/readyz", h_readyz, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/v1/info", h_info, 0},
    {"GET", "/v1/models", zs_openai_models, 0},
    {"GET", "/v1/models/*", zs_openai_model, 0},
    {"POST", "/v1/images/generations", zs_openai_generations, 0},
    {"POST", "/v1/jobs", zs_jobs_create, 0},
    {"GET", "/v1/jobs/*", zs_jobs_get, 0},
    {"POST", "/v1/jobs/*/cancel", zs_jobs_cancel, 0},
    {"GET", "/v1/jobs/*/events", zs_jobs_events, 0},
    {"GET", "/v1/jobs/*/images/*", zs_jobs_image, 0},
    {"POST", "/sdapi/v1/txt2img", zs_a1111_txt2img, 0},
    {"GET", "/sdapi/v1/progress", zs_a1111_progress, 0},
    {"POST", "/sdapi/v1/interrupt", zs_a1111_interrupt, 0},
    {"POST", "/sdapi/v1/skip", zs_a1111_interrupt, 0},
    {"GET", "/sdapi/v1/sd-models", zs_a1111_sd_models, 0},
    {"GET", "/sdapi/v1/options", zs_a1111_options_get, 0},
    {"POST", "/sdapi/v1/options", zs_a1111_options_post, 0},
    {"GET", "/sdapi/v1/samplers", zs_a1111_samplers, 0},
};
#define N_ROUTES (sizeof ROUTES / sizeof *ROUTES)

/* Match url against pattern; '*' segments go to p1 then p2. */
static int match(const char *pat, const char *url, zs_req *r) {
    int star = 0;
    char p1[sizeof r->p1] = "", p2[sizeof r->p2] = "";
    while (*pat && *url) {
        if (*pat == '*') {
            size_t n = strcspn(url, "/");
            if (n == 0) return 0;
            char *dst = star == 0 ? p1 : p2;
            size_t cap = star == 0 ? sizeof p1 : sizeof p2;
            if (n >= cap) return 0;
            memcpy(dst, url, n);
            dst[n] = 0;
            star++;
            url += n;
            pat++;
        } else if (*pat++ != *url++) {
            return 0;
        }
    }
    if (*pat || *url) return 0;
    memcpy(r->p1, p1, sizeof p1);
    memcpy(r->p2, p2, sizeof p2);
    return 1;
}

static int auth_ok(zs_req *r) {
    const char *key = r->s->api_key;
    if (!key) return 1;
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    size_t a = strlen(h), b = strlen(key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned)(uint8_t)key[i] ^ (unsigned)(uint8_t)(i < a ? h[i] : 0);
    return diff == 0;
}

static enum MHD_Result dispatch(zs_req *r) {
    zs_server *s = r->s;
    snprintf(r->log_method, sizeof r->log_method, "%s", r->method);
    snprintf(r->log_url, sizeof r->log_url, "%s", r->url);
    if (!strcmp(r->method, "OPTIONS")) {
        r->endpoint = "preflight";
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Allow", "GET, POST, DELETE, OPTIONS");
        if (s->cors) {
            MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
            MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, Content-Type");
            MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
        }
        return queue(r, 204, resp);
    }
    const route *hit = NULL;
    int path_known = 0;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!match(ROUTES[i].pattern, r->url, r)) continue;
        path_known = 1;
        if (!strcmp(ROUTES[i].method, r->method) || (!strcmp(r->method, "HEAD") && !strcmp(ROUTES[i].method, "GET"))) {
            hit = &ROUTES[i];
            break;
        }
    }
    if (!hit) {
        r->endpoint = "other";
        if (path_known) {
            /* same path, other method */
            for (size_t i = 0; i < N_ROUTES; i++)
                if (match(ROUTES[i].pattern, r->url, r)) {
                    r->endpoint = ROUTES[i].pattern;
                    break;
                }
            return zs_reply_error(r, 405, "invalid_request_error", NULL, "method %s not allowed on %s", r->method,
                                  r->url);
        }
        return zs_reply_error(r, 404, "not_found", NULL, "no route for %s %s", r->method, r->url);
    }
    r->endpoint = hit->pattern;
    if (!hit->public_route && !auth_ok(r)) {
        struct MHD_Response *resp = json_response(json_pack(
            "{s:{s:s, s:s, s:n, s:s}}", "error", "message", "missing or invalid API key (Authorization: Bearer KEY)",
            "type", "invalid_request_error", "param", "code", "invalid_api_key"));
        if (resp) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
        return queue(r, 401, resp);
    }
    if (r->too_large)
        return zs_reply_error(r, 413, "invalid_request_error", NULL, "request body exceeds %zu bytes",
                              s->cfg.max_body);
    return hit->fn(r);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
    zs_server *s = cls;
    zs_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->s = s;
        r->conn = conn;
        r->t0 = ztime_now();
        r->fd = -1;
        r->endpoint = "other";
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci) r->fd = ci->connect_fd;
        *con_cls = r;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body) {
            r->too_large = 1;
            r->method = method;
            r->url = url;
            r->endpoint = "other";
            snprintf(r->log_method, sizeof r->log_method, "%s", method);
            snprintf(r->log_url, sizeof r->log_url, "%s", url);
            /* Answer before reading the body; MHD then closes the connection. */
            return zs_reply_error(r, 413, "invalid_request_error", NULL, "request body exceeds %zu bytes",
                                  s->cfg.max_body);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->status) return MHD_YES; /* already answered (413) */
        if (r->too_large || r->len + n > s->cfg.max_body) {
            r->too_large = 1;
            return MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + n + 1) cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b) return MHD_NO;
            r->body = b;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = 0;
        return MHD_YES;
    }
    if (r->status) return MHD_YES;
    r->method = method;
    r->url = url;
    (void)version;
    return dispatch(r);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    zs_server *s = cls;
    zs_req *r = *con_cls;
    if (!r) return;
    if (r->long_poll) MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->cfg.idle_timeout);
    int status = r->status ? r->status : 499; /* client closed before an answer */
    double dt = ztime_now() - r->t0;
    if (r->log_method[0]) zs_metrics_request(s->m, r->endpoint, r->log_method, status, dt);
    if (!s->cfg.quiet && r->log_method[0])
        ZLOGI("%s %s -> %d (%.3f s)%s", r->log_method, r->log_url, status, dt,
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " [aborted]");
    free(r->body);
    free(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    ZLOGD("microhttpd: %s", buf);
}

/* ---- lifecycle --------------------------------------------------------------------------------------- */

static char *dupstr(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void destroy_engines(zs_engine *e, int n) {
    for (int i = 0; i < n; i++)
        if (e[i].destroy) e[i].destroy(e[i].ctx);
}

static void server_free_parts(zs_server *s) {
    free(s->host);
    free(s->api_key);
    free(s->cors);
    free(s->model_name);
    free(s->model_path);
    free(s->model_title);
    free(s->device_name);
    pthread_mutex_destroy(&s->mu);
}

int zs_start(zs_server **out, const zs_config *cfg, zs_engine *engines, int n_engines, char *err, size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = 0;
    zs_server *s = calloc(1, sizeof *s);
    if (!s || n_engines < 1) {
        if (err) snprintf(err, errlen, "%s", s ? "no engine" : "out of memory");
        destroy_engines(engines, n_engines);
        free(s);
        return ZIMAGE_EINVAL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->cfg = *cfg;
    s->host = dupstr(cfg->host ? cfg->host : "127.0.0.1");
    s->api_key = cfg->api_key && cfg->api_key[0] ? dupstr(cfg->api_key) : NULL;
    s->cors = cfg->cors && cfg->cors[0] ? dupstr(cfg->cors) : NULL;
    s->model_name = dupstr(cfg->model_name ? cfg->model_name : "z-image-turbo");
    s->model_path = dupstr(cfg->model_path ? cfg->model_path : s->model_name);
    size_t tl = strlen(s->model_name) + 16;
    s->model_title = malloc(tl);
    if (s->model_title) snprintf(s->model_title, tl, "%s", s->model_name);
    const char *dn = engines[0].device_name ? engines[0].device_name(engines[0].ctx) : NULL;
    s->device_name = dupstr(dn ? dn : "unknown");
    s->cfg.host = s->host;
    s->cfg.api_key = s->api_key;
    s->cfg.cors = s->cors;
    s->cfg.model_name = s->model_name;
    s->cfg.model_path = s->model_path;
    s->engines = malloc((size_t)n_engines * sizeof *engines);
    if (!s->engines) {
        if (err) snprintf(err, errlen, "out of memory");
        destroy_engines(engines, n_engines);
        server_free_parts(s);
        free(s);
        return ZIMAGE_ENOMEM;
    }
    memcpy(s->engines, engines, (size_t)n_engines * sizeof *engines);
    s->n_engines = n_engines;
    s->t_start = ztime_now();
    s->a1111.live_previews_enable = 1;
    s->a1111.show_progress_every_n_steps = 1;
    s->a1111.samples_format = ZS_FMT_PNG;
    if (s->cfg.max_batch < 1) s->cfg.max_batch = 1;
    if (s->cfg.max_batch > 64) s->cfg.max_batch = 64;

    /* limits: sizes snapped to multiples of 16 */
    zs_limits *l = &s->lim;
    l->min_size = (cfg->min_size > 0 ? cfg->min_size + 15 : 16) / 16 * 16;
    l->max_size = (cfg->max_size > 0 ? cfg->max_size : 2048) / 16 * 16;
    if (l->max_size < l->min_size) l->max_size = l->min_size;
    int ds = cfg->default_size > 0 ? cfg->default_size / 16 * 16 : 1024;
    l->default_size = ds < l->min_size ? l->min_size : ds > l->max_size ? l->max_size : ds;
    l->max_steps = cfg->max_steps > 0 ? cfg->max_steps : 50;
    l->default_steps = cfg->default_steps > 0 ? cfg->default_steps : 8;
    if (l->default_steps > l->max_steps) l->default_steps = l->max_steps;
    l->max_n = cfg->max_n > 0 ? cfg->max_n : 8;
    l->max_prompt = cfg->max_prompt > 0 ? cfg->max_prompt : 8192;
    if (s->cfg.max_body == 0) s->cfg.max_body = 1 << 20;
    if (s->cfg.idle_timeout <= 0) s->cfg.idle_timeout = 60;

    s->m = zs_metrics_new();
    zs_queue_config qc = {
        .max_queue = cfg->max_queue,
        .max_batch = s->cfg.max_batch,
        .job_ttl = cfg->job_ttl > 0 ? cfg->job_ttl : 600,
        .max_retained = cfg->max_retained ? cfg->max_retained : (size_t)512 << 20,
        .batch_wait_ms = cfg->batch_wait_ms,
        .shutdown_grace = cfg->shutdown_grace >= 0 ? cfg->shutdown_grace : 30,
        .model_name = s->model_name,
    };
    if (!s->m || zs_queue_new(&s->q, &qc, s->engines, n_engines, s->m) != ZS_Q_OK) {
        if (err) snprintf(err, errlen, "out of memory");
        goto fail;
    }

    /* bind address */
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", cfg->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(s->host, portstr, &hints, &ai);
    if (gai != 0 || !ai) {
        if (err) snprintf(err, errlen, "cannot resolve bind address '%s': %s", s->host, gai_strerror(gai));
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_USE_POLL;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, access_cb, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)(cfg->max_conns > 0 ? cfg->max_conns : 256),
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.idle_timeout, MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        if (err) snprintf(err, errlen, "cannot listen on %s:%d: %s", s->host, cfg->port, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    *out = s;
    return 0;
fail:
    if (s->q) zs_queue_free(s->q);
    zs_metrics_free(s->m);
    destroy_engines(s->engines, n_engines);
    free(s->engines);
    server_free_parts(s);
    free(s);
    return ZIMAGE_EIO;
}

int zs_port(const zs_server *s) { return s->port; }

void zs_shutdown(zs_server *s) {
    pthread_mutex_lock(&s->mu);
    if (s->shut) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->shut = 1;
    s->draining = 1;
    pthread_mutex_unlock(&s->mu);
    /* 1. stop accepting connections */
    MHD_socket ls = MHD_quiesce_daemon(s->d);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    /* 2. cancel waiting work, finish (or after the grace period cancel)
     *    running work: every waiting handler then answers */
    zs_queue_close(s->q);
    /* 3. give the handlers a moment to send their answers, then stop */
    for (int i = 0; i < 40; i++) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (!di || di->num_connections == 0) break;
        usleep(50000);
    }
    MHD_stop_daemon(s->d);
    s->d = NULL;
}

void zs_free(zs_server *s) {
    if (!s) return;
    zs_shutdown(s);
    zs_queue_free(s->q);
    destroy_engines(s->engines, s->n_engines);
    free(s->engines);
    zs_metrics_free(s->m);
    server_free_parts(s);
    free(s);
}
