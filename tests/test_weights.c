/* test_weights.c - weight sources and the loader: name maps of every
 * checkpoint format (ComfyUI fused qkv rows, LDM VAE names, TE with and
 * without the "model." prefix), zero copy on host backends, exact dtype
 * conversion, the OIHW -> OHWI conv permutation, error messages (which must
 * name the tensor and the file), unused-tensor checks, and random weights
 * (deterministic, independent of the thread count, host == device path).
 *
 * The tiny diffusers-written fixture models (tests/fixtures/models) are also
 * converted by this test to the ComfyUI DiT and LDM VAE layouts (with its own
 * renaming code, written from spec 1.6): every canonical tensor must resolve
 * to the same bytes in both layouts.
 *
 * Backends: a fake host backend (malloc/memcpy, is_host = 1) and a fake
 * "device" (same memory, is_host = 0, so matrices become BF16 and nothing is
 * aliased), plus the real CPU backend where it links. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/half.h"
#include "io/modeldir.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/config.h"
#include "util/st_writer.h"
#include "util/testutil.h"

static const char *dir;
static int n_live; /* live fake-backend allocations */

static int fk_alloc(zbackend *be, size_t bytes, void **out) {
    (void)be;
    *out = malloc(bytes);
    if (!*out) return ZE_NOMEM;
    n_live++;
    return ZE_OK;
}
static void fk_free(zbackend *be, void *p) {
    (void)be;
    free(p);
    n_live--;
}
static int fk_copy(zbackend *be, void *dst, const void *src, size_t n) {
    (void)be;
    memcpy(dst, src, n);
    return ZE_OK;
}
static const zbackend_vt fake_vt = {.name = "fake", .alloc = fk_alloc, .free = fk_free, .upload = fk_copy, .download = fk_copy};
static zerr be_err;
static zbackend host_be = {.vt = &fake_vt, .err = &be_err, .is_host = 1, .act = ZT_F32};
static zbackend dev_be = {.vt = &fake_vt, .err = &be_err, .is_host = 0, .act = ZT_BF16};

static int setup(void **state) {
    (void)state;
    dir = st_tmpdir();
    return 0;
}
static int teardown(void **state) {
    (void)state;
    st_rmtree(dir);
    return 0;
}

static void expect_msg(const zerr *e, const char *a, const char *b, const char *c) {
    const char *n[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (n[i] && !strstr(e->msg, n[i])) {
            fprintf(stderr, "message: %s\nmissing: '%s'\n", e->msg, n[i]);
            fail();
        }
}

static float *iota(size_t n, float scale) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)i * scale;
    return v;
}

static zw_source *open_src(const char *path, zw_kind kind) {
    zw_source *s = NULL;
    zerr e = {0};
    int rc = zw_source_open(&s, path, kind, &e);
    if (rc) fprintf(stderr, "zw_source_open: %s\n", e.msg);
    assert_int_equal(rc, ZE_OK);
    return s;
}

static void ok(int rc, const zerr *e) {
    if (rc) fprintf(stderr, "unexpected error: %s\n", e->msg);
    assert_int_equal(rc, ZE_OK);
}

/* ---- zero copy, conversion ---------------------------------------------------- */

static void test_zero_copy_host(void **state) {
    (void)state;
    const char *p = st_path(dir, "zc.safetensors");
    float *w = iota(12, 1), v[3] = {1, 2, 3};
    uint16_t h[4] = {0x3f80, 0x4000, 0x4040, 0x4080};
    stw *sw = stw_new();
    stw_add_f32(sw, "w", 2, (int64_t[]){4, 3}, w);
    stw_add_f32(sw, "v", 1, (int64_t[]){3}, v);
    stw_add(sw, "h", "BF16", 2, (int64_t[]){2, 2}, h, sizeof h);
    stw_write(sw, p);
    stw_free(sw);
    zw_source *s = open_src(p, ZW_DIT);
    zerr e = {0};
    zw_loader L;
    ok(zw_loader_init(&L, &host_be, s, "transformer", &e), &e);
    zt tw, tv, th;
    zw_view vw, vv, vh;
    ok(zw_load2(&L, &tw, "w", 4, 3), &e);
    ok(zw_load1(&L, &tv, "v", 3), &e);
    ok(zw_load2(&L, &th, "h", 2, 2), &e);
    assert_true(zw_source_find(s, "w", &vw) && zw_source_find(s, "v", &vv) && zw_source_find(s, "h", &vh));
    assert_ptr_equal(tw.data, vw.data); /* points into the mapping */
    assert_ptr_equal(tv.data, vv.data);
    assert_ptr_equal(th.data, vh.data);
    assert_int_equal(tw.dtype, ZT_F32);
    assert_int_equal(th.dtype, ZT_BF16);
    assert_memory_equal(tw.data, w, 48);
    assert_int_equal(n_live, 0);
    assert_int_equal(L.n_bytes, 0);
    assert_int_equal(L.n_params, 12 + 3 + 4);
    ok(zw_check_all_used(&L), &e);
    zw_loader_free(&L);
    zw_source_free(s);
    free(w);
}

