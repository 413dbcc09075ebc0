/* namemap.c - the checkpoint-format name maps (see namemap.h), table-driven.
 *
 * A rule rewrites one span of a name that starts and ends on a '.' boundary.
 * Patterns are literal text plus placeholders for a decimal index:
 *   '#'  an index copied to the other side;
 *   '~'  an index mirrored against the other side: x <-> N-1-x, with N the
 *        number of decoder up blocks (LDM counts decoder.up.{k} bottom-up,
 *        diffusers' up_blocks.{n} top-down).
 * Mapping canonical -> key applies every rule of the format once, in table
 * order; the reverse map applies them stored -> canonical in reverse order.
 */
#include "namemap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rule {
    znm_format fmt;
    const char *canon;   /* pattern in the canonical (diffusers / HF) name */
    const char *stored;  /* pattern in the stored key                       */
    int block, nblocks;  /* canonical tensor = row block of the stored one */
} rule;

static const rule rules[] = {
    /* DiT: ComfyUI / sd.cpp single files (spec 1.6) */
    {ZNM_DIT_COMFY, "all_x_embedder.2-1", "x_embedder", 0, 1},
    {ZNM_DIT_COMFY, "all_final_layer.2-1", "final_layer", 0, 1},
    {ZNM_DIT_COMFY, "attention.to_q.weight", "attention.qkv.weight", 0, 3},
    {ZNM_DIT_COMFY, "attention.to_k.weight", "attention.qkv.weight", 1, 3},
    {ZNM_DIT_COMFY, "attention.to_v.weight", "attention.qkv.weight", 2, 3},
    {ZNM_DIT_COMFY, "attention.to_out.0", "attention.out", 0, 1},
    {ZNM_DIT_COMFY, "attention.norm_q", "attention.q_norm", 0, 1},
    {ZNM_DIT_COMFY, "attention.norm_k", "attention.k_norm", 0, 1},
    /* VAE: LDM / BFL ae.safetensors names */
    {ZNM_VAE_LDM, "encoder.down_blocks.#.resnets.#", "encoder.down.#.block.#", 0, 1},
    {ZNM_VAE_LDM, "encoder.down_blocks.#.downsamplers.0.conv", "encoder.down.#.downsample.conv", 0, 1},
    {ZNM_VAE_LDM, "decoder.up_blocks.#.resnets.#", "decoder.up.~.block.#", 0, 1},
    {ZNM_VAE_LDM, "decoder.up_blocks.#.upsamplers.0.conv", "decoder.up.~.upsample.conv", 0, 1},
    {ZNM_VAE_LDM, "mid_block.resnets.0", "mid.block_1", 0, 1},
    {ZNM_VAE_LDM, "mid_block.resnets.1", "mid.block_2", 0, 1},
    {ZNM_VAE_LDM, "mid_block.attentions.0.group_norm", "mid.attn_1.norm", 0, 1},
    {ZNM_VAE_LDM, "mid_block.attentions.0.to_q", "mid.attn_1.q", 0, 1},
    {ZNM_VAE_LDM, "mid_block.attentions.0.to_k", "mid.attn_1.k", 0, 1},
    {ZNM_VAE_LDM, "mid_block.attentions.0.to_v", "mid.attn_1.v", 0, 1},
    {ZNM_VAE_LDM, "mid_block.attentions.0.to_out.0", "mid.attn_1.proj_out", 0, 1},
    {ZNM_VAE_LDM, "conv_shortcut", "nin_shortcut", 0, 1},
    {ZNM_VAE_LDM, "conv_norm_out", "norm_out", 0, 1},
};
#define NRULES ((int)(sizeof rules / sizeof rules[0]))

/* Stored-name prefixes that are stripped, per kind. */
static const char *const strip_prefix[3] = {"model.diffusion_model.", NULL, "first_stage_model."};

const char *znm_format_name(znm_format f) {
    switch (f) {
    case ZNM_DIT_DIFFUSERS: return "diffusers";
    case ZNM_DIT_COMFY: return "ComfyUI";
    case ZNM_TE_HF: return "transformers";
    case ZNM_VAE_DIFFUSERS: return "diffusers";
    case ZNM_VAE_LDM: return "LDM (ae.safetensors)";
    }
    return "?";
}

static int starts_with(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }
static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int znm_stored_key(int kind, const char *stored, char *key, size_t n) {
    const char *s = stored;
    const char *sp = (kind >= 0 && kind < 3) ? strip_prefix[kind] : NULL;
    if (sp && starts_with(s, sp)) s += strlen(sp);
    int r;
    if (kind == 1 && !starts_with(s, "model.") && !starts_with(s, "lm_head."))
        r = snprintf(key, n, "model.%s", s);
    else
        r = snprintf(key, n, "%s", s);
    if (r < 0 || (size_t)r >= n) return ZNM_KEY_TOOLONG;
    if (kind == 0 && !strcmp(key, "norm_final.weight")) return ZNM_KEY_IGNORED;
    if (kind == 1 && starts_with(key, "lm_head.")) return ZNM_KEY_IGNORED;
    return ZNM_KEY_OK;
}

