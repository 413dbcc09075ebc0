/* cuda_attention.cu - attention and the fused q/k/v split + per-head RMSNorm +
 * RoPE of the CUDA backend.
 *
 * attention: q [B, Nq, hq*d], k, v [B, Nk, hkv*d] -> o [B, Nq, hq*d]; query
 * head h reads kv head h / (hq/hkv); keys j >= kv_len[b] and (causal) j > i
 * are masked.  kv_len goes to the kernels BY VALUE (a struct of up to 64
 * int32), so a captured graph replays without host data.
 *
 * Dispatch (zcu_attention, at the end): cuDNN's fused kernel (cuda_sdpa.cu;
 * d 64/128, hq == hkv, not causal, kv_len any: the DiT; 657 TFLOP/s on an
 * H200) -> the own flash kernel below (d 64/128: GQA, causal - the text
 * encoder; 304 TFLOP/s) -> the chunked path (any other d: the VAE's 512).
 * ZIMAGE_CUDA_ATTN=flash skips cuDNN, =chunked forces the chunked path.
 *
 *  Flash path (d = 64 or 128, bf16 tensors with 16-byte aligned rows): an
 *  FA2-style tensor-core kernel, no N x N matrix anywhere.
 *    CTA = 128 query rows of one (b, h); 4 warps x 32 rows (2 m16 tiles
 *    each, so every K/V fragment read from shared memory feeds two MMAs).
 *    Keys in tiles of 64: S = Q K^T with mma.sync m16n8k16 (bf16 in, fp32
 *    accumulate), online softmax in fp32 in the log2 domain (ex2.approx),
 *    P rounded to bf16 in registers (the S accumulator layout is the A
 *    operand layout) and O += P V.  Q, K, V tiles arrive by cp.async
 *    (16 B, zero-filled past the ends) into XOR-swizzled shared memory
 *    (16-byte chunk c of row r stored at c ^ (r & 7): conflict-free ldmatrix);
 *    V(j) loads while S(j) is computed, K(j+1) while P V(j) is.  The output
 *    is staged through the warp's own Q rows and written as 16-byte chunks.
 *    Shared memory: (128 + 2*64) * d * 2 bytes (64 KiB for d = 128).
 *  Chunked path (any other d, e.g. the VAE's single 512-wide head, or
 *  ZIMAGE_CUDA_ATTN=chunked): per (b, h) and chunk of qc query rows,
 *    S = Q K^T (cuBLASLt, f32) -> row softmax (scale, masks) -> P bf16 ->
 *    O = P V (cuBLASLt); scratch qc * Nk * 6 bytes (<= ~96 MiB), never N x N.
 *  Non-bf16 q/k/v/o go through bf16 copies in scratch.
 *
 * qkv_norm_rope: split of the fused qkv [R, (hq+2hkv)*d] into q, k, v; q/k
 * heads: RMSNorm over d (fp32, r = 1/sqrt(mean(x^2) + eps), x*r*w) then the rotation with row r's cos/sin [R, d/2] (F32):
 *   ADJACENT (x_2j, x_2j+1), HALF (x_j, x_j+d/2):  (a, b) <- (a c - b s, a s + b c)
 * v heads are copied.  d = 128 bf16 (DiT, Qwen3) takes a vectorized kernel
 * (k_qkv_d128: a block per row, 16 lanes per head, 16-byte accesses); other
 * shapes and dtypes a generic one (a warp per (row, head), two passes over
 * the head, scalar loads). */
#include <math.h>

#include "cuda_internal.cuh"

/* ---- qkv split + norm + rope ---------------------------------------------------------- */

