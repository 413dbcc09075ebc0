/* test_png.c - src/io/png.c: zimg_to_u8, zimage_write_png, zimage_infotext.
 *
 * - zimg_to_u8 against diffusers' own pixels ($ZIMAGE_FIXTURES/golden/pipe/
 *   <case>/image.npy -> pixels.npy, exact), fixed boundary values and every
 *   exact half-LSB tie (round half to even).
 * - PNG round trip through libpng's reader: pixels equal, the "parameters"
 *   chunk holds the text (tEXt for Latin-1 text, iTXt otherwise), no chunk
 *   without text.
 * - Unwritable paths give ZIMAGE_EIO with a message and leave nothing behind;
 *   an existing file is replaced only by a complete one.
 * - Infotext in A1111's format.
 * - Encode time at 1024x1024 for a noise image, a photo-like image and a
 *   smooth gradient (printed; ZIMAGE_PNG_SWEEP=1 also prints the sweep over
 *   zlib level / filter / strategy behind the default choice).
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/png.h"
#include "util/testutil.h"
#include "zimage.h"

static char g_dir[64];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/zimage_test_png.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static void rm_rf(const char *d) {
    DIR *dp = opendir(d);
    if (!dp) return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(dp))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", d, de->d_name);
        struct stat st;
        if (!lstat(p, &st) && S_ISDIR(st.st_mode)) rm_rf(p);
        else unlink(p);
    }
    closedir(dp);
    rmdir(d);
}

static int teardown(void **state) {
    (void)state;
    rm_rf(g_dir);
    return 0;
}

/* Number of entries in a folder (without . and ..). */
static int count_entries(const char *d) {
    DIR *dp = opendir(d);
    if (!dp) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dp)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(dp);
    return n;
}

/* ---- reading back -------------------------------------------------------- */

typedef struct readback {
    int w, h;
    uint8_t *rgb;
    char *text;       /* "parameters" text, malloc'd, or NULL */
    int text_kind;    /* PNG_TEXT_COMPRESSION_NONE (tEXt), PNG_ITXT_COMPRESSION_NONE (iTXt), ... */
    int n_text;
} readback;

