/* hub_ms.c - ModelScope as the second source (`zimage pull --source
 * modelscope`, `-m modelscope:ORG/NAME`).
 *
 * Mirrors the modelscope Python client (modelscope/hub, 1.2x-1.3x:
 * api.py HubApi.get_model_files, file_download.py get_file_download_url /
 * http_get_model_file, snapshot_download.py, utils/caching.py
 * ModelFileSystemCache, utils/file_utils.py get_model_cache_root):
 *   list   GET {ep}/api/v1/models/{ORG/NAME}/repo/files?Revision={rev}&Recursive=True
 *          -> {"Code":200,"Data":{"Files":[{"Path","Type":"blob"|"tree","Size",
 *             "Sha256","Revision"},...]}}
 *   file   GET {ep}/api/v1/models/{ORG/NAME}/repo?Revision={rev}&FilePath={path}
 *          (quote_plus of rev and path), Range for resume
 *   cache  $MODELSCOPE_CACHE (else ~/.cache/modelscope/hub)
 *            models/ORG/NAME'/<path>       NAME' = NAME with '.' -> "___"
 *            models/ORG/NAME'/.msc         pickle: [{'Path': p, 'Revision': r}, ...]
 *            models/ORG/NAME'/.mdl         pickle: {'id': 'ORG/NAME''}
 *            models/._____temp/ORG/NAME/   partial downloads
 *            .lock/ORG___NAME              flock for the whole pull
 *   endpoint $MODELSCOPE_ENDPOINT, else $MODELSCOPE_DOMAIN (a host, "https://"
 *          prepended, or a full http(s) URL), else https://www.modelscope.cn.
 * modelscope >= 1.38 (the modelscope_hub package) stores new downloads in
 * <base>/models/ORG--NAME/snapshots/<branch>/ but reuses a non-empty legacy
 * folder as above (and checks size + sha256 of each file there, no .msc);
 * zimage writes the legacy layout, which both generations find, and reads
 * both.
 * Each file is verified against its Sha256.  A file counts as cached when
 * it has the listed size and .msc records its Path with the same Revision
 * (as ModelFileSystemCache.exists does), or, without a record, when its
 * sha256 matches.  ModelScope keeps one version per file (no snapshots), so
 * the revision is not part of the folder name.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/log.h"
#include "hub_internal.h"

void zhub_ms_model_dir(const char *root, const char *repo, char *out, size_t n) {
    char org[128] = "damo", name[256]; /* DEFAULT_MODELSCOPE_GROUP for a bare name */
    const char *slash = strchr(repo, '/');
    if (slash) {
        zfmt(org, sizeof org, "%.*s", (int)(slash - repo), repo);
        repo = slash + 1;
    }
    size_t o = 0;
    for (const char *p = repo; *p && o + 4 < sizeof name; p++) {
        if (*p == '.') {
            memcpy(name + o, "___", 3);
            o += 3;
        } else
            name[o++] = *p;
    }
    name[o] = 0;
    zfmt(out, n, "%s/models/%s/%s", root, org, name);
}

/* ---- a minimal pickle reader / writer for .msc and .mdl ---------------------------- */

typedef struct {
    char *path, *rev;
} msc_entry;

typedef struct {
    msc_entry *v;
    int n, cap;
} msc_list;

static void msc_free(msc_list *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i].path), free(l->v[i].rev);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int msc_put(msc_list *l, const char *path, size_t pl, const char *rev, size_t rl) {
    for (int i = 0; i < l->n; i++)
        if (strlen(l->v[i].path) == pl && !memcmp(l->v[i].path, path, pl)) { /* replace */
            char *r = strndup(rev, rl);
            if (!r) return -1;
            free(l->v[i].rev);
            l->v[i].rev = r;
            return 0;
        }
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 16;
        msc_entry *nv = realloc(l->v, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n].path = strndup(path, pl);
    l->v[l->n].rev = strndup(rev, rl);
    if (!l->v[l->n].path || !l->v[l->n].rev) return -1;
    l->n++;
    return 0;
}

