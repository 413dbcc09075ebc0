/* hub.c - `zimage pull` and model resolution: list a repo, plan, download
 * in parallel with resume and verification, link the snapshot.
 *
 * The Hugging Face flow mirrors huggingface_hub 1.33 (see hub.h for the
 * cache layout):
 *   _snapshot_download.py snapshot_download
 *       GET {endpoint}/api/models/{repo}/revision/{quote(rev, safe="")} ->
 *       "sha" (the commit) and "siblings"[].rfilename (as huggingface_hub did
 *       with repo_info before it switched to the tree API); writes
 *       refs/<rev>; when the Hub cannot be reached (or refuses) and the
 *       snapshot is in the cache, that snapshot is used instead; offline mode
 *       resolves refs/<rev> -> snapshots/<commit> only.
 *   file_download.py _hf_hub_download_to_cache_dir, per file, with
 *       revision = the commit:
 *       - snapshots/<commit>/<path> exists -> done, no request at all;
 *       - HEAD {endpoint}/{repo}/resolve/{commit}/{quote(path)} without
 *         following redirects (get_hf_file_metadata): X-Repo-Commit (required),
 *         etag = _normalize_etag(X-Linked-Etag or ETag), size = X-Linked-Size
 *         or (not a redirect) Content-Length, download URL = Location;
 *         same-host redirects without X-Linked-Etag (renamed repos) are
 *         followed;
 *       - blobs/<etag> exists -> just link it;
 *       - else, holding .locks/models--ORG--NAME/<etag>.lock, download to
 *         blobs/<etag>.incomplete, then rename to blobs/<etag> and symlink.
 *   file_download.py http_get: Range resume, restart on a 200, retry up to 5
 *       times after a dropped connection (the count resets when data came),
 *       one second apart; "Consistency check failed" on a size mismatch.
 * Differences, on purpose: the .incomplete file is kept after a failure and
 * resumed by the next pull (huggingface_hub < 1.0 with resume_download did
 * this; 1.x starts over); the content is verified - sha256 against the LFS
 * etag, size otherwise - and a mismatching file is deleted; free disk space
 * is an error, not a warning; only the files the engine reads are fetched
 * (like diffusers' allow_patterns) unless --all.
 * ModelScope lives in hub_ms.c and shares the machinery here.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../base/log.h"
#include "hub_internal.h"

#define STOPPED(c) __atomic_load_n(&(c)->stop, __ATOMIC_RELAXED)

void zhub_opts_default(zhub_opts *o) { memset(o, 0, sizeof *o); }

const char *zhub_fmt_bytes(uint64_t b, char *buf, size_t n) {
    static const char *u[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1000.0 && i < 4) v /= 1000.0, i++;
    if (i == 0)
        zfmt(buf, n, "%" PRIu64 " B", b);
    else
        zfmt(buf, n, "%.*f %s", v < 10 ? 2 : v < 100 ? 1 : 0, v, u[i]);
    return buf;
}

int zhub_parse_spec(const char *spec, zhub_source *src, char *repo, size_t nrepo, char *rev, size_t nrev) {
    zhub_source s = ZHUB_HF;
    if (!strncmp(spec, "hf:", 3))
        spec += 3;
    else if (!strncmp(spec, "modelscope:", 11))
        spec += 11, s = ZHUB_MODELSCOPE;
    else if (!strncmp(spec, "ms:", 3))
        spec += 3, s = ZHUB_MODELSCOPE;
    char tmp[512];
    if (strlen(spec) >= sizeof tmp) return ZE_INVALID;
    zfmt(tmp, sizeof tmp, "%s", spec);
    char *at = strchr(tmp, '@');
    const char *r = "";
    if (at) {
        *at = 0;
        r = at + 1;
        if (!zhub_valid_revision(r)) return ZE_INVALID;
    }
    if (!zhub_valid_repo_id(tmp)) return ZE_INVALID;
    if (src) *src = s;
    zfmt(repo, nrepo, "%s", tmp);
    zfmt(rev, nrev, "%s", r);
    return ZE_OK;
}

/* ---- context ------------------------------------------------------------------------ */

int zhub_ctx_add(zhub_pull_ctx *c, const char *path) {
    if (c->n == c->cap) {
        int nc = c->cap ? c->cap * 2 : 32;
        zhub_file *nf = realloc(c->files, (size_t)nc * sizeof *nf);
        if (!nf) return ZE_NOMEM;
        c->files = nf;
        c->cap = nc;
    }
    zhub_file *f = &c->files[c->n];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return ZE_NOMEM;
    f->size = -1;
    c->n++;
    return ZE_OK;
}

static void ctx_free(zhub_pull_ctx *c) {
    for (int i = 0; i < c->n; i++) {
        zhub_file *f = &c->files[i];
        free(f->path);
        free(f->url);
        free(f->dl_url);
        free(f->tmp_path);
        free(f->final_path);
        free(f->lock_path);
    }
    free(c->files);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->cb_mu);
    volatile char *t = c->token;
    for (size_t i = 0; i < sizeof c->token; i++) t[i] = 0;
}

