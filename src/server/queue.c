/* queue.c - bounded job queue, batching workers and the job table with TTL
 * (see queue.h for the model and the locking rules).
 *
 * Data structures (all under q->mu):
 *   queue list   q->head..q->tail, jobs with items not yet dispatched, FIFO
 *   table        HBUCKETS chained buckets by FNV-1a of the id
 *   finished     doubly linked FIFO of final jobs in the table (TTL and
 *                retained-bytes eviction take from its head)
 */
#include "server/queue.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "base/log.h"
#include "server/imgenc.h"

#define HBUCKETS 1024

typedef struct worker {
    zs_queue *q;
    zs_engine *eng;
    pthread_t th;
    int started;
    uint64_t cache_hits, cache_misses; /* engine stats after the last batch */
} worker;

struct zs_queue {
    zs_queue_config cfg;
    zs_metrics *m;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* workers: new work or closing         */
    pthread_cond_t idle_cv;   /* close: a batch finished              */
    zs_job *head, *tail;
    zs_job *table[HBUCKETS];
    zs_job *fin_head, *fin_tail;
    int waiting_jobs;         /* in queue with status QUEUED          */
    int running_batches;
    int table_jobs;
    size_t retained_bytes;
    int closing, hard_cancel, closed;
    double avg_batch_s;
    uint64_t rng;
    worker *workers;
    int n_workers;
};

/* ---- small helpers ---------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static unsigned hash_id(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h % HBUCKETS;
}

static void abstime_in(struct timespec *ts, double s) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    double whole = floor(s);
    ts->tv_sec += (time_t)whole;
    ts->tv_nsec += (long)((s - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

const char *zs_job_status_name(int s) {
    static const char *const names[] = {"queued", "running", "completed", "failed", "cancelled"};
    return s >= 0 && s <= 4 ? names[s] : "unknown";
}

static void bump(zs_job *j) {
    j->version++;
    pthread_cond_broadcast(&j->cv);
}

static void job_free(zs_job *j) {
    zs_gen_req_free(&j->req);
    for (int i = 0; i < j->n; i++) {
        if (j->images) free(j->images[i]);
        if (j->enc) free(j->enc[i]);
        if (j->infotext) free(j->infotext[i]);
    }
    free(j->images);
    free(j->enc);
    free(j->enc_len);
    free(j->infotext);
    free(j->seeds);
    free(j->preview);
    pthread_cond_destroy(&j->cv);
    free(j);
}

/* Lock held.  Drop one reference. */
static void unref_locked(zs_job *j) {
    if (--j->refs == 0) job_free(j);
}

/* ---- queue list, table, finished list (lock held) ------------------------- */

static void queue_remove(zs_queue *q, zs_job *j) {
    if (!j->in_queue) return;
    zs_job **pp = &q->head, *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (*pp) {
        *pp = j->qnext;
        if (q->tail == j) q->tail = prev;
    }
    j->qnext = NULL;
    j->in_queue = 0;
    if (j->status == ZS_JOB_QUEUED) q->waiting_jobs--;
}

static void finished_remove(zs_queue *q, zs_job *j) {
    if (!j->in_finished) return;
    if (j->fprev) j->fprev->fnext = j->fnext;
    else q->fin_head = j->fnext;
    if (j->fnext) j->fnext->fprev = j->fprev;
    else q->fin_tail = j->fprev;
    j->fnext = j->fprev = NULL;
    j->in_finished = 0;
}

static void table_remove(zs_queue *q, zs_job *j) {
    if (!j->in_table) return;
    zs_job **pp = &q->table[hash_id(j->id)];
    while (*pp && *pp != j) pp = &(*pp)->hnext;
    if (*pp) *pp = j->hnext;
    j->hnext = NULL;
    j->in_table = 0;
    q->table_jobs--;
    finished_remove(q, j);
    q->retained_bytes -= j->bytes;
    j->bytes = 0;
    unref_locked(j);
}

/* Expire finished jobs past their TTL, then the oldest ones while the
 * retained bytes exceed the cap. */
