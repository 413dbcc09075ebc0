/* server_fake.h - a fake zs_engine for the server tests (header-only, used
 * by test_server_queue.c and test_server_http.c): no model, deterministic
 * images that encode their seed and prompt, a configurable time per step,
 * progress callbacks with 8x8 previews, cancellation, a prompt "cache", a
 * gate that holds the next batch until released, and a failure trigger
 * (a prompt containing "FAIL" fails its whole batch).
 *
 * Image of (prompt, seed), RGB8 [h, w, 3]: pixel 0 = (seed & 255,
 * (seed >> 8) & 255, fnv(prompt) & 255), pixel 1 = ((seed >> 16) & 255,
 * (seed >> 24) & 255, w / 16), every other byte = (k * 7 + seed) & 255. */
#ifndef ZIMAGE_TESTS_SERVER_FAKE_H
#define ZIMAGE_TESTS_SERVER_FAKE_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server.h"

#define FAKE_MAX_LOG 4096

typedef struct fake_engine {
    int step_ms;                 /* sleep per step                          */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int gate_closed;             /* 1: the next batch waits for fake_open   */
    int waiting_at_gate;         /* a batch is waiting at the gate          */
    int calls;                   /* generate_many calls                     */
    int batch_sizes[FAKE_MAX_LOG];
    int64_t seeds_run[FAKE_MAX_LOG]; /* every generated item's seed         */
    int n_run;
    int cancels;                 /* calls that ended cancelled              */
    uint64_t hits, misses;
    char prompts[64][128];       /* the "prompt cache"                      */
    int n_prompts;
    char err[128];
} fake_engine;