static void read_png(const char *path, readback *r) {
    memset(r, 0, sizeof *r);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_true(png && info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng could not read %s", path);
    png_init_io(png, fp);
    png_read_info(png, info);
    assert_int_equal(png_get_bit_depth(png, info), 8);
    assert_int_equal(png_get_color_type(png, info), PNG_COLOR_TYPE_RGB);
    r->w = (int)png_get_image_width(png, info);
    r->h = (int)png_get_image_height(png, info);
    png_textp t;
    int nt = 0;
    png_get_text(png, info, &t, &nt);
    r->n_text = nt;
    for (int i = 0; i < nt; i++)
        if (!strcmp(t[i].key, "parameters")) {
            r->text = strdup(t[i].text);
            r->text_kind = t[i].compression;
        }
    r->rgb = malloc((size_t)r->w * r->h * 3);
    for (int y = 0; y < r->h; y++) png_read_row(png, r->rgb + (size_t)y * r->w * 3, NULL);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(fp);
}

static void free_rb(readback *r) {
    free(r->rgb);
    free(r->text);
}

static uint8_t *make_image(int w, int h, int kind) {
    uint8_t *p = malloc((size_t)w * h * 3);
    uint32_t s = 2463534242u;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                double v;
                if (kind == 0) v = s & 255; /* noise */
                else if (kind == 1)        /* photo-like: shapes + texture + a little noise */
                    v = 128 + 60 * sin(x * 0.013 + c) * cos(y * 0.021) + 30 * sin((x + 2 * y) * 0.11) +
                        ((s & 15) - 7.5);
                else v = (x * 255.0 / w) * (c != 1) + (y * 255.0 / h) * (c != 0); /* smooth */
                if (v < 0) v = 0;
                if (v > 255) v = 255;
                p[((size_t)y * w + x) * 3 + c] = (uint8_t)v;
            }
    return p;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_to_u8_boundaries(void **state) {
    (void)state;
    const float in[] = {-1.0f, 1.0f, -2.0f, 2.0f, 0.0f, -0.0f, NAN, INFINITY, -INFINITY, 1e-30f, -0.9999999f};
    const uint8_t want[] = {0, 255, 0, 255, 128 /* 127.5 -> even */, 128, 0, 255, 0, 128, 0};
    uint8_t out[sizeof want];
    zimg_to_u8(in, out, sizeof want);
    for (size_t i = 0; i < sizeof want; i++) {
        if (out[i] != want[i]) fprintf(stderr, "    [%zu] in %g: got %d want %d\n", i, in[i], out[i], want[i]);
        assert_int_equal(out[i], want[i]);
    }
    /* every input x whose y*255 is exactly k + 0.5 (a tie): half to even */
    int ties = 0, checked = 0;
    for (int k = 0; k < 255; k++) {
        float target = (float)k + 0.5f;
        float y0 = target / 255.0f;
        for (int d = -40; d <= 40; d++) {
            uint32_t b;
            memcpy(&b, &y0, 4);
            b += (uint32_t)d;
            float y;
            memcpy(&y, &b, 4);
            if (y * 255.0f != target) continue;
            /* an x that maps to this y: x = 2*(y - 0.5), check it does */
            float x = (y - 0.5f) * 2.0f;
            volatile float h = x * 0.5f;
            volatile float yy = h + 0.5f;
            if (yy != y) continue;
            uint8_t u;
            zimg_to_u8(&x, &u, 1);
            int even = (k % 2 == 0) ? k : k + 1;
            if (u != even) fprintf(stderr, "    tie k=%d x=%.9g: got %d want %d\n", k, x, u, even);
            assert_int_equal(u, even);
            ties++;
        }
    }
    /* and a dense sweep against a plain reference */
    for (float x = -1.05f; x <= 1.05f; x += 1.0f / 4096.0f) {
        volatile float h = x * 0.5f;
        volatile float y = h + 0.5f;
        float yc = y < 0 ? 0 : (y > 1 ? 1 : y);
        volatile float s = yc * 255.0f;
        double r = floor((double)s);
        double fr = (double)s - r;
        int want_u = (int)r + (fr > 0.5 || (fr == 0.5 && ((int)r & 1)));
        uint8_t u;
        zimg_to_u8(&x, &u, 1);
        assert_int_equal(u, want_u);
        checked++;
    }
    printf("  to_u8: %d exact half-LSB ties rounded to even, %d sweep values\n", ties, checked);
    assert_true(ties > 100);
}

static void test_to_u8_diffusers(void **state) {
    (void)state;
    static const char *cases[] = {"plain", "batch", "bigseed", "cfg", "tiny-b"};
    int done = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *ip = fixture_path("golden/pipe/%s/image.npy", cases[c]);
        const char *pp = fixture_path("golden/pipe/%s/pixels.npy", cases[c]);
        if (!fixture_exists(ip) || !fixture_exists(pp)) continue;
        npy_array img, pix;
        load_npy_f32(ip, &img);
        zerr e = {0};
        assert_int_equal(npy_read(pp, &pix, &e), 0);
        assert_int_equal(pix.dtype, NPY_U8);
        size_t n = (size_t)npy_numel(&img);
        assert_int_equal(n, (size_t)npy_numel(&pix));
        uint8_t *u = malloc(n);
        zimg_to_u8(img.data, u, n);
        size_t bad = 0;
        const uint8_t *w = pix.data;
        for (size_t i = 0; i < n; i++)
            if (u[i] != w[i]) {
                if (bad < 8)
                    fprintf(stderr, "    %s [%zu]: x %.9g got %d want %d\n", cases[c], i, ((float *)img.data)[i], u[i],
                            w[i]);
                bad++;
            }
        printf("  to_u8 vs diffusers pixels, case %-8s %6zu values, %zu mismatches (tolerance 0)\n", cases[c], n, bad);
        assert_int_equal(bad, 0);
        free(u);
        npy_free(&img);
        npy_free(&pix);
        done++;
    }
    if (!done) {
        printf("  SKIP: no golden/pipe/*/image.npy + pixels.npy under %s\n", fixture_path("%s", ""));
        skip();
    }
}