static void sweep(zs_queue *q) {
    double now = ztime_now();
    while (q->fin_head && (now - q->fin_head->t_finished > q->cfg.job_ttl || q->retained_bytes > q->cfg.max_retained))
        table_remove(q, q->fin_head);
}

/* Make j final (lock held): status, time, metrics, finished list. */
static void finalize(zs_queue *q, zs_job *j, int status, const char *error) {
    if (zs_job_final(j->status)) return;
    queue_remove(q, j);
    j->status = status;
    j->t_finished = ztime_now();
    if (error && !j->error[0]) snprintf(j->error, sizeof j->error, "%s", error);
    if (status == ZS_JOB_COMPLETED) j->progress = 1.0;
    if (j->in_table) {
        size_t b = 0;
        for (int i = 0; i < j->n; i++)
            if (j->images[i]) b += (size_t)j->req.width * (size_t)j->req.height * 3;
        j->bytes = b;
        q->retained_bytes += b;
        j->fprev = q->fin_tail;
        j->fnext = NULL;
        if (q->fin_tail) q->fin_tail->fnext = j;
        else q->fin_head = j;
        q->fin_tail = j;
        j->in_finished = 1;
    }
    zs_metrics_job(q->m, zs_job_status_name(status), j->done_items);
    bump(j);
}

/* ---- public: submit / find / release / cancel --------------------------------- */

int zs_queue_submit(zs_queue *q, int api, zs_gen_req *req, int retain, zs_job **out, int *position) {
    *out = NULL;
    zs_job *j = calloc(1, sizeof *j);
    if (!j) return ZS_Q_NOMEM;
    int n = req->n > 0 ? req->n : 1;
    j->seeds = calloc((size_t)n, sizeof *j->seeds);
    j->images = calloc((size_t)n, sizeof *j->images);
    j->enc = calloc((size_t)n, sizeof *j->enc);
    j->enc_len = calloc((size_t)n, sizeof *j->enc_len);
    j->infotext = calloc((size_t)n, sizeof *j->infotext);
    if (!j->seeds || !j->images || !j->enc || !j->enc_len || !j->infotext) {
        free(j->seeds);
        free(j->images);
        free(j->enc);
        free(j->enc_len);
        free(j->infotext);
        free(j);
        return ZS_Q_NOMEM;
    }
    cond_init_mono(&j->cv);
    j->n = n;
    j->api = api;
    j->retain = retain;
    j->created = (int64_t)time(NULL);
    j->stage = "queued";
    j->steps = req->steps;
    uint8_t rnd[12];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        uint64_t t = (uint64_t)(ztime_now() * 1e9);
        for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (uint8_t)(splitmix(&t) >> 24);
    }
    int k = snprintf(j->id, sizeof j->id, "job_");
    for (size_t i = 0; i < sizeof rnd; i++) k += snprintf(j->id + k, sizeof j->id - (size_t)k, "%02x", rnd[i]);

    pthread_mutex_lock(&q->mu);
    sweep(q);
    int rc = q->closing ? ZS_Q_CLOSED : q->waiting_jobs >= q->cfg.max_queue ? ZS_Q_FULL : ZS_Q_OK;
    if (rc != ZS_Q_OK) {
        pthread_mutex_unlock(&q->mu);
        job_free(j);
        if (rc == ZS_Q_FULL) zs_metrics_rejected(q->m);
        return rc;
    }
    int64_t base = req->seed;
    if (base < 0) base = (int64_t)(splitmix(&q->rng) % 4294967295ull);
    for (int i = 0; i < n; i++) j->seeds[i] = base + i;
    j->req = *req;
    memset(req, 0, sizeof *req);
    j->t_submit = ztime_now();
    j->refs = 2; /* table + caller */
    unsigned h = hash_id(j->id);
    j->hnext = q->table[h];
    q->table[h] = j;
    j->in_table = 1;
    q->table_jobs++;
    if (q->tail) q->tail->qnext = j;
    else q->head = j;
    q->tail = j;
    j->in_queue = 1;
    q->waiting_jobs++;
    if (position) {
        int pos = 0;
        for (zs_job *x = q->head; x && x != j; x = x->qnext) pos++;
        *position = pos;
    }
    pthread_cond_broadcast(&q->work_cv);
    pthread_mutex_unlock(&q->mu);
    *out = j;
    return ZS_Q_OK;
}

