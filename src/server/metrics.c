/* metrics.c - Prometheus text exposition (see metrics.h).
 *
 * Series (all prefixed zimage_):
 *   http_requests_total{endpoint,method,status}        counter
 *   http_request_duration_seconds{endpoint}            histogram
 *   queue_wait_seconds                                 histogram
 *   batch_size                                         histogram (images per generate_many)
 *   stage_seconds_total{stage}                         counter (tokenize/encode/denoise/decode/total)
 *   images_generated_total, jobs_total{status}, queue_rejected_total
 *   prompt_cache_hits_total, prompt_cache_misses_total counters (from the engine)
 *   queue_depth, queue_items, queue_capacity, jobs_running, jobs_retained,
 *   retained_bytes, model_loaded, workers, gpu_memory_peak_bytes   gauges
 * Endpoint labels come from the router's fixed route names, so cardinality
 * is bounded.
 */
#include "server/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCK 15
static const double LAT_BUCKETS[NBUCK] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
#define NBATCH 7
static const double BATCH_BUCKETS[NBATCH] = {1, 2, 4, 8, 16, 32, 64};

typedef struct hist {
    uint64_t b[NBUCK + 1]; /* non-cumulative counts; last = +Inf */
    double sum;
    uint64_t count;
} hist;

static void hist_add(hist *h, const double *bounds, int nb, double v) {
    int i = 0;
    while (i < nb && v > bounds[i]) i++;
    h->b[i]++;
    h->sum += v;
    h->count++;
}

#define MAX_REQ_SERIES 256
#define MAX_ENDPOINTS 64

typedef struct req_series {
    char endpoint[48], method[8];
    int status;
    uint64_t count;
} req_series;

typedef struct ep_hist {
    char endpoint[48];
    hist h;
} ep_hist;

struct zs_metrics {
    pthread_mutex_t mu;
    req_series req[MAX_REQ_SERIES];
    int n_req;
    ep_hist lat[MAX_ENDPOINTS];
    int n_lat;
    hist queue_wait, batch;
    double stage[5]; /* tokenize encode denoise decode total */
    uint64_t images, batches, rejected;
    uint64_t jobs_completed, jobs_failed, jobs_cancelled;
    size_t gpu_peak;
};

