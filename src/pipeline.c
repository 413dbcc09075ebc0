/* pipeline.c - zimage_create / zimage_generate*: the text-to-image pipeline
 * of ZImagePipeline (diffusers), stage by stage (spec section 5.8):
 *
 *   ids   = tokenize(template(prompt))[:max_sequence_length]
 *   Y     = Qwen3 hidden_states[-2] on the real tokens       [L, 2560]
 *   x     = randn([n, 16, H/8, W/8], seed)  (float32, torch-compatible)
 *   for i in 0..steps-1:
 *       out  = DiT(x, t_i = 1 - sigma_i, Y)                  (pos and neg with CFG)
 *       pred = CFG(out) ;  x += (sigma_{i+1} - sigma_i) * (-pred)
 *   img   = VAE_decode(x / scaling + shift) ;  u8 = round(clamp(img/2+.5)*255)
 *
 * Tensor letters: B images in the batch (all items' images), G = B or 2B
 * DiT rows (2B with CFG: positives first, then negatives, as diffusers),
 * C latent channels, h, w latent size.
 */
#include "pipeline.h"

#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "io/hub.h"
#include "io/png.h"
#include "sample/rng.h"
#include "sample/scheduler.h"

#define ZMAX_STEPS 1000
#define ZMAX_SIDE 8192

/* ---- context ------------------------------------------------------------- */

static void graphs_clear(zimage_ctx *ctx);

static char *dupstr(const char *s) { return s ? strdup(s) : NULL; }

static int is_dir(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void free_opts(zimage_options *o) {
    free((char *)o->model);
    free((char *)o->diffusion_model);
    free((char *)o->text_encoder);
    free((char *)o->vae);
    free((char *)o->tokenizer);
    free((char *)o->device);
}

static int load_configs(zimage_ctx *ctx) {
    zerr *e = &ctx->err;
    qwen3_config_default(&ctx->te_cfg);
    dit_config_default(&ctx->dit_cfg);
    vae_config_default(&ctx->vae_cfg);
    sched_config_default(&ctx->sched_cfg);
    if (ctx->paths.te_config[0]) ZTRY(qwen3_config_load(&ctx->te_cfg, ctx->paths.te_config, e));
    if (ctx->paths.dit_config[0]) ZTRY(dit_config_load(&ctx->dit_cfg, ctx->paths.dit_config, e));
    if (ctx->paths.vae_config[0]) ZTRY(vae_config_load(&ctx->vae_cfg, ctx->paths.vae_config, e));
    if (ctx->paths.sched_config[0]) ZTRY(sched_config_load(&ctx->sched_cfg, ctx->paths.sched_config, e));
    ZTRY(qwen3_config_check(&ctx->te_cfg, e));
    ZTRY(dit_config_finish(&ctx->dit_cfg, e));
    ZTRY(vae_config_check(&ctx->vae_cfg, e));
    if (ctx->dit_cfg.cap_feat_dim != ctx->te_cfg.hidden_size)
        return zerr_set(e, ZE_MODEL, "transformer cap_feat_dim %d does not match the text encoder's hidden_size %d",
                        ctx->dit_cfg.cap_feat_dim, ctx->te_cfg.hidden_size);
    if (ctx->dit_cfg.in_channels != ctx->vae_cfg.latent_channels)
        return zerr_set(e, ZE_MODEL, "transformer in_channels %d does not match the VAE's latent_channels %d",
                        ctx->dit_cfg.in_channels, ctx->vae_cfg.latent_channels);
    return ZE_OK;
}

static int load_models(zimage_ctx *ctx) {
    zerr *e = &ctx->err;
    int rnd = ctx->opt.random_weights;
    unsigned m = ctx->opt.components ? ctx->opt.components : (ZIMAGE_LOAD_TE | ZIMAGE_LOAD_DIT | ZIMAGE_LOAD_VAE);
    /* open (and validate the headers of) every file before loading any */
    if (!rnd) {
        if (m & ZIMAGE_LOAD_TE) ZTRY(zw_source_open(&ctx->te_src, ctx->paths.te, ZW_TE, e));
        if (m & ZIMAGE_LOAD_DIT) ZTRY(zw_source_open(&ctx->dit_src, ctx->paths.dit, ZW_DIT, e));
        if (m & ZIMAGE_LOAD_VAE) ZTRY(zw_source_open(&ctx->vae_src, ctx->paths.vae, ZW_VAE, e));
    }
    double t0 = ztime_now();
    if (m & ZIMAGE_LOAD_TE) {
        if (ctx->opt.offload_te && !ctx->be->is_host) {
            /* weights stay in host memory; one layer at a time goes to the device while encoding */
            ZTRY(zbackend_create(&ctx->host_be, "cpu", ctx->opt.threads, e));
            ctx->host_be->err = e;
            ZTRY(qwen3_load_streamed(&ctx->te, &ctx->te_cfg, ctx->be, ctx->host_be, ctx->te_src, e));
        } else {
            ZTRY(qwen3_load(&ctx->te, &ctx->te_cfg, ctx->be, ctx->te_src, e));
        }
        ctx->te_loaded = ctx->have_te = 1;
    }
    if (m & ZIMAGE_LOAD_DIT) {
        ZTRY(dit_load(&ctx->dit, &ctx->dit_cfg, ctx->be, ctx->dit_src, e));
        ctx->dit_loaded = 1;
    }
    if (m & ZIMAGE_LOAD_VAE) {
        ZTRY(vae_load(&ctx->vae, &ctx->vae_cfg, ctx->be, ctx->vae_src, e));
        ctx->vae_loaded = 1;
    }
    ZLOGI("models loaded in %.2f s (text encoder %.2f G, transformer %.2f G, vae %.3f G params)", ztime_now() - t0,
          ctx->te.loader.n_params / 1e9, ctx->dit.loader.n_params / 1e9, ctx->vae.loader.n_params / 1e9);
    return ZE_OK;
}

static int create_inner(zimage_ctx *ctx, const zimage_options *opt) {
    zerr *e = &ctx->err;
    if (opt->verbose > 0) zlog_set_level(opt->verbose >= 2 ? ZLOG_DEBUG : ZLOG_INFO);
    const char *model = opt->model;
    char resolved[4096];
    /* A repo id ("ORG/NAME") is looked up in the Hugging Face cache. */
    if (model && *model && !is_dir(model) && !opt->random_weights) {
        zhub_opts ho;
        zhub_opts_default(&ho);
        ho.allow_download = 0;
        ZTRY(zhub_resolve_model(model, &ho, resolved, sizeof resolved, e));
        model = resolved;
    }
    if (model && *model) {
        const char *slash = strrchr(opt->model, '/');
        snprintf(ctx->model_name, sizeof ctx->model_name, "%s", slash && slash[1] ? slash + 1 : opt->model);
    } else {
        snprintf(ctx->model_name, sizeof ctx->model_name, "%s", opt->random_weights ? "random-weights" : "Z-Image-Turbo");
    }
    if (opt->random_weights && !(model && *model)) {
        memset(&ctx->paths, 0, sizeof ctx->paths);
        if (opt->tokenizer) snprintf(ctx->paths.tok_json, sizeof ctx->paths.tok_json, "%s", opt->tokenizer);
    } else {
        ZTRY(zmodel_resolve(&ctx->paths, model, opt->diffusion_model, opt->text_encoder, opt->vae, opt->tokenizer, e));
    }
    ZTRY(load_configs(ctx));
    if (ctx->paths.tok_json[0])
        ZTRY(ztok_load(&ctx->tok, ctx->paths.tok_json, ctx->paths.tok_config[0] ? ctx->paths.tok_config : NULL, e));
    ZTRY(zbackend_create(&ctx->be, opt->device, opt->threads, e));
    ctx->be->err = e;
    snprintf(ctx->device_name, sizeof ctx->device_name, "%s", ctx->be->vt->name);
    ZTRY(load_models(ctx));
    /* prompt_cache == 0 disables lookups; one slot still holds the last result */
    ctx->cache_cap = opt->prompt_cache > 0 ? opt->prompt_cache : 1;
    ctx->cache = calloc((size_t)ctx->cache_cap, sizeof *ctx->cache);
    if (!ctx->cache) return zerr_set(e, ZE_NOMEM, "out of memory");
    return ZE_OK;
}

int zimage_create(zimage_ctx **out, const zimage_options *opt, char *err, size_t errlen) {
    *out = NULL;
    zimage_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return ZIMAGE_ENOMEM;
    }
    ctx->opt = *opt;
    ctx->opt.model = dupstr(opt->model);
    ctx->opt.diffusion_model = dupstr(opt->diffusion_model);
    ctx->opt.text_encoder = dupstr(opt->text_encoder);
    ctx->opt.vae = dupstr(opt->vae);
    ctx->opt.tokenizer = dupstr(opt->tokenizer);
    ctx->opt.device = dupstr(opt->device);
    int rc = create_inner(ctx, &ctx->opt);
    if (rc) {
        if (err && errlen) snprintf(err, errlen, "%s", ctx->err.msg[0] ? ctx->err.msg : zerr_name(rc));
        zimage_free(ctx);
        return rc;
    }
    *out = ctx;
    return ZE_OK;
}

