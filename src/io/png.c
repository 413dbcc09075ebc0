/* png.c - PNG output (libpng), the float -> RGB8 conversion, and the A1111
 * "parameters" infotext.  Implements zimage_write_png and zimage_infotext
 * (include/zimage.h); internals in png.h.
 *
 * Infotext (A1111 modules/processing.py create_infotext, which sd-webui
 * forks, Civitai and most readers parse):
 *
 *   <prompt>
 *   Negative prompt: <negative>                  (only when non-empty)
 *   Steps: 8, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Seed: 42,
 *   Size: 1024x1024, Model: Z-Image-Turbo, RNG: CPU, Version: zimage 0.1.0
 *
 * (the last line is one line).  Keys in A1111's order; "Model" only with a
 * model name; "RNG" is A1111's randn_source: "CPU" for the torch CPU
 * generator, "NV" for the CUDA Philox generator computed on the host (what
 * A1111 calls NV); "CFG normalization" / "CFG truncation" (our extra keys,
 * placed where A1111 puts extra_generation_params) only when not default
 * (0 / 1).  A value containing ',', ':' or a newline is written as a JSON
 * string (A1111 infotext_utils.quote); the prompts are written as they are,
 * newlines included; the whole text is stripped of leading whitespace like
 * Python's str.strip().  W x H is width x height.
 */
#include "png.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <png.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <omp.h>
#include <zlib.h>

#include "zimage.h"

/* ------------------------------------------------------------------------
 * float image -> uint8
 * ---------------------------------------------------------------------- */

void zimg_to_u8(const float *img, uint8_t *out, size_t n) {
#pragma omp parallel for schedule(static) if (n >= (1u << 18))
    for (size_t i = 0; i < n; i++) {
        float h = img[i] * 0.5f;
        float y = h + 0.5f;
        y = !(y == y) ? 0.0f : y < 0.0f ? 0.0f : (y > 1.0f ? 1.0f : y); /* NaN -> 0 */
        float s = y * 255.0f;
        out[i] = (uint8_t)rintf(s); /* round half to even (default rounding mode) */
    }
}

/* ------------------------------------------------------------------------
 * text chunk encoding
 * ---------------------------------------------------------------------- */

/* Decode one UTF-8 sequence at s (len bytes left); returns its length and
 * the code point in *cp, or 0 for an invalid sequence. */
