/* cmd_pull.c - `zimage pull [REPO[@REV]]`: download a model into the
 * Hugging Face cache (or ModelScope's), resuming and verifying, and print
 * the snapshot folder on stdout.  All the work is in src/io/hub.c; this is
 * flags, Ctrl-C and the progress display.  See docs/PULL.md. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "cli.h"
#include "io/hub.h"

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) {
    (void)sig;
    if (g_stop) _exit(130); /* second Ctrl-C: leave now (partial files stay resumable) */
    g_stop = 1;
}

static void help(FILE *f) {
    fprintf(f,
            "usage: zimage pull [REPO[@REV]] [options]\n"
            "\n"
            "Download a model into the Hugging Face cache, where diffusers finds it too.\n"
            "Only the files zimage reads are fetched (configs, tokenizer, safetensors);\n"
            "several at once, resumable, each verified (sha256 of LFS files, size).\n"
            "\n"
            "  REPO                      repo id, default %s\n"
            "                            (hf:ORG/NAME or modelscope:ORG/NAME pick the source)\n"
            "  -r, --revision REV        branch, tag or commit (default main; ModelScope: master)\n"
            "      --source hf|modelscope\n"
            "      --cache-dir DIR       default $HF_HUB_CACHE, else $HF_HOME/hub, else\n"
            "                            ~/.cache/huggingface/hub ($MODELSCOPE_CACHE for ModelScope)\n"
            "      --endpoint URL        default $HF_ENDPOINT or https://huggingface.co (mirrors)\n"
            "  -j, --jobs N              parallel downloads (default 8)\n"
            "      --all                 every file of the repo, not only what zimage reads\n"
            "      --offline             no network: only check that the model is in the cache\n"
            "                            (also when HF_HUB_OFFLINE=1)\n"
            "  -q, --quiet               no progress output\n"
            "\n"
            "Gated or private repos: set HF_TOKEN (it is never printed).\n"
            "The snapshot folder is printed on stdout; use it with -m, or just pass the repo id.\n",
            ZHUB_DEFAULT_REPO);
}

int cmd_pull(int argc, char **argv) {
    enum { O_SOURCE = 256, O_CACHE, O_ENDPOINT, O_ALL, O_OFFLINE };
    static const struct option lo[] = {
        {"revision", required_argument, 0, 'r'}, {"source", required_argument, 0, O_SOURCE},
        {"cache-dir", required_argument, 0, O_CACHE}, {"endpoint", required_argument, 0, O_ENDPOINT},
        {"jobs", required_argument, 0, 'j'},        {"all", no_argument, 0, O_ALL},
        {"offline", no_argument, 0, O_OFFLINE},     {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0},
    };
    zhub_opts o;
    zhub_opts_default(&o);
    const char *revision = NULL;
    int quiet = 0, source_set = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "r:j:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 'r': revision = optarg; break;
        case O_SOURCE:
            if (!strcmp(optarg, "hf") || !strcmp(optarg, "huggingface"))
                o.source = ZHUB_HF;
            else if (!strcmp(optarg, "modelscope") || !strcmp(optarg, "ms"))
                o.source = ZHUB_MODELSCOPE;
            else {
                fprintf(stderr, "zimage pull: --source: '%s' is not hf or modelscope\n", optarg);
                return 2;
            }
            source_set = 1;
            break;
        case O_CACHE: o.cache_dir = optarg; break;
        case O_ENDPOINT: o.endpoint = optarg; break;
        case 'j': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > 32) {
                fprintf(stderr, "zimage pull: --jobs: '%s' is not an integer in [1, 32]\n", optarg);
                return 2;
            }
            o.jobs = (int)v;
            break;
        }
        case O_ALL: o.all_files = 1; break;
        case O_OFFLINE: o.offline = 1; break;
        case 'q': quiet = 1; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "zimage pull: one repo at a time (got %d)\n", argc - optind);
        return 2;
    }
    char repo[256], rev[256] = "";
    snprintf(repo, sizeof repo, "%s", ZHUB_DEFAULT_REPO);
    if (optind < argc) {
        zhub_source src = o.source;
        if (zhub_parse_spec(argv[optind], &src, repo, sizeof repo, rev, sizeof rev)) {
            fprintf(stderr, "zimage pull: '%s' is not a repo id (ORG/NAME, e.g. %s)\n", argv[optind], ZHUB_DEFAULT_REPO);
            return 2;
        }
        if (!source_set) o.source = src;
    }
    if (revision && rev[0] && strcmp(revision, rev)) {
        fprintf(stderr, "zimage pull: two revisions given (@%s and --revision %s)\n", rev, revision);
        return 2;
    }
    if (!revision && rev[0]) revision = rev;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (!quiet) {
        o.progress = zhub_progress_term;
        o.progress_user = (void *)&g_stop;
    }

    zhub_result r;
    zerr e = {0};
    int rc = zhub_pull(repo, revision, &o, &r, &e);
    if (rc) {
        if (rc == ZE_CANCELLED && g_stop)
            fprintf(stderr, "zimage pull: interrupted; run the same command again to resume\n");
        else
            fprintf(stderr, "zimage pull: %s\n", e.msg);
        return 1;
    }
    if (r.fallback && !quiet) fprintf(stderr, "zimage pull: warning: %s\nzimage pull: using the cached snapshot\n", r.note);
    if (r.offline && !quiet) fprintf(stderr, "zimage pull: offline mode: %s is in the cache\n", repo);
    printf("%s\n", r.snapshot);
    return 0;
}
