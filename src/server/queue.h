/* queue.h - the job queue of the server: a bounded FIFO of generation jobs,
 * one worker thread per engine (device) that batches waiting jobs, and a
 * job table (id -> job) whose finished entries expire after a TTL.
 *
 * A job is one request: n images (item i uses seed seeds[i] = base + i, A1111
 * style, so every image can be regenerated alone).  A worker takes the head
 * job and adds the not-yet-started items of every waiting job with the same
 * width, height, steps and cfg_scale, up to max_batch items, and runs them as
 * one engine->generate_many call; the results are split back to their jobs.
 * A job larger than max_batch runs in several batches.  If a batch of several
 * jobs fails, each job is retried alone, so a failing job fails alone.
 *
 * Locking: one mutex per queue guards the queue, the table and every job's
 * mutable fields.  A job's images are written only while it is not final;
 * once its status is final they never change, so a holder of a reference may
 * read them without the lock.  References: zs_queue_submit and
 * zs_queue_find return a referenced job; zs_queue_release drops it.
 */
#ifndef ZIMAGE_SERVER_QUEUE_H
#define ZIMAGE_SERVER_QUEUE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "server/json_req.h"
#include "server/metrics.h"
#include "server/server.h"

enum { ZS_JOB_QUEUED = 0, ZS_JOB_RUNNING, ZS_JOB_COMPLETED, ZS_JOB_FAILED, ZS_JOB_CANCELLED };
enum { ZS_API_OPENAI = 0, ZS_API_A1111, ZS_API_JOBS };
enum { ZS_CANCEL_NONE = 0, ZS_CANCEL_CLIENT, ZS_CANCEL_INTERRUPT, ZS_CANCEL_SHUTDOWN };
enum { ZS_Q_OK = 0, ZS_Q_FULL = -1, ZS_Q_CLOSED = -2, ZS_Q_NOMEM = -3 };

typedef struct zs_job zs_job;
struct zs_job {
    /* immutable after submit */
    char id[32];
    int api;                 /* ZS_API_*                                     */
    zs_gen_req req;          /* parsed request (owned)                       */
    int n;                   /* images                                       */
    int64_t *seeds;          /* [n] resolved seeds                           */
    int64_t created;         /* unix seconds                                 */
    double t_submit;         /* monotonic                                    */
    int retain;              /* keep in the table until the TTL              */

    /* guarded by the queue mutex */
    int refs;
    int status;              /* ZS_JOB_*                                     */
    int cancel;              /* ZS_CANCEL_*                                  */
    int next_item;           /* first item not yet dispatched                */
    int done_items;          /* items with an image                          */
    int inflight;            /* items in running batches                     */
    double progress;         /* 0..1, non-decreasing                         */
    int step, steps;         /* last progress callback                       */
    const char *stage;       /* static string                                */
    uint8_t *preview;        /* [preview_h, preview_w, 3] RGB8 or NULL        */
    int preview_w, preview_h;
    unsigned preview_seq;    /* bumps with every new preview                 */
    unsigned version;        /* bumps with every change                      */
    double t_started, t_finished; /* monotonic, 0 = not yet                  */
    char error[512];
    int prompt_cache_hit;
    zimage_timings timings;  /* of the (last) batch that ran this job        */
    uint8_t **images;        /* [n] RGB8 width*height*3, NULL until done     */
    uint8_t **enc;           /* [n] encoded (req.format) cache               */
    size_t *enc_len;
    char **infotext;         /* [n] A1111 parameters text, lazily            */
    size_t bytes;            /* counted in the queue's retained bytes        */
    pthread_cond_t cv;       /* signalled on every version bump              */

    /* queue internals */
    zs_job *qnext, *hnext, *fnext, *fprev;
    int in_queue, in_table, in_finished;
};

