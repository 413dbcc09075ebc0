/* hub_http.c - the HTTP side of `zimage pull`, on libcurl (easy interface,
 * one handle per worker thread so connections are reused).
 *
 * Mirrors huggingface_hub's transport rules (utils/_http.py,
 * file_download.py @ huggingface_hub 1.33):
 *   - HEAD .../resolve/... is sent with Accept-Encoding: identity and
 *     without following redirects (get_hf_file_metadata /
 *     _httpx_follow_hub_redirects_with_backoff); the caller follows
 *     same-host redirects that carry no file metadata itself.
 *   - Downloads follow redirects; the token ("Authorization: Bearer") goes
 *     only to the endpoint's host or a huggingface.co host - curl drops
 *     custom Authorization headers when a redirect changes host.
 *   - A GET that asked for a Range and got 200 restarts the file from zero
 *     (http_get: "the server ignored our Range header").
 *   - Stall timeout: less than 1 byte/s for HF_HUB_DOWNLOAD_TIMEOUT seconds
 *     (default 10) aborts the transfer, which the caller then resumes.
 * Errors are turned into messages that say what to do (zhttp_fail), after
 * hf_raise_for_status's X-Error-Code cases (GatedRepo, RepoNotFound,
 * RevisionNotFound, EntryNotFound).  The token is never logged.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "hub_internal.h"
#include "zimage.h"

struct zhttp {
    CURL *c;
    char token[1024];
    char auth_host[256];
    int timeout_s;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_init_rc;
static void global_init(void) { g_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1; }

zhttp *zhttp_new(const char *token, const char *auth_host, int timeout_s) {
    pthread_once(&g_once, global_init);
    if (g_init_rc) return NULL;
    zhttp *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->c = curl_easy_init();
    if (!h->c) {
        free(h);
        return NULL;
    }
    zfmt(h->token, sizeof h->token, "%s", token ? token : "");
    zfmt(h->auth_host, sizeof h->auth_host, "%s", auth_host ? auth_host : "");
    h->timeout_s = timeout_s > 0 ? timeout_s : 10;
    return h;
}

void zhttp_free(zhttp *h) {
    if (!h) return;
    curl_easy_cleanup(h->c);
    /* wipe the token copy */
    volatile char *t = h->token;
    for (size_t i = 0; i < sizeof h->token; i++) t[i] = 0;
    free(h);
}

/* ---- URL helpers ---------------------------------------------------------- */

int zhttp_quote(const char *s, const char *safe, char *out, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int keep = isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~' || (safe && strchr(safe, *p));
        if (keep) {
            if (o + 1 >= n) return -1;
            out[o++] = (char)*p;
        } else {
            if (o + 3 >= n) return -1;
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (o >= n) return -1;
    out[o] = 0;
    return 0;
}

void zhttp_host(const char *url, char *out, size_t n) {
    out[0] = 0;
    CURLU *u = curl_url();
    if (!u) return;
    char *host = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK && curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        zfmt(out, n, "%s", host);
        for (char *p = out; *p; p++) *p = (char)tolower((unsigned char)*p);
    }
    curl_free(host);
    curl_url_cleanup(u);
}

void zhttp_join(const char *base, const char *loc, char *out, size_t n) {
    zfmt(out, n, "%s", loc);
    CURLU *u = curl_url();
    if (!u) return;
    char *full = NULL;
    if (curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
        curl_url_set(u, CURLUPART_URL, loc, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_URL, &full, 0) == CURLUE_OK)
        zfmt(out, n, "%s", full);
    curl_free(full);
    curl_url_cleanup(u);
}

static int token_allowed(const zhttp *h, const char *url) {
    if (!h->token[0]) return 0;
    char host[256];
    zhttp_host(url, host, sizeof host);
    if (!host[0]) return 0;
    if (h->auth_host[0] && !strcmp(host, h->auth_host)) return 1;
    /* constants.HF_URL_HOSTS: the Hub's own hosts keep the token */
    return !strcmp(host, "huggingface.co") || !strcmp(host, "hf.co");
}

/* ---- headers --------------------------------------------------------------- */

static void resp_reset(zhttp_resp *r) {
    memset(r, 0, sizeof *r);
    r->content_length = -1;
    r->linked_size = -1;
    r->range_start = -1;
}

