/* cmd_encode.c - `zimage encode`: the caption features the DiT sees
 * (Qwen3 hidden_states[-2] of the templated prompt) as a float32 .npy
 * [L, hidden].  Loads only the tokenizer and the text encoder. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/npy.h"
#include "cli.h"
#include "cli_common.h"
#include "zimage.h"

static void help(void) {
    printf("usage: zimage encode -m MODEL -p TEXT -o FEATURES.npy [--max-length N] [--device D] [-t N]\n"
           "       (--text-encoder FILE --tokenizer FILE instead of -m)\n");
}

enum { O_TE = 1000, O_TOK, O_DEV, O_MAXLEN, O_RANDOM };

int cmd_encode(int argc, char **argv) {
    zimage_options opt = ZIMAGE_OPTIONS_DEFAULT;
    const char *prompt = NULL, *out = NULL;
    int maxlen = 512;
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},      {"prompt", required_argument, 0, 'p'},
        {"output", required_argument, 0, 'o'},     {"max-length", required_argument, 0, O_MAXLEN},
        {"text-encoder", required_argument, 0, O_TE}, {"llm", required_argument, 0, O_TE},
        {"tokenizer", required_argument, 0, O_TOK}, {"device", required_argument, 0, O_DEV},
        {"threads", required_argument, 0, 't'},    {"random-weights", no_argument, 0, O_RANDOM},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:p:o:t:h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': opt.model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'o': out = optarg; break;
        case O_MAXLEN: CLI_INT(maxlen, "max-length", 1, 1 << 20); break;
        case O_TE: opt.text_encoder = optarg; break;
        case O_TOK: opt.tokenizer = optarg; break;
        case O_DEV: opt.device = optarg; break;
        case 't': CLI_INT(opt.threads, "threads", 0, 1024); break;
        case O_RANDOM: opt.random_weights = 1; break;
        case 'h': help(); return 0;
        case ':': fprintf(stderr, "zimage encode: option %s needs a value\n", argv[optind - 1]); return 2;
        default: fprintf(stderr, "zimage encode: unknown option '%s'\n", argv[optind - 1]); return 2;
        }
    }
    if (!prompt || !out || optind < argc) {
        help();
        return 2;
    }
    char err[1024];
    if (cli_check_writable(out, err, sizeof err)) {
        fprintf(stderr, "zimage encode: %s\n", err);
        return 2;
    }
    char dir[4096];
    if (opt.model && cli_resolve_model(opt.model, 0, dir, sizeof dir)) return 1;
    if (opt.model) opt.model = dir;
    opt.components = ZIMAGE_LOAD_TE;
    opt.prompt_cache = 0;
    zimage_ctx *ctx;
    if (zimage_create(&ctx, &opt, err, sizeof err)) {
        fprintf(stderr, "zimage encode: %s\n", err);
        return 1;
    }
    float *feat = NULL;
    int n = 0, d = 0, rc = 0;
    if (zimage_encode_prompt(ctx, prompt, maxlen, &feat, &n, &d)) {
        fprintf(stderr, "zimage encode: %s\n", zimage_errmsg(ctx));
        rc = 1;
    } else {
        int64_t shape[2] = {n, d};
        zerr e = {0};
        if (npy_write(out, NPY_F32, 2, shape, feat, &e)) {
            fprintf(stderr, "zimage encode: %s\n", e.msg);
            rc = 1;
        } else {
            fprintf(stderr, "zimage encode: %d tokens x %d -> %s\n", n, d, out);
        }
    }
    free(feat);
    zimage_free(ctx);
    return rc;
}