static void test_roundtrip(void **state) {
    (void)state;
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/a.png", g_dir);
    const int w = 67, h = 45;
    uint8_t *img = make_image(w, h, 0);
    const char *text = "a red fox\nNegative prompt: blurry\nSteps: 8, Sampler: Euler, Seed: 42";
    assert_int_equal(zimage_write_png(path, img, w, h, text, err, sizeof err), 0);
    assert_string_equal(err, "");
    readback r;
    read_png(path, &r);
    assert_int_equal(r.w, w);
    assert_int_equal(r.h, h);
    assert_memory_equal(r.rgb, img, (size_t)w * h * 3);
    assert_non_null(r.text);
    assert_string_equal(r.text, text);
    assert_int_equal(r.text_kind, PNG_TEXT_COMPRESSION_NONE); /* tEXt */
    free_rb(&r);

    /* Latin-1 text: tEXt with Latin-1 bytes (PIL does the same) */
    assert_int_equal(zimage_write_png(path, img, w, h, "caf\xc3\xa9 cr\xc3\xa8me", err, sizeof err), 0);
    read_png(path, &r);
    assert_string_equal(r.text, "caf\xe9 cr\xe8me");
    assert_int_equal(r.text_kind, PNG_TEXT_COMPRESSION_NONE);
    free_rb(&r);

    /* beyond Latin-1: iTXt, UTF-8 */
    const char *zh = "\xe4\xb8\x80\xe5\x8f\xaa\xe7\x8b\x90\xe7\x8b\xb8 (a fox)\nSteps: 8";
    assert_int_equal(zimage_write_png(path, img, w, h, zh, err, sizeof err), 0);
    read_png(path, &r);
    assert_string_equal(r.text, zh);
    assert_int_equal(r.text_kind, PNG_ITXT_COMPRESSION_NONE);
    free_rb(&r);

    /* no text: no chunk; 1x1 image */
    assert_int_equal(zimage_write_png(path, img, 1, 1, NULL, err, sizeof err), 0);
    read_png(path, &r);
    assert_int_equal(r.n_text, 0);
    assert_int_equal(r.w * r.h, 1);
    assert_memory_equal(r.rgb, img, 3);
    free_rb(&r);
    assert_int_equal(count_entries(g_dir), 1); /* no temporary left */
    free(img);
    unlink(path);
}

