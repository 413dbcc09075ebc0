/* cmd_tokenize.c - `zimage tokenize`: run the Qwen tokenizer (src/text/
 * tokenizer.h) from the command line.  Prints ids separated by single
 * spaces, one line per input; --jsonl reads one JSON string per stdin line
 * and prints one JSON array per line; --decode goes the other way;
 * --bench N measures encoding throughput.  Exit: 0 ok, 1 error, 2 usage. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "text/tokenizer.h"

static void tok_usage(FILE *f) {
    fprintf(f,
            "usage: zimage tokenize (-m MODEL | --tokenizer FILE) [options] [TEXT]\n"
            "  -m, --model DIR     diffusers model folder: uses DIR/tokenizer/tokenizer.json\n"
            "                      (+ tokenizer_config.json)\n"
            "  --tokenizer FILE    a tokenizer.json (a tokenizer_config.json next to it is\n"
            "                      checked too)\n"
            "  --template          wrap the text in the Z-Image chat template\n"
            "                      (<|im_start|>user\\n TEXT <|im_end|>\\n<|im_start|>assistant\\n)\n"
            "  --max-length N      keep only the first N ids (default: all)\n"
            "  --file F            read the text from file F ('-' = stdin) instead of TEXT\n"
            "  --jsonl             read one JSON string per line from stdin, print one JSON\n"
            "                      array of ids per line\n"
            "  --decode            the input is ids (separated by spaces or commas; with\n"
            "                      --jsonl one JSON array per line): print the text\n"
            "  --bench N           encode the input N times and print the throughput (MB/s)\n"
            "  -h, --help          this help\n"
            "Output: ids separated by single spaces on one line.\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Whole file (or stdin for "-") into a malloc'd NUL-terminated buffer. */
static char *read_all(const char *path, size_t *n) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    while (b) {
        if (len + 1 >= cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) { free(b); b = NULL; break; }
            b = nb;
        }
        size_t r = fread(b + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0) break;
    }
    if (f != stdin) fclose(f);
    if (!b) return NULL;
    b[len] = 0;
    *n = len;
    return b;
}

typedef struct {
    const ztok *t;
    int template, max_length;
} tok_opts;

static int encode_one(const tok_opts *o, const char *s, size_t n, int32_t **ids, int *nid, zerr *e) {
    if (o->template) {
        if (memchr(s, 0, n)) return zerr_set(e, ZE_INVALID, "a NUL character in a prompt is not supported");
        return ztok_encode_prompt(o->t, s, o->max_length, ids, nid, e);
    }
    int rc = ztok_encode(o->t, s, n, ids, nid, e);
    if (!rc && o->max_length > 0 && *nid > o->max_length) *nid = o->max_length;
    return rc;
}

static void print_ids(const int32_t *ids, int n) {
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    putchar('\n');
}

/* "1 2, 3" -> ids; returns -1 on a bad token. */
static int parse_ids(const char *s, int32_t **ids, int *n) {
    size_t cap = 16;
    *n = 0;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids) return -1;
    while (*s) {
        if (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n' || *s == '\r') { s++; continue; }
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > 0x7fffffff) return -1;
        if ((size_t)*n == cap) {
            int32_t *nb = realloc(*ids, (cap *= 2) * sizeof **ids);
            if (!nb) return -1;
            *ids = nb;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    return 0;
}

static int run_jsonl(const tok_opts *o, int decode) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int status = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        zerr e = {0};
        int32_t *ids = NULL;
        int n = 0, rc;
        if (!j) {
            rc = zerr_set(&e, ZE_INVALID, "bad JSON: %s", je.text);
        } else if (decode) {
            if (!json_is_array(j)) rc = zerr_set(&e, ZE_INVALID, "expected a JSON array of ids");
            else {
                size_t k;
                json_t *v;
                n = (int)json_array_size(j);
                ids = malloc(((size_t)n + 1) * sizeof *ids);
                rc = ids ? ZE_OK : zerr_set(&e, ZE_NOMEM, "out of memory");
                json_array_foreach(j, k, v) {
                    if (rc) break;
                    if (!json_is_integer(v)) rc = zerr_set(&e, ZE_INVALID, "expected a JSON array of ids");
                    else ids[k] = (int32_t)json_integer_value(v);
                }
                char *text = NULL;
                if (!rc) rc = ztok_decode(o->t, ids, n, &text, &e);
                if (!rc) {
                    json_t *js = json_string(text);
                    char *d = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
                    if (d) puts(d);
                    else rc = zerr_set(&e, ZE_NOMEM, "out of memory");
                    free(d);
                    json_decref(js);
                }
                free(text);
            }
        } else if (!json_is_string(j)) {
            rc = zerr_set(&e, ZE_INVALID, "expected a JSON string");
        } else {
            rc = encode_one(o, json_string_value(j), json_string_length(j), &ids, &n, &e);
            if (!rc) {
                putchar('[');
                for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", (int)ids[i]);
                puts("]");
            }
        }
        json_decref(j);
        free(ids);
        if (rc) {
            fprintf(stderr, "zimage tokenize: stdin line %ld: %s\n", lineno, e.msg);
            status = 1;
            break;
        }
    }
    free(line);
    return status;
}

