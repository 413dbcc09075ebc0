/* test_tokenizer.c - the Qwen tokenizer (src/text/tokenizer.c, pretok.c)
 * against transformers 5.17.0 goldens (tools/fixtures/tok.py):
 *   golden/tok/cases.jsonl         raw and templated ids of 500+ texts (exact)
 *   golden/tok/unicode_classes.txt regex class of every code point (exact)
 *   golden/tok/nfc_cases.txt       tokenizers' NFC on 16k probes (exact)
 * plus the spec 2.3 table, decode round trip, invalid UTF-8, broken and
 * unsupported tokenizer.json files (written to a temp folder), max_length
 * truncation and two threads sharing one tokenizer.  Tolerance: none, every
 * id must be equal; mismatches print the case, the position and both ids.
 * The 11 MB tokenizer.json is loaded once (group setup). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "text/pretok.h"
#include "text/tokenizer.h"
#include "util/testutil.h"

static ztok *T; /* the real tokenizer */

typedef struct {
    char *text;
    size_t len;
    int32_t *raw, *tpl;
    int n_raw, n_tpl;
} tcase;

static tcase *C;
static int NC;

static int32_t *json_ids(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int32_t *v = malloc(((size_t)*n + 1) * sizeof *v);
    for (int i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}

static int setup(void **state) {
    (void)state;
    zerr e = {0};
    if (ztok_load(&T, fixture_path("tokenizer/tokenizer.json"), fixture_path("tokenizer/tokenizer_config.json"),
                  &e)) {
        fprintf(stderr, "cannot load the tokenizer: %s\n", e.msg);
        return -1;
    }
    FILE *f = fopen(fixture_path("golden/tok/cases.jsonl"), "r");
    if (!f) {
        fprintf(stderr, "missing %s\n", fixture_path("golden/tok/cases.jsonl"));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int ccap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, JSON_ALLOW_NUL, &je);
        if (!j) {
            fprintf(stderr, "cases.jsonl: %s\n", je.text);
            return -1;
        }
        if (NC == ccap) C = realloc(C, (size_t)(ccap = ccap ? 2 * ccap : 256) * sizeof *C);
        tcase *c = &C[NC++];
        json_t *t = json_object_get(j, "text");
        c->len = json_string_length(t);
        c->text = malloc(c->len + 1);
        memcpy(c->text, json_string_value(t), c->len + 1);
        c->raw = json_ids(json_object_get(j, "raw"), &c->n_raw);
        c->tpl = json_ids(json_object_get(j, "templated"), &c->n_tpl);
        json_decref(j);
    }
    free(line);
    fclose(f);
    return NC > 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < NC; i++) {
        free(C[i].text);
        free(C[i].raw);
        free(C[i].tpl);
    }
    free(C);
    ztok_free(T);
    return 0;
}

/* Text with non-printable bytes escaped, at most ~70 chars. */
static const char *esc(const char *s, size_t n) {
    static char b[300];
    size_t o = 0;
    for (size_t i = 0; i < n && o < 70; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') b[o++] = (char)c;
        else o += (size_t)snprintf(b + o, sizeof b - o, "\\x%02x", c);
    }
    b[o] = 0;
    return b;
}

/* 0 if equal, else prints the first mismatch. */
static int cmp_ids(const char *what, int k, const tcase *c, const int32_t *got, int ng, const int32_t *want, int nw) {
    int i = 0;
    while (i < ng && i < nw && got[i] == want[i]) i++;
    if (i == ng && i == nw) return 0;
    fprintf(stderr, "  %s case %d \"%s\": %d ids, want %d; first difference at %d: got %d want %d\n", what, k,
            esc(c->text, c->len), ng, nw, i, i < ng ? (int)got[i] : -1, i < nw ? (int)want[i] : -1);
    return 1;
}

static const char HEAD[] = "<|im_start|>user\n", TAIL[] = "<|im_end|>\n<|im_start|>assistant\n";