void zimage_free(zimage_ctx *ctx) {
    if (!ctx) return;
    if (ctx->be) {
        graphs_clear(ctx);
        if (ctx->te_loaded) qwen3_free(&ctx->te);
        if (ctx->dit_loaded) dit_free(&ctx->dit);
        if (ctx->vae_loaded) vae_free(&ctx->vae);
        zarena_free(ctx->be, &ctx->scratch);
        zarena_free(ctx->be, &ctx->persist);
        zbackend_destroy(ctx->be);
    }
    if (ctx->host_be) zbackend_destroy(ctx->host_be);
    zw_source_free(ctx->te_src);
    zw_source_free(ctx->dit_src);
    zw_source_free(ctx->vae_src);
    if (ctx->tok) ztok_free(ctx->tok);
    for (int i = 0; i < ctx->cache_cap; i++) {
        free(ctx->cache[i].ids);
        free(ctx->cache[i].feat);
    }
    free(ctx->cache);
    free_opts(&ctx->opt);
    free(ctx);
}

const char *zimage_errmsg(const zimage_ctx *ctx) { return ctx ? ctx->err.msg : "no context"; }
const char *zimage_device_name(const zimage_ctx *ctx) { return ctx->device_name; }

void zimage_cache_stats(const zimage_ctx *ctx, uint64_t *hits, uint64_t *misses) {
    if (hits) *hits = ctx->cache_hits;
    if (misses) *misses = ctx->cache_misses;
}

int zpipe_arena_reserve(zimage_ctx *ctx, zarena *a, size_t bytes) {
    if (a->cap >= bytes) return ZE_OK;
    graphs_clear(ctx); /* they point into the arena being replaced */
    zarena_free(ctx->be, a);
    size_t want = bytes + bytes / 16 + (1 << 20); /* a little headroom */
    int rc = zarena_alloc(ctx->be, a, want);
    if (rc) return zerr_prefix(&ctx->err, "allocating %.1f MiB of working memory", want / 1048576.0);
    return ZE_OK;
}

/* ---- text ---------------------------------------------------------------- */

int zpipe_tokenize(zimage_ctx *ctx, const char *prompt, int max_length, int32_t **ids, int *n) {
    if (!ctx->tok)
        return zerr_set(&ctx->err, ZE_INVALID, "no tokenizer: give a model folder (-m) or --tokenizer tokenizer.json");
    return ztok_encode_prompt(ctx->tok, prompt ? prompt : "", max_length, ids, n, &ctx->err);
}

