/* hub_cache.c - the Hugging Face cache on disk: where it is, the names in
 * it, refs, blob symlinks, locks, free space, path safety, and which repo
 * files the engine needs.
 *
 * Mirrors huggingface_hub 1.33:
 *   constants.py             HF_HUB_CACHE / HUGGINGFACE_HUB_CACHE / HF_HOME /
 *                            XDG_CACHE_HOME rules (expanduser + expandvars),
 *                            HF_ENDPOINT (rstrip '/'), HF_HUB_OFFLINE values
 *                            {1, ON, YES, TRUE}, REPO_ID_SEPARATOR "--"
 *   utils/_auth.py get_token HF_TOKEN, HUGGING_FACE_HUB_TOKEN, then the
 *                            token file ($HF_TOKEN_PATH or $HF_HOME/token)
 *   file_download.py         repo_folder_name, _normalize_etag,
 *                            _cache_commit_hash_for_specific_revision (atomic
 *                            ref write), _create_symlink (relative target,
 *                            old entry removed first), _get_pointer_path (must
 *                            stay inside snapshots/), _check_disk_space
 *   _local_folder.py         _validate_relative_filename (no "..", no absolute
 *                            path), _create_cachedir_tag (CACHEDIR.TAG)
 *   utils/_fixes.py          WeakFileLock: py-filelock's flock(LOCK_EX|LOCK_NB)
 *                            on .locks/<repo folder>/<etag>.lock, mode 0664,
 *                            so zimage and Python processes exclude each other
 *   utils/_validators.py     validate_repo_id
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "hub_internal.h"

int zfmt(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- environment --------------------------------------------------------------- */

int zhub_env_true(const char *name) {
    const char *v = getenv(name);
    if (!v) return 0;
    return !strcasecmp(v, "1") || !strcasecmp(v, "ON") || !strcasecmp(v, "YES") || !strcasecmp(v, "TRUE");
}

void zhub_expand(const char *in, char *out, size_t n) {
    char tmp[ZHUB_PATH_MAX];
    size_t o = 0;
    const char *p = in;
    if (p[0] == '~' && (p[1] == '/' || p[1] == 0)) {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : "";
        }
        o = (size_t)zfmt(tmp, sizeof tmp, "%s", home);
        if (o >= sizeof tmp) o = sizeof tmp - 1;
        p++;
    }
    while (*p && o + 1 < sizeof tmp) {
        if (*p == '$' && (p[1] == '{' || isalpha((unsigned char)p[1]) || p[1] == '_')) {
            const char *s = p + 1;
            int brace = *s == '{';
            if (brace) s++;
            const char *t = s;
            while (isalnum((unsigned char)*t) || *t == '_') t++;
            if ((!brace || *t == '}') && t > s) {
                char name[256];
                size_t l = (size_t)(t - s) < sizeof name - 1 ? (size_t)(t - s) : sizeof name - 1;
                memcpy(name, s, l);
                name[l] = 0;
                const char *v = getenv(name);
                if (v) { /* unknown variables are left as they are (expandvars) */
                    o += (size_t)zfmt(tmp + o, sizeof tmp - o, "%s", v);
                    if (o >= sizeof tmp) o = sizeof tmp - 1;
                    p = t + brace;
                    continue;
                }
            }
        }
        tmp[o++] = *p++;
    }
    tmp[o] = 0;
    zfmt(out, n, "%s", tmp);
}

int zhub_offline(const zhub_opts *o) {
    return (o && o->offline) || zhub_env_true("HF_HUB_OFFLINE") || zhub_env_true("TRANSFORMERS_OFFLINE");
}

static void strip_slash(char *s) {
    size_t l = strlen(s);
    while (l > 0 && s[l - 1] == '/') s[--l] = 0;
}