/* Objects of the pickle machine: strings, dicts (of string pairs), lists,
 * marks, and "other" (numbers, None) that are kept only as placeholders. */
enum { PO_STR, PO_DICT, PO_LIST, PO_MARK, PO_OTHER };
typedef struct {
    int t;
    const char *s;
    size_t sl;
    int *it;
    int n, cap;
} pobj;

typedef struct {
    pobj *o;
    int no, co;
    int *st;
    int ns, cs;
    int *memo;
    int nm;
} pvm;

static int p_new(pvm *m, int t) {
    if (m->no == m->co) {
        int nc = m->co ? 2 * m->co : 64;
        pobj *no = realloc(m->o, (size_t)nc * sizeof *no);
        if (!no) return -1;
        m->o = no;
        m->co = nc;
    }
    memset(&m->o[m->no], 0, sizeof m->o[0]);
    m->o[m->no].t = t;
    return m->no++;
}
static int p_push(pvm *m, int x) {
    if (x < 0) return -1;
    if (m->ns == m->cs) {
        int nc = m->cs ? 2 * m->cs : 64;
        int *ns = realloc(m->st, (size_t)nc * sizeof *ns);
        if (!ns) return -1;
        m->st = ns;
        m->cs = nc;
    }
    m->st[m->ns++] = x;
    return 0;
}
static int p_add(pobj *o, int x) {
    if (o->n == o->cap) {
        int nc = o->cap ? 2 * o->cap : 8;
        int *ni = realloc(o->it, (size_t)nc * sizeof *ni);
        if (!ni) return -1;
        o->it = ni;
        o->cap = nc;
    }
    o->it[o->n++] = x;
    return 0;
}
static int p_mark(pvm *m) {
    for (int i = m->ns - 1; i >= 0; i--)
        if (m->o[m->st[i]].t == PO_MARK) return i;
    return -1;
}
static int p_memo(pvm *m, uint32_t k, int x) {
    if (k > 1000000) return -1;
    if ((int)k >= m->nm) {
        int nn = (int)k + 64;
        int *nm = realloc(m->memo, (size_t)nn * sizeof *nm);
        if (!nm) return -1;
        for (int i = m->nm; i < nn; i++) nm[i] = -1;
        m->memo = nm;
        m->nm = nn;
    }
    m->memo[k] = x;
    return 0;
}

static uint64_t rd_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Parse a .msc pickle into l.  Returns 0, or -1 if it is not a list of
 * {'Path': str, 'Revision': str} dicts we understand. */
