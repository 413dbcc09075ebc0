/* sha256.h - SHA-256 (FIPS 180-4), streaming, no dependencies.
 *
 * Used to verify downloaded Git-LFS files: the Hugging Face Hub names an
 * LFS blob by the sha256 of its content (the X-Linked-Etag header), and
 * ModelScope lists a "Sha256" per file.  Digests are 32 bytes; hex form is
 * 64 lowercase characters plus NUL.
 */
#ifndef ZIMAGE_SHA256_H
#define ZIMAGE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define ZSHA256_HEX_LEN 64

typedef struct zsha256 {
    uint32_t h[8];     /* chaining state                          */
    uint64_t nbytes;   /* message length so far                   */
    uint8_t buf[64];   /* pending partial block                   */
    size_t nbuf;       /* bytes in buf                            */
} zsha256;

void zsha256_init(zsha256 *s);
void zsha256_update(zsha256 *s, const void *data, size_t n);
void zsha256_final(zsha256 *s, uint8_t out[32]);
/* Final digest as 64 lowercase hex chars + NUL (hex needs 65 bytes). */
void zsha256_final_hex(zsha256 *s, char hex[ZSHA256_HEX_LEN + 1]);
/* One-shot helpers. */
void zsha256_hex(const void *data, size_t n, char hex[ZSHA256_HEX_LEN + 1]);
/* Hash a whole file (or its first `limit` bytes when limit >= 0) into s,
 * which the caller has initialised.  Returns 0, or -1 if the file cannot be
 * read (errno set) or is shorter than limit. */
int zsha256_file(zsha256 *s, const char *path, int64_t limit);

#endif
