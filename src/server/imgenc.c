/* imgenc.c - RGB8 to PNG/JPEG/WebP in memory, and base64 (see imgenc.h).
 * PNG: zlib level 3 (server responses favour speed; ~1.3x larger than 9),
 * no filtering heuristics beyond libpng's defaults. */
#include "server/imgenc.h"

#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/json_req.h"

#ifdef ZIMAGE_HAVE_JPEG
#include <jpeglib.h>
#endif
#ifdef ZIMAGE_HAVE_WEBP
#include <webp/encode.h>
#endif

int zs_format_available(int fmt) {
    switch (fmt) {
    case ZS_FMT_PNG: return 1;
#ifdef ZIMAGE_HAVE_JPEG
    case ZS_FMT_JPEG: return 1;
#endif
#ifdef ZIMAGE_HAVE_WEBP
    case ZS_FMT_WEBP: return 1;
#endif
    default: return 0;
    }
}

typedef struct membuf {
    uint8_t *p;
    size_t len, cap;
    int oom;
} membuf;

static void mb_write(png_structp png, png_bytep data, png_size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->oom) return;
    if (m->len + n > m->cap) {
        size_t cap = m->cap ? m->cap : 65536;
        while (cap < m->len + n) cap *= 2;
        uint8_t *q = realloc(m->p, cap);
        if (!q) {
            m->oom = 1;
            return;
        }
        m->p = q;
        m->cap = cap;
    }
    memcpy(m->p + m->len, data, n);
    m->len += n;
}

static void mb_flush(png_structp png) { (void)png; }

static int encode_png(const uint8_t *rgb, int w, int h, const char *text, uint8_t **out, size_t *out_len) {
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    if (!png) return -1;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return -1;
    }
    membuf *volatile mp = &m; /* survives longjmp */
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(mp->p);
        return -1;
    }
    png_set_write_fn(png, &m, mb_write, mb_flush);
    png_set_compression_level(png, 3);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_text t;
    if (text && text[0]) {
        memset(&t, 0, sizeof t);
        t.compression = PNG_TEXT_COMPRESSION_NONE;
        t.key = (png_charp) "parameters";
        t.text = (png_charp)text;
        t.text_length = strlen(text);
        png_set_text(png, info, &t, 1);
    }
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)w * 3));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    if (m.oom) {
        free(m.p);
        return -1;
    }
    *out = m.p;
    *out_len = m.len;
    return 0;
}

#ifdef ZIMAGE_HAVE_JPEG
static int encode_jpeg(const uint8_t *rgb, int w, int h, const char *text, int quality, uint8_t **out,
                       size_t *out_len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr); /* default error_exit aborts only on internal bugs */
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &buf, &len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    if (text && text[0]) {
        size_t n = strlen(text);
        if (n > 65000) n = 65000;
        jpeg_write_marker(&c, JPEG_COM, (const JOCTET *)text, (unsigned)n);
    }
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * (size_t)w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *out = malloc(len ? len : 1);
    if (!*out) {
        free(buf);
        return -1;
    }
    memcpy(*out, buf, len);
    free(buf);
    *out_len = len;
    return 0;
}
#endif

#ifdef ZIMAGE_HAVE_WEBP
static int encode_webp(const uint8_t *rgb, int w, int h, int quality, uint8_t **out, size_t *out_len) {
    uint8_t *buf = NULL;
    size_t len = WebPEncodeRGB(rgb, w, h, w * 3, (float)quality, &buf);
    if (!len) return -1;
    *out = malloc(len);
    if (!*out) {
        WebPFree(buf);
        return -1;
    }
    memcpy(*out, buf, len);
    WebPFree(buf);
    *out_len = len;
    return 0;
}
#endif

int zs_encode_image(int fmt, const uint8_t *rgb, int w, int h, const char *text, int quality, uint8_t **out,
                    size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (!rgb || w <= 0 || h <= 0) return -1;
    switch (fmt) {
    case ZS_FMT_PNG: return encode_png(rgb, w, h, text, out, out_len);
#ifdef ZIMAGE_HAVE_JPEG
    case ZS_FMT_JPEG: return encode_jpeg(rgb, w, h, text, quality, out, out_len);
#endif
#ifdef ZIMAGE_HAVE_WEBP
    case ZS_FMT_WEBP: return encode_webp(rgb, w, h, quality, out, out_len);
#endif
    default: return -1;
    }
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *zs_base64(const uint8_t *d, size_t n) {
    size_t olen = 4 * ((n + 2) / 3);
    char *o = malloc(olen + 1), *p = o;
    if (!o) return NULL;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *p++ = B64[v >> 18];
        *p++ = B64[(v >> 12) & 63];
        *p++ = B64[(v >> 6) & 63];
        *p++ = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0);
        *p++ = B64[v >> 18];
        *p++ = B64[(v >> 12) & 63];
        *p++ = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p = 0;
    return o;
}

static int b64v(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

uint8_t *zs_base64_decode(const char *s, size_t *out_len) {
    size_t n = strlen(s);
    if (n % 4) return NULL;
    uint8_t *o = malloc(n / 4 * 3 + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int a = b64v(s[i]), b = b64v(s[i + 1]);
        int c = s[i + 2] == '=' ? 0 : b64v(s[i + 2]), d = s[i + 3] == '=' ? 0 : b64v(s[i + 3]);
        int bad_pad = (s[i + 2] == '=' && s[i + 3] != '=') || ((s[i + 2] == '=' || s[i + 3] == '=') && i + 4 != n);
        if (a < 0 || b < 0 || c < 0 || d < 0 || bad_pad) {
            free(o);
            return NULL;
        }
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        o[k++] = (uint8_t)(v >> 16);
        if (s[i + 2] != '=') o[k++] = (uint8_t)(v >> 8);
        if (s[i + 3] != '=') o[k++] = (uint8_t)v;
    }
    *out_len = k;
    return o;
}
