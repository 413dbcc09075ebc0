/* pipeline.h - the zimage context (internal view) and the stages of one
 * generation: prompt -> token ids -> caption features (text encoder, with an
 * LRU cache) -> DiT denoising loop (flow-matching Euler, optional CFG) ->
 * VAE decode -> RGB8.
 *
 * Memory plan: weights are loaded once at zimage_create.  Two arenas in
 * backend memory are sized by a measure pass before the work they serve:
 *   persist  per-generation state: caption streams + RoPE tables
 *            (dit_batch), latents, model inputs/outputs     [B, 16, h, w]
 *   scratch  per-stage scratch, reset per step; reused by the text encoder
 *            and the VAE.
 * They only grow (between generations), so nothing is allocated inside the
 * denoising loop.
 */
#ifndef ZIMAGE_PIPELINE_H
#define ZIMAGE_PIPELINE_H

#include <stdint.h>

#include "base/err.h"
#include "io/modeldir.h"
#include "io/weights.h"
#include "models/config.h"
#include "models/dit.h"
#include "models/qwen3.h"
#include "models/vae.h"
#include "ops/ops.h"
#include "text/tokenizer.h"
#include "zimage.h"

typedef struct zcache_entry {
    uint64_t key;      /* hash of the token ids (0 = empty slot)   */
    int n_ids;
    int32_t *ids;      /* kept to rule out hash collisions          */
    float *feat;       /* [n_ids, hidden] host F32                  */
    uint64_t used;     /* LRU clock                                 */
} zcache_entry;

/* A captured DiT step (CUDA graph) and everything the capture baked in:
 * shapes, per-sample padded caption lengths (key lengths go by value) and the
 * arena addresses.  Reused by later generations while all of it matches. */
#define ZGRAPH_CACHE 4
typedef struct zgraph_key {
    int B, h, w, cfg, use_cfg, nfeat;
    int feat_len[2 * DIT_MAX_BATCH]; /* caption lengths: they fix the arena layout */
    const void *persist_base, *scratch_base;
    size_t persist_cap, scratch_cap;
} zgraph_key;

typedef struct zgraph_entry {
    zgraph_key key;
    void *graph;        /* NULL = empty slot */
    uint64_t used;
} zgraph_entry;

struct zimage_ctx {
    zerr err;
    char device_name[160];
    char model_name[256];
    zimage_options opt;
    zbackend *be;
    zbackend *host_be;   /* holds the text encoder's weights with offload_te */
    zmodel_paths paths;
    ztok *tok;
    qwen3_config te_cfg;
    dit_config dit_cfg;
    vae_config vae_cfg;
    sched_config sched_cfg;
    zw_source *te_src, *dit_src, *vae_src;
    qwen3_model te;
    dit_model dit;
    vae_model vae;
    int have_te;                       /* the text encoder is part of this context */
    int te_loaded, dit_loaded, vae_loaded; /* resident on the backend */
    zarena scratch;
    zarena persist;
    /* prompt cache */
    zcache_entry *cache;
    int cache_cap;
    uint64_t cache_clock, cache_hits, cache_misses;
    zgraph_entry graphs[ZGRAPH_CACHE];
    uint64_t graph_clock;
};

/* Caption features of a templated-and-tokenized prompt, through the cache.
 * *feat is owned by the cache (valid until the next call); *hit tells. */
int zpipe_encode_ids(zimage_ctx *ctx, const int32_t *ids, int n, const float **feat, int *hit);

/* Tokenize with the Z-Image template (malloc'd ids). */
int zpipe_tokenize(zimage_ctx *ctx, const char *prompt, int max_length, int32_t **ids, int *n);

/* Grow an arena to at least `bytes` (outside any loop). */
int zpipe_arena_reserve(zimage_ctx *ctx, zarena *a, size_t bytes);

#endif