zs_job *zs_queue_find(zs_queue *q, const char *id) {
    pthread_mutex_lock(&q->mu);
    sweep(q);
    zs_job *j = q->table[hash_id(id)];
    while (j && strcmp(j->id, id) != 0) j = j->hnext;
    if (j) j->refs++;
    pthread_mutex_unlock(&q->mu);
    return j;
}

void zs_queue_release(zs_queue *q, zs_job *j) {
    if (!j) return;
    pthread_mutex_lock(&q->mu);
    unref_locked(j);
    pthread_mutex_unlock(&q->mu);
}

static int cancel_locked(zs_queue *q, zs_job *j, int reason) {
    if (zs_job_final(j->status)) return j->status;
    j->cancel = reason;
    const char *msg = reason == ZS_CANCEL_INTERRUPT  ? "interrupted"
                      : reason == ZS_CANCEL_SHUTDOWN ? "server shutting down"
                                                     : "cancelled";
    finalize(q, j, ZS_JOB_CANCELLED, msg);
    return j->status;
}

int zs_queue_cancel(zs_queue *q, zs_job *j, int reason) {
    pthread_mutex_lock(&q->mu);
    int s = cancel_locked(q, j, reason);
    pthread_mutex_unlock(&q->mu);
    return s;
}

void zs_queue_drop(zs_queue *q, zs_job *j) {
    pthread_mutex_lock(&q->mu);
    cancel_locked(q, j, ZS_CANCEL_CLIENT);
    if (!j->retain) table_remove(q, j);
    pthread_mutex_unlock(&q->mu);
}

int zs_queue_interrupt(zs_queue *q) {
    int k = 0;
    pthread_mutex_lock(&q->mu);
    for (unsigned b = 0; b < HBUCKETS; b++)
        for (zs_job *j = q->table[b]; j; j = j->hnext)
            if (j->status == ZS_JOB_RUNNING) {
                cancel_locked(q, j, ZS_CANCEL_INTERRUPT);
                k++;
            }
    pthread_mutex_unlock(&q->mu);
    return k;
}

int zs_queue_wait(zs_queue *q, zs_job *j, unsigned *version, double timeout_s) {
    struct timespec ts;
    abstime_in(&ts, timeout_s);
    pthread_mutex_lock(&q->mu);
    while (j->version == *version) {
        if (pthread_cond_timedwait(&j->cv, &q->mu, &ts) == ETIMEDOUT) break;
    }
    int changed = j->version != *version;
    *version = j->version;
    pthread_mutex_unlock(&q->mu);
    return changed;
}

void zs_queue_view(zs_queue *q, zs_job *j, unsigned seen_preview, int copy_preview, zs_job_view *v) {
    memset(v, 0, sizeof *v);
    pthread_mutex_lock(&q->mu);
    double now = ztime_now();
    v->status = j->status;
    v->cancel = j->cancel;
    v->position = -1;
    if (j->in_queue && j->status == ZS_JOB_QUEUED) {
        int pos = 0;
        for (zs_job *x = q->head; x && x != j; x = x->qnext) pos++;
        v->position = pos;
    }
    v->n = j->n;
    v->done = j->done_items;
    v->step = j->step;
    v->steps = j->steps;
    v->stage = zs_job_final(j->status) ? zs_job_status_name(j->status) : j->stage;
    v->progress = j->progress;
    double start = j->t_started > 0 ? j->t_started : (j->t_finished > 0 ? j->t_finished : now);
    v->queued_s = start - j->t_submit;
    v->run_s = j->t_started > 0 ? (j->t_finished > 0 ? j->t_finished : now) - j->t_started : 0;
    v->version = j->version;
    v->preview_seq = j->preview_seq;
    v->preview_w = j->preview_w;
    v->preview_h = j->preview_h;
    if (copy_preview && j->preview && j->preview_seq != seen_preview) {
        size_t nb = (size_t)j->preview_w * (size_t)j->preview_h * 3;
        v->preview = malloc(nb);
        if (v->preview) memcpy(v->preview, j->preview, nb);
    }
    v->prompt_cache_hit = j->prompt_cache_hit;
    v->timings = j->timings;
    memcpy(v->error, j->error, sizeof v->error);
    pthread_mutex_unlock(&q->mu);
}

