/* zimage.h - public C API of zimage, a text-to-image engine for Z-Image-Turbo.
 *
 *   zimage_options opt = ZIMAGE_OPTIONS_DEFAULT;
 *   opt.model = "/path/to/Z-Image-Turbo";          // diffusers folder
 *   zimage_ctx *ctx;
 *   if (zimage_create(&ctx, &opt, err, sizeof err)) { puts(err); ... }
 *   zimage_params p = ZIMAGE_PARAMS_DEFAULT;
 *   p.prompt = "a cat";
 *   zimage_result r;
 *   if (zimage_generate(ctx, &p, &r)) puts(zimage_errmsg(ctx));
 *   ... r.images[i] is r.width*r.height*3 bytes of RGB8, seed r.seeds[i] ...
 *   zimage_result_free(&r);
 *   zimage_free(ctx);
 *
 * A context owns the loaded models, the device state and its last error
 * message.  One context serves one generation at a time (calls on the same
 * context must be serialized by the caller); different contexts are
 * independent.  Every function returns 0 on success or a negative ZIMAGE_E*
 * code; the message is then in zimage_errmsg(ctx).
 */
#ifndef ZIMAGE_H
#define ZIMAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZIMAGE_VERSION "0.1.0"

enum {
    ZIMAGE_OK = 0,
    ZIMAGE_EINVAL = -1,
    ZIMAGE_EIO = -2,
    ZIMAGE_EFORMAT = -3,
    ZIMAGE_EMODEL = -4,
    ZIMAGE_ENOMEM = -5,
    ZIMAGE_EBACKEND = -6,
    ZIMAGE_ECANCELLED = -7,
    ZIMAGE_EUNSUPPORTED = -8,
    ZIMAGE_ENETWORK = -9,
};

typedef struct zimage_ctx zimage_ctx;

/* ---- context ------------------------------------------------------------ */

typedef struct zimage_options {
    /* Where the model comes from: a diffusers folder (model_index.json,
     * text_encoder/, tokenizer/, transformer/, vae/, scheduler/) ... */
    const char *model;
    /* ... and/or single files, which override the folder's component:
     * ComfyUI/diffusers DiT file, Qwen3 text-encoder file, VAE file
     * (diffusers or LDM/BFL naming), tokenizer.json. */
    const char *diffusion_model;
    const char *text_encoder;
    const char *vae;
    const char *tokenizer;
    const char *device;      /* "cpu", "cuda", "cuda:N", NULL = auto         */
    int threads;             /* CPU threads, 0 = all cores                   */
    int random_weights;      /* build every component from its config with
                                random weights (benchmarks); no weight files */
    int offload_te;          /* keep the text encoder on the device only
                                while encoding                               */
    int prompt_cache;        /* entries in the prompt-embedding LRU (0 off)  */
    int verbose;             /* 0 quiet, 1 info, 2 debug (to stderr)         */
    unsigned components;     /* ZIMAGE_LOAD_* mask; 0 = everything           */
} zimage_options;

#define ZIMAGE_LOAD_TE 1u    /* tokenizer + text encoder                     */
#define ZIMAGE_LOAD_DIT 2u
#define ZIMAGE_LOAD_VAE 4u

#define ZIMAGE_OPTIONS_DEFAULT                                                 \
    {                                                                          \
        NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 16, 0, 0                  \
    }

/* Load everything.  On failure *out is NULL and err (if given) holds the
 * message. */
int zimage_create(zimage_ctx **out, const zimage_options *opt, char *err, size_t errlen);
void zimage_free(zimage_ctx *ctx);
const char *zimage_errmsg(const zimage_ctx *ctx);
/* "cpu (2 threads)", "cuda:0 NVIDIA H100 80GB HBM3", ... */
const char *zimage_device_name(const zimage_ctx *ctx);

/* ---- generation ------------------------------------------------------------ */

enum { ZIMAGE_RNG_CPU = 0, ZIMAGE_RNG_CUDA = 1 };

/* Progress: called after each denoising step (step = 1..steps) and once per
 * stage change.  preview_rgb, when non-NULL, is a small RGB8 preview of the
 * current x0 estimate (preview_w x preview_h, first image of the batch),
 * produced only if the params asked for previews.  Return non-zero to cancel:
 * the call then stops at the next step boundary with ZIMAGE_ECANCELLED. */
typedef struct zimage_progress {
    const char *stage;       /* "encode", "denoise", "decode", "image"      */
    int step, steps;
    double elapsed;          /* seconds since the call began               */
    const uint8_t *preview_rgb;
    int preview_w, preview_h;
    /* when params.progress_latents: the latents after this step, host F32
     * [images, c, h, w] (zimage_latent_shape); NULL otherwise */
    const float *latents;
    /* stage "image": image_index (0-based, across the whole batch) has just
     * been decoded; image_rgb (width*height*3 RGB8) stays valid until the
     * result is freed, so a caller can encode it while the next one decodes
     * (the callback's return value is ignored for this stage) */
    const uint8_t *image_rgb;
    int image_index;
    int64_t image_seed;
} zimage_progress;
typedef int (*zimage_progress_fn)(const zimage_progress *p, void *user);

