/* cmd_bench.c - `zimage bench`: per-stage timings of whole generations
 * (tokenize, encode, every DiT step, decode, PNG), effective TFLOP/s of the
 * DiT from the FLOP count of spec section 9 (computed from the loaded
 * configs), the backend's bf16/f32 GEMM rate measured in the same run, and
 * peak device memory.  Works with --random-weights (no checkpoint needed).
 * A developer tool: it reads the context's configs through pipeline.h. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cli.h"
#include "cli_common.h"
#include "pipeline.h"
#include "zimage.h"
#ifdef ZIMAGE_HAVE_CUDA
#include "ops/cuda/cuda_backend.h"
#endif

#define MAX_STEPS 256

typedef struct {
    double t_last;
    double t_step[MAX_STEPS];
    int n;
} bench_cb;

static int on_progress(const zimage_progress *p, void *user) {
    bench_cb *b = user;
    if (!strcmp(p->stage, "denoise") && p->step >= 1 && p->step <= MAX_STEPS) {
        b->t_step[p->step - 1] = p->elapsed - b->t_last;
        b->n = p->step;
    }
    b->t_last = p->elapsed;
    return 0;
}

/* FLOPs of one DiT forward (spec 9.1) for a B=1 sample of L caption tokens. */
static double dit_flops(const dit_config *c, int hl, int wl, int L) {
    double D = c->dim, F = c->ffn_dim, p = c->patch_size;
    double nx = (hl / p) * (wl / p), nxp = nx + fmod(32 - fmod(nx, 32), 32);
    double lp = L + (32 - L % 32) % 32, n = nxp + lp;
    double per_tok = 4 * D * D + 3 * D * F;
    double f = c->n_layers * (2 * n * per_tok + 4 * n * n * D);
    f += c->n_refiner_layers * (2 * nxp * per_tok + 4 * nxp * nxp * D);
    f += c->n_refiner_layers * (2 * lp * per_tok + 4 * lp * lp * D);
    f += 2 * (nx * p * p * c->in_channels * D + L * c->cap_feat_dim * D + n * D * p * p * c->in_channels);
    return f;
}

static double te_flops(const qwen3_config *c, int L) {
    double D = c->hidden_size, q = c->num_attention_heads * (double)c->head_dim,
           kv = c->num_key_value_heads * (double)c->head_dim, F = c->intermediate_size;
    double per_tok = D * q + 2 * D * kv + q * D + 3 * D * F;
    int nrun = c->num_hidden_layers - 1;
    return nrun * (2.0 * L * per_tok + 2.0 * 2 * (double)L * L * q);
}

static double vae_flops(const vae_config *c, int h, int w) {
    /* conv MACs = H W Ci Co k^2, walking the decoder of spec 6.3 */
    double mac = 0;
    int nb = c->n_blocks, ch = c->block_out_channels[nb - 1];
    double hw = (double)h * w;
    mac += hw * c->latent_channels * ch * 9;
    double res = hw * (ch * ch * 9.0) * 2; /* one resnet at ch->ch */
    mac += 2 * res + 4 * hw * ch * ch + 2 * hw * hw * ch;
    int cin = ch;
    for (int b = 0; b < nb; b++) {
        int co = c->block_out_channels[nb - 1 - b];
        for (int r = 0; r <= c->layers_per_block; r++) {
            int ci = r == 0 ? cin : co;
            mac += hw * ci * co * 9.0 + hw * co * co * 9.0 + (ci != co ? hw * ci * co : 0);
        }
        cin = co;
        if (b < nb - 1) {
            hw *= 4;
            mac += hw * co * co * 9.0;
        }
    }
    mac += hw * cin * c->out_channels * 9.0;
    return 2 * mac;
}