void zhub_endpoint(const zhub_opts *o, char *out, size_t n) {
    const char *ep = o && o->endpoint && *o->endpoint ? o->endpoint : NULL;
    if (o && o->source == ZHUB_MODELSCOPE) {
        if (ep)
            zfmt(out, n, "%s", ep);
        else if (getenv("MODELSCOPE_ENDPOINT") && *getenv("MODELSCOPE_ENDPOINT"))
            zfmt(out, n, "%s", getenv("MODELSCOPE_ENDPOINT"));
        else {
            const char *d = getenv("MODELSCOPE_DOMAIN");
            if (d && *d)
                zfmt(out, n, "%s%s", strstr(d, "://") ? "" : "https://", d);
            else
                zfmt(out, n, "https://www.modelscope.cn");
        }
    } else {
        if (!ep) ep = getenv("HF_ENDPOINT");
        zfmt(out, n, "%s", ep && *ep ? ep : "https://huggingface.co");
    }
    strip_slash(out);
}

static void clean_token(char *t) { /* _clean_token: strip, drop newlines */
    size_t o = 0;
    for (size_t i = 0; t[i]; i++)
        if (t[i] != '\n' && t[i] != '\r') t[o++] = t[i];
    t[o] = 0;
    size_t a = 0;
    while (t[a] == ' ' || t[a] == '\t') a++;
    memmove(t, t + a, strlen(t + a) + 1);
    o = strlen(t);
    while (o && (t[o - 1] == ' ' || t[o - 1] == '\t')) t[--o] = 0;
}

void zhub_token(const zhub_opts *o, char *out, size_t n) {
    out[0] = 0;
    if (o && o->token) {
        zfmt(out, n, "%s", o->token);
    } else if (o && o->source == ZHUB_MODELSCOPE) {
        return; /* ModelScope logs in with cookies; public models need nothing */
    } else {
        const char *t = getenv("HF_TOKEN");
        if (!t || !*t) t = getenv("HUGGING_FACE_HUB_TOKEN");
        if (t && *t)
            zfmt(out, n, "%s", t);
        else {
            char path[ZHUB_PATH_MAX], raw[ZHUB_PATH_MAX];
            const char *tp = getenv("HF_TOKEN_PATH");
            if (tp && *tp)
                zfmt(raw, sizeof raw, "%s", tp);
            else {
                const char *home = getenv("HF_HOME");
                if (home && *home)
                    zfmt(raw, sizeof raw, "%s/token", home);
                else {
                    const char *xdg = getenv("XDG_CACHE_HOME");
                    if (xdg && *xdg)
                        zfmt(raw, sizeof raw, "%s/huggingface/token", xdg);
                    else
                        zfmt(raw, sizeof raw, "~/.cache/huggingface/token");
                }
            }
            zhub_expand(raw, path, sizeof path);
            FILE *f = fopen(path, "r");
            if (f) {
                size_t k = fread(out, 1, n - 1, f);
                out[k] = 0;
                fclose(f);
            }
        }
    }
    clean_token(out);
}

int zhub_cache_root(const zhub_opts *o, char *out, size_t n, zerr *e) {
    char raw[ZHUB_PATH_MAX];
    if (o && o->cache_dir && *o->cache_dir) {
        zfmt(raw, sizeof raw, "%s", o->cache_dir);
    } else if (o && o->source == ZHUB_MODELSCOPE) {
        const char *c = getenv("MODELSCOPE_CACHE");
        zfmt(raw, sizeof raw, "%s", c && *c ? c : "~/.cache/modelscope/hub");
    } else {
        const char *c = getenv("HF_HUB_CACHE");
        if (!c || !*c) c = getenv("HUGGINGFACE_HUB_CACHE");
        if (c && *c)
            zfmt(raw, sizeof raw, "%s", c);
        else {
            const char *home = getenv("HF_HOME");
            const char *xdg = getenv("XDG_CACHE_HOME");
            if (home && *home)
                zfmt(raw, sizeof raw, "%s/hub", home);
            else if (xdg && *xdg)
                zfmt(raw, sizeof raw, "%s/huggingface/hub", xdg);
            else
                zfmt(raw, sizeof raw, "~/.cache/huggingface/hub");
        }
    }
    zhub_expand(raw, out, n);
    strip_slash(out);
    if (!out[0]) return zerr_set(e, ZE_INVALID, "empty cache folder");
    return ZE_OK;
}

/* ---- names ------------------------------------------------------------------------- */

static int valid_part(const char *s, size_t len) {
    if (len < 1 || len > 96) return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.') return 0;
    if (s[0] == '-' || s[0] == '.' || s[len - 1] == '-' || s[len - 1] == '.') return 0;
    for (size_t i = 0; i + 1 < len; i++)
        if ((s[i] == '-' && s[i + 1] == '-') || (s[i] == '.' && s[i + 1] == '.')) return 0;
    return 1;
}

