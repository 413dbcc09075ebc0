/* log.c - leveled logging and a monotonic clock (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static int g_level = ZLOG_WARN;

void zlog_set_level(int level) { g_level = level; }
int zlog_level(void) { return g_level; }

void zlog(int level, const char *fmt, ...) {
    if (level > g_level) return;
    static const char *tag[] = {"error", "warning", "info", "debug"};
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "zimage: %s: %s\n", tag[level < 0 ? 0 : level > 3 ? 3 : level], buf);
}

double ztime_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
