/* test_hub.c - `zimage pull` and model resolution (src/io/hub*.c) against
 * the stand-in hub of tests/util/hubserver.c on 127.0.0.1.
 *
 * The fake repo "org/tiny" is written to a temp folder at start: a diffusers
 * layout (configs, sharded text encoder, tokenizer, LFS safetensors) plus
 * files a pull must skip (README.md, assets/, .gitattributes, a root
 * single-file checkpoint, an fp16 variant).  Every check is exact: files
 * byte for byte, blob names, symlink targets, request counts.
 * Covered: sha256 vectors; names and env rules; fresh pull; second pull
 * transfers nothing; interrupted pull resumes with Range (and automatic
 * resume inside one pull, and a server that ignores Range); corrupt byte
 * detected and the bad file removed; 401 / gated repo -> HF_TOKEN message,
 * token never echoed; offline mode from the cache; Hub unreachable -> cache;
 * a cache laid out by huggingface_hub is read; resolve_model (folder, repo
 * id, confirm, --yes); two pulls at once; free-space check; unsafe names
 * and etags refused; progress events and cancel; ModelScope pull, its .msc
 * written and a Python-written .msc read, the modelscope >= 1.38 layout read; the tiny-a fixture pulled byte for
 * byte, loaded with zimage_create and generating the "plain" golden image
 * (max |dpixel| <= 1, as test_pipeline).  No network beyond 127.0.0.1, temp folders removed at the end.
 */
#include "util/testutil.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/hub.h"
#include "io/sha256.h"
#include "util/hubserver.h"
#include "zimage.h"

static hubsrv *g_srv;
static char g_tmp[256];
static char g_src[300];  /* fake repo folder */
static char g_tiny_commit[41], g_ms_commit[41] = "c0ffee0000000000000000000000000000000000";
static int g_have_tiny_a;
static int g_ncache;

#define REPO "org/tiny"
#define TOKEN "hf_test_SECRET_token_42"

static const char *WANTED[] = {
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "text_encoder/model.safetensors.index.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
};
#define NWANTED ((int)(sizeof WANTED / sizeof *WANTED))
static const char *SKIPPED[] = {"README.md", "assets/banner.png", ".gitattributes", "z_image_turbo_bf16.safetensors",
                                "transformer/diffusion_pytorch_model.fp16.safetensors"};
#define BIG "transformer/diffusion_pytorch_model.safetensors"
#define BIG_SIZE (2 * 1000 * 1000 + 17)

/* ---- helpers ------------------------------------------------------------------------ */

/* snprintf without the compiler's truncation guesses (test paths are short). */
static void sfmt(char *b, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void sfmt(char *b, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, n, fmt, ap);
    va_end(ap);
}

static void write_file(const char *dir, const char *rel, const void *data, size_t n) {
    char p[1024];
    sfmt(p, sizeof p, "%s/%s", dir, rel);
    for (char *q = p + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            mkdir(p, 0777);
            *q = '/';
        }
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void write_text(const char *dir, const char *rel, const char *text) { write_file(dir, rel, text, strlen(text)); }

static void write_random(const char *dir, const char *rel, size_t n, uint64_t seed) {
    unsigned char *b = malloc(n);
    assert_non_null(b);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b[i] = (unsigned char)(x >> 24);
    }
    write_file(dir, rel, b, n);
    free(b);
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)l + 1);
    if (b && fread(b, 1, (size_t)l, f) != (size_t)l) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)l;
    return b;
}

/* Byte-for-byte comparison; prints the first differing offset. */
static void assert_same_file(const char *got, const char *want) {
    size_t a = 0, b = 0;
    unsigned char *x = read_all(got, &a), *y = read_all(want, &b);
    if (!x) fprintf(stderr, "missing %s\n", got);
    assert_non_null(x);
    assert_non_null(y);
    if (a != b) fprintf(stderr, "%s: %zu bytes, %s: %zu bytes\n", got, a, want, b);
    assert_int_equal(a, b);
    for (size_t i = 0; i < a; i++)
        if (x[i] != y[i]) {
            fprintf(stderr, "%s differs from %s first at byte %zu (0x%02x vs 0x%02x)\n", got, want, i, x[i], y[i]);
            fail();
        }
    free(x);
    free(y);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static void rm_rf(const char *p) { nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static void new_cache(char *out, size_t n) { sfmt(out, n, "%s/cache%d", g_tmp, ++g_ncache); }

static zhub_opts opts_for(const char *cache) {
    zhub_opts o;
    zhub_opts_default(&o);
    o.endpoint = hubsrv_url(g_srv);
    o.cache_dir = cache;
    o.retry_delay_ms = 10;
    o.timeout_s = 5;
    o.jobs = 4;
    return o;
}

static int exists(const char *p) {
    struct stat st;
    return lstat(p, &st) == 0;
}

static int count_incomplete(const char *blobs, char *first, size_t n) {
    char cmd[600];
    sfmt(cmd, sizeof cmd, "ls %s 2>/dev/null | grep -c '\\.incomplete$'", blobs);
    FILE *p = popen(cmd, "r");
    int k = 0;
    if (p) {
        if (fscanf(p, "%d", &k) != 1) k = 0;
        pclose(p);
    }
    if (first) first[0] = 0;
    (void)n;
    return k;
}

/* The snapshot matches the source: the wanted files byte for byte, as
 * relative symlinks into blobs/ (LFS blobs named by sha256), skipped files
 * absent, no partial downloads left. */
static void check_snapshot(const char *cache, const char *repo_folder, const char *commit) {
    char snap[700], blobs[700];
    sfmt(snap, sizeof snap, "%s/%s/snapshots/%s", cache, repo_folder, commit);
    sfmt(blobs, sizeof blobs, "%s/%s/blobs", cache, repo_folder);
    for (int i = 0; i < NWANTED; i++) {
        char got[1024], want[1024], link[1024], expect[1024];
        sfmt(got, sizeof got, "%s/%s", snap, WANTED[i]);
        sfmt(want, sizeof want, "%s/%s", g_src, WANTED[i]);
        assert_same_file(got, want);
        ssize_t k = readlink(got, link, sizeof link - 1);
        assert_true(k > 0);
        link[k] = 0;
        int depth = 0;
        for (const char *p = WANTED[i]; *p; p++) depth += *p == '/';
        size_t o = 0;
        for (int d = 0; d < depth + 2; d++) o += (size_t)snprintf(expect + o, sizeof expect - o, "../");
        sfmt(expect + o, sizeof expect - o, "blobs/");
        if (strncmp(link, expect, strlen(expect))) fprintf(stderr, "%s -> %s, expected %s...\n", WANTED[i], link, expect);
        assert_int_equal(strncmp(link, expect, strlen(expect)), 0);
        if (strstr(WANTED[i], ".safetensors") && !strstr(WANTED[i], "index")) {
            const char *sha = hubsrv_file_sha256(g_srv, REPO, WANTED[i]);
            assert_non_null(sha);
            assert_string_equal(link + strlen(expect), sha);
        } else {
            assert_int_equal(strlen(link + strlen(expect)), 40); /* git blob sha1 */
        }
    }
    for (size_t i = 0; i < sizeof SKIPPED / sizeof *SKIPPED; i++) {
        char p[1024];
        sfmt(p, sizeof p, "%s/%s", snap, SKIPPED[i]);
        if (exists(p)) fprintf(stderr, "%s should not have been fetched\n", SKIPPED[i]);
        assert_false(exists(p));
    }
    assert_int_equal(count_incomplete(blobs, NULL, 0), 0);
}

static uint64_t wanted_bytes(void) {
    uint64_t t = 0;
    for (int i = 0; i < NWANTED; i++) {
        char p[1024];
        struct stat st;
        sfmt(p, sizeof p, "%s/%s", g_src, WANTED[i]);
        assert_int_equal(stat(p, &st), 0);
        t += (uint64_t)st.st_size;
    }
    return t;
}

/* ---- setup ------------------------------------------------------------------------------- */

static void make_repo(const char *d) {
    mkdir(d, 0777);
    write_text(d, "model_index.json",
               "{\"_class_name\":\"ZImagePipeline\",\"_diffusers_version\":\"0.36.0\","
               "\"scheduler\":[\"diffusers\",\"FlowMatchEulerDiscreteScheduler\"],"
               "\"text_encoder\":[\"transformers\",\"Qwen3Model\"],\"tokenizer\":[\"transformers\",\"Qwen2Tokenizer\"],"
               "\"transformer\":[\"diffusers\",\"ZImageTransformer2DModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"],"
               "\"safety_checker\":[null,null]}\n");
    write_text(d, "scheduler/scheduler_config.json", "{\"num_train_timesteps\":1000,\"shift\":3.0}\n");
    write_text(d, "text_encoder/config.json", "{\"hidden_size\":16}\n");
    write_random(d, "text_encoder/model-00001-of-00002.safetensors", 600000, 1);
    write_random(d, "text_encoder/model-00002-of-00002.safetensors", 100003, 2);
    write_text(d, "text_encoder/model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":700003},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
               "\"b\":\"model-00002-of-00002.safetensors\"}}\n");
    write_text(d, "tokenizer/tokenizer.json", "{\"model\":{\"type\":\"BPE\"}}\n");
    write_text(d, "tokenizer/merges.txt", "#version: 0.2\nh e\n");
    write_text(d, "transformer/config.json", "{\"dim\":32}\n");
    write_random(d, BIG, BIG_SIZE, 3);
    write_random(d, "transformer/diffusion_pytorch_model.fp16.safetensors", 1000, 4);
    write_text(d, "vae/config.json", "{\"latent_channels\":16}\n");
    write_random(d, "vae/diffusion_pytorch_model.safetensors", 300001, 5);
    write_text(d, "README.md", "# tiny\n");
    write_random(d, "assets/banner.png", 5000, 6);
    write_text(d, ".gitattributes", "*.safetensors filter=lfs diff=lfs merge=lfs -text\n");
    write_random(d, "z_image_turbo_bf16.safetensors", 50000, 7);
}