int zimage_tokenize(zimage_ctx *ctx, const char *prompt, int max_length, int32_t *ids, int max_ids, int *n_ids) {
    int32_t *t = NULL;
    int n = 0;
    ZTRY(zpipe_tokenize(ctx, prompt, max_length, &t, &n));
    int m = n < max_ids ? n : max_ids;
    if (m > 0) memcpy(ids, t, (size_t)m * sizeof *ids);
    *n_ids = n;
    free(t);
    return ZE_OK;
}

static uint64_t hash_ids(const int32_t *ids, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int k = 0; k < 4; k++) {
            h ^= (v >> (8 * k)) & 0xffu;
            h *= 1099511628211ull;
        }
    }
    return h ? h : 1;
}

/* Run the text encoder on ids -> host features [n, D] (malloc'd).  With
 * offload_te (qwen3_load_streamed) the layers stream through the device. */
static int run_encoder(zimage_ctx *ctx, const int32_t *ids, int n, float **feat_out) {
    if (!ctx->have_te) return zerr_set(&ctx->err, ZE_INVALID, "this context has no text encoder loaded");
    int64_t d = ctx->te_cfg.hidden_size;
    zexec zx;
    /* measure, reserve, run */
    for (int pass = 0; pass < 2; pass++) {
        zx_begin(&zx, ctx->be, &ctx->scratch, pass == 0);
        zt out = zx_tensor2(&zx, ZT_F32, n, d);
        qwen3_encode(&zx, &ctx->te, ids, n, &out);
        if (!zx_ok(&zx)) return zx.status;
        if (pass == 0) {
            ZTRY(zpipe_arena_reserve(ctx, &ctx->scratch, ctx->scratch.peak));
            continue;
        }
        float *f = malloc((size_t)n * (size_t)d * sizeof *f);
        if (!f) return zerr_set(&ctx->err, ZE_NOMEM, "out of memory");
        int rc = zt_download_f32(ctx->be, &out, f);
        if (rc) {
            free(f);
            return rc;
        }
        *feat_out = f;
    }
    return ZE_OK;
}

int zpipe_encode_ids(zimage_ctx *ctx, const int32_t *ids, int n, const float **feat, int *hit) {
    *hit = 0;
    uint64_t key = hash_ids(ids, n);
    zcache_entry *slot = NULL;
    for (int i = 0; i < ctx->cache_cap && ctx->opt.prompt_cache > 0; i++) {
        zcache_entry *c = &ctx->cache[i];
        if (c->key == key && c->n_ids == n && !memcmp(c->ids, ids, (size_t)n * sizeof *ids)) {
            c->used = ++ctx->cache_clock;
            ctx->cache_hits++;
            *hit = 1;
            *feat = c->feat;
            return ZE_OK;
        }
    }
    ctx->cache_misses++;
    float *f = NULL;
    ZTRY(run_encoder(ctx, ids, n, &f));
    for (int i = 0; i < ctx->cache_cap; i++)
        if (!slot || ctx->cache[i].used < slot->used) slot = &ctx->cache[i];
    free(slot->ids);
    free(slot->feat);
    slot->ids = malloc((size_t)n * sizeof *ids);
    if (!slot->ids) {
        free(f);
        slot->key = 0;
        return zerr_set(&ctx->err, ZE_NOMEM, "out of memory");
    }
    memcpy(slot->ids, ids, (size_t)n * sizeof *ids);
    slot->key = key;
    slot->n_ids = n;
    slot->feat = f;
    slot->used = ++ctx->cache_clock;
    *feat = f;
    return ZE_OK;
}

/* ---- validation ------------------------------------------------------------ */

static int vae_factor(const zimage_ctx *ctx) { return 1 << (ctx->vae_cfg.n_blocks - 1); }

int zimage_validate(zimage_ctx *ctx, const zimage_params *p) {
    zerr *e = &ctx->err;
    int mult = vae_factor(ctx) * ctx->dit_cfg.patch_size;
    if (!p->prompt) return zerr_set(e, ZE_INVALID, "no prompt given");
    if (p->width < mult || p->height < mult || p->width > ZMAX_SIDE || p->height > ZMAX_SIDE)
        return zerr_set(e, ZE_INVALID, "size %dx%d out of range (%d..%d per side)", p->width, p->height, mult,
                        ZMAX_SIDE);
    if (p->width % mult || p->height % mult)
        return zerr_set(e, ZE_INVALID, "width and height must be multiples of %d (got %dx%d)", mult, p->width,
                        p->height);
    int ht = p->height / mult, wt = p->width / mult;
    if (ht > ctx->dit_cfg.axes_lens[1] || wt > ctx->dit_cfg.axes_lens[2])
        return zerr_set(e, ZE_INVALID, "size %dx%d exceeds the model's position range (%d x %d patches)", p->width,
                        p->height, ctx->dit_cfg.axes_lens[2], ctx->dit_cfg.axes_lens[1]);
    if (p->steps < 1 || p->steps > ZMAX_STEPS)
        return zerr_set(e, ZE_INVALID, "steps must be between 1 and %d (got %d)", ZMAX_STEPS, p->steps);
    if (!(p->cfg_scale >= 0) || p->cfg_scale > 100)
        return zerr_set(e, ZE_INVALID, "cfg scale must be between 0 and 100 (got %g)", p->cfg_scale);
    if (!(p->cfg_normalization >= 0)) return zerr_set(e, ZE_INVALID, "cfg normalization must be >= 0");
    if (!(p->cfg_truncation >= 0)) return zerr_set(e, ZE_INVALID, "cfg truncation must be >= 0");
    if (p->batch < 1 || p->batch > DIT_MAX_BATCH / 2)
        return zerr_set(e, ZE_INVALID, "batch must be between 1 and %d (got %d)", DIT_MAX_BATCH / 2, p->batch);
    if (p->rng != ZIMAGE_RNG_CPU && p->rng != ZIMAGE_RNG_CUDA) return zerr_set(e, ZE_INVALID, "unknown rng kind");
    /* (the caption's real length is checked against axes_lens by the DiT) */
    if (p->max_sequence_length < 1 || p->max_sequence_length > 65536)
        return zerr_set(e, ZE_INVALID, "max sequence length must be between 1 and 65536 (got %d)",
                        p->max_sequence_length);
    if (!ctx->tok) return zerr_set(e, ZE_INVALID, "no tokenizer: give a model folder (-m) or --tokenizer FILE");
    if (!ctx->have_te || !ctx->dit_loaded || !ctx->vae_loaded)
        return zerr_set(e, ZE_INVALID, "this context was created without all model components");
    return ZE_OK;
}