int zhub_valid_repo_id(const char *repo) {
    if (!repo || !*repo) return 0;
    const char *slash = strchr(repo, '/');
    size_t l = strlen(repo);
    if (l >= 4 && !strcmp(repo + l - 4, ".git")) return 0;
    if (!slash) return valid_part(repo, l);
    if (strchr(slash + 1, '/')) return 0;
    return valid_part(repo, (size_t)(slash - repo)) && valid_part(slash + 1, strlen(slash + 1));
}

int zhub_valid_revision(const char *rev) {
    /* A branch, tag, "refs/pr/N" or commit.  It becomes refs/<rev> on disk,
     * so nothing that could climb out of refs/. */
    if (!rev || !*rev || strlen(rev) > 200 || rev[0] == '/' || rev[0] == '-' || rev[0] == '.') return 0;
    for (const char *p = rev; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-_./+", *p)) return 0;
    if (strstr(rev, "..") || strstr(rev, "//") || strstr(rev, "/.") || rev[strlen(rev) - 1] == '/') return 0;
    return 1;
}

int zhub_valid_relpath(const char *p) {
    if (!p || !*p || strlen(p) > 1000 || p[0] == '/' || strchr(p, '\\')) return 0;
    for (const char *q = p; *q; q++)
        if ((unsigned char)*q < 32 || *q == 127) return 0;
    /* Windows drive forms too, so the cache stays safe when shared */
    if (isalpha((unsigned char)p[0]) && p[1] == ':') return 0;
    const char *s = p;
    for (;;) {
        const char *t = strchr(s, '/');
        size_t l = t ? (size_t)(t - s) : strlen(s);
        if (l == 0) return 0;                              /* "a//b", trailing '/' */
        if (l == 1 && s[0] == '.') return 0;
        if (l == 2 && s[0] == '.' && s[1] == '.') return 0;
        if (!t) break;
        s = t + 1;
    }
    return 1;
}

int zhub_valid_etag(const char *etag) {
    size_t l = strlen(etag);
    if (l < 1 || l > 128 || etag[0] == '.' || etag[0] == '-') return 0;
    for (const char *p = etag; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') return 0;
    return !strstr(etag, "..") && !strstr(etag, ".incomplete") && !strstr(etag, ".lock");
}

static int all_hex(const char *s, size_t n) {
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f')) return 0;
    return 1;
}
int zhub_is_commit(const char *s) { return all_hex(s, 40); }
int zhub_is_sha256(const char *s) { return all_hex(s, 64); }

void zhub_normalize_etag(const char *in, char *out, size_t n) {
    /* etag.lstrip("W/").strip('"'): lstrip removes any leading 'W' and '/' chars */
    while (*in == 'W' || *in == '/') in++;
    size_t l = strlen(in);
    while (l && *in == '"') in++, l--;
    while (l && in[l - 1] == '"') l--;
    if (l >= n) l = n - 1;
    memcpy(out, in, l);
    out[l] = 0;
}

void zhub_repo_folder(const char *root, const char *repo, char *out, size_t n) {
    char name[256];
    size_t o = (size_t)zfmt(name, sizeof name, "models--");
    for (const char *p = repo; *p && o + 3 < sizeof name; p++) {
        if (*p == '/') {
            name[o++] = '-';
            name[o++] = '-';
        } else
            name[o++] = *p;
    }
    name[o] = 0;
    zfmt(out, n, "%s/%s", root, name);
}

int zhub_read_ref(const char *repo_dir, const char *rev, char *commit, size_t n) {
    commit[0] = 0;
    char p[ZHUB_PATH_MAX];
    zfmt(p, sizeof p, "%s/refs/%s", repo_dir, rev);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    char buf[256];
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = 0;
    /* huggingface_hub writes the bare hash; tolerate a trailing newline */
    while (k && (buf[k - 1] == '\n' || buf[k - 1] == '\r' || buf[k - 1] == ' ')) buf[--k] = 0;
    if (!zhub_is_commit(buf)) return 0;
    zfmt(commit, n, "%s", buf);
    return 1;
}

int zhub_mkdirs(const char *path, zerr *e) {
    char tmp[ZHUB_PATH_MAX];
    zfmt(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(tmp, 0777) && errno != EEXIST) return zerr_set(e, ZE_IO, "cannot create folder %s: %s", tmp, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    struct stat st;
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) return zerr_set(e, ZE_IO, "%s is not a folder", path);
    return ZE_OK;
}

int zhub_mkdirs_under(const char *base, const char *path, zerr *e) {
    size_t bl = strlen(base);
    if (strncmp(path, base, bl) || path[bl] != '/') return zerr_set(e, ZE_INVALID, "path %s is outside %s", path, base);
    ZTRY(zhub_mkdirs(base, e));
    char tmp[ZHUB_PATH_MAX];
    zfmt(tmp, sizeof tmp, "%s", path);
    char *last = strrchr(tmp, '/');
    if (!last || (size_t)(last - tmp) <= bl) return ZE_OK; /* directly in base */
    *last = 0;
    for (char *p = tmp + bl + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            struct stat st;
            if (lstat(tmp, &st) == 0) {
                if (!S_ISDIR(st.st_mode)) /* a symlink or file where a folder belongs */
                    return zerr_set(e, ZE_IO, "refusing to write below %s: not a real folder", tmp);
            } else if (mkdir(tmp, 0777) && errno != EEXIST)
                return zerr_set(e, ZE_IO, "cannot create folder %s: %s", tmp, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    char rb[PATH_MAX], rd[PATH_MAX];
    if (!realpath(base, rb) || !realpath(tmp, rd)) return zerr_set(e, ZE_IO, "cannot resolve %s: %s", tmp, strerror(errno));
    size_t rl = strlen(rb);
    if (strncmp(rd, rb, rl) || (rd[rl] != '/' && rd[rl] != 0))
        return zerr_set(e, ZE_INVALID, "refusing to write %s: it resolves outside %s", path, base);
    return ZE_OK;
}

int zhub_write_ref(const char *repo_dir, const char *rev, const char *commit, zerr *e) {
    if (!strcmp(rev, commit)) return ZE_OK; /* a commit needs no ref */
    char p[ZHUB_PATH_MAX], base[ZHUB_PATH_MAX], tmp[ZHUB_PATH_MAX + 32];
    zfmt(base, sizeof base, "%s/refs", repo_dir);
    zfmt(p, sizeof p, "%s/%s", base, rev);
    char old[128];
    if (zhub_read_ref(repo_dir, rev, old, sizeof old) && !strcmp(old, commit)) return ZE_OK;
    ZTRY(zhub_mkdirs_under(base, p, e));
    zfmt(tmp, sizeof tmp, "%s.%08x.tmp", p, (unsigned)(rand() ^ getpid() ^ (unsigned)time(NULL)));
    FILE *f = fopen(tmp, "w");
    if (!f) return zerr_set(e, ZE_IO, "cannot write %s: %s", tmp, strerror(errno));
    int bad = fputs(commit, f) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, p)) {
        int er = errno;
        unlink(tmp);
        return zerr_set(e, ZE_IO, "cannot write %s: %s", p, strerror(er));
    }
    return ZE_OK;
}

int zhub_link_blob(const char *repo_dir, const char *commit, const char *relpath, const char *etag, zerr *e) {
    char snap[ZHUB_PATH_MAX], ptr[ZHUB_PATH_MAX * 2], target[ZHUB_PATH_MAX];
    zfmt(snap, sizeof snap, "%s/snapshots/%s", repo_dir, commit);
    zfmt(ptr, sizeof ptr, "%s/%s", snap, relpath);
    ZTRY(zhub_mkdirs_under(snap, ptr, e));
    int depth = 0;
    for (const char *p = relpath; *p; p++) depth += *p == '/';
    size_t o = 0;
    for (int i = 0; i < depth + 2; i++) o += (size_t)zfmt(target + o, sizeof target - o, "../");
    zfmt(target + o, sizeof target - o, "blobs/%s", etag);
    char cur[ZHUB_PATH_MAX];
    ssize_t k = readlink(ptr, cur, sizeof cur - 1);
    if (k >= 0) {
        cur[k] = 0;
        if (!strcmp(cur, target)) return ZE_OK;
    }
    unlink(ptr); /* _create_symlink: os.remove(dst) first */
    if (symlink(target, ptr)) {
        if (errno == EEXIST) { /* created concurrently: fine if it is the same link */
            k = readlink(ptr, cur, sizeof cur - 1);
            if (k >= 0) {
                cur[k] = 0;
                if (!strcmp(cur, target)) return ZE_OK;
            }
        }
        return zerr_set(e, ZE_IO, "cannot create symlink %s: %s", ptr, strerror(errno));
    }
    return ZE_OK;
}

void zhub_cachedir_tag(const char *root) {
    char p[ZHUB_PATH_MAX + 16];
    zfmt(p, sizeof p, "%s/CACHEDIR.TAG", root);
    if (access(p, F_OK) == 0) return;
    FILE *f = fopen(p, "w");
    if (!f) return;
    fputs("Signature: 8a477f597d28d172789f06886806bc55\n"
          "# This file is a cache directory tag created by huggingface_hub.\n"
          "# For information about cache directory tags, see:\n"
          "#\thttps://bford.info/cachedir/\n",
          f);
    fclose(f);
}

int zhub_lock(const char *path, int *fd, int *stop, void (*on_wait)(void *), void *user, zerr *e) {
    *fd = -1;
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0664);
    if (f < 0) return zerr_set(e, ZE_IO, "cannot open lock %s: %s", path, strerror(errno));
    int waited = 0;
    for (;;) {
        if (flock(f, LOCK_EX | LOCK_NB) == 0) break;
        if (errno != EWOULDBLOCK && errno != EINTR) {
            if (errno == ENOLCK || errno == EOPNOTSUPP) break; /* no flock here: SoftFileLock-like, go on */
            int er = errno;
            close(f);
            return zerr_set(e, ZE_IO, "cannot lock %s: %s", path, strerror(er));
        }
        if (!waited && on_wait) on_wait(user);
        waited = 1;
        if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)) {
            close(f);
            return zerr_set(e, ZE_CANCELLED, "cancelled while waiting for %s", path);
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *fd = f;
    return ZE_OK;
}

void zhub_unlock(int fd) {
    if (fd < 0) return;
    flock(fd, LOCK_UN);
    close(fd);
}

int zhub_free_bytes(const char *path, uint64_t *out) {
    struct statvfs sv;
    if (statvfs(path, &sv)) return -1;
    *out = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
    return 0;
}

int zhub_file_size(const char *path, int64_t *size) {
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) return 0;
    if (size) *size = st.st_size;
    return 1;
}