static int setup_all(void **state) {
    (void)state;
    /* the developer's own Hub settings must not leak into the tests */
    static const char *clear[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                  "HF_ENDPOINT", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                                  "MODELSCOPE_CACHE", "MODELSCOPE_DOMAIN", "HF_HUB_DOWNLOAD_TIMEOUT"};
    for (size_t i = 0; i < sizeof clear / sizeof *clear; i++) unsetenv(clear[i]);
    sfmt(g_tmp, sizeof g_tmp, "/tmp/zimage_test_hub_XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    char home[300];
    sfmt(home, sizeof home, "%s/hfhome", g_tmp);
    setenv("HF_HOME", home, 1); /* no token file from the real home */
    sfmt(g_src, sizeof g_src, "%s/src", g_tmp);
    make_repo(g_src);
    g_srv = hubsrv_start();
    if (!g_srv) return -1;
    if (hubsrv_add_repo(g_srv, REPO, g_src, 0, g_tiny_commit)) return -1;
    if (hubsrv_add_repo(g_srv, "org/gated", g_src, 1, NULL)) return -1;
    if (hubsrv_add_repo(g_srv, "org/unsafe", g_src, 0, NULL)) return -1;
    if (hubsrv_add_repo(g_srv, "org/tiny.v1", g_src, 0, g_ms_commit)) return -1;
    hubsrv_set_token(g_srv, TOKEN);
    hubsrv_list_extra(g_srv, "org/unsafe", "../../../evil.json");
    const char *tiny = fixture_path("models/tiny-a");
    char mi[1100];
    sfmt(mi, sizeof mi, "%s/model_index.json", tiny);
    g_have_tiny_a = fixture_exists(mi) && hubsrv_add_repo(g_srv, ZHUB_DEFAULT_REPO, tiny, 0, NULL) == 0;
    return 0;
}

static int teardown_all(void **state) {
    (void)state;
    hubsrv_stop(g_srv);
    rm_rf(g_tmp);
    return 0;
}

/* ---- unit checks ------------------------------------------------------------------------- */

static void test_sha256(void **state) {
    (void)state;
    char h[65];
    zsha256_hex("", 0, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    zsha256_hex("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    zsha256_hex(m, strlen(m), h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', fed in odd-sized pieces */
    zsha256 s;
    zsha256_init(&s);
    char a[997];
    memset(a, 'a', sizeof a);
    size_t left = 1000000;
    while (left) {
        size_t k = left < sizeof a ? left : (left % 7) + 1 + (left % 500);
        if (k > left) k = left;
        zsha256_update(&s, a, k);
        left -= k;
    }
    zsha256_final_hex(&s, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_names(void **state) {
    (void)state;
    assert_true(zhub_valid_repo_id("Tongyi-MAI/Z-Image-Turbo"));
    assert_true(zhub_valid_repo_id("gpt2"));
    assert_true(zhub_valid_repo_id("org/tiny.v1"));
    const char *bad[] = {"", "a/b/c", "../x", "a/..", "a--b/c", "a/b..c", ".a/b", "a/b-", "a/b.git", "a b/c", "a/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (zhub_valid_repo_id(bad[i])) fprintf(stderr, "accepted bad repo id '%s'\n", bad[i]);
        assert_false(zhub_valid_repo_id(bad[i]));
    }
    zhub_source src;
    char repo[256], rev[256];
    assert_int_equal(zhub_parse_spec("ms:org/x@v1.0", &src, repo, sizeof repo, rev, sizeof rev), 0);
    assert_int_equal(src, ZHUB_MODELSCOPE);
    assert_string_equal(repo, "org/x");
    assert_string_equal(rev, "v1.0");
    assert_int_equal(zhub_parse_spec("hf:org/x@refs/pr/1", &src, repo, sizeof repo, rev, sizeof rev), 0);
    assert_int_equal(src, ZHUB_HF);
    assert_string_equal(rev, "refs/pr/1");
    assert_int_not_equal(zhub_parse_spec("org/x@../../etc", &src, repo, sizeof repo, rev, sizeof rev), 0);
    assert_int_not_equal(zhub_parse_spec("org/x@", &src, repo, sizeof repo, rev, sizeof rev), 0);

    /* cache folder rules: HF_HUB_CACHE > HUGGINGFACE_HUB_CACHE > HF_HOME/hub > XDG_CACHE_HOME/huggingface/hub */
    zhub_opts o;
    zhub_opts_default(&o);
    char out[4096], *old_home = getenv("HF_HOME") ? strdup(getenv("HF_HOME")) : NULL;
    zerr e = {0};
    setenv("HF_HOME", "/x/hfh", 1);
    assert_int_equal(zhub_cache_root(&o, out, sizeof out, &e), 0);
    assert_string_equal(out, "/x/hfh/hub");
    setenv("HUGGINGFACE_HUB_CACHE", "/x/legacy", 1);
    assert_int_equal(zhub_cache_root(&o, out, sizeof out, &e), 0);
    assert_string_equal(out, "/x/legacy");
    setenv("ZTEST_ROOT", "/x/var", 1);
    setenv("HF_HUB_CACHE", "${ZTEST_ROOT}/c/", 1);
    assert_int_equal(zhub_cache_root(&o, out, sizeof out, &e), 0);
    assert_string_equal(out, "/x/var/c");
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    unsetenv("HF_HOME");
    setenv("XDG_CACHE_HOME", "/x/xdg", 1);
    assert_int_equal(zhub_cache_root(&o, out, sizeof out, &e), 0);
    assert_string_equal(out, "/x/xdg/huggingface/hub");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/x/home", 1);
    assert_int_equal(zhub_cache_root(&o, out, sizeof out, &e), 0);
    assert_string_equal(out, "/x/home/.cache/huggingface/hub");
    o.source = ZHUB_MODELSCOPE;
    assert_int_equal(zhub_cache_root(&o, out, sizeof out, &e), 0);
    assert_string_equal(out, "/x/home/.cache/modelscope/hub");
    o.cache_dir = "~/mine";
    assert_int_equal(zhub_cache_root(&o, out, sizeof out, &e), 0);
    assert_string_equal(out, "/x/home/mine");
    if (old_home) setenv("HF_HOME", old_home, 1);
    free(old_home);
    unsetenv("ZTEST_ROOT");

    char b[32];
    assert_string_equal(zhub_fmt_bytes(999, b, sizeof b), "999 B");
    assert_string_equal(zhub_fmt_bytes(33020000000ull, b, sizeof b), "33.0 GB");
}

/* ---- pulls --------------------------------------------------------------------------------- */

static void test_fresh_then_nothing(void **state) {
    (void)state;
    char cache[512];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    zhub_result r;
    zerr e = {0};
    hubsrv_reset_stats(g_srv);
    int rc = zhub_pull(REPO, NULL, &o, &r, &e);
    if (rc) fprintf(stderr, "pull: %s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(r.commit, g_tiny_commit);
    assert_int_equal(r.n_files, NWANTED);
    assert_int_equal(r.n_downloaded, NWANTED);
    assert_int_equal(r.bytes_downloaded, wanted_bytes());
    char want_snap[700];
    sfmt(want_snap, sizeof want_snap, "%s/models--org--tiny/snapshots/%s", cache, g_tiny_commit);
    assert_string_equal(r.snapshot, want_snap);
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
    hubsrv_stats st;
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.api_calls, 1);
    assert_int_equal(st.head_calls, NWANTED);
    assert_int_equal(st.content_gets, NWANTED);
    assert_int_equal(st.auth_seen, 0); /* no token configured: none sent */
    /* refs/main holds the commit, CACHEDIR.TAG is there */
    char p[700];
    size_t n;
    sfmt(p, sizeof p, "%s/models--org--tiny/refs/main", cache);
    unsigned char *ref = read_all(p, &n);
    assert_non_null(ref);
    assert_int_equal(n, 40);
    assert_memory_equal(ref, g_tiny_commit, 40);
    free(ref);
    sfmt(p, sizeof p, "%s/CACHEDIR.TAG", cache);
    assert_true(exists(p));

    /* second pull: one API call, no HEAD, no content */
    hubsrv_reset_stats(g_srv);
    rc = zhub_pull(REPO, "main", &o, &r, &e);
    assert_int_equal(rc, 0);
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.api_calls, 1);
    assert_int_equal(st.head_calls, 0);
    assert_int_equal(st.content_gets, 0);
    assert_int_equal(st.body_bytes, 0);
    assert_int_equal(r.n_downloaded, 0);
    assert_int_equal(r.n_cached, NWANTED);

    /* a pull by commit works too, and finds everything */
    hubsrv_reset_stats(g_srv);
    assert_int_equal(zhub_pull(REPO, g_tiny_commit, &o, &r, &e), 0);
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.content_gets, 0);

    /* a deleted snapshot entry is restored from the blob, without a transfer */
    sfmt(p, sizeof p, "%s/%s", want_snap, "vae/config.json");
    assert_int_equal(unlink(p), 0);
    hubsrv_reset_stats(g_srv);
    assert_int_equal(zhub_pull(REPO, NULL, &o, &r, &e), 0);
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.head_calls, 1);
    assert_int_equal(st.content_gets, 0);
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
}

static void test_interrupted_resume(void **state) {
    (void)state;
    char cache[512];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    o.retries = -1; /* no automatic resume: the pull fails like a killed process */
    o.jobs = 1;     /* the big file goes first and alone */
    zhub_result r;
    zerr e = {0};
    hubsrv_drop_after(g_srv, BIG, 1000000, 1);
    int rc = zhub_pull(REPO, NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_NETWORK);
    fprintf(stderr, "  expected failure: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "resumes"));
    const char *sha = hubsrv_file_sha256(g_srv, REPO, BIG);
    char part[800];
    sfmt(part, sizeof part, "%s/models--org--tiny/blobs/%s.incomplete", cache, sha);
    struct stat st0;
    assert_int_equal(stat(part, &st0), 0);
    assert_true(st0.st_size > 0 && st0.st_size <= 1000000);

    o.retries = 0;
    hubsrv_reset_stats(g_srv);
    rc = zhub_pull(REPO, NULL, &o, &r, &e);
    if (rc) fprintf(stderr, "pull: %s\n", e.msg);
    assert_int_equal(rc, 0);
    hubsrv_stats st;
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.range_gets, 1);
    assert_int_equal(st.last_range_start, st0.st_size);
    assert_int_equal(st.body_bytes, wanted_bytes() - (uint64_t)st0.st_size);
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
}

static void test_auto_resume(void **state) {
    (void)state;
    char cache[512];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    zhub_result r;
    zerr e = {0};
    hubsrv_reset_stats(g_srv);
    hubsrv_drop_after(g_srv, BIG, 700000, 1); /* dropped once, resumed within the same pull */
    int rc = zhub_pull(REPO, NULL, &o, &r, &e);
    if (rc) fprintf(stderr, "pull: %s\n", e.msg);
    assert_int_equal(rc, 0);
    hubsrv_stats st;
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.drops, 1);
    assert_int_equal(st.range_gets, 1);
    assert_true(st.last_range_start > 0 && st.last_range_start <= 700000);
    assert_int_equal(r.bytes_downloaded, wanted_bytes());
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
    hubsrv_drop_after(g_srv, "", 0, 0);

    /* a server that ignores Range: the file starts over and is still verified */
    new_cache(cache, sizeof cache);
    o = opts_for(cache);
    hubsrv_reset_stats(g_srv);
    hubsrv_ignore_range(g_srv, 1);
    hubsrv_drop_after(g_srv, BIG, 500000, 1);
    rc = zhub_pull(REPO, NULL, &o, &r, &e);
    hubsrv_ignore_range(g_srv, 0);
    if (rc) fprintf(stderr, "pull: %s\n", e.msg);
    assert_int_equal(rc, 0);
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.range_gets, 0);
    assert_int_equal(st.drops, 1);
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
}

