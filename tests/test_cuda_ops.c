/* test_cuda_ops.c - every op of the CUDA backend against the CPU backend
 * (zcpu_backend_create), through zexec + the zop_* dispatchers the way the
 * models call them; plus graph capture/replay, and a perf mode.
 *
 * Inputs are random (never zero) and quantized to the dtype the GPU side
 * uses, so both backends see identical values; the CPU runs in F32.  GPU
 * outputs are poisoned with NaN before each op (assert_close fails on any
 * non-finite value, so every element must have been written).  Shapes are
 * varied and odd: M = 1 / 7 / 33 / 4100, K not a multiple of 8, B = 2 with
 * different kv_len, causal and not, GQA 4:1, head dims 40 / 64 / 128 / 512,
 * every VAE conv channel plan (small spatial sizes), 1x1, stride-2 (0,0,1,1),
 * groupnorm with cg = 4 / 16 / odd channel counts, F32/F16 activations.
 *
 * Tolerances (relative: max|gpu - cpu| / max|cpu|):
 *   bf16 / f16 outputs, GEMM-based ops        1e-2
 *   attention (P rounded to bf16 as in FA2)   2e-2
 *   F32 outputs of F32 elementwise / norms     1e-5 (2e-5 for reductions)
 *   layout / copy ops                          exact (0)
 *
 * Without a GPU (or in a build without ZIMAGE_HAVE_CUDA) every test is
 * skipped.  ZIMAGE_PERF=1 adds the perf test: time and TFLOP/s or GB/s per op
 * at the full-size shapes (DiT GEMMs, attention, VAE convs, norms), the text
 * encoder (35 layers at 128 tokens) and the VAE decoder (1024x1024) as op
 * sequences, and one DiT block replayed as a CUDA graph; ZIMAGE_PERF=2 skips
 * the GEMM / attention / conv sweeps.  ZIMAGE_TEST_QUICK=1 drops the largest
 * correctness cases; ZIMAGE_TEST_FILTER=<pattern> runs only matching tests. */
#include "util/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/half.h"
#include "io/png.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/ops.h"
#ifdef ZIMAGE_HAVE_CUDA
#include "ops/cuda/cuda_backend.h"
#endif

#define TOL_BF 1e-2
#define TOL_ATT 2e-2
#define TOL32 1e-5
#define TOL32R 2e-5

#ifdef ZIMAGE_HAVE_CUDA

static zerr g_ecpu, g_egpu;
static zbackend *g_cpu, *g_gpu;

/* ---- bookkeeping: tensors and host buffers freed after each test ---------------- */

#define MAXT 256
static struct {
    zbackend *be;
    zt t;
} g_t[MAXT];
static int g_nt;
static void *g_h[MAXT];
static int g_nh;

static void *hmalloc(size_t bytes) {
    assert_true(g_nh < MAXT);
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    g_h[g_nh++] = p;
    return p;
}

static int test_setup(void **state) {
    (void)state;
    zerr_clear(&g_ecpu);
    zerr_clear(&g_egpu);
    return 0;
}

static int test_teardown(void **state) {
    (void)state;
    for (int i = 0; i < g_nt; i++) zt_free(g_t[i].be, &g_t[i].t);
    g_nt = 0;
    for (int i = 0; i < g_nh; i++) free(g_h[i]);
    g_nh = 0;
    return 0;
}

/* ---- random values -------------------------------------------------------------------- */

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static double urand(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (double)((g_rng * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}
static float rnd(void) { /* +-[0.05, 1) */
    float m = (float)(0.05 + 0.95 * urand());
    return urand() < 0.5 ? -m : m;
}
static float quant(float v, zt_dtype dt) {
    if (dt == ZT_BF16) return zbf16_to_f32(zf32_to_bf16(v));
    if (dt == ZT_F16) return zf16_to_f32(zf32_to_f16(v));
    return v;
}
/* n values a*rnd() + b quantized to dt */
static float *hrand(int64_t n, zt_dtype dt, float a, float b) {
    float *h = hmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) h[i] = quant(a * rnd() + b, dt);
    return h;
}

#define NE(...) (int64_t[]){__VA_ARGS__}, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

/* A tensor on `be` holding `vals` (F32 host values; NULL: NaN poison). */
static zt mk(zbackend *be, zt_dtype dt, const int64_t *ne, int nd, const float *vals) {
    assert_true(g_nt < MAXT);
    zt t;
    if (zt_alloc(be, &t, dt, nd, ne) != ZE_OK) fail_msg("alloc failed: %s", be->err->msg);
    int64_t n = zt_numel(&t);
    const float *src = vals;
    if (!src) {
        float *nan = hmalloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) nan[i] = NAN;
        src = nan;
    }
    if (n && zt_upload(be, &t, src, ZT_F32) != ZE_OK) fail_msg("upload failed: %s", be->err->msg);
    g_t[g_nt].be = be;
    g_t[g_nt].t = t;
    g_nt++;
    return t;
}

/* The same values on both backends: GPU in dtype dt, CPU in F32. */
typedef struct {
    zt g, c;
    const float *h;
} pair;
static pair mk2(zt_dtype dt, const int64_t *ne, int nd, const float *vals) {
    pair p;
    p.g = mk(g_gpu, dt, ne, nd, vals);
    p.c = mk(g_cpu, ZT_F32, ne, nd, vals);
    p.h = vals;
    return p;
}
/* Output pair: GPU poisoned with NaN, CPU zero... (CPU values are overwritten) */
static pair out2(zt_dtype dt, const int64_t *ne, int nd) {
    pair p;
    p.g = mk(g_gpu, dt, ne, nd, NULL);
    p.c = mk(g_cpu, ZT_F32, ne, nd, NULL);
    p.h = NULL;
    return p;
}

static float *dl(zbackend *be, const zt *t) {
    float *h = hmalloc((size_t)zt_numel(t) * 4);
    if (zt_numel(t) && zt_download_f32(be, t, h) != ZE_OK) fail_msg("download failed: %s", be->err->msg);
    return h;
}

static zexec g_zg, g_zc;
static zexec *XG(void) {
    zx_begin(&g_zg, g_gpu, NULL, 0);
    return &g_zg;
}
static zexec *XC(void) {
    zx_begin(&g_zc, g_cpu, NULL, 0);
    return &g_zc;
}
static void ok2(const char *what) {
    if (g_zg.status != ZE_OK) fail_msg("%s: gpu op failed: %s", what, g_egpu.msg);
    if (g_zc.status != ZE_OK) fail_msg("%s: cpu op failed: %s", what, g_ecpu.msg);
    if (g_gpu->vt->sync(g_gpu) != ZE_OK) fail_msg("%s: gpu sync failed: %s", what, g_egpu.msg);
}
static void cmp(const char *what, const pair *o, double tol) {
    float *g = dl(g_gpu, &o->g), *c = dl(g_cpu, &o->c);
    assert_close(what, g, c, (size_t)zt_numel(&o->g), tol);
}

/* ---- matmul ------------------------------------------------------------------------------ */

static void one_matmul(int64_t M, int64_t K, int64_t N, zt_dtype xdt, zt_dtype ydt, int bias, int acc) {
    char name[96];
    snprintf(name, sizeof name, "matmul %lldx%lld->%lld x%s y%s%s%s", (long long)M, (long long)K, (long long)N,
             zt_dtype_name(xdt), zt_dtype_name(ydt), bias ? " bias" : "", acc ? " acc" : "");
    pair x = mk2(xdt, NE(M, K), hrand(M * K, ZT_BF16, 1.0f, 0.0f)); /* the GPU casts x to bf16 */
    pair w = mk2(ZT_BF16, NE(N, K), hrand(N * K, ZT_BF16, 1.0f / sqrtf((float)K), 0.0f));
    pair b = mk2(ZT_F32, NE(N), hrand(N, ZT_F32, 0.5f, 0.0f));
    pair y;
    if (acc) {
        float *y0 = hrand(M * N, ydt, 1.0f, 0.0f);
        y = mk2(ydt, NE(M, N), y0);
    } else {
        y = out2(ydt, NE(M, N));
    }
    zop_matmul(XG(), &y.g, &x.g, &w.g, bias ? &b.g : NULL, acc);
    zop_matmul(XC(), &y.c, &x.c, &w.c, bias ? &b.c : NULL, acc);
    ok2(name);
    cmp(name, &y, ydt == ZT_F32 ? 1e-4 : TOL_BF);
}

static void test_matmul(void **state) {
    (void)state;
    one_matmul(1, 256, 1024, ZT_BF16, ZT_F32, 1, 0);  /* adaLN-like, F32 out */
    one_matmul(2, 256, 1024, ZT_F32, ZT_BF16, 1, 0);  /* t-MLP: F32 x */
    one_matmul(7, 40, 33, ZT_BF16, ZT_BF16, 1, 0);    /* odd N */
    one_matmul(7, 37, 24, ZT_BF16, ZT_BF16, 0, 0);    /* K not a multiple of 8 */
    one_matmul(33, 200, 64, ZT_F32, ZT_BF16, 0, 0);   /* x F32 */
    one_matmul(64, 96, 48, ZT_BF16, ZT_F32, 1, 1);    /* residual accumulate + bias */
    one_matmul(5, 24, 16, ZT_F16, ZT_F16, 0, 1);      /* F16 x and y */
    one_matmul(3, 7, 5, ZT_F32, ZT_F32, 1, 0);        /* tiny odd */
    one_matmul(4100, 256, 136, ZT_BF16, ZT_BF16, 1, 0);
    if (!test_quick()) one_matmul(4224, 384, 1152, ZT_BF16, ZT_BF16, 0, 0);
}

/* ---- norms --------------------------------------------------------------------------------- */