static int msc_parse(const unsigned char *b, size_t n, msc_list *l) {
    pvm m = {0};
    size_t i = 0;
    int rc = -1, top = -1, memo_n = 0;
    while (i < n) {
        unsigned char op = b[i++];
        int x = 0;
#define NEED(k) if (i + (k) > n) goto out
        switch (op) {
        case 0x80: NEED(1); i++; break;            /* PROTO */
        case 0x95: NEED(8); i += 8; break;         /* FRAME */
        case ']': x = p_push(&m, p_new(&m, PO_LIST)); break;
        case '}': x = p_push(&m, p_new(&m, PO_DICT)); break;
        case '(': x = p_push(&m, p_new(&m, PO_MARK)); break;
        case 'N': case 0x88: case 0x89: x = p_push(&m, p_new(&m, PO_OTHER)); break;
        case 'K': NEED(1); i += 1; x = p_push(&m, p_new(&m, PO_OTHER)); break;
        case 'M': NEED(2); i += 2; x = p_push(&m, p_new(&m, PO_OTHER)); break;
        case 'J': NEED(4); i += 4; x = p_push(&m, p_new(&m, PO_OTHER)); break;
        case 0x8c: case 'X': case 0x8d: {          /* SHORT_BINUNICODE / BINUNICODE / BINUNICODE8 */
            int w = op == 0x8c ? 1 : op == 'X' ? 4 : 8;
            NEED((size_t)w);
            uint64_t len = rd_le(b + i, w);
            i += (size_t)w;
            if (len > n - i) goto out;
            int s = p_new(&m, PO_STR);
            if (s < 0) goto out;
            m.o[s].s = (const char *)b + i;
            m.o[s].sl = (size_t)len;
            i += (size_t)len;
            x = p_push(&m, s);
            break;
        }
        case 0x94: if (!m.ns) goto out; x = p_memo(&m, (uint32_t)memo_n++, m.st[m.ns - 1]); break; /* MEMOIZE */
        case 'q': NEED(1); if (!m.ns) goto out; x = p_memo(&m, b[i], m.st[m.ns - 1]); i += 1; break;
        case 'r': NEED(4); if (!m.ns) goto out; x = p_memo(&m, (uint32_t)rd_le(b + i, 4), m.st[m.ns - 1]); i += 4; break;
        case 'h': case 'j': {                      /* BINGET / LONG_BINGET */
            int w = op == 'h' ? 1 : 4;
            NEED((size_t)w);
            uint32_t k = (uint32_t)rd_le(b + i, w);
            i += (size_t)w;
            if ((int)k >= m.nm || m.memo[k] < 0) goto out;
            x = p_push(&m, m.memo[k]);
            break;
        }
        case 's': case 'u': case 'a': case 'e': {  /* SETITEM(S) / APPEND(S) */
            int from;
            if (op == 's') from = m.ns - 2;
            else if (op == 'a') from = m.ns - 1;
            else from = p_mark(&m) + 1;
            if (from < 1) goto out;
            int target = m.st[from - 1 - ((op == 'u' || op == 'e') ? 1 : 0)];
            pobj *t = &m.o[target];
            if ((op == 's' || op == 'u') ? t->t != PO_DICT : t->t != PO_LIST) goto out;
            for (int k = from; k < m.ns; k++)
                if (p_add(&m.o[target], m.st[k])) goto out;
            m.ns = (op == 'u' || op == 'e') ? from - 1 : from;
            break;
        }
        case '.': top = m.ns ? m.st[m.ns - 1] : -1; goto done;
        default: goto out;                          /* an opcode we do not expect in .msc */
        }
#undef NEED
        if (x) goto out;
    }
done:
    if (top < 0 || m.o[top].t != PO_LIST) goto out;
    for (int k = 0; k < m.o[top].n; k++) {
        pobj *d = &m.o[m.o[top].it[k]];
        if (d->t != PO_DICT) goto out;
        const pobj *path = NULL, *rev = NULL;
        for (int q = 0; q + 1 < d->n; q += 2) {
            const pobj *kk = &m.o[d->it[q]], *vv = &m.o[d->it[q + 1]];
            if (kk->t != PO_STR || vv->t != PO_STR) continue;
            if (kk->sl == 4 && !memcmp(kk->s, "Path", 4)) path = vv;
            if (kk->sl == 8 && !memcmp(kk->s, "Revision", 8)) rev = vv;
        }
        if (path && rev && msc_put(l, path->s, path->sl, rev->s, rev->sl)) goto out;
    }
    rc = 0;
out:
    for (int k = 0; k < m.no; k++) free(m.o[k].it);
    free(m.o);
    free(m.st);
    free(m.memo);
    return rc;
}

static void msc_load(const char *dir, msc_list *l) {
    char p[ZHUB_PATH_MAX + 8];
    zfmt(p, sizeof p, "%s/.msc", dir);
    FILE *f = fopen(p, "rb");
    if (!f) return;
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 65536;
            if (cap > (64u << 20)) break;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        if (!k) break;
        n += k;
    }
    fclose(f);
    if (buf && msc_parse(buf, n, l)) msc_free(l); /* unreadable: treat as empty */
    free(buf);
}

static void put_str(FILE *f, const char *s) {
    uint32_t l = (uint32_t)strlen(s);
    unsigned char hdr[5] = {'X', (unsigned char)l, (unsigned char)(l >> 8), (unsigned char)(l >> 16),
                            (unsigned char)(l >> 24)};
    fwrite(hdr, 1, 5, f);
    fwrite(s, 1, l, f);
}

