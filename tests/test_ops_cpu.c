/* test_ops_cpu.c - every op of the CPU backend against a naive double-precision
 * reference written here, through zexec + zarena + the zop_* dispatchers the
 * way the models call them.
 *
 * Inputs are random (never zero), outputs are poisoned with NaN before each op
 * (assert_close fails on any non-finite value, so every element must have been
 * written).  Shapes are varied and odd: M = 1 / 7 / 33, K not a multiple of 8,
 * N = 1, B = 2 with different kv_len, causal and not, GQA 4:1, head dims
 * 16 / 64 / 128 / 512, 3x3 pad 1, 1x1 and stride-2 (0,0,1,1) convs, BF16/F16
 * weights (compared against the widened weights), non-F32 activations.
 *
 * Tolerances (relative: max|got - want| / max|want|):
 *   F32 outputs               1e-5 (2e-5 for long reductions: K >= 1000, Nk >= 1000)
 *   BF16 / F16 outputs        8e-3 / 2e-3 (one rounding of the result)
 *   timestep_embed            1e-6 against torch goldens (f32 op order matters)
 *   layout / copy ops         exact
 * ZIMAGE_TEST_QUICK=1 shrinks the largest cases. */
#include "util/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/half.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/cpu_internal.h"
#include "ops/ops.h"

#define TOL32 1e-5
#define TOL32L 2e-5
#define TOLBF 8e-3
#define TOLF16 2e-3

/* ---- fixture: one backend (2 threads, so every partition path is the same
 * on every machine), one arena, host allocations freed after each test ---- */

static zerr g_err;
static zbackend *g_be;
static zarena g_arena;
static zexec g_zx;
#define ZX (&g_zx)

#define MAXPTR 512
static void *g_host[MAXPTR];
static int g_nhost;
static zt g_weights[MAXPTR];
static int g_nweights;

static void *hmalloc(size_t bytes) {
    assert_true(g_nhost < MAXPTR);
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    g_host[g_nhost++] = p;
    return p;
}

static int group_setup(void **state) {
    (void)state;
    if (zcpu_backend_create(&g_be, 2, &g_err) != ZE_OK) return -1;
    if (zarena_alloc(g_be, &g_arena, (size_t)128 << 20) != ZE_OK) return -1;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    zarena_free(g_be, &g_arena);
    zbackend_destroy(g_be);
    return 0;
}

static int test_setup(void **state) {
    (void)state;
    zerr_clear(&g_err);
    zx_begin(&g_zx, g_be, &g_arena, 0);
    return 0;
}

static int test_teardown(void **state) {
    (void)state;
    for (int i = 0; i < g_nhost; i++) free(g_host[i]);
    g_nhost = 0;
    for (int i = 0; i < g_nweights; i++) zt_free(g_be, &g_weights[i]);
    g_nweights = 0;
    return 0;
}

/* ---- random tensors ---------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* [0, 1) */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (double)((g_rng * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}
/* uniform in +-[0.05, 1): never zero */
static float rnd(void) {
    float m = (float)(0.05 + 0.95 * urand());
    return urand() < 0.5 ? -m : m;
}

static float quant(float v, zt_dtype dt) {
    if (dt == ZT_BF16) return zbf16_to_f32(zf32_to_bf16(v));
    if (dt == ZT_F16) return zf16_to_f32(zf32_to_f16(v));
    return v;
}

#define SHAPE(...) (int64_t[]){__VA_ARGS__}, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

static int64_t numel_of(const int64_t *ne, int nd) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= ne[i];
    return n;
}

static void ok(void) {
    if (g_zx.status != ZE_OK) fail_msg("op failed: %s (%s)", g_err.msg, zerr_name(g_zx.status));
}

/* Random values a*rnd()+b quantized to dt; *host gets the exact values. */
static float *rand_host(int64_t n, zt_dtype dt, float a, float b) {
    float *h = hmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) h[i] = quant(a * rnd() + b, dt);
    return h;
}

/* Arena tensor filled with random values (scaled a, offset b). */
static zt rt_ab(zt_dtype dt, float **host, float a, float b, const int64_t *ne, int nd) {
    zt t = zx_tensor(ZX, dt, nd, ne);
    ok();
    *host = rand_host(numel_of(ne, nd), dt, a, b);
    zx_upload(ZX, &t, *host, ZT_F32);
    ok();
    return t;
}
static zt rt(zt_dtype dt, float **host, const int64_t *ne, int nd) { return rt_ab(dt, host, 1.0f, 0.0f, ne, nd); }

/* Fill t with NaN in its dtype. */
static void poison(zt *t) {
    int64_t n = zt_numel(t);
    if (t->dtype == ZT_F32) {
        for (int64_t i = 0; i < n; i++) ((float *)t->data)[i] = NAN;
    } else {
        uint16_t v = t->dtype == ZT_BF16 ? 0x7fc0 : 0x7e00;
        for (int64_t i = 0; i < n; i++) ((uint16_t *)t->data)[i] = v;
    }
}

/* Arena output tensor full of NaN. */
static zt et(zt_dtype dt, const int64_t *ne, int nd) {
    zt t = zx_tensor(ZX, dt, nd, ne);
    ok();
    poison(&t);
    return t;
}

/* Weight tensor (zt_alloc, freed after the test) with random values. */
static zt wt(zt_dtype dt, float **host, const int64_t *ne, int nd) {
    assert_true(g_nweights < MAXPTR);
    zt t;
    assert_int_equal(zt_alloc(g_be, &t, dt, nd, ne), ZE_OK);
    g_weights[g_nweights++] = t;
    *host = rand_host(numel_of(ne, nd), dt, 1.0f, 0.0f);
    assert_int_equal(zt_upload(g_be, &t, *host, ZT_F32), ZE_OK);
    return t;
}

static float *dl(const zt *t) {
    float *h = hmalloc((size_t)zt_numel(t) * 4);
    assert_int_equal(zt_download_f32(g_be, t, h), ZE_OK);
    return h;
}

static float *dbl2f(const double *d, int64_t n) {
    float *f = hmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) f[i] = (float)d[i];
    return f;
}

static double tol_for(zt_dtype dt, double tol32) { return dt == ZT_BF16 ? TOLBF : dt == ZT_F16 ? TOLF16 : tol32; }

/* ---- matmul -------------------------------------------------------------------- */

static void check_matmul(int64_t M, int64_t N, int64_t K, zt_dtype wdt, zt_dtype xdt, zt_dtype ydt, int bias,
                         int acc) {
    size_t mark = zx_mark(ZX);
    float *hx, *hw, *hb = NULL, *hy0 = NULL;
    zt x = rt(xdt, &hx, SHAPE(M, K));
    zt w = wt(wdt, &hw, SHAPE(N, K));
    zt b = {0};
    if (bias) b = wt(ZT_F32, &hb, SHAPE(N));
    zt y = acc ? rt(ydt, &hy0, SHAPE(M, N)) : et(ydt, SHAPE(M, N));
    zop_matmul(ZX, &y, &x, &w, bias ? &b : NULL, acc);
    ok();
    double *want = hmalloc((size_t)(M * N) * 8);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = (acc ? hy0[m * N + n] : 0.0) + (bias ? hb[n] : 0.0);
            for (int64_t k = 0; k < K; k++) s += (double)hx[m * K + k] * hw[n * K + k];
            want[m * N + n] = s;
        }
    char what[128];
    snprintf(what, sizeof what, "matmul %lldx%lldx%lld w=%s x=%s y=%s%s%s", (long long)M, (long long)N,
             (long long)K, zt_dtype_name(wdt), zt_dtype_name(xdt), zt_dtype_name(ydt), bias ? " +b" : "",
             acc ? " acc" : "");
    assert_close(what, dl(&y), dbl2f(want, M * N), (size_t)(M * N), tol_for(ydt, K >= 1000 ? TOL32L : TOL32));
    zx_release(ZX, mark);
}