/* Templated ids the way the pipeline gets them. */
static int encode_templated(const tcase *c, int32_t **ids, int *n, zerr *e) {
    if (!memchr(c->text, 0, c->len)) return ztok_encode_prompt(T, c->text, 512, ids, n, e);
    /* ztok_encode_prompt takes a C string: build the template by hand */
    size_t hn = strlen(HEAD), tn = strlen(TAIL);
    char *s = malloc(hn + c->len + tn);
    memcpy(s, HEAD, hn);
    memcpy(s + hn, c->text, c->len);
    memcpy(s + hn + c->len, TAIL, tn);
    int rc = ztok_encode(T, s, hn + c->len + tn, ids, n, e);
    free(s);
    if (!rc && *n > 512) *n = 512;
    return rc;
}

static void test_golden_cases(void **state) {
    (void)state;
    int bad = 0, n_trunc = 0;
    for (int k = 0; k < NC; k++) {
        const tcase *c = &C[k];
        zerr e = {0};
        int32_t *ids;
        int n;
        if (ztok_encode(T, c->text, c->len, &ids, &n, &e)) {
            fprintf(stderr, "  case %d: %s\n", k, e.msg);
            bad++;
            continue;
        }
        bad += cmp_ids("raw", k, c, ids, n, c->raw, c->n_raw);
        free(ids);
        if (encode_templated(c, &ids, &n, &e)) {
            fprintf(stderr, "  case %d: %s\n", k, e.msg);
            bad++;
            continue;
        }
        bad += cmp_ids("templated", k, c, ids, n, c->tpl, c->n_tpl);
        n_trunc += c->n_tpl == 512;
        free(ids);
    }
    printf("  golden cases: %d texts (%d templated ones cut at 512), %d mismatches (tolerance 0)\n", NC, n_trunc,
           bad);
    assert_int_equal(bad, 0);
    assert_true(NC >= 150 && n_trunc >= 3);
}

static void expect_ids(const int32_t *got, int ng, const int32_t *want, int nw) {
    int ok = ng == nw;
    for (int i = 0; ok && i < nw; i++) ok = got[i] == want[i];
    if (!ok) {
        fprintf(stderr, "  got:");
        for (int i = 0; i < ng; i++) fprintf(stderr, " %d", (int)got[i]);
        fprintf(stderr, "\n  want:");
        for (int i = 0; i < nw; i++) fprintf(stderr, " %d", (int)want[i]);
        fprintf(stderr, "\n");
    }
    assert_true(ok);
}

