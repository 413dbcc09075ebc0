/* test_cli.c - end-to-end tests of the zimage command ($ZIMAGE_BIN) on the
 * tiny fixture model: the PNG decodes, carries the A1111 metadata and matches
 * diffusers' pixels (max |difference| <= 1); bad input is refused with a
 * clear message before any work; Ctrl-C leaves no file behind. */
#include <fcntl.h>
#include <png.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/testutil.h"

static char g_tmp[256];
static const char *bin(void) {
    const char *b = getenv("ZIMAGE_BIN");
    return b && *b ? b : "./zimage";
}

/* Run a shell command, capture stderr+stdout into out; returns the exit status. */
static int run(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t outlen, const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[8400];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

typedef struct {
    int w, h;
    uint8_t *rgb;
    char text[4096];
} png_img;

static int read_png(const char *path, png_img *img) {
    memset(img, 0, sizeof *img);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    png_structp ps = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop pi = png_create_info_struct(ps);
    if (setjmp(png_jmpbuf(ps))) {
        png_destroy_read_struct(&ps, &pi, NULL);
        fclose(f);
        return -1;
    }
    png_init_io(ps, f);
    png_read_info(ps, pi);
    img->w = (int)png_get_image_width(ps, pi);
    img->h = (int)png_get_image_height(ps, pi);
    if (png_get_color_type(ps, pi) != PNG_COLOR_TYPE_RGB || png_get_bit_depth(ps, pi) != 8) longjmp(png_jmpbuf(ps), 1);
    img->rgb = malloc((size_t)img->w * img->h * 3);
    for (int y = 0; y < img->h; y++) png_read_row(ps, img->rgb + (size_t)y * img->w * 3, NULL);
    png_read_end(ps, pi);
    png_textp tx;
    int nt = 0;
    if (png_get_text(ps, pi, &tx, &nt))
        for (int i = 0; i < nt; i++)
            if (!strcmp(tx[i].key, "parameters")) snprintf(img->text, sizeof img->text, "%s", tx[i].text);
    png_destroy_read_struct(&ps, &pi, NULL);
    fclose(f);
    return 0;
}

static int max_diff_vs_golden(const png_img *img, const char *case_name, int k) {
    npy_array px = {0};
    zerr e = {0};
    assert_int_equal(npy_read(fixture_path("golden/pipe/%s/pixels.npy", case_name), &px, &e), 0);
    size_t n = (size_t)img->w * img->h * 3;
    int maxd = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)img->rgb[i] - (int)((uint8_t *)px.data)[(size_t)k * n + i]);
        if (d > maxd) maxd = d;
    }
    npy_free(&px);
    return maxd;
}