void znm_detect(znm *m, int kind, const char *const *keys, int n) {
    memset(m, 0, sizeof *m);
    m->kind = kind;
    m->fmt = kind == 0 ? ZNM_DIT_DIFFUSERS : kind == 1 ? ZNM_TE_HF : ZNM_VAE_DIFFUSERS;
    for (int i = 0; i < n; i++) {
        const char *k = keys[i];
        if (kind == 0 && (ends_with(k, ".attention.qkv.weight") || !strcmp(k, "x_embedder.weight") ||
                          starts_with(k, "final_layer.")))
            m->fmt = ZNM_DIT_COMFY;
        if (kind == 2) {
            if (starts_with(k, "encoder.down.") || starts_with(k, "decoder.up.") || strstr(k, "mid.block_1."))
                m->fmt = ZNM_VAE_LDM;
            if (starts_with(k, "decoder.up.")) {
                long v = strtol(k + strlen("decoder.up."), NULL, 10);
                if (v >= 0 && v < 1000 && v + 1 > m->vae_up_blocks) m->vae_up_blocks = (int)v + 1;
            }
        }
    }
}

/* Match pattern p against s (no boundary checks); on success returns the
 * matched length and fills caps / tilde flags. */
static int match(const char *p, const char *s, int *caps, int *ncap) {
    const char *s0 = s;
    *ncap = 0;
    for (; *p; p++) {
        if (*p == '#' || *p == '~') {
            if (*s < '0' || *s > '9') return -1;
            if (*s == '0' && s[1] >= '0' && s[1] <= '9') return -1; /* no leading zeros: keep maps 1:1 */
            int v = 0, nd = 0;
            while (*s >= '0' && *s <= '9') {
                if (++nd > 6) return -1;
                v = v * 10 + (*s++ - '0');
            }
            if (*ncap >= 4) return -1;
            caps[(*ncap)++] = v;
        } else if (*p != *s++) {
            return -1;
        }
    }
    return (int)(s - s0);
}

/* Rewrite the first '.'-bounded span of buf that matches `from` into `to`.
 * Returns 1 if rewritten, 0 if no match, -1 on failure (index out of range,
 * overflow). */
static int rewrite(char *buf, size_t n, const char *from, const char *to, int nblocks_up) {
    size_t len = strlen(buf);
    for (size_t i = 0; i < len; i++) {
        if (i > 0 && buf[i - 1] != '.') continue;
        int caps[4], nc;
        int ml = match(from, buf + i, caps, &nc);
        if (ml < 0 || (buf[i + ml] != '\0' && buf[i + ml] != '.')) continue;
        /* instantiate `to` */
        char out[ZNM_MAX_NAME * 2];
        size_t o = 0;
        int ci = 0;
        /* '~' on exactly one side mirrors the index */
        const char *fp = from;
        for (const char *tp = to; *tp; tp++) {
            if (*tp == '#' || *tp == '~') {
                while (*fp && *fp != '#' && *fp != '~') fp++;
                int tilde_src = *fp == '~';
                if (*fp) fp++;
                if (ci >= nc) return -1;
                int v = caps[ci++];
                if (tilde_src != (*tp == '~')) {
                    v = nblocks_up - 1 - v;
                    if (v < 0) return -1;
                }
                o += (size_t)snprintf(out + o, sizeof out - o, "%d", v);
            } else {
                out[o++] = *tp;
            }
            if (o >= sizeof out - 16) return -1;
        }
        out[o] = '\0';
        if (i + o + (len - i - (size_t)ml) + 1 > n) return -1;
        memmove(buf + i + o, buf + i + ml, len - i - (size_t)ml + 1);
        memcpy(buf + i, out, o);
        return 1;
    }
    return 0;
}

int znm_map(const znm *m, const char *canonical, znm_ref *out) {
    out->block = 0;
    out->nblocks = 1;
    if (snprintf(out->key, sizeof out->key, "%s", canonical) >= (int)sizeof out->key) return -1;
    for (int r = 0; r < NRULES; r++) {
        if (rules[r].fmt != m->fmt) continue;
        int rc = rewrite(out->key, sizeof out->key, rules[r].canon, rules[r].stored, m->vae_up_blocks);
        if (rc < 0) return -1;
        if (rc > 0 && rules[r].nblocks > 1) {
            out->block = rules[r].block;
            out->nblocks = rules[r].nblocks;
        }
    }
    return 0;
}

int znm_unmap(const znm *m, const char *key, char *canonical, size_t n) {
    char buf[ZNM_MAX_NAME * 2];
    snprintf(canonical, n, "%s", key);
    if (snprintf(buf, sizeof buf, "%s", key) >= (int)sizeof buf) return -1;
    for (int r = NRULES - 1; r >= 0; r--) {
        if (rules[r].fmt != m->fmt) continue;
        if (rewrite(buf, sizeof buf, rules[r].stored, rules[r].canon, m->vae_up_blocks) < 0) return -1;
    }
    if (snprintf(canonical, n, "%s", buf) >= (int)n) return -1;
    return 0;
}