/* spec 2.3 table */
static void test_spec_table(void **state) {
    (void)state;
    static const int32_t cat[] = {151644, 872, 198, 64, 8251, 151645, 198, 151644, 77091, 198};
    static const int32_t empty[] = {151644, 872, 198, 151645, 198, 151644, 77091, 198};
    static const int32_t zh[] = {151644, 872, 198, 102292, 100472, 220, 16, 17, 18, 19423, 0, 151645,
                                 198, 151644, 77091, 198};
    zerr e = {0};
    int32_t *ids;
    int n;
    assert_int_equal(ztok_encode_prompt(T, "a cat", 512, &ids, &n, &e), 0);
    expect_ids(ids, n, cat, 10);
    free(ids);
    assert_int_equal(ztok_encode_prompt(T, "", 512, &ids, &n, &e), 0);
    expect_ids(ids, n, empty, 8);
    free(ids);
    assert_int_equal(ztok_encode_prompt(T, "一只猫 123 cats!", 512, &ids, &n, &e), 0);
    expect_ids(ids, n, zh, 16);
    free(ids);
    assert_int_equal(ztok_encode_prompt(T, "a cat", 6, &ids, &n, &e), 0);
    expect_ids(ids, n, cat, 6);
    free(ids);
    /* raw: nothing added around the text */
    assert_int_equal(ztok_encode(T, "", 0, &ids, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_non_null(ids);
    free(ids);
    assert_int_equal(ztok_token_id(T, "<|im_start|>"), 151644);
    assert_int_equal(ztok_token_id(T, "<|im_end|>"), 151645);
    assert_int_equal(ztok_token_id(T, "<|endoftext|>"), 151643);
    assert_int_equal(ztok_token_id(T, "</think>"), 151668);
    assert_int_equal(ztok_token_id(T, "Ġcat"), 8251);
    assert_int_equal(ztok_token_id(T, "assistant"), 77091);
    assert_int_equal(ztok_token_id(T, "ĊĊ"), 271);
    assert_int_equal(ztok_token_id(T, "no such token here"), -1);
    assert_int_equal(ztok_vocab_size(T), 151669);
}

static void test_max_length(void **state) {
    (void)state;
    const tcase *lc = NULL; /* the longest case */
    for (int k = 0; k < NC; k++)
        if (!memchr(C[k].text, 0, C[k].len) && (!lc || C[k].n_raw > lc->n_raw)) lc = &C[k];
    assert_true(lc->n_raw > 600);
    zerr e = {0};
    int32_t *full, *ids;
    int nf, n;
    assert_int_equal(ztok_encode_prompt(T, lc->text, 0, &full, &nf, &e), 0); /* no limit */
    assert_int_equal(nf, lc->n_raw + 8);
    assert_int_equal(full[nf - 1], 198);
    static const int lens[] = {1, 2, 8, 100, 511, 512, 513};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        assert_int_equal(ztok_encode_prompt(T, lc->text, lens[i], &ids, &n, &e), 0);
        expect_ids(ids, n, full, lens[i]);
        free(ids);
    }
    assert_int_equal(ztok_encode_prompt(T, lc->text, -5, &ids, &n, &e), 0); /* <= 0: no limit */
    assert_int_equal(n, nf);
    free(ids);
    assert_int_equal(ztok_encode_prompt(T, "a cat", 100000, &ids, &n, &e), 0);
    assert_int_equal(n, 10);
    free(ids);
    free(full);
}

/* decode(encode(text)) == text for every case that NFC leaves alone */
static void test_decode_roundtrip(void **state) {
    (void)state;
    int checked = 0, bad = 0;
    for (int k = 0; k < NC; k++) {
        const tcase *c = &C[k];
        if (memchr(c->text, 0, c->len)) continue;
        uint8_t *norm;
        size_t nn;
        zerr e = {0};
        assert_int_equal(zt_nfc((const uint8_t *)c->text, c->len, &norm, &nn, &e), 0);
        if (norm) { /* NFC changes the text: decode gives the normalized form */
            free(norm);
            continue;
        }
        char *s;
        assert_int_equal(ztok_decode(T, c->raw, c->n_raw, &s, &e), 0);
        if (strlen(s) != c->len || memcmp(s, c->text, c->len)) {
            if (bad++ < 5) fprintf(stderr, "  decode case %d: got \"%s\"\n", k, esc(s, strlen(s)));
        }
        free(s);
        checked++;
    }
    printf("  decode round trip: %d texts, %d mismatches\n", checked, bad);
    assert_int_equal(bad, 0);
    assert_true(checked > 200);
    /* a token boundary inside a character: U+FFFD, as from_utf8_lossy */
    int32_t id = ztok_token_id(T, "ä"); /* byte-level spelling of 0xE4 */
    assert_true(id >= 0);
    char *s;
    zerr e = {0};
    int32_t one[2] = {id, 64};
    assert_int_equal(ztok_decode(T, one, 2, &s, &e), 0);
    assert_string_equal(s, "\xef\xbf\xbd" "a");
    free(s);
    int32_t badid[1] = {151669};
    assert_int_equal(ztok_decode(T, badid, 1, &s, &e), ZE_INVALID);
    assert_null(s);
    assert_int_equal(ztok_decode(T, NULL, 0, &s, &e), 0);
    assert_string_equal(s, "");
    free(s);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    static const struct {
        const char *s;
        int off; /* -1: valid */
    } v[] = {
        {"\xff", 0},                 {"a\x80", 1},           {"ab\xc3", 2},          {"\xc3(", 0},
        {"xy\xe2\x82", 2},           {"\xe2\x82(", 0},       {"\xed\xa0\x80", 0},    {"ok\xed\xbf\xbf", 2},
        {"\xf4\x90\x80\x80", 0},     {"\xc0\xaf", 0},        {"\xc1\xbf", 0},        {"\xe0\x80\xaf", 0},
        {"\xf0\x80\x80\xaf", 0},     {"\xf5\x80\x80\x80", 0}, {"abc\xf0\x9f\x98", 3}, {"\xe4\xb8\x80\x80", 3},
        {"\xf4\x8f\xbf\xbf", -1},    {"\xef\xbf\xbf", -1},   {"\xed\x9f\xbf", -1},   {"\xf0\x90\x80\x80", -1},
        {"\xc2\x80", -1},            {"\xe0\xa0\x80", -1},   {"<|im_end|>\xfe", 10},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        zerr e = {0};
        int32_t *ids = (int32_t *)&e; /* must be reset */
        int n = -1;
        int rc = ztok_encode(T, v[i].s, strlen(v[i].s), &ids, &n, &e);
        if (v[i].off < 0) {
            if (rc) fprintf(stderr, "  valid case %zu rejected: %s\n", i, e.msg);
            assert_int_equal(rc, 0);
            assert_true(n >= 1);
            free(ids);
            continue;
        }
        char want[64];
        snprintf(want, sizeof want, "offset %d", v[i].off);
        if (rc != ZE_INVALID || !strstr(e.msg, want))
            fprintf(stderr, "  case %zu: rc %d, message \"%s\" (want ZE_INVALID, \"%s\")\n", i, rc, e.msg, want);
        assert_int_equal(rc, ZE_INVALID);
        assert_non_null(strstr(e.msg, want));
        assert_null(ids);
        assert_int_equal(n, 0);
        /* the prompt API reports the offset within the prompt */
        rc = ztok_encode_prompt(T, v[i].s, 512, &ids, &n, &e);
        assert_int_equal(rc, ZE_INVALID);
        assert_non_null(strstr(e.msg, want));
        assert_null(ids);
    }
    /* NUL is an ordinary character for ztok_encode */
    zerr e = {0};
    int32_t *ids;
    int n;
    assert_int_equal(ztok_encode(T, "a\0b", 3, &ids, &n, &e), 0);
    assert_int_equal(n, 3);
    free(ids);
    assert_int_equal(ztok_encode(T, NULL, 0, &ids, &n, &e), 0);
    free(ids);
    assert_int_equal(ztok_encode(T, NULL, 3, &ids, &n, &e), ZE_INVALID);
    assert_int_equal(ztok_encode_prompt(T, NULL, 512, &ids, &n, &e), ZE_INVALID);
}

/* ------------------------------------------------------ broken tokenizers */

static char tmpdir[64];

static const char *write_tmp(const char *name, const char *data, size_t n) {
    static char path[8][128];
    static int k;
    char *p = path[k++ & 7];
    snprintf(p, 128, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    return p;
}

/* A small valid byte-level BPE tokenizer.json: the 256 byte tokens, merges
 * "a b" -> "ab", "ab c" -> "abc", "Ġ a" -> "Ġa", added token <|x|>. */
static char *mini_json(const char *normalizer, const char *split_re, const char *model_extra, const char *extra_merge,
                       const char *added_extra) {
    json_t *vocab = json_object();
    int id = 0, k = 0;
    for (int b = 0; b < 256; b++) { /* GPT-2 bytes_to_unicode; byte b gets id b */
        int self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        uint32_t cp = self ? (uint32_t)b : 256u + (uint32_t)k++;
        uint8_t u[5] = {0};
        zt_utf8_encode(cp, u);
        json_object_set_new(vocab, (char *)u, json_integer(id++));
    }
    json_object_set_new(vocab, "ab", json_integer(id++));
    json_object_set_new(vocab, "abc", json_integer(id++));
    json_object_set_new(vocab, "Ġa", json_integer(id++));
    json_t *merges = json_pack("[[s,s],[s,s],[s,s]]", "a", "b", "ab", "c", "Ġ", "a");
    if (extra_merge) json_array_append_new(merges, json_pack("[s,s]", extra_merge, "a"));
    char *vs = json_dumps(vocab, JSON_COMPACT), *ms = json_dumps(merges, JSON_COMPACT);
    json_decref(vocab);
    json_decref(merges);
    size_t cap = strlen(vs) + strlen(ms) + 4096;
    char *s = malloc(cap);
    snprintf(s, cap,
             "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
             "\"added_tokens\":[{\"id\":262,\"content\":\"<|x|>\",\"single_word\":false,\"lstrip\":false,"
             "\"rstrip\":false,\"normalized\":false,\"special\":true}%s],"
             "\"normalizer\":%s,"
             "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
             "\"%s\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
             "\"trim_offsets\":false,\"use_regex\":false}]},"
             "\"post_processor\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,"
             "\"use_regex\":false},\"decoder\":{\"type\":\"ByteLevel\"},"
             "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":\"\","
             "\"end_of_word_suffix\":\"\",\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false%s,"
             "\"vocab\":%s,\"merges\":%s}}",
             added_extra ? added_extra : "", normalizer ? normalizer : "{\"type\":\"NFC\"}",
             split_re ? split_re
                      : "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| "
                        "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+",
             model_extra ? model_extra : "", vs, ms);
    free(vs);
    free(ms);
    return s;
}

static void expect_load_fail(const char *path, const char *cfg, int code, const char *needle) {
    zerr e = {0};
    ztok *t = (ztok *)&e;
    int rc = ztok_load(&t, path, cfg, &e);
    if (rc != code || (needle && !strstr(e.msg, needle)))
        fprintf(stderr, "  %s: rc %d (%s), message \"%s\"; want %d and \"%s\"\n", path, rc, zerr_name(rc), e.msg, code,
                needle ? needle : "");
    assert_int_equal(rc, code);
    assert_null(t);
    if (needle) assert_non_null(strstr(e.msg, needle));
}

static void test_load_errors(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/zimage_tok_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));

    /* the minimal tokenizer works */
    char *good = mini_json(NULL, NULL, NULL, NULL, NULL);
    char gp[128]; /* write_tmp's buffers rotate */
    snprintf(gp, sizeof gp, "%s", write_tmp("good.json", good, strlen(good)));
    zerr e = {0};
    ztok *t;
    if (ztok_load(&t, gp, NULL, &e)) fprintf(stderr, "  mini tokenizer: %s\n", e.msg);
    assert_non_null(t);
    int32_t *ids;
    int n;
    /* "abab" -> [ab][ab] (rank 0 twice, leftmost first); "<|x|>"; "c"; " abc": a+b (rank 0)
     * before Ġ+a (rank 2), then ab+c (rank 1); the stale Ġ+a entry is skipped -> [Ġ][abc] */
    assert_int_equal(ztok_encode(t, "abab<|x|>c abc", 14, &ids, &n, &e), 0);
    static const int32_t want[] = {256, 256, 262, 'c', ' ', 257};
    expect_ids(ids, n, want, 6);
    free(ids);
    assert_int_equal(ztok_encode(t, " ab", 3, &ids, &n, &e), 0); /* Ġ+a (2) vs a+b (0) */
    static const int32_t want3[] = {' ', 256};
    expect_ids(ids, n, want3, 2);
    free(ids);
    assert_int_equal(ztok_encode(t, " ac", 3, &ids, &n, &e), 0);
    static const int32_t want4[] = {258, 'c'};
    expect_ids(ids, n, want4, 2);
    free(ids);
    assert_int_equal(ztok_vocab_size(t), 263); /* ids 259..261 unused */
    char *dec;
    int32_t hole[1] = {260};
    assert_int_equal(ztok_decode(t, hole, 1, &dec, &e), ZE_INVALID);
    assert_int_equal(ztok_encode_prompt(t, "a", 0, &ids, &n, &e), ZE_MODEL); /* no ChatML tokens */
    assert_null(ids);
    ztok_free(t);

    /* I/O and JSON syntax */
    char missing[128];
    snprintf(missing, sizeof missing, "%s/nope.json", tmpdir);
    expect_load_fail(missing, NULL, ZE_IO, "nope.json");
    expect_load_fail(write_tmp("empty.json", "", 0), NULL, ZE_FORMAT, "empty.json");
    expect_load_fail(write_tmp("trunc.json", good, strlen(good) / 2), NULL, ZE_FORMAT, "trunc.json");
    expect_load_fail(write_tmp("array.json", "[1,2]", 5), NULL, ZE_FORMAT, NULL);
    /* the real file cut short */
    FILE *f = fopen(fixture_path("tokenizer/tokenizer.json"), "rb");
    assert_non_null(f);
    char *head = malloc(300000);
    size_t hn = fread(head, 1, 300000, f);
    fclose(f);
    assert_int_equal(hn, 300000);
    expect_load_fail(write_tmp("real_trunc.json", head, hn), NULL, ZE_FORMAT, "real_trunc.json");
    free(head);

    /* structure */
    const char *nomodel = "{\"normalizer\":{\"type\":\"NFC\"}}";
    expect_load_fail(write_tmp("nomodel.json", nomodel, strlen(nomodel)), NULL, ZE_UNSUPPORTED, "pre_tokenizer");

    /* unsupported pipelines: must fail, not tokenize differently */
    struct {
        const char *norm, *re, *model_extra, *merge, *added, *needle;
        int code;
    } bad[] = {
        {"{\"type\":\"NFKC\"}", NULL, NULL, NULL, NULL, "normalizer \"NFKC\"", ZE_UNSUPPORTED},
        {"{\"type\":\"Lowercase\"}", NULL, NULL, NULL, NULL, "normalizer", ZE_UNSUPPORTED},
        {NULL, "\\\\s+", NULL, NULL, NULL, "Qwen2 regex", ZE_UNSUPPORTED},
        {NULL, NULL, ",\"x\":1,\"type\":\"WordPiece\"", NULL, NULL, "WordPiece", ZE_UNSUPPORTED},
        {NULL, NULL, NULL, "zz", NULL, "not in vocab", ZE_FORMAT},
        {NULL, NULL, NULL, NULL,
         ",{\"id\":263,\"content\":\"<y>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":false,"
         "\"normalized\":false,\"special\":true}",
         "lstrip", ZE_UNSUPPORTED},
        {NULL, NULL, NULL, NULL,
         ",{\"id\":264,\"content\":\"<y>\",\"normalized\":true,\"special\":false}", "normalized", ZE_UNSUPPORTED},
        {NULL, NULL, NULL, NULL, ",{\"id\":262,\"content\":\"<z>\"}", "used twice", ZE_FORMAT},
        {NULL, NULL, NULL, NULL, ",{\"id\":-3,\"content\":\"<z>\"}", "valid id", ZE_FORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *s = mini_json(bad[i].norm, bad[i].re, bad[i].model_extra, bad[i].merge, bad[i].added);
        char name[32];
        snprintf(name, sizeof name, "bad%zu.json", i);
        expect_load_fail(write_tmp(name, s, strlen(s)), NULL, bad[i].code, bad[i].needle);
        free(s);
    }
    /* dropout and byte fallback: replace the model flags */
    {
        char *s = mini_json(NULL, NULL, NULL, NULL, NULL);
        char *p = strstr(s, "\"byte_fallback\":false");
        memcpy(p, "\"byte_fallback\":true ", 21);
        expect_load_fail(write_tmp("bf.json", s, strlen(s)), NULL, ZE_UNSUPPORTED, "byte_fallback");
        free(s);
        s = mini_json(NULL, NULL, NULL, NULL, NULL);
        p = strstr(s, "\"dropout\":null");
        memcpy(p, "\"dropout\":0.10", 14);
        expect_load_fail(write_tmp("dropout.json", s, strlen(s)), NULL, ZE_UNSUPPORTED, "dropout");
        free(s);
        /* a vocab without the byte token of 'z' */
        s = mini_json(NULL, NULL, NULL, NULL, NULL);
        p = strstr(s, "\"z\":");
        p[1] = 'Z'; /* a second "Z" key (the later one wins): no token for byte 'z' */
        expect_load_fail(write_tmp("nobyte.json", s, strlen(s)), NULL, ZE_FORMAT, "byte 0x7a");
        free(s);
    }

    /* tokenizer_config.json checks */
    const char *cfg_bos = "{\"add_bos_token\": true}";
    expect_load_fail(gp, write_tmp("cfg1.json", cfg_bos, strlen(cfg_bos)), ZE_UNSUPPORTED, "add_bos_token");
    const char *cfg_split = "{\"split_special_tokens\": true}";
    expect_load_fail(gp, write_tmp("cfg2.json", cfg_split, strlen(cfg_split)), ZE_UNSUPPORTED, "split_special");
    const char *cfg_tok = "{\"added_tokens_decoder\": {\"262\": {\"content\": \"<|y|>\"}}}";
    expect_load_fail(gp, write_tmp("cfg3.json", cfg_tok, strlen(cfg_tok)), ZE_MODEL, "262");
    const char *cfg_tpl = "{\"chat_template\": \"{{ messages[0].content }}\"}";
    expect_load_fail(gp, write_tmp("cfg4.json", cfg_tpl, strlen(cfg_tpl)), ZE_UNSUPPORTED, "ChatML");
    expect_load_fail(gp, write_tmp("cfg5.json", "{", 1), ZE_FORMAT, "cfg5.json");
    const char *cfg_ok = "{\"added_tokens_decoder\": {\"262\": {\"content\": \"<|x|>\"}}, \"add_bos_token\": false}";
    assert_int_equal(ztok_load(&t, gp, write_tmp("cfg6.json", cfg_ok, strlen(cfg_ok)), &e), 0);
    ztok_free(t);
    free(good);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
}

/* --------------------------------------------------------- unicode tables */

static void test_unicode_classes(void **state) {
    (void)state;
    FILE *f = fopen(fixture_path("golden/tok/unicode_classes.txt"), "r");
    assert_non_null(f);
    static uint8_t cls[0x110000];
    unsigned start;
    char k;
    long prev = -1;
    int prevk = 0;
    while (fscanf(f, "%x %c", &start, &k) == 2) {
        for (long c = prev < 0 ? 0 : prev; c < (long)start; c++) cls[c] = (uint8_t)prevk;
        prev = start;
        prevk = k == 'L' ? ZT_L : k == 'N' ? ZT_N : k == 'S' ? ZT_S : ZT_O;
    }
    fclose(f);
    for (long c = prev; c < 0x110000; c++) cls[c] = (uint8_t)prevk;
    int bad = 0;
    for (uint32_t c = 0; c < 0x110000; c++) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        int got = zt_cp_class(c);
        if (got != cls[c] && bad++ < 8) fprintf(stderr, "  U+%04X: class %d, want %d\n", c, got, cls[c]);
    }
    printf("  regex classes: 1112064 code points, %d mismatches\n", bad);
    assert_int_equal(bad, 0);
}

