/* cuda_backend.h - the CUDA backend entry points (implemented in *.cu). */
#ifndef ZIMAGE_CUDA_BACKEND_H
#define ZIMAGE_CUDA_BACKEND_H

#include "../ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if a CUDA device can be used. */
int zcuda_available(void);
int zcuda_backend_create(zbackend **out, int device_index, zerr *err);
/* Diagnostics: device, library versions and every cached plan (matmul
 * algorithm or fallback, conv algorithm, cuDNN attention or why not), one
 * line each, into buf (NUL-terminated).  Returns the length; 0 if `be` is
 * not a CUDA backend. */
int zcuda_describe(zbackend *be, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