static void one_rmsnorm(int64_t R, int64_t D, int64_t B, zt_dtype xdt, zt_dtype ydt, int w, int sc, int inplace) {
    char name[96];
    snprintf(name, sizeof name, "rmsnorm %lldx%lld B%lld x%s y%s%s%s%s", (long long)R, (long long)D, (long long)B,
             zt_dtype_name(xdt), zt_dtype_name(ydt), w ? " w" : "", sc ? " scale" : "", inplace ? " inplace" : "");
    pair x = mk2(xdt, NE(R, D), hrand(R * D, xdt, 2.0f, 0.3f));
    pair wt = mk2(ZT_F32, NE(D), hrand(D, ZT_F32, 0.5f, 1.0f));
    pair s = mk2(ZT_F32, NE(B, 3 * D), hrand(B * 3 * D, ZT_F32, 0.5f, 0.0f));
    zvec svg = {sc ? &s.g : NULL, D}, svc = {sc ? &s.c : NULL, D};
    pair y = inplace ? x : out2(ydt, NE(R, D));
    zop_rmsnorm(XG(), &y.g, &x.g, w ? &wt.g : NULL, svg, B, 1e-5f);
    zop_rmsnorm(XC(), &y.c, &x.c, w ? &wt.c : NULL, svc, B, 1e-5f);
    ok2(name);
    cmp(name, &y, (inplace ? xdt : ydt) == ZT_F32 ? TOL32R : TOL_BF);
}

static void one_layernorm(int64_t R, int64_t D, int64_t B, int affine, int sc) {
    char name[96];
    snprintf(name, sizeof name, "layernorm %lldx%lld B%lld%s%s", (long long)R, (long long)D, (long long)B,
             affine ? " affine" : "", sc ? " scale" : "");
    pair x = mk2(ZT_F32, NE(R, D), hrand(R * D, ZT_F32, 2.0f, 0.7f));
    pair wt = mk2(ZT_F32, NE(D), hrand(D, ZT_F32, 0.5f, 1.0f));
    pair bb = mk2(ZT_F32, NE(D), hrand(D, ZT_F32, 0.5f, 0.0f));
    pair s = mk2(ZT_F32, NE(B, D), hrand(B * D, ZT_F32, 0.5f, 0.0f));
    zvec svg = {sc ? &s.g : NULL, 0}, svc = {sc ? &s.c : NULL, 0};
    pair y = out2(ZT_BF16, NE(R, D));
    zop_layernorm(XG(), &y.g, &x.g, affine ? &wt.g : NULL, affine ? &bb.g : NULL, svg, B, 1e-6f);
    zop_layernorm(XC(), &y.c, &x.c, affine ? &wt.c : NULL, affine ? &bb.c : NULL, svc, B, 1e-6f);
    ok2(name);
    cmp(name, &y, TOL_BF);
}

static void one_nga(int64_t R, int64_t D, int64_t B, zt_dtype ydt, zt_dtype gdt, int gate, int w) {
    char name[96];
    snprintf(name, sizeof name, "norm_gate_add %lldx%lld B%lld y%s%s%s", (long long)R, (long long)D, (long long)B,
             zt_dtype_name(ydt), gate ? " gate" : "", w ? " w" : "");
    pair x = mk2(ZT_F32, NE(R, D), hrand(R * D, ZT_F32, 3.0f, 0.0f));
    pair y = mk2(ydt, NE(R, D), hrand(R * D, ydt, 5.0f, 0.1f));
    pair wt = mk2(ZT_F32, NE(D), hrand(D, ZT_F32, 0.5f, 1.0f));
    pair g = mk2(gdt, NE(B, 4 * D), hrand(B * 4 * D, gdt, 1.5f, 0.0f));
    zvec gg = {gate ? &g.g : NULL, 3 * D}, gc = {gate ? &g.c : NULL, 3 * D};
    zop_norm_gate_add(XG(), &x.g, &y.g, w ? &wt.g : NULL, gg, B, 1e-5f);
    zop_norm_gate_add(XC(), &x.c, &y.c, w ? &wt.c : NULL, gc, B, 1e-5f);
    ok2(name);
    cmp(name, &x, TOL32R);
}

/* norm_gate_add + rmsnorm of the updated x (fused on the GPU, two ops on the CPU). */
static void one_ngan(int64_t R, int64_t D, int64_t B, zt_dtype xdt, zt_dtype hdt, int gate, int sc) {
    char name[112];
    snprintf(name, sizeof name, "norm_gate_add_norm %lldx%lld B%lld x%s h%s%s%s", (long long)R, (long long)D,
             (long long)B, zt_dtype_name(xdt), zt_dtype_name(hdt), gate ? " gate" : "", sc ? " scale" : "");
    pair x = mk2(xdt, NE(R, D), hrand(R * D, xdt, 3.0f, 0.0f));
    pair y = mk2(ZT_BF16, NE(R, D), hrand(R * D, ZT_BF16, 5.0f, 0.1f));
    pair wt = mk2(ZT_F32, NE(D), hrand(D, ZT_F32, 0.5f, 1.0f));
    pair w2 = mk2(ZT_F32, NE(D), hrand(D, ZT_F32, 0.5f, 1.0f));
    pair g = mk2(ZT_F32, NE(B, 4 * D), hrand(B * 4 * D, ZT_F32, 1.5f, 0.0f));
    zvec gg = {gate ? &g.g : NULL, D}, gc = {gate ? &g.c : NULL, D};
    zvec sg = {sc ? &g.g : NULL, 2 * D}, scc = {sc ? &g.c : NULL, 2 * D};
    pair h = out2(hdt, NE(R, D));
    zop_norm_gate_add_norm(XG(), &x.g, &y.g, &wt.g, gg, &h.g, &w2.g, sg, B, 1e-6f);
    zop_norm_gate_add_norm(XC(), &x.c, &y.c, &wt.c, gc, &h.c, &w2.c, scc, B, 1e-6f);
    ok2(name);
    cmp(name, &x, xdt == ZT_F32 ? TOL32R : TOL_BF);
    /* a bf16 x element that rounds the other way (FMA) moves h by a bf16 step */
    cmp(name, &h, hdt == ZT_F32 && xdt == ZT_F32 ? TOL32R : TOL_BF);
}

static void test_norms(void **state) {
    (void)state;
    one_rmsnorm(8, 3840, 2, ZT_F32, ZT_BF16, 1, 1, 0); /* DiT pre-norm */
    one_rmsnorm(7, 2560, 1, ZT_BF16, ZT_BF16, 1, 0, 0);
    one_rmsnorm(5, 100, 1, ZT_F32, ZT_F32, 1, 0, 0); /* scalar path */
    one_rmsnorm(6, 64, 3, ZT_F32, ZT_F32, 0, 1, 1);  /* in place, no weight */
    one_rmsnorm(4, 77, 2, ZT_F16, ZT_BF16, 1, 1, 0);
    one_layernorm(8, 3840, 2, 0, 1); /* final layer */
    one_layernorm(5, 64, 1, 1, 0);
    one_layernorm(3, 33, 3, 1, 1);
    one_nga(8, 3840, 2, ZT_BF16, ZT_F32, 1, 1);
    one_nga(6, 3840, 1, ZT_BF16, ZT_BF16, 0, 1);
    one_nga(4, 77, 2, ZT_F32, ZT_BF16, 1, 0);
    one_ngan(8, 3840, 2, ZT_F32, ZT_BF16, 1, 1); /* DiT: attention -> FFN pre-norm */
    one_ngan(6, 3840, 1, ZT_F32, ZT_BF16, 0, 0); /* context refiner (unmodulated) */
    one_ngan(5, 2560, 1, ZT_F32, ZT_F32, 1, 1);
    one_ngan(4, 3840, 2, ZT_BF16, ZT_BF16, 1, 1); /* bf16 residual stream */
    one_ngan(4, 77, 2, ZT_F32, ZT_BF16, 1, 1);    /* unaligned rows: two kernels */
    /* many rows and samples; a bf16 residual with an f32 h */
    one_ngan(test_quick() ? 700 : 1500, 3840, 2, ZT_F32, ZT_BF16, 1, 1);
    one_ngan(900, 1024, 3, ZT_BF16, ZT_F32, 1, 0);
}

static void one_groupnorm(int64_t B, int64_t H, int64_t W, int64_t C, int G, zt_dtype dt, int silu, int inplace) {
    char name[96];
    snprintf(name, sizeof name, "groupnorm [%lld,%lld,%lld,%lld] G%d %s%s%s", (long long)B, (long long)H, (long long)W,
             (long long)C, G, zt_dtype_name(dt), silu ? " silu" : "", inplace ? " inplace" : "");
    pair x = mk2(dt, NE(B, H, W, C), hrand(B * H * W * C, dt, 2.0f, 3.0f));
    pair wt = mk2(ZT_F32, NE(C), hrand(C, ZT_F32, 0.5f, 1.0f));
    pair bb = mk2(ZT_F32, NE(C), hrand(C, ZT_F32, 0.5f, 0.0f));
    pair y = inplace ? x : out2(dt, NE(B, H, W, C));
    zop_groupnorm(XG(), &y.g, &x.g, &wt.g, &bb.g, G, 1e-6f, silu);
    zop_groupnorm(XC(), &y.c, &x.c, &wt.c, &bb.c, G, 1e-6f, silu);
    ok2(name);
    cmp(name, &y, dt == ZT_F32 ? TOL32R : TOL_BF);
}

static void test_groupnorm(void **state) {
    (void)state;
    one_groupnorm(1, 8, 8, 512, 32, ZT_BF16, 1, 0);
    one_groupnorm(2, 5, 7, 128, 32, ZT_BF16, 0, 0); /* cg = 4 */
    one_groupnorm(1, 9, 11, 256, 32, ZT_BF16, 1, 1);
    one_groupnorm(1, 4, 4, 12, 3, ZT_F32, 1, 0);    /* odd channels: scalar path */
    one_groupnorm(2, 6, 3, 64, 32, ZT_F32, 0, 1);
    if (!test_quick()) one_groupnorm(1, 64, 48, 128, 32, ZT_BF16, 1, 0);
}

/* ---- qkv split + norm + rope ------------------------------------------------------------ */

