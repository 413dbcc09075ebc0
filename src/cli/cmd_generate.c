/* cmd_generate.c - `zimage [generate]`: prompt -> PNG, a thin user of the C
 * API.  Flag names follow stable-diffusion.cpp where they exist.
 * Everything the user typed is checked before the model is loaded; Ctrl-C
 * stops at the next step and leaves no half-written file. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/npy.h"
#include "io/hub.h"
#include "cli.h"
#include "cli_common.h"
#include "zimage.h"

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) {
    (void)sig;
    if (g_interrupted) _exit(130); /* second Ctrl-C: leave now */
    g_interrupted = 1;
}

/* PNGs are written on worker threads as images arrive from the decoder, so
 * image k is encoded while image k+1 decodes. */
#define MAX_IMAGES 64
typedef struct png_task {
    pthread_t th;
    int started;
    char path[PATH_MAX];
    char text[8192];
    int has_text;
    uint8_t *rgb; /* private copy */
    int w, h;
    int rc;
    char err[512];
} png_task;

typedef struct {
    int tty;
    double last;
    const zimage_params *p;
    const char *out_pattern;
    const char *model_name;
    int no_meta;
    png_task tasks[MAX_IMAGES];
} progress_state;

static void out_name(const char *pattern, int i, int n, char *buf, size_t len);

static void *png_worker(void *arg) {
    png_task *t = arg;
    t->rc = zimage_write_png(t->path, t->rgb, t->w, t->h, t->has_text ? t->text : NULL, t->err, sizeof t->err);
    free(t->rgb);
    t->rgb = NULL;
    return NULL;
}

static void start_png(progress_state *ps, const zimage_progress *pr) {
    int k = pr->image_index;
    if (k < 0 || k >= MAX_IMAGES) return;
    png_task *t = &ps->tasks[k];
    size_t n = (size_t)ps->p->width * ps->p->height * 3;
    t->w = ps->p->width;
    t->h = ps->p->height;
    out_name(ps->out_pattern, k, ps->p->batch, t->path, sizeof t->path);
    t->has_text = !ps->no_meta;
    if (t->has_text) zimage_infotext(ps->p, pr->image_seed, ps->model_name, t->text, sizeof t->text);
    t->rgb = malloc(n);
    if (!t->rgb) {
        t->rc = -1;
        snprintf(t->err, sizeof t->err, "out of memory");
        t->started = 2;
        return;
    }
    memcpy(t->rgb, pr->image_rgb, n);
    if (pthread_create(&t->th, NULL, png_worker, t)) {
        png_worker(t); /* no thread: write it now */
        t->started = 2;
    } else {
        t->started = 1;
    }
}

static int on_progress(const zimage_progress *p, void *user) {
    progress_state *ps = user;
    if (!strcmp(p->stage, "image") && p->image_rgb) {
        start_png(ps, p);
        return 0;
    }
    if (ps->tty && !strcmp(p->stage, "denoise") && p->steps > 0) {
        double per = p->step > 0 ? p->elapsed / p->step : 0;
        int width = 30, fill = p->step * width / p->steps;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r  denoise [%s] %d/%d  %.2f s/step  ETA %.1f s ", bar, p->step, p->steps, per,
                per * (p->steps - p->step));
        if (p->step == p->steps) fputc('\n', stderr);
        fflush(stderr);
    }
    return g_interrupted ? 1 : 0;
}

static void help(void) {
    printf("usage: zimage [generate] -m MODEL -p PROMPT [options]\n"
           "\n"
           "model:\n"
           "  -m, --model PATH|REPO        diffusers folder, or a Hugging Face repo id (default\n"
           "                               Tongyi-MAI/Z-Image-Turbo: found in the cache or downloaded)\n"
           "      --diffusion-model FILE   transformer single file (diffusers or ComfyUI naming)\n"
           "      --text-encoder FILE      Qwen3 text encoder single file (alias --llm)\n"
           "      --vae FILE               VAE single file (diffusers or ae.safetensors naming)\n"
           "      --tokenizer FILE         tokenizer.json\n"
           "      --device cpu|cuda[:N]    default: cuda when a GPU is usable, else cpu\n"
           "  -t, --threads N              CPU threads (default: all cores)\n"
           "      --random-weights         random weights from the configs (benchmarks)\n"
           "      --offload-te             keep the text encoder on the GPU only while encoding\n"
           "      --yes                    download a missing repo without asking\n"
           "image:\n"
           "  -p, --prompt TEXT\n"
           "  -n, --negative-prompt TEXT   used when --cfg-scale > 1\n"
           "  -W, --width N                default 1024 (multiple of 16)\n"
           "  -H, --height N               default 1024 (multiple of 16)\n"
           "      --steps N                default 8\n"
           "      --cfg-scale S            A1111/sd.cpp meaning, 1 = off (default 1)\n"
           "      --guidance-scale G       diffusers meaning (= cfg-scale - 1)\n"
           "      --cfg-normalization K    0 = off (default)\n"
           "      --cfg-truncation T       default 1 (never)\n"
           "  -s, --seed N                 default random (always printed and stored)\n"
           "      --rng cpu|cuda           torch CPU (default) or CUDA generator noise\n"
           "  -b, --batch N                images from one noise draw (default 1)\n"
           "      --max-sequence-length N  token limit of the templated prompt (default 512)\n"
           "      --init-latents F.npy     start from these latents [n,16,H/8,W/8] float32\n"
           "      --dump-latents F.npy     write the final latents before the VAE\n"
           "output:\n"
           "  -o, --output PATH            default output.png; several images: %%d = index,\n"
           "                               else -<index> goes before the extension\n"
           "      --no-metadata            no A1111 'parameters' text in the PNG\n"
           "  -v, --verbose                more logging (twice: debug)\n");
}