static inline uint32_t fake_fnv(const char *s) {
    uint32_t h = 2166136261u;
    for (; s && *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static inline void fake_image(uint8_t *px, int w, int h, const char *prompt, int64_t seed) {
    size_t n = (size_t)w * (size_t)h * 3;
    for (size_t k = 0; k < n; k++) px[k] = (uint8_t)((k * 7 + (uint64_t)seed) & 255);
    px[0] = (uint8_t)(seed & 255);
    px[1] = (uint8_t)((seed >> 8) & 255);
    px[2] = (uint8_t)(fake_fnv(prompt) & 255);
    if (n >= 6) {
        px[3] = (uint8_t)((seed >> 16) & 255);
        px[4] = (uint8_t)((seed >> 24) & 255);
        px[5] = (uint8_t)(w / 16);
    }
}

static inline void fake_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int fake_generate_many(void *ctx, const zimage_params *items, int n, zimage_result *res) {
    fake_engine *f = ctx;
    pthread_mutex_lock(&f->mu);
    while (f->gate_closed) {
        f->waiting_at_gate = 1;
        pthread_cond_broadcast(&f->cv);
        pthread_cond_wait(&f->cv, &f->mu);
    }
    f->waiting_at_gate = 0;
    if (f->calls < FAKE_MAX_LOG) f->batch_sizes[f->calls] = n;
    f->calls++;
    int fail = 0;
    for (int i = 0; i < n; i++) {
        if (strstr(items[i].prompt, "FAIL")) fail = 1;
        int hit = 0;
        for (int k = 0; k < f->n_prompts; k++) hit |= !strncmp(f->prompts[k], items[i].prompt, 127);
        if (hit) f->hits++;
        else {
            f->misses++;
            if (f->n_prompts < 64) snprintf(f->prompts[f->n_prompts++], 128, "%s", items[i].prompt);
        }
    }
    int step_ms = f->step_ms;
    pthread_mutex_unlock(&f->mu);
    memset(res, 0, (size_t)n * sizeof *res);
    if (fail) {
        snprintf(f->err, sizeof f->err, "fake failure (prompt contains FAIL)");
        return ZIMAGE_EBACKEND;
    }
    for (int i = 1; i < n; i++)
        if (items[i].width != items[0].width || items[i].height != items[0].height || items[i].steps != items[0].steps) {
            snprintf(f->err, sizeof f->err, "batch items differ");
            return ZIMAGE_EINVAL;
        }
    uint8_t pv[8 * 8 * 3];
    zimage_progress p = {.stage = "encode", .step = 0, .steps = items[0].steps};
    if (items[0].progress && items[0].progress(&p, items[0].progress_user)) goto cancelled;
    for (int s = 1; s <= items[0].steps; s++) {
        fake_sleep_ms(step_ms);
        p.stage = "denoise";
        p.step = s;
        p.preview_rgb = NULL;
        if (items[0].preview) {
            memset(pv, (s * 255) / items[0].steps, sizeof pv);
            p.preview_rgb = pv;
            p.preview_w = p.preview_h = 8;
        }
        if (items[0].progress && items[0].progress(&p, items[0].progress_user)) goto cancelled;
    }
    for (int i = 0; i < n; i++) {
        int w = items[i].width, h = items[i].height;
        res[i].n = 1;
        res[i].width = w;
        res[i].height = h;
        res[i].images = calloc(1, sizeof *res[i].images);
        res[i].seeds = calloc(1, sizeof *res[i].seeds);
        res[i].images[0] = malloc((size_t)w * (size_t)h * 3);
        fake_image(res[i].images[0], w, h, items[i].prompt, items[i].seed);
        res[i].seeds[0] = items[i].seed;
        res[i].timings.denoise = step_ms * 1e-3 * items[0].steps;
        res[i].timings.total = res[i].timings.denoise;
    }
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < n; i++)
        if (f->n_run < FAKE_MAX_LOG) f->seeds_run[f->n_run++] = items[i].seed;
    pthread_mutex_unlock(&f->mu);
    return 0;
cancelled:
    pthread_mutex_lock(&f->mu);
    f->cancels++;
    pthread_mutex_unlock(&f->mu);
    snprintf(f->err, sizeof f->err, "cancelled");
    return ZIMAGE_ECANCELLED;
}

static void fake_result_free(void *ctx, zimage_result *r) {
    (void)ctx;
    for (int i = 0; i < r->n; i++) free(r->images[i]);
    free(r->images);
    free(r->seeds);
    memset(r, 0, sizeof *r);
}
static const char *fake_errmsg(void *ctx) { return ((fake_engine *)ctx)->err; }
static const char *fake_device(void *ctx) {
    (void)ctx;
    return "fake";
}
static void fake_cache_stats(void *ctx, uint64_t *h, uint64_t *m) {
    fake_engine *f = ctx;
    pthread_mutex_lock(&f->mu);
    *h = f->hits;
    *m = f->misses;
    pthread_mutex_unlock(&f->mu);
}
static int fake_infotext(void *ctx, const zimage_params *p, int64_t seed, const char *model, char *buf, size_t n) {
    (void)ctx;
    snprintf(buf, n, "%s\nSteps: %d, CFG scale: %g, Seed: %lld, Size: %dx%d, Model: %s", p->prompt, p->steps,
             (double)p->cfg_scale, (long long)seed, p->width, p->height, model ? model : "");
    return 0;
}
static void fake_destroy(void *ctx) {
    fake_engine *f = ctx;
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

/* A new fake engine (owned by the returned zs_engine: destroy frees it). */
static inline zs_engine fake_new(int step_ms, fake_engine **out) {
    fake_engine *f = calloc(1, sizeof *f);
    f->step_ms = step_ms;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    if (out) *out = f;
    zs_engine e = {f, fake_generate_many, fake_result_free, fake_errmsg, fake_device, fake_cache_stats, fake_infotext,
                   fake_destroy};
    return e;
}

static inline void fake_close_gate(fake_engine *f) {
    pthread_mutex_lock(&f->mu);
    f->gate_closed = 1;
    pthread_mutex_unlock(&f->mu);
}
/* Wait until a batch is held at the gate. */
static inline void fake_wait_gate(fake_engine *f) {
    pthread_mutex_lock(&f->mu);
    while (!f->waiting_at_gate) pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}
static inline void fake_open_gate(fake_engine *f) {
    pthread_mutex_lock(&f->mu);
    f->gate_closed = 0;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}
/* How many times seed was generated. */
static inline int fake_count_seed(fake_engine *f, int64_t seed) {
    int c = 0;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->n_run; i++) c += f->seeds_run[i] == seed;
    pthread_mutex_unlock(&f->mu);
    return c;
}

#endif
