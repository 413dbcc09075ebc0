/* cpu_attention.c - attention and the fused q/k/v split + per-head RMSNorm +
 * RoPE of the CPU backend.
 *
 * attention: q [B, Nq, hq*d], k, v [B, Nk, hkv*d] -> o [B, Nq, hq*d].
 *   Query head h reads kv head h / (hq/hkv) (GQA).  Keys j >= kv_len[b] and,
 *   when causal, keys j > i are masked.  The B*hq*Nq*Nk score tensor is never
 *   built: one task = (b, h, block of `blk` queries); a task computes its
 *   score block S[blk, nk] = scale * Q K^T with one sgemm (nk = keys the block
 *   can see), a numerically stable softmax per row in f32 (max subtracted,
 *   sum in double, multiplied by 1/sum like ATen), then O = P V with a second
 *   sgemm.  Heads are strided views of the [N, H*d] rows (lda = H*d), so F32
 *   tensors are used in place; other dtypes are converted per task.
 *   Tasks run on the OpenMP threads, each with its own score block
 *   (blk * Nk <= ZCPU_SCORE_FLOATS) in ZCPU_SCR_THREAD.
 *
 * qkv_norm_rope: qkv [R, (hq + 2*hkv)*d] -> q [R, hq*d], k, v [R, hkv*d].
 *   Per head of q and k: RMSNorm over d (r = 1/sqrt(f32(mean(x^2)) + eps),
 *   x*r*w), then RoPE with row r's tables cos/sin [R, d/2]:
 *     ZROPE_ADJACENT  (x_2j, x_2j+1) <- (x_2j c_j - x_2j+1 s_j, x_2j s_j + x_2j+1 c_j)
 *     ZROPE_HALF      (x_j, x_j+d/2) <- (x_j c_j - x_j+d/2 s_j, x_j+d/2 c_j + x_j s_j)
 *   v is copied (dtype converted). */
#include <math.h>
#include <omp.h>

#include "cpu_internal.h"

/* ---- attention ---------------------------------------------------------------- */

/* Sum of n floats: 16 f32 lanes (vectorizable), folded into a double every
 * 256 values, so the error stays at double-sum level. */
static double sum_f32(const float *s, int64_t n) {
    double sum = 0;
    for (int64_t j0 = 0; j0 < n; j0 += 256) {
        float lane[16] = {0};
        int64_t j1 = j0 + 256 < n ? j0 + 256 : n, j = j0;
        for (; j + 16 <= j1; j += 16)
            for (int l = 0; l < 16; l++) lane[l] += s[j + l];
        for (; j < j1; j++) lane[0] += s[j];
        for (int l = 0; l < 16; l++) sum += lane[l];
    }
    return sum;
}

/* softmax of row s[0, n) in place (max subtracted, f32 exp, sum in double,
 * times 1/sum like ATen); [n, ld) is zeroed (masked keys). */
static void softmax_row(float *s, int64_t n, int64_t ld) {
    zcpu_vexp_sub(s, n, zcpu_vmax(s, n));
    float inv = 1.0f / (float)sum_f32(s, n);
    for (int64_t j = 0; j < n; j++) s[j] *= inv;
    for (int64_t j = n; j < ld; j++) s[j] = 0.0f;
}