static void test_conversion_exact(void **state) {
    (void)state;
    const char *p = st_path(dir, "conv.safetensors");
    /* bf16: 1, -123.5, smallest subnormal, largest finite, -0 */
    uint16_t b[5] = {0x3f80, 0xc2f7, 0x0001, 0x7f7f, 0x8000};
    const float bw[5] = {1.0f, -123.5f, 9.18354961579912e-41f, 3.3895313892515355e38f, -0.0f};
    /* f16: 1, -5, smallest subnormal 2^-24, 65504, -0 */
    uint16_t f[5] = {0x3c00, 0xc500, 0x0001, 0x7bff, 0x8000};
    const float fw[5] = {1.0f, -5.0f, 5.9604644775390625e-08f, 65504.0f, -0.0f};
    /* f32 -> bf16 with round-to-nearest-even: 1, 1+2^-8 (tie -> even 0x3f80),
     * 1+3*2^-8 (tie -> even 0x3f82), 1+2^-8+2^-20 (above tie -> 0x3f81) */
    float m[4] = {1.0f, 1.00390625f, 1.01171875f, 1.00390625f + 9.5367431640625e-07f};
    const uint16_t mw[4] = {0x3f80, 0x3f80, 0x3f82, 0x3f81};
    stw *sw = stw_new();
    stw_add(sw, "b", "BF16", 1, (int64_t[]){5}, b, sizeof b);
    stw_add(sw, "f", "F16", 1, (int64_t[]){5}, f, sizeof f);
    stw_add_f32(sw, "m", 2, (int64_t[]){2, 2}, m);
    stw_write(sw, p);
    stw_free(sw);
    zw_source *s = open_src(p, ZW_DIT);
    zerr e = {0};
    zw_loader L;
    ok(zw_loader_init(&L, &host_be, s, "transformer", &e), &e);
    zt tb, tf;
    ok(zw_load1(&L, &tb, "b", 5), &e); /* vectors are always F32 */
    ok(zw_load1(&L, &tf, "f", 5), &e);
    assert_int_equal(tb.dtype, ZT_F32);
    assert_int_equal(tf.dtype, ZT_F32);
    assert_memory_equal(tb.data, bw, sizeof bw); /* bit exact, sign of zero included */
    assert_memory_equal(tf.data, fw, sizeof fw);
    assert_int_equal(n_live, 2);
    assert_int_equal(L.n_bytes, 40);
    zw_loader_free(&L);
    assert_int_equal(n_live, 0);

    ok(zw_loader_init(&L, &dev_be, s, "transformer", &e), &e);
    zt tm;
    ok(zw_load2(&L, &tm, "m", 2, 2), &e);
    assert_int_equal(tm.dtype, ZT_BF16);
    assert_memory_equal(tm.data, mw, sizeof mw);
    ok(zw_load1(&L, &tb, "b", 5), &e);
    assert_memory_equal(tb.data, bw, sizeof bw);
    zw_loader_free(&L);
    assert_int_equal(n_live, 0);
    zw_source_free(s);
}

/* ---- errors ------------------------------------------------------------------- */

static void test_errors(void **state) {
    (void)state;
    const char *p = st_path(dir, "err.safetensors");
    float *w = iota(12, 1);
    int64_t ids[3] = {1, 2, 3};
    stw *sw = stw_new();
    stw_add_f32(sw, "layers.0.attention.to_q.weight", 2, (int64_t[]){4, 3}, w);
    stw_add(sw, "ids", "I64", 1, (int64_t[]){3}, ids, sizeof ids);
    stw_write(sw, p);
    stw_free(sw);
    zw_source *s = open_src(p, ZW_DIT);
    zerr e = {0};
    zw_loader L;
    zt t;
    ok(zw_loader_init(&L, &host_be, s, "transformer", &e), &e);
    assert_int_equal(zw_load2(&L, &t, "layers.3.attention.to_q.weight", 4, 3), ZE_MODEL);
    expect_msg(&e, "transformer: tensor 'layers.3.attention.to_q.weight' not found in ", p, "(2 tensors)");
    assert_int_equal(zw_load2(&L, &t, "layers.0.attention.to_q.weight", 4, 4), ZE_MODEL);
    expect_msg(&e, "tensor 'layers.0.attention.to_q.weight'", "expected [4, 4], found [4, 3] in ", p);
    assert_int_equal(zw_load1(&L, &t, "layers.0.attention.to_q.weight", 12), ZE_MODEL);
    expect_msg(&e, "expected [12], found [4, 3]", p, NULL);
    assert_int_equal(zw_load_conv(&L, &t, "layers.0.attention.to_q.weight", 4, 3, 3, 3), ZE_MODEL);
    expect_msg(&e, "expected [4, 3, 3, 3], found [4, 3]", NULL, NULL);
    assert_int_equal(zw_load_linear_or_conv1x1(&L, &t, "layers.0.attention.to_q.weight", 4, 4), ZE_MODEL);
    expect_msg(&e, "expected [4, 4] or [4, 4, 1, 1], found [4, 3]", NULL, NULL);
    assert_int_equal(zw_load1(&L, &t, "ids", 3), ZE_MODEL);
    expect_msg(&e, "tensor 'ids'", p, "is I64; only F32, F16 and BF16");
    const char *names[2] = {"layers.0.attention.to_q.weight", "nope"};
    assert_int_equal(zw_load_cat(&L, &t, names, 2, (int64_t[]){4, 4}, 3), ZE_MODEL);
    expect_msg(&e, "tensor 'nope' not found", NULL, NULL);
    assert_null(t.data);
    assert_int_equal(n_live, 0);
    /* nothing was consumed: both stored tensors are reported */
    assert_int_equal(zw_check_all_used(&L), ZE_MODEL);
    expect_msg(&e, "2 tensors in", "'ids'", "'layers.0.attention.to_q.weight'");
    zw_loader_free(&L);
    zw_source_free(s);

    /* sources */
    assert_int_equal(zw_source_open(&s, st_path(dir, "missing.safetensors"), ZW_DIT, &e), ZE_IO);
    expect_msg(&e, "missing.safetensors", NULL, NULL);
    free(w);
}

/* ---- DiT: ComfyUI format --------------------------------------------------------- */

#define PFX "model.diffusion_model."

static void write_comfy(const char *p, float **qkv_out) {
    float *qkv = malloc(12 * 4 * sizeof *qkv);
    for (int r = 0; r < 12; r++)
        for (int c = 0; c < 4; c++) qkv[r * 4 + c] = (float)(r * 10 + c);
    float *a = iota(64, 0.5f);
    stw *sw = stw_new();
    stw_add_f32(sw, PFX "layers.0.attention.qkv.weight", 2, (int64_t[]){12, 4}, qkv);
    stw_add_f32(sw, PFX "layers.0.attention.out.weight", 2, (int64_t[]){4, 4}, a);
    stw_add_f32(sw, PFX "layers.0.attention.q_norm.weight", 1, (int64_t[]){2}, a);
    stw_add_f32(sw, PFX "layers.0.attention.k_norm.weight", 1, (int64_t[]){2}, a + 2);
    stw_add_f32(sw, PFX "layers.0.adaLN_modulation.0.weight", 2, (int64_t[]){16, 4}, a);
    stw_add_f32(sw, PFX "x_embedder.weight", 2, (int64_t[]){4, 8}, a);
    stw_add_f32(sw, PFX "x_embedder.bias", 1, (int64_t[]){4}, a);
    stw_add_f32(sw, PFX "final_layer.linear.weight", 2, (int64_t[]){8, 4}, a);
    stw_add_f32(sw, PFX "final_layer.adaLN_modulation.1.weight", 2, (int64_t[]){4, 4}, a);
    stw_add_f32(sw, PFX "cap_pad_token", 2, (int64_t[]){1, 4}, a);
    stw_add_f32(sw, PFX "norm_final.weight", 1, (int64_t[]){4}, a);
    stw_write(sw, p);
    stw_free(sw);
    free(a);
    *qkv_out = qkv;
}