static int utf8_next(const unsigned char *s, size_t len, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    if (!n || c > 0xF4 || (size_t)n > len) return 0;
    uint32_t v = c & (0x3Fu >> (n - 1));
    for (int k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    static const uint32_t minv[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < minv[n] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

/* Latin-1 copy of UTF-8 text into *out (malloc'd); *out = NULL when some
 * code point is above U+00FF (the text then goes to iTXt).  Bytes that are
 * not UTF-8 are kept as they are (tEXt holds bytes).  -1: out of memory. */
static int to_latin1(const char *t, char **out) {
    size_t len = strlen(t);
    char *o = malloc(len + 1);
    *out = NULL;
    if (!o) return -1;
    size_t j = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = utf8_next((const unsigned char *)t + i, len - i, &cp);
        if (!k) { /* not UTF-8: raw byte */
            o[j++] = t[i++];
            continue;
        }
        if (cp > 0xFF) {
            free(o);
            return 0;
        }
        o[j++] = (char)cp;
        i += (size_t)k;
    }
    o[j] = 0;
    *out = o;
    return 0;
}

/* ------------------------------------------------------------------------
 * libpng encoding to memory
 * ---------------------------------------------------------------------- */

typedef struct membuf {
    uint8_t *p;
    size_t n, cap;
    int oom;
    char msg[256];
} membuf;

/* Append n bytes; 1 on allocation failure. */
static int mb_append(membuf *m, const void *data, size_t len) {
    if (m->n + len > m->cap) {
        size_t cap = m->cap ? m->cap : 65536;
        while (cap < m->n + len) cap *= 2;
        uint8_t *q = realloc(m->p, cap);
        if (!q) {
            m->oom = 1;
            return 1;
        }
        m->p = q;
        m->cap = cap;
    }
    memcpy(m->p + m->n, data, len);
    m->n += len;
    return 0;
}

static void mb_write(png_structp png, png_bytep data, png_size_t len) {
    if (mb_append(png_get_io_ptr(png), data, len)) png_error(png, "out of memory");
}

static void mb_flush(png_structp png) { (void)png; }

static void png_err_cb(png_structp png, png_const_charp msg) {
    membuf *m = png_get_error_ptr(png);
    snprintf(m->msg, sizeof m->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warn_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* Everything the setjmp-protected part touches lives in *j (no locals that
 * change after setjmp).  Returns 0, or 1 after a libpng error (message in
 * j->m.msg). */
typedef struct png_job {
    membuf m;
    png_structp png;
    png_infop info;
    const uint8_t *rgb;
    int width, height;
    const char *latin, *utf8; /* text for tEXt / iTXt (at most one set) */
    const zpng_opts *o;
} png_job;

static __attribute__((noinline)) int encode_core(png_job *j) {
    if (setjmp(png_jmpbuf(j->png))) return 1;
    png_set_write_fn(j->png, &j->m, mb_write, mb_flush);
    png_set_IHDR(j->png, j->info, (png_uint_32)j->width, (png_uint_32)j->height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(j->png, j->o->level);
    png_set_compression_strategy(j->png, j->o->strategy);
    png_set_filter(j->png, PNG_FILTER_TYPE_BASE, j->o->filters & ZPNG_FILTER_ALL);
    if (j->latin || j->utf8) {
        png_text t;
        memset(&t, 0, sizeof t);
        t.key = (png_charp) "parameters";
        if (j->latin) {
            t.compression = PNG_TEXT_COMPRESSION_NONE;
            t.text = (png_charp)j->latin;
            t.text_length = strlen(j->latin);
        } else {
            t.compression = PNG_ITXT_COMPRESSION_NONE;
            t.text = (png_charp)j->utf8;
            t.lang = (png_charp) "";
            t.lang_key = (png_charp) "";
        }
        png_set_text(j->png, j->info, &t, 1);
    }
    png_write_info(j->png, j->info);
    for (int y = 0; y < j->height; y++) png_write_row(j->png, j->rgb + (size_t)y * (size_t)j->width * 3);
    png_write_end(j->png, j->info);
    return 0;
}

/* ------------------------------------------------------------------------
 * Parallel encoder (the default path: one filter type for every row).
 *
 * libpng compresses the image as one zlib stream on one thread.  Here the
 * rows are split into T bands; each thread filters its band and compresses
 * it as an independent raw deflate stream that ends with Z_FULL_FLUSH (byte
 * aligned, no BFINAL, no dictionary carried over), the last band with
 * Z_FINISH.  Concatenated behind a zlib header and followed by the combined
 * Adler-32, the bands form one valid zlib stream (what pigz does), which is
 * written as IDAT chunks of 256 KiB (CRCs computed in parallel) with the PNG
 * framing below.  The output decodes to
 * the same pixels as the libpng path; only the compressed bytes differ.
 * ---------------------------------------------------------------------- */

typedef struct {
    uint8_t *z;      /* compressed band             */
    size_t zn;
    uLong adler;     /* Adler-32 of the band's raw  */
    size_t raw;      /* raw (filtered) bytes        */
    int err;
} band_out;

/* The PNG Paeth predictor, branch-free so the loop below vectorizes:
 * with p = a + b - c, |p - a| = |b - c|, |p - b| = |a - c|, |p - c| = |(b - c) + (a - c)|. */
static inline int paeth(int a, int b, int c) {
    int pb_ = b - c, pa_ = a - c;
    int pa = abs(pb_), pb = abs(pa_), pc = abs(pa_ + pb_);
    int r = pb <= pc ? b : c;
    return pa <= pb && pa <= pc ? a : r;
}

/* Filter one row with the single filter f (PNG filter type 0..4); RGB8, so
 * the left neighbour is 3 bytes back.  One loop per type (the encoder side
 * has no dependency between outputs: every loop vectorizes). */
static void filter_row(uint8_t *restrict dst, const uint8_t *restrict row, const uint8_t *restrict prev, size_t n,
                       int f) {
    dst[0] = (uint8_t)f;
    uint8_t *restrict d = dst + 1;
    size_t h = n < 3 ? n : 3; /* bytes without a left neighbour */
    switch (f) {
    case 0: memcpy(d, row, n); return;
    case 1:
        memcpy(d, row, h);
        for (size_t i = 3; i < n; i++) d[i] = (uint8_t)(row[i] - row[i - 3]);
        return;
    case 2:
        if (!prev) {
            memcpy(d, row, n);
            return;
        }
        for (size_t i = 0; i < n; i++) d[i] = (uint8_t)(row[i] - prev[i]);
        return;
    case 3:
        if (!prev) {
            memcpy(d, row, h);
            for (size_t i = 3; i < n; i++) d[i] = (uint8_t)(row[i] - (row[i - 3] >> 1));
            return;
        }
        for (size_t i = 0; i < h; i++) d[i] = (uint8_t)(row[i] - (prev[i] >> 1));
        for (size_t i = 3; i < n; i++) d[i] = (uint8_t)(row[i] - ((row[i - 3] + prev[i]) >> 1));
        return;
    default:
        if (!prev) { /* b = c = 0: the predictor is a (Sub) */
            memcpy(d, row, h);
            for (size_t i = 3; i < n; i++) d[i] = (uint8_t)(row[i] - row[i - 3]);
            return;
        }
        for (size_t i = 0; i < h; i++) d[i] = (uint8_t)(row[i] - prev[i]); /* a = c = 0: predictor b */
        for (size_t i = 3; i < n; i++) d[i] = (uint8_t)(row[i] - paeth(row[i - 3], prev[i], prev[i - 3]));
        return;
    }
}

static int compress_band(const uint8_t *rgb, int width, int y0, int y1, int last, int f, const zpng_opts *o,
                         band_out *bo) {
    size_t stride = (size_t)width * 3, n = (size_t)(y1 - y0) * (stride + 1);
    uint8_t *raw = malloc(n ? n : 1);
    if (!raw) return ZE_NOMEM;
    for (int y = y0; y < y1; y++)
        filter_row(raw + (size_t)(y - y0) * (stride + 1), rgb + (size_t)y * stride,
                   y ? rgb + (size_t)(y - 1) * stride : NULL, stride, f);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, o->level, Z_DEFLATED, -15, 8, o->strategy) != Z_OK) {
        free(raw);
        return ZE_NOMEM;
    }
    size_t cap = deflateBound(&zs, (uLong)n) + 16;
    bo->z = malloc(cap);
    if (!bo->z) {
        deflateEnd(&zs);
        free(raw);
        return ZE_NOMEM;
    }
    zs.next_in = raw;
    zs.avail_in = (uInt)n;
    zs.next_out = bo->z;
    zs.avail_out = (uInt)cap;
    int zr = deflate(&zs, last ? Z_FINISH : Z_FULL_FLUSH);
    int ok = last ? zr == Z_STREAM_END : (zr == Z_OK && zs.avail_in == 0);
    bo->zn = cap - zs.avail_out;
    bo->adler = adler32(adler32(0L, Z_NULL, 0), raw, (uInt)n);
    bo->raw = n;
    deflateEnd(&zs);
    free(raw);
    return ok ? ZE_OK : ZE_IO;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* CRC-32 of a chunk: over its type and data. */
static uLong chunk_crc(const char *type, const uint8_t *data, size_t n) {
    uLong crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)type, 4);
    return n ? crc32(crc, data, (uInt)n) : crc;
}

/* Append one chunk (length, type, data, CRC) to m, its CRC already computed. */
static int put_chunk_crc(membuf *m, const char *type, const uint8_t *data, size_t n, uLong crc) {
    uint8_t hdr[8];
    put32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    uint8_t tail[4];
    put32(tail, (uint32_t)crc);
    return mb_append(m, hdr, 8) || (n && mb_append(m, data, n)) || mb_append(m, tail, 4);
}

static int put_chunk(membuf *m, const char *type, const uint8_t *data, size_t n) {
    return put_chunk_crc(m, type, data, n, chunk_crc(type, data, n));
}

#define IDAT_MAX (256u << 10) /* IDAT chunk size: their CRCs are computed in parallel */

static int encode_parallel(const uint8_t *rgb, int width, int height, const char *latin, const char *utf8,
                           const zpng_opts *o, membuf *m) {
    int f = o->filters == ZPNG_FILTER_NONE ? 0 : o->filters == ZPNG_FILTER_SUB ? 1 : o->filters == ZPNG_FILTER_UP ? 2
          : o->filters == ZPNG_FILTER_AVG ? 3 : 4;
    int nb = omp_get_max_threads();
    if (nb > 16) nb = 16;
    if (nb > height) nb = height;
    if ((size_t)width * (size_t)height < 65536) nb = 1;
    band_out bo[16];
    memset(bo, 0, sizeof bo);
    int rc = ZE_OK;
#pragma omp parallel for num_threads(nb) schedule(static, 1)
    for (int b = 0; b < nb; b++) {
        int y0 = (int)((int64_t)height * b / nb), y1 = (int)((int64_t)height * (b + 1) / nb);
        bo[b].err = compress_band(rgb, width, y0, y1, b == nb - 1, f, o, &bo[b]);
    }
    for (int b = 0; b < nb; b++)
        if (bo[b].err) rc = bo[b].err;
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    uint8_t ihdr[13];
    put32(ihdr, (uint32_t)width);
    put32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 2;  /* RGB */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* adaptive filtering method */
    ihdr[12] = 0; /* no interlace */
    if (!rc && (mb_append(m, sig, 8) || put_chunk(m, "IHDR", ihdr, 13))) rc = ZE_NOMEM;
    if (!rc && (latin || utf8)) {
        /* tEXt: key NUL text ; iTXt: key NUL 0 0 "" NUL "" NUL text */
        const char *t = latin ? latin : utf8;
        size_t kl = strlen("parameters"), tl = strlen(t), n = kl + 1 + (latin ? 0 : 4) + tl;
        uint8_t *c = malloc(n);
        if (!c) rc = ZE_NOMEM;
        else {
            memcpy(c, "parameters", kl);
            size_t k = kl;
            c[k++] = 0;
            if (!latin) {
                c[k++] = 0; /* not compressed */
                c[k++] = 0; /* method */
                c[k++] = 0; /* empty language tag */
                c[k++] = 0; /* empty translated key */
            }
            memcpy(c + k, t, tl);
            if (put_chunk(m, latin ? "tEXt" : "iTXt", c, n)) rc = ZE_NOMEM;
            free(c);
        }
    }
    if (!rc) {
        /* zlib stream = header + bands + Adler-32 of everything, in IDAT chunks of <= 1 MiB */
        size_t total = 2 + 4;
        for (int b = 0; b < nb; b++) total += bo[b].zn;
        uint8_t *zbuf = malloc(total);
        if (!zbuf) rc = ZE_NOMEM;
        else {
            size_t k = 0;
            zbuf[k++] = 0x78;
            zbuf[k++] = 0x01;
            uLong ad = adler32(0L, Z_NULL, 0);
            for (int b = 0; b < nb; b++) {
                memcpy(zbuf + k, bo[b].z, bo[b].zn);
                k += bo[b].zn;
                ad = adler32_combine(ad, bo[b].adler, (z_off_t)bo[b].raw);
            }
            put32(zbuf + k, (uint32_t)ad);
            k += 4;
            int nc = (int)((k + IDAT_MAX - 1) / IDAT_MAX);
            uLong *crc = malloc(sizeof *crc * (size_t)nc);
            if (!crc) rc = ZE_NOMEM;
            else {
                /* a serial CRC over 3 MB of noise-like data was ~1.5 ms on the GPU machine's cores */
#pragma omp parallel for num_threads(nb) schedule(static, 1) if (nc > 1)
                for (int c = 0; c < nc; c++) {
                    size_t off = (size_t)c * IDAT_MAX, len = k - off < IDAT_MAX ? k - off : IDAT_MAX;
                    crc[c] = chunk_crc("IDAT", zbuf + off, len);
                }
                for (int c = 0; c < nc && !rc; c++) {
                    size_t off = (size_t)c * IDAT_MAX, len = k - off < IDAT_MAX ? k - off : IDAT_MAX;
                    if (put_chunk_crc(m, "IDAT", zbuf + off, len, crc[c])) rc = ZE_NOMEM;
                }
                free(crc);
            }
            free(zbuf);
        }
    }
    if (!rc && put_chunk(m, "IEND", NULL, 0)) rc = ZE_NOMEM;
    for (int b = 0; b < nb; b++) free(bo[b].z);
    return rc;
}

int zpng_encode(const uint8_t *rgb, int width, int height, const char *text, const zpng_opts *opts, uint8_t **out,
                size_t *out_len, zerr *e) {
    static const zpng_opts defo = ZPNG_OPTS_DEFAULT;
    const zpng_opts *o = opts ? opts : &defo;
    if (!out || !out_len) return zerr_set(e, ZE_INVALID, "png: no output buffer");
    *out = NULL;
    *out_len = 0;
    if (!rgb || width <= 0 || height <= 0) return zerr_set(e, ZE_INVALID, "png: bad image %dx%d", width, height);
    if ((uint64_t)width * 3 > (uint64_t)1 << 30 || (uint64_t)width * (uint64_t)height > (uint64_t)1 << 31)
        return zerr_set(e, ZE_INVALID, "png: image %dx%d too large", width, height);
    if (o->level < 0 || o->level > 9 || o->strategy < 0 || o->strategy > 4 || !(o->filters & ZPNG_FILTER_ALL))
        return zerr_set(e, ZE_INVALID, "png: bad options (level %d, filters 0x%x, strategy %d)", o->level,
                        o->filters, o->strategy);

    char *latin = NULL;
    if (text && to_latin1(text, &latin)) return zerr_set(e, ZE_NOMEM, "png: out of memory");
    int f = o->filters & ZPNG_FILTER_ALL;
    if (f && !(f & (f - 1))) { /* a single filter type: the parallel encoder */
        membuf m;
        memset(&m, 0, sizeof m);
        int rc = encode_parallel(rgb, width, height, latin, latin ? NULL : text, o, &m);
        free(latin);
        if (rc) {
            free(m.p);
            return zerr_set(e, rc, "png: encoding failed (%s)", rc == ZE_NOMEM ? "out of memory" : "zlib error");
        }
        *out = m.p;
        *out_len = m.n;
        return ZE_OK;
    }
    png_job j;
    memset(&j, 0, sizeof j);
    j.rgb = rgb;
    j.width = width;
    j.height = height;
    j.latin = latin;
    j.utf8 = latin ? NULL : text;
    j.o = o;
    j.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &j.m, png_err_cb, png_warn_cb);
    j.info = j.png ? png_create_info_struct(j.png) : NULL;
    if (!j.png || !j.info) {
        png_destroy_write_struct(&j.png, NULL);
        free(latin);
        return zerr_set(e, ZE_NOMEM, "png: cannot create the libpng writer");
    }
    int failed = encode_core(&j);
    png_destroy_write_struct(&j.png, &j.info);
    free(latin);
    if (failed) {
        free(j.m.p);
        return zerr_set(e, j.m.oom ? ZE_NOMEM : ZE_IO, "png: encoding failed: %s", j.m.msg);
    }
    *out = j.m.p;
    *out_len = j.m.n;
    return ZE_OK;
}

/* ------------------------------------------------------------------------
 * atomic file write
 * ---------------------------------------------------------------------- */

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Create "<dir>/.<base>.<unique>.tmp" next to path with O_EXCL (mode 0666
 * minus umask, like fopen).  Returns the fd, or -1 with errno set. */
static int open_temp(const char *path, char *tmp, size_t tmplen) {
    static atomic_uint counter;
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path + 1) : 0;
    const char *base = slash ? slash + 1 : path;
    for (int attempt = 0; attempt < 64; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned k = atomic_fetch_add(&counter, 1u);
        int r = snprintf(tmp, tmplen, "%.*s.%s.%ld.%u.%lx.tmp", dirlen, path, base, (long)getpid(), k,
                         (unsigned long)ts.tv_nsec);
        if (r < 0 || (size_t)r >= tmplen) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

int zpng_write(const char *path, const uint8_t *rgb, int width, int height, const char *text,
               const zpng_opts *opts, zerr *e) {
    if (!path || !*path) return zerr_set(e, ZE_INVALID, "png: empty output path");
    size_t plen = strlen(path);
    if (path[plen - 1] == '/') return zerr_set(e, ZE_INVALID, "cannot write '%s': the path is a folder", path);
    static const zpng_opts defo = ZPNG_OPTS_DEFAULT;
    uint8_t *buf;
    size_t len;
    ZTRY(zpng_encode(rgb, width, height, text, opts, &buf, &len, e));
    const zpng_opts *o = opts ? opts : &defo;

    size_t tmplen = plen + 96;
    char *tmp = malloc(tmplen);
    if (!tmp) {
        free(buf);
        return zerr_set(e, ZE_NOMEM, "png: out of memory");
    }
    int rc = ZE_OK;
    int fd = open_temp(path, tmp, tmplen);
    if (fd < 0) {
        rc = zerr_set(e, ZE_IO, "cannot write '%s': cannot create a file in its folder: %s", path, strerror(errno));
        goto done;
    }
    if (write_all(fd, buf, len) || (o->sync && fsync(fd))) {
        rc = zerr_set(e, ZE_IO, "cannot write '%s': %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    if (close(fd)) {
        rc = zerr_set(e, ZE_IO, "cannot write '%s': %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path)) {
        rc = zerr_set(e, ZE_IO, "cannot write '%s': %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
done:
    free(tmp);
    free(buf);
    return rc;
}

int zimage_write_png(const char *path, const uint8_t *rgb, int width, int height, const char *text, char *err,
                     size_t errlen) {
    zerr e = {0};
    int rc = zpng_write(path, rgb, width, height, text, NULL, &e);
    if (err && errlen) snprintf(err, errlen, "%s", rc ? e.msg : "");
    return rc;
}

/* ------------------------------------------------------------------------
 * infotext
 * ---------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int over;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->over = 1;
        return;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

/* A1111 infotext_utils.quote: as is unless it contains ',', ':' or '\n',
 * else json.dumps(v, ensure_ascii=False). */
static void sb_value(sbuf *b, const char *v) {
    if (!strpbrk(v, ",:\n")) {
        sb_puts(b, v);
        return;
    }
    sb_putn(b, "\"", 1);
    for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
        char esc[8];
        switch (*s) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        default:
            if (*s < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *s);
                sb_puts(b, esc);
            } else {
                sb_putn(b, (const char *)s, 1);
            }
        }
    }
    sb_putn(b, "\"", 1);
}

static void sb_key(sbuf *b, const char *k, const char *v) {
    if (b->n && b->p[b->n - 1] != '\n') sb_puts(b, ", ");
    sb_puts(b, k);
    sb_puts(b, ": ");
    sb_value(b, v);
}

/* Shortest decimal that reads back as the same float (Python repr style
 * for the value the user gave: 1 -> "1", 7.5 -> "7.5", 1.1f -> "1.1"). */
static void fmt_float(char *o, size_t n, float v) {
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(o, n, "%.*g", prec, (double)v);
        if (strtof(o, NULL) == v) return;
    }
}

/* Length of leading Python-whitespace (str.isspace) at s, in bytes. */
static size_t py_space_len(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    for (;;) {
        unsigned c = u[i];
        if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) {
            i++;
            continue;
        }
        uint32_t cp;
        int k = c >= 0x80 ? utf8_next(u + i, strlen(s + i), &cp) : 0;
        if (k && (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
                  cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)) {
            i += (size_t)k;
            continue;
        }
        return i;
    }
}

int zimage_infotext(const zimage_params *p, int64_t seed, const char *model_name, char *buf, size_t buflen) {
    if (!p || !buf || !buflen) return ZIMAGE_EINVAL;
    sbuf b = {buf, 0, buflen, 0};
    buf[0] = 0;
    const char *prompt = p->prompt ? p->prompt : "";
    const char *neg = p->negative_prompt ? p->negative_prompt : "";
    sb_puts(&b, prompt);
    if (*neg) {
        sb_puts(&b, "\nNegative prompt: ");
        sb_puts(&b, neg);
    }
    sb_puts(&b, "\n");
    char v[64];
    snprintf(v, sizeof v, "%d", p->steps);
    sb_key(&b, "Steps", v);
    sb_key(&b, "Sampler", "Euler");
    sb_key(&b, "Schedule type", "Simple");
    fmt_float(v, sizeof v, p->cfg_scale);
    sb_key(&b, "CFG scale", v);
    snprintf(v, sizeof v, "%lld", (long long)seed);
    sb_key(&b, "Seed", v);
    snprintf(v, sizeof v, "%dx%d", p->width, p->height);
    sb_key(&b, "Size", v);
    if (model_name && *model_name) sb_key(&b, "Model", model_name);
    sb_key(&b, "RNG", p->rng == ZIMAGE_RNG_CUDA ? "NV" : "CPU");
    if (p->cfg_normalization != 0.0f) {
        fmt_float(v, sizeof v, p->cfg_normalization);
        sb_key(&b, "CFG normalization", v);
    }
    if (p->cfg_truncation != 1.0f) {
        fmt_float(v, sizeof v, p->cfg_truncation);
        sb_key(&b, "CFG truncation", v);
    }
    sb_key(&b, "Version", "zimage " ZIMAGE_VERSION);
    if (b.over) {
        buf[0] = 0;
        return ZIMAGE_EINVAL;
    }
    size_t lead = py_space_len(buf); /* str.strip(): the end is never blank */
    if (lead) memmove(buf, buf + lead, b.n - lead + 1);
    return ZIMAGE_OK;
}
