/* err.c - per-context error record (see err.h). */
#include "err.h"

#include <stdio.h>
#include <string.h>

int zerr_vset(zerr *e, int code, const char *fmt, va_list ap) {
    if (!e) return code;
    e->code = code;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    return code;
}

int zerr_set(zerr *e, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    zerr_vset(e, code, fmt, ap);
    va_end(ap);
    return code;
}

int zerr_prefix(zerr *e, const char *fmt, ...) {
    if (!e) return ZE_OK;
    char pre[ZERR_MSG_MAX], old[ZERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    size_t n = strlen(pre);
    if (n > sizeof e->msg - 3) n = sizeof e->msg - 3;
    memcpy(e->msg, pre, n);
    e->msg[n] = ':';
    e->msg[n + 1] = ' ';
    size_t rest = sizeof e->msg - n - 3;
    size_t m = strlen(old);
    if (m > rest) m = rest;
    memcpy(e->msg + n + 2, old, m);
    e->msg[n + 2 + m] = 0;
    return e->code;
}

void zerr_clear(zerr *e) {
    if (!e) return;
    e->code = ZE_OK;
    e->msg[0] = 0;
}

const char *zerr_name(int code) {
    switch (code) {
    case ZE_OK: return "ok";
    case ZE_INVALID: return "invalid argument";
    case ZE_IO: return "i/o error";
    case ZE_FORMAT: return "malformed file";
    case ZE_MODEL: return "model mismatch";
    case ZE_NOMEM: return "out of memory";
    case ZE_BACKEND: return "backend error";
    case ZE_CANCELLED: return "cancelled";
    case ZE_UNSUPPORTED: return "unsupported";
    case ZE_NETWORK: return "network error";
    default: return "unknown error";
    }
}