const char *zs_job_infotext(zs_queue *q, zs_job *j, int i) {
    if (i < 0 || i >= j->n) return "";
    pthread_mutex_lock(&q->mu);
    char *t = j->infotext[i];
    pthread_mutex_unlock(&q->mu);
    if (t) return t;
    char buf[8192] = "";
    zs_engine *e = q->workers[0].eng;
    zimage_params p = ZIMAGE_PARAMS_DEFAULT;
    p.prompt = j->req.prompt;
    p.negative_prompt = j->req.negative_prompt;
    p.width = j->req.width;
    p.height = j->req.height;
    p.steps = j->req.steps;
    p.cfg_scale = j->req.cfg_scale;
    p.seed = j->seeds[i];
    if (!e->infotext || e->infotext(e->ctx, &p, j->seeds[i], q->cfg.model_name, buf, sizeof buf) != 0) buf[0] = 0;
    size_t n = strlen(buf) + 1;
    char *s = malloc(n);
    if (!s) return "";
    memcpy(s, buf, n);
    pthread_mutex_lock(&q->mu);
    if (!j->infotext[i]) {
        j->infotext[i] = s;
    } else {
        free(s);
    }
    t = j->infotext[i];
    pthread_mutex_unlock(&q->mu);
    return t;
}

const uint8_t *zs_job_image(zs_queue *q, zs_job *j, int i, size_t *len) {
    *len = 0;
    if (i < 0 || i >= j->n) return NULL;
    pthread_mutex_lock(&q->mu);
    int final = zs_job_final(j->status);
    uint8_t *img = final ? j->images[i] : NULL, *enc = j->enc[i];
    size_t el = j->enc_len[i];
    pthread_mutex_unlock(&q->mu);
    if (!img) return NULL;
    if (enc) {
        *len = el;
        return enc;
    }
    const char *text = zs_job_infotext(q, j, i);
    uint8_t *out;
    size_t n;
    if (zs_encode_image(j->req.format, img, j->req.width, j->req.height, text, j->req.quality, &out, &n)) return NULL;
    pthread_mutex_lock(&q->mu);
    if (!j->enc[i]) {
        j->enc[i] = out;
        j->enc_len[i] = n;
        if (j->in_table) {
            j->bytes += n;
            q->retained_bytes += n;
        }
    } else {
        free(out);
    }
    enc = j->enc[i];
    *len = j->enc_len[i];
    pthread_mutex_unlock(&q->mu);
    return enc;
}

void zs_queue_stats_get(zs_queue *q, zs_queue_stats *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_lock(&q->mu);
    s->waiting_jobs = q->waiting_jobs;
    for (zs_job *j = q->head; j; j = j->qnext) s->waiting_items += j->n - j->next_item;
    for (unsigned b = 0; b < HBUCKETS; b++)
        for (zs_job *j = q->table[b]; j; j = j->hnext) {
            if (j->status == ZS_JOB_RUNNING) s->running_jobs++;
            if (zs_job_final(j->status)) s->retained_jobs++;
        }
    s->capacity = q->cfg.max_queue;
    s->workers = q->n_workers;
    s->retained_bytes = q->retained_bytes;
    s->avg_batch_s = q->avg_batch_s;
    for (int i = 0; i < q->n_workers; i++) {
        s->cache_hits += q->workers[i].cache_hits;
        s->cache_misses += q->workers[i].cache_misses;
    }
    pthread_mutex_unlock(&q->mu);
}