static void copy_val(char *dst, size_t n, const char *v, size_t len) {
    while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
    while (len && (*v == ' ' || *v == '\t')) v++, len--;
    if (len >= n) len = n - 1;
    for (size_t i = 0; i < len; i++) dst[i] = (v[i] >= 32 && v[i] < 127) ? v[i] : '?';
    dst[len] = 0;
}

static size_t on_header(char *buf, size_t sz, size_t nm, void *user) {
    zhttp_resp *r = user;
    size_t len = sz * nm;
    if (len >= 5 && !strncmp(buf, "HTTP/", 5)) { /* a new response (redirect chain) */
        char url[sizeof r->url];
        memcpy(url, r->url, sizeof url);
        resp_reset(r);
        memcpy(r->url, url, sizeof url);
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon) return len;
    size_t kl = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vl = len - kl - 1;
    char tmp[64];
#define IS(name) (kl == strlen(name) && !strncasecmp(buf, name, kl))
    if (IS("etag"))
        copy_val(r->etag, sizeof r->etag, v, vl);
    else if (IS("x-linked-etag"))
        copy_val(r->linked_etag, sizeof r->linked_etag, v, vl);
    else if (IS("x-repo-commit"))
        copy_val(r->commit, sizeof r->commit, v, vl);
    else if (IS("location"))
        copy_val(r->location, sizeof r->location, v, vl);
    else if (IS("x-error-code"))
        copy_val(r->error_code, sizeof r->error_code, v, vl);
    else if (IS("x-error-message"))
        copy_val(r->error_msg, sizeof r->error_msg, v, vl);
    else if (IS("content-encoding"))
        copy_val(r->content_encoding, sizeof r->content_encoding, v, vl);
    else if (IS("content-length")) {
        copy_val(tmp, sizeof tmp, v, vl);
        char *end;
        long long x = strtoll(tmp, &end, 10);
        if (end != tmp && !*end && x >= 0) r->content_length = x;
    } else if (IS("x-linked-size")) {
        copy_val(tmp, sizeof tmp, v, vl);
        char *end;
        long long x = strtoll(tmp, &end, 10);
        if (end != tmp && !*end && x >= 0) r->linked_size = x;
    } else if (IS("content-range")) { /* "bytes START-END/TOTAL" */
        copy_val(tmp, sizeof tmp, v, vl);
        long long a;
        if (sscanf(tmp, "bytes %lld-", &a) == 1 && a >= 0) r->range_start = a;
    }
#undef IS
    return len;
}

/* Options every request shares. */
static struct curl_slist *setup(zhttp *h, const char *url, zhttp_resp *r, const char *range) {
    CURL *c = h->c;
    curl_easy_reset(c);
    resp_reset(r);
    zfmt(r->url, sizeof r->url, "%s", url);
    h->errbuf[0] = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "zimage/" ZIMAGE_VERSION " (libcurl)");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)h->timeout_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)h->timeout_s);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    struct curl_slist *hl = NULL;
    hl = curl_slist_append(hl, "Accept-Encoding: identity");
    if (token_allowed(h, url)) {
        char auth[1100];
        zfmt(auth, sizeof auth, "Authorization: Bearer %s", h->token);
        hl = curl_slist_append(hl, auth);
        volatile char *a = auth;
        for (size_t i = 0; i < sizeof auth; i++) a[i] = 0;
    }
    if (range) hl = curl_slist_append(hl, range);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    return hl;
}