static void test_matmul_shapes(void **state) {
    (void)state;
    static const int64_t shp[][3] = {{1, 1, 1}, {1, 37, 19}, {7, 33, 13}, {33, 1, 130}, {33, 65, 130},
                                     {64, 200, 257}, {7, 129, 1001}, {130, 70, 64}, {500, 50, 300}};
    for (size_t i = 0; i < sizeof shp / sizeof shp[0]; i++)
        for (int bias = 0; bias < 2; bias++)
            for (int acc = 0; acc < 2; acc++)
                check_matmul(shp[i][0], shp[i][1], shp[i][2], ZT_F32, ZT_F32, ZT_F32, bias, acc);
}

static void test_matmul_half_weights(void **state) {
    (void)state;
    static const int64_t shp[][3] = {{1, 37, 19}, {7, 33, 13}, {33, 65, 130}, {64, 200, 257}, {5, 300, 1001}};
    for (size_t i = 0; i < sizeof shp / sizeof shp[0]; i++) {
        check_matmul(shp[i][0], shp[i][1], shp[i][2], ZT_BF16, ZT_F32, ZT_F32, (int)(i & 1), 0);
        check_matmul(shp[i][0], shp[i][1], shp[i][2], ZT_F16, ZT_F32, ZT_F32, (int)(~i & 1), (int)(i & 1));
    }
    /* column tiles of w widened per task; the second one larger than a tile
     * budget allows (N*K > 2 threads x 2 tiles x 4M floats) */
    check_matmul(3, 1100, 4000, ZT_BF16, ZT_F32, ZT_F32, 1, 0);
    check_matmul(test_quick() ? 2 : 40, 4200, 4100, ZT_F16, ZT_F32, ZT_F32, 0, 1);
    /* narrow N, many rows: row tasks sharing a wholly widened w */
    check_matmul(300, 40, 700, ZT_BF16, ZT_F32, ZT_F32, 1, 0);
    /* embedding-sized N (LM head), K small */
    check_matmul(2, test_quick() ? 40000 : 151936, 64, ZT_BF16, ZT_F32, ZT_F32, 0, 0);
}

static void test_matmul_dtypes(void **state) {
    (void)state;
    check_matmul(7, 33, 40, ZT_F32, ZT_BF16, ZT_F32, 1, 0);
    check_matmul(7, 33, 40, ZT_BF16, ZT_BF16, ZT_BF16, 1, 0);
    check_matmul(33, 20, 19, ZT_F32, ZT_F32, ZT_BF16, 0, 1);
    check_matmul(9, 17, 23, ZT_F16, ZT_F16, ZT_F16, 1, 1);
    check_matmul(3, 1100, 4000, ZT_BF16, ZT_BF16, ZT_F32, 0, 0); /* tiled + converted x */
}

/* ---- attention ----------------------------------------------------------------- */

static void ref_attention(double *o, const float *q, const float *k, const float *v, int64_t B, int64_t Nq,
                          int64_t Nk, int hq, int hkv, int64_t d, const int32_t *kv_len, int causal, float scale) {
    double *s = malloc((size_t)Nk * 8);
    assert_non_null(s);
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < hq; h++) {
            int g = h / (hq / hkv);
            for (int64_t i = 0; i < Nq; i++) {
                int64_t lim = kv_len ? kv_len[b] : Nk;
                if (causal && i + 1 < lim) lim = i + 1;
                const float *qi = q + ((b * Nq + i) * hq + h) * d;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < lim; j++) {
                    const float *kj = k + ((b * Nk + j) * hkv + g) * d;
                    double dot = 0;
                    for (int64_t c = 0; c < d; c++) dot += (double)qi[c] * kj[c];
                    s[j] = dot * scale;
                    if (s[j] > mx) mx = s[j];
                }
                for (int64_t j = 0; j < lim; j++) sum += (s[j] = exp(s[j] - mx));
                double *oi = o + ((b * Nq + i) * hq + h) * d;
                for (int64_t c = 0; c < d; c++) {
                    double acc = 0;
                    for (int64_t j = 0; j < lim; j++) acc += s[j] * v[((b * Nk + j) * hkv + g) * d + c];
                    oi[c] = acc / sum;
                }
            }
        }
    free(s);
}

static void check_attention(int64_t B, int64_t Nq, int64_t Nk, int hq, int hkv, int64_t d, const int32_t *kv_len,
                            int causal, zt_dtype dt) {
    size_t mark = zx_mark(ZX);
    float *hq_, *hk, *hv;
    /* spread the scores (x2) so that the softmax is not nearly uniform */
    zt q = rt_ab(dt, &hq_, 2.0f, 0.0f, SHAPE(B, Nq, hq * d));
    zt k = rt(dt, &hk, SHAPE(B, Nk, hkv * d));
    zt v = rt(dt, &hv, SHAPE(B, Nk, hkv * d));
    zt o = et(dt, SHAPE(B, Nq, hq * d));
    float scale = 1.0f / sqrtf((float)d);
    zop_attention(ZX, &o, &q, &k, &v, hq, hkv, kv_len, causal, scale);
    ok();
    int64_t n = B * Nq * hq * d;
    double *want = hmalloc((size_t)n * 8);
    ref_attention(want, hq_, hk, hv, B, Nq, Nk, hq, hkv, d, kv_len, causal, scale);
    char what[160];
    snprintf(what, sizeof what, "attention B%lld %lldx%lld h%d/%d d%lld%s%s %s", (long long)B, (long long)Nq,
             (long long)Nk, hq, hkv, (long long)d, kv_len ? " kv_len" : "", causal ? " causal" : "",
             zt_dtype_name(dt));
    assert_close(what, dl(&o), dbl2f(want, n), (size_t)n, tol_for(dt, Nk >= 1000 ? TOL32L : TOL32));
    zx_release(ZX, mark);
}

static void test_attention(void **state) {
    (void)state;
    int32_t kvl2[2] = {37, 20}, kvl3[2] = {5, 70};
    for (int causal = 0; causal < 2; causal++) {
        check_attention(2, 37, 37, 4, 1, 16, kvl2, causal, ZT_F32); /* GQA 4:1, per-batch kv_len */
        check_attention(2, 37, 37, 4, 4, 16, NULL, causal, ZT_F32);
        check_attention(1, 33, 33, 2, 2, 64, NULL, causal, ZT_F32);
        check_attention(2, 70, 70, 8, 2, 128, kvl3, causal, ZT_F32);
    }
    check_attention(1, 1, 1, 1, 1, 16, NULL, 0, ZT_F32);        /* a single token */
    check_attention(2, 5, 40, 4, 1, 64, NULL, 0, ZT_F32);       /* Nq != Nk */
    check_attention(1, 300, 300, 3, 1, 128, NULL, 0, ZT_F32);   /* several query blocks */
    check_attention(1, test_quick() ? 300 : 1100, test_quick() ? 300 : 1100, 1, 1, 512, NULL, 0,
                    ZT_F32);                                     /* VAE: one head of 512 */
    int32_t kvl4[2] = {19, 11};
    check_attention(2, 19, 19, 4, 2, 32, kvl4, 1, ZT_BF16);     /* generic dtypes */
    check_attention(1, 21, 21, 2, 1, 16, NULL, 0, ZT_F16);
}

/* ---- qkv_norm_rope ------------------------------------------------------------------ */

static void ref_norm_rope(double *x, int64_t d, const float *w, float eps, const float *c, const float *s,
                          zrope_pairing pr) {
    if (w) {
        double ss = 0;
        for (int64_t j = 0; j < d; j++) ss += x[j] * x[j];
        double r = 1.0 / sqrt(ss / (double)d + eps);
        for (int64_t j = 0; j < d; j++) x[j] = x[j] * r * w[j];
    }
    if (!c) return;
    int64_t h = d / 2;
    for (int64_t j = 0; j < h; j++) {
        int64_t a = pr == ZROPE_ADJACENT ? 2 * j : j, b = pr == ZROPE_ADJACENT ? 2 * j + 1 : j + h;
        double xa = x[a], xb = x[b];
        x[a] = xa * c[j] - xb * s[j];
        x[b] = xb * c[j] + xa * s[j];
    }
}

