/* main.c - the zimage command: dispatch to subcommands (cli.h).
 * With no subcommand (or when argv[1] starts with '-'), `generate` runs. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "zimage.h"

static void usage(FILE *f) {
    fprintf(f,
            "zimage %s - Z-Image-Turbo text-to-image\n"
            "\n"
            "usage: zimage [generate] -m MODEL -p PROMPT [-o out.png] [options]   make an image\n"
            "       zimage pull [REPO]          download a model into the Hugging Face cache\n"
            "       zimage serve -m MODEL       HTTP server (OpenAI / A1111 APIs, web page)\n"
            "       zimage tokenize -m MODEL TEXT\n"
            "       zimage encode -m MODEL -p TEXT -o features.npy\n"
            "       zimage bench [--random-weights] ...\n"
            "\n"
            "`zimage SUBCOMMAND --help` lists the options of each.\n",
            ZIMAGE_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "-h") || !strcmp(c, "--help") || !strcmp(c, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(c, "--version") || !strcmp(c, "version")) {
        printf("zimage %s\n", ZIMAGE_VERSION);
        return 0;
    }
    if (c[0] == '-') return cmd_generate(argc, argv); /* argv[0] plays the subcommand */
    if (!strcmp(c, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(c, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(c, "encode")) return cmd_encode(argc - 1, argv + 1);
    if (!strcmp(c, "pull")) return cmd_pull(argc - 1, argv + 1);
    if (!strcmp(c, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(c, "bench")) return cmd_bench(argc - 1, argv + 1);
    fprintf(stderr, "zimage: unknown command '%s'\n\n", c);
    usage(stderr);
    return 2;
}