static void test_errors(void **state) {
    (void)state;
    char err[512], path[256];
    uint8_t px[12] = {0};
    int before = count_entries(g_dir);

    assert_int_equal(zimage_write_png("/nonexistent-zimage-dir/x.png", px, 2, 2, "t", err, sizeof err), ZIMAGE_EIO);
    printf("  missing folder: %s\n", err);
    assert_non_null(strstr(err, "/nonexistent-zimage-dir/x.png"));
    assert_non_null(strstr(err, "No such file"));

    snprintf(path, sizeof path, "%s/afile", g_dir);
    FILE *f = fopen(path, "w");
    fputs("x", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/afile/x.png", g_dir);
    assert_int_equal(zimage_write_png(path, px, 2, 2, NULL, err, sizeof err), ZIMAGE_EIO);
    printf("  parent is a file: %s\n", err);
    assert_non_null(strstr(err, "Not a directory"));

    /* path is an existing folder: rename fails, the temporary is removed */
    snprintf(path, sizeof path, "%s/sub", g_dir);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(zimage_write_png(path, px, 2, 2, NULL, err, sizeof err), ZIMAGE_EIO);
    printf("  path is a folder: %s\n", err);
    assert_int_equal(count_entries(g_dir), before + 2); /* afile, sub: nothing else */
    assert_int_equal(count_entries(path), 0);

    /* an existing file is replaced by the complete new one */
    snprintf(path, sizeof path, "%s/keep.png", g_dir);
    f = fopen(path, "w");
    fputs("old", f);
    fclose(f);
    assert_int_equal(zimage_write_png(path, px, 2, 2, NULL, err, sizeof err), 0);
    readback r;
    read_png(path, &r);
    assert_int_equal(r.w, 2);
    free_rb(&r);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    mode_t um = umask(0);
    umask(um);
    assert_int_equal(st.st_mode & 0777, 0666 & ~um); /* fopen-like permissions */

    /* bad arguments */
    assert_int_equal(zimage_write_png(path, NULL, 2, 2, NULL, err, sizeof err), ZIMAGE_EINVAL);
    assert_int_equal(zimage_write_png(path, px, 0, 2, NULL, err, sizeof err), ZIMAGE_EINVAL);
    assert_int_equal(zimage_write_png(path, px, 2, -1, NULL, err, sizeof err), ZIMAGE_EINVAL);
    assert_int_equal(zimage_write_png("", px, 2, 2, NULL, err, sizeof err), ZIMAGE_EINVAL);
    assert_int_equal(zimage_write_png(NULL, px, 2, 2, NULL, NULL, 0), ZIMAGE_EINVAL);
    snprintf(path, sizeof path, "%s/", g_dir);
    assert_int_equal(zimage_write_png(path, px, 2, 2, NULL, err, sizeof err), ZIMAGE_EINVAL);
    assert_int_equal(count_entries(g_dir), before + 3);
}

static void test_infotext(void **state) {
    (void)state;
    zimage_params p = ZIMAGE_PARAMS_DEFAULT;
    char buf[1024];
    p.prompt = "a red fox";
    assert_int_equal(zimage_infotext(&p, 42, "Z-Image-Turbo", buf, sizeof buf), 0);
    assert_string_equal(buf, "a red fox\nSteps: 8, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Seed: 42, "
                             "Size: 1024x1024, Model: Z-Image-Turbo, RNG: CPU, Version: zimage " ZIMAGE_VERSION);
    p.negative_prompt = "blurry";
    p.cfg_scale = 4.5f;
    p.width = 1280;
    p.height = 720;
    p.rng = ZIMAGE_RNG_CUDA;
    p.cfg_normalization = 1.1f;
    p.cfg_truncation = 0.9f;
    p.steps = 9;
    assert_int_equal(zimage_infotext(&p, 9223372036854775807LL, "Z-Image-Turbo", buf, sizeof buf), 0);
    assert_string_equal(buf, "a red fox\nNegative prompt: blurry\nSteps: 9, Sampler: Euler, Schedule type: Simple, "
                             "CFG scale: 4.5, Seed: 9223372036854775807, Size: 1280x720, Model: Z-Image-Turbo, "
                             "RNG: NV, CFG normalization: 1.1, CFG truncation: 0.9, Version: zimage " ZIMAGE_VERSION);
    printf("  %s\n", buf);
    /* multi-line prompt kept as is, leading whitespace stripped, odd model
     * names quoted like A1111's quote(), no model, empty negative omitted */
    zimage_params q = ZIMAGE_PARAMS_DEFAULT;
    q.prompt = " \n\ta cat,\nsitting: on a mat ";
    q.negative_prompt = "";
    q.cfg_scale = 7.0f;
    assert_int_equal(zimage_infotext(&q, 0, "zimage, \"v2\": C:\\m\n", buf, sizeof buf), 0);
    assert_string_equal(buf, "a cat,\nsitting: on a mat \nSteps: 8, Sampler: Euler, Schedule type: Simple, "
                             "CFG scale: 7, Seed: 0, Size: 1024x1024, Model: \"zimage, \\\"v2\\\": C:\\\\m\\n\", "
                             "RNG: CPU, Version: zimage " ZIMAGE_VERSION);
    q.prompt = NULL;
    assert_int_equal(zimage_infotext(&q, 5, NULL, buf, sizeof buf), 0);
    assert_string_equal(buf, "Steps: 8, Sampler: Euler, Schedule type: Simple, CFG scale: 7, Seed: 5, "
                             "Size: 1024x1024, RNG: CPU, Version: zimage " ZIMAGE_VERSION);
    q.prompt = "\xe3\x80\x80\xe4\xb8\x80\xe5\x8f\xaa\xe7\x8b\x90\xe7\x8b\xb8"; /* U+3000 (space) + CJK */
    assert_int_equal(zimage_infotext(&q, 5, NULL, buf, sizeof buf), 0);
    assert_memory_equal(buf, "\xe4\xb8\x80\xe5\x8f\xaa\xe7\x8b\x90\xe7\x8b\xb8\nSteps: 8", 21);
    /* buffer too small */
    assert_int_equal(zimage_infotext(&q, 5, NULL, buf, 20), ZIMAGE_EINVAL);
    assert_string_equal(buf, "");
    assert_int_equal(zimage_infotext(NULL, 5, NULL, buf, sizeof buf), ZIMAGE_EINVAL);
}

static double time_encode(const uint8_t *img, int w, int h, const zpng_opts *o, size_t *bytes) {
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        uint8_t *out;
        size_t len;
        double t0 = now_s();
        assert_int_equal(zpng_encode(img, w, h, "parameters text", o, &out, &len, NULL), 0);
        double t = now_s() - t0;
        if (t < best) best = t;
        *bytes = len;
        free(out);
    }
    return best;
}