static void check_qkv(int64_t R, int hq, int hkv, int64_t d, int norm, int rope, zrope_pairing pr, zt_dtype dt) {
    size_t mark = zx_mark(ZX);
    int64_t W = (hq + 2 * hkv) * d;
    float *hqkv, *hwq = NULL, *hwk = NULL, *hc = NULL, *hs = NULL;
    zt qkv = rt_ab(dt, &hqkv, 3.0f, 0.5f, SHAPE(R, W));
    zt wq = {0}, wk = {0}, cs = {0}, sn = {0};
    if (norm) {
        wq = wt(ZT_F32, &hwq, SHAPE(d));
        wk = wt(ZT_F32, &hwk, SHAPE(d));
    }
    if (rope) { /* real cos/sin tables of random angles */
        cs = zx_tensor2(ZX, ZT_F32, R, d / 2);
        sn = zx_tensor2(ZX, ZT_F32, R, d / 2);
        ok();
        hc = cs.data, hs = sn.data;
        for (int64_t i = 0; i < R * d / 2; i++) {
            double a = 6.283185307179586 * urand() * 10;
            hc[i] = (float)cos(a);
            hs[i] = (float)sin(a);
        }
    }
    zt q = et(dt, SHAPE(R, hq * d)), k = et(dt, SHAPE(R, hkv * d)), v = et(dt, SHAPE(R, hkv * d));
    zop_qkv_norm_rope(ZX, &q, &k, &v, &qkv, norm ? &wq : NULL, norm ? &wk : NULL, rope ? &cs : NULL,
                      rope ? &sn : NULL, hq, hkv, 1e-5f, pr);
    ok();
    double *row = hmalloc((size_t)W * 8);
    float *wantq = hmalloc((size_t)(R * hq * d) * 4), *wantk = hmalloc((size_t)(R * hkv * d) * 4),
          *wantv = hmalloc((size_t)(R * hkv * d) * 4);
    for (int64_t r = 0; r < R; r++) {
        for (int64_t j = 0; j < W; j++) row[j] = hqkv[r * W + j];
        for (int h = 0; h < hq + hkv; h++)
            ref_norm_rope(row + h * d, d, h < hq ? hwq : hwk, 1e-5f, hc ? hc + r * d / 2 : NULL,
                          hs ? hs + r * d / 2 : NULL, pr);
        for (int64_t j = 0; j < hq * d; j++) wantq[r * hq * d + j] = (float)row[j];
        for (int64_t j = 0; j < hkv * d; j++) {
            wantk[r * hkv * d + j] = (float)row[hq * d + j];
            wantv[r * hkv * d + j] = (float)row[(hq + hkv) * d + j];
        }
    }
    char what[128];
    snprintf(what, sizeof what, "qkv R%lld h%d/%d d%lld%s%s%s %s", (long long)R, hq, hkv, (long long)d,
             norm ? " norm" : "", rope ? " rope" : "", pr == ZROPE_HALF ? "-half" : "-adj", zt_dtype_name(dt));
    double tol = tol_for(dt, TOL32);
    assert_close(what, dl(&q), wantq, (size_t)(R * hq * d), tol);
    assert_close(what, dl(&k), wantk, (size_t)(R * hkv * d), tol);
    assert_close(what, dl(&v), wantv, (size_t)(R * hkv * d), dt == ZT_F32 ? 0.0 : tol);
    zx_release(ZX, mark);
}

static void test_qkv_norm_rope(void **state) {
    (void)state;
    for (int pr = 0; pr < 2; pr++) {
        check_qkv(7, 4, 2, 16, 1, 1, (zrope_pairing)pr, ZT_F32);
        check_qkv(7, 4, 2, 16, 0, 1, (zrope_pairing)pr, ZT_F32);
        check_qkv(5, 3, 3, 128, 1, 1, (zrope_pairing)pr, ZT_F32);
        check_qkv(3, 8, 2, 64, 1, 1, (zrope_pairing)pr, ZT_BF16);
    }
    check_qkv(7, 4, 2, 16, 1, 0, ZROPE_ADJACENT, ZT_F32);
    check_qkv(1, 1, 1, 2, 1, 1, ZROPE_HALF, ZT_F32);
    check_qkv(600, 2, 1, 32, 1, 1, ZROPE_ADJACENT, ZT_F32); /* enough rows for threads */
}

/* ---- norms ------------------------------------------------------------------------ */

/* rmsnorm (ln = 0) or layernorm (ln = 1) with optional w, b, per-sample scale. */
static void check_norm(int ln, int64_t R, int64_t D, int64_t batch, int w_on, int b_on, int scale_on, int alias,
                       zt_dtype dt) {
    size_t mark = zx_mark(ZX);
    float *hx, *hw = NULL, *hb = NULL, *hs = NULL;
    zt x = rt_ab(dt, &hx, 2.0f, ln ? 3.0f : 0.0f, SHAPE(R, D)); /* layernorm: non-zero mean */
    zt w = {0}, b = {0}, s = {0};
    if (w_on) w = wt(ZT_F32, &hw, SHAPE(D));
    if (ln && b_on) b = wt(ZT_F32, &hb, SHAPE(D));
    int64_t S = 3 * D, off = D; /* scale vectors sit in the middle of a [batch, 3D] tensor */
    if (scale_on) s = rt(ZT_F32, &hs, SHAPE(batch, S));
    zt y = alias ? x : et(dt, SHAPE(R, D));
    zvec sv = {scale_on ? &s : NULL, off};
    float eps = ln ? 1e-6f : 1e-5f;
    if (ln)
        zop_layernorm(ZX, &y, &x, w_on ? &w : NULL, b_on ? &b : NULL, sv, batch, eps);
    else
        zop_rmsnorm(ZX, &y, &x, w_on ? &w : NULL, sv, batch, eps);
    ok();
    double *want = hmalloc((size_t)(R * D) * 8);
    for (int64_t r = 0; r < R; r++) {
        const float *xr = hx + r * D;
        double mean = 0, var = 0;
        if (ln) {
            for (int64_t j = 0; j < D; j++) mean += xr[j];
            mean /= (double)D;
        }
        for (int64_t j = 0; j < D; j++) var += (xr[j] - mean) * (xr[j] - mean);
        double rs = 1.0 / sqrt(var / (double)D + eps);
        int64_t bi = r / (R / batch);
        for (int64_t j = 0; j < D; j++) {
            double v = (xr[j] - mean) * rs;
            if (w_on) v *= hw[j];
            if (ln && b_on) v += hb[j];
            if (scale_on) v *= 1.0 + hs[bi * S + off + j];
            want[r * D + j] = v;
        }
    }
    char what[128];
    snprintf(what, sizeof what, "%s %lldx%lld b%lld%s%s%s%s %s", ln ? "layernorm" : "rmsnorm", (long long)R,
             (long long)D, (long long)batch, w_on ? " w" : "", ln && b_on ? " b" : "", scale_on ? " scale" : "",
             alias ? " in-place" : "", zt_dtype_name(dt));
    assert_close(what, dl(&y), dbl2f(want, R * D), (size_t)(R * D), tol_for(dt, TOL32));
    zx_release(ZX, mark);
}

static void test_rmsnorm_layernorm(void **state) {
    (void)state;
    for (int ln = 0; ln < 2; ln++) {
        check_norm(ln, 1, 64, 1, 1, ln, 0, 0, ZT_F32);
        check_norm(ln, 7, 129, 1, 0, 0, 0, 0, ZT_F32);
        check_norm(ln, 6, 129, 2, 1, ln, 1, 0, ZT_F32);
        check_norm(ln, 40, 3840, 2, 1, 0, 1, 1, ZT_F32); /* in place, DiT width */
        check_norm(ln, 10, 96, 5, 1, ln, 1, 0, ZT_BF16);
        check_norm(ln, 4, 33, 1, 1, 1, 0, 1, ZT_F16);
    }
}

