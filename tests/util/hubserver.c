/* hubserver.c - stand-in Hugging Face Hub / ModelScope for tests (see
 * hubserver.h).  libmicrohttpd, one thread per connection, everything in
 * memory (test repos are small). */
#include "hubserver.h"

#include <dirent.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "io/sha256.h"

#define LFS_THRESHOLD (64 * 1024)
#define MAX_REPOS 8

typedef struct {
    char *path;          /* repo-relative */
    unsigned char *data;
    size_t size;
    int lfs;
    char sha256[65];
    char gitsha[41];     /* git blob id of the content (regular) */
    char ptrsha[41];     /* git blob id of the LFS pointer (LFS) */
} hfile;

typedef struct {
    char id[128];
    char commit[41];
    int gated;
    hfile *f;
    int n;
    char *extra[8];      /* names listed but not served (unsafe-name tests) */
    int nextra;
} hrepo;

struct hubsrv {
    struct MHD_Daemon *d;
    char url[64];
    pthread_mutex_t mu;
    hrepo repos[MAX_REPOS];
    int nrepos;
    char token[256];
    /* faults */
    char drop_suffix[256];
    int64_t drop_at;
    int drop_times;
    char corrupt_suffix[256];
    int64_t corrupt_at;
    int corrupt_times;
    int ignore_range;
    int delay_ms;
    char etag_suffix[256];
    char etag_value[256];
    hubsrv_stats st;
};

/* ---- sha1 (git blob ids) ----------------------------------------------------------- */

typedef struct {
    uint32_t h[5];
    uint64_t n;
    unsigned char b[64];
    size_t nb;
} sha1c;

#define ROL(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (b & c) | (~b & d), k = 0x5a827999;
        else if (i < 40) f = b ^ c ^ d, k = 0x6ed9eba1;
        else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
        else f = b ^ c ^ d, k = 0xca62c1d6;
        uint32_t t = ROL(a, 5) + f + e + k + w[i];
        e = d, d = c, c = ROL(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}
