/* namemap.h - checkpoint-format name maps (spec 1.6), in one table.
 *
 * Canonical names are what the models ask for: diffusers names for the DiT
 * and the VAE, transformers Qwen3 names with the "model." prefix for the
 * text encoder.  A stored tensor name is first normalised into a "key"
 * (prefixes stripped or added), then canonical names are mapped onto keys by
 * the rule table of the detected format:
 *   DiT diffusers   identity
 *   DiT ComfyUI     all_x_embedder.2-1 <-> x_embedder, all_final_layer.2-1 <->
 *                   final_layer, attention.to_{q,k,v}.weight <-> row block
 *                   {0,1,2} of 3 of attention.qkv.weight, to_out.0 <-> out,
 *                   norm_q/norm_k <-> q_norm/k_norm
 *   TE              identity (keys always carry "model.")
 *   VAE diffusers   identity
 *   VAE LDM         encoder.down.{i}.block.{j}, decoder.up.{N-1-n}.block.{j},
 *                   mid.block_{1,2}, mid.attn_1.{norm,q,k,v,proj_out},
 *                   nin_shortcut, norm_out, downsample/upsample.conv
 *                   (N = number of decoder up blocks found in the file)
 */
#ifndef ZIMAGE_NAMEMAP_H
#define ZIMAGE_NAMEMAP_H

#include <stddef.h>

typedef enum {
    ZNM_DIT_DIFFUSERS = 0,
    ZNM_DIT_COMFY,
    ZNM_TE_HF,
    ZNM_VAE_DIFFUSERS,
    ZNM_VAE_LDM,
} znm_format;

#define ZNM_MAX_NAME 256

typedef struct znm {
    int kind;           /* zw_kind: 0 DiT, 1 TE, 2 VAE             */
    znm_format fmt;
    int vae_up_blocks;  /* LDM: decoder up blocks found in the file */
} znm;

/* A canonical name resolved to a key: the whole tensor (nblocks = 1) or row
 * block `block` of `nblocks` equal row blocks. */
typedef struct znm_ref {
    char key[ZNM_MAX_NAME];
    int block, nblocks;
} znm_ref;

enum { ZNM_KEY_OK = 0, ZNM_KEY_IGNORED = 1, ZNM_KEY_TOOLONG = -1 };

/* Normalise a stored name into a key.  Returns ZNM_KEY_IGNORED for tensors
 * that are never used (DiT "norm_final.weight", TE "lm_head.weight"),
 * ZNM_KEY_TOOLONG if it does not fit. */
int znm_stored_key(int kind, const char *stored, char *key, size_t n);
/* Detect the format from all keys of a source. */
void znm_detect(znm *m, int kind, const char *const *keys, int n);
/* canonical -> key.  Returns 0, or -1 if the name cannot be mapped. */
int znm_map(const znm *m, const char *canonical, znm_ref *out);
/* key -> canonical (for split tensors: the last block's name).  Returns 0 or
 * -1 (then canonical = key). */
int znm_unmap(const znm *m, const char *key, char *canonical, size_t n);
const char *znm_format_name(znm_format f);

#endif