__global__ void k_qkv_norm_rope(void *q, int qdt, void *k, int kdt, void *v, int vdt, const void *qkv, int idt,
                                int64_t R, int hq, int hkv, int d, const float *wq, const float *wk, const float *cs,
                                const float *sn, float eps, int pairing) {
    int H3 = hq + 2 * hkv, lane = threadIdx.x & 31;
    int64_t gw = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (gw >= R * H3) return;
    int64_t r = gw / H3;
    int hh = (int)(gw % H3), half = d / 2;
    int64_t src = r * (int64_t)H3 * d + (int64_t)hh * d;
    void *dst;
    int ddt;
    int64_t doff;
    const float *w;
    if (hh < hq) {
        dst = q, ddt = qdt, doff = r * (int64_t)hq * d + (int64_t)hh * d, w = wq;
    } else if (hh < hq + hkv) {
        dst = k, ddt = kdt, doff = r * (int64_t)hkv * d + (int64_t)(hh - hq) * d, w = wk;
    } else {
        int64_t o = r * (int64_t)hkv * d + (int64_t)(hh - hq - hkv) * d;
        for (int j = lane; j < d; j += 32) zst(v, vdt, o + j, zld(qkv, idt, src + j));
        return;
    }
    float rf = 1.0f;
    if (w) {
        float ss = 0.0f;
        for (int j = lane; j < d; j += 32) {
            float x = zld(qkv, idt, src + j);
            ss += x * x;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        rf = 1.0f / sqrtf(ss / (float)d + eps);
    }
    for (int j = lane; j < half; j += 32) {
        int ia = pairing == ZROPE_ADJACENT ? 2 * j : j, ib = pairing == ZROPE_ADJACENT ? 2 * j + 1 : j + half;
        float a = zld(qkv, idt, src + ia), b = zld(qkv, idt, src + ib);
        if (w) {
            a = (a * rf) * w[ia];
            b = (b * rf) * w[ib];
        }
        if (cs) {
            float c = cs[r * half + j], s = sn[r * half + j];
            float na = a * c - b * s, nb = a * s + b * c;
            a = na, b = nb;
        }
        zst(dst, ddt, doff + ia, a);
        zst(dst, ddt, doff + ib, b);
    }
}

/* Fast path: d = 128, all bf16, 16-byte aligned rows.  One block per row;
 * the row's (hq + 2 hkv) * 16 sixteen-byte vectors (8 values each) are dealt
 * out so that vector u = t + m*T (T = blockDim, a multiple of 32) goes to
 * thread t: 16 consecutive lanes hold one head, the RMSNorm sum is a 16-lane
 * shuffle and every vector of a thread has the same place in its head
 * (u % 16 = t % 16), so its cos/sin values are loaded once per row.  All of a
 * thread's loads (QKV_VEC vectors) are issued before any arithmetic.
 *   ADJACENT: lane l holds pairs 4l..4l+3 (elements 8l..8l+7);
 *   HALF: lanes l < 8 hold elements 8l..8l+7, lanes l + 8 their partners
 *   8l+64..8l+71 (one shfl_xor 8 exchanges them).
 * (v2, a warp per head with 8-byte accesses: 0.083 ms at 4224x11520 on an
 * H200, 2.4 TB/s, too few bytes in flight per SM; this one 0.059 ms, 3.3 TB/s.) */
#define QKV_VEC 3

__global__ void k_qkv_d128(__nv_bfloat16 *q, __nv_bfloat16 *k, __nv_bfloat16 *v, const __nv_bfloat16 *qkv, int hq,
                           int hkv, const float *wq, const float *wk, const float *cs, const float *sn, float eps,
                           int pairing) {
    const int H3 = hq + 2 * hkv, T = blockDim.x, t = threadIdx.x, l = t & 15;
    const int64_t r = blockIdx.x, nvec = (int64_t)H3 * 16;
    const int adj = pairing == ZROPE_ADJACENT;
    float c8[8], s8[8];
    if (cs) {
        const float *cr = cs + r * 64, *sr = sn + r * 64;
        if (adj) {
            float4 c = *(const float4 *)(cr + 4 * l), sv = *(const float4 *)(sr + 4 * l);
            c8[0] = c.x, c8[1] = c.y, c8[2] = c.z, c8[3] = c.w, s8[0] = sv.x, s8[1] = sv.y, s8[2] = sv.z, s8[3] = sv.w;
        } else {
            const int p0 = 8 * (l & 7);
#pragma unroll
            for (int i = 0; i < 8; i++) c8[i] = cr[p0 + i], s8[i] = sr[p0 + i];
        }
    }
    for (int64_t u0 = t; u0 - t < nvec; u0 += (int64_t)QKV_VEC * T) {
        uint4 raw[QKV_VEC];
#pragma unroll
        for (int m = 0; m < QKV_VEC; m++) {
            int64_t u = u0 + (int64_t)m * T;
            raw[m] = u < nvec ? *(const uint4 *)(qkv + r * nvec * 8 + u * 8) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int m = 0; m < QKV_VEC; m++) {
            int64_t u = u0 + (int64_t)m * T;
            int hh = (int)(u / 16); /* >= H3 past the end: computes on zeros, stores nothing */
            float a[8];
            zld8(raw + m, ZT_BF16, 0, a);
            __nv_bfloat16 *dst;
            const float *w;
            if (hh < hq) {
                dst = q + r * (int64_t)hq * 128 + (int64_t)hh * 128, w = wq;
            } else if (hh < hq + hkv) {
                dst = k + r * (int64_t)hkv * 128 + (int64_t)(hh - hq) * 128, w = wk;
            } else {
                dst = hh < H3 ? v + r * (int64_t)hkv * 128 + (int64_t)(hh - hq - hkv) * 128 : NULL, w = NULL;
            }
            const int rot = hh < hq + hkv; /* q and k heads; uniform across the 16 lanes */
            /* shuffles run on every lane: a warp may hold a q/k head and a v head */
            float ss = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) ss += a[i] * a[i];
#pragma unroll
            for (int o = 8; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
            if (rot && w) {
                float rf = 1.0f / sqrtf(ss / 128.0f + eps);
#pragma unroll
                for (int i = 0; i < 8; i++) a[i] = (a[i] * rf) * w[8 * l + i];
            }
            if (cs && !adj) { /* partner values from lane l ^ 8 (all lanes take part) */
                float b[8];
#pragma unroll
                for (int i = 0; i < 8; i++) b[i] = __shfl_xor_sync(0xffffffffu, a[i], 8);
                if (rot) {
#pragma unroll
                    for (int i = 0; i < 8; i++) /* l < 8: (a, b) = (x_j, x_j+64); else (b, a) */
                        a[i] = l < 8 ? a[i] * c8[i] - b[i] * s8[i] : b[i] * s8[i] + a[i] * c8[i];
                }
            } else if (cs && rot) {
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float x0 = a[2 * i], x1 = a[2 * i + 1];
                    a[2 * i] = x0 * c8[i] - x1 * s8[i];
                    a[2 * i + 1] = x0 * s8[i] + x1 * c8[i];
                }
            }
            if (dst) {
                if (rot) {
                    zst8(dst, ZT_BF16, 8 * l, a);
                } else {
                    *(uint4 *)(dst + 8 * l) = raw[m];
                }
            }
        }
    }
}