static void test_comfy_dit(void **state) {
    (void)state;
    const char *p = st_path(dir, "comfy.safetensors");
    float *qkv;
    write_comfy(p, &qkv);
    zw_source *s = open_src(p, ZW_DIT);
    zerr e = {0};
    zw_view v;
    assert_true(zw_source_find(s, "layers.0.attention.to_k.weight", &v));
    assert_string_equal(v.stored_name, PFX "layers.0.attention.qkv.weight");
    assert_int_equal(v.ne[0], 4);
    assert_int_equal(v.ne[1], 4);
    assert_false(zw_source_find(s, "norm_final.weight", &v)); /* ignored by design */

    zw_loader L;
    ok(zw_loader_init(&L, &host_be, s, "transformer", &e), &e);
    const char *qn[3] = {"layers.0.attention.to_q.weight", "layers.0.attention.to_k.weight",
                         "layers.0.attention.to_v.weight"};
    for (int b = 0; b < 3; b++) {
        zt t;
        ok(zw_load2(&L, &t, qn[b], 4, 4), &e);
        const float *d = t.data;
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++)
                if (d[r * 4 + c] != (float)((b * 4 + r) * 10 + c)) {
                    fprintf(stderr, "%s[%d][%d] = %g, want %d\n", qn[b], r, c, d[r * 4 + c], (b * 4 + r) * 10 + c);
                    fail();
                }
    }
    zt cat, t;
    ok(zw_load_cat(&L, &cat, qn, 3, (int64_t[]){4, 4, 4}, 4), &e);
    zw_source_find(s, qn[0], &v);
    assert_ptr_equal(cat.data, v.data); /* fused qkv stays zero copy */
    assert_int_equal(cat.ne[0], 12);
    assert_memory_equal(cat.data, qkv, 12 * 4 * 4);
    ok(zw_load2(&L, &t, "layers.0.attention.to_out.0.weight", 4, 4), &e);
    ok(zw_load1(&L, &t, "layers.0.attention.norm_q.weight", 2), &e);
    ok(zw_load1(&L, &t, "layers.0.attention.norm_k.weight", 2), &e);
    assert_true(((float *)t.data)[0] == 1.0f); /* k_norm = a[2..3] */
    ok(zw_load2(&L, &t, "layers.0.adaLN_modulation.0.weight", 16, 4), &e);
    ok(zw_load2(&L, &t, "all_x_embedder.2-1.weight", 4, 8), &e);
    ok(zw_load1(&L, &t, "all_x_embedder.2-1.bias", 4), &e);
    ok(zw_load2(&L, &t, "all_final_layer.2-1.linear.weight", 8, 4), &e);
    ok(zw_load2(&L, &t, "all_final_layer.2-1.adaLN_modulation.1.weight", 4, 4), &e);
    ok(zw_load2(&L, &t, "cap_pad_token", 1, 4), &e);
    ok(zw_check_all_used(&L), &e);
    /* a missing name reports what it looked for */
    assert_int_equal(zw_load2(&L, &t, "layers.1.attention.to_v.weight", 4, 4), ZE_MODEL);
    expect_msg(&e, "'layers.1.attention.to_v.weight' not found", "looked for 'layers.1.attention.qkv.weight', ComfyUI",
               NULL);
    zw_loader_free(&L);

    /* only q and k taken: qkv is partly unused */
    ok(zw_loader_init(&L, &host_be, s, "transformer", &e), &e);
    ok(zw_load_cat(&L, &cat, qn, 2, (int64_t[]){4, 4}, 4), &e);
    zw_ignore_prefix(&L, "layers.0.adaLN");
    zw_ignore_prefix(&L, "layers.0.attention.to_out");
    zw_ignore_prefix(&L, "layers.0.attention.norm_");
    zw_ignore_prefix(&L, "all_");
    zw_ignore_prefix(&L, "cap_pad");
    assert_int_equal(zw_check_all_used(&L), ZE_MODEL);
    expect_msg(&e, "1 tensor in", "'" PFX "layers.0.attention.qkv.weight' (partly)", NULL);
    zw_loader_free(&L);

    /* device: rows copied and converted to bf16 (small integers are exact) */
    ok(zw_loader_init(&L, &dev_be, s, "transformer", &e), &e);
    ok(zw_load_cat(&L, &cat, qn + 1, 2, (int64_t[]){4, 4}, 4), &e);
    assert_int_equal(cat.dtype, ZT_BF16);
    for (int i = 0; i < 32; i++) assert_true(zbf16_to_f32(((uint16_t *)cat.data)[i]) == qkv[16 + i]);
    zw_loader_free(&L);
    assert_int_equal(n_live, 0);
    zw_source_free(s);
    free(qkv);
}

static void test_diffusers_dit_cat(void **state) {
    (void)state;
    const char *p = st_path(dir, "diffusers.safetensors");
    float *q = iota(8, 1), *k = iota(8, -1), *vv = iota(8, 2);
    stw *sw = stw_new(); /* stored k, q, v: not back to back in q|k|v order */
    stw_add_f32(sw, "layers.0.attention.to_k.weight", 2, (int64_t[]){2, 4}, k);
    stw_add_f32(sw, "layers.0.attention.to_q.weight", 2, (int64_t[]){2, 4}, q);
    stw_add_f32(sw, "layers.0.attention.to_v.weight", 2, (int64_t[]){2, 4}, vv);
    stw_write(sw, p);
    stw_free(sw);
    zw_source *s = open_src(p, ZW_DIT);
    zerr e = {0};
    zw_loader L;
    ok(zw_loader_init(&L, &host_be, s, "transformer", &e), &e);
    const char *qn[3] = {"layers.0.attention.to_q.weight", "layers.0.attention.to_k.weight",
                         "layers.0.attention.to_v.weight"};
    zt cat;
    ok(zw_load_cat(&L, &cat, qn, 3, (int64_t[]){2, 2, 2}, 4), &e);
    const float *d = cat.data;
    assert_memory_equal(d, q, 32);
    assert_memory_equal(d + 8, k, 32);
    assert_memory_equal(d + 16, vv, 32);
    assert_int_equal(L.n_bytes, 96);
    assert_int_equal(L.n_params, 24);
    ok(zw_check_all_used(&L), &e);
    zw_loader_free(&L);
    zw_source_free(s);
    free(q), free(k), free(vv);
}

/* ---- text encoder ----------------------------------------------------------------- */