static void one_qkv(int64_t R, int hq, int hkv, int64_t d, int norm, int rope, zrope_pairing pr, zt_dtype dt) {
    char name[96];
    snprintf(name, sizeof name, "qkv_norm_rope R%lld %d/%d d%lld%s%s %s", (long long)R, hq, hkv, (long long)d,
             norm ? " norm" : "", rope ? (pr == ZROPE_HALF ? " rope-half" : " rope-adj") : "", zt_dtype_name(dt));
    int64_t Wd = (hq + 2 * hkv) * d;
    pair qkv = mk2(dt, NE(R, Wd), hrand(R * Wd, dt, 2.0f, 0.0f));
    pair wq = mk2(ZT_F32, NE(d), hrand(d, ZT_F32, 0.5f, 1.0f)), wk = mk2(ZT_F32, NE(d), hrand(d, ZT_F32, 0.5f, 1.0f));
    float *ang = hrand(R * d / 2, ZT_F32, 3.0f, 0.0f), *cs = hmalloc((size_t)(R * d / 2) * 4),
          *sn = hmalloc((size_t)(R * d / 2) * 4);
    for (int64_t i = 0; i < R * d / 2; i++) cs[i] = cosf(ang[i]), sn[i] = sinf(ang[i]);
    pair c = mk2(ZT_F32, NE(R, d / 2), cs), s = mk2(ZT_F32, NE(R, d / 2), sn);
    pair q = out2(dt, NE(R, hq * d)), k = out2(dt, NE(R, hkv * d)), v = out2(dt, NE(R, hkv * d));
    zop_qkv_norm_rope(XG(), &q.g, &k.g, &v.g, &qkv.g, norm ? &wq.g : NULL, norm ? &wk.g : NULL, rope ? &c.g : NULL,
                      rope ? &s.g : NULL, hq, hkv, 1e-5f, pr);
    zop_qkv_norm_rope(XC(), &q.c, &k.c, &v.c, &qkv.c, norm ? &wq.c : NULL, norm ? &wk.c : NULL, rope ? &c.c : NULL,
                      rope ? &s.c : NULL, hq, hkv, 1e-5f, pr);
    ok2(name);
    double tol = dt == ZT_F32 ? TOL32R : TOL_BF;
    char nm[128];
    snprintf(nm, sizeof nm, "%s q", name);
    cmp(nm, &q, tol);
    snprintf(nm, sizeof nm, "%s k", name);
    cmp(nm, &k, tol);
    snprintf(nm, sizeof nm, "%s v", name);
    cmp(nm, &v, dt == ZT_F32 ? 0.0 : TOL_BF);
}

static void test_qkv(void **state) {
    (void)state;
    one_qkv(37, 3, 3, 128, 1, 1, ZROPE_ADJACENT, ZT_BF16); /* DiT */
    one_qkv(21, 4, 1, 128, 1, 1, ZROPE_HALF, ZT_BF16);     /* Qwen3 GQA 4:1 */
    one_qkv(19, 30, 30, 128, 1, 1, ZROPE_ADJACENT, ZT_BF16); /* the DiT's 30 heads */
    one_qkv(11, 32, 8, 128, 1, 1, ZROPE_HALF, ZT_BF16);      /* Qwen3-4B's 32/8 */
    one_qkv(9, 9, 3, 128, 1, 1, ZROPE_HALF, ZT_BF16);        /* warps straddle q|k, k|v, v|end */
    one_qkv(5, 70, 70, 128, 1, 1, ZROPE_ADJACENT, ZT_BF16);  /* > 1024 threads' worth: loops */
    one_qkv(6, 3, 3, 128, 0, 1, ZROPE_ADJACENT, ZT_BF16);    /* rope only */
    one_qkv(9, 2, 2, 64, 1, 1, ZROPE_HALF, ZT_F32);
    one_qkv(13, 1, 1, 512, 0, 0, ZROPE_ADJACENT, ZT_BF16); /* VAE: plain split */
    one_qkv(5, 2, 1, 6, 1, 1, ZROPE_ADJACENT, ZT_F32);     /* tiny head dim */
}

/* ---- attention ------------------------------------------------------------------------------ */

static void one_attn(zbackend *gpu, const char *tag, int64_t B, int64_t Nq, int64_t Nk, int hq, int hkv, int64_t d,
                     const int32_t *kv_len, int causal, zt_dtype dt) {
    char name[128];
    snprintf(name, sizeof name, "attention%s B%lld %lldx%lld %d/%d d%lld%s%s %s", tag, (long long)B, (long long)Nq,
             (long long)Nk, hq, hkv, (long long)d, kv_len ? " kv_len" : "", causal ? " causal" : "",
             zt_dtype_name(dt));
    /* bf16-exact values: the GPU computes attention on bf16 copies */
    pair q = mk2(dt, NE(B, Nq, hq * d), hrand(B * Nq * hq * d, ZT_BF16, 2.0f, 0.0f));
    pair k = mk2(dt, NE(B, Nk, hkv * d), hrand(B * Nk * hkv * d, ZT_BF16, 2.0f, 0.0f));
    pair v = mk2(dt, NE(B, Nk, hkv * d), hrand(B * Nk * hkv * d, ZT_BF16, 1.0f, 0.0f));
    pair o;
    o.g = mk(gpu, dt, NE(B, Nq, hq * d), NULL);
    o.c = mk(g_cpu, ZT_F32, NE(B, Nq, hq * d), NULL);
    float sc = 1.0f / sqrtf((float)d);
    zexec zg;
    zx_begin(&zg, gpu, NULL, 0);
    zop_attention(&zg, &o.g, &q.g, &k.g, &v.g, hq, hkv, kv_len, causal, sc);
    zop_attention(XC(), &o.c, &q.c, &k.c, &v.c, hq, hkv, kv_len, causal, sc);
    if (zg.status != ZE_OK) fail_msg("%s: gpu op failed: %s", name, gpu->err->msg);
    if (g_zc.status != ZE_OK) fail_msg("%s: cpu op failed: %s", name, g_ecpu.msg);
    float *gg = dl(gpu, &o.g), *cc = dl(g_cpu, &o.c);
    assert_close(name, gg, cc, (size_t)zt_numel(&o.g), TOL_ATT);
}

/* A second CUDA backend with ZIMAGE_CUDA_ATTN=mode (its tensors must be freed
 * before it is destroyed). */
static zbackend *gpu_with_attn(const char *mode, zerr *e) {
    setenv("ZIMAGE_CUDA_ATTN", mode, 1);
    zerr_clear(e);
    zbackend *g = NULL;
    int rc = zcuda_backend_create(&g, 0, e);
    unsetenv("ZIMAGE_CUDA_ATTN");
    if (rc != ZE_OK) fail_msg("cuda backend (%s): %s", mode, e->msg);
    return g;
}

static void print_plans(zbackend *be, const char *what) {
    static char buf[16384];
    if (zcuda_describe(be, buf, sizeof buf) > 0) printf("  -- %s plans:\n%s", what, buf);
}

static void attn_cases(zbackend *gpu, const char *tag) {
    const int32_t l2[2] = {300, 173}, l3[2] = {130, 100}, l4[2] = {90, 41};
    one_attn(gpu, tag, 2, 300, 300, 4, 4, 128, l2, 0, ZT_BF16); /* DiT-like, ragged batch */
    one_attn(gpu, tag, 1, 300, 300, 4, 4, 128, NULL, 0, ZT_BF16);
    one_attn(gpu, tag, 1, 77, 77, 8, 2, 128, NULL, 1, ZT_BF16); /* text encoder: causal, GQA 4:1 */
    one_attn(gpu, tag, 2, 130, 130, 2, 1, 64, l3, 1, ZT_BF16);  /* d 64, causal + kv_len */
    one_attn(gpu, tag, 2, 96, 96, 2, 2, 64, NULL, 0, ZT_BF16);  /* d 64 */
    one_attn(gpu, tag, 1, 1, 1, 2, 2, 128, NULL, 0, ZT_BF16);   /* one token */
    one_attn(gpu, tag, 1, 65, 65, 2, 1, 128, NULL, 1, ZT_F32);  /* F32 tensors (converted) */
    one_attn(gpu, tag, 2, 70, 90, 2, 2, 128, l4, 0, ZT_BF16);   /* Nq != Nk */
}

static void test_attention(void **state) {
    (void)state;
    /* default backend: cuDNN where it takes the shape, else the flash kernel */
    attn_cases(g_gpu, "");
    one_attn(g_gpu, "", 1, 200, 200, 1, 1, 512, NULL, 0, ZT_BF16); /* VAE mid attention (chunked) */
    one_attn(g_gpu, "", 2, 50, 50, 2, 2, 40, NULL, 0, ZT_BF16);    /* odd head dim (chunked) */
    if (!test_quick()) one_attn(g_gpu, "", 1, 4224, 4224, 2, 2, 128, NULL, 0, ZT_BF16);
    print_plans(g_gpu, "default backend");
    /* the own flash kernel and the chunked path on the same shapes */
    zerr e2;
    zbackend *g2 = gpu_with_attn("flash", &e2);
    attn_cases(g2, " [flash]");
    if (!test_quick()) one_attn(g2, " [flash]", 1, 4224, 4224, 2, 2, 128, NULL, 0, ZT_BF16);
    test_teardown(NULL); /* free g2's tensors before g2 */
    zbackend_destroy(g2);
    g2 = gpu_with_attn("chunked", &e2);
    one_attn(g2, " [chunked]", 2, 300, 300, 4, 4, 128, (const int32_t[]){300, 173}, 0, ZT_BF16);
    one_attn(g2, " [chunked]", 1, 77, 77, 8, 2, 128, NULL, 1, ZT_BF16);
    test_teardown(NULL);
    zbackend_destroy(g2);
}

/* ---- elementwise ------------------------------------------------------------------------------ */