static void test_generate_png(void **st) {
    (void)st;
    char out[16384], path[512];
    snprintf(path, sizeof path, "%s/fox.png", g_tmp);
    int rc = run(out, sizeof out, "%s -m %s -p 'a red fox in the snow' -W 64 -H 48 -s 42 -t 2 -o %s", bin(),
                 fixture_path("models/tiny-a"), path);
    printf("%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "seed 42"));
    png_img img;
    assert_int_equal(read_png(path, &img), 0);
    assert_int_equal(img.w, 64);
    assert_int_equal(img.h, 48);
    int d = max_diff_vs_golden(&img, "plain", 0);
    printf("  CLI image vs diffusers: max |dpixel| %d\n", d);
    assert_true(d <= 1);
    printf("  parameters: %s\n", img.text);
    assert_non_null(strstr(img.text, "a red fox in the snow\n"));
    assert_non_null(strstr(img.text, "Steps: 8"));
    assert_non_null(strstr(img.text, "Seed: 42"));
    assert_non_null(strstr(img.text, "Size: 64x48"));
    assert_non_null(strstr(img.text, "CFG scale: 1"));
    free(img.rgb);
}

static void test_batch_names_and_dump(void **st) {
    (void)st;
    char out[16384], pat[512], dump[512], p0[512], p1[512];
    snprintf(pat, sizeof pat, "%s/cats_%%d.png", g_tmp);
    snprintf(dump, sizeof dump, "%s/lat.npy", g_tmp);
    int rc = run(out, sizeof out,
                 "%s -m %s -p 'two cats playing chess' -W 32 -H 48 --steps 4 -s 123 -b 2 --no-metadata -t 2 -o '%s' "
                 "--dump-latents %s",
                 bin(), fixture_path("models/tiny-a"), pat, dump);
    printf("%s", out);
    assert_int_equal(rc, 0);
    for (int k = 0; k < 2; k++) {
        snprintf(p0, sizeof p0, "%s/cats_%d.png", g_tmp, k);
        png_img img;
        assert_int_equal(read_png(p0, &img), 0);
        assert_int_equal(img.text[0], 0); /* --no-metadata */
        int d = max_diff_vs_golden(&img, "batch", k);
        printf("  batch image %d vs diffusers: max |dpixel| %d\n", k, d);
        assert_true(d <= 1);
        free(img.rgb);
    }
    npy_array lat, want;
    load_npy_f32(dump, &lat);
    load_npy_f32(fixture_path("golden/pipe/batch/final_latents.npy"), &want);
    assert_int_equal(lat.ndim, 4);
    assert_int_equal(lat.shape[0], 2);
    assert_int_equal(lat.shape[1], 16);
    assert_close("dumped final latents", lat.data, want.data, (size_t)npy_numel(&want), 1e-4);
    npy_free(&lat);
    npy_free(&want);
    /* without %d: -<index> before the extension */
    snprintf(pat, sizeof pat, "%s/x.png", g_tmp);
    rc = run(out, sizeof out, "%s -m %s -p cat -W 32 -H 32 --steps 1 -b 2 -t 2 -o %s", bin(),
             fixture_path("models/tiny-a"), pat);
    assert_int_equal(rc, 0);
    snprintf(p0, sizeof p0, "%s/x-0.png", g_tmp);
    snprintf(p1, sizeof p1, "%s/x-1.png", g_tmp);
    assert_true(exists(p0) && exists(p1));
}

static void test_init_latents_cli(void **st) {
    (void)st;
    char out[16384], path[512], dump[512];
    snprintf(path, sizeof path, "%s/init.png", g_tmp);
    snprintf(dump, sizeof dump, "%s/init_lat.npy", g_tmp);
    int rc = run(out, sizeof out, "%s -m %s -p 'a red fox in the snow' -W 64 -H 48 -t 2 --init-latents %s -o %s --dump-latents %s",
                 bin(), fixture_path("models/tiny-a"), fixture_path("golden/pipe/plain/init_latents.npy"), path, dump);
    printf("%s", out);
    assert_int_equal(rc, 0);
    npy_array lat, want;
    load_npy_f32(dump, &lat);
    load_npy_f32(fixture_path("golden/pipe/plain/final_latents.npy"), &want);
    assert_close("final latents from --init-latents", lat.data, want.data, (size_t)npy_numel(&want), 1e-4);
    npy_free(&lat);
    npy_free(&want);
    /* wrong shape: refused, no image */
    snprintf(path, sizeof path, "%s/wrong.png", g_tmp);
    rc = run(out, sizeof out, "%s -m %s -p fox -W 64 -H 64 -t 2 --init-latents %s -o %s", bin(),
             fixture_path("models/tiny-a"), fixture_path("golden/pipe/plain/init_latents.npy"), path);
    printf("%s", out);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "init-latents"));
    assert_false(exists(path));
    /* wrong dtype (the uint8 pixels file) */
    rc = run(out, sizeof out, "%s -m %s -p fox -W 64 -H 48 --init-latents %s -o %s", bin(),
             fixture_path("models/tiny-a"), fixture_path("golden/pipe/plain/pixels.npy"), path);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "float32"));
    assert_false(exists(path));
}