void zcu_qkv_norm_rope(zbackend *be, zt *q, zt *k, zt *v, const zt *qkv, const zt *wq, const zt *wk, const zt *cos,
                       const zt *sin, int hq, int hkv, float eps, zrope_pairing pairing) {
    int64_t R = zt_rows(qkv), W = zt_cols(qkv);
    int d = (int)(W / (hq + 2 * hkv));
    int64_t warps = R * (hq + 2 * hkv);
    if (warps == 0) return;
    const float *wqp = wq ? (const float *)wq->data : NULL, *wkp = wk ? (const float *)wk->data : NULL;
    const float *cp = cos ? (const float *)cos->data : NULL, *sp = sin ? (const float *)sin->data : NULL;
    unsigned blocks = (unsigned)((warps + 7) / 8);
    const zt *ts[4] = {q, k, v, qkv};
    int fast = d == 128 && (!cp || (zcu_aligned16(cp) && zcu_aligned16(sp)));
    for (int i = 0; i < 4; i++) fast = fast && ts[i]->dtype == ZT_BF16 && zcu_aligned16(ts[i]->data);
    if (fast) { /* T: 16 lanes per head, QKV_VEC vectors per thread, whole warps, <= 1024 */
        int64_t T = (16 * (((int64_t)hq + 2 * hkv + QKV_VEC - 1) / QKV_VEC) + 31) / 32 * 32;
        if (T > 1024) T = 1024;
        k_qkv_d128<<<(unsigned)R, (unsigned)T, 0, ZC(be)->stream>>>(
            (__nv_bfloat16 *)q->data, (__nv_bfloat16 *)k->data, (__nv_bfloat16 *)v->data,
            (const __nv_bfloat16 *)qkv->data, hq, hkv, wqp, wkp, cp, sp, eps, (int)pairing);
        LAUNCH_OK(be, "k_qkv_d128");
        return;
    }
    k_qkv_norm_rope<<<blocks, 256, 0, ZC(be)->stream>>>(q->data, q->dtype, k->data, k->dtype, v->data, v->dtype,
                                                        qkv->data, qkv->dtype, R, hq, hkv, d, wqp, wkp, cp, sp, eps,
                                                        (int)pairing);
    LAUNCH_OK(be, "k_qkv_norm_rope");
}