static void check_norm_gate_add(int64_t R, int64_t D, int64_t batch, int gate_on, int w_on, zt_dtype xdt,
                                zt_dtype ydt) {
    size_t mark = zx_mark(ZX);
    float *hx, *hy, *hw = NULL, *hg = NULL;
    zt x = rt(xdt, &hx, SHAPE(R, D));
    zt y = rt_ab(ydt, &hy, 5.0f, 0.0f, SHAPE(R, D));
    zt w = {0}, g = {0};
    if (w_on) w = wt(ZT_F32, &hw, SHAPE(D));
    int64_t S = 4 * D, off = 3 * D;
    if (gate_on) g = rt_ab(ZT_F32, &hg, 2.0f, 0.0f, SHAPE(batch, S));
    zop_norm_gate_add(ZX, &x, &y, w_on ? &w : NULL, (zvec){gate_on ? &g : NULL, off}, batch, 1e-5f);
    ok();
    double *want = hmalloc((size_t)(R * D) * 8);
    for (int64_t r = 0; r < R; r++) {
        double ss = 0;
        for (int64_t j = 0; j < D; j++) ss += (double)hy[r * D + j] * hy[r * D + j];
        double rs = 1.0 / sqrt(ss / (double)D + 1e-5f);
        int64_t bi = r / (R / batch);
        for (int64_t j = 0; j < D; j++) {
            double v = hy[r * D + j] * rs * (w_on ? hw[j] : 1.0);
            if (gate_on) v *= tanh((double)hg[bi * S + off + j]);
            want[r * D + j] = hx[r * D + j] + v;
        }
    }
    char what[128];
    snprintf(what, sizeof what, "norm_gate_add %lldx%lld b%lld%s%s x=%s y=%s", (long long)R, (long long)D,
             (long long)batch, gate_on ? " gate" : "", w_on ? " w" : "", zt_dtype_name(xdt), zt_dtype_name(ydt));
    assert_close(what, dl(&x), dbl2f(want, R * D), (size_t)(R * D), tol_for(xdt, TOL32));
    zx_release(ZX, mark);
}

static void test_norm_gate_add(void **state) {
    (void)state;
    check_norm_gate_add(1, 64, 1, 1, 1, ZT_F32, ZT_F32);
    check_norm_gate_add(6, 130, 2, 1, 1, ZT_F32, ZT_F32);
    check_norm_gate_add(6, 130, 3, 0, 1, ZT_F32, ZT_F32);
    check_norm_gate_add(7, 33, 1, 1, 0, ZT_F32, ZT_F32);
    check_norm_gate_add(40, 3840, 2, 1, 1, ZT_F32, ZT_F32);
    check_norm_gate_add(8, 96, 2, 1, 1, ZT_F32, ZT_BF16);
    check_norm_gate_add(8, 96, 2, 1, 1, ZT_BF16, ZT_F32);
}

static void check_groupnorm(int64_t B, int64_t H, int64_t W, int64_t C, int G, int silu, int alias, zt_dtype dt) {
    size_t mark = zx_mark(ZX);
    float *hx, *hw, *hb;
    zt x = rt_ab(dt, &hx, 2.0f, 1.5f, SHAPE(B, H, W, C));
    zt w = wt(ZT_F32, &hw, SHAPE(C)), b = wt(ZT_F32, &hb, SHAPE(C));
    zt y = alias ? x : et(dt, SHAPE(B, H, W, C));
    float eps = 1e-6f;
    zop_groupnorm(ZX, &y, &x, &w, &b, G, eps, silu);
    ok();
    int64_t n = B * H * W * C, cg = C / G, HW = H * W;
    double *want = hmalloc((size_t)n * 8);
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t g = 0; g < G; g++) {
            double s = 0, ss = 0, cnt = (double)(HW * cg);
            for (int64_t p = 0; p < HW; p++)
                for (int64_t j = 0; j < cg; j++) s += hx[(bi * HW + p) * C + g * cg + j];
            double mean = s / cnt;
            for (int64_t p = 0; p < HW; p++)
                for (int64_t j = 0; j < cg; j++) {
                    double dv = hx[(bi * HW + p) * C + g * cg + j] - mean;
                    ss += dv * dv;
                }
            double rs = 1.0 / sqrt(ss / cnt + eps);
            for (int64_t p = 0; p < HW; p++)
                for (int64_t j = 0; j < cg; j++) {
                    int64_t c = g * cg + j, i = (bi * HW + p) * C + c;
                    double v = (hx[i] - mean) * rs * hw[c] + hb[c];
                    want[i] = silu ? v / (1.0 + exp(-v)) : v;
                }
        }
    char what[128];
    snprintf(what, sizeof what, "groupnorm [%lld,%lld,%lld,%lld] G%d%s%s %s", (long long)B, (long long)H,
             (long long)W, (long long)C, G, silu ? " silu" : "", alias ? " in-place" : "", zt_dtype_name(dt));
    assert_close(what, dl(&y), dbl2f(want, n), (size_t)n, tol_for(dt, TOL32));
    zx_release(ZX, mark);
}

static void test_groupnorm(void **state) {
    (void)state;
    check_groupnorm(2, 5, 7, 32, 8, 0, 0, ZT_F32);
    check_groupnorm(2, 5, 7, 32, 8, 1, 0, ZT_F32);
    check_groupnorm(1, 3, 3, 64, 32, 1, 1, ZT_F32);  /* 2 channels per group, in place */
    check_groupnorm(1, 1, 1, 6, 3, 0, 0, ZT_F32);    /* one pixel */
    check_groupnorm(1, 16, 20, 128, 32, 1, 0, ZT_F32); /* enough pixels for threads */
    check_groupnorm(1, 4, 4, 4096, 32, 0, 0, ZT_F32); /* channels wider than a chunk */
    check_groupnorm(2, 4, 6, 32, 4, 1, 0, ZT_BF16);
}

/* ---- elementwise ------------------------------------------------------------------- */

static double dsilu(double x) { return x / (1.0 + exp(-x)); }