/* ---- completeness of a diffusers folder --------------------------------------------- */

static int check_index(const char *dir, const char *name, zerr *e) {
    char p[ZHUB_PATH_MAX * 2];
    zfmt(p, sizeof p, "%s/%s", dir, name);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j) return zerr_set(e, ZE_FORMAT, "%s: %s", p, je.text);
    json_t *wm = json_object_get(j, "weight_map");
    const char *k;
    json_t *v;
    int rc = ZE_OK;
    json_object_foreach(wm, k, v) {
        const char *shard = json_string_value(v);
        if (!shard || !zhub_valid_relpath(shard)) {
            rc = zerr_set(e, ZE_FORMAT, "%s: bad shard name for %s", p, k);
            break;
        }
        char sp[ZHUB_PATH_MAX * 3];
        zfmt(sp, sizeof sp, "%s/%s", dir, shard);
        if (!zhub_file_size(sp, NULL)) {
            rc = zerr_set(e, ZE_IO, "missing %s (listed in %s)", sp, p);
            break;
        }
    }
    json_decref(j);
    return rc;
}

static int check_component(const char *dir, zerr *e) {
    DIR *d = opendir(dir);
    if (!d) return zerr_set(e, ZE_IO, "missing folder %s", dir);
    int rc = ZE_OK, n = 0;
    struct dirent *de;
    while (rc == ZE_OK && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[ZHUB_PATH_MAX * 2];
        zfmt(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(p, &st)) { /* dangling symlink: its blob is gone */
            rc = zerr_set(e, ZE_IO, "broken file %s (its blob is missing)", p);
            break;
        }
        n++;
        size_t l = strlen(de->d_name);
        if (l > 22 && !strcmp(de->d_name + l - 22, ".safetensors.index.json")) rc = check_index(dir, de->d_name, e);
    }
    closedir(d);
    if (rc == ZE_OK && n == 0) rc = zerr_set(e, ZE_IO, "folder %s is empty", dir);
    return rc;
}

