/* log.h - leveled logging to stderr (quiet by default: warnings and errors).
 * The level is process-wide (a CLI flag / server option), messages are not. */
#ifndef ZIMAGE_LOG_H
#define ZIMAGE_LOG_H

enum { ZLOG_ERROR = 0, ZLOG_WARN = 1, ZLOG_INFO = 2, ZLOG_DEBUG = 3 };

void zlog_set_level(int level);
int zlog_level(void);
void zlog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ZLOGE(...) zlog(ZLOG_ERROR, __VA_ARGS__)
#define ZLOGW(...) zlog(ZLOG_WARN, __VA_ARGS__)
#define ZLOGI(...) zlog(ZLOG_INFO, __VA_ARGS__)
#define ZLOGD(...) zlog(ZLOG_DEBUG, __VA_ARGS__)

/* Monotonic wall clock in seconds. */
double ztime_now(void);

#endif