int zimage_encode_prompt(zimage_ctx *ctx, const char *prompt, int max_length, float **feat, int *n_tokens, int *dim) {
    zerr_clear(&ctx->err);
    *feat = NULL;
    if (!ctx->have_te) return zerr_set(&ctx->err, ZE_INVALID, "this context has no text encoder loaded");
    int32_t *ids = NULL;
    int n = 0;
    ZTRY(zpipe_tokenize(ctx, prompt, max_length, &ids, &n));
    const float *f = NULL;
    int hit = 0;
    int rc = zpipe_encode_ids(ctx, ids, n, &f, &hit);
    free(ids);
    if (rc) return rc;
    size_t bytes = (size_t)n * (size_t)ctx->te_cfg.hidden_size * sizeof(float);
    *feat = malloc(bytes ? bytes : 1);
    if (!*feat) return zerr_set(&ctx->err, ZE_NOMEM, "out of memory");
    memcpy(*feat, f, bytes);
    *n_tokens = n;
    *dim = ctx->te_cfg.hidden_size;
    return ZE_OK;
}

int zimage_latent_shape(const zimage_ctx *ctx, int width, int height, int *c, int *h, int *w) {
    int f = vae_factor(ctx);
    *c = ctx->dit_cfg.in_channels;
    *h = height / f;
    *w = width / f;
    return ZE_OK;
}

/* ---- preview: linear latent -> RGB (FLUX latent space factors) --------------- */

static const float k_rgb[16][3] = {
    {-0.0346f, 0.0244f, 0.0681f},  {0.0034f, 0.0210f, 0.0687f},   {0.0275f, -0.0668f, -0.0433f},
    {-0.0174f, 0.0160f, 0.0617f},  {0.0859f, 0.0721f, 0.0329f},   {0.0004f, 0.0383f, 0.0115f},
    {0.0405f, 0.0861f, 0.0915f},   {-0.0236f, -0.0185f, -0.0259f}, {-0.0245f, 0.0250f, 0.1180f},
    {0.1008f, 0.0755f, -0.0421f},  {-0.0515f, 0.0201f, 0.0011f},  {0.0428f, -0.0012f, -0.0036f},
    {0.0817f, 0.0765f, 0.0749f},   {-0.1264f, -0.0522f, -0.1103f}, {-0.0280f, -0.0881f, -0.0499f},
    {-0.1262f, -0.0982f, -0.0778f}};
static const float k_rgb_bias[3] = {-0.0329f, -0.0718f, -0.0851f};

/* x0 [C, h, w] -> rgb [h, w, 3] */
static void latent_preview(const float *x0, int c, int h, int w, uint8_t *rgb) {
    for (int i = 0; i < h * w; i++) {
        for (int k = 0; k < 3; k++) {
            float v = k_rgb_bias[k];
            for (int ch = 0; ch < c && ch < 16; ch++) v += x0[(size_t)ch * h * w + i] * k_rgb[ch][k];
            v = (v + 1.0f) * 127.5f;
            rgb[i * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
        }
    }
}

/* ---- generation ------------------------------------------------------------ */

typedef struct gen_state {
    int B;                 /* images                            */
    int cfg;               /* CFG is active for at least one step */
    int C, h, w;
    int nfeat;             /* B or 2B caption features          */
    float **feat;          /* host features per DiT row         */
    int *feat_len;
    zt featt[2 * DIT_MAX_BATCH];
    const zt *featp[2 * DIT_MAX_BATCH];
    dit_batch bt_cfg, bt_pos;
    zt x, xin, tt, out, pred; /* [B|G, C, h, w] / [G]          */
    int steps;
    zt ttab;               /* [steps, G] every step's t, uploaded once */
} gen_state;

static int64_t seed_random(void) {
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) v = 0;
        close(fd);
    }
    if (!v) v = (uint64_t)(ztime_now() * 1e9);
    return (int64_t)(v & 0xffffffffu); /* A1111-style 32-bit seeds */
}

/* Build (measure == 1: only size) the per-generation state in the persist arena. */
static void setup_persist(zimage_ctx *ctx, zexec *zx, gen_state *g) {
    int B = g->B, G = g->cfg ? 2 * B : B;
    for (int i = 0; i < g->nfeat; i++) {
        g->featt[i] = zx_tensor2(zx, zx->be->act, g->feat_len[i], ctx->te_cfg.hidden_size);
        zx_upload(zx, &g->featt[i], g->feat[i], ZT_F32);
        g->featp[i] = &g->featt[i];
    }
    g->x = zx_tensor4(zx, ZT_F32, B, g->C, g->h, g->w);
    g->xin = zx_tensor4(zx, ZT_F32, G, g->C, g->h, g->w);
    g->out = zx_tensor4(zx, ZT_F32, G, g->C, g->h, g->w);
    g->pred = zx_tensor4(zx, ZT_F32, B, g->C, g->h, g->w);
    int64_t ne1[1] = {G};
    g->tt = zx_tensor(zx, ZT_F32, 1, ne1);
    g->ttab = zx_tensor2(zx, ZT_F32, g->steps, G);
    dit_batch_prepare(zx, &ctx->dit, g->featp, B, g->h, g->w, &g->bt_pos);
    if (g->cfg) dit_batch_prepare(zx, &ctx->dit, g->featp, G, g->h, g->w, &g->bt_cfg);
}

static int report(const zimage_params *p, const char *stage, int step, int steps, double t0, const uint8_t *prev,
                  int pw, int ph, const float *lat) {
    if (!p->progress) return 0;
    zimage_progress pr = {stage, step, steps, ztime_now() - t0, prev, pw, ph, lat, NULL, -1, -1};
    return p->progress(&pr, p->progress_user);
}

