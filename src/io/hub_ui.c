/* hub_ui.c - ready-made progress and confirmation callbacks for command-line
 * users of hub.h (`zimage pull`, `zimage -m ORG/NAME`).  They write to
 * stderr and are used only when a caller passes them in.
 *
 * On a terminal: one redrawn line
 *   [=========>          ] 45%  4.50 GB / 10.0 GB  52.1 MB/s  ETA 1:45  3/14 files
 * with finished files and warnings printed above it.  Otherwise plain log
 * lines: each file as it starts and ends, and a progress line every 15 s.
 * State is kept in statics: one pull at a time per process (the library
 * serialises the callbacks of a pull).
 */
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "hub.h"

static struct {
    int tty, drawn;
    double last_log;
} g_ui;

static const char *fmt_time(double s, char *buf, size_t n) {
    if (s < 0 || s > 360000) {
        snprintf(buf, n, "--:--");
        return buf;
    }
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%d:%02d", t / 60, t % 60);
    return buf;
}

static int columns(void) {
    struct winsize w;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col >= 40) return w.ws_col;
    return 80;
}

static void clear_line(void) {
    if (g_ui.tty && g_ui.drawn) fprintf(stderr, "\r\033[K");
    g_ui.drawn = 0;
}

static void draw_bar(const zhub_progress *p) {
    char a[32], b[32], s[32], t[32], tail[160];
    double frac = p->bytes_total ? (double)p->bytes_done / (double)p->bytes_total : 0;
    if (frac > 1) frac = 1;
    snprintf(tail, sizeof tail, " %3d%%  %s / %s  %s/s  ETA %s  %d/%d files", (int)(frac * 100),
             zhub_fmt_bytes(p->bytes_done, a, sizeof a), zhub_fmt_bytes(p->bytes_total, b, sizeof b),
             zhub_fmt_bytes((uint64_t)(p->speed > 0 ? p->speed : 0), s, sizeof s), fmt_time(p->eta, t, sizeof t),
             p->files_done, p->files_total);
    int width = columns() - (int)strlen(tail) - 3;
    if (width > 40) width = 40;
    char bar[64];
    int fill = 0;
    if (width >= 5) {
        fill = (int)(frac * width);
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
        bar[width] = 0;
        fprintf(stderr, "\r[%s]%s\033[K", bar, tail);
    } else {
        fprintf(stderr, "\r%s\033[K", tail);
    }
    fflush(stderr);
    g_ui.drawn = 1;
}

int zhub_progress_term(const zhub_progress *p, void *user) {
    char a[32], b[32], s[32], t[32];
    switch (p->event) {
    case ZHUB_EV_PLAN:
        g_ui.tty = isatty(STDERR_FILENO);
        g_ui.drawn = 0;
        g_ui.last_log = 0;
        if (p->files_fetch == 0)
            fprintf(stderr, "zimage: %s: all %d files are in the cache\n", p->repo, p->files_total);
        else
            fprintf(stderr, "zimage: %s: downloading %d of %d files (%s)\n", p->repo, p->files_fetch, p->files_total,
                    zhub_fmt_bytes(p->bytes_total, a, sizeof a));
        break;
    case ZHUB_EV_FILE_START:
        if (!g_ui.tty) fprintf(stderr, "zimage: downloading %s%s%s\n", p->file, p->msg ? " - " : "", p->msg ? p->msg : "");
        break;
    case ZHUB_EV_FILE_DONE:
        clear_line();
        fprintf(stderr, "zimage: done %s [%d/%d]\n", p->file, p->files_done, p->files_total);
        if (g_ui.tty) draw_bar(p);
        break;
    case ZHUB_EV_RETRY:
    case ZHUB_EV_WAIT_LOCK:
        clear_line();
        fprintf(stderr, "zimage: %s: %s\n", p->file ? p->file : p->repo, p->msg ? p->msg : "");
        if (g_ui.tty) draw_bar(p);
        break;
    case ZHUB_EV_TICK:
        if (g_ui.tty)
            draw_bar(p);
        else if (p->elapsed - g_ui.last_log >= 15) {
            g_ui.last_log = p->elapsed;
            fprintf(stderr, "zimage: %d%% (%s of %s), %s/s, ETA %s\n",
                    p->bytes_total ? (int)(100.0 * (double)p->bytes_done / (double)p->bytes_total) : 0,
                    zhub_fmt_bytes(p->bytes_done, a, sizeof a), zhub_fmt_bytes(p->bytes_total, b, sizeof b),
                    zhub_fmt_bytes((uint64_t)(p->speed > 0 ? p->speed : 0), s, sizeof s), fmt_time(p->eta, t, sizeof t));
        }
        break;
    case ZHUB_EV_DONE:
        clear_line();
        if (p->files_fetch > 0)
            fprintf(stderr, "zimage: %s: %s in %s (%s/s)\n", p->repo, zhub_fmt_bytes(p->bytes_done, a, sizeof a),
                    fmt_time(p->elapsed, t, sizeof t),
                    zhub_fmt_bytes((uint64_t)(p->elapsed > 0 ? (double)p->bytes_done / p->elapsed : 0), s, sizeof s));
        break;
    default: break;
    }
    fflush(stderr);
    return user ? *(volatile int *)user : 0;
}

int zhub_confirm_tty(const zhub_plan *plan, void *user) {
    (void)user;
    if (plan->n_fetch == 0) return 1;
    char a[32];
    fprintf(stderr, "Model %s is not (completely) in the cache %s.\nDownload %d file%s (%s) now? [y/N] ", plan->repo,
            plan->cache_dir, plan->n_fetch, plan->n_fetch == 1 ? "" : "s", zhub_fmt_bytes(plan->fetch_bytes, a, sizeof a));
    fflush(stderr);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 0;
    return line[0] == 'y' || line[0] == 'Y';
}