static void te_file(const char *p, const char *prefix) {
    float *a = iota(24, 1);
    char nm[128];
    stw *sw = stw_new();
    snprintf(nm, sizeof nm, "%sembed_tokens.weight", prefix);
    stw_add_f32(sw, nm, 2, (int64_t[]){6, 4}, a);
    snprintf(nm, sizeof nm, "%slayers.0.input_layernorm.weight", prefix);
    stw_add_f32(sw, nm, 1, (int64_t[]){4}, a);
    snprintf(nm, sizeof nm, "%snorm.weight", prefix);
    stw_add_f32(sw, nm, 1, (int64_t[]){4}, a);
    stw_add_f32(sw, "lm_head.weight", 2, (int64_t[]){6, 4}, a);
    stw_write(sw, p);
    stw_free(sw);
    free(a);
}

static void test_te_prefix(void **state) {
    (void)state;
    const char *prefixes[2] = {"", "model."};
    for (int i = 0; i < 2; i++) {
        const char *p = st_path(dir, i ? "te_model.safetensors" : "te_bare.safetensors");
        te_file(p, prefixes[i]);
        zw_source *s = open_src(p, ZW_TE);
        zerr e = {0};
        zw_loader L;
        zt t;
        ok(zw_loader_init(&L, &host_be, s, "text_encoder", &e), &e);
        ok(zw_load2(&L, &t, "model.embed_tokens.weight", 6, 4), &e);
        assert_true(((float *)t.data)[5] == 5.0f);
        ok(zw_load1(&L, &t, "model.layers.0.input_layernorm.weight", 4), &e);
        assert_int_equal(zw_check_all_used(&L), ZE_MODEL); /* model.norm not taken (lm_head is ignored) */
        expect_msg(&e, "1 tensor in", "norm.weight'", NULL);
        assert_null(strstr(e.msg, "lm_head"));
        zw_ignore_prefix(&L, "model.norm.");
        ok(zw_check_all_used(&L), &e);
        zw_loader_free(&L);
        zw_source_free(s);
    }
}

/* ---- VAE: LDM names --------------------------------------------------------------- */

static void test_vae_ldm(void **state) {
    (void)state;
    const char *p = st_path(dir, "ae.safetensors");
    float *a = iota(64, 1);
    float *c1 = iota(36, 1), *up = iota(36, -1);
    stw *sw = stw_new();
    /* three decoder up blocks (up.0 .. up.2): up.k <-> up_blocks.(2-k) */
    stw_add_f32(sw, "decoder.up.0.block.0.conv1.weight", 4, (int64_t[]){2, 2, 3, 3}, c1);
    stw_add_f32(sw, "decoder.up.2.upsample.conv.weight", 4, (int64_t[]){2, 2, 3, 3}, up);
    stw_add_f32(sw, "decoder.up.1.block.0.nin_shortcut.weight", 4, (int64_t[]){2, 3, 1, 1}, a);
    stw_add_f32(sw, "decoder.mid.attn_1.q.weight", 4, (int64_t[]){4, 4, 1, 1}, a);
    stw_add_f32(sw, "decoder.mid.attn_1.proj_out.bias", 1, (int64_t[]){4}, a);
    stw_add_f32(sw, "decoder.mid.attn_1.norm.weight", 1, (int64_t[]){4}, a);
    stw_add_f32(sw, "decoder.mid.block_2.norm1.weight", 1, (int64_t[]){4}, a);
    stw_add_f32(sw, "decoder.norm_out.weight", 1, (int64_t[]){4}, a);
    stw_add_f32(sw, "decoder.conv_in.bias", 1, (int64_t[]){4}, a);
    stw_add_f32(sw, "encoder.down.1.downsample.conv.weight", 4, (int64_t[]){2, 2, 3, 3}, c1);
    stw_add_f32(sw, "encoder.down.0.block.1.conv2.bias", 1, (int64_t[]){2}, a);
    stw_add_f32(sw, "encoder.mid.block_1.conv1.bias", 1, (int64_t[]){2}, a);
    stw_write(sw, p);
    stw_free(sw);
    zw_source *s = open_src(p, ZW_VAE);
    zerr e = {0};
    zw_loader L;
    zt t;
    ok(zw_loader_init(&L, &host_be, s, "vae", &e), &e);
    ok(zw_load_conv(&L, &t, "decoder.up_blocks.2.resnets.0.conv1.weight", 2, 2, 3, 3), &e);
    /* OHWI: element (o=0, y=0, x=1, i=1) = OIHW (0, 1, 0, 1) = index 10 */
    assert_true(((float *)t.data)[1 * 2 + 1] == c1[10]);
    ok(zw_load_conv(&L, &t, "decoder.up_blocks.0.upsamplers.0.conv.weight", 2, 2, 3, 3), &e);
    assert_true(((float *)t.data)[0] == up[0]);
    ok(zw_load_conv(&L, &t, "decoder.up_blocks.1.resnets.0.conv_shortcut.weight", 2, 3, 1, 1), &e);
    ok(zw_load_linear_or_conv1x1(&L, &t, "decoder.mid_block.attentions.0.to_q.weight", 4, 4), &e);
    assert_int_equal(t.ndim, 2);
    const char *qq[2] = {"decoder.mid_block.attentions.0.to_q.weight", "decoder.mid_block.attentions.0.to_q.weight"};
    ok(zw_load_cat(&L, &t, qq, 2, (int64_t[]){4, 4}, 4), &e); /* 1x1-conv blocks concatenate too */
    assert_int_equal(t.ne[0], 8);
    assert_memory_equal((float *)t.data + 16, a, 64);
    ok(zw_load1(&L, &t, "decoder.mid_block.attentions.0.to_out.0.bias", 4), &e);
    ok(zw_load1(&L, &t, "decoder.mid_block.attentions.0.group_norm.weight", 4), &e);
    ok(zw_load1(&L, &t, "decoder.mid_block.resnets.1.norm1.weight", 4), &e);
    ok(zw_load1(&L, &t, "decoder.conv_norm_out.weight", 4), &e);
    ok(zw_load1(&L, &t, "decoder.conv_in.bias", 4), &e);
    ok(zw_load_conv(&L, &t, "encoder.down_blocks.1.downsamplers.0.conv.weight", 2, 2, 3, 3), &e);
    ok(zw_load1(&L, &t, "encoder.down_blocks.0.resnets.1.conv2.bias", 2), &e);
    ok(zw_load1(&L, &t, "encoder.mid_block.resnets.0.conv1.bias", 2), &e);
    ok(zw_check_all_used(&L), &e);
    assert_int_equal(zw_load_conv(&L, &t, "decoder.up_blocks.3.resnets.0.conv1.weight", 2, 2, 3, 3), ZE_MODEL);
    expect_msg(&e, "'decoder.up_blocks.3.resnets.0.conv1.weight' not found", p, NULL);
    zw_loader_free(&L);

    /* ignore prefixes are canonical names: up.0 is up_blocks.2 here */
    ok(zw_loader_init(&L, &host_be, s, "vae", &e), &e);
    zw_ignore_prefix(&L, "encoder.");
    zw_ignore_prefix(&L, "decoder.mid_block.");
    zw_ignore_prefix(&L, "decoder.conv");
    zw_ignore_prefix(&L, "decoder.up_blocks.0.");
    zw_ignore_prefix(&L, "decoder.up_blocks.1.");
    assert_int_equal(zw_check_all_used(&L), ZE_MODEL);
    expect_msg(&e, "1 tensor in", "'decoder.up.0.block.0.conv1.weight'", NULL);
    zw_ignore_prefix(&L, "decoder.up_blocks.2.");
    ok(zw_check_all_used(&L), &e);
    zw_loader_free(&L);
    zw_source_free(s);
    free(a), free(c1), free(up);
}