static void test_corruption(void **state) {
    (void)state;
    char cache[512];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    zhub_result r;
    zerr e = {0};
    const char *vae = "vae/diffusion_pytorch_model.safetensors";
    hubsrv_corrupt(g_srv, vae, 123457, 1);
    int rc = zhub_pull(REPO, NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_NETWORK);
    fprintf(stderr, "  expected failure: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "corrupt"));
    assert_non_null(strstr(e.msg, vae));
    assert_non_null(strstr(e.msg, "deleted"));
    const char *sha = hubsrv_file_sha256(g_srv, REPO, vae);
    char p[800];
    sfmt(p, sizeof p, "%s/models--org--tiny/blobs/%s", cache, sha);
    assert_false(exists(p));
    sfmt(p, sizeof p, "%s/models--org--tiny/blobs/%s.incomplete", cache, sha);
    assert_false(exists(p));
    sfmt(p, sizeof p, "%s/models--org--tiny/snapshots/%s/%s", cache, g_tiny_commit, vae);
    assert_false(exists(p));
    /* the next pull gets a good copy */
    rc = zhub_pull(REPO, NULL, &o, &r, &e);
    if (rc) fprintf(stderr, "pull: %s\n", e.msg);
    assert_int_equal(rc, 0);
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
}

static void test_gated(void **state) {
    (void)state;
    char cache[512];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    zhub_result r;
    zerr e = {0};
    int rc = zhub_pull("org/gated", NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_NETWORK);
    fprintf(stderr, "  expected failure: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "HF_TOKEN"));
    assert_non_null(strstr(e.msg, "gated"));
    /* a wrong token: refused, and the token is not in the message */
    o.token = "hf_wrong_token_77";
    rc = zhub_pull("org/gated", NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_NETWORK);
    assert_non_null(strstr(e.msg, "HF_TOKEN"));
    assert_null(strstr(e.msg, "hf_wrong_token_77"));
    /* an unknown repo: 401 RepoNotFound, also pointing at HF_TOKEN */
    o.token = NULL;
    rc = zhub_pull("org/nope", NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_NETWORK);
    assert_non_null(strstr(e.msg, "HF_TOKEN"));
    /* the right token from the environment */
    setenv("HF_TOKEN", TOKEN, 1);
    hubsrv_reset_stats(g_srv);
    rc = zhub_pull("org/gated", NULL, &o, &r, &e);
    unsetenv("HF_TOKEN");
    if (rc) fprintf(stderr, "pull: %s\n", e.msg);
    assert_null(strstr(e.msg, TOKEN));
    assert_int_equal(rc, 0);
    hubsrv_stats st;
    hubsrv_get_stats(g_srv, &st);
    assert_true(st.auth_seen >= 1 + NWANTED);
    /* the token file ($HF_HOME/token) is read too */
    char home[600];
    sfmt(home, sizeof home, "%s/tokhome", g_tmp);
    mkdir(home, 0700);
    write_text(home, "token", TOKEN "\n");
    char *old = strdup(getenv("HF_HOME"));
    setenv("HF_HOME", home, 1);
    new_cache(cache, sizeof cache);
    o = opts_for(cache);
    rc = zhub_pull("org/gated", NULL, &o, &r, &e);
    setenv("HF_HOME", old, 1);
    free(old);
    assert_int_equal(rc, 0);
}

static void test_offline_and_unreachable(void **state) {
    (void)state;
    char cache[512];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    zhub_result r;
    zerr e = {0};
    assert_int_equal(zhub_pull(REPO, NULL, &o, &r, &e), 0);
    char snap[700];
    sfmt(snap, sizeof snap, "%s", r.snapshot);

    setenv("HF_HUB_OFFLINE", "1", 1);
    hubsrv_reset_stats(g_srv);
    int rc = zhub_pull(REPO, NULL, &o, &r, &e);
    assert_int_equal(rc, 0);
    assert_int_equal(r.offline, 1);
    assert_string_equal(r.snapshot, snap);
    char dir[4096];
    o.allow_download = 1;
    o.assume_yes = 1;
    assert_int_equal(zhub_resolve_model(REPO, &o, dir, sizeof dir, &e), 0);
    assert_string_equal(dir, snap);
    hubsrv_stats st;
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.api_calls + st.head_calls + st.content_gets, 0);
    rc = zhub_pull("org/gated", NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_IO);
    fprintf(stderr, "  expected failure: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "HF_HUB_OFFLINE"));
    rc = zhub_resolve_model("org/gated", &o, dir, sizeof dir, &e);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(e.msg, "HF_HUB_OFFLINE"));
    unsetenv("HF_HUB_OFFLINE");

    /* the Hub cannot be reached: the cached snapshot is used, with a note */
    o = opts_for(cache);
    o.endpoint = "http://127.0.0.1:1";
    rc = zhub_pull(REPO, NULL, &o, &r, &e);
    assert_int_equal(rc, 0);
    assert_int_equal(r.fallback, 1);
    assert_string_equal(r.snapshot, snap);
    assert_non_null(strstr(r.note, "cannot reach"));
    rc = zhub_pull("org/gated", NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_NETWORK);
    assert_non_null(strstr(e.msg, "cannot reach"));
}

/* The cache exactly as huggingface_hub 1.33 writes it (checked against
 * snapshot_download on this stand-in server): bare-hash ref files, blobs
 * named by etag, relative symlinks, .no_exist markers, refs for PRs. */
static void test_python_layout(void **state) {
    (void)state;
    char cache[512], rd[700], p[1200];
    new_cache(cache, sizeof cache);
    sfmt(rd, sizeof rd, "%s/models--org--pylayout", cache);
    const char *commit = "0123456789abcdef0123456789abcdef01234567";
    const char *old_commit = "89abcdef0123456789abcdef0123456789abcdef";
    struct {
        const char *path, *blob, *content;
    } fl[] = {
        {"model_index.json", "ef315ec8064ece9454815dc30f47bb21b8020c5a",
         "{\"transformer\":[\"diffusers\",\"ZImageTransformer2DModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"],"
         "\"tokenizer\":[\"transformers\",\"Qwen2Tokenizer\"],\"_class_name\":\"ZImagePipeline\"}"},
        {"transformer/config.json", "0187f3b09d66cef7911083ad49f890f5a6589589", "{}"},
        {"transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
         "a854b00ae90198976f7177b13c60f41999351c5bef48ef0788deb1427be2578e", "shard1"},
        {"transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
         "c1ba4f012c0a1dcfe8ad4e087eb30046238b20be3771e5a39730e953281f089f", "shard2"},
        {"transformer/diffusion_pytorch_model.safetensors.index.json", "e3a2cfc9ea3e81764877af4729a04dbe8fcfbd62",
         "{\"weight_map\":{\"a\":\"diffusion_pytorch_model-00001-of-00002.safetensors\","
         "\"b\":\"diffusion_pytorch_model-00002-of-00002.safetensors\"}}"},
        {"vae/config.json", "fcc431ecba7b9242b51ef8a271a198e813e68879", "{}"},
        {"vae/diffusion_pytorch_model.safetensors", "2ca7e8f75f6d45a25507876894f242b235e4d4c9376b1f579a8edbe358af4423", "vae"},
        {"tokenizer/tokenizer.json", "30ca0ed1b4976fb4482662debc29195b893df44e", "{}"},
        {"README.md", "89931ee4751c9760ea2cbc91fb7de861af209012", "# hi"},
    };
    int nfl = (int)(sizeof fl / sizeof *fl);
    char blobs[800];
    sfmt(blobs, sizeof blobs, "%s/blobs", rd);
    for (int i = 0; i < nfl; i++) write_text(blobs, fl[i].blob, fl[i].content);
    for (int s = 0; s < 2; s++) {
        const char *c = s ? old_commit : commit;
        for (int i = 0; i < nfl; i++) {
            char sd[900];
            sfmt(sd, sizeof sd, "%s/snapshots/%s", rd, c);
            write_text(sd, fl[i].path, ""); /* makes the folders */
            sfmt(p, sizeof p, "%s/%s", sd, fl[i].path);
            unlink(p);
            char target[300] = "";
            for (const char *q = fl[i].path; *q; q++)
                if (*q == '/') strcat(target, "../");
            strcat(target, "../../blobs/");
            strcat(target, fl[i].blob);
            assert_int_equal(symlink(target, p), 0);
        }
    }
    write_text(rd, "refs/main", commit);              /* no newline, as huggingface_hub writes it */
    write_text(rd, "refs/refs/pr/1", old_commit);
    sfmt(p, sizeof p, ".no_exist/%s/vae/diffusion_pytorch_model.fp16.safetensors", commit);
    write_text(rd, p, "");
    write_text(cache, ".locks/models--org--pylayout/ef315ec8064ece9454815dc30f47bb21b8020c5a.lock", "");

    zhub_opts o;
    zhub_opts_default(&o);
    o.cache_dir = cache;
    o.offline = 1;
    char dir[4096], want[1000];
    zerr e = {0};
    int rc = zhub_find_cached("org/pylayout", NULL, &o, dir, sizeof dir, &e);
    if (rc) fprintf(stderr, "find_cached: %s\n", e.msg);
    assert_int_equal(rc, 0);
    sfmt(want, sizeof want, "%s/snapshots/%s", rd, commit);
    assert_string_equal(dir, want);
    assert_int_equal(zhub_resolve_model("org/pylayout", &o, dir, sizeof dir, &e), 0);
    assert_string_equal(dir, want);
    assert_int_equal(zhub_resolve_model("org/pylayout@refs/pr/1", &o, dir, sizeof dir, &e), 0);
    sfmt(want, sizeof want, "%s/snapshots/%s", rd, old_commit);
    assert_string_equal(dir, want);
    sfmt(p, sizeof p, "hf:org/pylayout@%s", old_commit);
    assert_int_equal(zhub_resolve_model(p, &o, dir, sizeof dir, &e), 0);
    assert_string_equal(dir, want);
    /* a local folder is returned as is */
    assert_int_equal(zhub_resolve_model(want, &o, dir, sizeof dir, &e), 0);
    assert_string_equal(dir, want);
    /* a missing shard blob: the snapshot is incomplete and the message names the file */
    sfmt(p, sizeof p, "%s/%s", blobs, fl[3].blob);
    assert_int_equal(unlink(p), 0);
    rc = zhub_find_cached("org/pylayout", "main", &o, dir, sizeof dir, &e);
    assert_int_not_equal(rc, 0);
    fprintf(stderr, "  expected failure: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "00002-of-00002"));
    o.offline = 0;
    o.allow_download = 0;
    rc = zhub_resolve_model("org/pylayout", &o, dir, sizeof dir, &e);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(e.msg, "zimage pull"));
    /* not a folder and not a repo id */
    rc = zhub_resolve_model("./no/such/folder", &o, dir, sizeof dir, &e);
    assert_int_equal(rc, ZE_INVALID);
    rc = zhub_resolve_model("justaword", &o, dir, sizeof dir, &e);
    assert_int_equal(rc, ZE_INVALID);
}

