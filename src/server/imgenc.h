/* imgenc.h - image encoding for HTTP responses: RGB8 -> PNG (libpng, to
 * memory, with an A1111 "parameters" tEXt chunk), JPEG (libjpeg, when built
 * with ZIMAGE_HAVE_JPEG) and WebP (libwebp, ZIMAGE_HAVE_WEBP), and base64. */
#ifndef ZIMAGE_SERVER_IMGENC_H
#define ZIMAGE_SERVER_IMGENC_H

#include <stddef.h>
#include <stdint.h>

/* 1 if fmt (ZS_FMT_*) can be encoded by this build. */
int zs_format_available(int fmt);

/* Encode rgb (w*h*3) as fmt; text (may be NULL) goes into the PNG tEXt
 * "parameters" chunk / JPEG comment.  quality 0..100 for JPEG/WebP.  On
 * success *out is malloc'd (caller frees) and 0 returned; -1 otherwise. */
int zs_encode_image(int fmt, const uint8_t *rgb, int w, int h, const char *text, int quality, uint8_t **out,
                    size_t *out_len);

/* Base64 (RFC 4648, padded).  Returns a malloc'd NUL-terminated string. */
char *zs_base64(const uint8_t *data, size_t len);
/* Decode; returns malloc'd bytes and *out_len, NULL on bad input (tests). */
uint8_t *zs_base64_decode(const char *s, size_t *out_len);

#endif