typedef struct zimage_params {
    const char *prompt;
    const char *negative_prompt;  /* NULL = "" (used only when cfg_scale > 1) */
    int width, height;            /* multiples of 16                          */
    int steps;                    /* denoising steps (DiT forwards)           */
    float cfg_scale;              /* A1111 meaning: 1 = off; diffusers'
                                     guidance_scale = cfg_scale - 1           */
    float cfg_normalization;      /* 0 = off, else k (diffusers semantics)    */
    float cfg_truncation;         /* 1 = never truncate                       */
    int64_t seed;                 /* < 0: random                              */
    int rng;                      /* ZIMAGE_RNG_CPU / ZIMAGE_RNG_CUDA         */
    int batch;                    /* images for this prompt (one noise draw)  */
    int max_sequence_length;      /* token limit of the templated prompt      */
    const float *init_latents;    /* optional [batch, 16, H/8, W/8] F32       */
    float *out_latents;           /* optional: receives the final latents     */
    zimage_progress_fn progress;
    void *progress_user;
    int preview;                  /* 1: pass previews to progress             */
    int progress_latents;         /* 1: pass each step's latents to progress  */
} zimage_params;

#define ZIMAGE_PARAMS_DEFAULT                                                  \
    {                                                                          \
        NULL, NULL, 1024, 1024, 8, 1.0f, 0.0f, 1.0f, -1, ZIMAGE_RNG_CPU, 1,    \
            512, NULL, NULL, NULL, NULL, 0, 0                                  \
    }

typedef struct zimage_timings {
    double tokenize, encode, denoise, decode, total; /* seconds */
    double setup;    /* seconds between encode and the first step: noise, persistent state, caption stream */
    double step_min, step_max;                      /* seconds per DiT step */
    size_t peak_device_bytes;                       /* 0 if unknown         */
} zimage_timings;

typedef struct zimage_result {
    int n;                   /* number of images                              */
    int width, height;
    uint8_t **images;        /* n buffers of width*height*3 RGB8              */
    int64_t *seeds;          /* n seeds (image i of a batch draw: seeds[0])   */
    int prompt_cache_hit;    /* 1 if the prompt embedding came from the cache */
    zimage_timings timings;
} zimage_result;

/* Check params without doing any work (sizes, steps, ...). */
int zimage_validate(zimage_ctx *ctx, const zimage_params *p);
int zimage_generate(zimage_ctx *ctx, const zimage_params *p, zimage_result *out);
/* Several requests that share width, height, steps and cfg settings, run as
 * one batch through the DiT.  Each item draws its own noise from its own
 * seed, exactly as if it were generated alone.  results has n entries.
 * Progress for the whole batch goes to items[0].progress (previews and
 * latents are those of the first image); the other items' callbacks are not
 * called. */
int zimage_generate_many(zimage_ctx *ctx, const zimage_params *items, int n, zimage_result *results);
void zimage_result_free(zimage_result *r);

/* Latent shape [c, h, w] the model uses for a width x height image (what
 * init_latents / out_latents hold per image). */
int zimage_latent_shape(const zimage_ctx *ctx, int width, int height, int *c, int *h, int *w);

/* Tokens of the templated prompt (what the text encoder sees).  ids must
 * hold max_ids entries; *n_ids receives the count. */
int zimage_tokenize(zimage_ctx *ctx, const char *prompt, int max_length, int32_t *ids, int max_ids, int *n_ids);

/* Caption features (text-encoder hidden_states[-2]) of the templated
 * prompt: *feat is malloc'd [*n_tokens, *dim] float32 (caller frees). */
int zimage_encode_prompt(zimage_ctx *ctx, const char *prompt, int max_length, float **feat, int *n_tokens, int *dim);

/* Prompt-cache statistics. */
void zimage_cache_stats(const zimage_ctx *ctx, uint64_t *hits, uint64_t *misses);

/* A1111-style "parameters" text for an image (what the PNG stores). */
int zimage_infotext(const zimage_params *p, int64_t seed, const char *model_name, char *buf, size_t buflen);

/* Write RGB8 to a PNG; text (may be NULL) goes into a "parameters" tEXt
 * chunk.  Written to a temporary file and renamed, so no half-written file
 * is ever left at path. */
int zimage_write_png(const char *path, const uint8_t *rgb, int width, int height, const char *text, char *err,
                     size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
