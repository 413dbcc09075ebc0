/* weights.h - how models get their weights.
 *
 * A zw_source is the set of safetensors files of one component (a single
 * file, or shards listed by a *.safetensors.index.json), opened with mmap,
 * plus the name map of its checkpoint format.  Models ask for tensors by
 * their canonical diffusers / transformers name; the source maps that name
 * to what the file stores:
 *   DiT:  diffusers names, or ComfyUI/sd.cpp names (fused attention.qkv split
 *         into row blocks, x_embedder, final_layer, q_norm/k_norm, out), with
 *         an optional "model.diffusion_model." prefix;
 *   TE:   Qwen3 names with or without the "model." prefix;
 *   VAE:  diffusers names or LDM/BFL ae.safetensors names (1x1 conv
 *         attention projections accepted for Linear ones).
 *
 * A zw_loader turns looked-up tensors into backend tensors, checking name,
 * dtype and shape first; every failure names the tensor, the file, what was
 * expected and what was found.  With src == NULL it builds random weights of
 * the requested shapes instead (--random-weights: benchmarks without a
 * checkpoint), deterministic in the loader's seed.
 */
#ifndef ZIMAGE_WEIGHTS_H
#define ZIMAGE_WEIGHTS_H

#include <stdint.h>

#include "../ops/ops.h"

typedef enum { ZW_DIT = 0, ZW_TE = 1, ZW_VAE = 2 } zw_kind;

typedef struct zw_source zw_source;

/* A tensor as stored (possibly a row block of a stored tensor). */
typedef struct zw_view {
    zt_dtype dtype;
    int ndim;
    int64_t ne[ZT_MAXDIM];
    const void *data;         /* host pointer into the mmap            */
    const char *file;         /* file the data lives in                */
    const char *stored_name;  /* name in that file                     */
} zw_view;

/* path: a .safetensors file, a *.safetensors.index.json, or a folder holding
 * one of them (diffusion_pytorch_model*.safetensors / model*.safetensors). */
int zw_source_open(zw_source **out, const char *path, zw_kind kind, zerr *e);
void zw_source_free(zw_source *s);
/* Returns 1 and fills v if the canonical name resolves, else 0. */
int zw_source_find(zw_source *s, const char *canonical, zw_view *v);
/* Total number of stored tensors / their stored names (for diagnostics). */
int zw_source_count(const zw_source *s);
const char *zw_source_path(const zw_source *s);

typedef struct zw_loader {
    zbackend *be;
    zerr *err;
    zw_source *src;           /* NULL: random weights                   */
    const char *component;    /* "transformer", "text_encoder", "vae"   */
    uint64_t seed;            /* random-weight seed                     */
    uint64_t n_params;        /* elements loaded so far                 */
    uint64_t n_bytes;         /* backend bytes allocated so far         */
    void *priv;               /* internal: consumed names, allocations  */
} zw_loader;

/* The loader owns every backend buffer it creates (CPU tensors may instead
 * alias the source's mmap: zero copy, so the source must outlive them).
 * A model keeps its loader for its lifetime and calls zw_loader_free(). */
int zw_loader_init(zw_loader *L, zbackend *be, zw_source *src, const char *component, zerr *err);
/* Frees all weights this loader created. */
void zw_loader_free(zw_loader *L);

/* Load `name` with exactly this shape.  ndim >= 2 tensors are "matrix"
 * weights (dtype chosen by zbackend_weight_dtype), 1-D ones F32. */
int zw_load(zw_loader *L, zt *out, const char *name, int ndim, const int64_t *ne);
int zw_load1(zw_loader *L, zt *out, const char *name, int64_t n0);
int zw_load2(zw_loader *L, zt *out, const char *name, int64_t n0, int64_t n1);
/* Concatenate n matrices [rows_i, cols] along rows into one [sum rows, cols]
 * tensor (fused q|k|v, w1|w3). */
int zw_load_cat(zw_loader *L, zt *out, const char *const *names, int n, const int64_t *rows, int64_t cols);
/* Conv weight stored [co, ci, kh, kw] (OIHW) -> backend [co, kh*kw*ci] (OHWI).
 * A 1x1 conv may also be stored as a Linear [co, ci]. */
int zw_load_conv(zw_loader *L, zt *out, const char *name, int64_t co, int64_t ci, int kh, int kw);
/* A [ci->co] Linear that the file may store as a 1x1 conv [co, ci, 1, 1]. */
int zw_load_linear_or_conv1x1(zw_loader *L, zt *out, const char *name, int64_t co, int64_t ci);
/* Mark stored tensors the model deliberately does not use (e.g. the text
 * encoder's last layer), by canonical name prefix. */
void zw_ignore_prefix(zw_loader *L, const char *prefix);
/* After loading: error if the source holds tensors nobody consumed or
 * ignored (a checkpoint with more layers than its config says, say). */
int zw_check_all_used(zw_loader *L);

#endif