/* ---- flash attention (mma.sync) --------------------------------------------------------- */

#define FA_BM 128 /* query rows per CTA                */
#define FA_BN 64  /* keys per tile                      */
#define FA_THREADS 128
#define FA_MAXB ZCU_MAXB /* samples per launch (kv_len by value) */

typedef struct {
    const __nv_bfloat16 *q, *k, *v;
    __nv_bfloat16 *o;
    int64_t ldq, ldk, ldo; /* row strides (elements)                 */
    int64_t sq, sk, so;    /* sample strides (elements)              */
    int nq, nk, hq, grp, causal, has_len;
    float scale_log2;
} fa_params;


__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void cp_async16(uint32_t saddr, const void *g, int valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr), "l"(g), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all(void) { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldsm_x4(uint32_t *r, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void mma_bf16(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&h;
}

/* Byte offset of 16-byte chunk c of row r in a swizzled tile of D bf16 per row. */
__device__ __forceinline__ uint32_t swz(int r, int c, int D) { return (uint32_t)(r * D * 2 + ((c ^ (r & 7)) << 4)); }

/* rows [0, rows) of a tile from global (row stride ld elements), rows >= valid zero-filled. */
__device__ __forceinline__ void load_tile(uint32_t sbase, const __nv_bfloat16 *g, int64_t ld, int rows, int valid,
                                          int D) {
    const int C = D / 8;
    for (int i = threadIdx.x; i < rows * C; i += FA_THREADS) {
        int r = i / C, c = i % C;
        int ok = r < valid;
        const __nv_bfloat16 *src = g + (ok ? (int64_t)r * ld + c * 8 : 0);
        cp_async16(sbase + swz(r, c, D), src, ok);
    }
}

/* The kernel body; D is a compile-time constant at each call site (64, 128). */
__device__ __forceinline__ void fa_body(const fa_params &p, const zcu_lens &kl, const int D) {
    extern __shared__ __align__(128) unsigned char fa_smem[];
    const int NT = D / 8; /* 8-wide d tiles */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int q0 = blockIdx.x * FA_BM, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / p.grp;
    const int kvl = p.has_len ? kl.v[b] : p.nk;
    int n_end = kvl;
    if (p.causal && q0 + FA_BM < n_end) n_end = q0 + FA_BM;
    const int ntiles = (n_end + FA_BN - 1) / FA_BN;

    const uint32_t sQ = smem_u32(fa_smem), sK = sQ + FA_BM * D * 2, sV = sK + FA_BN * D * 2;
    const __nv_bfloat16 *gq = p.q + (int64_t)b * p.sq + (int64_t)q0 * p.ldq + (int64_t)h * D;
    const __nv_bfloat16 *gk = p.k + (int64_t)b * p.sk + (int64_t)kvh * D;
    const __nv_bfloat16 *gv = p.v + (int64_t)b * p.sk + (int64_t)kvh * D;

    load_tile(sQ, gq, p.ldq, FA_BM, p.nq - q0, D);
    cp_async_commit();
    load_tile(sK, gk, p.ldk, FA_BN, n_end, D);
    cp_async_commit();

    float acc_o[2][16][4];
    float m_r[2][2], l_r[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int n = 0; n < NT; n++) acc_o[mt][n][0] = acc_o[mt][n][1] = acc_o[mt][n][2] = acc_o[mt][n][3] = 0.0f;
        m_r[mt][0] = m_r[mt][1] = -INFINITY;
        l_r[mt][0] = l_r[mt][1] = 0.0f;
    }
    const int g = lane >> 2, t = lane & 3;
    const int wrow = warp * 32; /* first row of this warp in the CTA */

    for (int j = 0; j < ntiles; j++) {
        const int k0 = j * FA_BN;
        cp_async_wait_all();
        __syncthreads();
        load_tile(sV, gv + (int64_t)k0 * p.ldk, p.ldk, FA_BN, n_end - k0, D);
        cp_async_commit();

        /* S = Q K^T for this warp's 32 rows x 64 keys */
        float s[2][8][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int n = 0; n < 8; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            uint32_t a[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                ldsm_x4(a[mt], sQ + swz(wrow + mt * 16 + (lane & 15), ks * 2 + (lane >> 4), D));
#pragma unroll
            for (int np = 0; np < 4; np++) {
                uint32_t bk[4];
                ldsm_x4(bk, sK + swz(np * 16 + ((lane >> 4) << 3) + (lane & 7), ks * 2 + ((lane >> 3) & 1), D));
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma_bf16(s[mt][2 * np], a[mt], bk[0], bk[1]);
                    mma_bf16(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
                }
            }
        }
        /* masks: keys past kv_len, and (causal) keys after the query */
        const int need_mask = (k0 + FA_BN > kvl) || (p.causal && k0 + FA_BN - 1 > q0 + wrow);
        if (need_mask) {
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int n = 0; n < 8; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int key = k0 + n * 8 + 2 * t + (e & 1);
                        int row = q0 + wrow + mt * 16 + g + ((e >> 1) << 3);
                        if (key >= kvl || (p.causal && key > row)) s[mt][n][e] = -INFINITY;
                    }
        }
        /* online softmax (log2 domain) */
        uint32_t pa[2][4][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                float mx = -INFINITY;
#pragma unroll
                for (int n = 0; n < 8; n++) mx = fmaxf(mx, fmaxf(s[mt][n][2 * hr], s[mt][n][2 * hr + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                float m_new = fmaxf(m_r[mt][hr], mx * p.scale_log2);
                float m_use = m_new == -INFINITY ? 0.0f : m_new;
                float corr = ex2(m_r[mt][hr] - m_use);
                m_r[mt][hr] = m_new;
                float sum = 0.0f;
#pragma unroll
                for (int n = 0; n < 8; n++) {
                    float p0 = ex2(fmaf(s[mt][n][2 * hr], p.scale_log2, -m_use));
                    float p1 = ex2(fmaf(s[mt][n][2 * hr + 1], p.scale_log2, -m_use));
                    s[mt][n][2 * hr] = p0;
                    s[mt][n][2 * hr + 1] = p1;
                    sum += p0 + p1;
                }
                l_r[mt][hr] = l_r[mt][hr] * corr + sum;
#pragma unroll
                for (int n = 0; n < NT; n++) {
                    acc_o[mt][n][2 * hr] *= corr;
                    acc_o[mt][n][2 * hr + 1] *= corr;
                }
            }
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                pa[mt][kk][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][kk][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][kk][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][kk][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
        }
        cp_async_wait_all();
        __syncthreads();
        if (j + 1 < ntiles) {
            load_tile(sK, gk + (int64_t)(k0 + FA_BN) * p.ldk, p.ldk, FA_BN, n_end - k0 - FA_BN, D);
            cp_async_commit();
        }
        /* O += P V */
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
#pragma unroll
            for (int dp = 0; dp < NT / 2; dp++) {
                uint32_t bv[4];
                ldsm_x4_t(bv, sV + swz(kk * 16 + (lane & 15), 2 * dp + (lane >> 4), D));
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma_bf16(acc_o[mt][2 * dp], pa[mt][kk], bv[0], bv[1]);
                    mma_bf16(acc_o[mt][2 * dp + 1], pa[mt][kk], bv[2], bv[3]);
                }
            }
        }
    }

    /* finalize: O / l, staged through this warp's own rows of sQ */
    unsigned char *sq_bytes = fa_smem;
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            float l = l_r[mt][hr];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            float inv = l > 0.0f ? 1.0f / l : 0.0f;
            int row = wrow + mt * 16 + g + hr * 8;
#pragma unroll
            for (int n = 0; n < NT; n++) {
                uint32_t v = pack_bf16(acc_o[mt][n][2 * hr] * inv, acc_o[mt][n][2 * hr + 1] * inv);
                *(uint32_t *)(sq_bytes + swz(row, n, D) + t * 4) = v;
            }
        }
    }
    __syncwarp();
    __nv_bfloat16 *go = p.o + (int64_t)b * p.so + (int64_t)q0 * p.ldo + (int64_t)h * D;
    const int C = D / 8;
    for (int i = lane; i < 32 * C; i += 32) {
        int r = wrow + i / C, c = i % C;
        if (q0 + r < p.nq) *(uint4 *)(go + (int64_t)r * p.ldo + c * 8) = *(const uint4 *)(sq_bytes + swz(r, c, D));
    }
}