static void test_vae_diffusers_linear(void **state) {
    (void)state;
    const char *p = st_path(dir, "vae_diffusers.safetensors");
    float *a = iota(16, 1);
    stw *sw = stw_new();
    stw_add_f32(sw, "decoder.mid_block.attentions.0.to_q.weight", 2, (int64_t[]){4, 4}, a);
    stw_add_f32(sw, "decoder.up_blocks.0.resnets.0.conv_shortcut.weight", 2, (int64_t[]){4, 2}, a);
    stw_write(sw, p);
    stw_free(sw);
    zw_source *s = open_src(p, ZW_VAE);
    zerr e = {0};
    zw_loader L;
    zt t;
    ok(zw_loader_init(&L, &host_be, s, "vae", &e), &e);
    ok(zw_load_linear_or_conv1x1(&L, &t, "decoder.mid_block.attentions.0.to_q.weight", 4, 4), &e);
    ok(zw_load_conv(&L, &t, "decoder.up_blocks.0.resnets.0.conv_shortcut.weight", 4, 2, 1, 1), &e);
    assert_int_equal(n_live, 0); /* both aliased */
    ok(zw_check_all_used(&L), &e);
    zw_loader_free(&L);
    zw_source_free(s);
    free(a);
}

/* ---- conv permutation ----------------------------------------------------------------- */

static void test_conv_permute(void **state) {
    (void)state;
    enum { CO = 3, CI = 5, KH = 2, KW = 3 };
    const char *p = st_path(dir, "convp.safetensors");
    float *w = iota(CO * CI * KH * KW, 0.25f);
    uint16_t *wb = malloc(CO * CI * KH * KW * 2);
    for (int i = 0; i < CO * CI * KH * KW; i++) wb[i] = zf32_to_bf16(w[i]);
    stw *sw = stw_new();
    stw_add_f32(sw, "c.weight", 4, (int64_t[]){CO, CI, KH, KW}, w);
    stw_add(sw, "cb.weight", "BF16", 4, (int64_t[]){CO, CI, KH, KW}, wb, CO * CI * KH * KW * 2);
    stw_write(sw, p);
    stw_free(sw);
    zw_source *s = open_src(p, ZW_VAE);
    zerr e = {0};
    zbackend *bes[2] = {&host_be, &dev_be};
    for (int b = 0; b < 2; b++) {
        zw_loader L;
        zt t, tb;
        ok(zw_loader_init(&L, bes[b], s, "vae", &e), &e);
        ok(zw_load_conv(&L, &t, "c.weight", CO, CI, KH, KW), &e);
        ok(zw_load_conv(&L, &tb, "cb.weight", CO, CI, KH, KW), &e);
        assert_int_equal(t.ndim, 2);
        assert_int_equal(t.ne[0], CO);
        assert_int_equal(t.ne[1], KH * KW * CI);
        assert_int_equal(t.dtype, b ? ZT_BF16 : ZT_F32);
        assert_int_equal(tb.dtype, ZT_BF16);
        int bad = 0;
        for (int o = 0; o < CO; o++)
            for (int i = 0; i < CI; i++)
                for (int y = 0; y < KH; y++)
                    for (int x = 0; x < KW; x++) {
                        size_t src = (size_t)((o * CI + i) * KH + y) * KW + x;
                        size_t dst = (size_t)o * KH * KW * CI + (size_t)(y * KW + x) * CI + i;
                        float got = b ? zbf16_to_f32(((uint16_t *)t.data)[dst]) : ((float *)t.data)[dst];
                        float want = b ? zbf16_to_f32(zf32_to_bf16(w[src])) : w[src];
                        if (got != want || ((uint16_t *)tb.data)[dst] != wb[src]) {
                            if (bad++ < 5)
                                fprintf(stderr, "conv[%d][%d][%d][%d]: got %g want %g\n", o, i, y, x, got, want);
                        }
                    }
        assert_int_equal(bad, 0);
        ok(zw_check_all_used(&L), &e);
        zw_loader_free(&L);
        assert_int_equal(n_live, 0);
    }
    zw_source_free(s);
    free(w);
    free(wb);
}

/* ---- random weights --------------------------------------------------------------------- */

static void stats(const zt *t, double *mean, double *sd) {
    size_t n = (size_t)zt_numel(t);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double v = t->dtype == ZT_F32 ? ((float *)t->data)[i] : zbf16_to_f32(((uint16_t *)t->data)[i]);
        s += v;
        s2 += v * v;
    }
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
}

typedef struct rset {
    zt m, norm, bias, cat, conv, big;
} rset;

static void load_random(zbackend *be, uint64_t seed, int threads, zw_loader *L, rset *r, int big) {
    zerr e = {0};
    omp_set_num_threads(threads);
    ok(zw_loader_init(L, be, NULL, "transformer", &e), &e);
    L->seed = seed;
    ok(zw_load2(L, &r->m, "layers.0.feed_forward.w1.weight", 300, 1000), &e);
    ok(zw_load1(L, &r->norm, "layers.0.attention_norm1.weight", 1000), &e);
    ok(zw_load1(L, &r->bias, "t_embedder.mlp.0.bias", 1000), &e);
    const char *cn[2] = {"a.weight", "b.weight"};
    ok(zw_load_cat(L, &r->cat, cn, 2, (int64_t[]){3, 5}, 64), &e);
    ok(zw_load_conv(L, &r->conv, "conv.weight", 8, 16, 3, 3), &e);
    if (big) ok(zw_load2(L, &r->big, "big.weight", 2100, 2100), &e); /* > one device super-chunk */
    ok(zw_check_all_used(L), &e);
}