static void test_elementwise(void **state) {
    (void)state;
    static const int64_t sizes[] = {1, 7, 2049, 40001};
    static const zt_dtype dts[][3] = {
        {ZT_F32, ZT_F32, ZT_F32}, {ZT_BF16, ZT_F32, ZT_F32}, {ZT_F32, ZT_F16, ZT_BF16}, {ZT_BF16, ZT_BF16, ZT_BF16}};
    for (size_t si = 0; si < 4; si++)
        for (size_t di = 0; di < 4; di++) {
            int64_t n = sizes[si];
            zt_dtype ad = dts[di][0], bd = dts[di][1], yd = dts[di][2];
            double tol = tol_for(yd, TOL32);
            size_t mark = zx_mark(ZX);
            float *ha, *hb, *hy0;
            double *want = hmalloc((size_t)n * 8);
            char what[96];
            zt a = rt_ab(ad, &ha, 4.0f, 0.0f, SHAPE(n)), b = rt(bd, &hb, SHAPE(n));
            /* silu */
            zt y = et(yd, SHAPE(n));
            zop_silu(ZX, &y, &a);
            ok();
            for (int64_t i = 0; i < n; i++) want[i] = dsilu(ha[i]);
            snprintf(what, sizeof what, "silu n=%lld %s->%s", (long long)n, zt_dtype_name(ad), zt_dtype_name(yd));
            assert_close(what, dl(&y), dbl2f(want, n), (size_t)n, tol);
            /* add */
            poison(&y);
            zop_add(ZX, &y, &a, &b);
            ok();
            for (int64_t i = 0; i < n; i++) want[i] = (double)ha[i] + hb[i];
            snprintf(what, sizeof what, "add n=%lld", (long long)n);
            assert_close(what, dl(&y), dbl2f(want, n), (size_t)n, tol);
            /* affine */
            poison(&y);
            zop_affine(ZX, &y, &a, -0.75f, 0.3f);
            ok();
            for (int64_t i = 0; i < n; i++) want[i] = -0.75 * ha[i] + 0.3;
            snprintf(what, sizeof what, "affine n=%lld", (long long)n);
            assert_close(what, dl(&y), dbl2f(want, n), (size_t)n, tol);
            /* axpby: y = a*x + b*y with y random */
            zt y2 = rt(yd, &hy0, SHAPE(n));
            zop_axpby(ZX, &y2, 1.5f, &b, -0.5f);
            ok();
            for (int64_t i = 0; i < n; i++) want[i] = 1.5 * hb[i] - 0.5 * hy0[i];
            snprintf(what, sizeof what, "axpby n=%lld", (long long)n);
            assert_close(what, dl(&y2), dbl2f(want, n), (size_t)n, tol);
            zx_release(ZX, mark);
        }
    /* in place: silu(x) -> x, add(a, b) -> a, affine(x) -> x */
    size_t mark = zx_mark(ZX);
    int64_t n = 5003;
    float *ha, *hb;
    zt a = rt(ZT_F32, &ha, SHAPE(n)), b = rt(ZT_F32, &hb, SHAPE(n));
    double *want = hmalloc((size_t)n * 8);
    zop_add(ZX, &a, &a, &b);
    zop_silu(ZX, &a, &a);
    zop_affine(ZX, &a, &a, 2.0f, -1.0f);
    ok();
    for (int64_t i = 0; i < n; i++) want[i] = 2.0 * dsilu((double)(ha[i] + hb[i])) - 1.0;
    assert_close("add+silu+affine in place", dl(&a), dbl2f(want, n), (size_t)n, TOL32);
    zx_release(ZX, mark);
}

static void check_silu_mul(int64_t R, int64_t F, zt_dtype gd, zt_dtype yd) {
    size_t mark = zx_mark(ZX);
    float *hg;
    zt gu = rt_ab(gd, &hg, 4.0f, 0.0f, SHAPE(R, 2 * F));
    zt y = et(yd, SHAPE(R, F));
    zop_silu_mul(ZX, &y, &gu);
    ok();
    double *want = hmalloc((size_t)(R * F) * 8);
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < F; j++) want[r * F + j] = dsilu(hg[r * 2 * F + j]) * hg[r * 2 * F + F + j];
    char what[96];
    snprintf(what, sizeof what, "silu_mul %lldx%lld %s->%s", (long long)R, (long long)F, zt_dtype_name(gd),
             zt_dtype_name(yd));
    assert_close(what, dl(&y), dbl2f(want, R * F), (size_t)(R * F), tol_for(yd, TOL32));
    zx_release(ZX, mark);
}

static void test_silu_mul(void **state) {
    (void)state;
    check_silu_mul(1, 1, ZT_F32, ZT_F32);
    check_silu_mul(7, 33, ZT_F32, ZT_F32);
    check_silu_mul(5, 5000, ZT_F32, ZT_F32); /* rows wider than a chunk */
    check_silu_mul(33, 1000, ZT_F32, ZT_F32);
    check_silu_mul(7, 33, ZT_BF16, ZT_F32);
    check_silu_mul(7, 2100, ZT_F32, ZT_BF16);
}

/* ---- rows: copy / fill / embed --------------------------------------------------------- */

static void test_rows(void **state) {
    (void)state;
    static const zt_dtype pairs[][2] = {{ZT_F32, ZT_F32}, {ZT_F32, ZT_BF16}, {ZT_BF16, ZT_F32}, {ZT_F16, ZT_BF16},
                                        {ZT_BF16, ZT_BF16}};
    for (size_t pi = 0; pi < 5; pi++) {
        zt_dtype sd = pairs[pi][0], dd = pairs[pi][1];
        size_t mark = zx_mark(ZX);
        int64_t C = 37, R = 1000;
        float *hs, *hd, *hrow;
        zt src = rt(sd, &hs, SHAPE(R, C));
        zt dst = rt(dd, &hd, SHAPE(12, 100, C)); /* 1200 rows */
        float *want = hmalloc((size_t)(1200 * C) * 4);
        memcpy(want, hd, (size_t)(1200 * C) * 4);
        zop_copy_rows(ZX, &dst, 150, &src, 3, 997);
        ok();
        for (int64_t i = 0; i < 997 * C; i++) want[150 * C + i] = quant(hs[3 * C + i], dd);
        char what[96];
        snprintf(what, sizeof what, "copy_rows %s->%s", zt_dtype_name(sd), zt_dtype_name(dd));
        assert_close(what, dl(&dst), want, (size_t)(1200 * C), 0.0);
        /* fill rows from a [C] vector and from a [1, C] row */
        zt row = rt(sd, &hrow, SHAPE(C));
        zop_fill_rows(ZX, &dst, 0, 149, &row);
        zt row2 = zt_reshape(&row, 2, (int64_t[]){1, C});
        zop_fill_rows(ZX, &dst, 1199, 1, &row2);
        ok();
        for (int64_t r = 0; r < 149; r++)
            for (int64_t j = 0; j < C; j++) want[r * C + j] = quant(hrow[j], dd);
        for (int64_t j = 0; j < C; j++) want[1199 * C + j] = quant(hrow[j], dd);
        snprintf(what, sizeof what, "fill_rows %s->%s", zt_dtype_name(sd), zt_dtype_name(dd));
        assert_close(what, dl(&dst), want, (size_t)(1200 * C), 0.0);
        zx_release(ZX, mark);
    }
    /* copy within one tensor, overlapping ranges (memmove semantics) */
    size_t mark = zx_mark(ZX);
    float *h;
    zt t = rt(ZT_F32, &h, SHAPE(50, 9));
    float *want = hmalloc(50 * 9 * 4);
    memcpy(want, h, 50 * 9 * 4);
    memmove(want + 5 * 9, want + 2 * 9, 40 * 9 * 4);
    zop_copy_rows(ZX, &t, 5, &t, 2, 40);
    ok();
    assert_close("copy_rows overlapping", dl(&t), want, 50 * 9, 0.0);
    zx_release(ZX, mark);
}

static void test_embed(void **state) {
    (void)state;
    static const zt_dtype tds[] = {ZT_F32, ZT_BF16, ZT_F16};
    for (int ti = 0; ti < 3; ti++) {
        size_t mark = zx_mark(ZX);
        int64_t V = 1001, D = 67, n = 300;
        float *ht;
        zt table = wt(tds[ti], &ht, SHAPE(V, D));
        int32_t *ids = hmalloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(urand() * (double)V);
        ids[0] = 0;
        ids[n - 1] = (int32_t)V - 1;
        for (int yd = 0; yd < 2; yd++) {
            zt y = et(yd ? ZT_BF16 : ZT_F32, SHAPE(n, D));
            zop_embed(ZX, &y, &table, ids, n);
            ok();
            float *want = hmalloc((size_t)(n * D) * 4);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < D; j++) want[i * D + j] = quant(ht[(int64_t)ids[i] * D + j], y.dtype);
            char what[64];
            snprintf(what, sizeof what, "embed %s->%s", zt_dtype_name(tds[ti]), zt_dtype_name(y.dtype));
            assert_close(what, dl(&y), want, (size_t)(n * D), 0.0);
        }
        zx_release(ZX, mark);
    }
}

/* ---- timestep embedding: torch goldens ---------------------------------------------------------- */

