/* config.c - the components' JSON configs (see config.h), parsed with jansson.
 *
 * Every loader starts from the built-in Z-Image-Turbo defaults (spec 1.2),
 * overrides the keys present, then checks.  A wrong type or impossible value
 * is an error naming the file and the key; a setting that would change the
 * model into something this engine does not implement (quant convs, dynamic
 * shifting, multi-resolution patch lists, biased attention, RoPE scaling, ...)
 * is ZE_UNSUPPORTED, worded as such.
 *
 * Derived DiT sizes follow diffusers (transformer_z_image.py):
 *   head_dim = dim / n_heads, ffn_dim = int(dim / 3 * 8) (Python float
 *   division then truncation; double here), adaln_dim = min(dim, 256).
 *   n_kv_heads is parsed but, as in diffusers (ZImageTransformerBlock builds
 *   Attention(heads=n_heads) and ignores it), set to n_heads: no GQA.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void qwen3_config_default(qwen3_config *c) {
    c->hidden_size = 2560;
    c->intermediate_size = 9728;
    c->num_hidden_layers = 36;
    c->num_attention_heads = 32;
    c->num_key_value_heads = 8;
    c->head_dim = 128;
    c->vocab_size = 151936;
    c->rms_norm_eps = 1e-6f;
    c->rope_theta = 1e6;
    c->max_position_embeddings = 40960;
}

void dit_config_default(dit_config *c) {
    c->patch_size = 2;
    c->f_patch_size = 1;
    c->in_channels = 16;
    c->dim = 3840;
    c->n_layers = 30;
    c->n_refiner_layers = 2;
    c->n_heads = 30;
    c->n_kv_heads = 30;
    c->norm_eps = 1e-5f;
    c->qk_norm = 1;
    c->cap_feat_dim = 2560;
    c->axes_dims[0] = 32, c->axes_dims[1] = 48, c->axes_dims[2] = 48;
    c->axes_lens[0] = 1536, c->axes_lens[1] = 512, c->axes_lens[2] = 512;
    c->rope_theta = 256.0;
    c->t_scale = 1000.0f;
    c->head_dim = 128;
    c->ffn_dim = 10240;
    c->adaln_dim = 256;
}

void vae_config_default(vae_config *c) {
    memset(c, 0, sizeof *c);
    c->in_channels = 3;
    c->out_channels = 3;
    c->latent_channels = 16;
    c->n_blocks = 4;
    c->block_out_channels[0] = 128, c->block_out_channels[1] = 256;
    c->block_out_channels[2] = 512, c->block_out_channels[3] = 512;
    c->layers_per_block = 2;
    c->norm_num_groups = 32;
    c->mid_block_add_attention = 1;
    c->scaling_factor = 0.3611f;
    c->shift_factor = 0.1159f;
    c->use_quant_conv = 0;
    c->use_post_quant_conv = 0;
}

void sched_config_default(sched_config *c) {
    c->num_train_timesteps = 1000;
    c->shift = 3.0f;
    c->use_dynamic_shifting = 0;
}

/* ---- JSON helpers ------------------------------------------------------------ */

typedef struct cfg {
    const char *file;
    zerr *e;
    json_t *root;
    const char *sect;  /* "" or "rope_parameters." (prefix of key names in messages) */
} cfg;

static const char *kind_of(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static int cfg_open(cfg *c, const char *path, zerr *e) {
    c->file = path;
    c->e = e;
    c->root = NULL;
    c->sect = "";
    if (!path || !*path) return zerr_set(e, ZE_INVALID, "no config path given");
    FILE *fp = fopen(path, "rb");
    if (!fp) return zerr_set(e, ZE_IO, "cannot open %s: %s", path, strerror(errno));
    json_error_t jerr;
    c->root = json_loadf(fp, JSON_REJECT_DUPLICATES, &jerr);
    fclose(fp);
    if (!c->root)
        return zerr_set(e, ZE_FORMAT, "%s: malformed JSON (line %d, column %d): %s", path, jerr.line, jerr.column,
                        jerr.text);
    if (!json_is_object(c->root)) {
        int rc = zerr_set(e, ZE_FORMAT, "%s: expected a JSON object, found %s", path, kind_of(c->root));
        json_decref(c->root);
        c->root = NULL;
        return rc;
    }
    return ZE_OK;
}

static void cfg_close(cfg *c) {
    json_decref(c->root);
    c->root = NULL;
}

/* Value of key in obj; NULL if absent or null (keep the default). */
static json_t *val(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v) ? v : NULL;
}

