/* modeldir.h - where the pieces of a model are on disk.
 *
 * A diffusers folder (spec 1.1):
 *   MODEL/model_index.json                 _class_name "ZImagePipeline"
 *   MODEL/transformer/   config.json + diffusion_pytorch_model*.safetensors[.index.json]
 *   MODEL/text_encoder/  config.json + model*.safetensors[.index.json]
 *   MODEL/vae/           config.json + diffusion_pytorch_model.safetensors
 *   MODEL/tokenizer/     tokenizer.json, tokenizer_config.json
 *   MODEL/scheduler/     scheduler_config.json
 * Any component may be replaced by a single file (--diffusion-model,
 * --text-encoder, --vae, --tokenizer) or by another component folder.  A
 * component given as a single file gets no config path: the caller then
 * uses the built-in defaults (tensor shapes are still checked at load).
 * Weight paths are what zw_source_open accepts (a folder, a .safetensors
 * file or an index json).  "" means absent.
 */
#ifndef ZIMAGE_MODELDIR_H
#define ZIMAGE_MODELDIR_H

#include "../base/err.h"

#define ZMODEL_PATH_MAX 4096

typedef struct zmodel_paths {
    char root[ZMODEL_PATH_MAX];         /* the model folder, or ""          */
    char dit[ZMODEL_PATH_MAX];          /* transformer weights              */
    char te[ZMODEL_PATH_MAX];           /* text encoder weights             */
    char vae[ZMODEL_PATH_MAX];          /* VAE weights                      */
    char tok_json[ZMODEL_PATH_MAX];     /* tokenizer.json                   */
    char tok_config[ZMODEL_PATH_MAX];   /* tokenizer_config.json or ""      */
    char dit_config[ZMODEL_PATH_MAX];   /* transformer/config.json or ""    */
    char te_config[ZMODEL_PATH_MAX];    /* text_encoder/config.json or ""   */
    char vae_config[ZMODEL_PATH_MAX];   /* vae/config.json or ""            */
    char sched_config[ZMODEL_PATH_MAX]; /* scheduler/scheduler_config.json or "" (defaults) */
} zmodel_paths;

/* model_dir may be NULL/"" when every component comes as a file.  A
 * model_index.json whose _class_name is not ZImagePipeline is a warning
 * (zlog), not an error.  A diffusers folder without scheduler/ gets "" for
 * sched_config (the Z-Image-Turbo defaults apply). */
int zmodel_resolve(zmodel_paths *p, const char *model_dir, const char *dit_file, const char *te_file,
                   const char *vae_file, const char *tok_file, zerr *e);

#endif