static void sha1_init(sha1c *s) {
    static const uint32_t h0[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    memcpy(s->h, h0, sizeof h0);
    s->n = s->nb = 0;
}
static void sha1_update(sha1c *s, const void *data, size_t n) {
    const unsigned char *p = data;
    s->n += n;
    while (n) {
        size_t k = 64 - s->nb < n ? 64 - s->nb : n;
        memcpy(s->b + s->nb, p, k);
        s->nb += k, p += k, n -= k;
        if (s->nb == 64) sha1_block(s->h, s->b), s->nb = 0;
    }
}
static void sha1_hex(sha1c *s, char out[41]) {
    uint64_t bits = s->n * 8;
    unsigned char pad = 0x80, z = 0;
    sha1_update(s, &pad, 1);
    while (s->nb != 56) sha1_update(s, &z, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha1_update(s, len, 8);
    for (int i = 0; i < 5; i++) sprintf(out + 8 * i, "%08x", s->h[i]);
}
static void git_blob_id(const void *data, size_t n, char out[41]) {
    sha1c s;
    char hdr[64];
    int hl = snprintf(hdr, sizeof hdr, "blob %zu", n);
    sha1_init(&s);
    sha1_update(&s, hdr, (size_t)hl + 1); /* includes the NUL */
    sha1_update(&s, data, n);
    sha1_hex(&s, out);
}

/* ---- repo loading ----------------------------------------------------------------- */

static int load_dir(hrepo *r, const char *root, const char *rel) {
    char full[4096];
    snprintf(full, sizeof full, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(full);
    if (!d) return -1;
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char r2[2048], p[4096];
        snprintf(r2, sizeof r2, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
        snprintf(p, sizeof p, "%s/%s", root, r2);
        struct stat st;
        if (stat(p, &st)) continue;
        if (S_ISDIR(st.st_mode)) {
            rc = load_dir(r, root, r2);
            continue;
        }
        FILE *f = fopen(p, "rb");
        if (!f) return -1;
        hfile hf = {0};
        hf.path = strdup(r2);
        hf.size = (size_t)st.st_size;
        hf.data = malloc(hf.size ? hf.size : 1);
        if (!hf.path || !hf.data || fread(hf.data, 1, hf.size, f) != hf.size) rc = -1;
        fclose(f);
        if (rc) {
            free(hf.path);
            free(hf.data);
            break;
        }
        size_t pl = strlen(hf.path);
        hf.lfs = hf.size > LFS_THRESHOLD || (pl > 12 && !strcmp(hf.path + pl - 12, ".safetensors"));
        zsha256_hex(hf.data, hf.size, hf.sha256);
        git_blob_id(hf.data, hf.size, hf.gitsha);
        char ptr[256];
        int k = snprintf(ptr, sizeof ptr, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %zu\n", hf.sha256,
                         hf.size);
        git_blob_id(ptr, (size_t)k, hf.ptrsha);
        hfile *nf = realloc(r->f, (size_t)(r->n + 1) * sizeof *nf);
        if (!nf) return -1;
        r->f = nf;
        r->f[r->n++] = hf;
    }
    closedir(d);
    return rc;
}

int hubsrv_add_repo(hubsrv *s, const char *repo_id, const char *dir, int gated, char commit[41]) {
    pthread_mutex_lock(&s->mu);
    if (s->nrepos >= MAX_REPOS) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    hrepo *r = &s->repos[s->nrepos];
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", repo_id);
    r->gated = gated;
    int rc = load_dir(r, dir, "");
    if (rc == 0) {
        sha1c h;
        sha1_init(&h);
        sha1_update(&h, repo_id, strlen(repo_id));
        for (int i = 0; i < r->n; i++) {
            sha1_update(&h, r->f[i].path, strlen(r->f[i].path) + 1);
            sha1_update(&h, r->f[i].sha256, 64);
        }
        sha1_hex(&h, r->commit);
        if (commit && strlen(commit) == 40) memcpy(r->commit, commit, 41); /* the caller's commit */
        if (commit) memcpy(commit, r->commit, 41);
        s->nrepos++;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static hrepo *find_repo(hubsrv *s, const char *id, size_t len) {
    for (int i = 0; i < s->nrepos; i++)
        if (strlen(s->repos[i].id) == len && !strncmp(s->repos[i].id, id, len)) return &s->repos[i];
    return NULL;
}
static hfile *find_file(hrepo *r, const char *path) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->f[i].path, path)) return &r->f[i];
    return NULL;
}

const char *hubsrv_file_sha256(hubsrv *s, const char *repo_id, const char *path) {
    hrepo *r = find_repo(s, repo_id, strlen(repo_id));
    hfile *f = r ? find_file(r, path) : NULL;
    return f ? f->sha256 : NULL;
}

/* ---- responses ------------------------------------------------------------------------- */

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned code, const char *ctype, const char *body,
                                 const char *xcode, const char *xmsg, const char *commit) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", ctype);
    if (xcode) MHD_add_response_header(r, "X-Error-Code", xcode);
    if (xmsg) MHD_add_response_header(r, "X-Error-Message", xmsg);
    if (commit) MHD_add_response_header(r, "X-Repo-Commit", commit);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

typedef struct {
    hubsrv *s;
    const hfile *f;
    int64_t start;       /* absolute offset of the first byte sent */
    int64_t drop_at;     /* absolute offset to cut at, -1 none     */
    int64_t corrupt_at;  /* absolute offset to flip, -1 none       */
    int delay_ms;
} body_ctx;

static ssize_t body_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    body_ctx *b = cls;
    int64_t abs = b->start + (int64_t)pos;
    if (abs >= (int64_t)b->f->size) return MHD_CONTENT_READER_END_OF_STREAM;
    if (b->drop_at >= 0 && abs >= b->drop_at) {
        pthread_mutex_lock(&b->s->mu);
        b->s->st.drops++;
        pthread_mutex_unlock(&b->s->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = (size_t)((int64_t)b->f->size - abs);
    if (n > max) n = max;
    if (n > 65536) n = 65536;
    if (b->drop_at >= 0 && abs + (int64_t)n > b->drop_at) n = (size_t)(b->drop_at - abs);
    memcpy(buf, b->f->data + abs, n);
    if (b->corrupt_at >= abs && b->corrupt_at < abs + (int64_t)n) buf[b->corrupt_at - abs] ^= 0x5a;
    if (b->delay_ms > 0) {
        struct timespec ts = {b->delay_ms / 1000, (long)(b->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&b->s->mu);
    b->s->st.body_bytes += n;
    pthread_mutex_unlock(&b->s->mu);
    return (ssize_t)n;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return suf[0] && a >= b && !strcmp(s + a - b, suf);
}

/* Content of f, honouring Range and the fault switches. */
static enum MHD_Result send_content(hubsrv *s, struct MHD_Connection *c, const hfile *f, int head, const char *etag,
                                    const char *commit) {
    int64_t start = 0;
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    int partial = 0;
    pthread_mutex_lock(&s->mu);
    if (range && !s->ignore_range) {
        long long a;
        if (sscanf(range, "bytes=%lld-", &a) == 1 && a >= 0) {
            if (a >= (long long)f->size) {
                pthread_mutex_unlock(&s->mu);
                char cr[64];
                snprintf(cr, sizeof cr, "bytes */%zu", f->size);
                struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
                MHD_add_response_header(r, "Content-Range", cr);
                enum MHD_Result ret = MHD_queue_response(c, 416, r);
                MHD_destroy_response(r);
                return ret;
            }
            start = a;
            partial = 1;
        }
    }
    body_ctx *b = calloc(1, sizeof *b);
    if (!b) {
        pthread_mutex_unlock(&s->mu);
        return MHD_NO;
    }
    b->s = s;
    b->f = f;
    b->start = start;
    b->drop_at = -1;
    b->corrupt_at = -1;
    b->delay_ms = s->delay_ms;
    if (!head) {
        if (s->drop_times > 0 && ends_with(f->path, s->drop_suffix)) {
            s->drop_times--;
            b->drop_at = s->drop_at;
        }
        if (s->corrupt_times > 0 && ends_with(f->path, s->corrupt_suffix)) {
            s->corrupt_times--;
            b->corrupt_at = s->corrupt_at;
        }
        s->st.content_gets++;
        if (partial) {
            s->st.range_gets++;
            s->st.last_range_start = start;
        }
    }
    pthread_mutex_unlock(&s->mu);
    struct MHD_Response *r =
        MHD_create_response_from_callback((uint64_t)((int64_t)f->size - start), 65536, body_reader, b, free);
    MHD_add_response_header(r, "Accept-Ranges", "bytes");
    MHD_add_response_header(r, "Content-Type", "application/octet-stream");
    if (etag) MHD_add_response_header(r, "ETag", etag);
    if (commit) MHD_add_response_header(r, "X-Repo-Commit", commit);
    if (partial) {
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %" PRId64 "-%zu/%zu", start, f->size - 1, f->size);
        MHD_add_response_header(r, "Content-Range", cr);
    }
    enum MHD_Result ret = MHD_queue_response(c, partial ? 206 : 200, r);
    MHD_destroy_response(r);
    return ret;
}

static int authorized(hubsrv *s, struct MHD_Connection *c, const hrepo *r) {
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (a) {
        pthread_mutex_lock(&s->mu);
        s->st.auth_seen++;
        pthread_mutex_unlock(&s->mu);
    }
    if (!r->gated) return 1;
    char want[300];
    snprintf(want, sizeof want, "Bearer %s", s->token);
    return a && s->token[0] && !strcmp(a, want);
}

static enum MHD_Result refuse(struct MHD_Connection *c, const hrepo *r, const char *id) {
    char msg[300];
    if (!r) {
        snprintf(msg, sizeof msg, "Repository Not Found for url: %s.", id);
        return send_text(c, 401, "application/json", "{\"error\":\"Repository not found\"}", "RepoNotFound", msg, NULL);
    }
    snprintf(msg, sizeof msg, "Access to model %s is restricted. You must have access to it and be authenticated to access it. Please log in.", r->id);
    return send_text(c, 401, "application/json", "{\"error\":\"gated\"}", "GatedRepo", msg, NULL);
}

static int rev_ok(const hrepo *r, const char *rev, const char *branch) {
    return !strcmp(rev, branch) || !strcmp(rev, r->commit);
}

/* "ORG/NAME/<rest>" -> repo and rest */
static hrepo *split_repo(hubsrv *s, const char *p, const char **rest, char *id, size_t nid) {
    const char *a = strchr(p, '/');
    if (!a) return NULL;
    const char *b = strchr(a + 1, '/');
    size_t l = b ? (size_t)(b - p) : strlen(p);
    snprintf(id, nid, "%.*s", (int)l, p);
    *rest = b ? b + 1 : "";
    return find_repo(s, p, l);
}

/* GET /api/models/ORG/NAME/tree/REV?recursive=true - what huggingface_hub
 * >= 1.0 lists with (list_repo_tree); one page, no Link header. */
static enum MHD_Result hf_tree(struct MHD_Connection *c, const hrepo *r, const char *rev) {
    if (!rev_ok(r, rev, "main"))
        return send_text(c, 404, "application/json", "{\"error\":\"Invalid rev id\"}", "RevisionNotFound", "Invalid rev id", NULL);
    size_t cap = 4096 + (size_t)r->n * 1500, o = 0;
    char *j = malloc(cap);
    if (!j) return MHD_NO;
    o += (size_t)snprintf(j + o, cap - o, "[");
    for (int i = 0; i < r->n; i++) {
        const hfile *f = &r->f[i];
        o += (size_t)snprintf(j + o, cap - o, "%s{\"type\":\"file\",\"oid\":\"%s\",\"size\":%zu,\"path\":\"%s\"",
                              i ? "," : "", f->lfs ? f->ptrsha : f->gitsha, f->size, f->path);
        if (f->lfs)
            o += (size_t)snprintf(j + o, cap - o, ",\"lfs\":{\"oid\":\"%s\",\"size\":%zu,\"pointerSize\":134}", f->sha256, f->size);
        o += (size_t)snprintf(j + o, cap - o, "}");
    }
    snprintf(j + o, cap - o, "]");
    enum MHD_Result ret = send_text(c, 200, "application/json", j, NULL, NULL, NULL);
    free(j);
    return ret;
}

static enum MHD_Result hf_api(hubsrv *s, struct MHD_Connection *c, const char *p) {
    char id[256];
    const char *rest;
    hrepo *r = split_repo(s, p, &rest, id, sizeof id);
    if (!r || !authorized(s, c, r)) return refuse(c, r, id);
    if (!strncmp(rest, "tree/", 5)) return hf_tree(c, r, rest + 5);
    if (strncmp(rest, "revision/", 9)) return send_text(c, 404, "application/json", "{}", NULL, NULL, NULL);
    if (!rev_ok(r, rest + 9, "main"))
        return send_text(c, 404, "application/json", "{\"error\":\"Invalid rev id\"}", "RevisionNotFound", "Invalid rev id", NULL);
    size_t cap = 4096 + (size_t)r->n * 1200, o = 0;
    char *j = malloc(cap);
    if (!j) return MHD_NO;
    o += (size_t)snprintf(j + o, cap - o,
                          "{\"_id\":\"%.24s\",\"id\":\"%s\",\"modelId\":\"%s\",\"private\":false,\"gated\":%s,"
                          "\"sha\":\"%s\",\"library_name\":\"diffusers\",\"siblings\":[",
                          r->commit, r->id, r->id, r->gated ? "\"manual\"" : "false", r->commit);
    for (int i = 0; i < r->n; i++)
        o += (size_t)snprintf(j + o, cap - o, "%s{\"rfilename\":\"%s\"}", i ? "," : "", r->f[i].path);
    for (int i = 0; i < r->nextra; i++)
        o += (size_t)snprintf(j + o, cap - o, "%s{\"rfilename\":\"%s\"}", r->n + i ? "," : "", r->extra[i]);
    snprintf(j + o, cap - o, "]}");
    enum MHD_Result ret = send_text(c, 200, "application/json", j, NULL, NULL, NULL);
    free(j);
    return ret;
}

static enum MHD_Result hf_resolve(hubsrv *s, struct MHD_Connection *c, const char *p, int head) {
    char id[256];
    const char *rest;
    hrepo *r = split_repo(s, p, &rest, id, sizeof id);
    if (!r || !authorized(s, c, r)) return refuse(c, r, id);
    if (strncmp(rest, "resolve/", 8)) return send_text(c, 404, "text/plain", "not found", NULL, NULL, NULL);
    rest += 8;
    const char *sl = strchr(rest, '/');
    if (!sl) return send_text(c, 404, "text/plain", "not found", NULL, NULL, NULL);
    char rev[128];
    snprintf(rev, sizeof rev, "%.*s", (int)(sl - rest), rest);
    if (!rev_ok(r, rev, "main"))
        return send_text(c, 404, "text/plain", "Invalid rev id", "RevisionNotFound", "Invalid rev id", NULL);
    if (head) {
        pthread_mutex_lock(&s->mu);
        s->st.head_calls++;
        pthread_mutex_unlock(&s->mu);
    }
    hfile *f = find_file(r, sl + 1);
    if (!f) return send_text(c, 404, "text/plain", "Entry not found", "EntryNotFound", "Entry not found", r->commit);
    if (f->lfs) {
        char loc[512], body[700], etag[64], linked[300], size[32];
        snprintf(loc, sizeof loc, "%s/cdn-lfs/%s?repo=%s", s->url, f->sha256, r->id);
        snprintf(body, sizeof body, "Found. Redirecting to %s", loc);
        snprintf(etag, sizeof etag, "\"%s\"", f->ptrsha);
        snprintf(linked, sizeof linked, "\"%s\"", f->sha256);
        pthread_mutex_lock(&s->mu);
        if (s->etag_suffix[0] && ends_with(f->path, s->etag_suffix)) snprintf(linked, sizeof linked, "%s", s->etag_value);
        pthread_mutex_unlock(&s->mu);
        snprintf(size, sizeof size, "%zu", f->size);
        struct MHD_Response *rr = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
        MHD_add_response_header(rr, "Location", loc);
        MHD_add_response_header(rr, "ETag", etag);
        MHD_add_response_header(rr, "X-Linked-Etag", linked);
        MHD_add_response_header(rr, "X-Linked-Size", size);
        MHD_add_response_header(rr, "X-Repo-Commit", r->commit);
        MHD_add_response_header(rr, "Content-Type", "text/plain; charset=utf-8");
        enum MHD_Result ret = MHD_queue_response(c, 302, rr);
        MHD_destroy_response(rr);
        return ret;
    }
    char etag[300];
    snprintf(etag, sizeof etag, "\"%s\"", f->gitsha);
    pthread_mutex_lock(&s->mu);
    if (s->etag_suffix[0] && ends_with(f->path, s->etag_suffix)) snprintf(etag, sizeof etag, "%s", s->etag_value);
    pthread_mutex_unlock(&s->mu);
    return send_content(s, c, f, head, etag, r->commit);
}

static enum MHD_Result cdn(hubsrv *s, struct MHD_Connection *c, const char *sha, int head) {
    for (int i = 0; i < s->nrepos; i++)
        for (int k = 0; k < s->repos[i].n; k++)
            if (!strcmp(s->repos[i].f[k].sha256, sha)) {
                /* X-Repo-Commit here too: huggingface_hub >= 1.0 follows a
                 * same-host redirect and reads the metadata from this answer */
                char etag[80];
                snprintf(etag, sizeof etag, "\"%s\"", sha);
                return send_content(s, c, &s->repos[i].f[k], head, etag, s->repos[i].commit);
            }
    return send_text(c, 404, "text/plain", "NoSuchKey", NULL, NULL, NULL);
}

static enum MHD_Result modelscope(hubsrv *s, struct MHD_Connection *c, const char *p, int head) {
    char id[256];
    const char *rest;
    hrepo *r = split_repo(s, p, &rest, id, sizeof id);
    if (!r) return send_text(c, 404, "application/json", "{\"Code\":10010205001,\"Message\":\"model not found\",\"Success\":false}", NULL, NULL, NULL);
    const char *rev = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "Revision");
    if (!rev || !rev_ok(r, rev, "master"))
        return send_text(c, 404, "application/json", "{\"Code\":10010205001,\"Message\":\"revision not found\",\"Success\":false}", NULL, NULL, NULL);
    if (!strcmp(rest, "repo/files")) {
        pthread_mutex_lock(&s->mu);
        s->st.api_calls++;
        pthread_mutex_unlock(&s->mu);
        size_t cap = 4096 + (size_t)r->n * 1500, o = 0;
        char *j = malloc(cap);
        if (!j) return MHD_NO;
        o += (size_t)snprintf(j + o, cap - o, "{\"Code\":200,\"Success\":true,\"Message\":\"success\",\"Data\":{\"Files\":[");
        /* a "tree" entry for each folder, like the real listing */
        int first = 1;
        for (int i = 0; i < r->n; i++) {
            const char *sl = strrchr(r->f[i].path, '/');
            if (sl) {
                int dup = 0;
                for (int k = 0; k < i && !dup; k++) {
                    const char *s2 = strrchr(r->f[k].path, '/');
                    dup = s2 && s2 - r->f[k].path == sl - r->f[i].path && !strncmp(r->f[k].path, r->f[i].path, (size_t)(sl - r->f[i].path));
                }
                if (!dup) {
                    o += (size_t)snprintf(j + o, cap - o, "%s{\"Name\":\"%.*s\",\"Path\":\"%.*s\",\"Type\":\"tree\",\"Size\":0,\"Sha256\":\"\",\"Revision\":\"%s\"}",
                                          first ? "" : ",", (int)(sl - r->f[i].path), r->f[i].path, (int)(sl - r->f[i].path), r->f[i].path, r->commit);
                    first = 0;
                }
            }
            const char *name = sl ? sl + 1 : r->f[i].path;
            o += (size_t)snprintf(j + o, cap - o,
                                  "%s{\"Name\":\"%s\",\"Path\":\"%s\",\"Type\":\"blob\",\"Size\":%zu,\"Sha256\":\"%s\","
                                  "\"Revision\":\"%s\",\"IsLFS\":%s}",
                                  first ? "" : ",", name, r->f[i].path, r->f[i].size, r->f[i].sha256, r->commit,
                                  r->f[i].lfs ? "true" : "false");
            first = 0;
        }
        snprintf(j + o, cap - o, "]}}");
        enum MHD_Result ret = send_text(c, 200, "application/json", j, NULL, NULL, NULL);
        free(j);
        return ret;
    }
    if (!strcmp(rest, "repo")) {
        const char *fp = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "FilePath");
        hfile *f = fp ? find_file(r, fp) : NULL;
        if (!f) return send_text(c, 404, "application/json", "{\"Code\":404,\"Message\":\"file not found\",\"Success\":false}", NULL, NULL, NULL);
        return send_content(s, c, f, head, NULL, NULL);
    }
    return send_text(c, 404, "text/plain", "not found", NULL, NULL, NULL);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version, (void)upload, (void)upload_size, (void)con_cls;
    hubsrv *s = cls;
    int head = !strcmp(method, "HEAD");
    if (!head && strcmp(method, "GET")) return send_text(c, 405, "text/plain", "method not allowed", NULL, NULL, NULL);
    if (!strncmp(url, "/api/v1/models/", 15)) return modelscope(s, c, url + 15, head);
    if (!strncmp(url, "/api/models/", 12)) {
        pthread_mutex_lock(&s->mu);
        s->st.api_calls++;
        pthread_mutex_unlock(&s->mu);
        return hf_api(s, c, url + 12);
    }
    if (!strncmp(url, "/cdn-lfs/", 9)) return cdn(s, c, url + 9, head);
    if (strstr(url, "/resolve/")) return hf_resolve(s, c, url + 1, head);
    return send_text(c, 404, "text/plain", "not found", NULL, NULL, NULL);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

hubsrv *hubsrv_start(void) {
    hubsrv *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    s->st.last_range_start = -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = 0; /* a free port */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, handler, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)20,
                            MHD_OPTION_END);
    if (!s->d) {
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    if (!di || !di->port) {
        MHD_stop_daemon(s->d);
        free(s);
        return NULL;
    }
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%u", (unsigned)di->port);
    return s;
}

void hubsrv_stop(hubsrv *s) {
    if (!s) return;
    MHD_stop_daemon(s->d);
    for (int i = 0; i < s->nrepos; i++) {
        for (int k = 0; k < s->repos[i].n; k++) free(s->repos[i].f[k].path), free(s->repos[i].f[k].data);
        for (int k = 0; k < s->repos[i].nextra; k++) free(s->repos[i].extra[k]);
        free(s->repos[i].f);
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const char *hubsrv_url(const hubsrv *s) { return s->url; }

void hubsrv_set_token(hubsrv *s, const char *token) {
    pthread_mutex_lock(&s->mu);
    snprintf(s->token, sizeof s->token, "%s", token ? token : "");
    pthread_mutex_unlock(&s->mu);
}

void hubsrv_drop_after(hubsrv *s, const char *suffix, int64_t offset, int times) {
    pthread_mutex_lock(&s->mu);
    snprintf(s->drop_suffix, sizeof s->drop_suffix, "%s", suffix);
    s->drop_at = offset;
    s->drop_times = times;
    pthread_mutex_unlock(&s->mu);
}

void hubsrv_corrupt(hubsrv *s, const char *suffix, int64_t offset, int times) {
    pthread_mutex_lock(&s->mu);
    snprintf(s->corrupt_suffix, sizeof s->corrupt_suffix, "%s", suffix);
    s->corrupt_at = offset;
    s->corrupt_times = times;
    pthread_mutex_unlock(&s->mu);
}

void hubsrv_ignore_range(hubsrv *s, int on) {
    pthread_mutex_lock(&s->mu);
    s->ignore_range = on;
    pthread_mutex_unlock(&s->mu);
}

void hubsrv_set_delay(hubsrv *s, int ms) {
    pthread_mutex_lock(&s->mu);
    s->delay_ms = ms;
    pthread_mutex_unlock(&s->mu);
}

void hubsrv_list_extra(hubsrv *s, const char *repo_id, const char *name) {
    pthread_mutex_lock(&s->mu);
    hrepo *r = find_repo(s, repo_id, strlen(repo_id));
    if (r && r->nextra < 8) r->extra[r->nextra++] = strdup(name);
    pthread_mutex_unlock(&s->mu);
}

void hubsrv_override_etag(hubsrv *s, const char *suffix, const char *value) {
    pthread_mutex_lock(&s->mu);
    snprintf(s->etag_suffix, sizeof s->etag_suffix, "%s", suffix ? suffix : "");
    snprintf(s->etag_value, sizeof s->etag_value, "%s", value ? value : "");
    pthread_mutex_unlock(&s->mu);
}

void hubsrv_get_stats(hubsrv *s, hubsrv_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

void hubsrv_reset_stats(hubsrv *s) {
    pthread_mutex_lock(&s->mu);
    memset(&s->st, 0, sizeof s->st);
    s->st.last_range_start = -1;
    pthread_mutex_unlock(&s->mu);
}