int zs_queue_full(zs_queue *q) {
    pthread_mutex_lock(&q->mu);
    int f = q->closing || q->waiting_jobs >= q->cfg.max_queue;
    pthread_mutex_unlock(&q->mu);
    return f;
}

zs_job *zs_queue_current(zs_queue *q) {
    zs_job *best = NULL;
    pthread_mutex_lock(&q->mu);
    for (unsigned b = 0; b < HBUCKETS; b++)
        for (zs_job *j = q->table[b]; j; j = j->hnext)
            if (j->status == ZS_JOB_RUNNING && (!best || j->t_started < best->t_started)) best = j;
    if (best) best->refs++;
    pthread_mutex_unlock(&q->mu);
    return best;
}

/* ---- the worker ----------------------------------------------------------------- */

typedef struct bitem {
    zs_job *job;
    int idx;
} bitem;

typedef struct batch {
    zs_queue *q;
    bitem *it;
    int n;
    zs_job *jobs[64]; /* distinct jobs (max_batch <= 64) */
    int k[64];        /* items of each job in this batch */
    int njobs;
    zs_job *preview_job;
} batch;

static int same_key(const zs_gen_req *a, const zs_gen_req *b) {
    return a->width == b->width && a->height == b->height && a->steps == b->steps && a->cfg_scale == b->cfg_scale;
}

/* Lock held.  Number of not-yet-dispatched items batchable with the head. */
static int matching_items(zs_queue *q) {
    int c = 0;
    for (zs_job *j = q->head; j; j = j->qnext)
        if (same_key(&j->req, &q->head->req)) c += j->n - j->next_item;
    return c;
}

/* Lock held.  Take up to max_batch items from the queue into b. */
static void build_batch(zs_queue *q, batch *b) {
    b->n = b->njobs = 0;
    b->preview_job = NULL;
    zs_job *head = NULL;
    double now = ztime_now();
    for (zs_job *j = q->head, *next; j && b->n < q->cfg.max_batch; j = next) {
        next = j->qnext;
        if (q->closing && j->status != ZS_JOB_RUNNING) continue;
        if (!head) head = j;
        else if (!same_key(&j->req, &head->req)) continue;
        int slot = b->njobs++;
        b->jobs[slot] = j;
        b->k[slot] = 0;
        j->refs++;
        if (j->status == ZS_JOB_QUEUED) {
            j->status = ZS_JOB_RUNNING;
            j->stage = "starting";
            j->t_started = now;
            q->waiting_jobs--;
            zs_metrics_queue_wait(q->m, now - j->t_submit);
            bump(j);
        }
        while (j->next_item < j->n && b->n < q->cfg.max_batch) {
            b->it[b->n].job = j;
            b->it[b->n].idx = j->next_item++;
            b->n++;
            b->k[slot]++;
            j->inflight++;
        }
        if (j->next_item == j->n) queue_remove(q, j);
    }
    /* The engine previews the batch's first image: put the first job that
     * wants previews first. */
    for (int s = 0; s < b->njobs; s++)
        if (b->jobs[s]->req.preview) {
            b->preview_job = b->jobs[s];
            break;
        }
    if (b->preview_job && b->it[0].job != b->preview_job) {
        bitem tmp[64];
        int m = 0;
        for (int i = 0; i < b->n; i++)
            if (b->it[i].job == b->preview_job) tmp[m++] = b->it[i];
        for (int i = 0; i < b->n; i++)
            if (b->it[i].job != b->preview_job) tmp[m++] = b->it[i];
        memcpy(b->it, tmp, (size_t)b->n * sizeof *tmp);
    }
}

