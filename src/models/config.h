/* config.h - configuration of the four components, parsed from the diffusers
 * folder's JSON files (or taken from the built-in Z-Image-Turbo defaults when
 * a component comes as a single file without a config).
 *
 * Field names follow the JSON keys; values are the shipped Z-Image-Turbo
 * defaults (spec section 1.2).  Both transformers 4.x (`rope_theta` at top
 * level) and 5.x (`rope_parameters.rope_theta`) text-encoder configs parse.
 */
#ifndef ZIMAGE_CONFIG_H
#define ZIMAGE_CONFIG_H

#include "../base/err.h"

typedef struct qwen3_config {
    int hidden_size;          /* 2560   */
    int intermediate_size;    /* 9728   */
    int num_hidden_layers;    /* 36     */
    int num_attention_heads;  /* 32     */
    int num_key_value_heads;  /* 8      */
    int head_dim;             /* 128    */
    int vocab_size;           /* 151936 */
    float rms_norm_eps;       /* 1e-6   */
    double rope_theta;        /* 1e6    */
    int max_position_embeddings; /* 40960 */
} qwen3_config;

typedef struct dit_config {
    int patch_size;           /* all_patch_size[0] = 2   */
    int f_patch_size;         /* all_f_patch_size[0] = 1 */
    int in_channels;          /* 16     */
    int dim;                  /* 3840   */
    int n_layers;             /* 30     */
    int n_refiner_layers;     /* 2      */
    int n_heads;              /* 30     */
    int n_kv_heads;           /* 30     */
    float norm_eps;           /* 1e-5   */
    int qk_norm;              /* 1      */
    int cap_feat_dim;         /* 2560   */
    int axes_dims[3];         /* 32 48 48 */
    int axes_lens[3];         /* 1536 512 512 */
    double rope_theta;        /* 256    */
    float t_scale;            /* 1000   */
    /* derived */
    int head_dim;             /* dim / n_heads */
    int ffn_dim;              /* int(dim / 3 * 8) = 10240 */
    int adaln_dim;            /* min(dim, 256) */
} dit_config;

#define VAE_MAX_BLOCKS 8
typedef struct vae_config {
    int in_channels;          /* 3  */
    int out_channels;         /* 3  */
    int latent_channels;      /* 16 */
    int n_blocks;             /* len(block_out_channels) = 4 */
    int block_out_channels[VAE_MAX_BLOCKS]; /* 128 256 512 512 */
    int layers_per_block;     /* 2  */
    int norm_num_groups;      /* 32 */
    int mid_block_add_attention; /* 1 */
    float scaling_factor;     /* 0.3611 */
    float shift_factor;       /* 0.1159 */
    int use_quant_conv;       /* 0 (1 is rejected: not in this model family) */
    int use_post_quant_conv;  /* 0 */
} vae_config;

typedef struct sched_config {
    int num_train_timesteps;  /* 1000 */
    float shift;              /* 3.0  */
    int use_dynamic_shifting; /* 0    */
} sched_config;

void qwen3_config_default(qwen3_config *c);
void dit_config_default(dit_config *c);
void vae_config_default(vae_config *c);
void sched_config_default(sched_config *c);

/* Parse from a JSON file; unknown keys are ignored, missing keys keep the
 * defaults above, wrong types / impossible values are errors naming the key
 * and the file. */
int qwen3_config_load(qwen3_config *c, const char *path, zerr *e);
int dit_config_load(dit_config *c, const char *path, zerr *e);
int vae_config_load(vae_config *c, const char *path, zerr *e);
int sched_config_load(sched_config *c, const char *path, zerr *e);

/* Recompute derived fields and sanity-check (e.g. dim % n_heads == 0,
 * sum(axes_dims) == head_dim). */
int dit_config_finish(dit_config *c, zerr *e);
int qwen3_config_check(const qwen3_config *c, zerr *e);
int vae_config_check(const vae_config *c, zerr *e);

#endif
