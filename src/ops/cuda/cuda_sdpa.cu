/* cuda_sdpa.cu - attention through cuDNN's fused flash-attention engine,
 * built with the cuDNN backend (graph) API in plain C calls.
 *
 * The operation graph is the composite pattern cudnn-frontend builds for
 * SDPA inference (which cuDNN's heuristics map onto its fused kernel):
 *   S  = Q . K^T                      matmul, fp32       [B, H, Nq, Nk]
 *   S  = S * scale                    pointwise MUL (scale by value)
 *  [S  = mask ? S : -inf              GEN_INDEX rows/cols, CMP_LT seq lens,
 *                                     LOGICAL_AND, BINARY_SELECT]   (kv_len)
 *   M  = max_k S;  E = exp(S - M);  Z = sum_k E;  stats = M + log Z (virtual)
 *   P  = E / Z                        bf16 (the I/O type, as the frontend sets)
 *   O  = P . V                        matmul
 * Tensors are strided views of our layouts: Q [B, Nq, H*d] is dims
 * [B, H, Nq, d] with strides [Nq*ldq, d, ldq, 1]; K is passed transposed
 * (dims [B, H, d, Nk], strides [Nk*ldk, d, 1, ldk]).
 * Supported here: bf16, hq == hkv, d in {64, 128}, not causal, kv_len absent
 * or any (then the padding-mask variant with seq_len tensors [B,1,1,1] int32
 * on the device, written by a kernel that takes the lengths by value, so the
 * call stays graph-capturable).  Anything else returns 0 and the caller uses
 * the own flash kernel.  A shape whose graph cuDNN rejects is remembered as
 * unsupported (with the reason, see zcuda_describe) and never retried.
 * Plans (execution plan + its descriptors + workspace size) are cached per
 * shape; a call builds only the variant pack. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_internal.cuh"

#define SD_MAXDESC 72
#define SD_MAXB 64

struct zcu_sdpa_plan {
    int64_t B, H, Nq, Nk, d, ldq, ldk, ldo;
    int masked;
    int state; /* 1 ready, -1 unsupported */
    cudnnBackendDescriptor_t plan;
    cudnnBackendDescriptor_t keep[SD_MAXDESC];
    int nkeep;
    int64_t ws;
    char why[200];
};

void zcu_sdpa_cache_free(zcuda *zc) {
    for (int i = 0; i < zc->sdpa_n; i++) {
        zcu_sdpa_plan *p = &zc->sdpa[i];
        if (p->plan) cudnnBackendDestroyDescriptor(p->plan);
        for (int j = p->nkeep - 1; j >= 0; j--) cudnnBackendDestroyDescriptor(p->keep[j]);
    }
    free(zc->sdpa);
    zc->sdpa = NULL;
    zc->sdpa_n = zc->sdpa_cap = 0;
}

size_t zcu_sdpa_describe(zcuda *zc, char *buf, size_t n) {
    size_t o = 0;
    for (int i = 0; i < zc->sdpa_n && o < n; i++) {
        zcu_sdpa_plan *p = &zc->sdpa[i];
        o += (size_t)snprintf(buf + o, n - o, "  sdpa B%lld H%lld %lldx%lld d%lld%s: %s%s (ws %lld)\n",
                              (long long)p->B, (long long)p->H, (long long)p->Nq, (long long)p->Nk, (long long)p->d,
                              p->masked ? " masked" : "", p->state == 1 ? "cuDNN, " : "UNSUPPORTED by cuDNN: ", p->why,
                              (long long)p->ws);
    }
    return o;
}

/* ---- descriptor building ------------------------------------------------------------ */

typedef struct {
    zcu_sdpa_plan *p;
    cudnnStatus_t st;
} bctx;

static void fail_at(bctx *c, cudnnStatus_t s, const char *what) {
    c->st = s;
    snprintf(c->p->why, sizeof c->p->why, "%s: %s", what, cudnnGetErrorString(s));
}