static int on_progress(const zimage_progress *p, void *user) {
    batch *b = user;
    zs_queue *q = b->q;
    /* "image": one image of the batch was decoded (return value ignored);
     * the results are delivered when the call returns */
    if (p->stage && !strcmp(p->stage, "image")) return 0;
    pthread_mutex_lock(&q->mu);
    double frac = 0;
    if (p->steps > 0 && p->stage && !strcmp(p->stage, "denoise")) frac = (double)p->step / p->steps;
    if (p->stage && !strcmp(p->stage, "decode")) frac = 1.0;
    int live = 0;
    for (int s = 0; s < b->njobs; s++) {
        zs_job *j = b->jobs[s];
        if (zs_job_final(j->status)) continue;
        live++;
        j->stage = p->stage ? p->stage : "running";
        j->step = p->step;
        j->steps = p->steps;
        double pr = (j->done_items + b->k[s] * frac * 0.999) / j->n;
        if (pr > j->progress) j->progress = pr;
        if (j == b->preview_job && p->preview_rgb && p->preview_w > 0 && p->preview_h > 0) {
            size_t nb = (size_t)p->preview_w * (size_t)p->preview_h * 3;
            uint8_t *pv = realloc(j->preview, nb);
            if (pv) {
                memcpy(pv, p->preview_rgb, nb);
                j->preview = pv;
                j->preview_w = p->preview_w;
                j->preview_h = p->preview_h;
                j->preview_seq++;
            }
        }
        bump(j);
    }
    int stop = live == 0 || q->hard_cancel;
    pthread_mutex_unlock(&q->mu);
    return stop;
}

static zimage_params item_params(const zs_job *j, int idx) {
    zimage_params p = ZIMAGE_PARAMS_DEFAULT;
    p.prompt = j->req.prompt;
    p.negative_prompt = j->req.negative_prompt;
    p.width = j->req.width;
    p.height = j->req.height;
    p.steps = j->req.steps;
    p.cfg_scale = j->req.cfg_scale;
    p.seed = j->seeds[idx];
    p.batch = 1;
    return p;
}

/* Run b (lock NOT held); then, under the lock, deliver the results.  With
 * retry, a failed multi-job batch is re-run one job at a time. */
