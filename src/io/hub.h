/* hub.h - getting models: `zimage pull`, the Hugging Face cache, ModelScope,
 * offline use, resumable and verified downloads.
 *
 * Cache layout (exactly huggingface_hub's, so diffusers and zimage share
 * downloads in both directions):
 *
 *   $HF_HUB_CACHE  (else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub,
 *                   else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub)
 *     CACHEDIR.TAG
 *     .locks/models--ORG--NAME/<etag>.lock          flock()ed while a blob is written
 *     models--ORG--NAME/
 *       refs/<revision>                              text file: the 40-hex commit
 *       blobs/<etag>                                 file content; etag = sha256 for
 *                                                    LFS files, git blob sha1 otherwise
 *       blobs/<etag>.incomplete                      a download in progress (resumable)
 *       snapshots/<commit>/<path in repo>            relative symlink ../../blobs/<etag>
 *                                                    (one more ../ per folder level)
 *
 * ModelScope (--source modelscope) uses ModelScope's own layout:
 *   $MODELSCOPE_CACHE (else ~/.cache/modelscope/hub)
 *     .lock/ORG___NAME                               flock()ed during a pull
 *     models/._____temp/ORG/NAME/<path>              downloads in progress
 *     models/ORG/NAME'/<path>                        the files (NAME' = NAME with . -> ___)
 *     models/ORG/NAME'/.msc .mdl .mv                 modelscope's index (pickle) and version
 *
 * Environment (read on each call; explicit zhub_opts fields win):
 *   HF_ENDPOINT (mirrors, default https://huggingface.co), HF_TOKEN /
 *   HUGGING_FACE_HUB_TOKEN / $HF_HOME/token (sent only to the endpoint's host,
 *   never printed), HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1 (no network),
 *   HF_HUB_DOWNLOAD_TIMEOUT (stall seconds, default 10), MODELSCOPE_CACHE,
 *   MODELSCOPE_ENDPOINT, MODELSCOPE_DOMAIN (host, or a full http(s):// URL).
 * ModelScope models downloaded by modelscope >= 1.38 (models/ORG--NAME/
 * snapshots/<branch>/ under $MODELSCOPE_CACHE or ~/.cache/modelscope) are
 * found too.
 *
 * All functions return ZE_OK or a negative ZE_* code with the message in e.
 * Nothing here prints, except zhub_progress_term / zhub_confirm_tty, which a
 * caller passes in explicitly as callbacks.
 */
#ifndef ZIMAGE_HUB_H
#define ZIMAGE_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "../base/err.h"

#define ZHUB_DEFAULT_REPO "Tongyi-MAI/Z-Image-Turbo"
#define ZHUB_PATH_MAX 4096

typedef enum { ZHUB_HF = 0, ZHUB_MODELSCOPE = 1 } zhub_source;

/* Progress events, delivered one at a time (never concurrently), from the
 * calling thread or a download worker. */
enum {
    ZHUB_EV_PLAN = 0,     /* file list and sizes known; bytes_total set       */
    ZHUB_EV_TICK,         /* periodic (about 10/s) while transferring         */
    ZHUB_EV_FILE_START,   /* file: transfer starts (msg "resuming" if so)     */
    ZHUB_EV_FILE_DONE,    /* file: downloaded and verified                    */
    ZHUB_EV_FILE_CACHED,  /* file: already in the cache, nothing transferred  */
    ZHUB_EV_RETRY,        /* file: connection dropped, resuming; msg = reason */
    ZHUB_EV_WAIT_LOCK,    /* file: another process holds its lock; waiting    */
    ZHUB_EV_DONE,         /* all files present                                */
};

typedef struct zhub_progress {
    int event;               /* ZHUB_EV_*                                       */
    const char *repo;        /* "ORG/NAME"                                      */
    const char *file;        /* repo-relative path, or NULL                     */
    const char *msg;         /* detail for RETRY / WAIT_LOCK / FILE_START       */
    int files_total;         /* files of the snapshot we need                   */
    int files_done;          /* of those, present in the cache now              */
    int files_fetch;         /* files that need a transfer this call            */
    uint64_t bytes_total;    /* bytes still to transfer when the call began     */
    uint64_t bytes_done;     /* bytes received so far                           */
    double elapsed;          /* seconds since transfers began                   */
    double speed;            /* bytes/s over the last few seconds               */
    double eta;              /* seconds left, < 0 if unknown                    */
} zhub_progress;
/* Return non-zero to cancel (the call ends with ZE_CANCELLED; partial files
 * stay in the cache and the next pull resumes them). */
typedef int (*zhub_progress_fn)(const zhub_progress *p, void *user);

/* What a pull is about to transfer (passed to the confirm callback). */
typedef struct zhub_plan {
    const char *repo, *revision, *commit;
    const char *cache_dir;   /* where the files go                              */
    int n_files;             /* files the snapshot needs                        */
    int n_fetch;             /* files to transfer                               */
    uint64_t fetch_bytes;    /* bytes to transfer (partial downloads excluded)  */
    uint64_t total_bytes;    /* size of all n_files                             */
} zhub_plan;
/* Return 1 to go ahead, 0 to stop (ZE_CANCELLED). */
typedef int (*zhub_confirm_fn)(const zhub_plan *plan, void *user);

