/* qwen3.h - the Qwen3 text encoder as Z-Image uses it (spec section 3).
 *
 * Runs layers 0 .. num_hidden_layers-2 on the real tokens only (no padding,
 * positions 0..L-1, causal attention) and returns the raw residual stream
 * after layer num_hidden_layers-2, i.e. transformers' hidden_states[-2]
 * (no final norm).  Layer num_hidden_layers-1 and model.norm are never
 * loaded.
 */
#ifndef ZIMAGE_QWEN3_H
#define ZIMAGE_QWEN3_H

#include "../io/weights.h"
#include "../ops/ops.h"
#include "config.h"

typedef struct qwen3_layer {
    zt in_norm;     /* [D]             F32 */
    zt wqkv;        /* [(Hq+2Hkv)*d, D]  q|k|v rows */
    zt q_norm;      /* [d]             F32 */
    zt k_norm;      /* [d]             F32 */
    zt wo;          /* [D, Hq*d]       */
    zt post_norm;   /* [D]             F32 */
    zt w_gate_up;   /* [2F, D]         gate|up rows */
    zt w_down;      /* [D, F]          */
} qwen3_layer;

typedef struct qwen3_model {
    qwen3_config cfg;
    int n_run;            /* layers run = num_hidden_layers - 1 */
    zt embed;             /* [V, D] */
    qwen3_layer *layers;  /* n_run */
    zw_loader loader;
    /* streamed mode (qwen3_load_streamed): embed and layers live on a host
     * backend; each layer is copied into `slot` on the compute backend just
     * before it runs, so the device holds one layer at a time. */
    int streamed;
    zbackend *dev;        /* compute backend that owns slot */
    qwen3_layer slot;
} qwen3_model;

/* src == NULL: random weights.  Checks every tensor before returning. */
int qwen3_load(qwen3_model *m, const qwen3_config *cfg, zbackend *be, zw_source *src, zerr *e);
/* Weights on `host` (a host backend: zero-copy from the file where it can),
 * one layer's worth of device memory on `dev`; qwen3_encode then streams the
 * layers through it (run it with a zexec on `dev`). */
int qwen3_load_streamed(qwen3_model *m, const qwen3_config *cfg, zbackend *dev, zbackend *host, zw_source *src,
                        zerr *e);
void qwen3_free(qwen3_model *m);

/* out [L, D] (any float dtype; the pipeline passes F32 on CPU) receives
 * hidden_states[-2] for the L token ids (host array).  Scratch comes from
 * zx's arena (run once with zx->measure = 1 to size it). */
void qwen3_encode(zexec *zx, const qwen3_model *m, const int32_t *ids, int L, zt *out);

#endif