/* The model part of a step: x -> xin ([x] or [x; x] with CFG) -> DiT -> out.
 * Same pointers and scalars every step, so it can be captured as a graph;
 * the timesteps are uploaded to g->tt before it runs. */
static void step_forward(zimage_ctx *ctx, zexec *zx, gen_state *g, int use_cfg) {
    int B = g->B, G = use_cfg ? 2 * B : B;
    zt xin = g->xin, out = g->out, tt = g->tt;
    xin.ne[0] = G;
    out.ne[0] = G;
    tt.ne[0] = G;
    zop_copy_rows(zx, &xin, 0, &g->x, 0, zt_rows(&g->x));
    if (use_cfg) zop_copy_rows(zx, &xin, zt_rows(&g->x), &g->x, 0, zt_rows(&g->x));
    dit_forward(zx, &ctx->dit, use_cfg ? &g->bt_cfg : &g->bt_pos, &xin, &tt, &out);
}

static void graphs_clear(zimage_ctx *ctx) {
    for (int i = 0; i < ZGRAPH_CACHE; i++)
        if (ctx->graphs[i].graph) {
            ctx->be->vt->graph_destroy(ctx->be, ctx->graphs[i].graph);
            ctx->graphs[i].graph = NULL;
        }
}

/* The cached graph for this step variant, capturing it on a miss (the LRU
 * slot is replaced).  On a miss the step first runs eagerly (so backends can
 * pick and tune their kernels with host synchronisation, which a capture
 * forbids), then is captured without running: *ran = 1 says this step's
 * output is already computed.  Returns ZE_OK with *graph set, or an error. */
static int step_graph(zimage_ctx *ctx, zexec *zx, gen_state *g, int use_cfg, void **graph, int *ran) {
    *ran = 0;
    zgraph_key k;
    memset(&k, 0, sizeof k);
    k.B = g->B;
    k.h = g->h;
    k.w = g->w;
    k.cfg = g->cfg;
    k.use_cfg = use_cfg;
    k.nfeat = g->nfeat;
    for (int b = 0; b < g->nfeat && b < 2 * DIT_MAX_BATCH; b++) k.feat_len[b] = g->feat_len[b];
    k.persist_base = ctx->persist.base;
    k.scratch_base = ctx->scratch.base;
    k.persist_cap = ctx->persist.cap;
    k.scratch_cap = ctx->scratch.cap;
    zgraph_entry *slot = NULL;
    for (int i = 0; i < ZGRAPH_CACHE; i++) {
        zgraph_entry *en = &ctx->graphs[i];
        if (en->graph && !memcmp(&en->key, &k, sizeof k)) {
            en->used = ++ctx->graph_clock;
            *graph = en->graph;
            return ZE_OK;
        }
        if (!slot || !en->graph || (slot->graph && en->used < slot->used)) slot = en;
    }
    if (slot->graph) {
        ctx->be->vt->graph_destroy(ctx->be, slot->graph);
        slot->graph = NULL;
    }
    size_t mark = zx_mark(zx);
    step_forward(ctx, zx, g, use_cfg);
    if (!zx_ok(zx)) return zx->status;
    *ran = 1;
    zx_release(zx, mark);
    ZTRY(ctx->be->vt->capture_begin(ctx->be));
    zop_profile_capturing(1);
    step_forward(ctx, zx, g, use_cfg);
    zop_profile_capturing(0);
    void *gr = NULL;
    int crc = ctx->be->vt->capture_end(ctx->be, &gr);
    if (!zx_ok(zx)) {
        if (gr) ctx->be->vt->graph_destroy(ctx->be, gr);
        return zx->status;
    }
    if (crc) return crc;
    zx_release(zx, mark);
    slot->key = k;
    slot->graph = gr;
    slot->used = ++ctx->graph_clock;
    *graph = gr;
    return ZE_OK;
}

/* Guidance and the Euler update with the sign flip: x += dt * (-pred). */
static void step_update(zexec *zx, gen_state *g, int use_cfg, float w, float norm_k, float dt) {
    int B = g->B;
    zt pred = g->out;
    pred.ne[0] = B;
    if (use_cfg) {
        zt neg = pred;
        neg.data = g->out.data ? (char *)g->out.data + zt_nbytes(&pred) : NULL;
        zop_cfg_combine(zx, &g->pred, &pred, &neg, w, norm_k);
        pred = g->pred;
    }
    zop_axpby(zx, &g->x, -dt, &pred, 1.0f);
}

/* t for step i: a device-side copy from the table uploaded before the loop
 * (no host synchronisation inside the loop). */
static void select_t(zexec *zx, gen_state *g, int i) {
    zt row = g->tt;
    row.ndim = 2;
    row.ne[0] = 1;
    row.ne[1] = g->tt.ne[0];
    zop_copy_rows(zx, &row, 0, &g->ttab, i, 1);
}

/* Initial latents [B, C, h, w] on the host: one draw per item (diffusers:
 * one randn call for an item's n images) or the item's init_latents.  Runs
 * on its own thread while the prompt is tokenized and encoded (the noise is
 * a few ms of CPU work that would otherwise sit on the critical path). */
typedef struct {
    const zimage_params *items;
    const zimage_result *res;
    int n;
    size_t per;
    float *lat;
    int rc;
    int started;
    pthread_t th;
} noise_job;

static void *noise_run(void *arg) {
    noise_job *nj = arg;
    /* half the cores for the Box-Muller pass: the other half stays free for
     * the thread that drives the text encoder meanwhile */
    int nt = omp_get_num_procs() / 2;
    omp_set_num_threads(nt > 0 ? nt : 1);
    for (int i = 0, j = 0; i < nj->n && !nj->rc; i++) {
        float *dst = nj->lat + (size_t)j * nj->per;
        size_t cnt = nj->per * (size_t)nj->items[i].batch;
        if (nj->items[i].init_latents)
            memcpy(dst, nj->items[i].init_latents, cnt * sizeof(float));
        else
            nj->rc = zrng_randn(nj->items[i].rng, (uint64_t)nj->res[i].seeds[0], dst, (int64_t)cnt);
        j += nj->items[i].batch;
    }
    return NULL;
}

