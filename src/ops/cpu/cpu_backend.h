/* cpu_backend.h - the CPU backend: fp32 activations, OpenBLAS sgemm, OpenMP
 * threads.  Weights keep their stored dtype (F32/BF16/F16); BF16/F16 matrix
 * weights are widened to F32 tile by tile inside matmul. */
#ifndef ZIMAGE_CPU_BACKEND_H
#define ZIMAGE_CPU_BACKEND_H

#include "../ops.h"

/* threads <= 0: use all cores. */
int zcpu_backend_create(zbackend **out, int threads, zerr *err);

#endif