static void test_random_weights(void **state) {
    (void)state;
    int big = !test_quick();
    zw_loader A, B, C, D;
    rset a, b, c, d;
    load_random(&host_be, 42, 1, &A, &a, big);
    load_random(&host_be, 42, 3, &B, &b, big);
    load_random(&host_be, 43, 2, &C, &c, big);
    load_random(&dev_be, 42, 2, &D, &d, big);
    omp_set_num_threads(2);
    assert_int_equal(a.m.dtype, ZT_BF16); /* as if stored bf16 */
    assert_int_equal(a.norm.dtype, ZT_F32);
    assert_int_equal(d.m.dtype, ZT_BF16);
    zt *ta[6] = {&a.m, &a.norm, &a.bias, &a.cat, &a.conv, &a.big}, *tb[6] = {&b.m, &b.norm, &b.bias, &b.cat, &b.conv, &b.big},
       *tc[6] = {&c.m, &c.norm, &c.bias, &c.cat, &c.conv, &c.big}, *td[6] = {&d.m, &d.norm, &d.bias, &d.cat, &d.conv, &d.big};
    for (int i = 0; i < (big ? 6 : 5); i++) {
        assert_memory_equal(ta[i]->data, tb[i]->data, zt_nbytes(ta[i])); /* thread count does not matter */
        assert_memory_equal(ta[i]->data, td[i]->data, zt_nbytes(ta[i])); /* device path = host path */
        assert_memory_not_equal(ta[i]->data, tc[i]->data, zt_nbytes(ta[i])); /* seed matters */
    }
    double mean, sd;
    stats(&a.m, &mean, &sd);
    printf("random matrix [300,1000]: mean %.2e sd %.5f (want %.5f)\n", mean, sd, 1 / sqrt(1000.0));
    assert_true(fabs(sd * sqrt(1000.0) - 1) < 0.02 && fabs(mean) < 1e-3);
    stats(&a.norm, &mean, &sd);
    assert_true(fabs(mean - 1) < 0.02 && fabs(sd - 0.1) < 0.01);
    stats(&a.bias, &mean, &sd);
    assert_true(fabs(mean) < 0.005 && fabs(sd - 0.02) < 0.003);
    stats(&a.conv, &mean, &sd);
    assert_true(fabs(sd * sqrt(16 * 9.0) - 1) < 0.1);
    /* a block of a cat equals the same tensor loaded alone */
    zw_loader E;
    zerr e = {0};
    zt alone;
    ok(zw_loader_init(&E, &host_be, NULL, "transformer", &e), &e);
    E.seed = 42;
    ok(zw_load2(&E, &alone, "b.weight", 5, 64), &e);
    assert_memory_equal(alone.data, (uint16_t *)a.cat.data + 3 * 64, 5 * 64 * 2);
    uint64_t np = 300 * 1000 + 1000 + 1000 + 8 * 64 + 8 * 16 * 9 + (big ? 2100 * 2100 : 0);
    assert_int_equal(A.n_params, np);
    zw_loader_free(&A), zw_loader_free(&B), zw_loader_free(&C), zw_loader_free(&D), zw_loader_free(&E);
    assert_int_equal(n_live, 0);
}

/* ---- sources from folders ------------------------------------------------------------------ */

static void test_source_folders(void **state) {
    (void)state;
    char sub[4096];
    float a[2] = {1, 2};
    zerr e = {0};
    zw_source *s;
    /* sharded */
    snprintf(sub, sizeof sub, "%s/sharded", dir);
    mkdir(sub, 0700);
    stw *sw = stw_new();
    stw_add_f32(sw, "x", 1, (int64_t[]){2}, a);
    stw_write(sw, st_path(sub, "model-00001-of-00002.safetensors"));
    stw_free(sw);
    sw = stw_new();
    stw_add_f32(sw, "y", 1, (int64_t[]){2}, a);
    stw_write(sw, st_path(sub, "model-00002-of-00002.safetensors"));
    stw_free(sw);
    st_write_text(st_path(sub, "model.safetensors.index.json"),
                  "{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\",\"y\":\"model-00002-of-00002.safetensors\"}}");
    s = open_src(sub, ZW_VAE);
    assert_int_equal(zw_source_count(s), 2);
    assert_non_null(strstr(zw_source_path(s), "model.safetensors.index.json"));
    zw_view v;
    assert_true(zw_source_find(s, "y", &v));
    assert_non_null(strstr(v.file, "00002"));
    zw_source_free(s);
    /* single file with an unusual name */
    snprintf(sub, sizeof sub, "%s/single", dir);
    mkdir(sub, 0700);
    sw = stw_new();
    stw_add_f32(sw, "x", 1, (int64_t[]){2}, a);
    stw_write(sw, st_path(sub, "weights.safetensors"));
    s = open_src(sub, ZW_VAE);
    zw_source_free(s);
    /* two candidates */
    stw_write(sw, st_path(sub, "weights2.safetensors"));
    stw_free(sw);
    assert_int_equal(zw_source_open(&s, sub, ZW_VAE, &e), ZE_INVALID);
    expect_msg(&e, sub, "several weight files", "weights2.safetensors");
    /* nothing */
    snprintf(sub, sizeof sub, "%s/empty", dir);
    mkdir(sub, 0700);
    assert_int_equal(zw_source_open(&s, sub, ZW_VAE, &e), ZE_IO);
    expect_msg(&e, "no weights in", sub, NULL);
    /* same tensor under two names (TE prefix) */
    sw = stw_new();
    stw_add_f32(sw, "norm.weight", 1, (int64_t[]){2}, a);
    stw_add_f32(sw, "model.norm.weight", 1, (int64_t[]){2}, a);
    stw_write(sw, st_path(dir, "dup.safetensors"));
    stw_free(sw);
    assert_int_equal(zw_source_open(&s, st_path(dir, "dup.safetensors"), ZW_TE, &e), ZE_FORMAT);
    expect_msg(&e, "'model.norm.weight' and 'norm.weight'", NULL, NULL);
}

/* ---- real fixture models, converted to the single-file layouts ------------------------ */

/* Replace the first `from` in s by `to`; returns 1 if replaced. */
static int repl(char *s, size_t n, const char *from, const char *to) {
    char *at = strstr(s, from);
    if (!at) return 0;
    char tail[512];
    snprintf(tail, sizeof tail, "%s", at + strlen(from));
    snprintf(at, n - (size_t)(at - s), "%s%s", to, tail);
    return 1;
}