static void noise_start(noise_job *nj) {
    nj->started = pthread_create(&nj->th, NULL, noise_run, nj) == 0;
    if (!nj->started) noise_run(nj); /* no thread: draw it now */
}

static int noise_join(noise_job *nj) {
    if (nj->started) pthread_join(nj->th, NULL);
    nj->started = 0;
    return nj->rc;
}

static int generate_inner(zimage_ctx *ctx, const zimage_params *items, int n, zimage_result *res, gen_state *g,
                          float **host_lat, double t0) {
    zerr *e = &ctx->err;
    const zimage_params *p0 = &items[0];
    for (int i = 0; i < n; i++) {
        ZTRY(zimage_validate(ctx, &items[i]));
        if (items[i].width != p0->width || items[i].height != p0->height || items[i].steps != p0->steps ||
            items[i].cfg_scale != p0->cfg_scale || items[i].cfg_normalization != p0->cfg_normalization ||
            items[i].cfg_truncation != p0->cfg_truncation)
            return zerr_set(e, ZE_INVALID, "batched requests must share size, steps and cfg settings");
    }
    int B = 0;
    for (int i = 0; i < n; i++) B += items[i].batch;
    if (B > DIT_MAX_BATCH / 2) return zerr_set(e, ZE_INVALID, "too many images in one batch (%d > %d)", B, DIT_MAX_BATCH / 2);
    int f = vae_factor(ctx);
    g->B = B;
    g->steps = p0->steps;
    g->C = ctx->dit_cfg.in_channels;
    g->h = p0->height / f;
    g->w = p0->width / f;
    float guidance = p0->cfg_scale - 1.0f; /* diffusers' guidance_scale */
    g->cfg = guidance > 0;
    int steps = p0->steps;

    /* seeds, then the noise on its own thread */
    for (int i = 0, j = 0; i < n; i++) {
        int64_t s = items[i].seed >= 0 ? items[i].seed : seed_random();
        for (int k = 0; k < items[i].batch; k++, j++) res[i].seeds[k] = s;
    }
    size_t per = (size_t)g->C * (size_t)g->h * (size_t)g->w;
    *host_lat = malloc(per * (size_t)B * sizeof(float));
    if (!*host_lat) return zerr_set(e, ZE_NOMEM, "out of memory");
    noise_job nj = {items, res, n, per, *host_lat, ZE_OK, 0, 0};
    noise_start(&nj);

    /* tokenize + encode (through the cache) */
    double ta = ztime_now();
    g->nfeat = g->cfg ? 2 * B : B;
    int32_t **ids = calloc((size_t)2 * n, sizeof *ids);
    int *nids = calloc((size_t)2 * n, sizeof *nids);
    if (!ids || !nids) {
        free(ids);
        free(nids);
        noise_join(&nj);
        return zerr_set(e, ZE_NOMEM, "out of memory");
    }
    int rc = ZE_OK;
    for (int i = 0; i < n && !rc; i++) {
        rc = zpipe_tokenize(ctx, items[i].prompt, items[i].max_sequence_length, &ids[i], &nids[i]);
        if (!rc && g->cfg)
            rc = zpipe_tokenize(ctx, items[i].negative_prompt ? items[i].negative_prompt : "",
                                items[i].max_sequence_length, &ids[n + i], &nids[n + i]);
    }
    double tb = ztime_now();
    for (int i = 0; i < n; i++) res[i].timings.tokenize = tb - ta;
    zop_profile_phase("te");
    if (!rc && report(p0, "encode", 0, steps, t0, NULL, 0, 0, NULL)) rc = zerr_set(e, ZE_CANCELLED, "cancelled");
    for (int s = 0; s < (g->cfg ? 2 : 1) && !rc; s++) {
        for (int i = 0, row = s * B; i < n && !rc; i++) {
            const float *fe;
            int hit;
            int k = s * n + i;
            rc = zpipe_encode_ids(ctx, ids[k], nids[k], &fe, &hit);
            if (rc) break;
            if (s == 0) res[i].prompt_cache_hit = hit;
            size_t bytes = (size_t)nids[k] * (size_t)ctx->te_cfg.hidden_size * sizeof(float);
            for (int b = 0; b < items[i].batch; b++, row++) {
                g->feat[row] = malloc(bytes);
                if (!g->feat[row]) {
                    rc = zerr_set(e, ZE_NOMEM, "out of memory");
                    break;
                }
                memcpy(g->feat[row], fe, bytes);
                g->feat_len[row] = nids[k];
            }
        }
    }
    for (int i = 0; i < 2 * n; i++) free(ids[i]);
    free(ids);
    free(nids);
    if (rc) {
        noise_join(&nj);
        return rc;
    }
    double tc = ztime_now();
    for (int i = 0; i < n; i++) res[i].timings.encode = tc - tb;
    zop_profile_phase("setup");

    /* schedule */
    float *sig = malloc(sizeof(float) * (size_t)(steps + 1));
    float *tin = malloc(sizeof(float) * (size_t)steps);
    float *tsteps = malloc(sizeof(float) * (size_t)steps);
    if (!sig || !tin || !tsteps) {
        rc = zerr_set(e, ZE_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = zsched_sigmas(&ctx->sched_cfg, steps, sig, tin, tsteps, e))) goto done;

    /* initial latents (drawn while encoding) */
    if ((rc = noise_join(&nj))) {
        zerr_set(e, rc, "random number generation failed");
        goto done;
    }

    double tn = ztime_now();
    ZLOGD("setup: schedule + waiting for the noise %.2f ms", (tn - tc) * 1e3);
    /* persistent state: measure, reserve, build */
    zexec zx;
    zx_begin(&zx, ctx->be, &ctx->persist, 1);
    setup_persist(ctx, &zx, g);
    if (!zx_ok(&zx)) {
        rc = zx.status;
        goto done;
    }
    if ((rc = zpipe_arena_reserve(ctx, &ctx->persist, ctx->persist.peak))) goto done;
    zx_begin(&zx, ctx->be, &ctx->persist, 0);
    setup_persist(ctx, &zx, g);
    zx_upload(&zx, &g->x, *host_lat, ZT_F32);
    {
        int64_t G = g->ttab.ne[1];
        float *tab = malloc(sizeof(float) * (size_t)(steps * G));
        if (!tab) {
            rc = zerr_set(e, ZE_NOMEM, "out of memory");
            goto done;
        }
        for (int i = 0; i < steps; i++)
            for (int64_t b = 0; b < G; b++) tab[(size_t)i * G + b] = tin[i];
        zx_upload(&zx, &g->ttab, tab, ZT_F32);
        free(tab);
    }
    if (!zx_ok(&zx)) {
        rc = zx.status;
        goto done;
    }
    double tpst = ztime_now();
    ZLOGD("setup: persistent state (features, RoPE tables, caption stream) %.2f ms", (tpst - tn) * 1e3);
    /* per-step scratch */
    zexec sx;
    zx_begin(&sx, ctx->be, &ctx->scratch, 1);
    step_forward(ctx, &sx, g, g->cfg);
    step_update(&sx, g, g->cfg, guidance, p0->cfg_normalization, 0.0f);
    if (!zx_ok(&sx)) {
        rc = sx.status;
        goto done;
    }
    if ((rc = zpipe_arena_reserve(ctx, &ctx->scratch, ctx->scratch.peak))) goto done;

    /* denoise */
    int pw = g->w, ph = g->h;
    uint8_t *prev = NULL;
    float *x0 = NULL;
    if (p0->preview && p0->progress) {
        prev = malloc((size_t)pw * (size_t)ph * 3);
        x0 = malloc(per * sizeof(float) * 2);
    }
    double td = ztime_now();
    ZLOGD("setup: step scratch sized %.2f ms", (td - tpst) * 1e3);
    for (int i = 0; i < n; i++) res[i].timings.setup = td - tc;
    zop_profile_phase("dit");
    res[0].timings.step_min = 1e30;
    /* step 0 of N: the loop starts now (encoding and setup are behind us) */
    if (report(p0, "denoise", 0, steps, t0, NULL, 0, 0, NULL)) rc = zerr_set(e, ZE_CANCELLED, "cancelled");
    for (int i = 0; i < steps && !rc; i++) {
        double ts = ztime_now();
        int use_cfg = g->cfg;
        float w = guidance;
        if (use_cfg && p0->cfg_truncation <= 1.0f && tin[i] > p0->cfg_truncation) {
            use_cfg = 0; /* diffusers: guidance 0 for this step -> positives only */
            w = 0;
        }
        zx_begin(&sx, ctx->be, &ctx->scratch, 0);
        select_t(&sx, g, i);
        const zbackend_vt *vt = ctx->be->vt;
        if (vt->capture_begin && !getenv("ZIMAGE_NO_GRAPHS") && !zop_profiling()) {
            /* the forward as a graph, captured once per shape and reused across steps and generations */
            void *gr = NULL;
            int ran = 0;
            if (zx_ok(&sx) && (rc = step_graph(ctx, &sx, g, use_cfg, &gr, &ran))) break;
            if (zx_ok(&sx) && !ran && (rc = vt->graph_launch(ctx->be, gr))) break;
        } else {
            step_forward(ctx, &sx, g, use_cfg);
        }
        zop_profile_phase("update");
        step_update(&sx, g, use_cfg, w, p0->cfg_normalization, sig[i + 1] - sig[i]);
        zop_profile_phase("dit");
        if (!zx_ok(&sx)) {
            rc = sx.status;
            break;
        }
        if (p0->progress && vt->sync && (rc = vt->sync(ctx->be))) break;
        double st = ztime_now() - ts;
        for (int k = 0; k < n; k++) {
            if (st < res[k].timings.step_min || i == 0) res[k].timings.step_min = st;
            if (st > res[k].timings.step_max) res[k].timings.step_max = st;
        }
        const uint8_t *pv = NULL;
        if (prev && x0) {
            /* x0 estimate of image 0: x_{i+1} + sigma_{i+1} * pred (pred ~ x0 - eps) */
            zt x1 = {.data = g->x.data, .dtype = ZT_F32, .ndim = 1, .ne = {(int64_t)per}};
            zt p1 = {.data = use_cfg ? g->pred.data : g->out.data, .dtype = ZT_F32, .ndim = 1, .ne = {(int64_t)per}};
            if (!zt_download_f32(ctx->be, &x1, x0) && !zt_download_f32(ctx->be, &p1, x0 + per)) {
                for (size_t k = 0; k < per; k++) x0[k] += sig[i + 1] * x0[per + k];
                latent_preview(x0, g->C, ph, pw, prev);
                pv = prev;
            }
        }
        const float *lat = NULL;
        if (p0->progress_latents && p0->progress) {
            if ((rc = zt_download_f32(ctx->be, &g->x, *host_lat))) break;
            lat = *host_lat;
        }
        if (report(p0, "denoise", i + 1, steps, t0, pv, pw, ph, lat)) rc = zerr_set(e, ZE_CANCELLED, "cancelled");
    }
    free(prev);
    free(x0);
    if (rc) goto done;
    if (ctx->be->vt->sync && (rc = ctx->be->vt->sync(ctx->be))) goto done;
    double tdd = ztime_now();
    int want_lat = 0;
    for (int i = 0; i < n; i++) want_lat |= items[i].out_latents != NULL;
    if (want_lat && zt_download_f32(ctx->be, &g->x, *host_lat)) {
        rc = ctx->err.code ? ctx->err.code : ZE_BACKEND;
        goto done;
    }
    for (int k = 0; k < n; k++) {
        res[k].timings.denoise = tdd - td;
        res[k].timings.step_min = res[0].timings.step_min;
        res[k].timings.step_max = res[0].timings.step_max;
    }
    for (int i = 0, j = 0; want_lat && i < n; i++) {
        if (items[i].out_latents) memcpy(items[i].out_latents, *host_lat + (size_t)j * per, per * items[i].batch * sizeof(float));
        j += items[i].batch;
    }

    /* decode one image at a time (bounded memory) */
    if (report(p0, "decode", steps, steps, t0, NULL, 0, 0, NULL)) {
        rc = zerr_set(e, ZE_CANCELLED, "cancelled");
        goto done;
    }
    {
        int H = p0->height, W = p0->width;
        zt lat1 = g->x;
        lat1.ne[0] = 1;
        zop_profile_phase("vae");
        for (int pass = 0; pass < 2 && !rc; pass++) {
            if (pass == 1 && (rc = zpipe_arena_reserve(ctx, &ctx->scratch, ctx->scratch.peak))) break;
            for (int j = 0; j < (pass == 0 ? 1 : B) && !rc; j++) {
                zx_begin(&sx, ctx->be, &ctx->scratch, pass == 0);
                zt lj = lat1;
                lj.data = g->x.data ? (char *)g->x.data + (size_t)j * per * sizeof(float) : NULL;
                zt img = zx_tensor4(&sx, ZT_F32, 1, H, W, 3);
                vae_decode(&sx, &ctx->vae, &lj, &img);
                if (!zx_ok(&sx)) {
                    rc = sx.status;
                    break;
                }
                if (pass == 0) continue;
                size_t npx = (size_t)H * (size_t)W * 3;
                /* image j belongs to item i, index k */
                int i = 0, k = j;
                while (k >= items[i].batch) k -= items[i++].batch;
                if (ctx->be->vt->download_rgb8) { /* converted on the device: 1 byte per value over PCIe */
                    if ((rc = ctx->be->vt->download_rgb8(ctx->be, &img, res[i].images[k]))) break;
                } else {
                    float *buf = malloc(npx * sizeof(float));
                    if (!buf) {
                        rc = zerr_set(e, ZE_NOMEM, "out of memory");
                        break;
                    }
                    if ((rc = zt_download_f32(ctx->be, &img, buf))) {
                        free(buf);
                        break;
                    }
                    zimg_to_u8(buf, res[i].images[k], npx);
                    free(buf);
                }
                if (p0->progress) {
                    zimage_progress pr = {"image", j + 1, B,    ztime_now() - t0, NULL,
                                          0,       0,     NULL, res[i].images[k], j, res[i].seeds[k]};
                    (void)p0->progress(&pr, p0->progress_user); /* no cancel here: the caller may be
                                                                  reading earlier images */
                }
            }
        }
    }
    if (!rc) {
        double te = ztime_now();
        for (int k = 0; k < n; k++) {
            res[k].timings.decode = te - tdd;
            res[k].timings.total = te - t0;
            size_t in_use = 0, peak = 0;
            if (ctx->be->vt->mem_stats) ctx->be->vt->mem_stats(ctx->be, &in_use, &peak);
            res[k].timings.peak_device_bytes = peak;
        }
    }
done:
    noise_join(&nj);
    free(sig);
    free(tin);
    free(tsteps);
    return rc;
}

