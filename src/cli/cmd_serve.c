/* cmd_serve.c - `zimage serve`: load the model once and serve the HTTP API
 * (src/server/).  SIGTERM / SIGINT stop accepting connections, cancel queued
 * work, let running work finish (up to --shutdown-grace seconds) and exit 0. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cli/cli.h"
#include "server/server.h"

#define MAX_DEVICES 16

static void usage(FILE *f) {
    fprintf(f,
            "usage: zimage serve -m MODEL [options]\n"
            "\n"
            "model:\n"
            "  -m, --model DIR            diffusers folder of Z-Image-Turbo\n"
            "      --diffusion-model F    single-file DiT (overrides the folder's)\n"
            "      --text-encoder F       single-file Qwen3 text encoder\n"
            "      --vae F                single-file VAE\n"
            "      --tokenizer F          tokenizer.json\n"
            "      --random-weights       random weights from the configs (benchmarks)\n"
            "      --device D[,D...]      cpu | cuda | cuda:N; one worker per device (default auto)\n"
            "  -t, --threads N            CPU threads (0 = all cores)\n"
            "      --offload-te           keep the text encoder on the device only while encoding\n"
            "      --prompt-cache N       prompt-embedding LRU entries (default 16, 0 = off)\n"
            "      --model-name NAME      name shown by the APIs (default: the folder name)\n"
            "\n"
            "server:\n"
            "      --host ADDR            bind address (default 127.0.0.1)\n"
            "      --port N               port (default 7860, 0 = any free port)\n"
            "      --api-key KEY          require 'Authorization: Bearer KEY' (or $ZIMAGE_API_KEY)\n"
            "      --cors ORIGIN          Access-Control-Allow-Origin value\n"
            "      --max-queue N          waiting jobs before 429 (default 64)\n"
            "      --max-batch N          images per batched generation (default 4)\n"
            "      --batch-wait-ms N      wait this long for a batch to fill (default 0)\n"
            "      --min-size N           smallest side in pixels (default 256)\n"
            "      --max-size N           largest side in pixels (default 2048)\n"
            "      --default-size N       side used when a request gives none (default 1024)\n"
            "      --default-steps N      steps when a request gives none (default 8)\n"
            "      --max-steps N          (default 50)\n"
            "      --max-n N              images per request (default 8)\n"
            "      --max-body BYTES       request body limit (default 1048576)\n"
            "      --max-prompt BYTES     prompt length limit (default 8192)\n"
            "      --job-ttl SECONDS      how long finished jobs are kept (default 600)\n"
            "      --max-retained MB      image memory kept for finished jobs (default 512)\n"
            "      --max-conns N          concurrent connections (default 256)\n"
            "      --idle-timeout S       close idle keep-alive connections after S seconds (default 60)\n"
            "      --shutdown-grace S     seconds running work may finish on SIGTERM (default 30)\n"
            "  -q, --quiet                no request log\n"
            "  -v, --verbose              more logging (repeat for debug)\n"
            "  -h, --help\n");
}

static int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

static const char *basename_of(const char *p) {
    static char buf[256];
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && p[b - 1] != '/') b--;
    size_t len = n - b < sizeof buf - 1 ? n - b : sizeof buf - 1;
    memcpy(buf, p + b, len);
    buf[len] = 0;
    return buf[0] ? buf : "z-image-turbo";
}

enum {
    O_DIT = 1000, O_TE, O_VAE, O_TOK, O_RANDOM, O_DEVICE, O_OFFLOAD, O_PCACHE, O_NAME, O_HOST, O_PORT, O_KEY, O_CORS,
    O_MAXQ, O_MAXB, O_BWAIT, O_MINS, O_MAXS, O_DEFS, O_DEFSTEPS, O_MAXSTEPS, O_MAXN, O_MAXBODY, O_MAXPROMPT, O_TTL,
    O_RETAIN, O_CONNS, O_GRACE, O_IDLE,
};

int cmd_serve(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"diffusion-model", required_argument, 0, O_DIT},
        {"text-encoder", required_argument, 0, O_TE},
        {"vae", required_argument, 0, O_VAE},
        {"tokenizer", required_argument, 0, O_TOK},
        {"random-weights", no_argument, 0, O_RANDOM},
        {"device", required_argument, 0, O_DEVICE},
        {"threads", required_argument, 0, 't'},
        {"offload-te", no_argument, 0, O_OFFLOAD},
        {"prompt-cache", required_argument, 0, O_PCACHE},
        {"model-name", required_argument, 0, O_NAME},
        {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT},
        {"api-key", required_argument, 0, O_KEY},
        {"cors", required_argument, 0, O_CORS},
        {"max-queue", required_argument, 0, O_MAXQ},
        {"max-batch", required_argument, 0, O_MAXB},
        {"batch-wait-ms", required_argument, 0, O_BWAIT},
        {"min-size", required_argument, 0, O_MINS},
        {"max-size", required_argument, 0, O_MAXS},
        {"default-size", required_argument, 0, O_DEFS},
        {"default-steps", required_argument, 0, O_DEFSTEPS},
        {"max-steps", required_argument, 0, O_MAXSTEPS},
        {"max-n", required_argument, 0, O_MAXN},
        {"max-body", required_argument, 0, O_MAXBODY},
        {"max-prompt", required_argument, 0, O_MAXPROMPT},
        {"job-ttl", required_argument, 0, O_TTL},
        {"max-retained", required_argument, 0, O_RETAIN},
        {"max-conns", required_argument, 0, O_CONNS},
        {"shutdown-grace", required_argument, 0, O_GRACE},
        {"idle-timeout", required_argument, 0, O_IDLE},
        {"quiet", no_argument, 0, 'q'},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    zimage_options zo = ZIMAGE_OPTIONS_DEFAULT;
    zs_config cfg;
    zs_config_defaults(&cfg);
    const char *devices = NULL, *name = NULL;
    int verbose = 0;
    long v = 0;
    double d = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "m:t:qvh", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': zo.model = optarg; break;
        case O_DIT: zo.diffusion_model = optarg; break;
        case O_TE: zo.text_encoder = optarg; break;
        case O_VAE: zo.vae = optarg; break;
        case O_TOK: zo.tokenizer = optarg; break;
        case O_RANDOM: zo.random_weights = 1; break;
        case O_DEVICE: devices = optarg; break;
        case 't': bad = parse_long(optarg, 0, 4096, &v); zo.threads = (int)v; break;
        case O_OFFLOAD: zo.offload_te = 1; break;
        case O_PCACHE: bad = parse_long(optarg, 0, 1 << 20, &v); zo.prompt_cache = (int)v; break;
        case O_NAME: name = optarg; break;
        case O_HOST: cfg.host = optarg; break;
        case O_PORT: bad = parse_long(optarg, 0, 65535, &v); cfg.port = (int)v; break;
        case O_KEY: cfg.api_key = optarg; break;
        case O_CORS: cfg.cors = optarg; break;
        case O_MAXQ: bad = parse_long(optarg, 0, 1 << 20, &v); cfg.max_queue = (int)v; break;
        case O_MAXB: bad = parse_long(optarg, 1, 64, &v); cfg.max_batch = (int)v; break;
        case O_BWAIT: bad = parse_long(optarg, 0, 60000, &v); cfg.batch_wait_ms = (int)v; break;
        case O_MINS: bad = parse_long(optarg, 16, 16384, &v); cfg.min_size = (int)v; break;
        case O_MAXS: bad = parse_long(optarg, 16, 16384, &v); cfg.max_size = (int)v; break;
        case O_DEFS: bad = parse_long(optarg, 16, 16384, &v); cfg.default_size = (int)v; break;
        case O_DEFSTEPS: bad = parse_long(optarg, 1, 1000, &v); cfg.default_steps = (int)v; break;
        case O_MAXSTEPS: bad = parse_long(optarg, 1, 1000, &v); cfg.max_steps = (int)v; break;
        case O_MAXN: bad = parse_long(optarg, 1, 64, &v); cfg.max_n = (int)v; break;
        case O_MAXBODY: bad = parse_long(optarg, 1024, 1L << 30, &v); cfg.max_body = (size_t)v; break;
        case O_MAXPROMPT: bad = parse_long(optarg, 1, 1L << 20, &v); cfg.max_prompt = (size_t)v; break;
        case O_TTL: bad = parse_double(optarg, 1, 1e7, &d); cfg.job_ttl = d; break;
        case O_RETAIN: bad = parse_long(optarg, 1, 1L << 20, &v); cfg.max_retained = (size_t)v << 20; break;
        case O_CONNS: bad = parse_long(optarg, 4, 100000, &v); cfg.max_conns = (int)v; break;
        case O_IDLE: bad = parse_long(optarg, 1, 86400, &v); cfg.idle_timeout = (int)v; break;
        case O_GRACE: bad = parse_double(optarg, 0, 86400, &d); cfg.shutdown_grace = d; break;
        case 'q': cfg.quiet = 1; break;
        case 'v': verbose++; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "zimage serve: bad value '%s' for %s\n", optarg, argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "zimage serve: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!zo.model && !zo.diffusion_model && !zo.random_weights) {
        fprintf(stderr, "zimage serve: -m MODEL is required\n");
        usage(stderr);
        return 2;
    }
    if (!cfg.api_key && getenv("ZIMAGE_API_KEY") && getenv("ZIMAGE_API_KEY")[0]) cfg.api_key = getenv("ZIMAGE_API_KEY");
    zlog_set_level(verbose >= 2 ? ZLOG_DEBUG : cfg.quiet && !verbose ? ZLOG_WARN : ZLOG_INFO);
    zo.verbose = verbose > 2 ? 2 : verbose;
    const char *path = zo.model ? zo.model : zo.diffusion_model;
    cfg.model_name = name ? name : path ? basename_of(path) : "z-image-turbo";
    cfg.model_path = path ? path : "random-weights";

    /* Signals: handled by sigwait in this thread only. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* One engine (context) per device. */
    char devbuf[512];
    snprintf(devbuf, sizeof devbuf, "%s", devices ? devices : "");
    zs_engine engines[MAX_DEVICES];
    memset(engines, 0, sizeof engines);
    int n = 0;
    char *save = NULL;
    char *tok = devices ? strtok_r(devbuf, ",", &save) : NULL;
    do {
        if (n == MAX_DEVICES) {
            fprintf(stderr, "zimage serve: at most %d devices\n", MAX_DEVICES);
            break;
        }
        zo.device = tok;
        char err[1024];
        double t0 = ztime_now();
        ZLOGI("loading %s on %s ...", path ? path : "random weights", tok ? tok : "auto");
        if (zs_engine_zimage(&engines[n], &zo, err, sizeof err)) {
            fprintf(stderr, "zimage serve: cannot load the model%s%s: %s\n", tok ? " on " : "", tok ? tok : "", err);
            for (int i = 0; i < n; i++) engines[i].destroy(engines[i].ctx);
            return 1;
        }
        ZLOGI("loaded on %s in %.1f s", engines[n].device_name(engines[n].ctx), ztime_now() - t0);
        n++;
    } while (tok && (tok = strtok_r(NULL, ",", &save)));

    zs_server *s;
    char err[1024];
    if (zs_start(&s, &cfg, engines, n, err, sizeof err)) {
        fprintf(stderr, "zimage serve: %s\n", err);
        return 1;
    }
    printf("zimage: serving %s on http://%s%s%s:%d/ (%d worker%s, max batch %d, queue %d)%s\n", cfg.model_name,
           strchr(cfg.host, ':') ? "[" : "", cfg.host, strchr(cfg.host, ':') ? "]" : "", zs_port(s), n, n > 1 ? "s" : "",
           cfg.max_batch, cfg.max_queue, cfg.api_key ? " [API key required]" : "");
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    ZLOGI("%s: shutting down (running work may finish for %.0f s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
          cfg.shutdown_grace);
    zs_free(s);
    ZLOGI("stopped");
    return 0;
}