static int bad_type(cfg *c, const char *key, const json_t *v, const char *want) {
    return zerr_set(c->e, ZE_FORMAT, "%s: key '%s%s' must be %s, found %s", c->file, c->sect, key, want, kind_of(v));
}

static int get_int(cfg *c, json_t *obj, const char *key, int *dst, long lo, long hi) {
    json_t *v = val(obj, key);
    if (!v) return ZE_OK;
    double d;
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v))) d = json_real_value(v);
    else return bad_type(c, key, v, "an integer");
    if (d < (double)lo || d > (double)hi)
        return zerr_set(c->e, ZE_FORMAT, "%s: key '%s' = %.17g is out of range [%ld, %ld]", c->file, key, d, lo, hi);
    *dst = (int)d;
    return ZE_OK;
}

/* Positive finite number (any JSON number). */
static int get_num(cfg *c, json_t *obj, const char *key, double *dst, double lo, double hi) {
    json_t *v = val(obj, key);
    if (!v) return ZE_OK;
    if (!json_is_number(v)) return bad_type(c, key, v, "a number");
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return zerr_set(c->e, ZE_FORMAT, "%s: key '%s%s' = %g is out of range [%g, %g]", c->file, c->sect, key, d,
                        lo, hi);
    *dst = d;
    return ZE_OK;
}

static int get_float(cfg *c, json_t *obj, const char *key, float *dst, double lo, double hi) {
    double d = *dst;
    ZTRY(get_num(c, obj, key, &d, lo, hi));
    *dst = (float)d;
    return ZE_OK;
}

static int get_bool(cfg *c, json_t *obj, const char *key, int *dst) {
    json_t *v = val(obj, key);
    if (!v) return ZE_OK;
    if (!json_is_boolean(v)) return bad_type(c, key, v, "true or false");
    *dst = json_is_true(v);
    return ZE_OK;
}

/* A string key that, when present, must equal one of the allowed values. */
static int want_str(cfg *c, json_t *obj, const char *key, const char *a, const char *b) {
    json_t *v = val(obj, key);
    if (!v) return ZE_OK;
    if (!json_is_string(v)) return bad_type(c, key, v, "a string");
    const char *s = json_string_value(v);
    if (!strcmp(s, a) || (b && !strcmp(s, b))) return ZE_OK;
    return zerr_set(c->e, ZE_UNSUPPORTED, "%s: key '%s' = \"%s\" is not supported (expected \"%s\")", c->file, key, s,
                    a);
}

/* A boolean key that must not be true. */
static int want_false(cfg *c, json_t *obj, const char *key, const char *why) {
    int b = 0;
    ZTRY(get_bool(c, obj, key, &b));
    if (b) return zerr_set(c->e, ZE_UNSUPPORTED, "%s: key '%s' is true: %s", c->file, key, why);
    return ZE_OK;
}

/* List of n_max ints at most; *n gets its length (must be >= n_min). */
static int get_int_list(cfg *c, json_t *obj, const char *key, int *dst, int *n, int n_min, int n_max, long lo,
                        long hi) {
    json_t *v = val(obj, key);
    if (!v) return ZE_OK;
    if (!json_is_array(v)) return bad_type(c, key, v, "a list of integers");
    size_t len = json_array_size(v);
    if ((int)len < n_min || (int)len > n_max) {
        if (n_min == n_max)
            return zerr_set(c->e, ZE_FORMAT, "%s: key '%s' must list %d values, found %zu", c->file, key, n_min, len);
        return zerr_set(c->e, ZE_FORMAT, "%s: key '%s' must list %d to %d values, found %zu", c->file, key, n_min,
                        n_max, len);
    }
    for (size_t i = 0; i < len; i++) {
        json_t *x = json_array_get(v, i);
        if (!json_is_integer(x)) return zerr_set(c->e, ZE_FORMAT, "%s: key '%s'[%zu] must be an integer, found %s",
                                                 c->file, key, i, kind_of(x));
        json_int_t iv = json_integer_value(x);
        if (iv < lo || iv > hi)
            return zerr_set(c->e, ZE_FORMAT, "%s: key '%s'[%zu] = %lld is out of range [%ld, %ld]", c->file, key, i,
                            (long long)iv, lo, hi);
        dst[i] = (int)iv;
    }
    *n = (int)len;
    return ZE_OK;
}