void zimage_result_free(zimage_result *r) {
    if (!r) return;
    if (r->images)
        for (int i = 0; i < r->n; i++) free(r->images[i]);
    free(r->images);
    free(r->seeds);
    memset(r, 0, sizeof *r);
}

int zimage_generate_many(zimage_ctx *ctx, const zimage_params *items, int n, zimage_result *results) {
    zerr_clear(&ctx->err);
    if (n < 1 || !items || !results) return zerr_set(&ctx->err, ZE_INVALID, "no requests");
    double t0 = ztime_now();
    memset(results, 0, sizeof *results * (size_t)n);
    int rc = ZE_OK;
    for (int i = 0; i < n && !rc; i++) {
        zimage_result *r = &results[i];
        int b = items[i].batch > 0 && items[i].batch <= DIT_MAX_BATCH ? items[i].batch : 1;
        r->n = b;
        r->width = items[i].width;
        r->height = items[i].height;
        r->images = calloc((size_t)b, sizeof *r->images);
        r->seeds = calloc((size_t)b, sizeof *r->seeds);
        if (!r->images || !r->seeds) {
            rc = zerr_set(&ctx->err, ZE_NOMEM, "out of memory");
            break;
        }
        size_t px = items[i].width > 0 && items[i].height > 0 ? (size_t)items[i].width * (size_t)items[i].height * 3 : 1;
        for (int k = 0; k < b && !rc; k++)
            if (!(r->images[k] = calloc(px, 1))) rc = zerr_set(&ctx->err, ZE_NOMEM, "out of memory");
    }
    gen_state g;
    memset(&g, 0, sizeof g);
    float *host_lat = NULL;
    g.feat = calloc(2 * DIT_MAX_BATCH, sizeof *g.feat);
    g.feat_len = calloc(2 * DIT_MAX_BATCH, sizeof *g.feat_len);
    if (!rc && (!g.feat || !g.feat_len)) rc = zerr_set(&ctx->err, ZE_NOMEM, "out of memory");
    if (!rc) rc = generate_inner(ctx, items, n, results, &g, &host_lat, t0);
    if (g.feat)
        for (int i = 0; i < 2 * DIT_MAX_BATCH; i++) free(g.feat[i]);
    free(g.feat);
    free(g.feat_len);
    free(host_lat);
    if (rc) {
        for (int i = 0; i < n; i++) zimage_result_free(&results[i]);
        if (!ctx->err.msg[0]) zerr_set(&ctx->err, rc, "%s", zerr_name(rc));
    }
    return rc;
}

int zimage_generate(zimage_ctx *ctx, const zimage_params *p, zimage_result *out) {
    return zimage_generate_many(ctx, p, 1, out);
}