static void run_batch(worker *w, batch *b, int retry) {
    zs_queue *q = w->q;
    zs_engine *e = w->eng;
    zimage_params *ps = calloc((size_t)b->n, sizeof *ps);
    zimage_result *rs = calloc((size_t)b->n, sizeof *rs);
    int want_preview = 0;
    pthread_mutex_lock(&q->mu);
    for (int i = 0; i < b->n; i++) {
        if (ps) ps[i] = item_params(b->it[i].job, b->it[i].idx);
    }
    want_preview = b->preview_job && !zs_job_final(b->preview_job->status);
    pthread_mutex_unlock(&q->mu);
    int rc;
    double t0 = ztime_now();
    if (!ps || !rs) {
        rc = ZIMAGE_ENOMEM;
    } else {
        for (int i = 0; i < b->n; i++) {
            ps[i].progress = on_progress;
            ps[i].progress_user = b;
            ps[i].preview = want_preview;
        }
        rc = e->generate_many(e->ctx, ps, b->n, rs);
    }
    double dt = ztime_now() - t0;
    /* engine stats now (this thread owns the engine), before any waiter
     * wakes up and reads them */
    uint64_t hits = 0, misses = 0;
    if (e->cache_stats) e->cache_stats(e->ctx, &hits, &misses);
    pthread_mutex_lock(&q->mu);
    w->cache_hits = hits;
    w->cache_misses = misses;
    pthread_mutex_unlock(&q->mu);
    if (rc != 0 && rc != ZIMAGE_ECANCELLED && retry && b->njobs > 1) {
        ZLOGW("batch of %d jobs failed (%s); retrying each job alone", b->njobs, e->errmsg(e->ctx));
        free(ps);
        free(rs);
        bitem sub_it[64];
        for (int s = 0; s < b->njobs; s++) {
            batch sb = {.q = q, .it = sub_it, .njobs = 1};
            sb.jobs[0] = b->jobs[s];
            sb.k[0] = b->k[s];
            for (int i = 0; i < b->n; i++)
                if (b->it[i].job == b->jobs[s]) sub_it[sb.n++] = b->it[i];
            sb.preview_job = b->jobs[s] == b->preview_job ? b->preview_job : NULL;
            pthread_mutex_lock(&q->mu);
            b->jobs[s]->refs++; /* run_batch releases one per job */
            pthread_mutex_unlock(&q->mu);
            run_batch(w, &sb, 0);
        }
        pthread_mutex_lock(&q->mu);
        for (int s = 0; s < b->njobs; s++) unref_locked(b->jobs[s]);
        pthread_mutex_unlock(&q->mu);
        return;
    }
    char errbuf[512] = "";
    if (rc != 0) snprintf(errbuf, sizeof errbuf, "%s", e->errmsg(e->ctx) ? e->errmsg(e->ctx) : "generation failed");
    if (rc == 0) zs_metrics_batch(q->m, b->n, &rs[0].timings);

    /* Copy images out before taking the lock (a memcpy per image). */
    uint8_t **imgs = calloc((size_t)b->n, sizeof *imgs);
    if (rc == 0 && imgs) {
        for (int i = 0; i < b->n; i++) {
            const zs_job *j = b->it[i].job;
            size_t nb = (size_t)j->req.width * (size_t)j->req.height * 3;
            if (rs[i].n >= 1 && rs[i].images && rs[i].images[0] && rs[i].width == j->req.width &&
                rs[i].height == j->req.height && (imgs[i] = malloc(nb)))
                memcpy(imgs[i], rs[i].images[0], nb);
        }
    }
    pthread_mutex_lock(&q->mu);
    q->avg_batch_s = q->avg_batch_s > 0 ? 0.8 * q->avg_batch_s + 0.2 * dt : dt;
    for (int i = 0; i < b->n; i++) {
        zs_job *j = b->it[i].job;
        int idx = b->it[i].idx;
        j->inflight--;
        if (zs_job_final(j->status)) continue;
        if (rc == 0 && imgs && imgs[i]) {
            j->images[idx] = imgs[i];
            imgs[i] = NULL;
            j->done_items++;
            if (rs[i].seeds) j->seeds[idx] = rs[i].seeds[0];
            j->prompt_cache_hit |= rs[i].prompt_cache_hit;
            j->timings = rs[i].timings;
        } else if (rc == 0) {
            finalize(q, j, ZS_JOB_FAILED, "engine returned no image");
        } else if (rc == ZIMAGE_ECANCELLED) {
            cancel_locked(q, j, q->hard_cancel ? ZS_CANCEL_SHUTDOWN : ZS_CANCEL_CLIENT);
        } else {
            finalize(q, j, ZS_JOB_FAILED, errbuf);
        }
    }
    for (int s = 0; s < b->njobs; s++) {
        zs_job *j = b->jobs[s];
        if (!zs_job_final(j->status)) {
            double pr = (double)j->done_items / j->n;
            if (pr > j->progress) j->progress = pr;
            if (j->done_items == j->n) finalize(q, j, ZS_JOB_COMPLETED, NULL);
            else bump(j);
        }
        unref_locked(j);
    }
    pthread_mutex_unlock(&q->mu);
    if (imgs)
        for (int i = 0; i < b->n; i++) free(imgs[i]);
    free(imgs);
    if (rc == 0)
        for (int i = 0; i < b->n; i++) e->result_free(e->ctx, &rs[i]);
    free(ps);
    free(rs);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    zs_queue *q = w->q;
    bitem items[64];
    batch b = {.q = q, .it = items};
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->closing && !q->head) {
            struct timespec ts;
            abstime_in(&ts, 1.0);
            pthread_cond_timedwait(&q->work_cv, &q->mu, &ts);
            sweep(q);
        }
        if (q->closing) {
            /* finish only jobs already running */
            int any = 0;
            for (zs_job *j = q->head; j; j = j->qnext) any |= j->status == ZS_JOB_RUNNING;
            if (!any) break;
        }
        if (!q->closing && q->cfg.batch_wait_ms > 0 && matching_items(q) < q->cfg.max_batch) {
            double until = q->head->t_submit + q->cfg.batch_wait_ms * 1e-3, now = ztime_now();
            if (now < until) {
                struct timespec ts;
                abstime_in(&ts, until - now);
                pthread_cond_timedwait(&q->work_cv, &q->mu, &ts);
                continue;
            }
        }
        build_batch(q, &b);
        if (b.n == 0) continue;
        q->running_batches++;
        pthread_mutex_unlock(&q->mu);
        run_batch(w, &b, 1);
        pthread_mutex_lock(&q->mu);
        q->running_batches--;
        pthread_cond_broadcast(&q->idle_cv);
        sweep(q);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