/* all_patch_size / all_f_patch_size: a one-entry list (or a bare integer). */
static int get_single(cfg *c, json_t *obj, const char *key, int *dst) {
    json_t *v = val(obj, key);
    if (!v) return ZE_OK;
    if (json_is_integer(v)) return get_int(c, obj, key, dst, 1, 64);
    if (json_is_array(v) && json_array_size(v) > 1)
        return zerr_set(c->e, ZE_UNSUPPORTED,
                        "%s: key '%s' lists %zu patch sizes; only single-resolution models (one entry) are "
                        "supported, this is not Z-Image-Turbo",
                        c->file, key, json_array_size(v));
    int n = 0;
    return get_int_list(c, obj, key, dst, &n, 1, 1, 1, 64);
}

#define BIG 1000000000L

/* ---- text encoder ------------------------------------------------------------ */

int qwen3_config_load(qwen3_config *q, const char *path, zerr *e) {
    qwen3_config_default(q);
    cfg c;
    ZTRY(cfg_open(&c, path, e));
    json_t *r = c.root;
    int rc;
    double eps = q->rms_norm_eps;
    if ((rc = want_str(&c, r, "model_type", "qwen3", NULL)) || (rc = want_str(&c, r, "hidden_act", "silu", NULL)) ||
        (rc = want_false(&c, r, "attention_bias", "biased q/k/v projections are not implemented (not Qwen3)")) ||
        (rc = want_false(&c, r, "use_sliding_window", "sliding-window attention is not implemented")) ||
        (rc = get_int(&c, r, "hidden_size", &q->hidden_size, 1, BIG)) ||
        (rc = get_int(&c, r, "intermediate_size", &q->intermediate_size, 1, BIG)) ||
        (rc = get_int(&c, r, "num_hidden_layers", &q->num_hidden_layers, 1, 100000)) ||
        (rc = get_int(&c, r, "num_attention_heads", &q->num_attention_heads, 1, 100000)) ||
        (rc = get_int(&c, r, "num_key_value_heads", &q->num_key_value_heads, 1, 100000)) ||
        (rc = get_int(&c, r, "head_dim", &q->head_dim, 1, 100000)) ||
        (rc = get_int(&c, r, "vocab_size", &q->vocab_size, 1, BIG)) ||
        (rc = get_int(&c, r, "max_position_embeddings", &q->max_position_embeddings, 1, BIG)) ||
        (rc = get_num(&c, r, "rms_norm_eps", &eps, 1e-30, 1.0)) ||
        (rc = get_num(&c, r, "rope_theta", &q->rope_theta, 1e-30, 1e30)))
        goto done;
    q->rms_norm_eps = (float)eps;
    /* transformers 4.x: rope_scaling (null for plain RoPE) */
    json_t *rs = val(r, "rope_scaling");
    if (rs) {
        json_t *t = json_is_object(rs) ? json_object_get(rs, "rope_type") : NULL;
        if (!t && json_is_object(rs)) t = json_object_get(rs, "type");
        if (!t || !json_is_string(t) || strcmp(json_string_value(t), "default")) {
            rc = zerr_set(e, ZE_UNSUPPORTED, "%s: key 'rope_scaling' is set: RoPE scaling is not supported", path);
            goto done;
        }
    }
    /* transformers 5.x: rope_parameters {rope_theta, rope_type} */
    json_t *rp = val(r, "rope_parameters");
    if (rp) {
        if (!json_is_object(rp)) {
            rc = bad_type(&c, "rope_parameters", rp, "an object");
            goto done;
        }
        c.sect = "rope_parameters.";
        if ((rc = get_num(&c, rp, "rope_theta", &q->rope_theta, 1e-30, 1e30))) goto done;
        c.sect = "";
        json_t *t = val(rp, "rope_type");
        if (t && (!json_is_string(t) || strcmp(json_string_value(t), "default"))) {
            rc = zerr_set(e, ZE_UNSUPPORTED, "%s: key 'rope_parameters.rope_type' = %s: only \"default\" RoPE is supported",
                          path, json_is_string(t) ? json_string_value(t) : kind_of(t));
            goto done;
        }
    }
    rc = qwen3_config_check(q, e);
    if (rc) zerr_prefix(e, "%s", path);
done:
    cfg_close(&c);
    return rc;
}