void zcpu_attention(zbackend *be, zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv,
                    const int32_t *kv_len, int causal, float scale) {
    int64_t B = q->ne[0], Nq = q->ne[1], Nk = k->ne[1], d = q->ne[2] / hq;
    int64_t ldq = hq * d, ldk = hkv * d;
    int grp = hq / hkv;
    if (B == 0 || Nq == 0) return;
    int64_t blk = ZCPU_SCORE_FLOATS / (Nk > 0 ? Nk : 1);
    if (blk > 256) blk = 256;
    if (blk < 1) blk = 1;
    /* enough tasks for every thread */
    int64_t nblk = (Nq + blk - 1) / blk;
    while (blk > 16 && B * hq * nblk < 4 * be->threads) {
        blk = (blk + 1) / 2;
        nblk = (Nq + blk - 1) / blk;
    }
    int generic = q->dtype != ZT_F32 || k->dtype != ZT_F32 || v->dtype != ZT_F32 || o->dtype != ZT_F32;
    /* per-thread: scores [blk, Nk]; generic dtypes also Q, O [blk, d] and K, V [Nk, d] */
    int64_t per = blk * Nk + (generic ? 2 * blk * d + 2 * Nk * d : 0);
    size_t slice = zcpu_slice((size_t)per * 4);
    char *bufs = zcpu_scratch(be, ZCPU_SCR_THREAD, slice * (size_t)be->threads);
    if (!bufs) return;
    int64_t ntask = B * hq * nblk;
#pragma omp parallel for schedule(dynamic, 1) num_threads(be->threads)
    for (int64_t t = 0; t < ntask; t++) {
        int64_t b = t / (hq * nblk), h = (t / nblk) % hq, i0 = (t % nblk) * blk;
        int64_t nb = Nq - i0 < blk ? Nq - i0 : blk, g = h / grp;
        int64_t kvl = kv_len ? kv_len[b] : Nk;
        int64_t nk = causal && i0 + nb < kvl ? i0 + nb : kvl; /* keys this block can see */
        float *S = (float *)(bufs + slice * (size_t)omp_get_thread_num());
        int64_t qoff = (b * Nq + i0) * ldq + h * d, koff = b * Nk * ldk + g * d;
        const float *Q, *K, *V;
        float *O;
        int64_t lq = ldq, lk = ldk, lo = ldq;
        if (!generic) {
            Q = (const float *)q->data + qoff;
            K = (const float *)k->data + koff;
            V = (const float *)v->data + koff;
            O = (float *)o->data + qoff;
        } else {
            float *Qb = S + blk * Nk, *Ob = Qb + blk * d, *Kb = Ob + blk * d, *Vb = Kb + Nk * d;
            for (int64_t i = 0; i < nb; i++) zcpu_widen(Qb + i * d, zcpu_at(q, qoff + i * ldq), q->dtype, d);
            for (int64_t j = 0; j < nk; j++) {
                zcpu_widen(Kb + j * d, zcpu_at(k, koff + j * ldk), k->dtype, d);
                zcpu_widen(Vb + j * d, zcpu_at(v, koff + j * ldk), v->dtype, d);
            }
            Q = Qb, K = Kb, V = Vb, O = Ob;
            lq = lk = lo = d;
        }
        /* S = scale * Q K^T  [nb, nk] */
        zcpu_sgemm1(nb, nk, d, scale, Q, lq, K, lk, 1, 0.0f, S, nk);
        for (int64_t i = 0; i < nb; i++) {
            int64_t lim = causal && i0 + i + 1 < nk ? i0 + i + 1 : nk;
            softmax_row(S + i * nk, lim, nk);
        }
        /* O = P V  [nb, d] */
        zcpu_sgemm1(nb, d, nk, 1.0f, S, nk, V, lk, 0, 0.0f, O, lo);
        if (generic)
            for (int64_t i = 0; i < nb; i++) zcpu_narrow(zcpu_at(o, qoff + i * ldq), o->dtype, O + i * d, d);
    }
}

/* ---- q/k/v split + per-head RMSNorm + RoPE --------------------------------------- */

/* Per-head RMSNorm (w may be NULL) then RoPE (c, s: d/2 values, NULL: none). */
static void norm_rope_head(float *x, int64_t d, const float *w, float eps, const float *c, const float *s,
                           zrope_pairing pairing) {
    if (w) {
        double ss = 0;
        for (int64_t j = 0; j < d; j++) ss += (double)x[j] * x[j];
        float rf = 1.0f / sqrtf((float)(ss / (double)d) + eps);
        for (int64_t j = 0; j < d; j++) x[j] = (x[j] * rf) * w[j];
    }
    if (!c) return;
    int64_t h = d / 2;
    if (pairing == ZROPE_ADJACENT) {
        for (int64_t j = 0; j < h; j++) {
            float re = x[2 * j], im = x[2 * j + 1];
            x[2 * j] = re * c[j] - im * s[j];
            x[2 * j + 1] = re * s[j] + im * c[j];
        }
    } else {
        for (int64_t j = 0; j < h; j++) {
            float a = x[j], b = x[j + h];
            x[j] = a * c[j] - b * s[j];
            x[j + h] = b * c[j] + a * s[j];
        }
    }
}

void zcpu_qkv_norm_rope(zbackend *be, zt *q, zt *k, zt *v, const zt *qkv, const zt *wq, const zt *wk,
                        const zt *cos, const zt *sin, int hq, int hkv, float eps, zrope_pairing pairing) {
    int64_t R = zt_rows(qkv), W = zt_cols(qkv), d = W / (hq + 2 * hkv);
    size_t slice = zcpu_slice((size_t)W * 4);
    char *bufs = zcpu_scratch(be, ZCPU_SCR_THREAD, slice * (size_t)be->threads);
    if (!bufs) return;
    const float *wqv = wq ? wq->data : NULL, *wkv = wk ? wk->data : NULL;
    const float *cv = cos ? cos->data : NULL, *sv = sin ? sin->data : NULL;
#pragma omp parallel for schedule(static) num_threads(be->threads) if (R * W > 32768)
    for (int64_t r = 0; r < R; r++) {
        float *row = (float *)(bufs + slice * (size_t)omp_get_thread_num());
        zcpu_widen(row, zcpu_at(qkv, r * W), qkv->dtype, W);
        const float *cr = cv ? cv + r * (d / 2) : NULL, *sr = sv ? sv + r * (d / 2) : NULL;
        for (int64_t h = 0; h < hq; h++) norm_rope_head(row + h * d, d, wqv, eps, cr, sr, pairing);
        for (int64_t h = 0; h < hkv; h++) norm_rope_head(row + (hq + h) * d, d, wkv, eps, cr, sr, pairing);
        zcpu_narrow(zcpu_at(q, r * hq * d), q->dtype, row, hq * d);
        zcpu_narrow(zcpu_at(k, r * hkv * d), k->dtype, row + hq * d, hkv * d);
        zcpu_narrow(zcpu_at(v, r * hkv * d), v->dtype, row + (hq + hkv) * d, hkv * d);
    }
}
