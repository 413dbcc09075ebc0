/* npy.h - NumPy .npy read/write (format 1.0/2.0/3.0), little-endian,
 * C order.  dtypes: '<f4' (float32), '<f2' (float16), '<i4' (int32),
 * '<i8' (int64), '|u1' (uint8).  Reading validates the header fully
 * (magic, version, header length inside the file, dict keys, shape vs file
 * size) and never trusts sizes from the file without a bound. */
#ifndef ZIMAGE_NPY_H
#define ZIMAGE_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define NPY_MAXDIM 8

typedef enum { NPY_F32, NPY_F16, NPY_I32, NPY_I64, NPY_U8 } npy_dtype;

typedef struct npy_array {
    npy_dtype dtype;
    int ndim;
    int64_t shape[NPY_MAXDIM];
    void *data;      /* malloc'd, numel * elem size bytes */
} npy_array;

size_t npy_elem_size(npy_dtype t);
int64_t npy_numel(const npy_array *a);
int npy_read(const char *path, npy_array *out, zerr *e);
/* Parse from memory (used by the reader and the fuzzer). */
int npy_parse(const void *buf, size_t len, npy_array *out, zerr *e);
/* Write atomically (temp file + rename). */
int npy_write(const char *path, npy_dtype dtype, int ndim, const int64_t *shape, const void *data, zerr *e);
void npy_free(npy_array *a);

#endif
