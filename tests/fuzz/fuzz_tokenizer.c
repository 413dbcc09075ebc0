/* fuzz_tokenizer.c - libFuzzer target for the Qwen tokenizer: arbitrary
 * bytes into ztok_encode and ztok_encode_prompt with the real tokenizer
 * (loaded once from $ZIMAGE_FIXTURES/tokenizer/tokenizer.json, default
 * tests/fixtures/tokenizer/tokenizer.json).  Checks, besides the sanitizers:
 *   - every id is in [0, vocab size) and decodes;
 *   - raw encoding succeeds iff the bytes are valid UTF-8, and then the
 *     prompt encoding of the text up to the first NUL succeeds too, is
 *     <= max_length long and starts with <|im_start|>;
 *   - decode(encode(text)) == text when NFC leaves the text unchanged. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/pretok.h"
#include "text/tokenizer.h"

static ztok *T;

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_tokenizer: invariant violated: %s\n", what);
        abort();
    }
}

static void load_once(void) {
    if (T) return;
    const char *root = getenv("ZIMAGE_FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/tokenizer.json", root && *root ? root : "tests/fixtures");
    zerr e = {0};
    if (ztok_load(&T, path, NULL, &e)) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", e.msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    const int vs = ztok_vocab_size(T);
    zerr e = {0};
    int32_t *ids = NULL;
    int n = -1;
    int valid = zt_utf8_check(data, size) < 0;
    int rc = ztok_encode(T, (const char *)data, size, &ids, &n, &e);
    check(valid ? rc == 0 : rc == ZE_INVALID, "raw encode succeeds iff valid UTF-8");
    if (rc == 0) {
        for (int i = 0; i < n; i++) check(ids[i] >= 0 && ids[i] < vs, "id in range");
        char *text = NULL;
        check(ztok_decode(T, ids, n, &text, &e) == 0, "decode of encoded ids");
        uint8_t *norm = NULL;
        size_t nn;
        check(zt_nfc(data, size, &norm, &nn, &e) == 0, "NFC");
        if (!norm) check(strlen(text) == size || memchr(data, 0, size), "decode length");
        if (!norm && !memchr(data, 0, size)) check(memcmp(text, data, size) == 0, "decode(encode(x)) == x");
        free(norm);
        free(text);
    } else {
        check(ids == NULL && n == 0, "outputs reset on error");
    }
    free(ids);

    /* the prompt path takes a C string: the bytes up to the first NUL */
    size_t pn = strnlen((const char *)data, size);
    char *p = malloc(pn + 1);
    memcpy(p, data, pn);
    p[pn] = 0;
    int max_length = size ? (int)(data[size - 1] % 64) * 16 : 0; /* 0 = no limit */
    int32_t *pids = NULL;
    int np = -1;
    int prc = ztok_encode_prompt(T, p, max_length, &pids, &np, &e);
    if (valid) check(prc == 0, "prompt encode of a valid text");
    if (prc == 0) {
        check(np >= 1 && pids[0] == ztok_token_id(T, "<|im_start|>"), "template head");
        check(max_length <= 0 || np <= max_length, "max_length");
        for (int i = 0; i < np; i++) check(pids[i] >= 0 && pids[i] < vs, "prompt id in range");
    }
    free(pids);
    free(p);
    return 0;
}