/* diffusers TimestepEmbedder.timestep_embedding(t * 1000, 32), t = {0, 0.25, 0.7333333, 1} (torch 2.11, f32) */
static const float te_golden[4][32] = {
    {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f,
     0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f},
    {0.240988299f, -0.706438899f, -0.869245708f, 0.889435232f, 0.991202533f, 0.0785551146f, -0.0516888537f,
     -0.263540149f, -0.801143587f, 0.164196402f, 0.703440905f, 0.902795732f, 0.968912423f, 0.99013412f,
     0.996876597f, 0.999011934f, -0.970528007f, 0.707774043f, -0.494380355f, 0.457061261f, -0.132353634f,
     0.996909738f, 0.998663247f, -0.964648426f, 0.598472118f, 0.986427665f, 0.710753798f, 0.430069596f,
     0.247403949f, 0.140122667f, 0.078974627f, 0.0444423407f},
    {-0.226586536f, -0.67117852f, 0.837832153f, 0.0310501531f, -0.474238694f, -0.921972394f, -0.363395542f,
     0.88959229f, 0.497442931f, -0.555158436f, -0.680325389f, 0.263573438f, 0.7429474f, 0.916168153f,
     0.973231375f, 0.99150902f, -0.973991036f, -0.741295755f, -0.545927942f, -0.999517798f, -0.880396307f,
     -0.387255579f, -0.931634963f, 0.456755519f, 0.867496729f, -0.831744611f, 0.732910156f, 0.964639306f,
     0.66934979f, 0.400794178f, 0.229827464f, 0.130037844f},
    {0.562379062f, -0.999992847f, -0.477397919f, -0.32210955f, 0.862314999f, 0.95093739f, 0.978683233f,
     0.482962996f, -0.839071512f, 0.790131271f, -0.999786079f, -0.205997631f, 0.540302336f, 0.846009195f,
     0.950415254f, 0.98423022f, 0.826879561f, 0.00377638987f, 0.878687203f, 0.946702421f, -0.506372213f,
     -0.309383392f, 0.205375716f, -0.87564075f, -0.54402113f, -0.612937629f, -0.0206826162f, 0.97855252f,
     0.841470957f, 0.533168375f, 0.310983658f, 0.176892191f},
};

static void test_timestep_embed(void **state) {
    (void)state;
    float tv[4] = {0.0f, 0.25f, 0.7333333f, 1.0f};
    zt t = zx_tensor(ZX, ZT_F32, 1, (int64_t[]){4});
    zx_upload(ZX, &t, tv, ZT_F32);
    zt y = et(ZT_F32, SHAPE(4, 32));
    zop_timestep_embed(ZX, &y, &t, 1000.0f, 10000.0f);
    ok();
    assert_close("timestep_embed vs torch (D=32)", dl(&y), &te_golden[0][0], 4 * 32, 1e-6);
    /* D = 256 against the formula in double (angles up to 1000 rad: f32 args differ ~1e-4) */
    zt y2 = et(ZT_BF16, SHAPE(4, 256));
    zop_timestep_embed(ZX, &y2, &t, 1000.0f, 10000.0f);
    ok();
    float want[4 * 256];
    for (int b = 0; b < 4; b++)
        for (int k = 0; k < 128; k++) {
            double a = (double)(tv[b] * 1000.0f) * exp(-log(10000.0) * k / 128.0);
            want[b * 256 + k] = (float)cos(a);
            want[b * 256 + 128 + k] = (float)sin(a);
        }
    assert_close("timestep_embed D=256 bf16 vs double", dl(&y2), want, 4 * 256, 1e-2);
}

/* ---- cfg_combine ------------------------------------------------------------------------------- */

static void test_cfg_combine(void **state) {
    (void)state;
    int64_t B = 2, n = 16 * 6 * 10;
    for (int mode = 0; mode < 3; mode++) { /* 0: no norm, 1: norm (sample 0 rescaled only), 2: alias */
        size_t mark = zx_mark(ZX);
        float *hp, *hn;
        zt pos = rt(ZT_F32, &hp, SHAPE(B, 16, 6, 10)), neg = rt(ZT_F32, &hn, SHAPE(B, 16, 6, 10));
        /* sample 1: neg close to pos so that pred stays within the norm bound */
        for (int64_t i = 0; i < n; i++) hn[n + i] = hp[n + i] * 1.01f;
        zx_upload(ZX, &neg, hn, ZT_F32);
        zt out = mode == 2 ? pos : et(ZT_F32, SHAPE(B, 16, 6, 10));
        float w = 2.0f, k = mode ? 1.2f : 0.0f;
        zop_cfg_combine(ZX, &out, &pos, &neg, w, k);
        ok();
        double *want = hmalloc((size_t)(B * n) * 8);
        int rescaled[2] = {0, 0};
        for (int64_t b = 0; b < B; b++) {
            double sp = 0, so = 0;
            for (int64_t i = 0; i < n; i++) {
                double p = hp[b * n + i], pr = p + w * (p - hn[b * n + i]);
                want[b * n + i] = pr;
                sp += p * p;
                so += pr * pr;
            }
            if (k > 0 && sqrt(so) > k * sqrt(sp)) {
                rescaled[b] = 1;
                for (int64_t i = 0; i < n; i++) want[b * n + i] *= k * sqrt(sp) / sqrt(so);
            }
        }
        if (mode) assert_true(rescaled[0] && !rescaled[1]);
        assert_close(mode == 0 ? "cfg_combine" : mode == 1 ? "cfg_combine norm" : "cfg_combine norm, out=pos",
                     dl(&out), dbl2f(want, B * n), (size_t)(B * n), TOL32);
        zx_release(ZX, mark);
    }
}

/* ---- layout ------------------------------------------------------------------------------------ */

static void test_layout(void **state) {
    (void)state;
    int64_t B = 2, C = 3, H = 6, W = 4, p = 2, Ht = 3, Wt = 2, F = p * p * C;
    float *hx;
    zt x = rt(ZT_F32, &hx, SHAPE(B, C, H, W));
    zt tok = et(ZT_BF16, SHAPE(B, Ht * Wt, F));
    zop_patchify(ZX, &tok, &x, (int)p);
    ok();
    float *want = hmalloc((size_t)(B * Ht * Wt * F) * 4);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Ht; h++)
            for (int64_t w = 0; w < Wt; w++)
                for (int64_t ph = 0; ph < p; ph++)
                    for (int64_t pw = 0; pw < p; pw++)
                        for (int64_t c = 0; c < C; c++)
                            want[((b * Ht * Wt) + h * Wt + w) * F + (ph * p + pw) * C + c] =
                                quant(hx[((b * C + c) * H + h * p + ph) * W + w * p + pw], ZT_BF16);
    assert_close("patchify", dl(&tok), want, (size_t)(B * Ht * Wt * F), 0.0);

    /* unpatchify from a token tensor with 4 extra (padding) rows per sample */
    int64_t N = Ht * Wt + 4;
    float *ht;
    zt tk = rt(ZT_F32, &ht, SHAPE(B, N, F));
    zt x2 = et(ZT_F32, SHAPE(B, C, H, W));
    zop_unpatchify(ZX, &x2, &tk, (int)p);
    ok();
    float *want2 = hmalloc((size_t)(B * C * H * W) * 4);
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t hh = 0; hh < H; hh++)
                for (int64_t ww = 0; ww < W; ww++)
                    want2[((b * C + c) * H + hh) * W + ww] =
                        ht[(b * N + (hh / p) * Wt + ww / p) * F + ((hh % p) * p + ww % p) * C + c];
    assert_close("unpatchify", dl(&x2), want2, (size_t)(B * C * H * W), 0.0);

    /* nchw -> nhwc */
    zt y = et(ZT_F32, SHAPE(B, H, W, C));
    zop_nchw_to_nhwc(ZX, &y, &x);
    ok();
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t hh = 0; hh < H; hh++)
                for (int64_t ww = 0; ww < W; ww++)
                    want2[((b * H + hh) * W + ww) * C + c] = hx[((b * C + c) * H + hh) * W + ww];
    assert_close("nchw_to_nhwc", dl(&y), want2, (size_t)(B * C * H * W), 0.0);

    /* upsample2x (NHWC), f32 and bf16 -> f32 */
    for (int k = 0; k < 2; k++) {
        int64_t Hu = 5, Wu = 7, Cu = 19;
        float *hu;
        zt u = rt(k ? ZT_BF16 : ZT_F32, &hu, SHAPE(B, Hu, Wu, Cu));
        zt yu = et(ZT_F32, SHAPE(B, 2 * Hu, 2 * Wu, Cu));
        zop_upsample2x(ZX, &yu, &u);
        ok();
        float *wu = hmalloc((size_t)(B * 4 * Hu * Wu * Cu) * 4);
        for (int64_t b = 0; b < B; b++)
            for (int64_t hh = 0; hh < 2 * Hu; hh++)
                for (int64_t ww = 0; ww < 2 * Wu; ww++)
                    for (int64_t c = 0; c < Cu; c++)
                        wu[((b * 2 * Hu + hh) * 2 * Wu + ww) * Cu + c] = hu[((b * Hu + hh / 2) * Wu + ww / 2) * Cu + c];
        assert_close("upsample2x", dl(&yu), wu, (size_t)(B * 4 * Hu * Wu * Cu), 0.0);
    }
}