static int ctx_init(zhub_pull_ctx *c, const char *repo, const char *revision, const zhub_opts *o, zerr *e) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->cb_mu, NULL);
    c->o = o;
    c->src = o->source;
    if (!repo || !*repo) repo = ZHUB_DEFAULT_REPO;
    if (!zhub_valid_repo_id(repo))
        return zerr_set(e, ZE_INVALID, "'%s' is not a valid repo id (expected ORG/NAME, e.g. %s)", repo, ZHUB_DEFAULT_REPO);
    if (!revision || !*revision) revision = c->src == ZHUB_MODELSCOPE ? "master" : "main";
    if (!zhub_valid_revision(revision)) return zerr_set(e, ZE_INVALID, "'%s' is not a valid revision", revision);
    zfmt(c->repo, sizeof c->repo, "%s", repo);
    zfmt(c->revision, sizeof c->revision, "%s", revision);
    ZTRY(zhub_cache_root(o, c->root, sizeof c->root, e));
    if (strlen(c->root) > 1500) /* keeps every path we build far below ZHUB_PATH_MAX */
        return zerr_set(e, ZE_INVALID, "cache folder path too long: %.80s...", c->root);
    zhub_endpoint(o, c->endpoint, sizeof c->endpoint);
    zhub_token(o, c->token, sizeof c->token);
    zhttp_host(c->endpoint, c->auth_host, sizeof c->auth_host);
    c->timeout_s = o->timeout_s;
    if (c->timeout_s <= 0) {
        const char *t = getenv("HF_HUB_DOWNLOAD_TIMEOUT");
        c->timeout_s = t ? atoi(t) : 0;
        if (c->timeout_s <= 0) c->timeout_s = 10;
    }
    if (c->src == ZHUB_MODELSCOPE)
        zhub_ms_model_dir(c->root, c->repo, c->repo_dir, sizeof c->repo_dir);
    else
        zhub_repo_folder(c->root, c->repo, c->repo_dir, sizeof c->repo_dir);
    return ZE_OK;
}

/* ---- progress and errors ---------------------------------------------------------- */

void zhub_emit(zhub_pull_ctx *c, int ev, const char *file, const char *msg, int force) {
    const zhub_opts *o = c->o;
    if (!o->progress) return;
    double now = ztime_now();
    pthread_mutex_lock(&c->cb_mu);
    if (ev == ZHUB_EV_TICK && !force && now - c->last_tick < 0.1) {
        pthread_mutex_unlock(&c->cb_mu);
        return;
    }
    if (ev == ZHUB_EV_TICK) c->last_tick = now;
    uint64_t done = __atomic_load_n(&c->bytes_done, __ATOMIC_RELAXED);
    if (c->win_t == 0) c->win_t = now, c->win_b = (double)done;
    double wdt = now - c->win_t;
    double speed = c->prev_speed;
    if (wdt >= 0.5) {
        double cur = ((double)done - c->win_b) / wdt;
        speed = c->prev_speed > 0 ? 0.5 * (cur + c->prev_speed) : cur;
        if (wdt >= 3.0) c->prev_speed = cur, c->win_t = now, c->win_b = (double)done;
    } else if (speed <= 0 && now > c->t0 && c->t0 > 0) {
        speed = (double)done / (now - c->t0);
    }
    zhub_progress p = {0};
    p.event = ev;
    p.repo = c->repo;
    p.file = file;
    p.msg = msg;
    p.files_total = c->n;
    p.files_done = __atomic_load_n(&c->files_done, __ATOMIC_RELAXED);
    p.files_fetch = c->files_fetch;
    p.bytes_total = c->bytes_total;
    p.bytes_done = done;
    p.elapsed = c->t0 > 0 ? now - c->t0 : 0;
    p.speed = speed;
    p.eta = speed > 1 && c->bytes_total >= done ? (double)(c->bytes_total - done) / speed : -1;
    if (o->progress(&p, o->progress_user)) {
        __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
        pthread_mutex_lock(&c->mu);
        if (!c->err_code) c->err_code = zerr_set(&c->err, ZE_CANCELLED, "download cancelled");
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&c->cb_mu);
}

void zhub_fail(zhub_pull_ctx *c, const zerr *e) {
    pthread_mutex_lock(&c->mu);
    if (!c->err_code) { /* the first error wins; later ones are mostly "cancelled" */
        c->err = *e;
        c->err_code = e->code ? e->code : ZE_IO;
    }
    if (e->code != ZE_CANCELLED) c->n_failed++;
    __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->mu);
}

/* ---- one file ------------------------------------------------------------------------ */

typedef struct {
    zhub_pull_ctx *c;
    zhub_file *f;
} data_ud;