int zhub_check_model_dir(const char *dir, zerr *e) {
    char p[ZHUB_PATH_MAX * 2];
    zfmt(p, sizeof p, "%s/model_index.json", dir);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j) {
        if (access(p, F_OK)) return zerr_set(e, ZE_IO, "missing %s", p);
        return zerr_set(e, ZE_FORMAT, "%s: %s", p, je.text);
    }
    const char *k;
    json_t *v;
    int rc = ZE_OK;
    json_object_foreach(j, k, v) {
        if (k[0] == '_' || !json_is_array(v) || json_array_size(v) < 2) continue;
        if (json_is_null(json_array_get(v, 0)) || json_is_null(json_array_get(v, 1))) continue;
        if (!zhub_valid_relpath(k)) {
            rc = zerr_set(e, ZE_FORMAT, "%s: bad component name", p);
            break;
        }
        char cd[ZHUB_PATH_MAX * 2];
        zfmt(cd, sizeof cd, "%s/%s", dir, k);
        rc = check_component(cd, e);
        if (rc) break;
    }
    json_decref(j);
    return rc;
}

/* ---- which files the engine needs ----------------------------------------------------- */

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int zhub_wanted(const char *p, int all_files) {
    if (all_files) return 1;
    /* hidden files and folders (.gitattributes, .github/), repo assets */
    if (p[0] == '.' || strstr(p, "/.")) return 0;
    if (!strncmp(p, "assets/", 7) || !strncmp(p, "images/", 7) || !strncmp(p, "docs/", 5)) return 0;
    const char *slash = strchr(p, '/');
    if (!slash) { /* repo root: configs, tokenizer files of single-folder repos, weights */
        return ends_with(p, ".json") || ends_with(p, ".safetensors") || !strcmp(p, "merges.txt") ||
               !strcmp(p, "vocab.txt") || !strcmp(p, "tokenizer.model");
    }
    if (!strncmp(p, "tokenizer", 9)) return 1; /* tokenizer/, tokenizer_2/: everything */
    return ends_with(p, ".json") || ends_with(p, ".safetensors");
}

