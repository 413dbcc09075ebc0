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

#ifdef __cplusplus
}
#endif

#endif
