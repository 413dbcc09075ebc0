/* modeldir.c - resolve a diffusers model folder plus single-file overrides
 * into the paths of every component (see modeldir.h). */
#include "modeldir.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../base/log.h"

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* out = a/b (b may be NULL). */
static int join(char *out, const char *a, const char *b, zerr *e) {
    int n = b ? snprintf(out, ZMODEL_PATH_MAX, "%s/%s", a, b) : snprintf(out, ZMODEL_PATH_MAX, "%s", a);
    if (n < 0 || n >= ZMODEL_PATH_MAX) return zerr_set(e, ZE_INVALID, "path too long: %.200s...", a);
    return ZE_OK;
}

static int check_index(const char *root, zerr *e) {
    char path[ZMODEL_PATH_MAX];
    ZTRY(join(path, root, "model_index.json", e));
    if (!is_file(path))
        return zerr_set(e, ZE_IO, "%s is not a diffusers model folder: %s does not exist", root, path);
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return zerr_set(e, ZE_FORMAT, "%s: malformed JSON (line %d, column %d): %s", path, jerr.line, jerr.column,
                        jerr.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return zerr_set(e, ZE_FORMAT, "%s: expected a JSON object", path);
    }
    json_t *cn = json_object_get(j, "_class_name");
    const char *cls = json_is_string(cn) ? json_string_value(cn) : NULL;
    if (!cls || strcmp(cls, "ZImagePipeline"))
        ZLOGW("%s: _class_name is %s%s%s, not ZImagePipeline; trying anyway", path, cls ? "\"" : "",
              cls ? cls : "missing", cls ? "\"" : "");
    json_decref(j);
    return ZE_OK;
}

typedef struct comp {
    const char *what;     /* "text encoder"                  */
    const char *sub;      /* "text_encoder"                  */
    const char *flag;     /* "--text-encoder"                */
    const char *override; /* the flag's value or NULL        */
    char *weights, *config;
} comp;

static int resolve_weights(const char *root, const comp *c, zerr *e) {
    c->weights[0] = c->config[0] = '\0';
    if (c->override && *c->override) {
        if (!exists(c->override)) return zerr_set(e, ZE_IO, "%s %s: %s", c->flag, c->override, strerror(ENOENT));
        ZTRY(join(c->weights, c->override, NULL, e));
        if (is_dir(c->override)) { /* a component folder: its config if present */
            char cfg[ZMODEL_PATH_MAX];
            ZTRY(join(cfg, c->override, "config.json", e));
            if (is_file(cfg)) memcpy(c->config, cfg, ZMODEL_PATH_MAX);
        }
        return ZE_OK;
    }
    if (!*root)
        return zerr_set(e, ZE_INVALID, "no %s: no model folder and no %s FILE was given", c->what, c->flag);
    char dir[ZMODEL_PATH_MAX];
    ZTRY(join(dir, root, c->sub, e));
    if (!is_dir(dir))
        return zerr_set(e, ZE_IO, "no %s: %s does not exist and no %s FILE was given", c->what, dir, c->flag);
    ZTRY(join(c->config, dir, "config.json", e));
    if (!is_file(c->config)) return zerr_set(e, ZE_IO, "%s config missing: %s does not exist", c->what, c->config);
    memcpy(c->weights, dir, ZMODEL_PATH_MAX);
    return ZE_OK;
}

static int resolve_tokenizer(zmodel_paths *p, const char *tok_file, zerr *e) {
    char dir[ZMODEL_PATH_MAX];
    if (tok_file && *tok_file) {
        if (!exists(tok_file)) return zerr_set(e, ZE_IO, "--tokenizer %s: %s", tok_file, strerror(ENOENT));
        if (!is_dir(tok_file)) return join(p->tok_json, tok_file, NULL, e);
        ZTRY(join(dir, tok_file, NULL, e));
    } else {
        if (!p->root[0]) return zerr_set(e, ZE_INVALID, "no tokenizer: no model folder and no --tokenizer FILE was given");
        ZTRY(join(dir, p->root, "tokenizer", e));
        if (!is_dir(dir))
            return zerr_set(e, ZE_IO, "no tokenizer: %s does not exist and no --tokenizer FILE was given", dir);
    }
    ZTRY(join(p->tok_json, dir, "tokenizer.json", e));
    if (!is_file(p->tok_json)) return zerr_set(e, ZE_IO, "no tokenizer: %s does not exist", p->tok_json);
    char cfg[ZMODEL_PATH_MAX];
    ZTRY(join(cfg, dir, "tokenizer_config.json", e));
    if (is_file(cfg)) memcpy(p->tok_config, cfg, ZMODEL_PATH_MAX);
    return ZE_OK;
}

int zmodel_resolve(zmodel_paths *p, const char *model_dir, const char *dit_file, const char *te_file,
                   const char *vae_file, const char *tok_file, zerr *e) {
    memset(p, 0, sizeof *p);
    if (model_dir && *model_dir) {
        if (!exists(model_dir)) return zerr_set(e, ZE_IO, "model folder %s does not exist", model_dir);
        if (!is_dir(model_dir))
            return zerr_set(e, ZE_INVALID,
                            "%s is not a folder (a diffusers model folder is expected; for single files use "
                            "--diffusion-model, --text-encoder, --vae)",
                            model_dir);
        ZTRY(join(p->root, model_dir, NULL, e));
        size_t l = strlen(p->root);
        while (l > 1 && p->root[l - 1] == '/') p->root[--l] = '\0';
        ZTRY(check_index(p->root, e));
    }
    comp comps[3] = {
        {"diffusion model", "transformer", "--diffusion-model", dit_file, p->dit, p->dit_config},
        {"text encoder", "text_encoder", "--text-encoder", te_file, p->te, p->te_config},
        {"vae", "vae", "--vae", vae_file, p->vae, p->vae_config},
    };
    for (int i = 0; i < 3; i++) ZTRY(resolve_weights(p->root, &comps[i], e));
    ZTRY(resolve_tokenizer(p, tok_file, e));
    if (p->root[0]) {
        char s[ZMODEL_PATH_MAX];
        ZTRY(join(s, p->root, "scheduler/scheduler_config.json", e));
        if (is_file(s)) memcpy(p->sched_config, s, ZMODEL_PATH_MAX);
    }
    return ZE_OK;
}