static void test_elementwise(void **state) {
    (void)state;
    { /* silu_mul, vector and scalar paths */
        int64_t R = 33, F = 1024;
        pair gu = mk2(ZT_BF16, NE(R, 2 * F), hrand(R * 2 * F, ZT_BF16, 4.0f, 0.0f));
        pair y = out2(ZT_BF16, NE(R, F));
        zop_silu_mul(XG(), &y.g, &gu.g);
        zop_silu_mul(XC(), &y.c, &gu.c);
        ok2("silu_mul");
        cmp("silu_mul 33x1024 bf16", &y, TOL_BF);
        pair gu2 = mk2(ZT_F32, NE(7, 26), hrand(7 * 26, ZT_F32, 4.0f, 0.0f));
        pair y2 = out2(ZT_F32, NE(7, 13));
        zop_silu_mul(XG(), &y2.g, &gu2.g);
        zop_silu_mul(XC(), &y2.c, &gu2.c);
        ok2("silu_mul odd");
        cmp("silu_mul 7x13 f32", &y2, TOL32);
        /* more rows than a grid's y extent (the row loop), wide values (exp overflow) */
        pair gu3 = mk2(ZT_BF16, NE(70000, 16), hrand(70000 * 16, ZT_BF16, 60.0f, 0.0f));
        pair y3 = out2(ZT_BF16, NE(70000, 8));
        zop_silu_mul(XG(), &y3.g, &gu3.g);
        zop_silu_mul(XC(), &y3.c, &gu3.c);
        ok2("silu_mul tall");
        cmp("silu_mul 70000x8 bf16 wide", &y3, TOL_BF);
    }
    { /* silu in place, add mixed dtypes, axpby, affine */
        pair x = mk2(ZT_BF16, NE(5, 1000), hrand(5000, ZT_BF16, 4.0f, 0.0f));
        zop_silu(XG(), &x.g, &x.g);
        zop_silu(XC(), &x.c, &x.c);
        ok2("silu");
        cmp("silu 5x1000 bf16 inplace", &x, TOL_BF);
        pair a = mk2(ZT_BF16, NE(3, 333), hrand(999, ZT_BF16, 1.0f, 0.0f));
        pair b = mk2(ZT_F32, NE(3, 333), hrand(999, ZT_F32, 1.0f, 0.0f));
        pair y = out2(ZT_F32, NE(3, 333));
        zop_add(XG(), &y.g, &a.g, &b.g);
        zop_add(XC(), &y.c, &a.c, &b.c);
        ok2("add");
        cmp("add bf16+f32->f32", &y, TOL32);
        pair xx = mk2(ZT_F32, NE(4096), hrand(4096, ZT_F32, 1.0f, 0.0f));
        pair yy = mk2(ZT_F32, NE(4096), hrand(4096, ZT_F32, 1.0f, 0.0f));
        zop_axpby(XG(), &yy.g, -0.37f, &xx.g, 1.0f);
        zop_axpby(XC(), &yy.c, -0.37f, &xx.c, 1.0f);
        ok2("axpby");
        cmp("axpby f32", &yy, TOL32);
        pair af = out2(ZT_F32, NE(4096));
        zop_affine(XG(), &af.g, &xx.g, 2.77f, 0.1159f);
        zop_affine(XC(), &af.c, &xx.c, 2.77f, 0.1159f);
        ok2("affine");
        cmp("affine f32", &af, TOL32);
    }
    { /* copy_rows (convert, same dtype, overlapping), fill_rows */
        pair src = mk2(ZT_F32, NE(10, 48), hrand(480, ZT_BF16, 1.0f, 0.0f));
        float *d0 = hrand(12 * 48, ZT_BF16, 1.0f, 0.0f);
        pair dst = mk2(ZT_BF16, NE(12, 48), d0);
        zop_copy_rows(XG(), &dst.g, 3, &src.g, 2, 7);
        zop_copy_rows(XC(), &dst.c, 3, &src.c, 2, 7);
        ok2("copy_rows");
        cmp("copy_rows f32->bf16", &dst, 0.0);
        zop_copy_rows(XG(), &dst.g, 1, &dst.g, 0, 9); /* overlapping, same buffer */
        zop_copy_rows(XC(), &dst.c, 1, &dst.c, 0, 9);
        ok2("copy_rows overlap");
        cmp("copy_rows overlapping", &dst, 0.0);
        pair row = mk2(ZT_F32, NE(48), hrand(48, ZT_BF16, 1.0f, 0.0f));
        zop_fill_rows(XG(), &dst.g, 4, 5, &row.g);
        zop_fill_rows(XC(), &dst.c, 4, 5, &row.c);
        ok2("fill_rows");
        cmp("fill_rows", &dst, 0.0);
    }
    { /* embed */
        float *tab = hrand(1000 * 64, ZT_BF16, 1.0f, 0.0f);
        pair t = mk2(ZT_BF16, NE(1000, 64), tab);
        int32_t ids[17];
        for (int i = 0; i < 17; i++) ids[i] = (int32_t)(urand() * 1000);
        ids[0] = 0, ids[16] = 999;
        pair y = out2(ZT_F32, NE(17, 64));
        zop_embed(XG(), &y.g, &t.g, ids, 17);
        zop_embed(XC(), &y.c, &t.c, ids, 17);
        ok2("embed");
        cmp("embed bf16->f32", &y, 0.0);
    }
    { /* timestep_embed */
        float tv[4] = {0.0f, 0.125f, 0.5f, 1.0f};
        pair t = mk2(ZT_F32, NE(4), tv);
        pair y = out2(ZT_F32, NE(4, 256));
        zop_timestep_embed(XG(), &y.g, &t.g, 1000.0f, 10000.0f);
        zop_timestep_embed(XC(), &y.c, &t.c, 1000.0f, 10000.0f);
        ok2("timestep_embed");
        cmp("timestep_embed 4x256 f32", &y, TOL32);
    }
    { /* cfg_combine: no norm, norm with aliasing out = pos */
        int64_t n = 16 * 20 * 24;
        pair pos = mk2(ZT_F32, NE(2, 16, 20, 24), hrand(2 * n, ZT_F32, 1.0f, 0.0f));
        pair neg = mk2(ZT_F32, NE(2, 16, 20, 24), hrand(2 * n, ZT_F32, 1.0f, 0.0f));
        pair out = out2(ZT_F32, NE(2, 16, 20, 24));
        zop_cfg_combine(XG(), &out.g, &pos.g, &neg.g, 3.0f, 0.0f);
        zop_cfg_combine(XC(), &out.c, &pos.c, &neg.c, 3.0f, 0.0f);
        ok2("cfg_combine");
        cmp("cfg_combine w3", &out, TOL32);
        zop_cfg_combine(XG(), &pos.g, &pos.g, &neg.g, 3.0f, 1.0f);
        zop_cfg_combine(XC(), &pos.c, &pos.c, &neg.c, 3.0f, 1.0f);
        ok2("cfg_combine norm");
        cmp("cfg_combine w3 norm1 inplace", &pos, TOL32R);
    }
}

/* ---- layout ------------------------------------------------------------------------------------ */

static void test_layout(void **state) {
    (void)state;
    int64_t B = 2, C = 16, H = 8, W = 12, p = 2, Ht = H / p, Wt = W / p, F = p * p * C;
    pair x = mk2(ZT_F32, NE(B, C, H, W), hrand(B * C * H * W, ZT_BF16, 1.0f, 0.0f));
    pair tok = out2(ZT_BF16, NE(B, Ht * Wt, F));
    zop_patchify(XG(), &tok.g, &x.g, (int)p);
    zop_patchify(XC(), &tok.c, &x.c, (int)p);
    ok2("patchify");
    cmp("patchify [2,16,8,12] p2 ->bf16", &tok, 0.0);
    int64_t N = Ht * Wt + 5; /* extra rows (caption) that unpatchify ignores */
    pair t2 = mk2(ZT_BF16, NE(B, N, F), hrand(B * N * F, ZT_BF16, 1.0f, 0.0f));
    pair xo = out2(ZT_F32, NE(B, C, H, W));
    zop_unpatchify(XG(), &xo.g, &t2.g, (int)p);
    zop_unpatchify(XC(), &xo.c, &t2.c, (int)p);
    ok2("unpatchify");
    cmp("unpatchify ->f32 NCHW", &xo, 0.0);
    pair nh = out2(ZT_BF16, NE(B, H, W, C));
    zop_nchw_to_nhwc(XG(), &nh.g, &x.g);
    zop_nchw_to_nhwc(XC(), &nh.c, &x.c);
    ok2("nchw_to_nhwc");
    cmp("nchw_to_nhwc f32->bf16", &nh, 0.0);
    pair u = mk2(ZT_BF16, NE(1, 5, 3, 512), hrand(5 * 3 * 512, ZT_BF16, 1.0f, 0.0f));
    pair uo = out2(ZT_BF16, NE(1, 10, 6, 512));
    zop_upsample2x(XG(), &uo.g, &u.g);
    zop_upsample2x(XC(), &uo.c, &u.c);
    ok2("upsample2x");
    cmp("upsample2x C512", &uo, 0.0);
    pair u3 = mk2(ZT_F32, NE(2, 3, 4, 3), hrand(72, ZT_F32, 1.0f, 0.0f));
    pair uo3 = out2(ZT_F32, NE(2, 6, 8, 3));
    zop_upsample2x(XG(), &uo3.g, &u3.g);
    zop_upsample2x(XC(), &uo3.c, &u3.c);
    ok2("upsample2x c3");
    cmp("upsample2x C3 f32", &uo3, 0.0);
    pair u2 = mk2(ZT_BF16, NE(2, 3, 5, 16), hrand(2 * 3 * 5 * 16, ZT_BF16, 1.0f, 0.0f));
    pair uo2 = out2(ZT_BF16, NE(2, 6, 10, 16));
    zop_upsample2x(XG(), &uo2.g, &u2.g);
    zop_upsample2x(XC(), &uo2.c, &u2.c);
    ok2("upsample2x B2");
    cmp("upsample2x B2 C16 bf16", &uo2, 0.0);
}

/* ---- conv ---------------------------------------------------------------------------------------- */

static void one_conv(int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int k, int s, int pt, int pl, int pb,
                     int pr, zt_dtype xdt, zt_dtype ydt, int bias) {
    char name[128];
    snprintf(name, sizeof name, "conv %lldx%lldx%lld %lld->%lld k%d s%d pad(%d,%d,%d,%d) x%s y%s", (long long)B,
             (long long)H, (long long)W, (long long)Ci, (long long)Co, k, s, pt, pl, pb, pr, zt_dtype_name(xdt),
             zt_dtype_name(ydt));
    int64_t Ho = (H + pt + pb - k) / s + 1, Wo = (W + pl + pr - k) / s + 1, K = (int64_t)k * k * Ci;
    pair x = mk2(xdt, NE(B, H, W, Ci), hrand(B * H * W * Ci, ZT_BF16, 1.0f, 0.0f));
    pair w = mk2(ZT_BF16, NE(Co, K), hrand(Co * K, ZT_BF16, 1.0f / sqrtf((float)K), 0.0f));
    pair b = mk2(ZT_F32, NE(Co), hrand(Co, ZT_F32, 0.5f, 0.0f));
    pair y = out2(ydt, NE(B, Ho, Wo, Co));
    zop_conv2d(XG(), &y.g, &x.g, &w.g, bias ? &b.g : NULL, k, k, s, pt, pl, pb, pr);
    zop_conv2d(XC(), &y.c, &x.c, &w.c, bias ? &b.c : NULL, k, k, s, pt, pl, pb, pr);
    ok2(name);
    cmp(name, &y, TOL_BF);
}