/* ---- conv2d -------------------------------------------------------------------------------------- */

static void check_conv(int64_t B, int64_t H, int64_t W, int64_t Ci, int64_t Co, int kh, int kw, int s, int pt,
                       int pl, int pb, int pr, int bias, zt_dtype wdt, zt_dtype adt) {
    size_t mark = zx_mark(ZX);
    int64_t Ho = (H + pt + pb - kh) / s + 1, Wo = (W + pl + pr - kw) / s + 1, K = (int64_t)kh * kw * Ci;
    float *hx, *hw, *hb = NULL;
    zt x = rt(adt, &hx, SHAPE(B, H, W, Ci));
    zt w = wt(wdt, &hw, SHAPE(Co, K));
    zt b = {0};
    if (bias) b = wt(ZT_F32, &hb, SHAPE(Co));
    zt y = et(adt, SHAPE(B, Ho, Wo, Co));
    zop_conv2d(ZX, &y, &x, &w, bias ? &b : NULL, kh, kw, s, pt, pl, pb, pr);
    ok();
    int64_t n = B * Ho * Wo * Co;
    double *want = hmalloc((size_t)n * 8);
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++)
                for (int64_t co = 0; co < Co; co++) {
                    double acc = bias ? hb[co] : 0.0;
                    for (int i = 0; i < kh; i++)
                        for (int j = 0; j < kw; j++) {
                            int64_t ih = oh * s - pt + i, iw = ow * s - pl + j;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            for (int64_t ci = 0; ci < Ci; ci++)
                                acc += (double)hx[((bi * H + ih) * W + iw) * Ci + ci] *
                                       hw[co * K + ((int64_t)i * kw + j) * Ci + ci];
                        }
                    want[((bi * Ho + oh) * Wo + ow) * Co + co] = acc;
                }
    char what[160];
    snprintf(what, sizeof what, "conv [%lld,%lld,%lld,%lld]->%lld %dx%d s%d pad(%d,%d,%d,%d) w=%s a=%s",
             (long long)B, (long long)H, (long long)W, (long long)Ci, (long long)Co, kh, kw, s, pt, pl, pb, pr,
             zt_dtype_name(wdt), zt_dtype_name(adt));
    assert_close(what, dl(&y), dbl2f(want, n), (size_t)n, tol_for(adt, K >= 1000 ? TOL32L : TOL32));
    zx_release(ZX, mark);
}

static void test_conv2d(void **state) {
    (void)state;
    check_conv(2, 9, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, ZT_F32, ZT_F32);   /* Conv3 */
    check_conv(1, 9, 7, 16, 1, 3, 3, 1, 1, 1, 1, 1, 0, ZT_F32, ZT_F32);  /* Co = 1 */
    check_conv(2, 5, 6, 8, 3, 1, 1, 1, 0, 0, 0, 0, 1, ZT_F32, ZT_F32);   /* 1x1 -> matmul */
    check_conv(2, 8, 10, 7, 9, 3, 3, 2, 0, 0, 1, 1, 1, ZT_F32, ZT_F32);  /* VAE Down */
    check_conv(1, 9, 11, 4, 5, 3, 3, 2, 0, 0, 1, 1, 1, ZT_F32, ZT_F32);  /* Down, odd size */
    check_conv(1, 6, 7, 3, 4, 2, 3, 1, 1, 2, 0, 1, 1, ZT_F32, ZT_F32);   /* asymmetric */
    check_conv(1, 5, 5, 3, 2, 1, 1, 2, 1, 1, 1, 1, 0, ZT_F32, ZT_F32);   /* 1x1 strided, padded */
    check_conv(1, 3, 3, 2, 3, 5, 5, 1, 2, 2, 2, 2, 1, ZT_F32, ZT_F32);   /* kernel larger than the image */
    check_conv(2, 9, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, ZT_BF16, ZT_F32);
    check_conv(1, 8, 8, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, ZT_F16, ZT_F32);
    check_conv(1, 6, 5, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, ZT_F32, ZT_BF16);  /* non-F32 activations */
    check_conv(1, 6, 6, 8, 4, 3, 3, 2, 0, 0, 1, 1, 1, ZT_BF16, ZT_F16);
    /* many pixel tasks; im2col rows of 1152 */
    check_conv(1, 40, 40, 128, 8, 3, 3, 1, 1, 1, 1, 1, 1, ZT_F32, ZT_F32);
    if (!test_quick()) check_conv(1, 90, 90, 64, 16, 3, 3, 1, 1, 1, 1, 1, 1, ZT_BF16, ZT_F32);
    /* weights too large to widen whole (1024 x 9216 > 8M): shared tiles + zcpu_gemm */
    check_conv(1, 3, 4, 1024, 1024, 3, 3, 1, 1, 1, 1, 1, 1, ZT_BF16, ZT_F32);
    check_conv(1, 3, 3, 1024, 1000, 3, 3, 2, 0, 0, 1, 1, 0, ZT_F16, ZT_BF16);
}

/* The backend's polynomial e^x (softmax, silu, groupnorm): <= 3e-7 relative
 * on [-87, 88], 0 below -87.4 (and for -inf), NaN stays NaN; silu of large
 * |x| stays finite. */
static void test_vector_exp(void **state) {
    (void)state;
    int64_t n = 200003;
    float *x = hmalloc((size_t)n * 4), *y = hmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) x[i] = -87.0f + 174.99f * (float)i / (float)(n - 1);
    memcpy(y, x, (size_t)n * 4);
    zcpu_vexp_sub(y, n, 0.0f);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double want = exp((double)x[i]), r = fabs(y[i] - want) / want;
        if (r > worst) worst = r;
    }
    printf("  vexp max relative error on [-87, 88]: %.3e\n", worst);
    assert_true(worst <= 3e-7);
    float sp[7] = {-87.5f, -100.0f, -1e30f, -INFINITY, NAN, 0.0f, 1.0f};
    zcpu_vexp_sub(sp, 7, 0.0f);
    assert_true(sp[0] == 0.0f && sp[1] == 0.0f && sp[2] == 0.0f && sp[3] == 0.0f);
    assert_true(isnan(sp[4]));
    assert_true(sp[5] == 1.0f);
    assert_true(fabsf(sp[6] - 2.7182817f) <= 1e-6f);
    /* vexp_sub subtracts first (softmax: x - max) */
    float e2[5] = {3.0f, 2.0f, 1.0f, 0.5f, 3.0f};
    zcpu_vexp_sub(e2, 5, 3.0f);
    assert_true(e2[0] == 1.0f && e2[4] == 1.0f && fabsf(e2[3] - expf(-2.5f)) <= 1e-7f);
    float sx[9] = {-1e6f, -1000.0f, -90.0f, -20.0f, 0.0f, 20.0f, 90.0f, 1000.0f, 1e6f}, sy[9];
    zcpu_vsilu(sy, sx, 9);
    for (int i = 0; i < 9; i++) {
        double want = (double)sx[i] / (1.0 + exp(-(double)sx[i]));
        assert_true(isfinite(sy[i]));
        assert_true(fabs(sy[i] - want) <= 1e-6 * fabs(want) + 1e-30);
    }
    float mx[11] = {-5, -3, -9, 2, -1, 7, 6.5f, -100, 7, 0, 1};
    for (int k = 1; k <= 11; k++) {
        float want = mx[0];
        for (int i = 1; i < k; i++) want = mx[i] > want ? mx[i] : want;
        assert_true(zcpu_vmax(mx, k) == want);
    }
}