/* Variant weights ("x.fp16.safetensors", "x.safetensors.index.fp16.json")
 * are skipped when the same folder has non-variant weights (diffusers loads
 * the non-variant files by default). */
static int is_variant(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    static const char *tags[] = {".fp16", ".bf16", ".fp32", ".fp8", ".int8", ".int4"};
    for (size_t t = 0; t < sizeof tags / sizeof *tags; t++) {
        const char *q = strstr(b, tags[t]);
        if (q) {
            char nx = q[strlen(tags[t])];
            if (nx == '.' || nx == '-') return 1;
        }
    }
    return 0;
}

static int same_dir(const char *a, const char *b) {
    const char *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
    size_t la = sa ? (size_t)(sa - a) : 0, lb = sb ? (size_t)(sb - b) : 0;
    return la == lb && !strncmp(a, b, la);
}

void zhub_select(char *const *paths, int n, int all, unsigned char *keep) {
    int has_index = 0;
    for (int i = 0; i < n; i++) has_index |= !strcmp(paths[i], "model_index.json");
    for (int i = 0; i < n; i++) {
        keep[i] = (unsigned char)zhub_wanted(paths[i], all);
        if (all || !keep[i]) continue;
        /* a diffusers repo: weights at the root are single-file copies */
        if (has_index && !strchr(paths[i], '/') && ends_with(paths[i], ".safetensors")) keep[i] = 0;
        if (is_variant(paths[i]) && (ends_with(paths[i], ".safetensors") || ends_with(paths[i], ".json"))) {
            for (int j = 0; j < n; j++)
                if (j != i && same_dir(paths[i], paths[j]) && ends_with(paths[j], ".safetensors") && !is_variant(paths[j])) {
                    keep[i] = 0;
                    break;
                }
        }
    }
}
