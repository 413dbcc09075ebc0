/* rng.c - torch.randn(float32) for the CPU (mt19937) and CUDA (Philox)
 * generators, bit for bit, on the CPU.  See rng.h and
 * shared/spec/torch-rng.md (section numbers below refer to it).
 *
 * Floating point: every float operation below is one IEEE binary32 operation
 * with round-to-nearest-even; the fusions torch's kernels have are written
 * as fmaf() (single rounding; glibc picks the FMA instruction when the CPU
 * has one, an exact software fma otherwise).  The compiler must add no
 * fusions of its own: GCC in ISO C mode (-std=c11) defaults to
 * -ffp-contract=off, and we also force it off for GCC (optimize pragma) and
 * clang (STDC FP_CONTRACT); -ffast-math is rejected at compile time.
 *
 * Layout: out[i] is element i of the flat (row-major) tensor.
 */
#if defined(__FAST_MATH__)
#error "rng.c must be compiled without -ffast-math (bit-exact float32 arithmetic)"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "rng.h"

#include <math.h>
#include <string.h>

#include "../base/err.h"

static inline uint32_t f2u(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* ========================================================================
 * CPU generator: mt19937 (section 1)
 * ====================================================================== */

#define MT_M 397

static void mt_seed(zrng *g, uint32_t s) {
    g->mt[0] = s;
    for (int i = 1; i < ZRNG_MT_N; i++) {
        uint32_t p = g->mt[i - 1];
        g->mt[i] = 1812433253u * (p ^ (p >> 30)) + (uint32_t)i;
    }
    g->mti = ZRNG_MT_N;
}

static void mt_twist(zrng *g) {
    uint32_t *mt = g->mt;
    for (int i = 0; i < ZRNG_MT_N; i++) {
        uint32_t nx = mt[(i + 1) % ZRNG_MT_N];
        uint32_t y = (mt[i] & 0x80000000u) | (nx & 0x7FFFFFFFu);
        uint32_t v = mt[(i + MT_M) % ZRNG_MT_N] ^ (y >> 1);
        if (nx & 1) v ^= 0x9908B0DFu;
        mt[i] = v;
    }
    g->mti = 0;
}

uint32_t zrng_mt_next(zrng *g) {
    if (g->mti >= ZRNG_MT_N) mt_twist(g);
    uint32_t y = g->mt[g->mti++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9D2C5680u;
    y ^= (y << 15) & 0xEFC60000u;
    y ^= y >> 18;
    return y;
}

/* 24-bit uniform float in [0, 1 - 2^-24] (exact). */
static inline float mt_uniform_f32(zrng *g) { return (float)(zrng_mt_next(g) & 0xFFFFFFu) * 0x1p-24f; }

/* 53-bit uniform double; the first draw is the high word. */
static inline double mt_uniform_f64(zrng *g) {
    uint64_t hi = zrng_mt_next(g);
    uint64_t lo = zrng_mt_next(g);
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * 0x1p-53;
}

/* at::normal_distribution<double>(0, 1) with the generator's cache (1.5). */
static double cpu_normal_double(zrng *g) {
    if (g->have_cache) {
        g->have_cache = 0;
        return g->cache;
    }
    double u1 = mt_uniform_f64(g);
    double u2 = mt_uniform_f64(g);
    double r = sqrt(-2.0 * log1p(-u2));
    double theta = (2.0 * M_PI) * u1;
    g->cache = r * sin(theta);
    g->have_cache = 1;
    return r * cos(theta);
}

/* avx_mathfun log256_ps, as contracted by GCC in the torch wheels (1.4). */
static float cephes_log(float x) {
    static const float p[9] = {7.0376836292e-2f,  -1.1514610310e-1f, 1.1676998740e-1f,
                               -1.2420140846e-1f, 1.4249322787e-1f,  -1.6668057665e-1f,
                               2.0000714765e-1f,  -2.4999993993e-1f, 3.3333331174e-1f};
    const float q1 = -2.12194440e-4f, q2 = 0.693359375f, sqrthf = 0.707106781186547524f;
    if (!(x >= 0x1p-126f)) x = 0x1p-126f; /* _mm256_max_ps(x, min_norm_pos) */
    uint32_t b = f2u(x);
    float e = (float)((int32_t)(b >> 23) - 127) + 1.0f;
    float m = u2f((b & 0x807FFFFFu) | 0x3F000000u); /* [0.5, 1) */
    if (m < sqrthf) {
        e = e - 1.0f;
        x = (m - 1.0f) + m;
    } else {
        x = m - 1.0f;
    }
    float z = x * x;
    float y = p[0];
    for (int k = 1; k < 9; k++) y = fmaf(y, x, p[k]);
    y = y * x;
    float eq1 = e * q1;
    y = fmaf(y, z, eq1);
    float hz = 0.5f * z;
    y = y - hz;
    x = x + y;
    float eq2 = e * q2;
    x = x + eq2;
    return x;
}

/* avx_mathfun sincos256_ps for x >= 0, as contracted by GCC (1.4). */
static void cephes_sincos(float x, float *s_out, float *c_out) {
    const float fopi = 1.27323954473516f;
    const float dp1 = -0.78515625f, dp2 = -2.4187564849853515625e-4f, dp3 = -3.77489497744594108e-8f;
    const float s0 = -1.9515295891e-4f, s1 = 8.3321608736e-3f, s2 = -1.6666654611e-1f;
    const float c0 = 2.443315711809948e-5f, c1 = -1.388731625493765e-3f, c2 = 4.166664568298827e-2f;
    float xf = x * fopi;
    int j = (int)xf; /* cvttps: truncation */
    j = (j + 1) & ~1;
    float y = (float)j;
    x = fmaf(y, dp1, x);
    x = fmaf(y, dp2, x);
    x = fmaf(y, dp3, x);
    float z = x * x;
    float yc = c0;
    yc = fmaf(yc, z, c1);
    yc = fmaf(yc, z, c2);
    yc = yc * z;
    float hz = 0.5f * z;
    yc = fmaf(yc, z, -hz);
    yc = yc + 1.0f;
    float ys = s0;
    ys = fmaf(ys, z, s1);
    ys = fmaf(ys, z, s2);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    float sv, cv;
    if ((j & 2) == 0) {
        sv = ys;
        cv = yc;
    } else {
        sv = yc;
        cv = ys;
    }
    if (j & 4) sv = -sv;
    if ((~(j - 2)) & 4) cv = -cv;
    *s_out = sv;
    *c_out = cv;
}

/* Box-Muller on the 16 floats d[0..15] in place (1.4). */
static void cpu_block16(float *d) {
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float lg = cephes_log(u1);
        float radius = sqrtf(-2.0f * lg);
        float theta = 6.2831855f * d[8 + j];
        float sn, cs;
        cephes_sincos(theta, &sn, &cs);
        float n1 = radius * cs, n2 = radius * sn;
        d[j] = n1 + 0.0f; /* fma(n, std=1, mean=0): -0 -> +0 */
        d[8 + j] = n2 + 0.0f;
    }
}

static void cpu_randn(zrng *g, float *out, int64_t n) {
    if (n < 16) { /* scalar double path (1.5) */
        for (int64_t i = 0; i < n; i++) {
            double v = cpu_normal_double(g) * 1.0 + 0.0;
            out[i] = (float)v;
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = mt_uniform_f32(g);
    int64_t nblk = n / 16;
#pragma omp parallel for schedule(static) if (nblk >= 4096)
    for (int64_t b = 0; b < nblk; b++) cpu_block16(out + 16 * b);
    if (n % 16) { /* tail: 16 new uniforms over the last 16 outputs */
        float *t = out + n - 16;
        for (int j = 0; j < 16; j++) t[j] = mt_uniform_f32(g);
        cpu_block16(t);
    }
}

/* ========================================================================
 * CUDA generator: Philox4x32-10 + curand_normal4 on sm_90 (section 2)
 * ====================================================================== */

void zrng_philox(const uint32_t ctr[4], uint32_t k0, uint32_t k1, uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    for (int r = 0; r < 10; r++) {
        if (r) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* libdevice logf for positive finite u (2.4). */
static float cuda_logf(float u) {
    static const uint32_t ab[9] = {0xbe055027, 0x3e1039f6, 0xbdf8cdcc, 0x3e0f2955, 0xbe2ad8b9,
                                   0x3e4ced0b, 0xbe7fff22, 0x3eaaaa78, 0xbf000000};
    float bias = 0.0f;
    if (u < 0x1p-126f) {
        u = u * 0x1p23f;
        bias = -23.0f;
    }
    uint32_t ix = f2u(u);
    int32_t eb = (int32_t)((ix - 0x3F2AAAABu) & 0xFF800000u);
    float f = u2f(ix - (uint32_t)eb) - 1.0f;
    float e = fmaf((float)eb, 0x1p-23f, bias);
    float r = fmaf(f, u2f(ab[0]), u2f(ab[1]));
    for (int k = 2; k < 9; k++) r = fmaf(f, r, u2f(ab[k]));
    r = f * r;
    r = fmaf(f, r, f);
    return fmaf(e, u2f(0x3F317218u), r);
}

/* Truncated squarer of the MUFU interpolator: partial-product bits of
 * xl*xl with weight >= 2^19, over 2^19 (2.5). */
static inline uint32_t sq19(uint32_t xl) {
    uint64_t s = 0;
    for (int i = 0; i < 17; i++) { /* unrolled by the compiler; branch-free */
        uint64_t on = 0 - (uint64_t)((xl >> i) & 1);
        uint32_t keep = ((1u << i) - 1) & ~(i < 18 ? (1u << (18 - i)) - 1 : 0u); /* bits j in [18-i, i) */
        uint64_t add = ((uint64_t)(xl & keep) << (i + 1)) + (i >= 10 ? 1ull << (2 * i) : 0);
        s += on & add;
    }
    return (uint32_t)(s >> 19);
}

/* (c0, c1, c2) per 2^17-wide segment; see the spec's table (2.5). */
static const int32_t mufu_tab[64][3] = {
    {0, 25737, -14},         {823463, 25730, -48},    {1646436, 25706, -76},   {2468414, 25668, -110},
    {3288906, 25613, -137},  {4107418, 25544, -171},  {4923453, 25459, -201},  {5736526, 25358, -229},
    {6546141, 25243, -262},  {7351816, 25112, -292},  {8153060, 24966, -322},  {8949394, 24805, -352},
    {9740335, 24629, -381},  {10525413, 24438, -410}, {11304145, 24233, -441}, {12076070, 24013, -470},
    {12840725, 23778, -497}, {13597643, 23529, -525}, {14346367, 23266, -553}, {15086452, 22989, -581},
    {15817450, 22698, -608}, {16538916, 22394, -637}, {17250422, 22076, -664}, {17951542, 21744, -688},
    {18641840, 21400, -715}, {19320916, 21042, -738}, {19988350, 20672, -763}, {20643746, 20290, -790},
    {21286703, 19895, -812}, {21916841, 19489, -839}, {22533776, 19070, -859}, {23137138, 18640, -881},
    {23726565, 18199, -904}, {24301698, 17747, -926}, {24862194, 17284, -946}, {25407711, 16811, -967},
    {25937924, 16328, -988}, {26452518, 15834, -1004}, {26951170, 15332, -1025}, {27433593, 14820, -1043},
    {27899488, 14299, -1059}, {28348583, 13769, -1074}, {28780594, 13232, -1093}, {29195273, 12686, -1107},
    {29592364, 12133, -1123}, {29971632, 11572, -1136}, {30332846, 11004, -1148}, {30675788, 10430, -1162},
    {31000253, 9849, -1172},  {31306042, 9263, -1185},  {31592974, 8671, -1196},  {31860879, 8073, -1203},
    {32109590, 7471, -1213},  {32338961, 6864, -1220},  {32548845, 6254, -1230},  {32739132, 5639, -1236},
    {32909694, 5021, -1242},  {33060432, 4400, -1247},  {33191257, 3776, -1250},  {33302087, 3151, -1258},
    {33392857, 2523, -1260},  {33463517, 1893, -1260},  {33514014, 1263, -1263},  {33544326, 632, -1265},
};

/* sin(2*pi*d/2^25), d in [0, 2^23), as MUFU computes it (exact integers). */
static inline float mufu_quarter(uint32_t d) {
    const int32_t *c = mufu_tab[d >> 17];
    uint32_t xl = d & 0x1FFFF;
    int64_t y = ((int64_t)c[0] << 12) + (int64_t)c[1] * xl + (int64_t)c[2] * sq19(xl);
    uint64_t uy = (uint64_t)y; /* non-negative */
    int nb = uy ? 64 - __builtin_clzll(uy) : 0;
    if (nb > 24) uy = (uy >> (nb - 24)) << (nb - 24); /* truncate to 24 bits */
    return (float)uy * 0x1p-37f;                       /* exact */
}

/* __sincosf(v) on sm_90 for v >= 0: FMUL.RZ by 1/(2 pi), MUFU.SIN/COS. */
static void cuda_sincosf(float v, float *s_out, float *c_out) {
    double p = (double)v * (double)u2f(0x3E22F983u); /* exact product */
    float t = (float)p;
    if (fabs((double)t) > fabs(p)) t = u2f(f2u(t) - 1); /* round toward zero */
    uint32_t q = (uint32_t)(t * 33554432.0f) & 0x1FFFFFFu;
    uint32_t quad = q >> 23, d = q & 0x7FFFFF;
    float a = mufu_quarter(d), b = mufu_quarter(0x7FFFFF - d);
    switch (quad) {
    case 0: *s_out = a; *c_out = b; break;
    case 1: *s_out = b; *c_out = -a; break;
    case 2: *s_out = -a; *c_out = -b; break;
    default: *s_out = -b; *c_out = a; break;
    }
}

/* curand _curand_box_muller(x, y) on sm_90 -> (s*sin v, s*cos v), -0 -> +0. */
static inline void cuda_box_muller(uint32_t x, uint32_t y, float *n_sin, float *n_cos) {
    float u = fmaf((float)x, 0x1p-32f, 0x1p-33f);
    float v = fmaf((float)y, u2f(0x30C90FDBu), u2f(0x30490FDBu));
    float s = sqrtf(-2.0f * cuda_logf(u));
    float sn, cs;
    cuda_sincosf(v, &sn, &cs);
    float a = s * sn, b = s * cs;
    *n_sin = a + 0.0f;
    *n_cos = b + 0.0f;
}

/* Threads of torch's launch and the offset increment for numel (2.2). */
static void cuda_launch(const zrng *g, int64_t n, int64_t *threads, uint64_t *incr) {
    int64_t blocks = (n + 255) / 256;
    int64_t maxb = (int64_t)g->sm_count * (g->max_threads_per_sm / 256);
    if (blocks > maxb) blocks = maxb;
    *threads = blocks * 256;
    *incr = (uint64_t)(((n - 1) / (*threads * 4) + 1) * 4);
}

static void cuda_randn(zrng *g, float *out, int64_t n) {
    int64_t T;
    uint64_t incr;
    cuda_launch(g, n, &T, &incr);
    uint64_t base = g->offset / 4;
    uint32_t k0 = (uint32_t)g->seed, k1 = (uint32_t)(g->seed >> 32);
    int64_t step = 4 * T;
    int64_t iters = (n - 1) / step + 1;
    int64_t nt = T < n ? T : n;
#pragma omp parallel for schedule(static) if (n >= 8192)
    for (int64_t idx = 0; idx < nt; idx++) {
        for (int64_t it = 0; it < iters; it++) {
            int64_t first = idx + it * step;
            if (first >= n) break;
            uint64_t ctr = base + (uint64_t)it;
            uint32_t c[4] = {(uint32_t)ctr, (uint32_t)(ctr >> 32), (uint32_t)idx, (uint32_t)((uint64_t)idx >> 32)};
            uint32_t r[4];
            zrng_philox(c, k0, k1, r);
            float v0, v1;
            cuda_box_muller(r[0], r[1], &v0, &v1);
            out[first] = v0;
            if (first + T < n) out[first + T] = v1;
            if (first + 2 * T < n) {
                float v2, v3;
                cuda_box_muller(r[2], r[3], &v2, &v3);
                out[first + 2 * T] = v2;
                if (first + 3 * T < n) out[first + 3 * T] = v3;
            }
        }
    }
    g->offset += incr;
}

/* ========================================================================
 * API
 * ====================================================================== */

int zrng_init(zrng *g, int kind, uint64_t seed) {
    if (!g || (kind != ZIMAGE_RNG_CPU && kind != ZIMAGE_RNG_CUDA)) return ZE_INVALID;
    memset(g, 0, sizeof *g);
    g->kind = kind;
    g->seed = seed;
    g->sm_count = 132;
    g->max_threads_per_sm = 2048;
    if (kind == ZIMAGE_RNG_CPU) mt_seed(g, (uint32_t)seed); /* low 32 bits only */
    return ZE_OK;
}

int zrng_set_cuda_geometry(zrng *g, int sm_count, int max_threads_per_sm) {
    if (!g || g->kind != ZIMAGE_RNG_CUDA || sm_count <= 0 || max_threads_per_sm < 256) return ZE_INVALID;
    g->sm_count = sm_count;
    g->max_threads_per_sm = max_threads_per_sm;
    return ZE_OK;
}

int zrng_randn_next(zrng *g, float *out, int64_t n) {
    if (!g || n < 0 || (n > 0 && !out)) return ZE_INVALID;
    if (n == 0) return ZE_OK;
    if (g->kind == ZIMAGE_RNG_CPU) {
        cpu_randn(g, out, n);
        return ZE_OK;
    }
    if (g->kind == ZIMAGE_RNG_CUDA) {
        if (n > INT32_MAX) return ZE_UNSUPPORTED;
        cuda_randn(g, out, n);
        return ZE_OK;
    }
    return ZE_INVALID;
}

int zrng_randn(int kind, uint64_t seed, float *out, int64_t n) {
    zrng g;
    ZTRY(zrng_init(&g, kind, seed));
    return zrng_randn_next(&g, out, n);
}