/* Protocol 2, no memo: what pickle.load reads back as a list of dicts. */
static int write_pickle_file(const char *dir, const char *name, const msc_list *l, const char *model_id, zerr *e) {
    char p[ZHUB_PATH_MAX + 16], tmp[ZHUB_PATH_MAX + 32];
    zfmt(p, sizeof p, "%s/%s", dir, name);
    zfmt(tmp, sizeof tmp, "%s.zimage.tmp", p);
    FILE *f = fopen(tmp, "wb");
    if (!f) return zerr_set(e, ZE_IO, "cannot write %s: %s", tmp, strerror(errno));
    fwrite("\x80\x02", 1, 2, f);
    if (l) {
        fputc(']', f);
        fputc('(', f);
        for (int i = 0; i < l->n; i++) {
            fputc('}', f);
            fputc('(', f);
            put_str(f, "Path");
            put_str(f, l->v[i].path);
            put_str(f, "Revision");
            put_str(f, l->v[i].rev);
            fputc('u', f);
        }
        fputc('e', f);
    } else {
        fputc('}', f);
        put_str(f, "id");
        put_str(f, model_id);
        fputc('s', f);
    }
    fputc('.', f);
    if (fclose(f) || rename(tmp, p)) {
        unlink(tmp);
        return zerr_set(e, ZE_IO, "cannot write %s", p);
    }
    return ZE_OK;
}

/* ---- pull -------------------------------------------------------------------------------- */

/* A complete model in either ModelScope layout:
 *   legacy (modelscope <= 1.37, and what zimage writes; newer SDKs reuse it):
 *     <root>/models/ORG/NAME'            root = cache_dir, $MODELSCOPE_CACHE or ~/.cache/modelscope/hub
 *   modelscope >= 1.38 (modelscope_hub):
 *     <base>/models/ORG--NAME/snapshots/<revision>
 *                                        base = cache_dir, $MODELSCOPE_CACHE or ~/.cache/modelscope */
int zhub_ms_find_cached(const zhub_opts *o, const char *repo, const char *rev, char *dir, size_t n, zerr *e) {
    zhub_opts oo = *o;
    oo.source = ZHUB_MODELSCOPE;
    char root[ZHUB_PATH_MAX], md[ZHUB_PATH_MAX + 512];
    ZTRY(zhub_cache_root(&oo, root, sizeof root, e));
    zhub_ms_model_dir(root, repo, md, sizeof md);
    struct stat st;
    zerr why = {0};
    if (stat(md, &st) == 0 && S_ISDIR(st.st_mode) && zhub_check_model_dir(md, &why) == ZE_OK) {
        zfmt(dir, n, "%s", md);
        return ZE_OK;
    }
    char base[ZHUB_PATH_MAX], raw[ZHUB_PATH_MAX], flat[256];
    const char *env = getenv("MODELSCOPE_CACHE");
    zfmt(raw, sizeof raw, "%s", o->cache_dir && *o->cache_dir ? o->cache_dir : env && *env ? env : "~/.cache/modelscope");
    zhub_expand(raw, base, sizeof base);
    size_t k = 0;
    for (const char *p = repo; *p && k + 3 < sizeof flat; p++) {
        if (*p == '/') flat[k++] = '-', flat[k++] = '-';
        else flat[k++] = *p;
    }
    flat[k] = 0;
    char nd[ZHUB_PATH_MAX * 2];
    zfmt(nd, sizeof nd, "%s/models/%s/snapshots/%s", base, flat, rev && *rev ? rev : "master");
    zerr why2 = {0};
    if (stat(nd, &st) == 0 && S_ISDIR(st.st_mode) && zhub_check_model_dir(nd, &why2) == ZE_OK) {
        zfmt(dir, n, "%s", nd);
        return ZE_OK;
    }
    if (why.code) return zerr_set(e, ZE_IO, "%s in the ModelScope cache is incomplete: %s", repo, why.msg);
    if (why2.code && stat(nd, &st) == 0) return zerr_set(e, ZE_IO, "%s in the ModelScope cache is incomplete: %s", repo, why2.msg);
    return zerr_set(e, ZE_IO, "%s is not in the ModelScope cache (%s or %s)", repo, md, nd);
}