typedef struct zhub_opts {
    zhub_source source;      /* ZHUB_HF (default) or ZHUB_MODELSCOPE            */
    const char *endpoint;    /* NULL: $HF_ENDPOINT / $MODELSCOPE_DOMAIN / default */
    const char *cache_dir;   /* NULL: the environment rules above               */
    const char *token;       /* NULL: $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, token file */
    int offline;             /* 1: never use the network (also if HF_HUB_OFFLINE) */
    int allow_download;      /* zhub_resolve_model: pull a repo that is missing  */
    int assume_yes;          /* zhub_resolve_model: no confirmation prompt       */
    int all_files;           /* pull every file, not only what the engine reads  */
    int jobs;                /* parallel transfers; 0 = 8                        */
    int retries;             /* resume attempts per file after a dropped
                                connection; 0 = 5, < 0 = none                    */
    int retry_delay_ms;      /* pause before a resume attempt; 0 = 1000          */
    int timeout_s;           /* stall timeout; 0 = $HF_HUB_DOWNLOAD_TIMEOUT or 10 */
    zhub_progress_fn progress;
    void *progress_user;
    zhub_confirm_fn confirm; /* zhub_pull: asked before transferring (NULL = go) */
    void *confirm_user;
    int quiet;               /* zhub_resolve_model: no progress output when
                                progress is NULL (else zhub_progress_term)       */
    uint64_t test_free_bytes;/* tests only: pretend this much disk is free (0 = real) */
} zhub_opts;

/* All zero: Hugging Face, settings from the environment, 8 parallel
 * transfers, 5 resume attempts, no callbacks. */
void zhub_opts_default(zhub_opts *o);

typedef struct zhub_result {
    char snapshot[ZHUB_PATH_MAX]; /* folder holding the model files              */
    char commit[128];        /* commit the revision resolved to (HF), or the
                                revision (ModelScope)                            */
    int n_files;             /* files in the snapshot (that we need)            */
    int n_downloaded;        /* files transferred by this call                  */
    int n_cached;            /* files that were already present                 */
    uint64_t bytes_downloaded; /* body bytes received by this call              */
    int offline;             /* 1: resolved from the cache without the network  */
    int fallback;            /* 1: the Hub could not be reached, cache used     */
    char note[512];          /* why fallback happened (for a warning line)      */
} zhub_result;

/* Download (or complete, or just verify presence of) a snapshot of repo at
 * revision (NULL = "main" on HF, "master" on ModelScope).  Fetches only the
 * files the engine reads (model_index.json, *.json configs and indexes,
 * *.safetensors, everything in tokenizer/) unless o->all_files.  With o->offline or
 * HF_HUB_OFFLINE=1 it only looks in the cache.  r may be NULL. */
int zhub_pull(const char *repo, const char *revision, const zhub_opts *o, zhub_result *r, zerr *e);

/* Snapshot folder of repo@revision in the cache, without any network access.
 * ZE_OK only if the snapshot is complete (model_index.json present, every
 * component folder present, every shard of every *.safetensors.index.json
 * present); otherwise ZE_IO with what is missing in e. */
int zhub_find_cached(const char *repo, const char *revision, const zhub_opts *o, char *dir, size_t n, zerr *e);

/* The model argument (-m / opt.model):
 *   - an existing path (folder or file): copied to out_dir unchanged;
 *   - "ORG/NAME", "ORG/NAME@REV", optionally prefixed "hf:" or "modelscope:"
 *     (or "ms:"): the cached snapshot folder.  If it is not cached (or is
 *     incomplete) and o->allow_download, it is pulled: with o->assume_yes at
 *     once, else after a y/N prompt on the terminal showing the download size
 *     (o->confirm overrides the prompt); without a terminal and without
 *     assume_yes it fails, telling the user to run `zimage pull` or pass --yes.
 * A cached model is used without contacting the Hub (run `zimage pull` to
 * update it).  While pulling, progress goes to o->progress, or to
 * zhub_progress_term unless o->quiet. */
int zhub_resolve_model(const char *spec, const zhub_opts *o, char *out_dir, size_t n, zerr *e);

/* Split "hf:ORG/NAME@REV" into source, repo and revision ("" if none).
 * Returns ZE_OK, or ZE_INVALID if spec is not a valid repo id. */
int zhub_parse_spec(const char *spec, zhub_source *src, char *repo, size_t nrepo, char *rev, size_t nrev);

/* Repo id check, huggingface_hub's rules: "NAME" or "ORG/NAME", each part
 * 1-96 chars of [A-Za-z0-9._-], not starting or ending with '.' or '-', no
 * "--" or "..", not ending in ".git". */
int zhub_valid_repo_id(const char *repo);

/* Root of the cache for o->source (see the top of this file). */
int zhub_cache_root(const zhub_opts *o, char *out, size_t n, zerr *e);

/* "1.23 GB" (decimal units, like the Hub's web pages). Returns buf. */
const char *zhub_fmt_bytes(uint64_t b, char *buf, size_t n);

/* Ready-made callbacks for command-line tools (they write to stderr):
 * a progress bar (files, bytes, speed, ETA) when stderr is a terminal, plain
 * log lines otherwise; user may be NULL.  zhub_progress_term never cancels
 * unless *(volatile int *)user becomes non-zero (pass a SIGINT flag). */
int zhub_progress_term(const zhub_progress *p, void *user);
/* "Download N files (X GB) now? [y/N]" on stderr, answer read from stdin. */
int zhub_confirm_tty(const zhub_plan *plan, void *user);

#endif