static int parse_cps(const char *s, uint8_t *out, size_t *n) {
    *n = 0;
    while (*s && *s != ';' && *s != '\n') {
        char *end;
        unsigned long c = strtoul(s, &end, 16);
        if (end == s) return -1;
        *n += (size_t)zt_utf8_encode((uint32_t)c, out + *n);
        s = *end == ',' ? end + 1 : end;
    }
    return 0;
}

static void test_nfc_cases(void **state) {
    (void)state;
    FILE *f = fopen(fixture_path("golden/tok/nfc_cases.txt"), "r");
    assert_non_null(f);
    char line[1024];
    int nl = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        uint8_t in[256], want[256];
        size_t ni, nw;
        char *semi = strchr(line, ';');
        assert_non_null(semi);
        assert_int_equal(parse_cps(line, in, &ni), 0);
        assert_int_equal(parse_cps(semi + 1, want, &nw), 0);
        uint8_t *o;
        size_t on;
        zerr e = {0};
        assert_int_equal(zt_nfc(in, ni, &o, &on, &e), 0);
        const uint8_t *got = o ? o : in;
        if ((on != nw || memcmp(got, want, nw)) && bad++ < 8) fprintf(stderr, "  NFC mismatch: %s", line);
        free(o);
        nl++;
    }
    fclose(f);
    printf("  NFC: %d probes, %d mismatches\n", nl, bad);
    assert_int_equal(bad, 0);
    assert_true(nl > 10000);
}

