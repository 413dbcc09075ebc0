/* png.h - image output: the VAE float image -> RGB8 conversion and the PNG
 * writer behind zimage_write_png (include/zimage.h).
 *
 * zimg_to_u8 is diffusers' VaeImageProcessor.postprocess + numpy_to_pil:
 *   y = clamp(x*0.5 + 0.5, 0, 1)  (float32, unfused)   u8 = round_half_even(y*255)
 * elementwise, so any layout in = same layout out (the VAE image is NHWC,
 * [N, H, W, 3]).  NaN gives 0 (what numpy's astype("uint8") does on x86).
 *
 * The PNG is RGB8, non-interlaced, written with zlib at a fast setting
 * (ZPNG_OPTS_DEFAULT; measured in tests/test_png.c) into a hidden temporary
 * file in the destination folder, then renamed over `path`.  When text is
 * given it goes into a "parameters" chunk the way A1111 (PIL) writes it:
 * tEXt when the text is representable in Latin-1 (UTF-8 input transcoded),
 * else an uncompressed iTXt with the UTF-8 text.
 */
#ifndef ZIMAGE_PNG_H
#define ZIMAGE_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "../base/err.h"

/* PNG row filters (same bits as libpng's PNG_FILTER_*). */
enum {
    ZPNG_FILTER_NONE = 0x08,
    ZPNG_FILTER_SUB = 0x10,
    ZPNG_FILTER_UP = 0x20,
    ZPNG_FILTER_AVG = 0x40,
    ZPNG_FILTER_PAETH = 0x80,
    ZPNG_FILTER_ALL = 0xF8,
};

typedef struct zpng_opts {
    int level;      /* zlib level 0..9                                    */
    int filters;    /* ZPNG_FILTER_* mask (several = libpng picks per row) */
    int strategy;   /* zlib strategy: 0 default, 1 filtered, 2 huffman, 3 rle */
    int sync;       /* 1: fsync the file before the rename                 */
} zpng_opts;

/* Paeth filter on every row + zlib Z_RLE (the level does not matter for
 * RLE), compressed in parallel bands; no fsync before the rename (the
 * rename alone guarantees that no half-written file is ever visible; an
 * fsync adds the disk's flush latency to every image -- set sync = 1 for
 * durability across power loss).  On a 1024x1024 photo this encodes in ~40 ms to the size
 * PIL reaches at level 6 in ~400 ms; the measurements are in docs/NOTES.md
 * (PNG) and `ZIMAGE_PNG_SWEEP=1 build/cpu/tests/test_png` prints the sweep. */
#define ZPNG_OPTS_DEFAULT {1, ZPNG_FILTER_PAETH, 3, 0}

/* diffusers' float image ([-1, 1] nominal) -> uint8, n values. */
void zimg_to_u8(const float *img, uint8_t *out, size_t n);

/* Write rgb (height rows of width*3 bytes) to path.  opts NULL = default.
 * Errors: ZE_INVALID (arguments), ZE_IO (cannot create / write / rename;
 * the message names the path and the system error), ZE_NOMEM.  On error no
 * file is left behind and an existing file at path is untouched. */
int zpng_write(const char *path, const uint8_t *rgb, int width, int height, const char *text,
               const zpng_opts *opts, zerr *e);

/* Encode to memory (tests, the HTTP server).  *out is malloc'd. */
int zpng_encode(const uint8_t *rgb, int width, int height, const char *text, const zpng_opts *opts,
                uint8_t **out, size_t *out_len, zerr *e);

#endif
