/* json_req.h - parsing and validation of the generation requests of the
 * three APIs (OpenAI images, A1111 txt2img, zimage jobs) into one zs_gen_req.
 * Every error names the offending field (zs_req_err.field) and carries the
 * HTTP status to answer with: 400 for a malformed body (not JSON, not an
 * object), 422 for a wrong type or value (the OpenAI endpoint answers 400
 * for everything, as OpenAI does; api_openai.c maps it).
 *
 * Constants: sizes are multiples of 16 within [min_size, max_size] per side;
 * steps 1..max_steps; n 1..max_n; cfg_scale 1..30 (A1111 meaning, 1 = off;
 * guidance_scale g (diffusers meaning) maps to cfg_scale = g + 1); seed -1 =
 * random, else 0..ZS_SEED_MAX.
 */
#ifndef ZIMAGE_SERVER_JSON_REQ_H
#define ZIMAGE_SERVER_JSON_REQ_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define ZS_SEED_MAX ((int64_t)1 << 53) /* exact in a JS number */
#define ZS_CFG_MAX 30.0

enum { ZS_FMT_PNG = 0, ZS_FMT_JPEG = 1, ZS_FMT_WEBP = 2 };

typedef struct zs_limits {
    int min_size, max_size;   /* per side, multiples of 16                  */
    int default_size;         /* used when a request gives no size          */
    int default_steps;
    int max_steps;
    int max_n;
    size_t max_prompt;        /* bytes                                      */
} zs_limits;

typedef struct zs_gen_req {
    char *prompt;             /* owned, never NULL after a successful parse */
    char *negative_prompt;    /* owned, never NULL ("" if absent)           */
    int width, height, steps;
    float cfg_scale;          /* A1111 meaning                              */
    int64_t seed;             /* -1: random (the queue picks one)           */
    int n;                    /* images (A1111: batch_size * n_iter)        */
    int batch_size, n_iter;   /* A1111 only (1, n otherwise)                */
    int format;               /* ZS_FMT_*                                   */
    int quality;              /* JPEG/WebP quality 0..100 (default 90)      */
    int stream;               /* OpenAI: stream: true                      */
    int partial_images;       /* OpenAI: previews to send (-1 = every step) */
    int preview;              /* wants progress previews                    */
    int response_url;         /* OpenAI: response_format "url"              */
    int send_images;          /* A1111: send_images (default 1)             */
    char *model;              /* owned, may be NULL (echoed)                */
    char *size_str;           /* owned "WxH" (OpenAI echo)                  */
    json_t *echo;             /* A1111 "parameters": request + defaults     */
} zs_gen_req;

typedef struct zs_req_err {
    int status;               /* 400 or 422                                 */
    char field[64];           /* offending field ("" for the whole body)    */
    char msg[256];
} zs_req_err;

/* Each returns 0 on success (out filled, free with zs_gen_req_free) or -1
 * with *err filled (out then holds nothing to free). */
int zs_parse_openai(const char *body, size_t len, const zs_limits *lim, zs_gen_req *out, zs_req_err *err);
int zs_parse_a1111(const char *body, size_t len, const zs_limits *lim, zs_gen_req *out, zs_req_err *err);
int zs_parse_job(const char *body, size_t len, const zs_limits *lim, zs_gen_req *out, zs_req_err *err);
void zs_gen_req_free(zs_gen_req *r);

/* "1024x768" (also "1024X768", "1024×768") -> 0 and *w,*h; -1 if malformed. */
int zs_parse_size(const char *s, int *w, int *h);
const char *zs_format_name(int fmt);
const char *zs_format_mime(int fmt);

/* A1111 options the server keeps (GET/POST /sdapi/v1/options). */
typedef struct zs_a1111_opts {
    int live_previews_enable;        /* default 1 */
    int show_progress_every_n_steps; /* default 1 */
    int samples_format;              /* ZS_FMT_* (default PNG) */
} zs_a1111_opts;
/* Apply a POST /sdapi/v1/options body; unknown keys are ignored (as A1111
 * does), known keys are type-checked; sd_model_checkpoint must name the
 * loaded model.  All-or-nothing: on error *o is unchanged. */
int zs_parse_a1111_options(const char *body, size_t len, const char *model_title, zs_a1111_opts *o,
                           zs_req_err *err);

#endif