/* diffusers DiT name -> ComfyUI name (spec 1.6), q/k/v handled by the caller. */
static void comfy_name(const char *n, char *out, size_t len) {
    snprintf(out, len, "model.diffusion_model.%s", n);
    repl(out, len, "all_x_embedder.2-1.", "x_embedder.");
    repl(out, len, "all_final_layer.2-1.", "final_layer.");
    repl(out, len, ".attention.to_out.0.weight", ".attention.out.weight");
    repl(out, len, ".attention.norm_q.weight", ".attention.q_norm.weight");
    repl(out, len, ".attention.norm_k.weight", ".attention.k_norm.weight");
}

/* diffusers VAE name -> LDM name (spec 1.6); *attn_linear set for q/k/v/proj_out weights. */
static void ldm_name(const char *n, int nblocks, char *out, size_t len, int *attn_linear) {
    int i, j, pos = 0;
    char pre[16];
    *attn_linear = 0;
    snprintf(out, len, "%s", n);
    if (sscanf(n, "encoder.down_blocks.%d.resnets.%d.%n", &i, &j, &pos) == 2 && pos)
        snprintf(out, len, "encoder.down.%d.block.%d.%s", i, j, n + pos);
    else if (pos = 0, sscanf(n, "encoder.down_blocks.%d.downsamplers.0.conv.%n", &i, &pos) == 1 && pos)
        snprintf(out, len, "encoder.down.%d.downsample.conv.%s", i, n + pos);
    else if (pos = 0, sscanf(n, "decoder.up_blocks.%d.resnets.%d.%n", &i, &j, &pos) == 2 && pos)
        snprintf(out, len, "decoder.up.%d.block.%d.%s", nblocks - 1 - i, j, n + pos);
    else if (pos = 0, sscanf(n, "decoder.up_blocks.%d.upsamplers.0.conv.%n", &i, &pos) == 1 && pos)
        snprintf(out, len, "decoder.up.%d.upsample.conv.%s", nblocks - 1 - i, n + pos);
    else if (pos = 0, sscanf(n, "%15[a-z].mid_block.resnets.%d.%n", pre, &i, &pos) == 2 && pos)
        snprintf(out, len, "%s.mid.block_%d.%s", pre, i + 1, n + pos);
    else if (pos = 0, sscanf(n, "%15[a-z].mid_block.attentions.0.%n", pre, &pos) == 1 && pos) {
        const char *r = n + pos;
        const char *from[5] = {"group_norm.", "to_q.", "to_k.", "to_v.", "to_out.0."};
        const char *to[5] = {"norm.", "q.", "k.", "v.", "proj_out."};
        for (int k = 0; k < 5; k++)
            if (!strncmp(r, from[k], strlen(from[k]))) {
                snprintf(out, len, "%s.mid.attn_1.%s%s", pre, to[k], r + strlen(from[k]));
                *attn_linear = k > 0 && !strcmp(r + strlen(from[k]), "weight");
            }
    }
    repl(out, len, "conv_shortcut", "nin_shortcut");
    repl(out, len, "conv_norm_out", "norm_out");
}

static size_t tbytes(const zst_tensor *t) { return (size_t)(t->end - t->begin); }

