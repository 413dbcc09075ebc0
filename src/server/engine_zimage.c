/* engine_zimage.c - the server's zs_engine backed by a real zimage context
 * (include/zimage.h).  One engine = one context = one device. */
#include <stdio.h>

#include "server/server.h"

static int eng_generate_many(void *ctx, const zimage_params *items, int n, zimage_result *results) {
    return zimage_generate_many(ctx, items, n, results);
}
static void eng_result_free(void *ctx, zimage_result *r) { zimage_result_free(r); }
static const char *eng_errmsg(void *ctx) { return zimage_errmsg(ctx); }
static const char *eng_device_name(void *ctx) { return zimage_device_name(ctx); }
static void eng_cache_stats(void *ctx, uint64_t *h, uint64_t *m) { zimage_cache_stats(ctx, h, m); }
static int eng_infotext(void *ctx, const zimage_params *p, int64_t seed, const char *model, char *buf, size_t n) {
    return zimage_infotext(p, seed, model, buf, n);
}
static void eng_destroy(void *ctx) { zimage_free(ctx); }

int zs_engine_zimage(zs_engine *eng, const zimage_options *opt, char *err, size_t errlen) {
    zimage_ctx *ctx = NULL;
    int rc = zimage_create(&ctx, opt, err, errlen);
    if (rc) return rc;
    eng->ctx = ctx;
    eng->generate_many = eng_generate_many;
    eng->result_free = eng_result_free;
    eng->errmsg = eng_errmsg;
    eng->device_name = eng_device_name;
    eng->cache_stats = eng_cache_stats;
    eng->infotext = eng_infotext;
    eng->destroy = eng_destroy;
    return 0;
}
