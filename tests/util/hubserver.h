/* hubserver.h - a stand-in Hugging Face Hub (and ModelScope) for the tests,
 * on libmicrohttpd, listening on 127.0.0.1 at a free port.
 *
 * It serves folders of the test's choosing as model repos, with the headers
 * the real Hub sends (huggingface_hub's file_download.py reads them):
 *   GET  /api/models/ORG/NAME/revision/REV     {"id","sha","siblings":[{"rfilename"}]}
 *   GET  /api/models/ORG/NAME/tree/REV         [{"type","oid","size","path","lfs"}]
 *        (what huggingface_hub >= 1.0 lists with)
 *   HEAD|GET /ORG/NAME/resolve/REV/PATH
 *        regular file: 200, ETag "<git blob sha1>", X-Repo-Commit, Content-Length
 *        LFS file (*.safetensors, or > 64 kB): 302 to /cdn-lfs/<sha256>, with
 *        X-Linked-Etag "<sha256>", X-Linked-Size, X-Repo-Commit, and the ETag
 *        of the LFS pointer file (as the Hub does)
 *   HEAD|GET /cdn-lfs/<sha256>                  the content; Range -> 206 (also carries
 *        X-Repo-Commit and ETag "<sha256>", because huggingface_hub >= 1.0
 *        follows same-host redirects when it HEADs)
 *   errors: 401 + X-Error-Code RepoNotFound (unknown repo), GatedRepo (a gated
 *        repo without "Authorization: Bearer <token>"), 404 RevisionNotFound,
 *        404 EntryNotFound
 * ModelScope:
 *   GET /api/v1/models/ORG/NAME/repo/files?Revision=R&Recursive=True
 *        {"Code":200,"Success":true,"Data":{"Files":[{"Name","Path","Type",
 *         "Size","Sha256","Revision"}]}}
 *   GET /api/v1/models/ORG/NAME/repo?Revision=R&FilePath=P   content, Range
 * REV may be "main" (HF), "master" (ModelScope) or the repo's commit.
 *
 * Fault switches act on the next matching content responses: drop the
 * connection after a byte offset, flip one byte, ignore Range headers, slow
 * the transfer down.  Counters tell the test what was requested.
 */
#ifndef ZIMAGE_TEST_HUBSERVER_H
#define ZIMAGE_TEST_HUBSERVER_H

#include <stdint.h>

typedef struct hubsrv hubsrv;

typedef struct hubsrv_stats {
    int api_calls;          /* /api/... requests (HF and ModelScope)           */
    int head_calls;         /* HEAD /resolve/ requests                          */
    int content_gets;       /* GETs that returned file content (200 or 206)     */
    int range_gets;         /* of those, answered with 206                      */
    int64_t last_range_start; /* start of the last Range honoured (-1: none)   */
    uint64_t body_bytes;    /* content bytes handed to the network              */
    int drops;              /* connections dropped on purpose                   */
    int auth_seen;          /* requests that carried an Authorization header    */
} hubsrv_stats;

/* Start on 127.0.0.1:<free port>.  NULL on failure. */
hubsrv *hubsrv_start(void);
void hubsrv_stop(hubsrv *s);
/* "http://127.0.0.1:PORT" */
const char *hubsrv_url(const hubsrv *s);

/* Serve every file below dir (symlinks followed) as repo `repo_id`.
 * gated: requires the token set with hubsrv_set_token.  Returns 0 or -1.
 * The commit is commit[] if that holds 40 chars, else a sha1 of the repo's
 * content; it is written to commit if non-NULL. */
int hubsrv_add_repo(hubsrv *s, const char *repo_id, const char *dir, int gated, char commit[41]);
void hubsrv_set_token(hubsrv *s, const char *token);

/* Faults on content responses of files whose repo path ends with `suffix`:
 * for the next `times` responses, close the connection once `offset` bytes
 * of the file (absolute position) have been sent. */
void hubsrv_drop_after(hubsrv *s, const char *suffix, int64_t offset, int times);
/* ... flip the byte at absolute `offset` in the next `times` responses. */
void hubsrv_corrupt(hubsrv *s, const char *suffix, int64_t offset, int times);
/* Answer Range requests with the whole file (200), like some CDNs. */
void hubsrv_ignore_range(hubsrv *s, int on);
/* Sleep this many milliseconds per 64 kB of content sent. */
void hubsrv_set_delay(hubsrv *s, int ms_per_block);

/* List `name` in the repo's file list without serving it (unsafe names). */
void hubsrv_list_extra(hubsrv *s, const char *repo_id, const char *name);
/* Send this raw value as the ETag / X-Linked-Etag of files ending in suffix
 * (NULL or "" to stop). */
void hubsrv_override_etag(hubsrv *s, const char *suffix, const char *value);

void hubsrv_get_stats(hubsrv *s, hubsrv_stats *out);
void hubsrv_reset_stats(hubsrv *s);
/* sha256 / git-blob sha1 of a served file (hex), NULL if unknown. */
const char *hubsrv_file_sha256(hubsrv *s, const char *repo_id, const char *path);

#endif