static int ms_fetch_task(zhub_pull_ctx *c, zhttp *h, int i, zerr *e) {
    zhub_file *f = &c->files[i];
    if (f->state != ZF_FETCH) return ZE_OK;
    char tbase[ZHUB_PATH_MAX];
    zfmt(tbase, sizeof tbase, "%s/models/._____temp", c->root);
    ZTRY(zhub_mkdirs_under(tbase, f->tmp_path, e));
    ZTRY(zhub_mkdirs_under(c->repo_dir, f->final_path, e));
    ZTRY(zhub_fetch_file(c, h, f, e));
    __atomic_fetch_add(&c->files_done, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->n_downloaded, 1, __ATOMIC_RELAXED);
    zhub_emit(c, ZHUB_EV_FILE_DONE, f->path, NULL, 1);
    return ZE_OK;
}

static int ms_list(zhub_pull_ctx *c, zhttp_resp *resp, zerr *e) {
    char qrev[768], url[4096];
    if (zhttp_quote(c->revision, "", qrev, sizeof qrev)) return zerr_set(e, ZE_INVALID, "revision too long");
    zfmt(url, sizeof url, "%s/api/v1/models/%s/repo/files?Revision=%s&Recursive=True", c->endpoint, c->repo, qrev);
    zhttp *h = zhttp_new(c->token, c->auth_host, c->timeout_s);
    if (!h) return zerr_set(e, ZE_NOMEM, "cannot start libcurl");
    char *body = NULL;
    size_t len = 0;
    int rc = zhttp_get_mem(h, url, 64u << 20, &body, &len, resp, e);
    zhttp_free(h);
    if (rc) return rc;
    if (resp->status != 200) {
        free(body);
        if (resp->status == 401 || resp->status == 403)
            return zerr_set(e, ZE_NETWORK, "ModelScope refused access to %s (HTTP %ld): private models need a login",
                            c->repo, resp->status);
        return zerr_set(e, ZE_NETWORK, "listing %s on %s: HTTP %ld (wrong repo id or revision '%s'?)", c->repo,
                        c->endpoint, resp->status, c->revision);
    }
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    free(body);
    if (!j) return zerr_set(e, ZE_FORMAT, "%s: not JSON (%s)", url, je.text);
    json_t *files = json_object_get(json_object_get(j, "Data"), "Files");
    if (!json_is_array(files)) {
        const char *m = json_string_value(json_object_get(j, "Message"));
        rc = zerr_set(e, ZE_NETWORK, "listing %s on %s: %s", c->repo, c->endpoint, m ? m : "no file list in the answer");
        json_decref(j);
        return rc;
    }
    size_t n = json_array_size(files);
    char **paths = calloc(n + 1, sizeof *paths);
    json_t **objs = calloc(n + 1, sizeof *objs);
    rc = paths && objs ? ZE_OK : zerr_set(e, ZE_NOMEM, "out of memory");
    int np = 0;
    for (size_t i = 0; rc == ZE_OK && i < n; i++) {
        json_t *it = json_array_get(files, i);
        const char *type = json_string_value(json_object_get(it, "Type"));
        const char *p = json_string_value(json_object_get(it, "Path"));
        if (type && !strcmp(type, "tree")) continue;
        if (!p || !zhub_valid_relpath(p)) {
            rc = zerr_set(e, ZE_FORMAT, "%s: refusing the unsafe file name '%.200s' from the server", url, p ? p : "(none)");
            break;
        }
        if (!strcmp(p, ".msc") || !strcmp(p, ".mdl") || !strcmp(p, ".mv")) continue;
        paths[np] = (char *)p;
        objs[np++] = it;
    }
    unsigned char *keep = rc == ZE_OK ? calloc((size_t)np + 1, 1) : NULL;
    if (rc == ZE_OK && !keep) rc = zerr_set(e, ZE_NOMEM, "out of memory");
    if (rc == ZE_OK) zhub_select(paths, np, c->o->all_files, keep); /* the same rules as for Hugging Face */
    for (int i = 0; rc == ZE_OK && i < np; i++) {
        if (!keep[i]) continue;
        if (zhub_ctx_add(c, paths[i])) {
            rc = zerr_set(e, ZE_NOMEM, "out of memory");
            break;
        }
        zhub_file *f = &c->files[c->n - 1];
        json_t *sz = json_object_get(objs[i], "Size");
        f->size = json_is_integer(sz) ? (int64_t)json_integer_value(sz) : -1;
        const char *sha = json_string_value(json_object_get(objs[i], "Sha256"));
        if (sha && zhub_is_sha256(sha)) zfmt(f->sha256, sizeof f->sha256, "%s", sha);
        const char *rv = json_string_value(json_object_get(objs[i], "Revision"));
        zfmt(f->revision, sizeof f->revision, "%s", rv ? rv : c->revision);
    }
    free(keep);
    free(paths);
    free(objs);
    json_decref(j);
    if (rc == ZE_OK && c->n == 0) rc = zerr_set(e, ZE_FORMAT, "%s has no model files at revision %s", c->repo, c->revision);
    return rc;
}