static int on_data(void *user, size_t n) {
    data_ud *u = user;
    if (n) {
        __atomic_fetch_add(&u->c->bytes_done, (uint64_t)n, __ATOMIC_RELAXED);
        zhub_emit(u->c, ZHUB_EV_TICK, u->f->path, NULL, 0);
    }
    return STOPPED(u->c);
}

static void nap_ms(zhub_pull_ctx *c, int ms) {
    for (int t = 0; t < ms && !STOPPED(c); t += 20) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int zhub_fetch_file(zhub_pull_ctx *c, zhttp *h, zhub_file *f, zerr *e) {
    const zhub_opts *o = c->o;
    int retries = o->retries == 0 ? 5 : o->retries < 0 ? 0 : o->retries;
    int delay = o->retry_delay_ms > 0 ? o->retry_delay_ms : 1000;
    int fd = open(f->tmp_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return zerr_set(e, ZE_IO, "cannot create %s: %s", f->tmp_path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        close(fd);
        return zerr_set(e, ZE_IO, "%s: %s", f->tmp_path, strerror(errno));
    }
    int64_t have = st.st_size;
    if (f->size >= 0 && have > f->size) { /* longer than the file: cannot be a prefix of it */
        if (ftruncate(fd, 0)) {
            close(fd);
            return zerr_set(e, ZE_IO, "%s: %s", f->tmp_path, strerror(errno));
        }
        have = 0;
    }
    zsha256 sha;
    int use_sha = f->sha256[0] != 0;
    zsha256_init(&sha);
    if (use_sha && have > 0 && zsha256_file(&sha, f->tmp_path, have)) {
        close(fd);
        return zerr_set(e, ZE_IO, "cannot read %s: %s", f->tmp_path, strerror(errno));
    }
    char msg[96] = "";
    if (have > 0) {
        char b[32];
        zfmt(msg, sizeof msg, "resuming at %s", zhub_fmt_bytes((uint64_t)have, b, sizeof b));
    }
    zhub_emit(c, ZHUB_EV_FILE_START, f->path, msg[0] ? msg : NULL, 1);
    const char *url = f->dl_url ? f->dl_url : f->url;
    data_ud ud = {c, f};
    int attempts = 0, rc = ZE_OK;
    zhttp_resp resp;
    while (!(f->size >= 0 && have == f->size)) {
        zhttp_sink s = {0};
        s.fd = fd;
        s.offset = have;
        s.sha = use_sha ? &sha : NULL;
        s.on_data = on_data;
        s.user = &ud;
        rc = zhttp_get_to_fd(h, url, &s, &resp, e);
        have = s.offset + s.received; /* offset is 0 after a restart */
        if (rc == ZE_OK) break;
        if (rc != ZE_NETWORK || !zhttp_retryable(resp.curl_code) || STOPPED(c)) break;
        if (s.received > 0) attempts = 0; /* progress was made: the retry budget starts over */
        if (attempts++ >= retries) break;
        char why[300];
        zfmt(why, sizeof why, "%s; resuming (attempt %d of %d)", e->msg, attempts, retries);
        zhub_emit(c, ZHUB_EV_RETRY, f->path, why, 1);
        nap_ms(c, delay);
        if (STOPPED(c)) {
            rc = zerr_set(e, ZE_CANCELLED, "cancelled");
            break;
        }
    }
    if (rc != ZE_OK) {
        close(fd);
        if (rc == ZE_NETWORK && !zhttp_retryable(resp.curl_code) && resp.status && resp.status != 200 &&
            resp.status != 206) {
            char what[ZHUB_PATH_MAX];
            zfmt(what, sizeof what, "downloading %s", f->path);
            return zhttp_fail(e, &resp, what, c->repo, c->endpoint, c->token[0] != 0);
        }
        if (rc == ZE_CANCELLED) return rc;
        char b[32];
        zerr_prefix(e, "downloading %s (%s kept in %s; the next pull resumes it)", f->path,
                    zhub_fmt_bytes((uint64_t)have, b, sizeof b), f->tmp_path);
        return rc;
    }
    /* verify */
    if (f->size >= 0 && have != f->size) {
        close(fd);
        unlink(f->tmp_path);
        return zerr_set(e, ZE_NETWORK,
                        "downloading %s: consistency check failed: the file should be %" PRId64
                        " bytes but %" PRId64 " arrived; the download was deleted, run the pull again",
                        f->path, f->size, have);
    }
    if (use_sha) {
        char got[ZSHA256_HEX_LEN + 1];
        zsha256_final_hex(&sha, got);
        if (strcmp(got, f->sha256)) {
            close(fd);
            unlink(f->tmp_path);
            return zerr_set(e, ZE_NETWORK,
                            "downloading %s: the file is corrupt (sha256 %s, expected %s); the bad download "
                            "was deleted, run the pull again",
                            f->path, got, f->sha256);
        }
    }
    if (fdatasync(fd) && errno != EINVAL) {
        int er = errno;
        close(fd);
        return zerr_set(e, ZE_IO, "%s: %s", f->tmp_path, strerror(er));
    }
    close(fd);
    if (rename(f->tmp_path, f->final_path))
        return zerr_set(e, ZE_IO, "cannot move %s to %s: %s", f->tmp_path, f->final_path, strerror(errno));
    return ZE_OK;
}

/* ---- worker pool ---------------------------------------------------------------------- */

typedef struct {
    zhub_pull_ctx *c;
    int (*fn)(zhub_pull_ctx *, zhttp *, int, zerr *);
    const int *order;
    int next;
} pool;

static void *worker(void *arg) {
    pool *p = arg;
    zhub_pull_ctx *c = p->c;
    zhttp *h = zhttp_new(c->token, c->auth_host, c->timeout_s);
    if (!h) {
        zerr e = {0};
        zerr_set(&e, ZE_NOMEM, "cannot start libcurl");
        zhub_fail(c, &e);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&c->mu);
        int i = p->next++;
        pthread_mutex_unlock(&c->mu);
        if (i >= c->n || STOPPED(c)) break;
        zerr e = {0};
        int rc = p->fn(c, h, p->order ? p->order[i] : i, &e);
        if (rc) {
            if (!e.code) zerr_set(&e, rc, "failed");
            zhub_fail(c, &e);
        }
    }
    zhttp_free(h);
    return NULL;
}

static int run_pool(zhub_pull_ctx *c, int (*fn)(zhub_pull_ctx *, zhttp *, int, zerr *), const int *order, zerr *e) {
    int jobs = c->o->jobs > 0 ? c->o->jobs : 8;
    if (jobs > 32) jobs = 32;
    if (jobs > c->n) jobs = c->n;
    pool p = {c, fn, order, 0};
    pthread_t th[32];
    int started = 0;
    for (int i = 0; i < jobs; i++) {
        if (pthread_create(&th[i], NULL, worker, &p)) break;
        started++;
    }
    if (!started && jobs > 0) worker(&p); /* no threads: do it here */
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    if (c->err_code) {
        if (e) *e = c->err;
        return c->err_code;
    }
    return ZE_OK;
}

int zhub_parallel(zhub_pull_ctx *c, int (*fn)(zhub_pull_ctx *, zhttp *, int, zerr *), zerr *e) {
    return run_pool(c, fn, NULL, e);
}

/* ---- plan ------------------------------------------------------------------------------- */

int zhub_plan_and_confirm(zhub_pull_ctx *c, zerr *e) {
    uint64_t need = 0, total = 0;
    int nfetch = 0, done = 0;
    for (int i = 0; i < c->n; i++) {
        zhub_file *f = &c->files[i];
        if (f->size > 0) total += (uint64_t)f->size;
        if (f->state != ZF_FETCH) {
            done++;
            continue;
        }
        nfetch++;
        int dup = 0; /* the same blob under two names is fetched once */
        for (int j = 0; j < i && !dup; j++)
            dup = c->files[j].state == ZF_FETCH && c->files[j].final_path && f->final_path &&
                  !strcmp(c->files[j].final_path, f->final_path);
        if (!dup && f->size > 0 && f->size > f->partial) need += (uint64_t)(f->size - f->partial);
    }
    c->bytes_total = need;
    c->files_fetch = nfetch;
    __atomic_store_n(&c->files_done, done, __ATOMIC_RELAXED);
    if (nfetch == 0) {
        zhub_emit(c, ZHUB_EV_PLAN, NULL, NULL, 1);
        return ZE_OK;
    }
    uint64_t free_b = c->o->test_free_bytes;
    if (!free_b && zhub_free_bytes(c->repo_dir, &free_b)) free_b = UINT64_MAX;
    if (free_b < need) {
        char a[32], b[32];
        return zerr_set(e, ZE_IO,
                        "not enough free disk space for %s: the download needs %s in %s but only %s is free "
                        "(set %s to a folder on a bigger disk)",
                        c->repo, zhub_fmt_bytes(need, a, sizeof a), c->root, zhub_fmt_bytes(free_b, b, sizeof b),
                        c->src == ZHUB_MODELSCOPE ? "MODELSCOPE_CACHE" : "HF_HUB_CACHE");
    }
    if (c->o->confirm) {
        zhub_plan p = {c->repo, c->revision, c->commit, c->root, c->n, nfetch, need, total};
        if (!c->o->confirm(&p, c->o->confirm_user)) return zerr_set(e, ZE_CANCELLED, "download of %s cancelled", c->repo);
    }
    zhub_emit(c, ZHUB_EV_PLAN, NULL, NULL, 1); /* after the question: "downloading ..." */
    return ZE_OK;
}

/* ---- Hugging Face: per-file steps ---------------------------------------------------------- */

static int hf_link(zhub_pull_ctx *c, zhub_file *f, zerr *e) {
    return zhub_link_blob(c->repo_dir, c->commit, f->path, f->etag, e);
}

static void on_wait(void *user) {
    data_ud *u = user;
    zhub_emit(u->c, ZHUB_EV_WAIT_LOCK, u->f->path, "another download of this file is running; waiting for it", 1);
}

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

/* HEAD the file, decide CACHED / LINK / FETCH. */
static int hf_head_task(zhub_pull_ctx *c, zhttp *h, int i, zerr *e) {
    zhub_file *f = &c->files[i];
    char ptr[ZHUB_PATH_MAX * 2];
    zfmt(ptr, sizeof ptr, "%s/%s", c->snapshot, f->path);
    int64_t sz;
    if (zhub_file_size(ptr, &sz)) { /* the commit's file is here: no request */
        f->state = ZF_CACHED;
        f->size = sz;
        __atomic_fetch_add(&c->files_done, 1, __ATOMIC_RELAXED);
        zhub_emit(c, ZHUB_EV_FILE_CACHED, f->path, NULL, 1);
        return ZE_OK;
    }
    char url[ZHUB_PATH_MAX * 4];
    zfmt(url, sizeof url, "%s", f->url);
    zhttp_resp r;
    char what[ZHUB_PATH_MAX];
    zfmt(what, sizeof what, "resolving %s", f->path);
    int redirected = 0;
    for (int hop = 0;; hop++) {
        if (zhttp_head(h, url, &r, e)) return zhttp_fail(e, &r, what, c->repo, c->endpoint, c->token[0] != 0);
        if (r.status >= 300 && r.status < 400 && r.location[0]) {
            char next[ZHUB_PATH_MAX * 4], h1[256], h2[256];
            zhttp_join(url, r.location, next, sizeof next);
            zhttp_host(url, h1, sizeof h1);
            zhttp_host(next, h2, sizeof h2);
            if (r.linked_etag[0] || strcmp(h1, h2) || hop >= 5) { /* the metadata is on this response */
                redirected = 1;
                free(f->dl_url);
                f->dl_url = xstrdup(next);
                break;
            }
            zfmt(url, sizeof url, "%s", next); /* renamed repo etc.: follow */
            continue;
        }
        if (r.status >= 400 || r.status < 200) return zhttp_fail(e, &r, what, c->repo, c->endpoint, c->token[0] != 0);
        if (strcmp(url, f->url)) {
            free(f->dl_url);
            f->dl_url = xstrdup(url);
        }
        break;
    }
    if (!r.commit[0])
        return zerr_set(e, ZE_NETWORK,
                        "%s: the response has no X-Repo-Commit header, so %s does not seem to be a Hugging Face Hub "
                        "endpoint; if HF_ENDPOINT is set, check that it points to a Hub-compatible mirror",
                        what, c->endpoint);
    if (strcmp(r.commit, c->commit))
        return zerr_set(e, ZE_NETWORK, "%s: the server answered for commit %.40s, expected %s", what, r.commit, c->commit);
    zhub_normalize_etag(r.linked_etag[0] ? r.linked_etag : r.etag, f->etag, sizeof f->etag);
    if (!f->etag[0]) return zerr_set(e, ZE_NETWORK, "%s: the server sent no ETag, so the file cannot be verified", what);
    if (!zhub_valid_etag(f->etag)) return zerr_set(e, ZE_NETWORK, "%s: refusing the unsafe ETag '%s'", what, f->etag);
    f->size = r.linked_size >= 0 ? r.linked_size : redirected ? -1 : r.content_length;
    if (zhub_is_sha256(f->etag)) zfmt(f->sha256, sizeof f->sha256, "%s", f->etag); /* LFS: etag = sha256 */
    char p[ZHUB_PATH_MAX * 2];
    zfmt(p, sizeof p, "%s/blobs/%s", c->repo_dir, f->etag);
    f->final_path = xstrdup(p);
    zfmt(p, sizeof p, "%s/blobs/%s.incomplete", c->repo_dir, f->etag);
    f->tmp_path = xstrdup(p);
    char lockdir[ZHUB_PATH_MAX];
    zfmt(lockdir, sizeof lockdir, "%s/.locks/%s", c->root, strrchr(c->repo_dir, '/') + 1);
    zfmt(p, sizeof p, "%s/%s.lock", lockdir, f->etag);
    f->lock_path = xstrdup(p);
    if (!f->final_path || !f->tmp_path || !f->lock_path) return zerr_set(e, ZE_NOMEM, "out of memory");
    if (zhub_file_size(f->final_path, &sz) && (f->size < 0 || sz == f->size)) {
        /* blob known from another commit or path: link it (under its lock) */
        int fd;
        data_ud ud = {c, f};
        ZTRY(zhub_lock(f->lock_path, &fd, &c->stop, on_wait, &ud, e));
        int rc = hf_link(c, f, e);
        zhub_unlock(fd);
        ZTRY(rc);
        f->state = ZF_LINK;
        __atomic_fetch_add(&c->files_done, 1, __ATOMIC_RELAXED);
        zhub_emit(c, ZHUB_EV_FILE_CACHED, f->path, NULL, 1);
        return ZE_OK;
    }
    f->state = ZF_FETCH;
    int64_t part = 0;
    if (zhub_file_size(f->tmp_path, &part)) f->partial = (f->size >= 0 && part > f->size) ? 0 : part;
    return ZE_OK;
}

static int hf_fetch_task(zhub_pull_ctx *c, zhttp *h, int i, zerr *e) {
    zhub_file *f = &c->files[i];
    if (f->state != ZF_FETCH) return ZE_OK;
    int fd;
    data_ud ud = {c, f};
    ZTRY(zhub_lock(f->lock_path, &fd, &c->stop, on_wait, &ud, e));
    int64_t sz;
    int rc = ZE_OK, fetched = 0;
    if (!(zhub_file_size(f->final_path, &sz) && (f->size < 0 || sz == f->size))) {
        rc = zhub_fetch_file(c, h, f, e); /* another process may have finished it meanwhile */
        fetched = 1;
    }
    if (rc == ZE_OK) rc = hf_link(c, f, e);
    zhub_unlock(fd);
    ZTRY(rc);
    __atomic_fetch_add(&c->files_done, 1, __ATOMIC_RELAXED);
    if (fetched) __atomic_fetch_add(&c->n_downloaded, 1, __ATOMIC_RELAXED);
    zhub_emit(c, fetched ? ZHUB_EV_FILE_DONE : ZHUB_EV_FILE_CACHED, f->path, NULL, 1);
    return ZE_OK;
}

/* ---- Hugging Face: listing ------------------------------------------------------------------ */

/* Snapshot in the cache for c->revision; 1 if found (complete). */
static int hf_cached(zhub_pull_ctx *c, char *commit, size_t n, zerr *why) {
    if (zhub_is_commit(c->revision))
        zfmt(commit, n, "%s", c->revision);
    else if (!zhub_read_ref(c->repo_dir, c->revision, commit, n)) {
        zerr_set(why, ZE_IO, "%s (revision %s) is not in the cache %s", c->repo, c->revision, c->root);
        return 0;
    }
    char snap[ZHUB_PATH_MAX + 64];
    zfmt(snap, sizeof snap, "%s/snapshots/%s", c->repo_dir, commit);
    struct stat st;
    if (stat(snap, &st) || !S_ISDIR(st.st_mode)) {
        zerr_set(why, ZE_IO, "%s (revision %s) is not in the cache %s", c->repo, c->revision, c->root);
        return 0;
    }
    char mi[ZHUB_PATH_MAX + 96];
    zfmt(mi, sizeof mi, "%s/model_index.json", snap);
    if (access(mi, F_OK) == 0 && zhub_check_model_dir(snap, why)) {
        zerr_prefix(why, "the cached snapshot of %s is incomplete", c->repo);
        return 0;
    }
    zfmt(c->snapshot, sizeof c->snapshot, "%s", snap);
    return 1;
}

static int fill_result(zhub_pull_ctx *c, zhub_result *r) {
    if (!r) return ZE_OK;
    zfmt(r->snapshot, sizeof r->snapshot, "%s", c->snapshot);
    zfmt(r->commit, sizeof r->commit, "%s", c->commit);
    r->n_files = c->n;
    r->n_downloaded = c->n_downloaded;
    r->n_cached = c->n - c->n_downloaded;
    r->bytes_downloaded = __atomic_load_n(&c->bytes_done, __ATOMIC_RELAXED);
    return ZE_OK;
}

static int hf_list(zhub_pull_ctx *c, zhttp *h, zhttp_resp *resp, zerr *e) {
    char qrev[768], url[4096];
    if (zhttp_quote(c->revision, "", qrev, sizeof qrev)) return zerr_set(e, ZE_INVALID, "revision too long");
    zfmt(url, sizeof url, "%s/api/models/%s/revision/%s", c->endpoint, c->repo, qrev);
    char *body = NULL;
    size_t len = 0;
    int rc = zhttp_get_mem(h, url, 64u << 20, &body, &len, resp, e);
    if (rc) return rc;
    if (resp->status != 200) {
        free(body);
        return ZE_NETWORK;
    }
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    free(body);
    if (!j) return zerr_set(e, ZE_FORMAT, "%s: not JSON (%s); is HF_ENDPOINT a Hub-compatible server?", url, je.text);
    const char *sha = json_string_value(json_object_get(j, "sha"));
    json_t *sib = json_object_get(j, "siblings");
    if (!sha || !zhub_is_commit(sha) || !json_is_array(sib)) {
        json_decref(j);
        return zerr_set(e, ZE_FORMAT, "%s: the answer has no commit sha or no file list", url);
    }
    zfmt(c->commit, sizeof c->commit, "%s", sha);
    size_t n = json_array_size(sib);
    char **paths = calloc(n + 1, sizeof *paths);
    unsigned char *keep = calloc(n + 1, 1);
    rc = paths && keep ? ZE_OK : zerr_set(e, ZE_NOMEM, "out of memory");
    for (size_t i = 0; rc == ZE_OK && i < n; i++) {
        const char *p = json_string_value(json_object_get(json_array_get(sib, i), "rfilename"));
        if (!p || !zhub_valid_relpath(p))
            rc = zerr_set(e, ZE_FORMAT, "%s: refusing the unsafe file name '%.200s' from the server", url, p ? p : "(none)");
        else
            paths[i] = (char *)p;
    }
    if (rc == ZE_OK) {
        zhub_select(paths, (int)n, c->o->all_files, keep);
        for (size_t i = 0; rc == ZE_OK && i < n; i++)
            if (keep[i]) rc = zhub_ctx_add(c, paths[i]) ? zerr_set(e, ZE_NOMEM, "out of memory") : ZE_OK;
    }
    free(paths);
    free(keep);
    json_decref(j);
    if (rc == ZE_OK && c->n == 0) rc = zerr_set(e, ZE_FORMAT, "%s has no model files at revision %s", c->repo, c->revision);
    return rc;
}

static int cmp_size_desc(const void *a, const void *b, void *ctx) {
    const zhub_pull_ctx *c = ctx;
    int64_t x = c->files[*(const int *)a].size, y = c->files[*(const int *)b].size;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int hf_pull(zhub_pull_ctx *c, zhub_result *r, zerr *e) {
    zerr why = {0};
    if (zhub_offline(c->o)) {
        if (!hf_cached(c, c->commit, sizeof c->commit, &why))
            return zerr_set(e, ZE_IO,
                            "offline mode (HF_HUB_OFFLINE) is on and %s; unset HF_HUB_OFFLINE and run "
                            "`zimage pull %s` with network access, or copy a Hugging Face cache that has it",
                            why.msg, c->repo);
        if (r) r->offline = 1;
        return fill_result(c, r);
    }
    zhttp *h = zhttp_new(c->token, c->auth_host, c->timeout_s);
    if (!h) return zerr_set(e, ZE_NOMEM, "cannot start libcurl");
    zhttp_resp resp;
    int rc = hf_list(c, h, &resp, e);
    zhttp_free(h);
    if (rc == ZE_FORMAT && hf_cached(c, c->commit, sizeof c->commit, &why)) {
        if (r) {
            r->fallback = 1;
            zfmt(r->note, sizeof r->note, "%s", e->msg);
        }
        return fill_result(c, r);
    }
    if (rc == ZE_NETWORK) {
        char what[400];
        zfmt(what, sizeof what, "listing %s@%s", c->repo, c->revision);
        zerr net = {0};
        zhttp_fail(&net, &resp, what, c->repo, c->endpoint, c->token[0] != 0);
        /* like snapshot_download: if the Hub cannot answer, use the cache */
        if (strcmp(resp.error_code, "RevisionNotFound") && hf_cached(c, c->commit, sizeof c->commit, &why)) {
            if (r) {
                r->fallback = 1;
                zfmt(r->note, sizeof r->note, "%s", net.msg);
            }
            return fill_result(c, r);
        }
        *e = net;
        return ZE_NETWORK;
    }
    ZTRY(rc);
    zfmt(c->snapshot, sizeof c->snapshot, "%s/snapshots/%s", c->repo_dir, c->commit);
    char p[ZHUB_PATH_MAX + 64];
    zfmt(p, sizeof p, "%s/blobs", c->repo_dir);
    ZTRY(zhub_mkdirs(p, e));
    ZTRY(zhub_mkdirs(c->snapshot, e));
    zfmt(p, sizeof p, "%s/.locks/%s", c->root, strrchr(c->repo_dir, '/') + 1);
    ZTRY(zhub_mkdirs(p, e));
    zhub_cachedir_tag(c->root);
    ZTRY(zhub_write_ref(c->repo_dir, c->revision, c->commit, e));
    for (int i = 0; i < c->n; i++) {
        char q[ZHUB_PATH_MAX * 3], url[ZHUB_PATH_MAX * 3 + 2048];
        if (zhttp_quote(c->files[i].path, "/", q, sizeof q)) return zerr_set(e, ZE_INVALID, "file name too long");
        zfmt(url, sizeof url, "%s/%s/resolve/%s/%s", c->endpoint, c->repo, c->commit, q);
        c->files[i].url = strdup(url);
        if (!c->files[i].url) return zerr_set(e, ZE_NOMEM, "out of memory");
    }
    ZTRY(zhub_parallel(c, hf_head_task, e));
    ZTRY(zhub_plan_and_confirm(c, e));
    int *order = malloc((size_t)c->n * sizeof *order);
    if (!order) return zerr_set(e, ZE_NOMEM, "out of memory");
    for (int i = 0; i < c->n; i++) order[i] = i;
    qsort_r(order, (size_t)c->n, sizeof *order, cmp_size_desc, c); /* big files first */
    c->t0 = ztime_now();
    rc = run_pool(c, hf_fetch_task, order, e);
    free(order);
    ZTRY(rc);
    zhub_emit(c, ZHUB_EV_DONE, NULL, NULL, 1);
    return fill_result(c, r);
}

/* ---- public entry points ------------------------------------------------------------------ */

int zhub_pull(const char *repo, const char *revision, const zhub_opts *o, zhub_result *r, zerr *e) {
    zhub_opts def;
    if (!o) {
        zhub_opts_default(&def);
        o = &def;
    }
    if (r) memset(r, 0, sizeof *r);
    zhub_pull_ctx *c = malloc(sizeof *c);
    if (!c) return zerr_set(e, ZE_NOMEM, "out of memory");
    int rc = ctx_init(c, repo, revision, o, e);
    if (rc == ZE_OK) rc = c->src == ZHUB_MODELSCOPE ? zhub_ms_pull(c, r, e) : hf_pull(c, r, e);
    ctx_free(c);
    free(c);
    return rc;
}

int zhub_find_cached(const char *repo, const char *revision, const zhub_opts *o, char *dir, size_t n, zerr *e) {
    zhub_opts def;
    if (!o) {
        zhub_opts_default(&def);
        o = &def;
    }
    zhub_pull_ctx *c = malloc(sizeof *c);
    if (!c) return zerr_set(e, ZE_NOMEM, "out of memory");
    int rc = ctx_init(c, repo, revision, o, e);
    if (rc == ZE_OK) {
        if (c->src == ZHUB_MODELSCOPE) {
            rc = zhub_ms_find_cached(o, c->repo, c->revision, dir, n, e);
        } else {
            char commit[128];
            if (!hf_cached(c, commit, sizeof commit, e)) {
                rc = e && e->code ? e->code : ZE_IO;
            } else {
                char mi[ZHUB_PATH_MAX + 32];
                zfmt(mi, sizeof mi, "%s/model_index.json", c->snapshot);
                if (access(mi, F_OK))
                    rc = zerr_set(e, ZE_IO, "%s is in the cache but has no model_index.json (not a diffusers model)", c->repo);
                else
                    zfmt(dir, n, "%s", c->snapshot);
            }
        }
    }
    ctx_free(c);
    free(c);
    return rc;
}

int zhub_resolve_model(const char *spec, const zhub_opts *o, char *out_dir, size_t n, zerr *e) {
    zhub_opts def;
    if (!o) {
        zhub_opts_default(&def);
        o = &def;
    }
    if (!spec || !*spec) return zerr_set(e, ZE_INVALID, "no model given");
    struct stat st;
    if (stat(spec, &st) == 0) { /* a local folder or file */
        zfmt(out_dir, n, "%s", spec);
        return ZE_OK;
    }
    zhub_source src = o->source;
    char repo[256], rev[256];
    if (spec[0] == '/' || spec[0] == '.' || spec[0] == '~' || !strchr(spec, '/') ||
        zhub_parse_spec(spec, &src, repo, sizeof repo, rev, sizeof rev))
        return zerr_set(e, ZE_INVALID, "model '%s': no such file or folder, and not a repo id like %s", spec,
                        ZHUB_DEFAULT_REPO);
    if (strncmp(spec, "hf:", 3) && strncmp(spec, "ms:", 3) && strncmp(spec, "modelscope:", 11)) src = o->source;
    zhub_opts oo = *o;
    oo.source = src;
    const char *revp = rev[0] ? rev : NULL;
    zerr why = {0};
    if (zhub_find_cached(repo, revp, &oo, out_dir, n, &why) == ZE_OK) return ZE_OK;
    char root[ZHUB_PATH_MAX];
    ZTRY(zhub_cache_root(&oo, root, sizeof root, e));
    if (!o->allow_download)
        return zerr_set(e, ZE_IO, "model %s is not in the cache (%s): run `zimage pull %s` first", spec, why.msg, spec);
    if (zhub_offline(&oo))
        return zerr_set(e, ZE_IO,
                        "model %s is not usable from the cache (%s) and offline mode (HF_HUB_OFFLINE) is on: "
                        "unset HF_HUB_OFFLINE to download it",
                        spec, why.msg);
    if (!o->assume_yes && !o->confirm) {
        if (!isatty(STDIN_FILENO))
            return zerr_set(e, ZE_IO,
                            "model %s is not in the cache (%s). Download it first with `zimage pull %s`, or pass "
                            "--yes to download it now",
                            spec, root, spec);
        oo.confirm = zhub_confirm_tty;
        oo.confirm_user = NULL;
    }
    if (o->assume_yes) oo.confirm = NULL;
    if (!o->progress && !o->quiet) {
        oo.progress = zhub_progress_term;
        oo.progress_user = NULL;
    }
    zhub_result r;
    ZTRY(zhub_pull(repo, revp, &oo, &r, e));
    if (zhub_check_model_dir(r.snapshot, e)) return zerr_prefix(e, "%s is not a complete diffusers model", spec);
    zfmt(out_dir, n, "%s", r.snapshot);
    return ZE_OK;
}
