/* rng.h - torch.randn(float32) bit for bit, computed on the CPU.
 *
 * Two generators (spec: shared/spec/torch-rng.md):
 *   ZIMAGE_RNG_CPU  = torch.Generator("cpu").manual_seed(seed): mt19937 seeded
 *                     with seed & 0xFFFFFFFF; numel >= 16 takes the AVX2
 *                     Box-Muller block path (float32, Cephes log/sincos with
 *                     GCC's FMAs), numel < 16 the scalar double path with the
 *                     generator's cached second normal.
 *   ZIMAGE_RNG_CUDA = torch.Generator("cuda").manual_seed(seed): Philox4x32-10
 *                     keyed with the full 64-bit seed, curand_normal4 with
 *                     libdevice logf and the sm_90 MUFU sin/cos model, laid out
 *                     by torch's grid-stride launch for a GPU with `sm_count`
 *                     SMs of `max_threads_per_sm` threads (default 132 x 2048 =
 *                     H100 SXM / H200; values are GPU-independent up to
 *                     256*sm_count*floor(max_threads_per_sm/256) elements,
 *                     270 336 for the default).
 *
 * Only the element count matters, not the shape: out[] is filled in flat
 * row-major order, so a latent [B, 16, H/8, W/8] is one call of B*16*H/8*W/8.
 * Output is always finite and never -0.0.
 *
 * Calls on one zrng continue the stream exactly as consecutive torch.randn
 * calls on the same generator (CPU: mt19937 position and Box-Muller cache;
 * CUDA: the Philox offset, advanced by 4*ceil(numel/(4*threads)) per call).
 * A zrng is plain data (no allocation; copy it to fork a stream); one zrng
 * must not be used by two threads at once.  Large calls use OpenMP threads.
 */
#ifndef ZIMAGE_RNG_H
#define ZIMAGE_RNG_H

#include <stdint.h>

#include "zimage.h" /* ZIMAGE_RNG_CPU, ZIMAGE_RNG_CUDA */

#define ZRNG_MT_N 624

typedef struct zrng {
    int kind;                 /* ZIMAGE_RNG_CPU / ZIMAGE_RNG_CUDA          */
    uint64_t seed;            /* as given to zrng_init                     */
    /* CPU (mt19937) */
    uint32_t mt[ZRNG_MT_N];
    int mti;                  /* next word; ZRNG_MT_N forces a twist       */
    int have_cache;           /* cached normal of the double path          */
    double cache;
    /* CUDA (Philox) */
    uint64_t offset;          /* philox offset in 32-bit outputs (x4)      */
    int sm_count;             /* 132                                       */
    int max_threads_per_sm;   /* 2048                                      */
} zrng;

/* manual_seed(seed) on a fresh generator of the given kind.  Returns 0, or
 * ZE_INVALID for an unknown kind. */
int zrng_init(zrng *g, int kind, uint64_t seed);

/* CUDA kind only: the GPU whose launch geometry to reproduce (matters only
 * above 256*sm_count*floor(max_threads_per_sm/256) elements).  Returns
 * ZE_INVALID for non-positive values. */
int zrng_set_cuda_geometry(zrng *g, int sm_count, int max_threads_per_sm);

/* torch.randn(n, generator=g, dtype=float32) -> out[0..n).  n >= 0.
 * Returns 0; ZE_INVALID for n < 0 or a bad generator; ZE_UNSUPPORTED for a
 * CUDA draw of more than 2^31-1 elements (torch splits those; not modelled). */
int zrng_randn_next(zrng *g, float *out, int64_t n);

/* One draw on a freshly seeded generator: torch.randn(n, generator=
 * torch.Generator(kind).manual_seed(seed)). */
int zrng_randn(int kind, uint64_t seed, float *out, int64_t n);

/* Raw pieces, exposed for tests. */
uint32_t zrng_mt_next(zrng *g);   /* next tempered mt19937 output        */
void zrng_philox(const uint32_t ctr[4], uint32_t k0, uint32_t k1, uint32_t out[4]);

#endif
