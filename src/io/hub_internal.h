/* hub_internal.h - pieces shared by hub.c (pull orchestration), hub_http.c
 * (libcurl), hub_cache.c (cache layout, paths, locks) and hub_ms.c
 * (ModelScope).  Not part of the library's interface. */
#ifndef ZIMAGE_HUB_INTERNAL_H
#define ZIMAGE_HUB_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "hub.h"
#include "sha256.h"

/* snprintf that the compiler does not second-guess (paths are checked for
 * length where it matters); same return value as snprintf. */
int zfmt(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- hub_http.c -------------------------------------------------------- */

typedef struct zhttp_resp {
    long status;              /* HTTP status of the last response; 0 = none   */
    int curl_code;            /* CURLcode of the transfer                      */
    int64_t content_length;   /* -1 if absent                                  */
    int64_t linked_size;      /* X-Linked-Size, -1 if absent                   */
    int64_t range_start;      /* Content-Range start, -1 if absent             */
    char etag[160];           /* ETag, raw                                     */
    char linked_etag[160];    /* X-Linked-Etag, raw                            */
    char commit[128];         /* X-Repo-Commit                                 */
    char location[8192];      /* Location (signed CDN URLs are long)           */
    char error_code[64];      /* X-Error-Code (RepoNotFound, GatedRepo, ...)   */
    char error_msg[256];      /* X-Error-Message                               */
    char content_encoding[32];
    char url[2048];           /* effective URL                                 */
} zhttp_resp;

typedef struct zhttp zhttp;   /* one libcurl easy handle; one per thread */

/* token (may be NULL) is sent as "Authorization: Bearer" only to auth_host. */
zhttp *zhttp_new(const char *token, const char *auth_host, int timeout_s);
void zhttp_free(zhttp *h);

/* HEAD without following redirects. ZE_OK when a response arrived (any
 * status, see r->status); ZE_NETWORK when none did. */
int zhttp_head(zhttp *h, const char *url, zhttp_resp *r, zerr *e);
/* GET following redirects into a malloc'ed NUL-terminated buffer (at most
 * max bytes).  ZE_OK when a response arrived (check r->status). */
int zhttp_get_mem(zhttp *h, const char *url, size_t max, char **body, size_t *len, zhttp_resp *r, zerr *e);

/* Streaming GET into fd from byte `offset` (Range request when > 0),
 * following redirects.  Data is written at fd's current offset... see
 * zhttp_sink.  on_data is called after every chunk with the byte count;
 * non-zero aborts the transfer (ZE_CANCELLED). */
typedef struct zhttp_sink {
    int fd;                   /* file to append to                            */
    int64_t offset;           /* bytes already in the file (resume point)     */
    zsha256 *sha;             /* hashed along, may be NULL                     */
    int restarted;            /* out: server ignored the Range, file reset     */
    int64_t received;         /* out: body bytes written by this call          */
    int (*on_data)(void *user, size_t n);
    void *user;
    /* internal */
    int started, bad_status, werr;
} zhttp_sink;
/* ZE_OK: complete 200/206 body received.  ZE_NETWORK with r->status = 0 and
 * r->curl_code set: the connection failed or dropped (retryable); with an
 * HTTP status: the server refused. */
int zhttp_get_to_fd(zhttp *h, const char *url, zhttp_sink *s, zhttp_resp *r, zerr *e);

/* 1 if curl_code is a transient transfer failure worth a resume. */
int zhttp_retryable(int curl_code);
/* Percent-encode s (RFC 3986 unreserved + the chars in safe) into out. */
int zhttp_quote(const char *s, const char *safe, char *out, size_t n);
/* Host part of a URL ("" if none) into out. */
void zhttp_host(const char *url, char *out, size_t n);
/* Resolve a (possibly relative) Location against base into out. */
void zhttp_join(const char *base, const char *loc, char *out, size_t n);
/* Turn an HTTP failure into a message naming the repo and what to do
 * (HF_TOKEN for 401/403/gated, revision / file not found, ...). */
int zhttp_fail(zerr *e, const zhttp_resp *r, const char *what, const char *repo, const char *endpoint,
               int have_token);

/* ---- hub_cache.c ------------------------------------------------------- */

int zhub_env_true(const char *name);
/* ~ and $VAR / ${VAR} expansion (like os.path.expanduser + expandvars). */
void zhub_expand(const char *in, char *out, size_t n);
int zhub_offline(const zhub_opts *o);
/* Endpoint without a trailing '/'. */
void zhub_endpoint(const zhub_opts *o, char *out, size_t n);
/* Token from o, env or the token file; "" if none. */
void zhub_token(const zhub_opts *o, char *out, size_t n);

int zhub_valid_revision(const char *rev);
int zhub_valid_relpath(const char *p);
int zhub_valid_etag(const char *etag);
int zhub_is_commit(const char *s);          /* 40 lowercase hex */
int zhub_is_sha256(const char *s);          /* 64 lowercase hex */
/* _normalize_etag: strip a leading W/ and surrounding quotes. */
void zhub_normalize_etag(const char *in, char *out, size_t n);

/* <root>/models--ORG--NAME */
void zhub_repo_folder(const char *root, const char *repo, char *out, size_t n);
/* refs/<rev> -> commit ("" if none). Returns 1 if found. */
int zhub_read_ref(const char *repo_dir, const char *rev, char *commit, size_t n);
int zhub_write_ref(const char *repo_dir, const char *rev, const char *commit, zerr *e);
/* mkdir -p (mode 0777 & ~umask). */
int zhub_mkdirs(const char *path, zerr *e);
/* Create dirname(path) below base, refusing symlinked components; then
 * check the real folder is inside base. */
int zhub_mkdirs_under(const char *base, const char *path, zerr *e);
/* snapshots/<commit>/<relpath> -> ../(depth+2)blobs/<etag>, replacing any
 * old entry (huggingface_hub's _create_symlink). */
int zhub_link_blob(const char *repo_dir, const char *commit, const char *relpath, const char *etag, zerr *e);
/* Write CACHEDIR.TAG in root if missing (errors ignored). */
void zhub_cachedir_tag(const char *root);
/* flock(LOCK_EX) on path (created 0664), polling every 100 ms.  *stop
 * aborts (ZE_CANCELLED); waiting is reported once through on_wait. */
int zhub_lock(const char *path, int *fd, int *stop, void (*on_wait)(void *), void *user, zerr *e);
void zhub_unlock(int fd);
/* Free bytes for an unprivileged user on the filesystem holding path. */
int zhub_free_bytes(const char *path, uint64_t *out);
/* Completeness of a diffusers folder (see zhub_find_cached). */
int zhub_check_model_dir(const char *dir, zerr *e);
/* 1 if path exists (following symlinks), and its size into *size. */
int zhub_file_size(const char *path, int64_t *size);

/* The engine's file filter: model_index.json, *.json, *.safetensors,
 * tokenizer/anything; never README*, assets/, hidden files. */
int zhub_wanted(const char *relpath, int all_files);
/* keep[i] for each of the repo's n files: zhub_wanted, minus root-level
 * weights of a diffusers repo (single-file copies) and variant weights
 * (x.fp16.safetensors) where the folder has non-variant ones. */
void zhub_select(char *const *paths, int n, int all, unsigned char *keep);

/* ---- hub.c: the shared pull machinery ----------------------------------- */

enum { ZF_CACHED = 0, ZF_LINK = 1, ZF_FETCH = 2 };

typedef struct zhub_file {
    char *path;               /* repo-relative path                          */
    char *url;                /* resolve URL (HF) / file URL (ModelScope)     */
    char *dl_url;             /* where to GET (redirect target), or NULL      */
    char *tmp_path;           /* partial download                             */
    char *final_path;         /* blob (HF) or model file (ModelScope)         */
    char *lock_path;          /* per-file lock (HF), or NULL                  */
    char etag[132];           /* HF blob name                                 */
    char sha256[65];          /* expected content hash, "" if unknown         */
    char revision[128];       /* ModelScope per-file commit                   */
    int64_t size;             /* expected size, -1 unknown                    */
    int64_t partial;          /* bytes already downloaded                     */
    int state;                /* ZF_*                                         */
    int done;
} zhub_file;

typedef struct zhub_pull_ctx {
    const zhub_opts *o;
    zhub_source src;
    char repo[128], revision[256], commit[128];
    char root[ZHUB_PATH_MAX], repo_dir[ZHUB_PATH_MAX], snapshot[ZHUB_PATH_MAX];
    char endpoint[1024], auth_host[256];
    char token[1024];         /* never printed */
    int timeout_s;
    zhub_file *files;
    int n, cap;
    /* shared state */
    pthread_mutex_t mu;
    int stop;                 /* atomic: set to end all workers */
    int err_code;
    zerr err;
    int n_failed;
    /* progress */
    pthread_mutex_t cb_mu;
    uint64_t bytes_total, bytes_done;
    int files_done, files_fetch, n_downloaded;
    double t0, last_tick, win_t, win_b, prev_speed;
} zhub_pull_ctx;

int zhub_ctx_add(zhub_pull_ctx *c, const char *path);
/* Report an event (serialised; TICK events rate-limited unless force). */
void zhub_emit(zhub_pull_ctx *c, int ev, const char *file, const char *msg, int force);
/* Record the first error and stop the other workers. */
void zhub_fail(zhub_pull_ctx *c, const zerr *e);
/* Download f->dl_url (or f->url) into f->tmp_path with resume, retries and
 * verification (size, and sha256 when f->sha256 is set); on success the
 * file is renamed to f->final_path. */
int zhub_fetch_file(zhub_pull_ctx *c, zhttp *h, zhub_file *f, zerr *e);
/* Run fn(c, h, i) for i in [0, n) on o->jobs threads, each with its own
 * zhttp; returns the first error. */
int zhub_parallel(zhub_pull_ctx *c, int (*fn)(zhub_pull_ctx *, zhttp *, int, zerr *), zerr *e);
/* Plan (sizes), free space check, confirm callback.  Returns ZE_OK to go. */
int zhub_plan_and_confirm(zhub_pull_ctx *c, zerr *e);

/* ---- hub_ms.c ---------------------------------------------------------- */

int zhub_ms_pull(zhub_pull_ctx *c, zhub_result *r, zerr *e);
int zhub_ms_find_cached(const zhub_opts *o, const char *repo, const char *rev, char *dir, size_t n, zerr *e);
void zhub_ms_model_dir(const char *root, const char *repo, char *out, size_t n);

#endif