zs_metrics *zs_metrics_new(void) {
    zs_metrics *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

void zs_metrics_free(zs_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void zs_metrics_request(zs_metrics *m, const char *endpoint, const char *method, int status, double seconds) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    int i;
    for (i = 0; i < m->n_req; i++)
        if (m->req[i].status == status && !strcmp(m->req[i].endpoint, endpoint) && !strcmp(m->req[i].method, method))
            break;
    if (i == m->n_req && m->n_req < MAX_REQ_SERIES) {
        snprintf(m->req[i].endpoint, sizeof m->req[i].endpoint, "%s", endpoint);
        snprintf(m->req[i].method, sizeof m->req[i].method, "%s", method);
        m->req[i].status = status;
        m->n_req++;
    }
    if (i < m->n_req) m->req[i].count++;
    for (i = 0; i < m->n_lat; i++)
        if (!strcmp(m->lat[i].endpoint, endpoint)) break;
    if (i == m->n_lat && m->n_lat < MAX_ENDPOINTS) {
        snprintf(m->lat[i].endpoint, sizeof m->lat[i].endpoint, "%s", endpoint);
        m->n_lat++;
    }
    if (i < m->n_lat) hist_add(&m->lat[i].h, LAT_BUCKETS, NBUCK, seconds);
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_queue_wait(zs_metrics *m, double seconds) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    hist_add(&m->queue_wait, LAT_BUCKETS, NBUCK, seconds);
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_batch(zs_metrics *m, int items, const zimage_timings *t) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    hist_add(&m->batch, BATCH_BUCKETS, NBATCH, items);
    m->batches++;
    if (t) {
        m->stage[0] += t->tokenize;
        m->stage[1] += t->encode;
        m->stage[2] += t->denoise;
        m->stage[3] += t->decode;
        m->stage[4] += t->total;
        if (t->peak_device_bytes > m->gpu_peak) m->gpu_peak = t->peak_device_bytes;
    }
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_job(zs_metrics *m, const char *status, int images) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    if (!strcmp(status, "completed")) m->jobs_completed++;
    else if (!strcmp(status, "failed")) m->jobs_failed++;
    else m->jobs_cancelled++;
    m->images += (uint64_t)(images > 0 ? images : 0);
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_rejected(zs_metrics *m) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->rejected++;
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ----------------------------------------------------------------- */

typedef struct sb {
    char *p;
    size_t len, cap;
} sb;

static void sbf(sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbf(sb *s, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(s->p ? s->p + s->len : NULL, s->p ? s->cap - s->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (s->p && s->len + (size_t)n < s->cap) {
            s->len += (size_t)n;
            return;
        }
        size_t cap = s->cap ? s->cap * 2 : 8192;
        while (cap < s->len + (size_t)n + 1) cap *= 2;
        char *q = realloc(s->p, cap);
        if (!q) return;
        s->p = q;
        s->cap = cap;
    }
}

static void render_hist(sb *s, const char *name, const char *labels, const hist *h, const double *bounds, int nb) {
    uint64_t cum = 0;
    for (int i = 0; i < nb; i++) {
        cum += h->b[i];
        sbf(s, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, labels[0] ? "," : "", bounds[i],
            (unsigned long long)cum);
    }
    cum += h->b[nb];
    sbf(s, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, labels[0] ? "," : "", (unsigned long long)cum);
    if (labels[0]) {
        sbf(s, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, h->sum, name, labels,
            (unsigned long long)h->count);
    } else {
        sbf(s, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
    }
}

char *zs_metrics_render(zs_metrics *m, const zs_gauges *g) {
    sb s = {0};
    pthread_mutex_lock(&m->mu);
    sbf(&s, "# HELP zimage_http_requests_total HTTP requests answered, by endpoint, method and status.\n"
            "# TYPE zimage_http_requests_total counter\n");
    for (int i = 0; i < m->n_req; i++)
        sbf(&s, "zimage_http_requests_total{endpoint=\"%s\",method=\"%s\",status=\"%d\"} %llu\n", m->req[i].endpoint,
            m->req[i].method, m->req[i].status, (unsigned long long)m->req[i].count);
    sbf(&s, "# HELP zimage_http_request_duration_seconds Time from request to response, by endpoint.\n"
            "# TYPE zimage_http_request_duration_seconds histogram\n");
    for (int i = 0; i < m->n_lat; i++) {
        char lab[80];
        snprintf(lab, sizeof lab, "endpoint=\"%s\"", m->lat[i].endpoint);
        render_hist(&s, "zimage_http_request_duration_seconds", lab, &m->lat[i].h, LAT_BUCKETS, NBUCK);
    }
    sbf(&s, "# HELP zimage_queue_wait_seconds Time a job waited in the queue before it started.\n"
            "# TYPE zimage_queue_wait_seconds histogram\n");
    render_hist(&s, "zimage_queue_wait_seconds", "", &m->queue_wait, LAT_BUCKETS, NBUCK);
    sbf(&s, "# HELP zimage_batch_size Images per batched generation call.\n# TYPE zimage_batch_size histogram\n");
    render_hist(&s, "zimage_batch_size", "", &m->batch, BATCH_BUCKETS, NBATCH);
    static const char *const stages[5] = {"tokenize", "encode", "denoise", "decode", "total"};
    sbf(&s, "# HELP zimage_stage_seconds_total Seconds spent per pipeline stage.\n"
            "# TYPE zimage_stage_seconds_total counter\n");
    for (int i = 0; i < 5; i++) sbf(&s, "zimage_stage_seconds_total{stage=\"%s\"} %.6f\n", stages[i], m->stage[i]);
    sbf(&s, "# HELP zimage_images_generated_total Images generated.\n# TYPE zimage_images_generated_total counter\n"
            "zimage_images_generated_total %llu\n",
        (unsigned long long)m->images);
    sbf(&s, "# HELP zimage_batches_total Batched generation calls.\n# TYPE zimage_batches_total counter\n"
            "zimage_batches_total %llu\n",
        (unsigned long long)m->batches);
    sbf(&s, "# HELP zimage_jobs_total Jobs finished, by final status.\n# TYPE zimage_jobs_total counter\n"
            "zimage_jobs_total{status=\"completed\"} %llu\nzimage_jobs_total{status=\"failed\"} %llu\n"
            "zimage_jobs_total{status=\"cancelled\"} %llu\n",
        (unsigned long long)m->jobs_completed, (unsigned long long)m->jobs_failed,
        (unsigned long long)m->jobs_cancelled);
    sbf(&s, "# HELP zimage_queue_rejected_total Requests refused with 429 (queue full).\n"
            "# TYPE zimage_queue_rejected_total counter\nzimage_queue_rejected_total %llu\n",
        (unsigned long long)m->rejected);
    sbf(&s, "# HELP zimage_gpu_memory_peak_bytes Peak device memory reported by the engine.\n"
            "# TYPE zimage_gpu_memory_peak_bytes gauge\nzimage_gpu_memory_peak_bytes %zu\n",
        m->gpu_peak);
    pthread_mutex_unlock(&m->mu);
    if (g) {
        sbf(&s, "# HELP zimage_prompt_cache_hits_total Prompt-embedding cache hits.\n"
                "# TYPE zimage_prompt_cache_hits_total counter\nzimage_prompt_cache_hits_total %llu\n"
                "# HELP zimage_prompt_cache_misses_total Prompt-embedding cache misses.\n"
                "# TYPE zimage_prompt_cache_misses_total counter\nzimage_prompt_cache_misses_total %llu\n",
            (unsigned long long)g->cache_hits, (unsigned long long)g->cache_misses);
        sbf(&s, "# HELP zimage_queue_depth Jobs waiting to start.\n# TYPE zimage_queue_depth gauge\nzimage_queue_depth %d\n",
            g->queue_jobs);
        sbf(&s, "# HELP zimage_queue_items Images waiting to start.\n# TYPE zimage_queue_items gauge\nzimage_queue_items %d\n",
            g->queue_items);
        sbf(&s, "# HELP zimage_queue_capacity Waiting jobs accepted before 429.\n# TYPE zimage_queue_capacity gauge\n"
                "zimage_queue_capacity %d\n",
            g->queue_capacity);
        sbf(&s, "# HELP zimage_jobs_running Jobs being generated.\n# TYPE zimage_jobs_running gauge\nzimage_jobs_running %d\n",
            g->running_jobs);
        sbf(&s, "# HELP zimage_jobs_retained Finished jobs kept for retrieval.\n# TYPE zimage_jobs_retained gauge\n"
                "zimage_jobs_retained %d\n",
            g->retained_jobs);
        sbf(&s, "# HELP zimage_retained_bytes Bytes of images kept for retrieval.\n# TYPE zimage_retained_bytes gauge\n"
                "zimage_retained_bytes %zu\n",
            g->retained_bytes);
        sbf(&s, "# HELP zimage_model_loaded 1 when the model is loaded.\n# TYPE zimage_model_loaded gauge\n"
                "zimage_model_loaded %d\n",
            g->model_loaded);
        sbf(&s, "# HELP zimage_workers Generation workers (one per device).\n# TYPE zimage_workers gauge\n"
                "zimage_workers %d\n",
            g->workers);
    }
    return s.p;
}