enum {
    O_DIT = 1000, O_TE, O_VAE, O_TOK, O_DEVICE, O_RANDOM, O_OFFLOAD, O_STEPS, O_CFG, O_GUID, O_CFGN, O_CFGT, O_RNG,
    O_MAXSEQ, O_INIT, O_DUMP, O_NOMETA, O_YES
};

/* Output path for image i of n. */
static void out_name(const char *pattern, int i, int n, char *buf, size_t len) {
    if (n <= 1) {
        snprintf(buf, len, "%s", pattern);
        return;
    }
    const char *pct = strstr(pattern, "%d");
    if (pct) {
        snprintf(buf, len, "%.*s%d%s", (int)(pct - pattern), pattern, i, pct + 2);
        return;
    }
    const char *slash = strrchr(pattern, '/');
    const char *dot = strrchr(pattern, '.');
    if (dot && (!slash || dot > slash))
        snprintf(buf, len, "%.*s-%d%s", (int)(dot - pattern), pattern, i, dot);
    else
        snprintf(buf, len, "%s-%d", pattern, i);
}

int cmd_generate(int argc, char **argv) {
    zimage_options opt = ZIMAGE_OPTIONS_DEFAULT;
    zimage_params p = ZIMAGE_PARAMS_DEFAULT;
    const char *out = "output.png", *init = NULL, *dump = NULL, *rng = "cpu";
    int no_meta = 0, verbose = 0, yes = 0, have_guid = 0, have_cfg = 0;
    float guid = 0;
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},
        {"diffusion-model", required_argument, 0, O_DIT},
        {"text-encoder", required_argument, 0, O_TE},
        {"llm", required_argument, 0, O_TE},
        {"vae", required_argument, 0, O_VAE},
        {"tokenizer", required_argument, 0, O_TOK},
        {"device", required_argument, 0, O_DEVICE},
        {"threads", required_argument, 0, 't'},
        {"random-weights", no_argument, 0, O_RANDOM},
        {"offload-te", no_argument, 0, O_OFFLOAD},
        {"yes", no_argument, 0, O_YES},
        {"prompt", required_argument, 0, 'p'},
        {"negative-prompt", required_argument, 0, 'n'},
        {"width", required_argument, 0, 'W'},
        {"height", required_argument, 0, 'H'},
        {"steps", required_argument, 0, O_STEPS},
        {"cfg-scale", required_argument, 0, O_CFG},
        {"guidance-scale", required_argument, 0, O_GUID},
        {"cfg-normalization", required_argument, 0, O_CFGN},
        {"cfg-truncation", required_argument, 0, O_CFGT},
        {"seed", required_argument, 0, 's'},
        {"rng", required_argument, 0, O_RNG},
        {"batch", required_argument, 0, 'b'},
        {"max-sequence-length", required_argument, 0, O_MAXSEQ},
        {"init-latents", required_argument, 0, O_INIT},
        {"dump-latents", required_argument, 0, O_DUMP},
        {"output", required_argument, 0, 'o'},
        {"no-metadata", no_argument, 0, O_NOMETA},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:t:p:n:W:H:s:b:o:vh", lo, NULL)) != -1) {
        switch (c) {
        case 'm': opt.model = optarg; break;
        case O_DIT: opt.diffusion_model = optarg; break;
        case O_TE: opt.text_encoder = optarg; break;
        case O_VAE: opt.vae = optarg; break;
        case O_TOK: opt.tokenizer = optarg; break;
        case O_DEVICE: opt.device = optarg; break;
        case 't': CLI_INT(opt.threads, "threads", 0, 1024); break;
        case O_RANDOM: opt.random_weights = 1; break;
        case O_OFFLOAD: opt.offload_te = 1; break;
        case O_YES: yes = 1; break;
        case 'p': p.prompt = optarg; break;
        case 'n': p.negative_prompt = optarg; break;
        case 'W': CLI_INT(p.width, "width", 1, 1 << 20); break;
        case 'H': CLI_INT(p.height, "height", 1, 1 << 20); break;
        case O_STEPS: CLI_INT(p.steps, "steps", -1000000, 1000000); break;
        case O_CFG: CLI_FLOAT(p.cfg_scale, "cfg-scale"); have_cfg = 1; break;
        case O_GUID: CLI_FLOAT(guid, "guidance-scale"); have_guid = 1; break;
        case O_CFGN: CLI_FLOAT(p.cfg_normalization, "cfg-normalization"); break;
        case O_CFGT: CLI_FLOAT(p.cfg_truncation, "cfg-truncation"); break;
        case 's': CLI_I64(p.seed, "seed"); break;
        case O_RNG: rng = optarg; break;
        case 'b': CLI_INT(p.batch, "batch", 1, 32); break;
        case O_MAXSEQ: CLI_INT(p.max_sequence_length, "max-sequence-length", 1, 1 << 20); break;
        case O_INIT: init = optarg; break;
        case O_DUMP: dump = optarg; break;
        case 'o': out = optarg; break;
        case O_NOMETA: no_meta = 1; break;
        case 'v': verbose++; break;
        case 'h': help(); return 0;
        case ':': fprintf(stderr, "zimage: option %s needs a value\n", argv[optind - 1]); return 2;
        default: fprintf(stderr, "zimage: unknown option '%s' (see zimage --help)\n", argv[optind - 1]); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "zimage: unexpected argument '%s' (quote the prompt and pass it with -p)\n", argv[optind]);
        return 2;
    }
    /* ---- everything checkable without the model ---- */
    if (!p.prompt) {
        fprintf(stderr, "zimage: no prompt: use -p \"...\"\n");
        return 2;
    }
    /* no model named: the official repo, from the Hugging Face cache (pulled on first use) */
    if (!opt.model && !opt.random_weights && !(opt.diffusion_model && opt.text_encoder && opt.vae))
        opt.model = ZHUB_DEFAULT_REPO;
    if (have_cfg && have_guid) {
        fprintf(stderr, "zimage: give either --cfg-scale or --guidance-scale, not both\n");
        return 2;
    }
    if (have_guid) p.cfg_scale = guid + 1.0f;
    if (p.width % 16 || p.height % 16 || p.width < 16 || p.height < 16 || p.width > 8192 || p.height > 8192) {
        fprintf(stderr, "zimage: width and height must be multiples of 16 between 16 and 8192 (got %dx%d)\n", p.width,
                p.height);
        return 2;
    }
    if (p.steps < 1 || p.steps > 1000) {
        fprintf(stderr, "zimage: steps must be between 1 and 1000 (got %d)\n", p.steps);
        return 2;
    }
    if (p.cfg_scale < 0 || p.cfg_normalization < 0 || p.cfg_truncation < 0) {
        fprintf(stderr, "zimage: cfg values must not be negative\n");
        return 2;
    }
    if (!strcmp(rng, "cpu"))
        p.rng = ZIMAGE_RNG_CPU;
    else if (!strcmp(rng, "cuda"))
        p.rng = ZIMAGE_RNG_CUDA;
    else {
        fprintf(stderr, "zimage: --rng must be cpu or cuda (got '%s')\n", rng);
        return 2;
    }
    char err[1024];
    for (int i = 0; i < p.batch; i++) {
        char name[PATH_MAX];
        out_name(out, i, p.batch, name, sizeof name);
        if (cli_check_writable(name, err, sizeof err)) {
            fprintf(stderr, "zimage: %s\n", err);
            return 2;
        }
    }
    if (dump && cli_check_writable(dump, err, sizeof err)) {
        fprintf(stderr, "zimage: %s\n", err);
        return 2;
    }
    npy_array init_arr = {0};
    if (init) {
        zerr e = {0};
        if (npy_read(init, &init_arr, &e)) {
            fprintf(stderr, "zimage: --init-latents: %s\n", e.msg);
            return 2;
        }
        if (init_arr.dtype != NPY_F32 || init_arr.ndim != 4 || init_arr.shape[0] != p.batch) {
            fprintf(stderr, "zimage: --init-latents must be float32 [%d, C, H/f, W/f] (got %s, %d dims, first %lld)\n",
                    p.batch, init_arr.dtype == NPY_F32 ? "float32" : "another dtype", init_arr.ndim,
                    (long long)(init_arr.ndim ? init_arr.shape[0] : 0));
            npy_free(&init_arr);
            return 2;
        }
        p.init_latents = init_arr.data;
    }

    /* ---- load ---- */
    opt.verbose = verbose;
    if (verbose) zlog_set_level(verbose > 1 ? ZLOG_DEBUG : ZLOG_INFO);
    char model_dir[4096];
    if (opt.model && !opt.random_weights) {
        if (cli_resolve_model(opt.model, yes, model_dir, sizeof model_dir)) {
            npy_free(&init_arr);
            return 1;
        }
        opt.model = model_dir;
    }
    zimage_ctx *ctx = NULL;
    double t0 = cli_now();
    if (zimage_create(&ctx, &opt, err, sizeof err)) {
        fprintf(stderr, "zimage: %s\n", err);
        npy_free(&init_arr);
        return 1;
    }
    double t_load = cli_now() - t0;
    if (zimage_validate(ctx, &p)) {
        fprintf(stderr, "zimage: %s\n", zimage_errmsg(ctx));
        zimage_free(ctx);
        npy_free(&init_arr);
        return 2;
    }
    int lat_c = 0, lat_h = 0, lat_w = 0;
    cli_latent_shape(ctx, &p, &lat_c, &lat_h, &lat_w);
    if (init && (init_arr.shape[1] != lat_c || init_arr.shape[2] != lat_h || init_arr.shape[3] != lat_w)) {
        fprintf(stderr, "zimage: --init-latents has shape [%lld, %lld, %lld, %lld], this size needs [%d, %d, %d, %d]\n",
                (long long)init_arr.shape[0], (long long)init_arr.shape[1], (long long)init_arr.shape[2],
                (long long)init_arr.shape[3], p.batch, lat_c, lat_h, lat_w);
        zimage_free(ctx);
        npy_free(&init_arr);
        return 2;
    }
    float *lat_out = NULL;
    size_t lat_n = (size_t)p.batch * (size_t)lat_c * (size_t)lat_h * (size_t)lat_w;
    if (dump) {
        lat_out = malloc(lat_n * sizeof(float));
        p.out_latents = lat_out;
    }
    static progress_state ps;
    memset(&ps, 0, sizeof ps);
    ps.tty = isatty(2);
    ps.p = &p;
    ps.out_pattern = out;
    ps.model_name = cli_model_name(opt.model);
    ps.no_meta = no_meta;
    p.progress = on_progress;
    p.progress_user = &ps;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    fprintf(stderr, "zimage: %dx%d, %d steps, cfg %g, device %s, load %.2f s\n", p.width, p.height, p.steps,
            p.cfg_scale, zimage_device_name(ctx), t_load);
    zimage_result r;
    int rc = zimage_generate(ctx, &p, &r);
    npy_free(&init_arr);
    if (rc) {
        /* images already handed to writers are finished (each file appears whole or not at all) */
        for (int i = 0; i < MAX_IMAGES; i++)
            if (ps.tasks[i].started == 1) pthread_join(ps.tasks[i].th, NULL);
        fprintf(stderr, "%szimage: %s\n", ps.tty ? "\n" : "", rc == ZIMAGE_ECANCELLED ? "interrupted, nothing written" : zimage_errmsg(ctx));
        free(lat_out);
        zimage_free(ctx);
        return rc == ZIMAGE_ECANCELLED ? 130 : 1;
    }
    fprintf(stderr, "zimage: seed %lld\n", (long long)r.seeds[0]);
    fprintf(stderr, "  tokenize %8.3f s\n  encode   %8.3f s%s\n  denoise  %8.3f s  (%.3f s/step)\n  decode   %8.3f s\n",
            r.timings.tokenize, r.timings.encode, r.prompt_cache_hit ? " (cached)" : "", r.timings.denoise,
            r.timings.denoise / p.steps, r.timings.decode);
    /* PNGs were started as the images arrived; wait for them */
    double tp = cli_now();
    int wrc = 0;
    for (int i = 0; i < r.n && i < MAX_IMAGES; i++) {
        png_task *t = &ps.tasks[i];
        if (t->started == 1) pthread_join(t->th, NULL);
        if (!t->started || t->rc) {
            fprintf(stderr, "zimage: %s\n", t->started ? t->err : "image was not delivered");
            wrc = 1;
        } else {
            printf("%s\n", t->path);
        }
    }
    fprintf(stderr, "  png      %8.3f s\n  total    %8.3f s\n", cli_now() - tp, r.timings.total + (cli_now() - tp));
    if (!wrc && dump) {
        zerr e = {0};
        int64_t shp[4] = {p.batch, lat_c, lat_h, lat_w};
        if (npy_write(dump, NPY_F32, 4, shp, lat_out, &e)) {
            fprintf(stderr, "zimage: %s\n", e.msg);
            wrc = 1;
        }
    }
    free(lat_out);
    zimage_result_free(&r);
    zimage_free(ctx);
    return wrc;
}