static void test_encode_time(void **state) {
    (void)state;
    const int w = 1024, h = 1024;
    static const char *names[3] = {"noise", "photo-like", "smooth"};
    uint8_t *img[3];
    for (int k = 0; k < 3; k++) img[k] = make_image(w, h, k);
    const zpng_opts def = ZPNG_OPTS_DEFAULT;
    for (int k = 0; k < 3; k++) {
        size_t bytes;
        double t = time_encode(img[k], w, h, &def, &bytes);
        printf("  encode 1024x1024 %-10s default (level %d, filters 0x%02x, strategy %d): %6.1f ms, %8zu bytes\n",
               names[k], def.level, def.filters, def.strategy, t * 1e3, bytes);
    }
    /* the file write on top (temp file, fsync, rename) */
    char path[256];
    snprintf(path, sizeof path, "%s/big.png", g_dir);
    double t0 = now_s();
    assert_int_equal(zpng_write(path, img[1], w, h, "x", NULL, NULL), 0);
    printf("  zpng_write 1024x1024 photo-like to %s: %.1f ms\n", g_dir, (now_s() - t0) * 1e3);
    unlink(path);

    const char *sw = getenv("ZIMAGE_PNG_SWEEP");
    if (sw && *sw && strcmp(sw, "0")) {
        static const int levels[] = {1, 2, 3, 6};
        static const int filt[] = {ZPNG_FILTER_NONE, ZPNG_FILTER_SUB, ZPNG_FILTER_UP, ZPNG_FILTER_AVG,
                                   ZPNG_FILTER_PAETH, ZPNG_FILTER_ALL};
        static const char *fname[] = {"none", "sub", "up", "avg", "paeth", "all"};
        static const char *sname[] = {"default", "filtered", "huffman", "rle"};
        printf("  sweep: level filter strategy | ms / KB for noise, photo-like, smooth\n");
        for (size_t li = 0; li < 4; li++)
            for (size_t fi = 0; fi < 6; fi++)
                for (int st = 0; st < 4; st++) {
                    if (st == 2 && fi != 0) continue;
                    zpng_opts o = {levels[li], filt[fi], st, 0};
                    printf("  L%d %-5s %-8s |", levels[li], fname[fi], sname[st]);
                    for (int k = 0; k < 3; k++) {
                        size_t bytes;
                        double t = time_encode(img[k], w, h, &o, &bytes);
                        printf(" %6.1f ms %6zu KB", t * 1e3, bytes / 1024);
                    }
                    printf("\n");
                }
    }
    for (int k = 0; k < 3; k++) free(img[k]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_to_u8_boundaries), cmocka_unit_test(test_to_u8_diffusers),
        cmocka_unit_test(test_roundtrip),        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_infotext),         cmocka_unit_test(test_encode_time),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