static int run_bench(const tok_opts *o, const char *text, size_t n, int reps, double load_s) {
    if (o->template && memchr(text, 0, n)) {
        fprintf(stderr, "zimage tokenize: a NUL character in a prompt is not supported\n");
        return 1;
    }
    zerr e = {0};
    int32_t *ids = NULL;
    int nid = 0;
    double best = 1e30, total = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        int rc = encode_one(o, text, n, &ids, &nid, &e);
        double dt = now_s() - t0;
        if (rc) {
            fprintf(stderr, "zimage tokenize: %s\n", e.msg);
            return 1;
        }
        free(ids);
        total += dt;
        if (dt < best) best = dt;
    }
    printf("tokenize: %zu bytes -> %d tokens, %d runs: mean %.4f s (%.2f MB/s), best %.4f s (%.2f MB/s); "
           "load %.3f s\n",
           n, nid, reps, total / reps, (double)n / 1e6 / (total / reps), best, (double)n / 1e6 / best, load_s);
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *tok_path = NULL, *file = NULL, *text = NULL;
    int template = 0, jsonl = 0, decode = 0, bench = 0;
    long max_length = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tok_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has_val) {
            model = argv[++i];
        } else if (!strcmp(a, "--tokenizer") && has_val) {
            tok_path = argv[++i];
        } else if (!strcmp(a, "--file") && has_val) {
            file = argv[++i];
        } else if (!strcmp(a, "--max-length") && has_val) {
            char *end;
            max_length = strtol(argv[++i], &end, 10);
            if (*end || max_length < 0 || max_length > 1 << 30) {
                fprintf(stderr, "zimage tokenize: bad --max-length '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--bench") && has_val) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1000000) {
                fprintf(stderr, "zimage tokenize: bad --bench '%s'\n", argv[i]);
                return 2;
            }
            bench = (int)v;
        } else if (!strcmp(a, "--template")) {
            template = 1;
        } else if (!strcmp(a, "--jsonl")) {
            jsonl = 1;
        } else if (!strcmp(a, "--decode")) {
            decode = 1;
        } else if (a[0] == '-' && a[1] && !(a[1] == '-' && !a[2])) {
            fprintf(stderr, "zimage tokenize: unknown option or missing value: %s (see --help)\n", a);
            return 2;
        } else {
            if (!strcmp(a, "--") && i + 1 < argc) a = argv[++i];
            if (text || i + 1 < argc) {
                fprintf(stderr, "zimage tokenize: give the text as one argument (quote it)\n");
                return 2;
            }
            text = a;
        }
    }
    const char *why = NULL;
    if (!model == !tok_path) why = "give exactly one of -m MODEL and --tokenizer FILE";
    else if (jsonl && (text || file)) why = "--jsonl reads stdin; no TEXT or --file with it";
    else if (!jsonl && !text == !file) why = "give the text as TEXT or --file F";
    else if (bench && (jsonl || decode)) why = "--bench works on TEXT or --file, without --decode";
    else if (decode && template) why = "--decode does not take --template";
    if (why) {
        fprintf(stderr, "zimage tokenize: %s\nusage: zimage tokenize (-m MODEL | --tokenizer FILE) [options] "
                        "[TEXT | --file F | --jsonl]  (see --help)\n", why);
        return 2;
    }

    /* tokenizer files */
    char jpath[4096], cpath[4096];
    if (model) {
        snprintf(jpath, sizeof jpath, "%s/tokenizer/tokenizer.json", model);
        snprintf(cpath, sizeof cpath, "%s/tokenizer/tokenizer_config.json", model);
    } else {
        snprintf(jpath, sizeof jpath, "%s", tok_path);
        const char *slash = strrchr(tok_path, '/');
        int dir = slash ? (int)(slash - tok_path + 1) : 0;
        snprintf(cpath, sizeof cpath, "%.*stokenizer_config.json", dir, tok_path);
    }
    FILE *cf = fopen(cpath, "rb");
    if (cf) fclose(cf);
    zerr e = {0};
    ztok *t = NULL;
    double t0 = now_s();
    if (ztok_load(&t, jpath, cf ? cpath : NULL, &e)) {
        fprintf(stderr, "zimage tokenize: %s\n", e.msg);
        return 1;
    }
    double load_s = now_s() - t0;
    tok_opts o = {t, template, (int)max_length};

    int status = 0;
    if (jsonl) {
        status = run_jsonl(&o, decode);
    } else {
        size_t n = 0;
        char *buf = NULL;
        if (file) {
            buf = read_all(file, &n);
            if (!buf) {
                fprintf(stderr, "zimage tokenize: cannot read %s: %s\n", file, strerror(errno));
                ztok_free(t);
                return 1;
            }
        } else {
            n = strlen(text);
        }
        const char *s = buf ? buf : text;
        int32_t *ids = NULL;
        int nid = 0;
        if (bench) {
            status = run_bench(&o, s, n, bench, load_s);
        } else if (decode) {
            char *out = NULL;
            if (parse_ids(s, &ids, &nid)) {
                fprintf(stderr, "zimage tokenize: --decode expects ids separated by spaces or commas\n");
                status = 2;
            } else if (ztok_decode(t, ids, nid, &out, &e)) {
                fprintf(stderr, "zimage tokenize: %s\n", e.msg);
                status = 1;
            } else {
                puts(out);
            }
            free(out);
        } else if (encode_one(&o, s, n, &ids, &nid, &e)) {
            fprintf(stderr, "zimage tokenize: %s\n", e.msg);
            status = 1;
        } else {
            print_ids(ids, nid);
        }
        free(ids);
        free(buf);
    }
    ztok_free(t);
    if (fflush(stdout) != 0) status = 1;
    return status;
}