__global__ void __launch_bounds__(FA_THREADS, 2) k_flash_d128(fa_params p, zcu_lens kl) { fa_body(p, kl, 128); }
__global__ void __launch_bounds__(FA_THREADS, 2) k_flash_d64(fa_params p, zcu_lens kl) { fa_body(p, kl, 64); }

static int flash_ok(const zt *q, const zt *k, const zt *v, const zt *o, int64_t d) {
    if (d != 64 && d != 128) return 0;
    const zt *ts[4] = {q, k, v, o};
    for (int i = 0; i < 4; i++)
        if (ts[i]->dtype != ZT_BF16 || !zcu_aligned16(ts[i]->data) || (ts[i]->ne[2] * 2) % 16) return 0;
    return 1;
}

static void flash_launch(zbackend *be, const zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv,
                         const int32_t *kv_len, int causal, float scale) {
    zcuda *zc = ZC(be);
    int64_t B = q->ne[0], Nq = q->ne[1], Nk = k->ne[1], d = q->ne[2] / hq;
    size_t smem = (size_t)(FA_BM + 2 * FA_BN) * (size_t)d * 2;
    static int attr_done[2];
    int which = d == 128;
    if (!attr_done[which]) {
        if (!CUDA_OK(be, cudaFuncSetAttribute(which ? (const void *)k_flash_d128 : (const void *)k_flash_d64,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
            return;
        attr_done[which] = 1;
    }
    fa_params p;
    p.ldq = q->ne[2], p.ldk = k->ne[2], p.ldo = o->ne[2];
    p.sq = Nq * p.ldq, p.sk = Nk * p.ldk, p.so = Nq * p.ldo;
    p.nq = (int)Nq, p.nk = (int)Nk, p.hq = hq, p.grp = hq / hkv, p.causal = causal, p.has_len = kv_len != NULL;
    p.scale_log2 = scale * 1.4426950408889634f;
    for (int64_t b0 = 0; b0 < B; b0 += FA_MAXB) {
        int nb = (int)(B - b0 < FA_MAXB ? B - b0 : FA_MAXB);
        zcu_lens kl;
        memset(&kl, 0, sizeof kl);
        for (int i = 0; i < nb && kv_len; i++) kl.v[i] = kv_len[b0 + i];
        fa_params pb = p;
        pb.q = (const __nv_bfloat16 *)q->data + b0 * p.sq;
        pb.k = (const __nv_bfloat16 *)k->data + b0 * p.sk;
        pb.v = (const __nv_bfloat16 *)v->data + b0 * p.sk;
        pb.o = (__nv_bfloat16 *)o->data + b0 * p.so;
        dim3 grid((unsigned)((Nq + FA_BM - 1) / FA_BM), (unsigned)hq, (unsigned)nb);
        if (which)
            k_flash_d128<<<grid, FA_THREADS, smem, zc->stream>>>(pb, kl);
        else
            k_flash_d64<<<grid, FA_THREADS, smem, zc->stream>>>(pb, kl);
        if (!LAUNCH_OK(be, "k_flash")) return;
    }
}

/* ---- chunked path: GEMM -> softmax -> GEMM ------------------------------------------------- */

/* Row i of S [rows, ld] (f32, nk valid columns) -> P (bf16, same ld):
 * p_j = exp(scale*s_j - max) / sum over visible j (j < lim_i), 0 elsewhere. */
__global__ void k_softmax_rows(const float *S, __nv_bfloat16 *P, int64_t ld, int nk, float scale, int causal,
                               int row0) {
    __shared__ float red[32];
    int64_t i = blockIdx.x;
    const float *s = S + i * ld;
    __nv_bfloat16 *pr = P + i * ld;
    int lim = causal ? min(nk, row0 + (int)i + 1) : nk;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < lim; j += blockDim.x) mx = fmaxf(mx, s[j]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = -INFINITY;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) mx = fmaxf(mx, red[w]);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < lim; j += blockDim.x) sum += expf((s[j] - mx) * scale);
    sum = zblock_sum(sum, red);
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int j = threadIdx.x; j < (int)ld; j += blockDim.x)
        pr[j] = __float2bfloat16(j < lim ? expf((s[j] - mx) * scale) * inv : 0.0f);
}