/* Time y[M,N] = x[M,K] w[N,K]^T on the backend with its weight dtype. */
static double gemm_rate(zimage_ctx *ctx, int m, int n, int k, int reps) {
    zbackend *be = ctx->be;
    zt x, w, y;
    int64_t sx[2] = {m, k}, sw[2] = {n, k}, sy[2] = {m, n};
    if (zt_alloc(be, &x, be->act, 2, sx)) return 0;
    if (zt_alloc(be, &w, zbackend_weight_dtype(be, ZT_BF16, 1), 2, sw)) {
        zt_free(be, &x);
        return 0;
    }
    if (zt_alloc(be, &y, be->act, 2, sy)) {
        zt_free(be, &x);
        zt_free(be, &w);
        return 0;
    }
    size_t nmax = (size_t)(m > n ? m : n) * (size_t)k;
    float *h = malloc(nmax * sizeof *h);
    for (size_t i = 0; i < nmax; i++) h[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    zt_upload(be, &x, h, ZT_F32);
    zt_upload(be, &w, h, ZT_F32);
    free(h);
    zexec zx;
    zx_begin(&zx, be, NULL, 0);
    zop_matmul(&zx, &y, &x, &w, NULL, 0); /* warm up */
    if (be->vt->sync) be->vt->sync(be);
    double t0 = ztime_now();
    for (int i = 0; i < reps; i++) zop_matmul(&zx, &y, &x, &w, NULL, 0);
    if (be->vt->sync) be->vt->sync(be);
    double dt = (ztime_now() - t0) / reps;
    zt_free(be, &x);
    zt_free(be, &w);
    zt_free(be, &y);
    return zx_ok(&zx) ? 2.0 * m * n * k / dt : 0;
}

/* "123.4 TFLOP/s" or "56.7 GFLOP/s" into a rotating static buffer. */
static const char *rate_str(double flops_per_s) {
    static char b[4][32];
    static int k;
    char *o = b[k++ & 3];
    if (flops_per_s >= 1e12)
        snprintf(o, 32, "%7.1f TFLOP/s", flops_per_s / 1e12);
    else
        snprintf(o, 32, "%7.1f GFLOP/s", flops_per_s / 1e9);
    return o;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One forward of one component with random inputs, timed (`--only`). */
static int bench_stage(zimage_ctx *ctx, const char *stage, int width, int height, int ptok, int runs) {
    zbackend *be = ctx->be;
    zexec zx;
    int hl, wl, cl;
    zimage_latent_shape(ctx, width, height, &cl, &hl, &wl);
    size_t nlat = (size_t)cl * hl * wl;
    int dcap = ctx->dit_cfg.cap_feat_dim;
    float *hbuf = malloc(sizeof(float) * (nlat > (size_t)ptok * dcap ? nlat : (size_t)ptok * dcap));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)ptok);
    uint32_t r = 12345;
    for (size_t i = 0; i < (nlat > (size_t)ptok * dcap ? nlat : (size_t)ptok * dcap); i++) {
        r = r * 1664525u + 1013904223u;
        hbuf[i] = (float)((r >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    for (int i = 0; i < ptok; i++) ids[i] = (int32_t)((i * 7919) % 150000);
    double best = 1e30, sum = 0, flops = 0;
    int rc = 0;
    for (int run = -1; run < runs && !rc; run++) {
        double t = 0;
        for (int pass = 0; pass < 2 && !rc; pass++) {
            int measure = pass == 0;
            zx_begin(&zx, be, &ctx->persist, measure);
            if (!strcmp(stage, "te")) {
                zt out = zx_tensor2(&zx, ZT_F32, ptok, ctx->te_cfg.hidden_size);
                double t0 = ztime_now();
                qwen3_encode(&zx, &ctx->te, ids, ptok, &out);
                if (be->vt->sync) be->vt->sync(be);
                t = ztime_now() - t0;
                flops = te_flops(&ctx->te_cfg, ptok);
            } else if (!strcmp(stage, "dit")) {
                zt feat = zx_tensor2(&zx, be->act, ptok, dcap);
                zx_upload(&zx, &feat, hbuf, ZT_F32);
                const zt *fp = &feat;
                dit_batch bt;
                dit_batch_prepare(&zx, &ctx->dit, &fp, 1, hl, wl, &bt);
                zt x = zx_tensor4(&zx, ZT_F32, 1, cl, hl, wl), out = zx_tensor4(&zx, ZT_F32, 1, cl, hl, wl);
                int64_t one = 1;
                zt tt = zx_tensor(&zx, ZT_F32, 1, &one);
                float tv = 0.5f;
                zx_upload(&zx, &x, hbuf, ZT_F32);
                zx_upload(&zx, &tt, &tv, ZT_F32);
                if (be->vt->sync) be->vt->sync(be);
                double t0 = ztime_now();
                dit_forward(&zx, &ctx->dit, &bt, &x, &tt, &out);
                if (be->vt->sync) be->vt->sync(be);
                t = ztime_now() - t0;
                flops = dit_flops(&ctx->dit_cfg, hl, wl, ptok);
            } else {
                zt lat = zx_tensor4(&zx, ZT_F32, 1, cl, hl, wl), img = zx_tensor4(&zx, ZT_F32, 1, height, width, 3);
                zx_upload(&zx, &lat, hbuf, ZT_F32);
                double t0 = ztime_now();
                vae_decode(&zx, &ctx->vae, &lat, &img);
                if (be->vt->sync) be->vt->sync(be);
                t = ztime_now() - t0;
                flops = vae_flops(&ctx->vae_cfg, hl, wl);
            }
            if (!zx_ok(&zx)) rc = zx.status;
            else if (measure) rc = zpipe_arena_reserve(ctx, &ctx->persist, ctx->persist.peak);
        }
        if (rc) break;
        if (run >= 0) {
            sum += t;
            if (t < best) best = t;
            printf("  %s forward run %d: %.4f s\n", stage, run, t);
        }
    }
    if (rc) fprintf(stderr, "zimage bench: %s\n", zimage_errmsg(ctx));
    else
        printf("%s forward (%dx%d, %d tokens): best %.4f s, mean %.4f s, %.4f TFLOP -> %s\n", stage, width, height,
               ptok, best, sum / runs, flops / 1e12, rate_str(flops / best));
    size_t in_use = 0, peak = 0;
    if (be->vt->mem_stats) be->vt->mem_stats(be, &in_use, &peak);
    if (peak) printf("  backend memory peak %.2f GiB\n", peak / 1073741824.0);
    free(hbuf);
    free(ids);
    return rc ? 1 : 0;
}

static void help(void) {
    printf("usage: zimage bench [-m MODEL | --random-weights [-m CONFIG_FOLDER]] [options]\n"
           "  -W N -H N            image size (default 1024x1024)\n"
           "  --steps N            denoising steps (default 8)\n"
           "  --prompt-tokens N    templated prompt length in tokens (default 128)\n"
           "  --runs N             timed generations (default 3, after one warm-up)\n"
           "  --device D, -t N     backend, CPU threads\n"
           "  --tokenizer FILE     tokenizer.json (needed with --random-weights and no -m)\n"
           "  --gemm N             also time an NxNxN GEMM on the backend (0 = skip; default 4096)\n"
           "  --png FILE           where to write the PNG (default /tmp/zimage-bench.png)\n"
           "  --only te|dit|vae    time one forward of one component (loads only that one)\n"
           "  --offload-te         text encoder on the device only while encoding\n");
}

enum { O_STEPS = 1000, O_TOK, O_RUNS, O_DEV, O_RANDOM, O_GEMM, O_PNG, O_PT, O_ONLY, O_OFFLOAD };

int cmd_bench(int argc, char **argv) {
    zimage_options opt = ZIMAGE_OPTIONS_DEFAULT;
    zimage_params p = ZIMAGE_PARAMS_DEFAULT;
    int runs = 3, ptok = 128, gemm = 4096;
    const char *png = "/tmp/zimage-bench.png", *only = NULL;
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},    {"width", required_argument, 0, 'W'},
        {"height", required_argument, 0, 'H'},   {"steps", required_argument, 0, O_STEPS},
        {"prompt-tokens", required_argument, 0, O_PT}, {"runs", required_argument, 0, O_RUNS},
        {"device", required_argument, 0, O_DEV}, {"threads", required_argument, 0, 't'},
        {"tokenizer", required_argument, 0, O_TOK}, {"random-weights", no_argument, 0, O_RANDOM},
        {"gemm", required_argument, 0, O_GEMM},  {"png", required_argument, 0, O_PNG},
        {"only", required_argument, 0, O_ONLY},  {"offload-te", no_argument, 0, O_OFFLOAD},
        {"verbose", no_argument, 0, 'v'},        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:W:H:t:vh", lo, NULL)) != -1) {
        switch (c) {
        case 'm': opt.model = optarg; break;
        case 'W': CLI_INT(p.width, "width", 16, 8192); break;
        case 'H': CLI_INT(p.height, "height", 16, 8192); break;
        case O_STEPS: CLI_INT(p.steps, "steps", 1, MAX_STEPS); break;
        case O_PT: CLI_INT(ptok, "prompt-tokens", 9, 4096); break;
        case O_RUNS: CLI_INT(runs, "runs", 1, 1000); break;
        case O_DEV: opt.device = optarg; break;
        case 't': CLI_INT(opt.threads, "threads", 0, 1024); break;
        case O_TOK: opt.tokenizer = optarg; break;
        case O_RANDOM: opt.random_weights = 1; break;
        case O_GEMM: CLI_INT(gemm, "gemm", 0, 65536); break;
        case O_PNG: png = optarg; break;
        case O_ONLY: only = optarg; break;
        case O_OFFLOAD: opt.offload_te = 1; break;
        case 'v': opt.verbose++; break;
        case 'h': help(); return 0;
        case ':': fprintf(stderr, "zimage bench: option %s needs a value\n", argv[optind - 1]); return 2;
        default: fprintf(stderr, "zimage bench: unknown option '%s'\n", argv[optind - 1]); return 2;
        }
    }
    if (!opt.model && !opt.random_weights) {
        help();
        return 2;
    }
    if (only) {
        if (strcmp(only, "te") && strcmp(only, "dit") && strcmp(only, "vae")) {
            fprintf(stderr, "zimage bench: --only takes te, dit or vae\n");
            return 2;
        }
        opt.components = !strcmp(only, "te") ? ZIMAGE_LOAD_TE : !strcmp(only, "dit") ? ZIMAGE_LOAD_DIT : ZIMAGE_LOAD_VAE;
        char err[1024];
        double t0 = ztime_now();
        zimage_ctx *ctx;
        if (zimage_create(&ctx, &opt, err, sizeof err)) {
            fprintf(stderr, "zimage bench: %s\n", err);
            return 1;
        }
        printf("zimage bench --only %s: %s, load %.2f s\n", only, zimage_device_name(ctx), ztime_now() - t0);
        int rc = bench_stage(ctx, only, p.width, p.height, ptok, runs);
        zimage_free(ctx);
        return rc;
    }
    /* a prompt of exactly ptok templated tokens: "a" + " cat" x (ptok - 9) + 8 template tokens */
    size_t plen = 2 + 4 * (size_t)ptok;
    char *prompt = malloc(plen);
    strcpy(prompt, "a");
    for (int i = 0; i < ptok - 9; i++) strcat(prompt, " cat");
    p.prompt = prompt;
    p.seed = 42;
    char err[1024];
    double t0 = ztime_now();
    zimage_ctx *ctx;
    if (zimage_create(&ctx, &opt, err, sizeof err)) {
        fprintf(stderr, "zimage bench: %s\n", err);
        free(prompt);
        return 1;
    }
    double tload = ztime_now() - t0;
    int32_t ids[4096];
    int nids = 0;
    if (zimage_tokenize(ctx, prompt, p.max_sequence_length, ids, 4096, &nids)) {
        fprintf(stderr, "zimage bench: %s\n", zimage_errmsg(ctx));
        zimage_free(ctx);
        free(prompt);
        return 1;
    }
    int hl, wl, cl;
    zimage_latent_shape(ctx, p.width, p.height, &cl, &hl, &wl);
    double fd = dit_flops(&ctx->dit_cfg, hl, wl, nids), ft = te_flops(&ctx->te_cfg, nids),
           fv = vae_flops(&ctx->vae_cfg, hl, wl);
    printf("zimage bench: %s, %dx%d, %d steps, %d prompt tokens, load %.2f s\n", zimage_device_name(ctx), p.width,
           p.height, p.steps, nids, tload);
    printf("  FLOPs: DiT forward %.4f TFLOP, text encoder %.4f TFLOP, VAE decode %.4f TFLOP\n", fd / 1e12, ft / 1e12,
           fv / 1e12);
    double rate = gemm > 0 ? gemm_rate(ctx, gemm, gemm, gemm, 5) : 0;
    if (rate > 0) printf("  GEMM %dx%dx%d on this backend: %s\n", gemm, gemm, gemm, rate_str(rate));

    /* runs: warm-up + timed; the prompt cache is bypassed by opt.prompt_cache default? keep it off */
    double *tot = calloc((size_t)runs, sizeof *tot), *enc = calloc((size_t)runs, sizeof *enc),
           *dec = calloc((size_t)runs, sizeof *dec), *stp = calloc((size_t)runs * p.steps, sizeof *stp),
           *pngt = calloc((size_t)runs, sizeof *pngt), *tokt = calloc((size_t)runs, sizeof *tokt),
           *sett = calloc((size_t)runs, sizeof *sett);
    size_t peak = 0;
    int rc = 0;
    if (!tot || !enc || !dec || !stp || !pngt || !tokt || !sett) {
        fprintf(stderr, "zimage bench: out of memory\n");
        rc = 1;
    }
    for (int r = -1; r < runs && !rc; r++) {
        bench_cb cb = {0};
        p.progress = on_progress;
        p.progress_user = &cb;
        ctx->opt.prompt_cache = 0;          /* always run the text encoder */
        zimage_result res;
        if (zimage_generate(ctx, &p, &res)) {
            fprintf(stderr, "zimage bench: %s\n", zimage_errmsg(ctx));
            rc = 1;
            break;
        }
        double tp = ztime_now();
        char text[4096];
        zimage_infotext(&p, res.seeds[0], "bench", text, sizeof text);
        if (zimage_write_png(png, res.images[0], res.width, res.height, text, err, sizeof err)) {
            fprintf(stderr, "zimage bench: %s\n", err);
            rc = 1;
        }
        double tpng = ztime_now() - tp;
        if (r >= 0) {
            tot[r] = res.timings.total;
            tokt[r] = res.timings.tokenize;
            sett[r] = res.timings.setup;
            enc[r] = res.timings.encode;
            dec[r] = res.timings.decode;
            pngt[r] = tpng;
            for (int s = 0; s < p.steps; s++) stp[(size_t)r * p.steps + s] = cb.t_step[s];
            if (res.timings.peak_device_bytes > peak) peak = res.timings.peak_device_bytes;
            printf("  run %d: total %.3f s (tokenize %.4f, encode %.4f, setup %.4f, denoise %.3f, decode %.3f, png %.3f)\n",
                   r, tot[r] + tpng, tokt[r], enc[r], res.timings.setup, res.timings.denoise, dec[r], tpng);
        }
        zimage_result_free(&res);
        if (r < 0) zop_profile_reset(); /* ZIMAGE_PROFILE: timed runs only */
    }
    if (!rc) {
        qsort(tot, (size_t)runs, sizeof *tot, cmp_d);
        qsort(enc, (size_t)runs, sizeof *enc, cmp_d);
        qsort(dec, (size_t)runs, sizeof *dec, cmp_d);
        qsort(pngt, (size_t)runs, sizeof *pngt, cmp_d);
        qsort(tokt, (size_t)runs, sizeof *tokt, cmp_d);
        qsort(sett, (size_t)runs, sizeof *sett, cmp_d);
        qsort(stp, (size_t)runs * p.steps, sizeof *stp, cmp_d);
        double step_med = stp[(size_t)runs * p.steps / 2];
        printf("median of %d runs:\n", runs);
        printf("  tokenize     %9.4f s\n", tokt[runs / 2]);
        printf("  text encoder %9.4f s   %s\n", enc[runs / 2], rate_str(ft / enc[runs / 2]));
        printf("  setup        %9.4f s   (noise, persistent state, caption stream)\n", sett[runs / 2]);
        printf("  DiT step     %9.4f s   %s   (min %.4f, max %.4f)\n", step_med, rate_str(fd / step_med), stp[0],
               stp[(size_t)runs * p.steps - 1]);
        if (rate > 0) printf("               = %.0f%% of the GEMM rate measured above\n", 100.0 * fd / step_med / rate);
        printf("  VAE decode   %9.4f s   %s\n", dec[runs / 2], rate_str(fv / dec[runs / 2]));
        printf("  PNG          %9.4f s\n", pngt[runs / 2]);
        printf("  end-to-end   %9.4f s   (prompt -> PNG)\n", tot[runs / 2] + pngt[runs / 2]);
        if (peak) printf("  peak device memory %.2f GiB\n", peak / 1073741824.0);
    }
#ifdef ZIMAGE_HAVE_CUDA
    if (!rc && opt.verbose >= 2) { /* -v -v: the backend's plans (GEMM algorithms and tuning, convs, attention) */
        size_t cap = 1 << 20;
        char *d = malloc(cap);
        if (d && zcuda_describe(ctx->be, d, cap)) printf("backend plans:\n%s", d);
        free(d);
    }
#endif
    free(tot);
    free(enc);
    free(dec);
    free(stp);
    free(pngt);
    free(tokt);
    free(sett);
    free(prompt);
    zimage_free(ctx);
    return rc;
}