static void test_bad_input(void **st) {
    (void)st;
    char out[16384], path[512];
    snprintf(path, sizeof path, "%s/bad.png", g_tmp);
    const char *m = fixture_path("models/tiny-a");
    static const struct {
        const char *args;
        const char *needle;
    } cases[] = {
        {"-p cat -W 60", "multiples of 16"},
        {"-p cat -H 8200", "multiples of 16"},
        {"-p cat --steps 0", "steps"},
        {"-p cat --frobnicate", "unknown option"},
        {"-p cat -W abc", "not an integer"},
        {"-p cat --rng gpu", "--rng"},
        {"-W 64", "no prompt"},
        {"-p cat -o /nonexistent-dir/x.png", "does not exist"},
        {"-p cat --cfg-scale 2 --guidance-scale 1", "either"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run(out, sizeof out, "%s -m %s %s %s", bin(), m, cases[i].args,
                     strstr(cases[i].args, " -o ") ? "" : "-o /tmp/zimage-test-never.png");
        printf("  [%s] -> %d: %s", cases[i].args, rc, out);
        assert_int_equal(rc, 2);
        if (!strstr(out, cases[i].needle)) fail_msg("message lacks '%s'", cases[i].needle);
    }
    assert_false(exists("/tmp/zimage-test-never.png"));
    int rc = run(out, sizeof out, "%s -m /nonexistent/model -p cat -o %s", bin(), path);
    printf("  [bad model] -> %d: %s", rc, out);
    assert_int_equal(rc, 1);
    assert_false(exists(path));
}

/* zimage encode: the caption features as .npy, equal to transformers'
 * hidden_states[-2]; zimage tokenize: the templated ids of the spec. */
static void test_encode_and_tokenize(void **st) {
    (void)st;
    char out[16384], path[512];
    snprintf(path, sizeof path, "%s/feat.npy", g_tmp);
    int rc = run(out, sizeof out, "%s encode -m %s -p 'a cat' -t 2 -o %s", bin(), fixture_path("models/tiny-a"), path);
    printf("%s", out);
    assert_int_equal(rc, 0);
    npy_array got, want;
    load_npy_f32(path, &got);
    load_npy_f32(fixture_path("golden/te/tiny-a/case0/feat.npy"), &want);
    assert_int_equal(got.ndim, 2);
    assert_int_equal(got.shape[0], want.shape[0]);
    assert_int_equal(got.shape[1], want.shape[1]);
    assert_close("zimage encode 'a cat' vs transformers", got.data, want.data, (size_t)npy_numel(&want), 1e-4);
    npy_free(&got);
    npy_free(&want);
    rc = run(out, sizeof out, "%s tokenize -m %s --template 'a cat'", bin(), fixture_path("models/tiny-a"));
    printf("  tokenize: %s", out);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "151644 872 198 64 8251 151645 198 151644 77091 198\n");
    rc = run(out, sizeof out, "printf '%%s\\n' '\"a cat\"' '\"\"' | %s tokenize -m %s --jsonl --template", bin(),
             fixture_path("models/tiny-a"));
    printf("  tokenize --jsonl: %s", out);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "[151644, 872, 198, 64, 8251, 151645, 198, 151644, 77091, 198]\n"
                             "[151644, 872, 198, 151645, 198, 151644, 77091, 198]\n");
}

/* Ctrl-C during denoising: exit 130, no file. */
static void test_interrupt(void **st) {
    (void)st;
    char path[512];
    snprintf(path, sizeof path, "%s/int.png", g_tmp);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", 1);
        dup2(fd, 2);
        execl(bin(), bin(), "-m", fixture_path("models/tiny-a"), "-p", "a fox", "-W", "256", "-H", "256", "--steps",
              "1000", "-t", "1", "-o", path, (char *)NULL);
        _exit(127);
    }
    usleep(1500 * 1000);
    kill(pid, SIGINT);
    int stt;
    waitpid(pid, &stt, 0);
    assert_true(WIFEXITED(stt));
    printf("  interrupted run exited with %d\n", WEXITSTATUS(stt));
    assert_int_equal(WEXITSTATUS(stt), 130);
    assert_false(exists(path));
}

static int setup(void **st) {
    (void)st;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/zimage-cli-XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_png), cmocka_unit_test(test_batch_names_and_dump),
        cmocka_unit_test(test_init_latents_cli), cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_encode_and_tokenize),
        cmocka_unit_test(test_interrupt),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