/* conv2d_add: y = conv(x) + b + res (fused epilogue on the GPU where cuDNN takes it). */
static void one_conv_add(int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int k, zt_dtype ydt, int bias) {
    char name[128];
    snprintf(name, sizeof name, "conv_add %lldx%lldx%lld %lld->%lld k%d y%s%s", (long long)B, (long long)H,
             (long long)W, (long long)Ci, (long long)Co, k, zt_dtype_name(ydt), bias ? " bias" : "");
    int p = k / 2;
    int64_t K = (int64_t)k * k * Ci;
    pair x = mk2(ZT_BF16, NE(B, H, W, Ci), hrand(B * H * W * Ci, ZT_BF16, 1.0f, 0.0f));
    pair w = mk2(ZT_BF16, NE(Co, K), hrand(Co * K, ZT_BF16, 1.0f / sqrtf((float)K), 0.0f));
    pair b = mk2(ZT_F32, NE(Co), hrand(Co, ZT_F32, 0.5f, 0.0f));
    pair r = mk2(ydt, NE(B, H, W, Co), hrand(B * H * W * Co, ydt, 2.0f, 0.5f));
    pair y = out2(ydt, NE(B, H, W, Co));
    zop_conv2d_add(XG(), &y.g, &x.g, &w.g, bias ? &b.g : NULL, &r.g, k, k, 1, p, p, p, p);
    zop_conv2d_add(XC(), &y.c, &x.c, &w.c, bias ? &b.c : NULL, &r.c, k, k, 1, p, p, p, p);
    ok2(name);
    cmp(name, &y, TOL_BF);
}

static void test_conv(void **state) {
    (void)state;
    /* the VAE decoder's channel plan, at small spatial sizes */
    one_conv(1, 6, 5, 16, 512, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_BF16, 1); /* conv_in */
    one_conv(1, 6, 6, 512, 512, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_BF16, 1);
    one_conv(1, 7, 5, 512, 256, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_BF16, 1);
    one_conv(2, 5, 6, 256, 256, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_BF16, 1);
    one_conv(1, 8, 8, 256, 128, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_BF16, 1);
    one_conv(1, 9, 7, 128, 128, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_BF16, 1);
    one_conv(1, 10, 8, 128, 3, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_F32, 1); /* conv_out -> F32 image */
    one_conv(1, 6, 6, 512, 256, 1, 1, 0, 0, 0, 0, ZT_BF16, ZT_BF16, 1); /* 1x1 shortcuts */
    one_conv(1, 6, 6, 256, 128, 1, 1, 0, 0, 0, 0, ZT_BF16, ZT_BF16, 1);
    /* the encoder's */
    one_conv(1, 16, 16, 3, 128, 3, 1, 1, 1, 1, 1, ZT_F32, ZT_BF16, 1);   /* conv_in from an F32 image */
    one_conv(1, 9, 8, 128, 128, 3, 2, 0, 0, 1, 1, ZT_BF16, ZT_BF16, 1);  /* Down: pad (0,0,1,1) */
    one_conv(2, 8, 8, 256, 256, 3, 2, 0, 0, 1, 1, ZT_BF16, ZT_BF16, 1);
    one_conv(1, 4, 4, 512, 32, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_F32, 1);   /* conv_out -> moments */
    one_conv(1, 5, 5, 20, 24, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_BF16, 0);   /* Ci % 8 != 0, no bias */
    if (!test_quick()) one_conv(1, 32, 32, 128, 128, 3, 1, 1, 1, 1, 1, ZT_BF16, ZT_BF16, 1);
    /* residual convolutions (the VAE's resnets) */
    one_conv_add(1, 6, 6, 512, 512, 3, ZT_BF16, 1);
    one_conv_add(2, 9, 7, 128, 128, 3, ZT_BF16, 1);
    one_conv_add(1, 6, 5, 256, 256, 3, ZT_BF16, 0);  /* no bias: conv + add */
    one_conv_add(1, 6, 6, 64, 64, 1, ZT_BF16, 1);    /* 1x1: GEMM + add */
    one_conv_add(1, 5, 5, 24, 12, 3, ZT_F32, 1);     /* F32 output: finishing kernel + add */
}

/* ---- graph capture and replay ---------------------------------------------------------------- */

static void test_graph(void **state) {
    (void)state;
    const zbackend_vt *vt = g_gpu->vt;
    assert_non_null(vt->capture_begin);
    int64_t B = 2, N = 160, hq = 2, d = 128, D = hq * d;
    const int32_t kl[2] = {160, 97};
    pair x = mk2(ZT_F32, NE(B, N, D), hrand(B * N * D, ZT_F32, 1.0f, 0.0f));
    pair w = mk2(ZT_BF16, NE(3 * D, D), hrand(3 * D * D, ZT_BF16, 1.0f / sqrtf((float)D), 0.0f));
    pair a = out2(ZT_BF16, NE(B, N, D)), qkv = out2(ZT_BF16, NE(B, N, 3 * D));
    pair q = out2(ZT_BF16, NE(B, N, D)), k = out2(ZT_BF16, NE(B, N, D)), v = out2(ZT_BF16, NE(B, N, D));
    pair o = out2(ZT_BF16, NE(B, N, D));
    zvec none = {NULL, 0};
    void *graph = NULL;
    assert_int_equal(vt->capture_begin(g_gpu), ZE_OK);
    zexec *zg = XG();
    zop_rmsnorm(zg, &a.g, &x.g, NULL, none, B, 1e-5f);
    zop_matmul(zg, &qkv.g, &a.g, &w.g, NULL, 0);
    zop_qkv_norm_rope(zg, &q.g, &k.g, &v.g, &qkv.g, NULL, NULL, NULL, NULL, (int)hq, (int)hq, 1e-5f, ZROPE_ADJACENT);
    zop_attention(zg, &o.g, &q.g, &k.g, &v.g, (int)hq, (int)hq, kl, 0, 1.0f / sqrtf((float)d));
    int rc = vt->capture_end(g_gpu, &graph);
    if (rc != ZE_OK || zg->status != ZE_OK) fail_msg("capture failed: %s", g_egpu.msg);
    /* nothing ran yet: the output is still poisoned; replay twice */
    for (int i = 0; i < 2; i++) assert_int_equal(vt->graph_launch(g_gpu, graph), ZE_OK);
    assert_int_equal(vt->sync(g_gpu), ZE_OK);
    zexec *zc = XC();
    zop_rmsnorm(zc, &a.c, &x.c, NULL, none, B, 1e-5f);
    zop_matmul(zc, &qkv.c, &a.c, &w.c, NULL, 0);
    zop_qkv_norm_rope(zc, &q.c, &k.c, &v.c, &qkv.c, NULL, NULL, NULL, NULL, (int)hq, (int)hq, 1e-5f, ZROPE_ADJACENT);
    zop_attention(zc, &o.c, &q.c, &k.c, &v.c, (int)hq, (int)hq, kl, 0, 1.0f / sqrtf((float)d));
    assert_int_equal(zc->status, ZE_OK);
    cmp("graph: rmsnorm+matmul+qkv+attention", &o, 3e-2);
    vt->graph_destroy(g_gpu, graph);
}

static void test_backend_misc(void **state) {
    (void)state;
    pair t = out2(ZT_BF16, NE(1000, 77));
    assert_non_null(g_gpu->vt->fill_random);
    assert_int_equal(g_gpu->vt->fill_random(g_gpu, &t.g, 42, 0.5f, 1.0f), ZE_OK);
    float *h = dl(g_gpu, &t.g);
    double mean = 0;
    for (int i = 0; i < 77000; i++) {
        assert_true(h[i] >= 0.49f && h[i] <= 1.51f);
        mean += h[i];
    }
    mean /= 77000;
    assert_true(fabs(mean - 1.0) < 0.01);
    size_t in_use = 0, peak = 0;
    g_gpu->vt->mem_stats(g_gpu, &in_use, &peak);
    assert_true(in_use >= 1000 * 77 * 2 && peak >= in_use);
    printf("  fill_random ok (mean %.4f), mem in use %zu, peak %zu\n", mean, in_use, peak);

    /* download_rgb8: the same bytes as the F32 download + zimg_to_u8, for
     * ties (x*0.5+0.5)*255 = k + 0.5, out-of-range values, NaN and +-Inf */
    assert_non_null(g_gpu->vt->download_rgb8);
    const int64_t n = 3 * 4099;
    float *src = malloc(sizeof(float) * (size_t)n);
    uint8_t *a = malloc((size_t)n), *b = malloc((size_t)n);
    assert_true(src && a && b);
    for (int64_t i = 0; i < n; i++) {
        if (i < 512) /* exact ties: y*255 = k + 0.5 -> x = 2*(k + 0.5)/255 - 1 */
            src[i] = 2.0f * ((float)(i % 256) + 0.5f) / 255.0f - 1.0f;
        else
            src[i] = (float)((i * 2654435761u) % 100000u) / 40000.0f - 1.25f;
    }
    src[600] = NAN, src[601] = INFINITY, src[602] = -INFINITY, src[603] = -1.0f, src[604] = 1.0f;
    zt img = mk(g_gpu, ZT_F32, NE(1, 4099, 3), src);
    assert_int_equal(g_gpu->vt->download_rgb8(g_gpu, &img, a), ZE_OK);
    float *back = dl(g_gpu, &img);
    zimg_to_u8(back, b, (size_t)n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += a[i] != b[i];
    printf("  download_rgb8: %lld of %lld bytes differ from the host conversion\n", (long long)bad, (long long)n);
    assert_int_equal(bad, 0);
    assert_int_equal(a[600], 0);
    assert_int_equal(a[601], 255);
    assert_int_equal(a[602], 0);
    free(src);
    free(a);
    free(b);
    print_plans(g_gpu, "after the correctness tests");
}

/* ---- perf mode ------------------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef void (*perf_fn)(void *ctx);
/* median over 5 runs of (reps calls) / reps, in seconds */
static double time_it(perf_fn fn, void *ctx, int reps) {
    fn(ctx);
    fn(ctx);
    g_gpu->vt->sync(g_gpu);
    double best[5];
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++) fn(ctx);
        g_gpu->vt->sync(g_gpu);
        best[r] = (now_s() - t0) / reps;
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            if (best[j] < best[i]) {
                double t = best[i];
                best[i] = best[j];
                best[j] = t;
            }
    if (g_gpu->status != ZE_OK) fail_msg("perf op failed: %s", g_egpu.msg);
    return best[2];
}