static void chunked(zbackend *be, const zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv,
                    const int32_t *kv_len, int causal, float scale) {
    zcuda *zc = ZC(be);
    int64_t B = q->ne[0], Nq = q->ne[1], Nk = k->ne[1], d = q->ne[2] / hq;
    int64_t ldq = q->ne[2], ldk = k->ne[2], ldo = o->ne[2];
    int grp = hq / hkv;
    int64_t ld = (Nk + 7) / 8 * 8;
    int64_t qc = ((int64_t)96 << 20) / (ld * 6);
    qc = qc >= 64 ? qc / 64 * 64 : (qc < 1 ? 1 : qc);
    if (qc > Nq) qc = Nq;
    float *S = (float *)zcu_scratch(be, ZCU_SCR_ATTS, (size_t)(qc * ld) * 4);
    __nv_bfloat16 *P = (__nv_bfloat16 *)zcu_scratch(be, ZCU_SCR_ATTP, (size_t)(qc * ld) * 2);
    if (!S || !P) return;
    const __nv_bfloat16 *Q = (const __nv_bfloat16 *)q->data, *K = (const __nv_bfloat16 *)k->data,
                        *V = (const __nv_bfloat16 *)v->data;
    __nv_bfloat16 *O = (__nv_bfloat16 *)o->data;
    for (int64_t b = 0; b < B; b++) {
        int64_t kvl = kv_len ? kv_len[b] : Nk;
        for (int h = 0; h < hq; h++) {
            int64_t g = h / grp;
            for (int64_t i0 = 0; i0 < Nq; i0 += qc) {
                int64_t m = Nq - i0 < qc ? Nq - i0 : qc;
                int64_t nk = causal && i0 + m < kvl ? i0 + m : kvl; /* keys this chunk can see */
                zcu_gemm_args a;
                memset(&a, 0, sizeof a);
                a.M = m, a.N = nk, a.K = d;
                a.x = Q + (b * Nq + i0) * ldq + h * d, a.ldx = ldq;
                a.w = K + b * Nk * ldk + g * d, a.ldw = ldk, a.w_kn = 0;
                a.y = S, a.ldy = ld, a.ydt = ZT_F32, a.alpha = 1.0f, a.beta = 0.0f;
                if (zcu_gemm(be, &a)) return;
                k_softmax_rows<<<(unsigned)m, 256, 0, zc->stream>>>(S, P, ld, (int)nk, scale, causal, (int)i0);
                if (!LAUNCH_OK(be, "k_softmax_rows")) return;
                memset(&a, 0, sizeof a);
                a.M = m, a.N = d, a.K = nk;
                a.x = P, a.ldx = ld;
                a.w = V + b * Nk * ldk + g * d, a.ldw = ldk, a.w_kn = 1;
                a.y = O + (b * Nq + i0) * ldo + h * d, a.ldy = ldo, a.ydt = ZT_BF16, a.alpha = 1.0f, a.beta = 0.0f;
                if (zcu_gemm(be, &a)) return;
            }
        }
    }
}