/* ---- dispatcher, backend properties, memory -------------------------------------------------- */

static void test_dispatcher_rejects(void **state) {
    (void)state;
    float *hx, *hw, *ha, *hw2;
    zt x = rt(ZT_F32, &hx, SHAPE(3, 5));
    zt w = wt(ZT_F32, &hw, SHAPE(4, 6));
    zt y = et(ZT_F32, SHAPE(3, 4));
    zt a = rt(ZT_F32, &ha, SHAPE(16));
    zt o = et(ZT_F32, SHAPE(16));
    zt q = et(ZT_F32, SHAPE(2, 4, 32)), k = et(ZT_F32, SHAPE(2, 6, 16)), v = et(ZT_F32, SHAPE(2, 6, 16));
    zt ao = et(ZT_F32, SHAPE(2, 4, 32));
    zt cx = et(ZT_F32, SHAPE(1, 8, 8, 4)), cw = wt(ZT_F32, &hw2, SHAPE(5, 36)), cy = et(ZT_F32, SHAPE(1, 8, 8, 5));
    size_t mark = zx_mark(ZX);

    zop_matmul(ZX, &y, &x, &w, NULL, 0);
    assert_int_equal(g_zx.status, ZE_INVALID);
    assert_int_equal(g_be->status, ZE_INVALID);
    printf("  rejected: %s\n", g_err.msg);
    assert_non_null(strstr(g_err.msg, "matmul: shapes"));
    assert_non_null(strstr(g_err.msg, "[3, 5]"));
    /* sticky: later (valid) ops do nothing, and the first message stays */
    zop_silu(ZX, &o, &a);
    assert_true(isnan(((float *)o.data)[0]));
    assert_int_equal(g_zx.status, ZE_INVALID);
    assert_non_null(strstr(g_err.msg, "matmul: shapes"));

    /* zx_begin clears the status; attention's kv_len is range-checked */
    zx_begin(ZX, g_be, &g_arena, 0);
    zx_release(ZX, mark);
    int32_t kvl[2] = {6, 7};
    zop_attention(ZX, &ao, &q, &k, &v, 2, 1, kvl, 0, 0.25f);
    assert_int_equal(g_zx.status, ZE_INVALID);
    printf("  rejected: %s\n", g_err.msg);
    assert_non_null(strstr(g_err.msg, "kv_len[1] = 7"));

    /* conv output shape */
    zx_begin(ZX, g_be, &g_arena, 0);
    zx_release(ZX, mark);
    zop_conv2d(ZX, &cy, &cx, &cw, NULL, 3, 3, 2, 0, 0, 1, 1);
    assert_int_equal(g_zx.status, ZE_INVALID);
    printf("  rejected: %s\n", g_err.msg);
    assert_non_null(strstr(g_err.msg, "conv2d: output must be [1, 4, 4, 5]"));
    assert_true(isnan(((float *)cy.data)[0]));
}

static void test_backend_props(void **state) {
    (void)state;
    zerr e = {0};
    zbackend *be = NULL;
    assert_int_equal(zcpu_backend_create(&be, 0, &e), ZE_OK);
    assert_true(be->threads >= 1);
    assert_int_equal(be->is_host, 1);
    assert_int_equal(be->act, ZT_F32);
    assert_string_equal(be->vt->name, "cpu");
    size_t in0, pk0, in1, pk1;
    be->vt->mem_stats(be, &in0, &pk0);
    zt t;
    assert_int_equal(zt_alloc(be, &t, ZT_BF16, 2, (int64_t[]){100, 1000}), ZE_OK);
    assert_int_equal((uintptr_t)t.data % 64, 0);
    be->vt->mem_stats(be, &in1, &pk1);
    assert_int_equal(in1 - in0, 200000);
    assert_true(pk1 >= in1);
    zt_free(be, &t);
    be->vt->mem_stats(be, &in1, &pk1);
    assert_int_equal(in1, in0);
    assert_true(pk1 >= in0 + 200000);
    assert_int_equal(be->vt->sync(be), ZE_OK);
    zbackend_destroy(be);
}

/* The second run of the same ops allocates nothing (scratch is grow-once),
 * and a backend with an odd thread count gives the same results. */
static void test_steady_state_and_threads(void **state) {
    (void)state;
    zerr e = {0};
    zbackend *be3 = NULL;
    assert_int_equal(zcpu_backend_create(&be3, 3, &e), ZE_OK);
    float *hx, *hw, *hc, *hq;
    zt x = rt(ZT_F32, &hx, SHAPE(64, 1030));
    zt w = wt(ZT_BF16, &hw, SHAPE(4100, 1030)); /* weight tiles widened per task */
    zt y = et(ZT_F32, SHAPE(64, 4100)), y3 = et(ZT_F32, SHAPE(64, 4100));
    zt cx = rt(ZT_F32, &hc, SHAPE(1, 20, 20, 16));
    zt cw = wt(ZT_F16, &hw, SHAPE(8, 144));
    zt cy = et(ZT_F32, SHAPE(1, 10, 10, 8)), cy3 = et(ZT_F32, SHAPE(1, 10, 10, 8));
    zt q = rt(ZT_F32, &hq, SHAPE(1, 100, 4 * 32)), ao = et(ZT_F32, SHAPE(1, 100, 4 * 32));
    zt ao3 = et(ZT_F32, SHAPE(1, 100, 4 * 32));
    size_t in1 = 0, pk1 = 0, in2 = 0, pk2 = 0;
    for (int run = 0; run < 2; run++) {
        zop_matmul(ZX, &y, &x, &w, NULL, 0);
        zop_conv2d(ZX, &cy, &cx, &cw, NULL, 3, 3, 2, 0, 0, 1, 1);
        zop_attention(ZX, &ao, &q, &q, &q, 4, 4, NULL, 1, 0.2f);
        ok();
        g_be->vt->mem_stats(g_be, run ? &in2 : &in1, run ? &pk2 : &pk1);
    }
    assert_int_equal(in1, in2);
    assert_int_equal(pk1, pk2);
    /* 3 threads */
    zexec zx3;
    zx_begin(&zx3, be3, NULL, 0);
    zop_matmul(&zx3, &y3, &x, &w, NULL, 0);
    zop_conv2d(&zx3, &cy3, &cx, &cw, NULL, 3, 3, 2, 0, 0, 1, 1);
    zop_attention(&zx3, &ao3, &q, &q, &q, 4, 4, NULL, 1, 0.2f);
    assert_int_equal(zx3.status, ZE_OK);
    assert_close("matmul 3 threads vs 2", dl(&y3), dl(&y), 64 * 4100, 1e-6);
    assert_close("conv 3 threads vs 2", dl(&cy3), dl(&cy), 800, 1e-6);
    assert_close("attention 3 threads vs 2", dl(&ao3), dl(&ao), 100 * 128, 1e-6);
    zbackend_destroy(be3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_matmul_shapes, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_half_weights, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_matmul_dtypes, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_attention, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_qkv_norm_rope, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_rmsnorm_layernorm, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_norm_gate_add, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_groupnorm, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_elementwise, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_silu_mul, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_rows, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_embed, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_timestep_embed, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_cfg_combine, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_layout, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_conv2d, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_vector_exp, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_dispatcher_rejects, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_backend_props, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_steady_state_and_threads, test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
