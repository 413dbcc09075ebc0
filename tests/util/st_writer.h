/* st_writer.h - write safetensors files (good and deliberately bad) from
 * tests, plus a scratch temp folder.  Test-only code: aborts on I/O errors. */
#ifndef ZIMAGE_ST_WRITER_H
#define ZIMAGE_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

typedef struct stw stw;

stw *stw_new(void);
/* Append a tensor: dtype is the safetensors name ("F32", "BF16", ...);
 * data holds nbytes bytes (copied).  Tensors are laid out in add order. */
void stw_add(stw *w, const char *name, const char *dtype, int ndim, const int64_t *shape, const void *data,
             size_t nbytes);
/* Shortcut for F32 data: nbytes = 4 * numel(shape). */
void stw_add_f32(stw *w, const char *name, int ndim, const int64_t *shape, const float *data);
/* Optional "__metadata__" entry (one key/value). */
void stw_meta(stw *w, const char *key, const char *value);
/* Write the file (header padded with spaces to a multiple of 8, like the
 * reference writer).  Returns 0. */
int stw_write(stw *w, const char *path);
void stw_free(stw *w);

/* Raw file: u64 LE header length (= strlen(header) unless hlen_override >= 0),
 * the header text, then nbytes of data. */
void st_write_raw(const char *path, const char *header, int64_t hlen_override, const void *data, size_t nbytes);
void st_write_bytes(const char *path, const void *buf, size_t n);
void st_write_text(const char *path, const char *text);

/* mkdtemp under $TMPDIR (or /tmp); returns a static buffer. */
const char *st_tmpdir(void);
/* rm -r path (files and folders we created). */
void st_rmtree(const char *path);
/* Static buffer "dir/name" (rotating among 8). */
const char *st_path(const char *dir, const char *name);

#endif