/* ---- the op ---------------------------------------------------------------------------------- */

/* bf16 copy of t in scratch at *off (256-aligned), or t itself if already bf16. */
static zt as_bf16(zbackend *be, const zt *t, char *base, size_t *off, int copy) {
    zt r = *t;
    if (t->dtype == ZT_BF16) return r;
    r.dtype = ZT_BF16;
    r.data = base + *off;
    *off += ((size_t)zt_numel(t) * 2 + 255) & ~(size_t)255;
    if (copy) zcu_convert(be, r.data, ZT_BF16, t->data, t->dtype, zt_numel(t));
    return r;
}

void zcu_attention(zbackend *be, zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv,
                   const int32_t *kv_len, int causal, float scale) {
    zcuda *zc = ZC(be);
    int64_t B = q->ne[0], Nq = q->ne[1], d = q->ne[2] / hq;
    if (B == 0 || Nq == 0) return;
    zt qb = *q, kb = *k, vb = *v, ob = *o;
    if (q->dtype != ZT_BF16 || k->dtype != ZT_BF16 || v->dtype != ZT_BF16 || o->dtype != ZT_BF16) {
        size_t need = 0;
        const zt *ts[4] = {q, k, v, o};
        for (int i = 0; i < 4; i++)
            if (ts[i]->dtype != ZT_BF16) need += ((size_t)zt_numel(ts[i]) * 2 + 255) & ~(size_t)255;
        char *base = (char *)zcu_scratch(be, ZCU_SCR_ATTQ, need);
        if (!base) return;
        size_t off = 0;
        qb = as_bf16(be, q, base, &off, 1);
        kb = as_bf16(be, k, base, &off, 1);
        vb = as_bf16(be, v, base, &off, 1);
        ob = as_bf16(be, o, base, &off, 0);
    }
    if (zc->attn_mode == 0 && zcu_sdpa_cudnn(be, &ob, &qb, &kb, &vb, hq, hkv, kv_len, causal, scale))
        ; /* cuDNN took it */
    else if (zc->attn_mode != 2 && flash_ok(&qb, &kb, &vb, &ob, d))
        flash_launch(be, &ob, &qb, &kb, &vb, hq, hkv, kv_len, causal, scale);
    else
        chunked(be, &ob, &qb, &kb, &vb, hq, hkv, kv_len, causal, scale);
    if (ob.data != o->data && be->status == ZE_OK) zcu_convert(be, o->data, o->dtype, ob.data, ZT_BF16, zt_numel(o));
}