static cudnnBackendDescriptor_t bd_new(bctx *c, cudnnBackendDescriptorType_t t) {
    if (c->st) return NULL;
    if (c->p->nkeep >= SD_MAXDESC) {
        fail_at(c, CUDNN_STATUS_INTERNAL_ERROR, "too many descriptors");
        return NULL;
    }
    cudnnBackendDescriptor_t d = NULL;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(t, &d);
    if (s) {
        fail_at(c, s, "cudnnBackendCreateDescriptor");
        return NULL;
    }
    c->p->keep[c->p->nkeep++] = d;
    return d;
}

#define SET(c, d, attr, type, n, ptr)                                                    \
    do {                                                                                 \
        if (!(c)->st) {                                                                  \
            cudnnStatus_t s_ = cudnnBackendSetAttribute((d), (attr), (type), (n), (ptr)); \
            if (s_) fail_at((c), s_, #attr);                                             \
        }                                                                                \
    } while (0)
#define FIN(c, d, what)                                       \
    do {                                                      \
        if (!(c)->st) {                                       \
            cudnnStatus_t s_ = cudnnBackendFinalize(d);       \
            if (s_) fail_at((c), s_, "finalize " what);       \
        }                                                     \
    } while (0)

static cudnnBackendDescriptor_t tens(bctx *c, int64_t uid, cudnnDataType_t dt, const int64_t *dim,
                                     const int64_t *str, bool virt, bool byval) {
    cudnnBackendDescriptor_t t = bd_new(c, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    int64_t al = 16;
    SET(c, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    SET(c, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim);
    SET(c, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str);
    SET(c, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    SET(c, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &al);
    SET(c, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt);
    if (byval) SET(c, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &byval);
    FIN(c, t, "tensor");
    return t;
}

/* Pointwise op y = mode(x [, b] [, t]); axis >= 0 for GEN_INDEX. */
static cudnnBackendDescriptor_t pw(bctx *c, cudnnPointwiseMode_t mode, cudnnDataType_t prec,
                                   cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                                   cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y, int64_t axis) {
    cudnnBackendDescriptor_t d = bd_new(c, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    SET(c, d, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    SET(c, d, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
    if (axis >= 0) SET(c, d, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    FIN(c, d, "pointwise desc");
    cudnnBackendDescriptor_t op = bd_new(c, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    SET(c, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
    SET(c, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    if (b) SET(c, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    if (t) SET(c, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t);
    SET(c, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    FIN(c, op, "pointwise op");
    return op;
}

static cudnnBackendDescriptor_t red(bctx *c, cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x,
                                    cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t d = bd_new(c, CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    cudnnDataType_t f = CUDNN_DATA_FLOAT;
    SET(c, d, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
    SET(c, d, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f);
    FIN(c, d, "reduction desc");
    cudnnBackendDescriptor_t op = bd_new(c, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    SET(c, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    SET(c, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    SET(c, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
    FIN(c, op, "reduction op");
    return op;
}

/* Matmul op c = a . b; overrides (seq len tensors) may be NULL. */
static cudnnBackendDescriptor_t mm(bctx *c, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
                                   cudnnBackendDescriptor_t out, cudnnBackendDescriptor_t mo,
                                   cudnnBackendDescriptor_t no, cudnnBackendDescriptor_t ko, int padded) {
    cudnnBackendDescriptor_t d = bd_new(c, CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    cudnnDataType_t f = CUDNN_DATA_FLOAT;
    double padv = 0.0;
    SET(c, d, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f);
    if (padded) SET(c, d, CUDNN_ATTR_MATMUL_PADDING_VALUE, CUDNN_TYPE_DOUBLE, 1, &padv);
    FIN(c, d, "matmul desc");
    cudnnBackendDescriptor_t op = bd_new(c, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    SET(c, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    SET(c, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    SET(c, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &out);
    SET(c, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
    if (mo) SET(c, op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mo);
    if (no) SET(c, op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &no);
    if (ko) SET(c, op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ko);
    FIN(c, op, "matmul op");
    return op;
}

enum { U_Q = 1, U_K, U_V, U_O, U_SCALE, U_SEQQ, U_SEQKV, U_NEGINF, U_VIRT = 100 };

static void build(zbackend *be, zcu_sdpa_plan *p) {
    zcuda *zc = ZC(be);
    bctx c = {p, CUDNN_STATUS_SUCCESS};
    const int64_t B = p->B, H = p->H, Nq = p->Nq, Nk = p->Nk, d = p->d;
    const cudnnDataType_t bf = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT, i32 = CUDNN_DATA_INT32,
                          bo = CUDNN_DATA_BOOLEAN;
    int64_t dq[4] = {B, H, Nq, d}, sq[4] = {Nq * p->ldq, d, p->ldq, 1};
    int64_t dk[4] = {B, H, d, Nk}, sk[4] = {Nk * p->ldk, d, 1, p->ldk};
    int64_t dv[4] = {B, H, Nk, d}, sv[4] = {Nk * p->ldk, d, p->ldk, 1};
    int64_t dO[4] = {B, H, Nq, d}, sO[4] = {Nq * p->ldo, d, p->ldo, 1};
    int64_t one[4] = {1, 1, 1, 1};
    int64_t dS[4] = {B, H, Nq, Nk}, sS[4] = {H * Nq * Nk, Nq * Nk, Nk, 1};
    int64_t dR[4] = {B, H, Nq, 1}, sR[4] = {H * Nq, Nq, 1, 1};
    int64_t dL[4] = {B, 1, 1, 1}, sL[4] = {1, 1, 1, 1};
    int64_t u = U_VIRT;

    cudnnBackendDescriptor_t tq = tens(&c, U_Q, bf, dq, sq, false, false);
    cudnnBackendDescriptor_t tk = tens(&c, U_K, bf, dk, sk, false, false);
    cudnnBackendDescriptor_t tv = tens(&c, U_V, bf, dv, sv, false, false);
    cudnnBackendDescriptor_t to = tens(&c, U_O, bf, dO, sO, false, false);
    cudnnBackendDescriptor_t tsc = tens(&c, U_SCALE, f32, one, one, false, true);
    cudnnBackendDescriptor_t tseqq = NULL, tseqk = NULL;
    if (p->masked) {
        tseqq = tens(&c, U_SEQQ, i32, dL, sL, false, false);
        tseqk = tens(&c, U_SEQKV, i32, dL, sL, false, false);
    }
    cudnnBackendDescriptor_t ops[24];
    int nops = 0;

    cudnnBackendDescriptor_t s1 = tens(&c, u++, f32, dS, sS, true, false);
    ops[nops++] = mm(&c, tq, tk, s1, tseqq, tseqk, NULL, p->masked);
    cudnnBackendDescriptor_t s2 = tens(&c, u++, f32, dS, sS, true, false);
    ops[nops++] = pw(&c, CUDNN_POINTWISE_MUL, f32, s1, tsc, NULL, s2, -1);
    cudnnBackendDescriptor_t last = s2;
    if (p->masked) {
        cudnnBackendDescriptor_t ri = tens(&c, u++, i32, dS, sS, true, false);
        ops[nops++] = pw(&c, CUDNN_POINTWISE_GEN_INDEX, i32, last, NULL, NULL, ri, 2);
        cudnnBackendDescriptor_t ci = tens(&c, u++, i32, dS, sS, true, false);
        ops[nops++] = pw(&c, CUDNN_POINTWISE_GEN_INDEX, i32, last, NULL, NULL, ci, 3);
        cudnnBackendDescriptor_t rm = tens(&c, u++, bo, dS, sS, true, false);
        ops[nops++] = pw(&c, CUDNN_POINTWISE_CMP_LT, bo, ri, tseqq, NULL, rm, -1);
        cudnnBackendDescriptor_t cm = tens(&c, u++, bo, dS, sS, true, false);
        ops[nops++] = pw(&c, CUDNN_POINTWISE_CMP_LT, bo, ci, tseqk, NULL, cm, -1);
        cudnnBackendDescriptor_t am = tens(&c, u++, bo, dS, sS, true, false);
        ops[nops++] = pw(&c, CUDNN_POINTWISE_LOGICAL_AND, bo, rm, cm, NULL, am, -1);
        cudnnBackendDescriptor_t ninf = tens(&c, U_NEGINF, f32, one, one, false, true);
        cudnnBackendDescriptor_t sm = tens(&c, u++, f32, dS, sS, true, false);
        ops[nops++] = pw(&c, CUDNN_POINTWISE_BINARY_SELECT, f32, last, ninf, am, sm, -1);
        last = sm;
    }
    cudnnBackendDescriptor_t mx = tens(&c, u++, f32, dR, sR, true, false);
    ops[nops++] = red(&c, CUDNN_REDUCE_TENSOR_MAX, last, mx);
    cudnnBackendDescriptor_t sub = tens(&c, u++, f32, dS, sS, true, false);
    ops[nops++] = pw(&c, CUDNN_POINTWISE_SUB, f32, last, mx, NULL, sub, -1);
    cudnnBackendDescriptor_t ex = tens(&c, u++, f32, dS, sS, true, false);
    ops[nops++] = pw(&c, CUDNN_POINTWISE_EXP, f32, sub, NULL, NULL, ex, -1);
    cudnnBackendDescriptor_t sum = tens(&c, u++, f32, dR, sR, true, false);
    ops[nops++] = red(&c, CUDNN_REDUCE_TENSOR_ADD, ex, sum);
    cudnnBackendDescriptor_t lg = tens(&c, u++, f32, dR, sR, true, false);
    ops[nops++] = pw(&c, CUDNN_POINTWISE_LOG, f32, sum, NULL, NULL, lg, -1);
    cudnnBackendDescriptor_t st = tens(&c, u++, f32, dR, sR, true, false);
    ops[nops++] = pw(&c, CUDNN_POINTWISE_ADD, f32, mx, lg, NULL, st, -1);
    cudnnBackendDescriptor_t pr = tens(&c, u++, bf, dS, sS, true, false);
    ops[nops++] = pw(&c, CUDNN_POINTWISE_DIV, f32, ex, sum, NULL, pr, -1);
    ops[nops++] = mm(&c, pr, tv, to, tseqq, NULL, tseqk, p->masked);

    cudnnBackendDescriptor_t g = bd_new(&c, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    SET(&c, g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, nops, ops);
    SET(&c, g, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &zc->dnn);
    FIN(&c, g, "operation graph");
    cudnnBackendDescriptor_t heur = bd_new(&c, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    cudnnBackendHeurMode_t hm = CUDNN_HEUR_MODE_A;
    SET(&c, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &g);
    SET(&c, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &hm);
    FIN(&c, heur, "engine heuristics");
    if (c.st) {
        p->state = -1;
        return;
    }
    int64_t cnt = 0;
    cudnnStatus_t s = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                               &cnt, NULL);
    if (s || cnt <= 0) {
        snprintf(p->why, sizeof p->why, "heuristics: %lld engine configs (%s)", (long long)cnt,
                 cudnnGetErrorString(s));
        p->state = -1;
        return;
    }
    if (cnt > 8) cnt = 8;
    cudnnBackendDescriptor_t cfg[8];
    for (int64_t i = 0; i < cnt; i++) cfg[i] = bd_new(&c, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    if (c.st) {
        p->state = -1;
        return;
    }
    int64_t got = 0;
    s = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, cnt, &got, cfg);
    if (s) {
        fail_at(&c, s, "CUDNN_ATTR_ENGINEHEUR_RESULTS");
        p->state = -1;
        return;
    }
    for (int64_t i = 0; i < got; i++) {
        cudnnBackendDescriptor_t plan = NULL;
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan)) continue;
        s = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &zc->dnn);
        if (!s) s = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i]);
        if (!s) s = cudnnBackendFinalize(plan);
        int64_t ws = 0, nws = 0;
        if (!s) s = cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &nws,
                                             &ws);
        if (s) {
            snprintf(p->why, sizeof p->why, "execution plan %lld of %lld: %s", (long long)i, (long long)got,
                     cudnnGetErrorString(s));
            cudnnBackendDestroyDescriptor(plan);
            continue;
        }
        p->plan = plan;
        p->ws = ws;
        p->state = 1;
        snprintf(p->why, sizeof p->why, "engine config %lld of %lld", (long long)i, (long long)got);
        return;
    }
    p->state = -1;
}

__global__ void k_seqlens(int32_t *dst, int B, int nq, zcu_lens lens) {
    int i = threadIdx.x;
    if (i < B) {
        dst[i] = nq;
        dst[B + i] = lens.v[i];
    }
}

int zcu_sdpa_cudnn(zbackend *be, const zt *o, const zt *q, const zt *k, const zt *v, int hq, int hkv,
                   const int32_t *kv_len, int causal, float scale) {
    zcuda *zc = ZC(be);
    int64_t B = q->ne[0], Nq = q->ne[1], Nk = k->ne[1], d = q->ne[2] / hq;
    if (causal || hq != hkv || (d != 64 && d != 128) || B > SD_MAXB) return 0;
    const zt *ts[4] = {q, k, v, o};
    for (int i = 0; i < 4; i++)
        if (ts[i]->dtype != ZT_BF16 || !zcu_aligned16(ts[i]->data) || (ts[i]->ne[2] * 2) % 16) return 0;
    int masked = 0;
    for (int64_t b = 0; kv_len && b < B; b++)
        if (kv_len[b] != Nk) masked = 1;
    zcu_sdpa_plan key;
    memset(&key, 0, sizeof key);
    key.B = B, key.H = hq, key.Nq = Nq, key.Nk = Nk, key.d = d, key.ldq = q->ne[2], key.ldk = k->ne[2];
    key.ldo = o->ne[2], key.masked = masked;
    zcu_sdpa_plan *p = NULL;
    for (int i = 0; i < zc->sdpa_n && !p; i++) {
        zcu_sdpa_plan *e = &zc->sdpa[i];
        if (e->B == key.B && e->H == key.H && e->Nq == key.Nq && e->Nk == key.Nk && e->d == key.d &&
            e->ldq == key.ldq && e->ldk == key.ldk && e->ldo == key.ldo && e->masked == key.masked)
            p = e;
    }
    if (!p) {
        if (zc->sdpa_n == zc->sdpa_cap) {
            int nc = zc->sdpa_cap ? 2 * zc->sdpa_cap : 8;
            zcu_sdpa_plan *np = (zcu_sdpa_plan *)realloc(zc->sdpa, (size_t)nc * sizeof *np);
            if (!np) return 0;
            zc->sdpa = np;
            zc->sdpa_cap = nc;
        }
        p = &zc->sdpa[zc->sdpa_n++];
        *p = key;
        build(be, p);
    }
    if (p->state != 1) return 0;

    void *ws = NULL;
    if (p->ws > 0 && !(ws = zcu_scratch(be, ZCU_SCR_SDPAWS, (size_t)p->ws))) return 1; /* failure recorded */
    int32_t *seq = NULL;
    if (masked) {
        seq = (int32_t *)zcu_scratch(be, ZCU_SCR_SDPASEQ, (size_t)(2 * B) * 4);
        if (!seq) return 1;
        zcu_lens lens;
        memset(&lens, 0, sizeof lens);
        for (int64_t b = 0; b < B; b++) lens.v[b] = kv_len[b];
        k_seqlens<<<1, 64, 0, zc->stream>>>(seq, (int)B, (int)Nq, lens);
        if (!LAUNCH_OK(be, "k_seqlens")) return 1;
    }
    float sc = scale, ninf = -INFINITY;
    int64_t uids[8] = {U_Q, U_K, U_V, U_O, U_SCALE, U_SEQQ, U_SEQKV, U_NEGINF};
    void *ptrs[8] = {q->data, k->data, v->data, o->data, &sc, seq, seq ? seq + B : NULL, &ninf};
    int64_t n = masked ? 8 : 5;
    cudnnBackendDescriptor_t vp = NULL;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (!s) s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
    if (!s) s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (!s) s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (!s) s = cudnnBackendFinalize(vp);
    if (!s) s = cudnnBackendExecute(zc->dnn, p->plan, vp);
    if (vp) cudnnBackendDestroyDescriptor(vp);
    DNN_OK(be, s);
    return 1;
}