typedef struct {
    int calls, answer;
    zhub_plan plan;
} confirm_state;
static int confirm_cb(const zhub_plan *p, void *user) {
    confirm_state *c = user;
    c->calls++;
    c->plan = *p;
    return c->answer;
}

static void test_resolve_pull(void **state) {
    (void)state;
    char cache[512], dir[4096];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    o.quiet = 1;
    zerr e = {0};
    /* no download allowed */
    int rc = zhub_resolve_model(REPO, &o, dir, sizeof dir, &e);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(e.msg, "zimage pull"));
    /* without a terminal and without --yes: told what to do, nothing fetched */
    o.allow_download = 1;
    hubsrv_reset_stats(g_srv);
    if (!isatty(STDIN_FILENO)) {
        rc = zhub_resolve_model(REPO, &o, dir, sizeof dir, &e);
        assert_int_not_equal(rc, 0);
        assert_non_null(strstr(e.msg, "--yes"));
        assert_non_null(strstr(e.msg, "zimage pull"));
    }
    /* the confirmation sees the size; "no" fetches nothing */
    confirm_state cs = {0, 0, {0}};
    o.confirm = confirm_cb;
    o.confirm_user = &cs;
    rc = zhub_resolve_model(REPO, &o, dir, sizeof dir, &e);
    assert_int_equal(rc, ZE_CANCELLED);
    assert_int_equal(cs.calls, 1);
    assert_int_equal(cs.plan.n_fetch, NWANTED);
    assert_int_equal(cs.plan.fetch_bytes, wanted_bytes());
    hubsrv_stats st;
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.content_gets, 0);
    /* "yes" */
    cs.answer = 1;
    rc = zhub_resolve_model(REPO, &o, dir, sizeof dir, &e);
    if (rc) fprintf(stderr, "resolve: %s\n", e.msg);
    assert_int_equal(rc, 0);
    char want[700];
    sfmt(want, sizeof want, "%s/models--org--tiny/snapshots/%s", cache, g_tiny_commit);
    assert_string_equal(dir, want);
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
    /* now cached: no network at all */
    hubsrv_reset_stats(g_srv);
    cs.calls = 0;
    assert_int_equal(zhub_resolve_model(REPO, &o, dir, sizeof dir, &e), 0);
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.api_calls + st.head_calls + st.content_gets, 0);
    assert_int_equal(cs.calls, 0);
    /* --yes on another cache: no question asked */
    new_cache(cache, sizeof cache);
    o = opts_for(cache);
    o.quiet = 1;
    o.allow_download = 1;
    o.assume_yes = 1;
    assert_int_equal(zhub_resolve_model(REPO "@main", &o, dir, sizeof dir, &e), 0);
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
}

