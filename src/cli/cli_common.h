/* cli_common.h - small helpers shared by the subcommands: strict number
 * parsing for flags, output-path checks, model resolution (local folder or
 * Hugging Face repo id), a clock. */
#ifndef ZIMAGE_CLI_COMMON_H
#define ZIMAGE_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "zimage.h"

/* Parse optarg strictly; on error print "zimage: --NAME: ..." and return 2
 * from the calling function. */
int cli_parse_int(const char *s, const char *name, long lo, long hi, int *out);
int cli_parse_i64(const char *s, const char *name, int64_t *out);
int cli_parse_float(const char *s, const char *name, float *out);
#define CLI_INT(dst, name, lo, hi) \
    do { if (cli_parse_int(optarg, name, lo, hi, &(dst))) return 2; } while (0)
#define CLI_I64(dst, name) \
    do { if (cli_parse_i64(optarg, name, &(dst))) return 2; } while (0)
#define CLI_FLOAT(dst, name) \
    do { if (cli_parse_float(optarg, name, &(dst))) return 2; } while (0)

/* 0 if a file can be created at path (its folder exists and is writable). */
int cli_check_writable(const char *path, char *err, size_t errlen);
/* Local folder -> itself; repo id -> the cached snapshot, pulled if missing
 * (asks on a terminal unless yes).  Prints errors itself; 0 on success. */
int cli_resolve_model(const char *spec, int yes, char *out, size_t n);
/* "Z-Image-Turbo" for ".../Z-Image-Turbo/" etc. */
const char *cli_model_name(const char *model);
void cli_latent_shape(const zimage_ctx *ctx, const zimage_params *p, int *c, int *h, int *w);
double cli_now(void);

#endif