int qwen3_config_check(const qwen3_config *q, zerr *e) {
    if (q->hidden_size <= 0 || q->intermediate_size <= 0 || q->vocab_size <= 0 || q->head_dim <= 0 ||
        q->num_attention_heads <= 0 || q->num_key_value_heads <= 0)
        return zerr_set(e, ZE_MODEL, "text encoder config: sizes must be positive");
    if (q->num_hidden_layers < 2)
        return zerr_set(e, ZE_MODEL,
                        "text encoder config: num_hidden_layers = %d, need at least 2 (Z-Image uses the hidden state "
                        "before the last layer)",
                        q->num_hidden_layers);
    if (q->num_attention_heads % q->num_key_value_heads)
        return zerr_set(e, ZE_MODEL, "text encoder config: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                        q->num_attention_heads, q->num_key_value_heads);
    if (q->head_dim % 2) return zerr_set(e, ZE_MODEL, "text encoder config: head_dim %d must be even (RoPE)", q->head_dim);
    if (!(q->rms_norm_eps > 0) || !(q->rope_theta > 0))
        return zerr_set(e, ZE_MODEL, "text encoder config: rms_norm_eps and rope_theta must be positive");
    return ZE_OK;
}

/* ---- DiT ---------------------------------------------------------------------- */

int dit_config_load(dit_config *d, const char *path, zerr *e) {
    dit_config_default(d);
    cfg c;
    ZTRY(cfg_open(&c, path, e));
    json_t *r = c.root;
    int rc, n = 0;
    double theta = d->rope_theta;
    if ((rc = want_str(&c, r, "_class_name", "ZImageTransformer2DModel", NULL)) ||
        (rc = get_single(&c, r, "all_patch_size", &d->patch_size)) ||
        (rc = get_single(&c, r, "all_f_patch_size", &d->f_patch_size)) ||
        (rc = get_int(&c, r, "in_channels", &d->in_channels, 1, 4096)) ||
        (rc = get_int(&c, r, "dim", &d->dim, 1, 1 << 20)) ||
        (rc = get_int(&c, r, "n_layers", &d->n_layers, 0, 10000)) ||
        (rc = get_int(&c, r, "n_refiner_layers", &d->n_refiner_layers, 0, 10000)) ||
        (rc = get_int(&c, r, "n_heads", &d->n_heads, 1, 100000)) ||
        (rc = get_int(&c, r, "n_kv_heads", &d->n_kv_heads, 1, 100000)) ||
        (rc = get_float(&c, r, "norm_eps", &d->norm_eps, 1e-30, 1.0)) ||
        (rc = get_bool(&c, r, "qk_norm", &d->qk_norm)) ||
        (rc = get_int(&c, r, "cap_feat_dim", &d->cap_feat_dim, 1, 1 << 20)) ||
        (rc = get_num(&c, r, "rope_theta", &theta, 1e-30, 1e30)) ||
        (rc = get_float(&c, r, "t_scale", &d->t_scale, 1e-30, 1e30)))
        goto done;
    d->rope_theta = theta;
    if ((rc = get_int_list(&c, r, "axes_dims", d->axes_dims, &n, 3, 3, 0, 1 << 16)) ||
        (rc = get_int_list(&c, r, "axes_lens", d->axes_lens, &n, 3, 3, 1, 1 << 24)))
        goto done;
    json_t *sig = val(r, "siglip_feat_dim");
    if (sig) {
        rc = zerr_set(e, ZE_UNSUPPORTED, "%s: key 'siglip_feat_dim' is set: the SigLIP (Omni) variant is not supported",
                      path);
        goto done;
    }
    rc = dit_config_finish(d, e);
    if (rc) zerr_prefix(e, "%s", path);
done:
    cfg_close(&c);
    return rc;
}

int dit_config_finish(dit_config *d, zerr *e) {
    if (d->dim <= 0 || d->n_heads <= 0 || d->n_kv_heads <= 0 || d->in_channels <= 0 || d->patch_size <= 0 ||
        d->cap_feat_dim <= 0 || d->n_layers < 0 || d->n_refiner_layers < 0)
        return zerr_set(e, ZE_MODEL, "transformer config: sizes must be positive");
    if (d->f_patch_size != 1)
        return zerr_set(e, ZE_UNSUPPORTED, "transformer config: all_f_patch_size = %d; images need 1", d->f_patch_size);
    if (d->dim % d->n_heads)
        return zerr_set(e, ZE_MODEL, "transformer config: dim %d is not a multiple of n_heads %d", d->dim, d->n_heads);
    /* diffusers builds K/V with n_heads heads and never reads n_kv_heads (its own
     * test config has n_heads 1, n_kv_heads 2): follow the reference. */
    d->n_kv_heads = d->n_heads;
    d->head_dim = d->dim / d->n_heads;
    d->ffn_dim = (int)((double)d->dim / 3.0 * 8.0); /* Python: int(dim / 3 * 8) */
    d->adaln_dim = d->dim < 256 ? d->dim : 256;
    int sum = 0;
    for (int i = 0; i < 3; i++) {
        if (d->axes_dims[i] < 0 || d->axes_dims[i] % 2)
            return zerr_set(e, ZE_MODEL, "transformer config: axes_dims[%d] = %d must be even and >= 0", i,
                            d->axes_dims[i]);
        if (d->axes_lens[i] <= 0)
            return zerr_set(e, ZE_MODEL, "transformer config: axes_lens[%d] = %d must be positive", i, d->axes_lens[i]);
        sum += d->axes_dims[i];
    }
    if (sum != d->head_dim)
        return zerr_set(e, ZE_MODEL, "transformer config: sum(axes_dims) = %d differs from head_dim = dim / n_heads = %d",
                        sum, d->head_dim);
    if (!(d->norm_eps > 0) || !(d->rope_theta > 0) || !(d->t_scale > 0))
        return zerr_set(e, ZE_MODEL, "transformer config: norm_eps, rope_theta and t_scale must be positive");
    return ZE_OK;
}

/* ---- VAE ------------------------------------------------------------------------ */

static int check_block_types(cfg *c, const char *key, const char *want, int n) {
    json_t *v = val(c->root, key);
    if (!v) return ZE_OK;
    if (!json_is_array(v)) return bad_type(c, key, v, "a list of strings");
    if ((int)json_array_size(v) != n)
        return zerr_set(c->e, ZE_MODEL, "%s: key '%s' lists %zu blocks but block_out_channels lists %d", c->file, key,
                        json_array_size(v), n);
    for (int i = 0; i < n; i++) {
        json_t *s = json_array_get(v, (size_t)i);
        if (!json_is_string(s) || strcmp(json_string_value(s), want))
            return zerr_set(c->e, ZE_UNSUPPORTED, "%s: key '%s'[%d] is %s%s%s, only %s is supported", c->file, key, i,
                            json_is_string(s) ? "\"" : "", json_is_string(s) ? json_string_value(s) : kind_of(s),
                            json_is_string(s) ? "\"" : "", want);
    }
    return ZE_OK;
}

int vae_config_load(vae_config *v, const char *path, zerr *e) {
    vae_config_default(v);
    cfg c;
    ZTRY(cfg_open(&c, path, e));
    json_t *r = c.root;
    int rc, n = v->n_blocks;
    double sf = v->scaling_factor, sh = v->shift_factor;
    if ((rc = want_str(&c, r, "_class_name", "AutoencoderKL", NULL)) ||
        (rc = want_str(&c, r, "act_fn", "silu", NULL)) ||
        (rc = get_int(&c, r, "in_channels", &v->in_channels, 1, 4096)) ||
        (rc = get_int(&c, r, "out_channels", &v->out_channels, 1, 4096)) ||
        (rc = get_int(&c, r, "latent_channels", &v->latent_channels, 1, 4096)) ||
        (rc = get_int_list(&c, r, "block_out_channels", v->block_out_channels, &n, 1, VAE_MAX_BLOCKS, 1, 1 << 16)) ||
        (rc = get_int(&c, r, "layers_per_block", &v->layers_per_block, 1, 64)) ||
        (rc = get_int(&c, r, "norm_num_groups", &v->norm_num_groups, 1, 1 << 16)) ||
        (rc = get_bool(&c, r, "mid_block_add_attention", &v->mid_block_add_attention)) ||
        (rc = get_num(&c, r, "scaling_factor", &sf, -1e30, 1e30)) ||
        (rc = get_num(&c, r, "shift_factor", &sh, -1e30, 1e30)) ||
        (rc = get_bool(&c, r, "use_quant_conv", &v->use_quant_conv)) ||
        (rc = get_bool(&c, r, "use_post_quant_conv", &v->use_post_quant_conv)))
        goto done;
    v->n_blocks = n;
    v->scaling_factor = (float)sf;
    v->shift_factor = (float)sh;
    if ((rc = check_block_types(&c, "down_block_types", "DownEncoderBlock2D", n)) ||
        (rc = check_block_types(&c, "up_block_types", "UpDecoderBlock2D", n)))
        goto done;
    rc = vae_config_check(v, e);
    if (rc) zerr_prefix(e, "%s", path);
done:
    cfg_close(&c);
    return rc;
}

int vae_config_check(const vae_config *v, zerr *e) {
    if (v->use_quant_conv || v->use_post_quant_conv)
        return zerr_set(e, ZE_UNSUPPORTED,
                        "vae config: use_quant_conv / use_post_quant_conv is true: quant convs are not part of the "
                        "Z-Image (FLUX.1) VAE, this VAE belongs to another model family");
    if (v->n_blocks < 1 || v->n_blocks > VAE_MAX_BLOCKS)
        return zerr_set(e, ZE_MODEL, "vae config: block_out_channels must list 1 to %d values, not %d", VAE_MAX_BLOCKS,
                        v->n_blocks);
    if (v->in_channels <= 0 || v->out_channels <= 0 || v->latent_channels <= 0 || v->norm_num_groups <= 0)
        return zerr_set(e, ZE_MODEL, "vae config: channel counts must be positive");
    if (v->layers_per_block < 1 || v->layers_per_block > 3)
        return zerr_set(e, ZE_UNSUPPORTED, "vae config: layers_per_block = %d; 1 to 3 are supported",
                        v->layers_per_block);
    for (int i = 0; i < v->n_blocks; i++)
        if (v->block_out_channels[i] <= 0 || v->block_out_channels[i] % v->norm_num_groups)
            return zerr_set(e, ZE_MODEL, "vae config: block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d",
                            i, v->block_out_channels[i], v->norm_num_groups);
    if (!(v->scaling_factor != 0) || !isfinite(v->scaling_factor) || !isfinite(v->shift_factor))
        return zerr_set(e, ZE_MODEL, "vae config: scaling_factor must be finite and non-zero");
    return ZE_OK;
}

/* ---- scheduler ------------------------------------------------------------------ */

int sched_config_load(sched_config *s, const char *path, zerr *e) {
    sched_config_default(s);
    cfg c;
    ZTRY(cfg_open(&c, path, e));
    json_t *r = c.root;
    int rc;
    if ((rc = want_str(&c, r, "_class_name", "FlowMatchEulerDiscreteScheduler", NULL)) ||
        (rc = get_int(&c, r, "num_train_timesteps", &s->num_train_timesteps, 1, BIG)) ||
        (rc = get_float(&c, r, "shift", &s->shift, 1e-6, 1e6)) ||
        (rc = get_bool(&c, r, "use_dynamic_shifting", &s->use_dynamic_shifting)))
        goto done;
    if (s->use_dynamic_shifting) {
        rc = zerr_set(e, ZE_UNSUPPORTED,
                      "%s: key 'use_dynamic_shifting' is true: resolution-dependent (dynamic) shifting is not "
                      "implemented yet; Z-Image-Turbo uses a fixed shift",
                      path);
        goto done;
    }
    if ((rc = want_false(&c, r, "use_karras_sigmas", "Karras sigmas are not implemented")) ||
        (rc = want_false(&c, r, "use_exponential_sigmas", "exponential sigmas are not implemented")) ||
        (rc = want_false(&c, r, "use_beta_sigmas", "beta sigmas are not implemented")) ||
        (rc = want_false(&c, r, "invert_sigmas", "inverted sigmas are not implemented")) ||
        (rc = want_false(&c, r, "stochastic_sampling", "stochastic sampling is not implemented")))
        goto done;
    if (val(r, "shift_terminal")) {
        rc = zerr_set(e, ZE_UNSUPPORTED, "%s: key 'shift_terminal' is set: terminal shift is not implemented", path);
        goto done;
    }
done:
    cfg_close(&c);
    return rc;
}