typedef struct {
    char cache[512];
    int rc;
    zerr e;
} thr_arg;
static void *pull_thread(void *p) {
    thr_arg *a = p;
    zhub_opts o = opts_for(a->cache);
    zhub_result r;
    a->rc = zhub_pull(REPO, NULL, &o, &r, &a->e);
    return NULL;
}

static void test_concurrent(void **state) {
    (void)state;
    thr_arg a[2];
    new_cache(a[0].cache, sizeof a[0].cache);
    sfmt(a[1].cache, sizeof a[1].cache, "%s", a[0].cache);
    hubsrv_reset_stats(g_srv);
    hubsrv_set_delay(g_srv, 4); /* ~130 ms for the big file: the pulls overlap */
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        memset(&a[i].e, 0, sizeof a[i].e);
        assert_int_equal(pthread_create(&t[i], NULL, pull_thread, &a[i]), 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    hubsrv_set_delay(g_srv, 0);
    for (int i = 0; i < 2; i++) {
        if (a[i].rc) fprintf(stderr, "pull %d: %s\n", i, a[i].e.msg);
        assert_int_equal(a[i].rc, 0);
    }
    hubsrv_stats st;
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.content_gets, NWANTED); /* every blob fetched once: the locks held */
    check_snapshot(a[0].cache, "models--org--tiny", g_tiny_commit);
}