typedef struct zs_queue_config {
    int max_queue;           /* waiting jobs before ZS_Q_FULL                */
    int max_batch;           /* items per generate_many                      */
    double job_ttl;          /* seconds a finished job stays in the table    */
    size_t max_retained;     /* bytes of finished images kept                */
    int batch_wait_ms;       /* wait for a batch to fill                     */
    double shutdown_grace;   /* seconds running batches may finish           */
    const char *model_name;  /* for infotext                                 */
} zs_queue_config;

typedef struct zs_queue zs_queue;

/* Engines are borrowed (one worker thread each); metrics may be NULL. */
int zs_queue_new(zs_queue **out, const zs_queue_config *cfg, zs_engine *engines, int n_engines, zs_metrics *m);
/* zs_queue_close (if not yet), then free every job. */
void zs_queue_free(zs_queue *q);
/* Stop accepting, cancel waiting jobs, let running jobs finish for up to
 * shutdown_grace seconds, then cancel them; join the workers. */
void zs_queue_close(zs_queue *q);

/* Submit: on ZS_Q_OK *req is moved into the job (caller's copy zeroed),
 * *out is a referenced job and *position its place in the queue (0 = next). */
int zs_queue_submit(zs_queue *q, int api, zs_gen_req *req, int retain, zs_job **out, int *position);
zs_job *zs_queue_find(zs_queue *q, const char *id);
void zs_queue_release(zs_queue *q, zs_job *j);
/* Remove from the table now (a synchronous request answered); cancels the
 * job if it is not final. */
void zs_queue_drop(zs_queue *q, zs_job *j);
/* Cancel a job (queued or running); returns its status afterwards. */
int zs_queue_cancel(zs_queue *q, zs_job *j, int reason);
/* Cancel every running job (A1111 interrupt); returns how many. */
int zs_queue_interrupt(zs_queue *q);

/* Wait until j->version differs from *version or timeout_s passes; updates
 * *version; returns 1 if it changed. */
int zs_queue_wait(zs_queue *q, zs_job *j, unsigned *version, double timeout_s);

/* A consistent copy of a job's mutable state. */
typedef struct zs_job_view {
    int status, cancel;
    int position;            /* jobs ahead in the queue, -1 if not waiting   */
    int n, done;
    int step, steps;
    const char *stage;
    double progress;
    double queued_s;         /* seconds waited before start (or so far)      */
    double run_s;            /* seconds running (or ran)                     */
    unsigned version, preview_seq;
    uint8_t *preview;        /* malloc'd copy if preview_seq != the caller's
                                last seen one (see zs_queue_view)            */
    int preview_w, preview_h;
    int prompt_cache_hit;
    zimage_timings timings;
    char error[512];
} zs_job_view;
/* want_preview_after: copy the preview only if its seq differs (pass
 * (unsigned)-1 never to copy ... pass 0 to copy any preview). */
void zs_queue_view(zs_queue *q, zs_job *j, unsigned want_preview_after, int copy_preview, zs_job_view *v);

/* The encoded image i of a final job (encoded once, cached); NULL if the
 * image does not exist or cannot be encoded.  Valid while j is referenced. */
const uint8_t *zs_job_image(zs_queue *q, zs_job *j, int i, size_t *len);
/* A1111 infotext of image i (cached; "" if unknown). */
const char *zs_job_infotext(zs_queue *q, zs_job *j, int i);

typedef struct zs_queue_stats {
    int waiting_jobs, waiting_items, running_jobs, retained_jobs, capacity, workers;
    size_t retained_bytes;
    double avg_batch_s;      /* moving average of a batch's wall time        */
    uint64_t cache_hits, cache_misses;
} zs_queue_stats;
void zs_queue_stats_get(zs_queue *q, zs_queue_stats *s);
/* 1 if a submit now would get ZS_Q_FULL or ZS_Q_CLOSED. */
int zs_queue_full(zs_queue *q);
/* The running job that started first (referenced), or NULL. */
zs_job *zs_queue_current(zs_queue *q);

const char *zs_job_status_name(int status);
static inline int zs_job_final(int status) { return status >= ZS_JOB_COMPLETED; }

#endif