static zt gt(zt_dtype dt, const int64_t *ne, int nd) { /* device tensor with random contents */
    zt t = mk(g_gpu, dt, ne, nd, NULL);
    g_gpu->vt->fill_random(g_gpu, &t, (uint64_t)g_nt * 7919u, 1.0f, 0.0f);
    return t;
}

typedef struct {
    zt *y, *x, *w, *b, *q, *k, *v, *o, *g;
    int hq, hkv, causal, acc;
    int64_t B;
    const int32_t *kl;
} perf_ctx;

static zexec g_zp;
static void p_matmul(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    zop_matmul(&g_zp, p->y, p->x, p->w, p->b, p->acc);
}
static void p_attn(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    zop_attention(&g_zp, p->o, p->q, p->k, p->v, p->hq, p->hkv, p->kl, p->causal,
                  1.0f / sqrtf((float)(p->q->ne[2] / p->hq)));
}
static void p_conv(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    int k = (int)sqrt((double)(p->w->ne[1] / p->x->ne[3]));
    zop_conv2d(&g_zp, p->y, p->x, p->w, p->b, k, k, 1, k / 2, k / 2, k / 2, k / 2);
}
static void p_rms(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    zvec s = {p->g, 0};
    zop_rmsnorm(&g_zp, p->y, p->x, p->b, s, p->B, 1e-5f);
}
static void p_nga(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    zvec s = {p->g, 0};
    zop_norm_gate_add(&g_zp, p->y, p->x, p->b, s, p->B, 1e-5f);
}
static void p_ngan(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    zvec g = {p->g, 0}, s = {p->g, 2 * zt_cols(p->x)};
    zop_norm_gate_add_norm(&g_zp, p->y, p->x, p->b, g, p->q, p->b, s, p->B, 1e-5f);
}
static void p_silu_mul(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    zop_silu_mul(&g_zp, p->y, p->x);
}
static void p_qkv(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    zop_qkv_norm_rope(&g_zp, p->q, p->k, p->v, p->x, p->b, p->b, p->y, p->g, p->hq, p->hq, 1e-5f, ZROPE_ADJACENT);
}
static void p_gn(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    zop_groupnorm(&g_zp, p->y, p->x, p->w, p->b, 32, 1e-6f, 1);
}
static void p_copy(void *c) {
    perf_ctx *p = c;
    zx_begin(&g_zp, g_gpu, NULL, 0);
    zop_copy_rows(&g_zp, p->y, 0, p->x, 0, zt_rows(p->x));
}
static void p_graph(void *c) { g_gpu->vt->graph_launch(g_gpu, c); }

#define PERF_LINE(name, sec, what, amount) \
    printf("PERF %-44s %9.3f ms  %8.1f %s\n", name, (sec) * 1e3, (amount) / (sec) / 1e12 * ((what)[0] == 'G' ? 1e3 : 1), what)

static void perf_matmul(const char *name, int64_t M, int64_t K, int64_t N, zt_dtype ydt, int bias, int acc) {
    zt x = gt(ZT_BF16, NE(M, K)), w = gt(ZT_BF16, NE(N, K)), y = gt(ydt, NE(M, N)), b = gt(ZT_F32, NE(N));
    perf_ctx p = {.y = &y, .x = &x, .w = &w, .b = bias ? &b : NULL, .acc = acc};
    double s = time_it(p_matmul, &p, 20);
    PERF_LINE(name, s, "TFLOP/s", 2.0 * M * N * K);
}

static void perf_attn(const char *name, int64_t B, int64_t N, int hq, int hkv, int64_t d, int causal,
                      const int32_t *kl, zbackend *be) {
    zbackend *save = g_gpu;
    g_gpu = be;
    zt q = gt(ZT_BF16, NE(B, N, hq * d)), k = gt(ZT_BF16, NE(B, N, hkv * d)), v = gt(ZT_BF16, NE(B, N, hkv * d));
    zt o = gt(ZT_BF16, NE(B, N, hq * d));
    perf_ctx p = {.q = &q, .k = &k, .v = &v, .o = &o, .hq = hq, .hkv = hkv, .causal = causal, .kl = kl};
    double s = time_it(p_attn, &p, N >= 8192 ? 3 : 10);
    double flops = 4.0 * B * hq * (double)N * N * d * (causal ? 0.5 : 1.0);
    PERF_LINE(name, s, "TFLOP/s", flops);
    g_gpu = save;
}

static void perf_conv(const char *name, int64_t H, int64_t W, int64_t Ci, int64_t Co, int k) {
    zt x = gt(ZT_BF16, NE(1, H, W, Ci)), w = gt(ZT_BF16, NE(Co, k * k * Ci)), y = gt(ZT_BF16, NE(1, H, W, Co));
    zt b = gt(ZT_F32, NE(Co));
    perf_ctx p = {.y = &y, .x = &x, .w = &w, .b = &b};
    double s = time_it(p_conv, &p, 5);
    PERF_LINE(name, s, "TFLOP/s", 2.0 * H * W * Ci * Co * k * k);
}

/* ---- end-to-end op sequences (perf): the text encoder and the VAE decoder ----------------- */

typedef struct {
    zt wqkv, wo, w13, w2, n1, n2, qn, kn, cs, sn;
    zt h, a, qkv, q, k, v, o, gu, g;
} te_bufs;

/* One Qwen3 layer at L tokens, as src/models/qwen3.c issues it. */
static void te_layer(zexec *zx, te_bufs *t) {
    zvec none = {NULL, 0};
    zop_rmsnorm(zx, &t->a, &t->h, &t->n1, none, 1, 1e-6f);
    zop_matmul(zx, &t->qkv, &t->a, &t->wqkv, NULL, 0);
    zop_qkv_norm_rope(zx, &t->q, &t->k, &t->v, &t->qkv, &t->qn, &t->kn, &t->cs, &t->sn, 32, 8, 1e-6f, ZROPE_HALF);
    zop_attention(zx, &t->o, &t->q, &t->k, &t->v, 32, 8, NULL, 1, 1.0f / sqrtf(128.0f));
    zop_matmul(zx, &t->h, &t->o, &t->wo, NULL, 1);
    zop_rmsnorm(zx, &t->a, &t->h, &t->n2, none, 1, 1e-6f);
    zop_matmul(zx, &t->gu, &t->a, &t->w13, NULL, 0);
    zop_silu_mul(zx, &t->g, &t->gu);
    zop_matmul(zx, &t->h, &t->g, &t->w2, NULL, 1);
}
static void p_te(void *c) {
    zx_begin(&g_zp, g_gpu, NULL, 0);
    for (int l = 0; l < 35; l++) te_layer(&g_zp, c); /* one layer's weights, streamed 35 times */
}

typedef struct {
    zt slot[3], w[8], b[8], wout, bout, gw, gb, wqkv, bqkv, wo, bo, qkv, q, k, v, o, z, img;
    int64_t h0; /* latent size (128 for 1024x1024) */
} vae_bufs;
enum { VW_IN, VW_512, VW_512_256, VW_256, VW_256_128, VW_128, VW_SC_256, VW_SC_128 };