static void test_space_and_safety(void **state) {
    (void)state;
    char cache[512];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    zhub_result r;
    zerr e = {0};
    o.test_free_bytes = 1000;
    hubsrv_reset_stats(g_srv);
    int rc = zhub_pull(REPO, NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_IO);
    fprintf(stderr, "  expected failure: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "not enough free disk space"));
    hubsrv_stats st;
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.content_gets, 0);

    /* a file name that climbs out of the snapshot is refused */
    o.test_free_bytes = 0;
    rc = zhub_pull("org/unsafe", NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_FORMAT);
    fprintf(stderr, "  expected failure: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "unsafe"));
    char p[700];
    sfmt(p, sizeof p, "%s/evil.json", g_tmp);
    assert_false(exists(p));
    /* so is an etag that would name a blob outside blobs/ */
    hubsrv_override_etag(g_srv, "vae/config.json", "\"../../../evil\"");
    rc = zhub_pull(REPO, NULL, &o, &r, &e);
    hubsrv_override_etag(g_srv, NULL, NULL);
    assert_int_equal(rc, ZE_NETWORK);
    assert_non_null(strstr(e.msg, "unsafe ETag"));
    /* weak etags are normalised like huggingface_hub does (W/"x" -> x) */
    const char *sha = hubsrv_file_sha256(g_srv, REPO, "vae/diffusion_pytorch_model.safetensors");
    char weak[128];
    sfmt(weak, sizeof weak, "W/\"%s\"", sha);
    hubsrv_override_etag(g_srv, "vae/diffusion_pytorch_model.safetensors", weak);
    rc = zhub_pull(REPO, NULL, &o, &r, &e);
    hubsrv_override_etag(g_srv, NULL, NULL);
    if (rc) fprintf(stderr, "pull: %s\n", e.msg);
    assert_int_equal(rc, 0);
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
}

typedef struct {
    int plan, done, file_done, ticks, cached, cancel_at;
    uint64_t last_bytes, total;
} prog_state;
static int prog_cb(const zhub_progress *p, void *user) {
    prog_state *s = user;
    switch (p->event) {
    case ZHUB_EV_PLAN: s->plan++, s->total = p->bytes_total; break;
    case ZHUB_EV_DONE: s->done++; break;
    case ZHUB_EV_FILE_DONE: s->file_done++; break;
    case ZHUB_EV_FILE_CACHED: s->cached++; break;
    case ZHUB_EV_TICK: s->ticks++; break;
    default: break;
    }
    s->last_bytes = p->bytes_done;
    return s->cancel_at && p->bytes_done >= (uint64_t)s->cancel_at;
}

static void test_progress_cancel(void **state) {
    (void)state;
    char cache[512];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    zhub_result r;
    zerr e = {0};
    prog_state ps = {0};
    ps.cancel_at = 400000;
    o.progress = prog_cb;
    o.progress_user = &ps;
    hubsrv_set_delay(g_srv, 2);
    int rc = zhub_pull(REPO, NULL, &o, &r, &e);
    hubsrv_set_delay(g_srv, 0);
    assert_int_equal(rc, ZE_CANCELLED);
    char blobs[700];
    sfmt(blobs, sizeof blobs, "%s/models--org--tiny/blobs", cache);
    assert_true(count_incomplete(blobs, NULL, 0) >= 1); /* kept for the next pull */
    memset(&ps, 0, sizeof ps);
    rc = zhub_pull(REPO, NULL, &o, &r, &e);
    assert_int_equal(rc, 0);
    assert_int_equal(ps.plan, 1);
    assert_int_equal(ps.done, 1);
    assert_int_equal(ps.file_done, r.n_downloaded);
    assert_int_equal(ps.file_done + ps.cached, NWANTED);
    assert_int_equal(ps.last_bytes, r.bytes_downloaded);
    assert_true(ps.total <= wanted_bytes());
    check_snapshot(cache, "models--org--tiny", g_tiny_commit);
}

/* pickle.dumps([{'Path': p, 'Revision': 'c0ffee' + '0' * 34} for p in WANTED]), Python 3.11
 * (protocol 4, with FRAME, MEMOIZE and BINGET), as modelscope writes .msc */
static const unsigned char PY_MSC[] =
    "\x80\x04\x95\x4a\x02\x00\x00\x00\x00\x00\x00\x5d\x94\x28\x7d\x94\x28\x8c\x04\x50\x61\x74\x68\x94"
    "\x8c\x10\x6d\x6f\x64\x65\x6c\x5f\x69\x6e\x64\x65\x78\x2e\x6a\x73\x6f\x6e\x94\x8c\x08\x52\x65\x76"
    "\x69\x73\x69\x6f\x6e\x94\x8c\x28\x63\x30\x66\x66\x65\x65\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30"
    "\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30"
    "\x94\x75\x7d\x94\x28\x68\x02\x8c\x1f\x73\x63\x68\x65\x64\x75\x6c\x65\x72\x2f\x73\x63\x68\x65\x64"
    "\x75\x6c\x65\x72\x5f\x63\x6f\x6e\x66\x69\x67\x2e\x6a\x73\x6f\x6e\x94\x68\x04\x68\x05\x75\x7d\x94"
    "\x28\x68\x02\x8c\x18\x74\x65\x78\x74\x5f\x65\x6e\x63\x6f\x64\x65\x72\x2f\x63\x6f\x6e\x66\x69\x67"
    "\x2e\x6a\x73\x6f\x6e\x94\x68\x04\x68\x05\x75\x7d\x94\x28\x68\x02\x8c\x2d\x74\x65\x78\x74\x5f\x65"
    "\x6e\x63\x6f\x64\x65\x72\x2f\x6d\x6f\x64\x65\x6c\x2d\x30\x30\x30\x30\x31\x2d\x6f\x66\x2d\x30\x30"
    "\x30\x30\x32\x2e\x73\x61\x66\x65\x74\x65\x6e\x73\x6f\x72\x73\x94\x68\x04\x68\x05\x75\x7d\x94\x28"
    "\x68\x02\x8c\x2d\x74\x65\x78\x74\x5f\x65\x6e\x63\x6f\x64\x65\x72\x2f\x6d\x6f\x64\x65\x6c\x2d\x30"
    "\x30\x30\x30\x32\x2d\x6f\x66\x2d\x30\x30\x30\x30\x32\x2e\x73\x61\x66\x65\x74\x65\x6e\x73\x6f\x72"
    "\x73\x94\x68\x04\x68\x05\x75\x7d\x94\x28\x68\x02\x8c\x29\x74\x65\x78\x74\x5f\x65\x6e\x63\x6f\x64"
    "\x65\x72\x2f\x6d\x6f\x64\x65\x6c\x2e\x73\x61\x66\x65\x74\x65\x6e\x73\x6f\x72\x73\x2e\x69\x6e\x64"
    "\x65\x78\x2e\x6a\x73\x6f\x6e\x94\x68\x04\x68\x05\x75\x7d\x94\x28\x68\x02\x8c\x14\x74\x6f\x6b\x65"
    "\x6e\x69\x7a\x65\x72\x2f\x6d\x65\x72\x67\x65\x73\x2e\x74\x78\x74\x94\x68\x04\x68\x05\x75\x7d\x94"
    "\x28\x68\x02\x8c\x18\x74\x6f\x6b\x65\x6e\x69\x7a\x65\x72\x2f\x74\x6f\x6b\x65\x6e\x69\x7a\x65\x72"
    "\x2e\x6a\x73\x6f\x6e\x94\x68\x04\x68\x05\x75\x7d\x94\x28\x68\x02\x8c\x17\x74\x72\x61\x6e\x73\x66"
    "\x6f\x72\x6d\x65\x72\x2f\x63\x6f\x6e\x66\x69\x67\x2e\x6a\x73\x6f\x6e\x94\x68\x04\x68\x05\x75\x7d"
    "\x94\x28\x68\x02\x8c\x2f\x74\x72\x61\x6e\x73\x66\x6f\x72\x6d\x65\x72\x2f\x64\x69\x66\x66\x75\x73"
    "\x69\x6f\x6e\x5f\x70\x79\x74\x6f\x72\x63\x68\x5f\x6d\x6f\x64\x65\x6c\x2e\x73\x61\x66\x65\x74\x65"
    "\x6e\x73\x6f\x72\x73\x94\x68\x04\x68\x05\x75\x7d\x94\x28\x68\x02\x8c\x0f\x76\x61\x65\x2f\x63\x6f"
    "\x6e\x66\x69\x67\x2e\x6a\x73\x6f\x6e\x94\x68\x04\x68\x05\x75\x7d\x94\x28\x68\x02\x8c\x27\x76\x61"
    "\x65\x2f\x64\x69\x66\x66\x75\x73\x69\x6f\x6e\x5f\x70\x79\x74\x6f\x72\x63\x68\x5f\x6d\x6f\x64\x65"
    "\x6c\x2e\x73\x61\x66\x65\x74\x65\x6e\x73\x6f\x72\x73\x94\x68\x04\x68\x05\x75\x65\x2e";

static void test_modelscope(void **state) {
    (void)state;
    char cache[512];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    o.source = ZHUB_MODELSCOPE;
    zhub_result r;
    zerr e = {0};
    hubsrv_reset_stats(g_srv);
    int rc = zhub_pull("org/tiny.v1", NULL, &o, &r, &e);
    if (rc) fprintf(stderr, "pull: %s\n", e.msg);
    assert_int_equal(rc, 0);
    char md[700];
    sfmt(md, sizeof md, "%s/models/org/tiny___v1", cache);
    assert_string_equal(r.snapshot, md);
    assert_int_equal(r.n_downloaded, NWANTED);
    for (int i = 0; i < NWANTED; i++) {
        char got[1024], want[1024];
        sfmt(got, sizeof got, "%s/%s", md, WANTED[i]);
        sfmt(want, sizeof want, "%s/%s", g_src, WANTED[i]);
        assert_same_file(got, want);
    }
    for (size_t i = 0; i < sizeof SKIPPED / sizeof *SKIPPED; i++) {
        char p[1024];
        sfmt(p, sizeof p, "%s/%s", md, SKIPPED[i]);
        assert_false(exists(p));
    }
    char p[800];
    sfmt(p, sizeof p, "%s/.msc", md);
    assert_true(exists(p));
    sfmt(p, sizeof p, "%s/.mdl", md);
    assert_true(exists(p));
    /* second pull: our .msc says everything is there */
    hubsrv_reset_stats(g_srv);
    assert_int_equal(zhub_pull("org/tiny.v1", NULL, &o, &r, &e), 0);
    hubsrv_stats st;
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.content_gets, 0);
    assert_int_equal(r.n_downloaded, 0);
    /* a .msc written by Python's pickle is read the same way */
    write_file(md, ".msc", PY_MSC, sizeof PY_MSC);
    hubsrv_reset_stats(g_srv);
    assert_int_equal(zhub_pull("org/tiny.v1", NULL, &o, &r, &e), 0);
    hubsrv_get_stats(g_srv, &st);
    assert_int_equal(st.content_gets, 0);
    /* resolve from the ModelScope cache; offline too */
    char dir[4096];
    setenv("HF_HUB_OFFLINE", "1", 1);
    rc = zhub_resolve_model("modelscope:org/tiny.v1", &o, dir, sizeof dir, &e);
    unsetenv("HF_HUB_OFFLINE");
    assert_int_equal(rc, 0);
    assert_string_equal(dir, md);
    /* the layout of modelscope >= 1.38 (modelscope_hub) is found too */
    char nd[800];
    sfmt(nd, sizeof nd, "%s/models/org--newsdk/snapshots/master", cache);
    write_text(nd, "model_index.json", "{\"_class_name\":\"ZImagePipeline\",\"scheduler\":[\"diffusers\",\"X\"]}");
    write_text(nd, "scheduler/scheduler_config.json", "{}");
    setenv("HF_HUB_OFFLINE", "1", 1);
    rc = zhub_resolve_model("ms:org/newsdk", &o, dir, sizeof dir, &e);
    unsetenv("HF_HUB_OFFLINE");
    if (rc) fprintf(stderr, "resolve: %s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(dir, nd);
    /* a changed file (no .msc record, wrong hash) is fetched again; corruption is caught */
    write_text(md, "vae/config.json", "{\"latent_channels\":99}\n");
    write_file(md, ".msc", "\x80\x02]\x2e", 4); /* an empty list */
    sfmt(p, sizeof p, "%s/text_encoder/model-00002-of-00002.safetensors", md);
    assert_int_equal(unlink(p), 0);
    hubsrv_corrupt(g_srv, "text_encoder/model-00002-of-00002.safetensors", 5, 1);
    rc = zhub_pull("org/tiny.v1", NULL, &o, &r, &e);
    assert_int_equal(rc, ZE_NETWORK);
    assert_non_null(strstr(e.msg, "corrupt"));
    rc = zhub_pull("org/tiny.v1", NULL, &o, &r, &e);
    if (rc) fprintf(stderr, "pull: %s\n", e.msg);
    assert_int_equal(rc, 0);
    for (int i = 0; i < NWANTED; i++) {
        char got[1024], want[1024];
        sfmt(got, sizeof got, "%s/%s", md, WANTED[i]);
        sfmt(want, sizeof want, "%s/%s", g_src, WANTED[i]);
        assert_same_file(got, want);
    }
}

/* The engine's tiny fixture, served as Tongyi-MAI/Z-Image-Turbo and pulled
 * the way `zimage -m Tongyi-MAI/Z-Image-Turbo --yes` does. */
static int cmp_tree(const char *got_root, const char *want_root, const char *rel, int *n) {
    char w[1024];
    sfmt(w, sizeof w, "%s%s%s", want_root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(w);
    if (!d) return -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char r2[1024], wp[2048], gp[2048];
        sfmt(r2, sizeof r2, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
        sfmt(wp, sizeof wp, "%s/%s", want_root, r2);
        sfmt(gp, sizeof gp, "%s/%s", got_root, r2);
        struct stat st;
        if (stat(wp, &st)) continue;
        if (S_ISDIR(st.st_mode))
            cmp_tree(got_root, want_root, r2, n);
        else {
            assert_same_file(gp, wp);
            (*n)++;
        }
    }
    closedir(d);
    return 0;
}

static void test_tiny_fixture(void **state) {
    (void)state;
    if (!g_have_tiny_a) {
        fprintf(stderr, "  skipped: %s missing\n", fixture_path("models/tiny-a"));
        skip();
    }
    char cache[512], dir[4096];
    new_cache(cache, sizeof cache);
    zhub_opts o = opts_for(cache);
    o.allow_download = 1;
    o.assume_yes = 1;
    o.quiet = 1;
    zerr e = {0};
    int rc = zhub_resolve_model(ZHUB_DEFAULT_REPO, &o, dir, sizeof dir, &e);
    if (rc) fprintf(stderr, "resolve: %s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(dir, "/models--Tongyi-MAI--Z-Image-Turbo/snapshots/"));
    int n = 0;
    assert_int_equal(cmp_tree(dir, fixture_path("models/tiny-a"), "", &n), 0);
    assert_true(n >= 10);
    /* the pulled snapshot loads and generates exactly what diffusers made
     * from the original folder (the "plain" golden of test_pipeline) */
    zimage_options zo = ZIMAGE_OPTIONS_DEFAULT;
    zo.model = dir;
    zo.device = "cpu";
    zo.threads = 2;
    zimage_ctx *ctx = NULL;
    char err[1024];
    rc = zimage_create(&ctx, &zo, err, sizeof err);
    if (rc) fprintf(stderr, "zimage_create(%s): %s\n", dir, err);
    assert_int_equal(rc, 0);
    zimage_params zp = ZIMAGE_PARAMS_DEFAULT;
    zp.prompt = "a red fox in the snow";
    zp.width = 64;
    zp.height = 48;
    zp.steps = 8;
    zp.seed = 42;
    zimage_result res;
    rc = zimage_generate(ctx, &zp, &res);
    if (rc) fprintf(stderr, "zimage_generate: %s\n", zimage_errmsg(ctx));
    assert_int_equal(rc, 0);
    npy_array px = {0};
    assert_int_equal(npy_read(fixture_path("golden/pipe/plain/pixels.npy"), &px, &e), 0);
    assert_int_equal(px.dtype, NPY_U8);
    size_t per = (size_t)zp.width * zp.height * 3;
    assert_int_equal((size_t)npy_numel(&px), per);
    int maxd = 0;
    for (size_t i = 0; i < per; i++) {
        int d = abs((int)res.images[0][i] - (int)((const uint8_t *)px.data)[i]);
        if (d > maxd) maxd = d;
    }
    fprintf(stderr, "  generated from the pulled snapshot: max |dpixel| vs diffusers golden = %d (tolerance 1)\n", maxd);
    assert_true(maxd <= 1);
    npy_free(&px);
    zimage_result_free(&res);
    zimage_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_fresh_then_nothing),
        cmocka_unit_test(test_interrupted_resume),
        cmocka_unit_test(test_auto_resume),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_gated),
        cmocka_unit_test(test_offline_and_unreachable),
        cmocka_unit_test(test_python_layout),
        cmocka_unit_test(test_resolve_pull),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_space_and_safety),
        cmocka_unit_test(test_progress_cancel),
        cmocka_unit_test(test_modelscope),
        cmocka_unit_test(test_tiny_fixture),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
