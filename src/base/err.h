/* err.h - error codes and the per-context error record.
 *
 * Every library call returns an int status (ZE_OK = 0, negative on error) and,
 * on error, leaves a human-readable message in the zerr record that the caller
 * passed in.  A zimage context owns one zerr; nothing here is process-global,
 * so a server can run many contexts side by side.  Nothing calls exit().
 */
#ifndef ZIMAGE_ERR_H
#define ZIMAGE_ERR_H

#include <stdarg.h>
#include <stddef.h>

enum {
    ZE_OK = 0,
    ZE_INVALID = -1,    /* bad argument or bad user input                 */
    ZE_IO = -2,         /* file could not be opened / read / written      */
    ZE_FORMAT = -3,     /* a file is malformed (safetensors, JSON, npy)   */
    ZE_MODEL = -4,      /* model files disagree with the config           */
    ZE_NOMEM = -5,      /* allocation failed (host or device)             */
    ZE_BACKEND = -6,    /* CUDA / cuBLAS / cuDNN / BLAS failure           */
    ZE_CANCELLED = -7,  /* a progress callback asked to stop              */
    ZE_UNSUPPORTED = -8,/* feature not available in this build / device   */
    ZE_NETWORK = -9,    /* download failed                                */
};

#define ZERR_MSG_MAX 1024

typedef struct zerr {
    int code;                 /* last error code (ZE_OK if none)          */
    char msg[ZERR_MSG_MAX];   /* last error message, NUL-terminated       */
} zerr;

/* Record an error; returns code so callers can write `return zerr_set(...)`.
 * A NULL e is allowed (the message is dropped). */
int zerr_set(zerr *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int zerr_vset(zerr *e, int code, const char *fmt, va_list ap);

/* Prefix the current message with context ("loading transformer: ..."). */
int zerr_prefix(zerr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void zerr_clear(zerr *e);
const char *zerr_name(int code);

/* Propagate a non-zero status. */
#define ZTRY(expr)                       \
    do {                                 \
        int zt_rc_ = (expr);             \
        if (zt_rc_ != ZE_OK) return zt_rc_; \
    } while (0)

#endif