/* The first C values of a [512] F32 group-norm parameter (views share data). */
static zt gnp(const zt *p, int64_t C) {
    zt v = *p;
    v.ne[0] = C;
    return v;
}
static zt v4(const zt *slot, int64_t H, int64_t W, int64_t C) {
    int64_t ne[4] = {1, H, W, C};
    return zt_reshape(slot, 4, ne);
}
/* out = Res(in) at HxW; t: temporary slot. */
static void vae_res(zexec *zx, vae_bufs *vb, zt *in, zt *outslot, zt *tslot, int64_t H, int64_t W, int64_t ci,
                    int64_t co, int wc1, int wc2, int wsc) {
    zt a = v4(outslot, H, W, ci), t = v4(tslot, H, W, co), out = v4(outslot, H, W, co);
    zt wi = gnp(&vb->gw, ci), bi = gnp(&vb->gb, ci), wo = gnp(&vb->gw, co), bo = gnp(&vb->gb, co);
    zop_groupnorm(zx, &a, in, &wi, &bi, 32, 1e-6f, 1);
    zop_conv2d(zx, &t, &a, &vb->w[wc1], &vb->b[wc1], 3, 3, 1, 1, 1, 1, 1);
    zop_groupnorm(zx, &t, &t, &wo, &bo, 32, 1e-6f, 1);
    if (ci == co) {
        zop_conv2d(zx, &out, &t, &vb->w[wc2], &vb->b[wc2], 3, 3, 1, 1, 1, 1, 1);
        zop_add(zx, &out, &out, in);
    } else {
        zop_conv2d(zx, &out, in, &vb->w[wsc], &vb->b[wsc], 1, 1, 1, 0, 0, 0, 0);
        zt h2 = v4(in, H, W, co);
        zop_conv2d(zx, &h2, &t, &vb->w[wc2], &vb->b[wc2], 3, 3, 1, 1, 1, 1, 1);
        zop_add(zx, &out, &out, &h2);
    }
}
/* The FLUX VAE decoder (latent h0 x h0 -> 8h0 x 8h0), as src/models/vae.c issues it. */
static void p_vae(void *c) {
    vae_bufs *vb = c;
    zexec *zx = &g_zp;
    zx_begin(zx, g_gpu, NULL, 0);
    int64_t H = vb->h0, W = vb->h0;
    zt *s0 = &vb->slot[0], *s1 = &vb->slot[1], *st = &vb->slot[2];
    zt zn = v4(s1, H, W, 16), x = v4(s0, H, W, 512);
    zop_affine(zx, &vb->z, &vb->z, 1.0f, 0.0f);
    zop_nchw_to_nhwc(zx, &zn, &vb->z);
    zop_conv2d(zx, &x, &zn, &vb->w[VW_IN], &vb->b[VW_IN], 3, 3, 1, 1, 1, 1, 1);
    zt *cur = s0, *oth = s1;
#define RES(ci, co, w1, w2, wsc)                                                   \
    do {                                                                            \
        zt in_ = v4(cur, H, W, ci);                                                 \
        vae_res(zx, vb, &in_, oth, st, H, W, ci, co, w1, w2, wsc);                  \
        zt *t_ = cur;                                                               \
        cur = oth, oth = t_;                                                        \
    } while (0)
#define UP(C, wc)                                                                   \
    do {                                                                            \
        zt xin_ = v4(cur, H, W, C), yu_ = v4(oth, 2 * H, 2 * W, C);                 \
        zop_upsample2x(zx, &yu_, &xin_);                                            \
        H *= 2, W *= 2;                                                             \
        zt xo_ = v4(cur, H, W, C);                                                  \
        zop_conv2d(zx, &xo_, &yu_, &vb->w[wc], &vb->b[wc], 3, 3, 1, 1, 1, 1, 1);    \
    } while (0)
    RES(512, 512, VW_512, VW_512, 0);
    { /* mid attention */
        zt in = v4(cur, H, W, 512), out = v4(oth, H, W, 512);
        zop_groupnorm(zx, &out, &in, &vb->gw, &vb->gb, 32, 1e-6f, 0);
        zt n2 = zt_rows_view(&out, 0, H * W);
        zop_matmul(zx, &vb->qkv, &n2, &vb->wqkv, &vb->bqkv, 0);
        zop_qkv_norm_rope(zx, &vb->q, &vb->k, &vb->v, &vb->qkv, NULL, NULL, NULL, NULL, 1, 1, 0.0f, ZROPE_ADJACENT);
        zop_attention(zx, &vb->o, &vb->q, &vb->k, &vb->v, 1, 1, NULL, 0, 1.0f / sqrtf(512.0f));
        zop_matmul(zx, &n2, &vb->o, &vb->wo, &vb->bo, 0);
        zop_add(zx, &out, &out, &in);
        zt *t_ = cur;
        cur = oth, oth = t_;
    }
    RES(512, 512, VW_512, VW_512, 0);
    for (int j = 0; j < 3; j++) RES(512, 512, VW_512, VW_512, 0);
    UP(512, VW_512);
    for (int j = 0; j < 3; j++) RES(512, 512, VW_512, VW_512, 0);
    UP(512, VW_512);
    RES(512, 256, VW_512_256, VW_256, VW_SC_256);
    for (int j = 0; j < 2; j++) RES(256, 256, VW_256, VW_256, 0);
    UP(256, VW_256);
    RES(256, 128, VW_256_128, VW_128, VW_SC_128);
    for (int j = 0; j < 2; j++) RES(128, 128, VW_128, VW_128, 0);
    zt xf = v4(cur, H, W, 128), yf = v4(oth, H, W, 128), w128 = gnp(&vb->gw, 128), b128 = gnp(&vb->gb, 128);
    zop_groupnorm(zx, &yf, &xf, &w128, &b128, 32, 1e-6f, 1);
    zop_conv2d(zx, &vb->img, &yf, &vb->wout, &vb->bout, 3, 3, 1, 1, 1, 1, 1);
#undef RES
#undef UP
}

/* GEMM, attention and conv sweeps at the full-size shapes. */
static void perf_sweeps(void) {
    const int64_t N = 4224, D = 3840, F = 10240;
    { /* bandwidth ceiling */
        zt a = gt(ZT_BF16, NE(8192, 65536)), b = gt(ZT_BF16, NE(8192, 65536));
        perf_ctx p = {.y = &b, .x = &a};
        double s = time_it(p_copy, &p, 5);
        PERF_LINE("d2d copy 1 GiB (read+write)", s, "GB/s", 2.0 * 8192 * 65536 * 2);
        test_teardown(NULL);
    }
    perf_matmul("matmul 4224x3840->11520 (qkv)", N, D, 3 * D, ZT_BF16, 0, 0);
    perf_matmul("matmul 4224x3840->3840 (out)", N, D, D, ZT_BF16, 0, 0);
    perf_matmul("matmul 4224x3840->20480 (w13)", N, D, 2 * F, ZT_BF16, 0, 0);
    perf_matmul("matmul 4224x10240->3840 (w2)", N, F, D, ZT_BF16, 0, 0);
    perf_matmul("matmul 4224x10240->3840 f32 acc", N, F, D, ZT_F32, 0, 1);
    perf_matmul("matmul 128x2560->6144 (TE qkv)", 128, 2560, 6144, ZT_BF16, 0, 0);
    perf_matmul("matmul 128x2560->19456 (TE w13)", 128, 2560, 19456, ZT_BF16, 0, 0);
    perf_matmul("matmul 128x9728->2560 (TE w2, f32 acc)", 128, 9728, 2560, ZT_F32, 0, 1);
    perf_matmul("matmul 1x256->15360 (adaLN, f32)", 1, 256, 15360, ZT_F32, 1, 0);
    test_teardown(NULL);
    const int32_t kl2[2] = {(int32_t)N, (int32_t)N - 64};
    perf_attn("attention B1 4224 30x128 (default)", 1, N, 30, 30, 128, 0, NULL, g_gpu);
    perf_attn("attention B1 4096 30x128 (default)", 1, 4096, 30, 30, 128, 0, NULL, g_gpu);
    perf_attn("attention B2 4224 30x128 kv_len (default)", 2, N, 30, 30, 128, 0, kl2, g_gpu);
    perf_attn("attention TE 128 32/8x128 causal", 1, 128, 32, 8, 128, 1, NULL, g_gpu);
    perf_attn("attention VAE 16384 1x512 (chunked)", 1, 16384, 1, 1, 512, 0, NULL, g_gpu);
    test_teardown(NULL);
    {
        zerr e2;
        zbackend *g2 = gpu_with_attn("flash", &e2);
        perf_attn("attention B1 4224 30x128 (own flash)", 1, N, 30, 30, 128, 0, NULL, g2);
        perf_attn("attention B2 4224 30x128 kv_len (own flash)", 2, N, 30, 30, 128, 0, kl2, g2);
        test_teardown(NULL);
        zbackend_destroy(g2);
        g2 = gpu_with_attn("chunked", &e2);
        perf_attn("attention B1 4224 30x128 (chunked)", 1, N, 30, 30, 128, 0, NULL, g2);
        test_teardown(NULL);
        zbackend_destroy(g2);
    }
    perf_conv("conv3x3 128x128 512->512", 128, 128, 512, 512, 3);
    perf_conv("conv3x3 256x256 512->512", 256, 256, 512, 512, 3);
    perf_conv("conv3x3 512x512 512->512", 512, 512, 512, 512, 3);
    test_teardown(NULL);
    perf_conv("conv3x3 1024x1024 256->256", 1024, 1024, 256, 256, 3);
    test_teardown(NULL);
    perf_conv("conv3x3 1024x1024 128->128", 1024, 1024, 128, 128, 3);
    perf_conv("conv3x3 1024x1024 128->3 (conv_out)", 1024, 1024, 128, 3, 3);
    perf_conv("conv1x1 1024x1024 256->128", 1024, 1024, 256, 128, 1);
    test_teardown(NULL);
}