static int finish(zhttp *h, CURLcode rc, zhttp_resp *r, zerr *e) {
    long st = 0;
    curl_easy_getinfo(h->c, CURLINFO_RESPONSE_CODE, &st);
    r->status = st;
    r->curl_code = (int)rc;
    if (rc == CURLE_OK) return ZE_OK;
    char host[256];
    zhttp_host(r->url, host, sizeof host);
    return zerr_set(e, ZE_NETWORK, "%s: %s", host[0] ? host : r->url, h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
}

int zhttp_head(zhttp *h, const char *url, zhttp_resp *r, zerr *e) {
    struct curl_slist *hl = setup(h, url, r, NULL);
    curl_easy_setopt(h->c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h->c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h->c, CURLOPT_TIMEOUT, (long)(3 * h->timeout_s));
    CURLcode rc = curl_easy_perform(h->c);
    curl_slist_free_all(hl);
    return finish(h, rc, r, e);
}

typedef struct {
    char *buf;
    size_t len, cap, max;
    int over;
} membuf;

static size_t on_mem(char *p, size_t sz, size_t nm, void *user) {
    membuf *m = user;
    size_t n = sz * nm;
    if (m->len + n > m->max) {
        m->over = 1;
        return 0;
    }
    if (m->len + n + 1 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 16384;
        while (nc < m->len + n + 1) nc *= 2;
        char *nb = realloc(m->buf, nc);
        if (!nb) return 0;
        m->buf = nb;
        m->cap = nc;
    }
    memcpy(m->buf + m->len, p, n);
    m->len += n;
    m->buf[m->len] = 0;
    return n;
}

int zhttp_get_mem(zhttp *h, const char *url, size_t max, char **body, size_t *len, zhttp_resp *r, zerr *e) {
    *body = NULL;
    if (len) *len = 0;
    membuf m = {0};
    m.max = max;
    struct curl_slist *hl = setup(h, url, r, NULL);
    curl_easy_setopt(h->c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h->c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h->c, CURLOPT_TIMEOUT, (long)(6 * h->timeout_s));
    curl_easy_setopt(h->c, CURLOPT_WRITEFUNCTION, on_mem);
    curl_easy_setopt(h->c, CURLOPT_WRITEDATA, &m);
    CURLcode rc = curl_easy_perform(h->c);
    curl_slist_free_all(hl);
    int st = finish(h, rc, r, e);
    if (m.over) {
        free(m.buf);
        return zerr_set(e, ZE_FORMAT, "response from %s is larger than %zu bytes", url, max);
    }
    if (st) {
        free(m.buf);
        return st;
    }
    if (!m.buf) m.buf = calloc(1, 1);
    if (!m.buf) return zerr_set(e, ZE_NOMEM, "out of memory");
    *body = m.buf;
    if (len) *len = m.len;
    return ZE_OK;
}

/* ---- streaming download ------------------------------------------------------ */

typedef struct {
    zhttp *h;
    zhttp_sink *s;
    zhttp_resp *r;
    int cancelled;
    size_t errbody;
} fdctx;

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static size_t on_fd(char *p, size_t sz, size_t nm, void *user) {
    fdctx *x = user;
    zhttp_sink *s = x->s;
    size_t n = sz * nm;
    if (!s->started) {
        s->started = 1;
        long st = 0;
        curl_easy_getinfo(x->h->c, CURLINFO_RESPONSE_CODE, &st);
        if (st == 206) {
            if (x->r->range_start != s->offset) { /* not the bytes we asked for */
                s->bad_status = 1;
                return 0;
            }
        } else if (st == 200) {
            if (s->offset > 0) { /* Range ignored: start the file over */
                if (ftruncate(s->fd, 0) || lseek(s->fd, 0, SEEK_SET) < 0) {
                    s->werr = errno;
                    return 0;
                }
                if (s->sha) zsha256_init(s->sha);
                s->offset = 0;
                s->restarted = 1;
            }
        } else {
            s->bad_status = 1;
        }
    }
    if (s->bad_status) { /* swallow a small error body, then give up */
        x->errbody += n;
        return x->errbody > 65536 ? 0 : n;
    }
    if (write_all(s->fd, p, n)) {
        s->werr = errno ? errno : EIO;
        return 0;
    }
    if (s->sha) zsha256_update(s->sha, p, n);
    s->received += (int64_t)n;
    if (s->on_data && s->on_data(s->user, n)) {
        x->cancelled = 1;
        return 0;
    }
    return n;
}

static int on_xfer(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    fdctx *x = user;
    if (x->s->on_data && x->s->on_data(x->s->user, 0)) {
        x->cancelled = 1;
        return 1;
    }
    return 0;
}

int zhttp_get_to_fd(zhttp *h, const char *url, zhttp_sink *s, zhttp_resp *r, zerr *e) {
    char range[64] = "";
    if (s->offset > 0) zfmt(range, sizeof range, "Range: bytes=%" PRId64 "-", s->offset);
    if (lseek(s->fd, s->offset, SEEK_SET) < 0) return zerr_set(e, ZE_IO, "seek: %s", strerror(errno));
    s->started = s->bad_status = s->werr = 0;
    s->restarted = 0;
    s->received = 0;
    fdctx x = {h, s, r, 0, 0};
    struct curl_slist *hl = setup(h, url, r, range[0] ? range : NULL);
    curl_easy_setopt(h->c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h->c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h->c, CURLOPT_WRITEFUNCTION, on_fd);
    curl_easy_setopt(h->c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h->c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h->c, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(h->c, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(h->c, CURLOPT_BUFFERSIZE, 256L * 1024);
    CURLcode rc = curl_easy_perform(h->c);
    curl_slist_free_all(hl);
    long st = 0;
    curl_easy_getinfo(h->c, CURLINFO_RESPONSE_CODE, &st);
    r->status = st;
    r->curl_code = (int)rc;
    if (x.cancelled) return zerr_set(e, ZE_CANCELLED, "cancelled");
    if (s->werr) return zerr_set(e, ZE_IO, "cannot write the download: %s", strerror(s->werr));
    if (s->bad_status || (rc == CURLE_OK && st != 200 && st != 206)) {
        if (st == 206) return zerr_set(e, ZE_NETWORK, "%s: the server sent a different byte range than asked", url);
        r->curl_code = 0; /* an answer, not a dropped connection */
        return zerr_set(e, ZE_NETWORK, "HTTP %ld", st);
    }
    if (rc != CURLE_OK) return finish(h, rc, r, e);
    return ZE_OK;
}

int zhttp_retryable(int code) {
    switch (code) {
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_COULDNT_CONNECT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    default: return 0;
    }
}

/* ---- error messages ------------------------------------------------------------ */

int zhttp_fail(zerr *e, const zhttp_resp *r, const char *what, const char *repo, const char *endpoint,
               int have_token) {
    const char *xc = r->error_code;
    char extra[300] = "";
    if (r->error_msg[0]) zfmt(extra, sizeof extra, " (server: %s)", r->error_msg);
    long st = r->status;
    if (st == 0) {
        char host[256];
        zhttp_host(r->url, host, sizeof host);
        return zerr_set(e, ZE_NETWORK,
                        "%s: cannot reach %s: %s. Check the connection, set HF_ENDPOINT to use a mirror, or "
                        "HF_HUB_OFFLINE=1 to use only what is in the cache",
                        what, host[0] ? host : endpoint, curl_easy_strerror((CURLcode)r->curl_code));
    }
    if (!strcmp(xc, "GatedRepo")) {
        if (have_token)
            return zerr_set(e, ZE_NETWORK,
                            "%s: %s is a gated model and the token in HF_TOKEN has no access to it: accept its "
                            "conditions at %s/%s with that account%s",
                            what, repo, endpoint, repo, extra);
        return zerr_set(e, ZE_NETWORK,
                        "%s: %s is a gated model (HTTP %ld): accept its conditions at %s/%s, then set HF_TOKEN to "
                        "an access token of that account (created at %s/settings/tokens)%s",
                        what, repo, st, endpoint, repo, endpoint, extra);
    }
    if (!strcmp(xc, "RevisionNotFound"))
        return zerr_set(e, ZE_NETWORK, "%s: revision not found in %s%s", what, repo, extra);
    if (!strcmp(xc, "EntryNotFound")) return zerr_set(e, ZE_NETWORK, "%s: file not found in %s%s", what, repo, extra);
    if (st == 401 || st == 403 || !strcmp(xc, "RepoNotFound")) {
        if (have_token)
            return zerr_set(e, ZE_NETWORK,
                            "%s: %s refused access to %s (HTTP %ld) although HF_TOKEN was sent: check that the "
                            "repository exists and that the token can read it%s",
                            what, endpoint, repo, st, extra);
        return zerr_set(e, ZE_NETWORK,
                        "%s: %s refused access to %s (HTTP %ld): the repository does not exist, or it is private "
                        "or gated; for a private or gated model set HF_TOKEN to an access token (%s/settings/tokens)%s",
                        what, endpoint, repo, st, endpoint, extra);
    }
    if (st == 404) return zerr_set(e, ZE_NETWORK, "%s: not found on %s (HTTP 404)%s", what, endpoint, extra);
    if (st == 429) return zerr_set(e, ZE_NETWORK, "%s: rate limited by %s (HTTP 429), try again later%s", what, endpoint, extra);
    return zerr_set(e, ZE_NETWORK, "%s: HTTP %ld from %s%s", what, st, endpoint, extra);
}