static int revs_match(const char *a, const char *b) { /* prefix either way, like .msc lookups */
    size_t la = strlen(a), lb = strlen(b);
    return la && lb && !strncmp(a, b, la < lb ? la : lb);
}

int zhub_ms_pull(zhub_pull_ctx *c, zhub_result *r, zerr *e) {
    zfmt(c->commit, sizeof c->commit, "%s", c->revision);
    zfmt(c->snapshot, sizeof c->snapshot, "%s", c->repo_dir);
    if (zhub_offline(c->o)) {
        char d[ZHUB_PATH_MAX];
        zerr why = {0};
        if (zhub_ms_find_cached(c->o, c->repo, c->revision, d, sizeof d, &why))
            return zerr_set(e, ZE_IO, "offline mode (HF_HUB_OFFLINE) is on and %s", why.msg);
        if (r) {
            r->offline = 1;
            zfmt(r->snapshot, sizeof r->snapshot, "%s", d);
            zfmt(r->commit, sizeof r->commit, "%s", c->revision);
        }
        return ZE_OK;
    }
    char lockdir[ZHUB_PATH_MAX + 8], lockp[ZHUB_PATH_MAX + 300], name[256];
    zfmt(lockdir, sizeof lockdir, "%s/.lock", c->root);
    ZTRY(zhub_mkdirs(lockdir, e));
    size_t o = 0;
    for (const char *p = c->repo; *p && o + 4 < sizeof name; p++) {
        if (*p == '/') memcpy(name + o, "___", 3), o += 3;
        else name[o++] = *p;
    }
    name[o] = 0;
    zfmt(lockp, sizeof lockp, "%s/%s", lockdir, name);
    int lfd;
    ZTRY(zhub_lock(lockp, &lfd, &c->stop, NULL, NULL, e));
    zhttp_resp resp;
    int rc = ms_list(c, &resp, e);
    if (rc == ZE_NETWORK && resp.status == 0) { /* unreachable: use the cache if it is complete */
        char d[ZHUB_PATH_MAX];
        zerr why = {0};
        if (zhub_ms_find_cached(c->o, c->repo, c->revision, d, sizeof d, &why) == ZE_OK) {
            zhub_unlock(lfd);
            if (r) {
                r->fallback = 1;
                zfmt(r->note, sizeof r->note, "%s", e->msg);
                zfmt(r->snapshot, sizeof r->snapshot, "%s", d);
                zfmt(r->commit, sizeof r->commit, "%s", c->revision);
            }
            return ZE_OK;
        }
    }
    msc_list msc = {0};
    if (rc == ZE_OK) {
        rc = zhub_mkdirs(c->repo_dir, e);
        msc_load(c->repo_dir, &msc);
    }
    char qrev[768];
    zhttp_quote(c->revision, "", qrev, sizeof qrev);
    for (int i = 0; rc == ZE_OK && i < c->n; i++) {
        zhub_file *f = &c->files[i];
        char q[ZHUB_PATH_MAX * 3], buf[ZHUB_PATH_MAX * 4];
        zhttp_quote(f->path, "", q, sizeof q); /* quote_plus: '/' encoded too */
        zfmt(buf, sizeof buf, "%s/api/v1/models/%s/repo?Revision=%s&FilePath=%s", c->endpoint, c->repo, qrev, q);
        f->url = strdup(buf);
        zfmt(buf, sizeof buf, "%s/%s", c->repo_dir, f->path);
        f->final_path = strdup(buf);
        zfmt(buf, sizeof buf, "%s/models/._____temp/%s/%s", c->root, c->repo, f->path);
        f->tmp_path = strdup(buf);
        if (!f->url || !f->final_path || !f->tmp_path) {
            rc = zerr_set(e, ZE_NOMEM, "out of memory");
            break;
        }
        int64_t sz = -1;
        int cached = 0;
        if (zhub_file_size(f->final_path, &sz) && (f->size < 0 || sz == f->size)) {
            int rec = 0;
            for (int k = 0; k < msc.n && !rec; k++)
                rec = !strcmp(msc.v[k].path, f->path) && revs_match(msc.v[k].rev, f->revision);
            if (rec)
                cached = 1;
            else if (f->sha256[0]) { /* no record: trust the content only if it hashes right */
                zsha256 s;
                char hx[ZSHA256_HEX_LEN + 1];
                zsha256_init(&s);
                if (zsha256_file(&s, f->final_path, -1) == 0) {
                    zsha256_final_hex(&s, hx);
                    cached = !strcmp(hx, f->sha256);
                }
            }
        }
        if (cached) {
            f->state = ZF_CACHED;
            c->files_done++;
            zhub_emit(c, ZHUB_EV_FILE_CACHED, f->path, NULL, 1);
        } else {
            f->state = ZF_FETCH;
            int64_t part = 0;
            if (zhub_file_size(f->tmp_path, &part)) f->partial = (f->size >= 0 && part > f->size) ? 0 : part;
        }
    }
    if (rc == ZE_OK) rc = zhub_plan_and_confirm(c, e);
    if (rc == ZE_OK) {
        c->t0 = ztime_now();
        rc = zhub_parallel(c, ms_fetch_task, e);
    }
    if (rc == ZE_OK || c->n_downloaded > 0) { /* record what is on disk, even after a failure */
        zerr e2 = {0};
        for (int i = 0; i < c->n; i++) {
            zhub_file *f = &c->files[i];
            if (f->state == ZF_CACHED || (f->state == ZF_FETCH && zhub_file_size(f->final_path, NULL)))
                if (msc_put(&msc, f->path, strlen(f->path), f->revision, strlen(f->revision)) && rc == ZE_OK)
                    rc = zerr_set(e, ZE_NOMEM, "out of memory");
        }
        int wr = write_pickle_file(c->repo_dir, ".msc", &msc, NULL, &e2);
        char id[300];
        zfmt(id, sizeof id, "%s", c->repo);
        char *sl = strchr(id, '/');
        if (sl) { /* ModelFileSystemCache stores ORG/NAME with the masked name */
            char masked[256];
            size_t k = 0;
            for (const char *p = sl + 1; *p && k + 4 < sizeof masked; p++) {
                if (*p == '.') memcpy(masked + k, "___", 3), k += 3;
                else masked[k++] = *p;
            }
            masked[k] = 0;
            zfmt(sl + 1, sizeof id - (size_t)(sl + 1 - id), "%s", masked);
        }
        if (!wr) wr = write_pickle_file(c->repo_dir, ".mdl", NULL, id, &e2);
        if (wr && rc == ZE_OK) *e = e2, rc = wr;
    }
    msc_free(&msc);
    zhub_unlock(lfd);
    ZTRY(rc);
    zhub_emit(c, ZHUB_EV_DONE, NULL, NULL, 1);
    if (r) {
        zfmt(r->snapshot, sizeof r->snapshot, "%s", c->repo_dir);
        zfmt(r->commit, sizeof r->commit, "%s", c->revision);
        r->n_files = c->n;
        r->n_downloaded = c->n_downloaded;
        r->n_cached = c->n - c->n_downloaded;
        r->bytes_downloaded = c->bytes_done;
    }
    return ZE_OK;
}