/* ---------------------------------------------------------------- threads */

static void *thread_main(void *arg) {
    long bad = 0;
    for (int k = (int)(intptr_t)arg; k < NC; k += 2) {
        int32_t *ids;
        int n;
        zerr e = {0};
        if (ztok_encode(T, C[k].text, C[k].len, &ids, &n, &e)) { bad++; continue; }
        bad += n != C[k].n_raw || memcmp(ids, C[k].raw, (size_t)n * sizeof *ids) != 0;
        free(ids);
    }
    return (void *)bad;
}

static void test_threads(void **state) {
    (void)state;
    pthread_t th[2];
    for (intptr_t i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, thread_main, (void *)i), 0);
    long bad = 0;
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(th[i], &r);
        bad += (long)r;
    }
    assert_int_equal(bad, 0);
}

/* A long text (per-call piece cache on): the cases joined by <|endoftext|>,
 * three times.  Added tokens cut the text into independent segments, so the
 * ids must be the cases' raw ids joined by 151643. */
static void test_long_text(void **state) {
    (void)state;
    static const char sep[] = "<|endoftext|>";
    size_t len = 0, nw = 0;
    for (int k = 0; k < NC; k++) {
        len += C[k].len + strlen(sep);
        nw += (size_t)C[k].n_raw + 1;
    }
    char *big = malloc(3 * len);
    int32_t *want = malloc(3 * nw * sizeof *want);
    size_t o = 0, w = 0;
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < NC; k++) {
            memcpy(big + o, C[k].text, C[k].len);
            o += C[k].len;
            memcpy(big + o, sep, strlen(sep));
            o += strlen(sep);
            memcpy(want + w, C[k].raw, (size_t)C[k].n_raw * sizeof *want);
            w += (size_t)C[k].n_raw;
            want[w++] = 151643;
        }
    zerr e = {0};
    int32_t *ids;
    int n;
    assert_int_equal(ztok_encode(T, big, o, &ids, &n, &e), 0);
    printf("  long text: %zu bytes, %d ids\n", o, n);
    expect_ids(ids, n, want, (int)w);
    free(ids);
    free(want);
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_table),       cmocka_unit_test(test_golden_cases),
        cmocka_unit_test(test_max_length),       cmocka_unit_test(test_decode_roundtrip),
        cmocka_unit_test(test_invalid_utf8),     cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_unicode_classes),  cmocka_unit_test(test_nfc_cases),
        cmocka_unit_test(test_threads),          cmocka_unit_test(test_long_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
