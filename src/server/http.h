/* http.h - internals shared by the server's files: the server object, the
 * per-request context, reply helpers (JSON, errors, raw bytes, SSE) and the
 * route handlers each api_*.c / web.c implements. */
#ifndef ZIMAGE_SERVER_HTTP_H
#define ZIMAGE_SERVER_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stddef.h>

#include "server/json_req.h"
#include "server/metrics.h"
#include "server/queue.h"
#include "server/server.h"

struct zs_server {
    zs_config cfg;             /* strings point into owned copies below      */
    char *host, *api_key, *cors, *model_name, *model_path, *model_title;
    char *device_name;         /* cached at start (engine 0)                 */
    zs_limits lim;
    zs_engine *engines;
    int n_engines;
    zs_queue *q;
    zs_metrics *m;
    struct MHD_Daemon *d;
    int port;
    double t_start;
    pthread_mutex_t mu;        /* guards a1111 options and shutdown state    */
    zs_a1111_opts a1111;
    volatile int draining;     /* shutting down: refuse new work            */
    int shut;                  /* zs_shutdown done                           */
};

/* One HTTP request (MHD's con_cls). */
typedef struct zs_req {
    zs_server *s;
    struct MHD_Connection *conn;
    const char *method, *url;
    char *body;                /* NUL-terminated                             */
    size_t len, cap;
    int too_large;
    double t0;
    const char *endpoint;      /* route label for metrics                    */
    int status;                /* status answered (0 = none yet)             */
    int fd;                    /* the client's socket (disconnect checks)    */
    int long_poll;             /* idle timeout lifted while waiting          */
    char p1[80], p2[16];       /* path parameters ({id}, {i})                */
    char log_method[8];        /* copies for the request log / metrics,      */
    char log_url[160];         /* which run after MHD may reuse its buffers  */
} zs_req;

/* ---- replies (each queues a response; returns MHD_YES / MHD_NO) ------------ */
enum MHD_Result zs_reply_json(zs_req *r, int status, json_t *body); /* steals body */
/* {"error": {"message", "type", "param", "code"}} (OpenAI's shape). */
enum MHD_Result zs_reply_error(zs_req *r, int status, const char *type, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* FastAPI's 422 shape, as A1111 answers: {"detail": [{"loc", "msg", "type"}]}. */
enum MHD_Result zs_reply_a1111_error(zs_req *r, int status, const char *field, const char *msg);
enum MHD_Result zs_reply_bytes(zs_req *r, int status, const char *mime, const void *data, size_t len, int copy);
/* 429 with Retry-After, 503 when closing. */
enum MHD_Result zs_reply_submit_error(zs_req *r, int qrc, int a1111);

/* ---- SSE -------------------------------------------------------------------------- */
typedef struct zs_sse zs_sse;
struct zs_sse {
    zs_server *s;
    int fd;
    char *buf;                 /* pending bytes [pos, len)                   */
    size_t len, pos, cap;
    int done;                  /* no more events after buf drains            */
    int gone;                  /* the client went away                       */
    double last_write;
    /* Append zero or more events, waiting at most ~0.25 s; set done after
     * the last one. */
    void (*produce)(zs_sse *e);
    /* Called once when the stream ends (gone tells why). */
    void (*on_close)(zs_sse *e);
    void *user;
};
void zs_sse_event(zs_sse *e, const char *event, unsigned id, json_t *data); /* steals data */
/* Start streaming e (allocated by the caller with calloc; freed by us). */
enum MHD_Result zs_reply_sse(zs_req *r, zs_sse *e);

/* ---- helpers ---------------------------------------------------------------------- */
int zs_client_gone(int fd);
/* Wait until j is final; -1 (job cancelled) if the client disconnects. */
int zs_wait_final(zs_req *r, zs_job *j);
const char *zs_query(zs_req *r, const char *key);
/* "http://HOST" from the Host header (for absolute URLs). */
void zs_base_url(zs_req *r, char *buf, size_t n);
/* b64 of an encoded image (NULL if unavailable). */
char *zs_job_image_b64(zs_server *s, zs_job *j, int i);
/* JSON of a job (jobs API shape); images as urls, plus b64 if with_b64. */
json_t *zs_job_json(zs_server *s, zs_job *j, int with_b64);
/* PNG data: URL of an RGB preview (malloc'd). */
char *zs_preview_data_url(const uint8_t *rgb, int w, int h);

/* ---- handlers ----------------------------------------------------------------------- */
enum MHD_Result zs_openai_generations(zs_req *r);
enum MHD_Result zs_openai_models(zs_req *r);
enum MHD_Result zs_openai_model(zs_req *r);
enum MHD_Result zs_a1111_txt2img(zs_req *r);
enum MHD_Result zs_a1111_progress(zs_req *r);
enum MHD_Result zs_a1111_interrupt(zs_req *r);
enum MHD_Result zs_a1111_sd_models(zs_req *r);
enum MHD_Result zs_a1111_options_get(zs_req *r);
enum MHD_Result zs_a1111_options_post(zs_req *r);
enum MHD_Result zs_a1111_samplers(zs_req *r);
enum MHD_Result zs_jobs_create(zs_req *r);
enum MHD_Result zs_jobs_get(zs_req *r);
enum MHD_Result zs_jobs_cancel(zs_req *r);
enum MHD_Result zs_jobs_events(zs_req *r);
enum MHD_Result zs_jobs_image(zs_req *r);
enum MHD_Result zs_web_page(zs_req *r);

#endif