int zs_queue_new(zs_queue **out, const zs_queue_config *cfg, zs_engine *engines, int n_engines, zs_metrics *m) {
    *out = NULL;
    if (n_engines < 1) return ZS_Q_NOMEM;
    zs_queue *q = calloc(1, sizeof *q);
    if (!q) return ZS_Q_NOMEM;
    q->cfg = *cfg;
    if (q->cfg.max_batch < 1) q->cfg.max_batch = 1;
    if (q->cfg.max_batch > 64) q->cfg.max_batch = 64;
    if (q->cfg.max_queue < 0) q->cfg.max_queue = 0;
    q->m = m;
    pthread_mutex_init(&q->mu, NULL);
    cond_init_mono(&q->work_cv);
    cond_init_mono(&q->idle_cv);
    if (getrandom(&q->rng, sizeof q->rng, 0) != (ssize_t)sizeof q->rng) q->rng = (uint64_t)(ztime_now() * 1e9);
    q->workers = calloc((size_t)n_engines, sizeof *q->workers);
    if (!q->workers) {
        free(q);
        return ZS_Q_NOMEM;
    }
    q->n_workers = n_engines;
    for (int i = 0; i < n_engines; i++) {
        q->workers[i].q = q;
        q->workers[i].eng = &engines[i];
        if (pthread_create(&q->workers[i].th, NULL, worker_main, &q->workers[i]) != 0) {
            q->n_workers = i;
            zs_queue_free(q);
            return ZS_Q_NOMEM;
        }
        q->workers[i].started = 1;
    }
    *out = q;
    return ZS_Q_OK;
}

void zs_queue_close(zs_queue *q) {
    pthread_mutex_lock(&q->mu);
    if (q->closed) {
        pthread_mutex_unlock(&q->mu);
        return;
    }
    q->closing = 1;
    /* Cancel everything that has not started. */
    for (zs_job *j = q->head, *next; j; j = next) {
        next = j->qnext;
        if (j->status == ZS_JOB_QUEUED) cancel_locked(q, j, ZS_CANCEL_SHUTDOWN);
    }
    pthread_cond_broadcast(&q->work_cv);
    /* Let running work finish within the grace period. */
    struct timespec ts;
    abstime_in(&ts, q->cfg.shutdown_grace);
    int any;
    for (;;) {
        any = q->running_batches > 0;
        for (zs_job *j = q->head; j; j = j->qnext) any |= j->status == ZS_JOB_RUNNING;
        if (!any) break;
        if (pthread_cond_timedwait(&q->idle_cv, &q->mu, &ts) == ETIMEDOUT) break;
    }
    if (any) {
        q->hard_cancel = 1;
        for (unsigned b = 0; b < HBUCKETS; b++)
            for (zs_job *j = q->table[b]; j; j = j->hnext) cancel_locked(q, j, ZS_CANCEL_SHUTDOWN);
    }
    pthread_cond_broadcast(&q->work_cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->n_workers; i++)
        if (q->workers[i].started) pthread_join(q->workers[i].th, NULL);
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_mutex_unlock(&q->mu);
}

void zs_queue_free(zs_queue *q) {
    if (!q) return;
    zs_queue_close(q);
    pthread_mutex_lock(&q->mu);
    for (unsigned b = 0; b < HBUCKETS; b++)
        while (q->table[b]) {
            zs_job *j = q->table[b];
            cancel_locked(q, j, ZS_CANCEL_SHUTDOWN);
            table_remove(q, j);
        }
    pthread_mutex_unlock(&q->mu);
    pthread_cond_destroy(&q->work_cv);
    pthread_cond_destroy(&q->idle_cv);
    pthread_mutex_destroy(&q->mu);
    free(q->workers);
    free(q);
}
