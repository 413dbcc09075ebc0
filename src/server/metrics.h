/* metrics.h - Prometheus counters, gauges and histograms of the server,
 * rendered as text exposition format 0.0.4 by GET /metrics.  Thread-safe. */
#ifndef ZIMAGE_SERVER_METRICS_H
#define ZIMAGE_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "zimage.h"

typedef struct zs_metrics zs_metrics;

/* Values sampled at render time (queue, engine). */
typedef struct zs_gauges {
    int queue_jobs;          /* jobs waiting (not started)          */
    int queue_items;         /* images waiting                      */
    int queue_capacity;
    int running_jobs;
    int retained_jobs;       /* finished jobs kept for GET          */
    size_t retained_bytes;
    uint64_t cache_hits, cache_misses;
    int model_loaded;
    int workers;
} zs_gauges;

zs_metrics *zs_metrics_new(void);
void zs_metrics_free(zs_metrics *m);

/* One answered HTTP request: endpoint is a route pattern (bounded set). */
void zs_metrics_request(zs_metrics *m, const char *endpoint, const char *method, int status, double seconds);
/* Time from submit to first dispatch of a job. */
void zs_metrics_queue_wait(zs_metrics *m, double seconds);
/* One generate_many call: items, its stage timings, peak device memory. */
void zs_metrics_batch(zs_metrics *m, int items, const zimage_timings *t);
/* A job reached a final state: "completed", "failed", "cancelled"; images
 * = images it produced. */
void zs_metrics_job(zs_metrics *m, const char *status, int images);
/* A 429. */
void zs_metrics_rejected(zs_metrics *m);

/* Render everything; malloc'd string. */
char *zs_metrics_render(zs_metrics *m, const zs_gauges *g);

#endif