static void test_perf(void **state) {
    (void)state;
    const char *pe = getenv("ZIMAGE_PERF");
    if (!pe || (*pe != '1' && *pe != '2')) {
        printf("  (set ZIMAGE_PERF=1 for timings, 2 for the short set)\n");
        skip();
    }
    const int full = *pe == '1'; /* 2: skip the GEMM / attention / conv sweeps */
    const int64_t N = 4224, D = 3840, F = 10240;
    printf("PERF all times: median of 5 runs, host clock around synchronized batches\n");
    if (full) perf_sweeps();
    { /* memory-bound DiT ops */
        zt xf = gt(ZT_F32, NE(1, N, D)), yb = gt(ZT_BF16, NE(1, N, D)), w = gt(ZT_F32, NE(D));
        zt mod = gt(ZT_F32, NE(1, 4 * D));
        perf_ctx p = {.y = &yb, .x = &xf, .b = &w, .g = &mod, .B = 1};
        double s = time_it(p_rms, &p, 20);
        PERF_LINE("rmsnorm 4224x3840 f32->bf16 +scale", s, "GB/s", (double)N * D * 6);
        perf_ctx p2 = {.y = &xf, .x = &yb, .b = &w, .g = &mod, .B = 1};
        s = time_it(p_nga, &p2, 20);
        PERF_LINE("norm_gate_add 4224x3840 (x f32 += bf16)", s, "GB/s", (double)N * D * 10);
        zt hb = gt(ZT_BF16, NE(1, N, D));
        perf_ctx p2b = {.y = &xf, .x = &yb, .b = &w, .g = &mod, .q = &hb, .B = 1};
        s = time_it(p_ngan, &p2b, 20);
        PERF_LINE("norm_gate_add_norm 4224x3840 (x f32 += bf16, h bf16)", s, "GB/s", (double)N * D * 12);
        zt gu = gt(ZT_BF16, NE(N, 2 * F)), g = gt(ZT_BF16, NE(N, F));
        perf_ctx p3 = {.y = &g, .x = &gu};
        s = time_it(p_silu_mul, &p3, 20);
        PERF_LINE("silu_mul 4224x20480->10240", s, "GB/s", (double)N * F * 6);
        zt qkv = gt(ZT_BF16, NE(N, 3 * D)), q = gt(ZT_BF16, NE(N, D)), k = gt(ZT_BF16, NE(N, D));
        zt v = gt(ZT_BF16, NE(N, D)), wq = gt(ZT_F32, NE(128)), cs = gt(ZT_F32, NE(N, 64)), sn = gt(ZT_F32, NE(N, 64));
        perf_ctx p4 = {.x = &qkv, .q = &q, .k = &k, .v = &v, .b = &wq, .y = &cs, .g = &sn, .hq = 30};
        s = time_it(p_qkv, &p4, 20);
        PERF_LINE("qkv_norm_rope 4224x11520", s, "GB/s", (double)N * 3 * D * 4 + N * 64 * 8.0);
        test_teardown(NULL);
    }
    { /* VAE memory-bound ops */
        zt x = gt(ZT_BF16, NE(1, 1024, 1024, 128)), y = gt(ZT_BF16, NE(1, 1024, 1024, 128));
        zt w = gt(ZT_F32, NE(128)), b = gt(ZT_F32, NE(128));
        perf_ctx p = {.y = &y, .x = &x, .w = &w, .b = &b};
        double s = time_it(p_gn, &p, 10);
        PERF_LINE("groupnorm+silu 1024x1024x128", s, "GB/s", 1024.0 * 1024 * 128 * 6);
        test_teardown(NULL);
    }
    { /* the text encoder: 35 Qwen3 layers at 128 tokens, no graph */
        const int64_t L = 128, TD = 2560, TF = 9728;
        te_bufs t;
        t.wqkv = gt(ZT_BF16, NE(6144, TD)), t.wo = gt(ZT_BF16, NE(TD, 4096)), t.w13 = gt(ZT_BF16, NE(2 * TF, TD));
        t.w2 = gt(ZT_BF16, NE(TD, TF)), t.n1 = gt(ZT_F32, NE(TD)), t.n2 = gt(ZT_F32, NE(TD));
        t.qn = gt(ZT_F32, NE(128)), t.kn = gt(ZT_F32, NE(128)), t.cs = gt(ZT_F32, NE(L, 64)), t.sn = gt(ZT_F32, NE(L, 64));
        g_gpu->vt->fill_random(g_gpu, &t.wqkv, 21, 0.02f, 0.0f);
        g_gpu->vt->fill_random(g_gpu, &t.wo, 22, 0.015f, 0.0f);
        g_gpu->vt->fill_random(g_gpu, &t.w13, 23, 0.02f, 0.0f);
        g_gpu->vt->fill_random(g_gpu, &t.w2, 24, 0.01f, 0.0f);
        t.h = gt(ZT_F32, NE(L, TD)), t.a = gt(ZT_BF16, NE(L, TD)), t.qkv = gt(ZT_BF16, NE(L, 6144));
        t.q = gt(ZT_BF16, NE(1, L, 4096)), t.k = gt(ZT_BF16, NE(1, L, 1024)), t.v = gt(ZT_BF16, NE(1, L, 1024));
        t.o = gt(ZT_BF16, NE(1, L, 4096)), t.gu = gt(ZT_BF16, NE(L, 2 * TF)), t.g = gt(ZT_BF16, NE(L, TF));
        double s = time_it(p_te, &t, 3);
        PERF_LINE("text encoder 35 layers L128 (ops, no graph)", s, "TFLOP/s", 2.0 * 35 * 128 * 100925440.0);
        test_teardown(NULL);
    }
    { /* the VAE decoder at 1024x1024 */
        vae_bufs vb;
        vb.h0 = 128;
        const int64_t big = 1024 * 1024 * 256;
        for (int i = 0; i < 3; i++) vb.slot[i] = gt(ZT_BF16, NE(big));
        const int64_t wsh[8][2] = {{512, 9 * 16}, {512, 9 * 512}, {256, 9 * 512}, {256, 9 * 256},
                                   {128, 9 * 256}, {128, 9 * 128}, {256, 512}, {128, 256}};
        for (int i = 0; i < 8; i++) {
            vb.w[i] = gt(ZT_BF16, NE(wsh[i][0], wsh[i][1]));
            g_gpu->vt->fill_random(g_gpu, &vb.w[i], 30 + i, 1.0f / sqrtf((float)wsh[i][1]), 0.0f);
            vb.b[i] = gt(ZT_F32, NE(wsh[i][0]));
        }
        vb.wout = gt(ZT_BF16, NE(3, 9 * 128)), vb.bout = gt(ZT_F32, NE(3));
        vb.gw = gt(ZT_F32, NE(512)), vb.gb = gt(ZT_F32, NE(512));
        vb.wqkv = gt(ZT_BF16, NE(1536, 512)), vb.bqkv = gt(ZT_F32, NE(1536));
        vb.wo = gt(ZT_BF16, NE(512, 512)), vb.bo = gt(ZT_F32, NE(512));
        g_gpu->vt->fill_random(g_gpu, &vb.wqkv, 41, 0.04f, 0.0f);
        g_gpu->vt->fill_random(g_gpu, &vb.wo, 42, 0.04f, 0.0f);
        vb.qkv = gt(ZT_BF16, NE(16384, 1536)), vb.q = gt(ZT_BF16, NE(1, 16384, 512));
        vb.k = gt(ZT_BF16, NE(1, 16384, 512)), vb.v = gt(ZT_BF16, NE(1, 16384, 512));
        vb.o = gt(ZT_BF16, NE(1, 16384, 512)), vb.z = gt(ZT_F32, NE(1, 16, 128, 128));
        vb.img = gt(ZT_F32, NE(1, 1024, 1024, 3));
        double s = time_it(p_vae, &vb, 3);
        PERF_LINE("VAE decode 1024x1024 (ops, no graph)", s, "TFLOP/s", 2.0 * 5236e9);
        test_teardown(NULL);
    }
    { /* one DiT main block (B = 1, N = 4224) as a CUDA graph */
        zt x = gt(ZT_F32, NE(1, N, D)), a = gt(ZT_BF16, NE(1, N, D)), qkv = gt(ZT_BF16, NE(1, N, 3 * D));
        zt q = gt(ZT_BF16, NE(1, N, D)), k = gt(ZT_BF16, NE(1, N, D)), v = gt(ZT_BF16, NE(1, N, D));
        zt o = gt(ZT_BF16, NE(1, N, D)), ao = gt(ZT_BF16, NE(1, N, D)), gu = gt(ZT_BF16, NE(1, N, 2 * F));
        zt g = gt(ZT_BF16, NE(1, N, F));
        zt wqkv = gt(ZT_BF16, NE(3 * D, D)), wo = gt(ZT_BF16, NE(D, D)), w13 = gt(ZT_BF16, NE(2 * F, D));
        zt w2 = gt(ZT_BF16, NE(D, F));
        zt nw = gt(ZT_F32, NE(D)), hw = gt(ZT_F32, NE(128)), mod = gt(ZT_F32, NE(1, 4 * D));
        zt cs = gt(ZT_F32, NE(N, 64)), sn = gt(ZT_F32, NE(N, 64));
        /* keep the residual stream small: scale the random weights */
        g_gpu->vt->fill_random(g_gpu, &wqkv, 11, 0.016f, 0.0f);
        g_gpu->vt->fill_random(g_gpu, &wo, 12, 0.016f, 0.0f);
        g_gpu->vt->fill_random(g_gpu, &w13, 13, 0.016f, 0.0f);
        g_gpu->vt->fill_random(g_gpu, &w2, 14, 0.01f, 0.0f);
        g_gpu->vt->fill_random(g_gpu, &mod, 15, 0.1f, 0.0f);
        const int32_t kl[1] = {(int32_t)N};
        void *graph = NULL;
        zbackend *be = g_gpu;
        zop_rmsnorm(XG(), &a, &x, &nw, (zvec){&mod, 0}, 1, 1e-5f);
        if (be->vt->capture_begin(be) != ZE_OK) fail_msg("capture: %s", g_egpu.msg);
        zexec *zx = XG();
        zvec sa = {&mod, 0}, ga = {&mod, D}, sf = {&mod, 2 * D}, gf = {&mod, 3 * D};
        /* steady state: the block's pre-norm comes from the previous block's last op */
        zop_matmul(zx, &qkv, &a, &wqkv, NULL, 0);
        zop_qkv_norm_rope(zx, &q, &k, &v, &qkv, &hw, &hw, &cs, &sn, 30, 30, 1e-5f, ZROPE_ADJACENT);
        zop_attention(zx, &o, &q, &k, &v, 30, 30, kl, 0, 1.0f / sqrtf(128.0f));
        zop_matmul(zx, &ao, &o, &wo, NULL, 0);
        zop_norm_gate_add_norm(zx, &x, &ao, &nw, ga, &o, &nw, sf, 1, 1e-5f);
        zop_matmul(zx, &gu, &o, &w13, NULL, 0);
        zop_silu_mul(zx, &g, &gu);
        zop_matmul(zx, &ao, &g, &w2, NULL, 0);
        zop_norm_gate_add_norm(zx, &x, &ao, &nw, gf, &a, &nw, sa, 1, 1e-5f); /* + the next block's pre-norm */
        if (be->vt->capture_end(be, &graph) != ZE_OK || zx->status != ZE_OK) fail_msg("capture: %s", g_egpu.msg);
        double s = time_it(p_graph, graph, 10);
        double fl = 2.0 * N * 176947200.0 + 4.0 * 30 * (double)N * N * 128;
        PERF_LINE("DiT main block (graph)", s, "TFLOP/s", fl);
        printf("PERF DiT forward estimate (32 blocks at 4224 tokens): %.1f ms\n", 32 * s * 1e3);
        be->vt->graph_destroy(be, graph);
        test_teardown(NULL);
    }
    print_plans(g_gpu, "perf");
}

/* ---- main ---------------------------------------------------------------------------------------- */

static int group_setup(void **state) {
    (void)state;
    if (zcpu_backend_create(&g_cpu, 2, &g_ecpu) != ZE_OK) return -1;
    if (zcuda_backend_create(&g_gpu, 0, &g_egpu) != ZE_OK) {
        fprintf(stderr, "cuda backend: %s\n", g_egpu.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    zbackend_destroy(g_gpu);
    zbackend_destroy(g_cpu);
    return 0;
}

static void test_no_gpu(void **state) {
    (void)state;
    printf("test_cuda_ops: no usable GPU, skipping\n");
    skip();
}

int main(void) {
    const char *filter = getenv("ZIMAGE_TEST_FILTER"); /* e.g. test_perf */
    if (filter && *filter) cmocka_set_test_filter(filter);
    if (!zcuda_available()) {
        const struct CMUnitTest none[] = {cmocka_unit_test(test_no_gpu)};
        return cmocka_run_group_tests(none, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_matmul, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_norms, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_groupnorm, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_qkv, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_attention, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_elementwise, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_layout, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_conv, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_graph, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_backend_misc, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_perf, test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

#else /* no CUDA in this build */

static void test_no_cuda(void **state) {
    (void)state;
    printf("test_cuda_ops: built without CUDA (ZIMAGE_HAVE_CUDA), skipping\n");
    skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