static void test_fixture_models(void **state) {
    (void)state;
    if (!fixture_exists(fixture_path("models/tiny-a/model_index.json"))) {
        printf("fixtures missing: skipped\n");
        skip();
    }
    const char *models[2] = {"models/tiny-a", "models/tiny-b"};
    for (int mi = 0; mi < 2; mi++) {
        static zmodel_paths mp;
        zerr e = {0};
        char root[4096];
        snprintf(root, sizeof root, "%s", fixture_path("%s", models[mi]));
        ok(zmodel_resolve(&mp, root, NULL, NULL, NULL, NULL, &e), &e);
        dit_config dc;
        qwen3_config qc;
        vae_config vc;
        sched_config sc;
        ok(dit_config_load(&dc, mp.dit_config, &e), &e);
        ok(qwen3_config_load(&qc, mp.te_config, &e), &e);
        ok(vae_config_load(&vc, mp.vae_config, &e), &e);
        ok(sched_config_load(&sc, mp.sched_config, &e), &e);

        /* text encoder: "model." prefix in tiny-a, bare names in tiny-b */
        zw_source *te = open_src(mp.te, ZW_TE);
        assert_int_equal(zw_source_count(te), qc.num_hidden_layers * 11 + 2);
        zw_view v;
        assert_true(zw_source_find(te, "model.embed_tokens.weight", &v));
        assert_int_equal(v.ne[0], qc.vocab_size);
        assert_int_equal(v.ne[1], qc.hidden_size);
        assert_true(zw_source_find(te, "model.layers.0.self_attn.q_proj.weight", &v));
        assert_int_equal(v.ne[0], qc.num_attention_heads * qc.head_dim);
        zw_source_free(te);

        /* DiT: diffusers file(s) -> one ComfyUI file */
        zw_source *dsrc = open_src(mp.dit, ZW_DIT);
        int nmod = dc.n_layers + dc.n_refiner_layers;
        assert_int_equal(zw_source_count(dsrc), nmod * 15 + dc.n_refiner_layers * 13 + 15);
        zst_set *ds = NULL;
        ok(zst_set_open(&ds, zw_source_path(dsrc), &e), &e);
        stw *sw = stw_new();
        char nm[512];
        for (int i = 0; i < ds->n; i++) {
            const zst_tensor *t = ds->all[i].t;
            if (strstr(t->name, ".attention.to_k.weight") || strstr(t->name, ".attention.to_v.weight")) continue;
            if (strstr(t->name, ".attention.to_q.weight")) {
                char base[256];
                snprintf(base, sizeof base, "%s", t->name);
                *strstr(base, "to_q.weight") = '\0';
                snprintf(nm, sizeof nm, "%sto_k.weight", base);
                const zst_tensor *tk = zst_set_find(ds, nm)->t;
                snprintf(nm, sizeof nm, "%sto_v.weight", base);
                const zst_tensor *tv = zst_set_find(ds, nm)->t;
                size_t b = tbytes(t);
                char *fused = malloc(3 * b);
                memcpy(fused, t->data, b), memcpy(fused + b, tk->data, b), memcpy(fused + 2 * b, tv->data, b);
                snprintf(nm, sizeof nm, "model.diffusion_model.%sqkv.weight", base);
                stw_add(sw, nm, zst_dtype_name(t->dtype), 2, (int64_t[]){3 * t->shape[0], t->shape[1]}, fused, 3 * b);
                free(fused);
                continue;
            }
            comfy_name(t->name, nm, sizeof nm);
            stw_add(sw, nm, zst_dtype_name(t->dtype), t->ndim, t->shape, t->data, tbytes(t));
        }
        float *nf = iota((size_t)dc.dim, 1);
        stw_add_f32(sw, "model.diffusion_model.norm_final.weight", 1, (int64_t[]){dc.dim}, nf);
        free(nf);
        const char *cpath = st_path(dir, "fixture_comfy.safetensors");
        stw_write(sw, cpath);
        stw_free(sw);
        zw_source *csrc = open_src(cpath, ZW_DIT);
        assert_int_equal(zw_source_count(csrc), ds->n - 2 * nmod - 2 * dc.n_refiner_layers + 1);
        zw_loader L;
        ok(zw_loader_init(&L, &host_be, csrc, "transformer", &e), &e);
        for (int i = 0; i < ds->n; i++) {
            const zst_tensor *t = ds->all[i].t;
            int found = zw_source_find(csrc, t->name, &v);
            if (!found || v.ndim != t->ndim || memcmp(v.data, t->data, tbytes(t))) {
                fprintf(stderr, "%s: '%s' differs in the ComfyUI layout\n", models[mi], t->name);
                fail();
            }
            zt out;
            ok(zw_load(&L, &out, t->name, t->ndim, t->shape), &e);
        }
        ok(zw_check_all_used(&L), &e);
        zw_loader_free(&L);
        zw_source_free(csrc);
        zst_set_close(ds);
        zw_source_free(dsrc);

        /* VAE: diffusers -> LDM (ae.safetensors) names */
        zw_source *vsrc = open_src(mp.vae, ZW_VAE);
        zst_set *vs = NULL;
        ok(zst_set_open(&vs, zw_source_path(vsrc), &e), &e);
        sw = stw_new();
        for (int i = 0; i < vs->n; i++) {
            const zst_tensor *t = vs->all[i].t;
            int lin;
            ldm_name(t->name, vc.n_blocks, nm, sizeof nm, &lin);
            if (lin) stw_add(sw, nm, zst_dtype_name(t->dtype), 4, (int64_t[]){t->shape[0], t->shape[1], 1, 1}, t->data, tbytes(t));
            else stw_add(sw, nm, zst_dtype_name(t->dtype), t->ndim, t->shape, t->data, tbytes(t));
        }
        const char *lpath = st_path(dir, "fixture_ae.safetensors");
        stw_write(sw, lpath);
        stw_free(sw);
        zw_source *lsrc = open_src(lpath, ZW_VAE);
        ok(zw_loader_init(&L, &host_be, lsrc, "vae", &e), &e);
        for (int i = 0; i < vs->n; i++) {
            const zst_tensor *t = vs->all[i].t;
            if (!zw_source_find(lsrc, t->name, &v) || memcmp(v.data, t->data, tbytes(t))) {
                fprintf(stderr, "%s: '%s' differs in the LDM layout\n", models[mi], t->name);
                fail();
            }
            zt out;
            if (t->ndim == 4)
                ok(zw_load_conv(&L, &out, t->name, t->shape[0], t->shape[1], (int)t->shape[2], (int)t->shape[3]), &e);
            else if (strstr(t->name, ".attentions.0.to_") && strstr(t->name, ".weight"))
                ok(zw_load_linear_or_conv1x1(&L, &out, t->name, t->shape[0], t->shape[1]), &e);
            else
                ok(zw_load(&L, &out, t->name, t->ndim, t->shape), &e);
        }
        ok(zw_check_all_used(&L), &e);
        zw_loader_free(&L);
        zw_source_free(lsrc);
        zst_set_close(vs);
        zw_source_free(vsrc);
        assert_int_equal(n_live, 0);
    }
}

/* ---- the real CPU backend ---------------------------------------------------------------------- */

static void test_cpu_backend_zero_copy(void **state) {
    (void)state;
    zbackend *be = NULL;
    zerr e = {0};
    if (zbackend_create(&be, "cpu", 1, &e) != ZE_OK) {
        printf("cpu backend unavailable (%s): skipped\n", e.msg);
        skip();
    }
    const char *p = st_path(dir, "cpu.safetensors");
    float *w = iota(64, 1);
    uint16_t wb[64];
    for (int i = 0; i < 64; i++) wb[i] = zf32_to_bf16(w[i]);
    stw *sw = stw_new();
    stw_add_f32(sw, "w", 2, (int64_t[]){8, 8}, w);
    stw_add(sw, "wb", "BF16", 2, (int64_t[]){8, 8}, wb, sizeof wb);
    stw_add(sw, "vb", "BF16", 1, (int64_t[]){8}, wb, 16);
    stw_write(sw, p);
    stw_free(sw);
    zw_source *s = open_src(p, ZW_DIT);
    zw_loader L;
    zt t, tb, vb;
    zw_view v;
    ok(zw_loader_init(&L, be, s, "transformer", &e), &e);
    ok(zw_load2(&L, &t, "w", 8, 8), &e);
    ok(zw_load2(&L, &tb, "wb", 8, 8), &e);
    ok(zw_load1(&L, &vb, "vb", 8), &e);
    zw_source_find(s, "w", &v);
    assert_ptr_equal(t.data, v.data);
    zw_source_find(s, "wb", &v);
    assert_ptr_equal(tb.data, v.data);
    assert_int_equal(tb.dtype, ZT_BF16);
    assert_int_equal(vb.dtype, ZT_F32); /* vectors: F32 copy */
    float back[8];
    ok(zt_download_f32(be, &vb, back), &e);
    assert_memory_equal(back, w, sizeof back);
    assert_int_equal(L.n_bytes, 32);
    zw_loader_free(&L);
    zw_source_free(s);
    zbackend_destroy(be);
    free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_copy_host),   cmocka_unit_test(test_conversion_exact),
        cmocka_unit_test(test_errors),           cmocka_unit_test(test_comfy_dit),
        cmocka_unit_test(test_diffusers_dit_cat), cmocka_unit_test(test_te_prefix),
        cmocka_unit_test(test_vae_ldm),          cmocka_unit_test(test_vae_diffusers_linear),
        cmocka_unit_test(test_conv_permute),     cmocka_unit_test(test_random_weights),
        cmocka_unit_test(test_source_folders),   cmocka_unit_test(test_fixture_models),
        cmocka_unit_test(test_cpu_backend_zero_copy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
