/* server.h - the zimage HTTP server (issue 5): OpenAI and A1111 compatible
 * image APIs, an async jobs API with SSE progress, Prometheus metrics and a
 * web page, on libmicrohttpd.  `zimage serve` (src/cli/cmd_serve.c) and the
 * tests start it through this header.
 *
 * The server reaches the generation library only through a zs_engine (a
 * small vtable): engine_zimage.c fills one from a real zimage_ctx, the tests
 * can plug in a fake one.  One worker thread per engine (= per device)
 * consumes one bounded job queue and batches waiting requests of the same
 * width/height/steps/cfg into one generate_many call.
 */
#ifndef ZIMAGE_SERVER_H
#define ZIMAGE_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "zimage.h"

/* What the server needs from a generation backend.  Calls on one engine
 * are serialized by its worker; different engines run in parallel. */
typedef struct zs_engine {
    void *ctx;
    /* zimage_generate_many semantics: n items sharing size/steps/cfg, each
     * with its own seed; results[i] filled on success. */
    int (*generate_many)(void *ctx, const zimage_params *items, int n, zimage_result *results);
    void (*result_free)(void *ctx, zimage_result *r);
    const char *(*errmsg)(void *ctx);
    const char *(*device_name)(void *ctx);
    /* may be NULL */
    void (*cache_stats)(void *ctx, uint64_t *hits, uint64_t *misses);
    int (*infotext)(void *ctx, const zimage_params *p, int64_t seed, const char *model_name, char *buf,
                    size_t buflen);
    void (*destroy)(void *ctx);
} zs_engine;

/* Fill *eng with a real zimage context loaded from opt (engine_zimage.c). */
int zs_engine_zimage(zs_engine *eng, const zimage_options *opt, char *err, size_t errlen);

typedef struct zs_config {
    const char *host;        /* bind address, default "127.0.0.1"           */
    int port;                /* default 7860; 0 = any free port             */
    const char *api_key;     /* NULL: no auth                               */
    const char *cors;        /* Access-Control-Allow-Origin value or NULL   */
    const char *model_name;  /* shown by /v1/models, sd-models, infotext    */
    const char *model_path;  /* shown by sd-models                          */
    int max_queue;           /* waiting jobs before 429 (default 64)        */
    int max_batch;           /* images per generate_many (default 4)        */
    int min_size, max_size;  /* per side, multiples of 16 (256..2048)       */
    int default_size;        /* 0: 1024 clamped into [min,max]              */
    int default_steps;       /* default 8                                   */
    int max_steps;           /* default 50                                  */
    int max_n;               /* images per request (default 8)              */
    size_t max_body;         /* request body bytes (default 1 MiB)          */
    size_t max_prompt;       /* prompt bytes (default 8192)                 */
    double job_ttl;          /* seconds a finished job is kept (600)        */
    size_t max_retained;     /* bytes of finished images kept (512 MiB)     */
    int max_conns;           /* concurrent connections (default 256)        */
    int idle_timeout;        /* seconds an idle keep-alive connection is
                                kept (default 60); a client waiting for its
                                job or reading SSE is never timed out      */
    double shutdown_grace;   /* seconds running work may finish (30)        */
    int batch_wait_ms;       /* wait this long for a batch to fill (0)      */
    int quiet;               /* no request log                              */
} zs_config;

void zs_config_defaults(zs_config *c);

typedef struct zs_server zs_server;

/* Start listening.  Takes ownership of the n_engines engines (destroyed by
 * zs_free, or here on failure). */
int zs_start(zs_server **out, const zs_config *cfg, zs_engine *engines, int n_engines, char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
int zs_port(const zs_server *s);
/* Graceful stop: stop accepting connections, cancel queued jobs, let running
 * work finish for up to cfg.shutdown_grace seconds (then cancel it), answer
 * every waiting client, stop the daemon.  Idempotent. */
void zs_shutdown(zs_server *s);
/* zs_shutdown if needed, then free everything (engines included). */
void zs_free(zs_server *s);

#endif
