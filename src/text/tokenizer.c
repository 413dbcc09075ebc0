/* tokenizer.c - Qwen2/Qwen3 byte-level BPE: loading tokenizer.json, the
 * added-token split, BPE and the Z-Image prompt template (tokenizer.h).
 * The text-level steps (UTF-8, NFC, regex) are in pretok.c.
 *
 * Tables built at load:
 *   vocab hash   byte-level token string -> id  (open addressing, strings in
 *                one pool; ids are the JSON's, need not be dense)
 *   merge hash   (left id, right id) -> (rank, merged id); rank = index in
 *                model.merges (a repeated pair keeps its last index, as HF's
 *                HashMap collect does)
 *   byte_id[b]   id of the one-byte token of byte b (GPT-2 bytes_to_unicode)
 *   added[]      added tokens sorted by length, longest first
 * BPE per piece: symbols in a linked list over the piece's bytes, a binary
 * heap of candidate merges ordered by (rank, position), stale entries
 * skipped exactly as HF's Word::merge_all does.  Pieces are memoised in a
 * per-call cache when the text is long.
 */
#include "tokenizer.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "pretok.h"

/* The Qwen2 pre-tokenizer pattern as tokenizer.json spells it. */
static const char k_qwen2_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Spec 2.3: the Qwen3 chat template for one user message, generation prompt,
 * enable_thinking=True. */
static const char k_tpl_head[] = "<|im_start|>user\n";
static const char k_tpl_tail[] = "<|im_end|>\n<|im_start|>assistant\n";

#define MAX_ID (1 << 26) /* sanity bound on token ids */

typedef struct {
    char *s;
    size_t len;
    int32_t id;
} added_tok;

typedef struct {
    uint64_t key; /* left << 32 | right; UINT64_MAX = empty */
    uint32_t rank;
    int32_t id;
} merge_ent;

struct ztok {
    /* id -> vocab string (byte-level spelling) */
    int32_t n_ids;      /* 1 + largest id (vocab and added) */
    uint32_t *tok_off;  /* [n_ids] offset into pool, UINT32_MAX = not in vocab */
    uint32_t *tok_len;  /* [n_ids] */
    int32_t *added_of;  /* [n_ids] index into added[], -1 = not an added token */
    char *pool;
    size_t pool_n, pool_cap;
    /* vocab hash: slot -> id + 1 (0 = empty) */
    uint32_t *vslot;
    size_t vmask;
    /* merges */
    merge_ent *mtab;
    size_t mmask;
    int32_t n_merges;
    int32_t byte_id[256];
    /* added tokens */
    added_tok *added;   /* [n_added] in tokenizer.json order */
    int *by_len;        /* [n_added] indices into added[], longest first */
    int n_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */
    int nfc;
    int has_chatml;
};

/* ------------------------------------------------------------ small utils */

static uint64_t hash_bytes(const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, n);
    h = (h ^ v) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 32);
}

static inline uint64_t hash_pair(uint64_t k) {
    k *= 0x9E3779B97F4A7C15ull;
    return k ^ (k >> 29);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* GPT-2 bytes_to_unicode: byte -> code point. */
static uint32_t byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint32_t)b;
    int k = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) k++;
    return 256u + (uint32_t)k;
}

/* ------------------------------------------------------------------ vocab */

static int32_t vocab_find(const ztok *t, const char *s, size_t n) {
    size_t i = hash_bytes(s, n) & t->vmask;
    for (;;) {
        uint32_t v = t->vslot[i];
        if (!v) return -1;
        int32_t id = (int32_t)v - 1;
        if (t->tok_len[id] == n && memcmp(t->pool + t->tok_off[id], s, n) == 0)
            return id;
        i = (i + 1) & t->vmask;
    }
}

static int pool_add(ztok *t, const char *s, size_t n, uint32_t *off, zerr *e) {
    if (t->pool_n + n + 1 > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 20;
        while (cap < t->pool_n + n + 1) cap *= 2;
        if (cap > UINT32_MAX) return zerr_set(e, ZE_FORMAT, "token strings too large");
        char *p = realloc(t->pool, cap);
        if (!p) return zerr_set(e, ZE_NOMEM, "out of memory");
        t->pool = p;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_n, s, n);
    t->pool[t->pool_n + n] = 0;
    *off = (uint32_t)t->pool_n;
    t->pool_n += n + 1;
    return ZE_OK;
}

/* ----------------------------------------------------------------- merges */

static const merge_ent *merge_find(const ztok *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = hash_pair(key) & t->mmask;
    for (;;) {
        const merge_ent *m = &t->mtab[i];
        if (m->key == key) return m;
        if (m->key == UINT64_MAX) return NULL;
        i = (i + 1) & t->mmask;
    }
}

static void merge_put(ztok *t, int32_t a, int32_t b, uint32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = hash_pair(key) & t->mmask;
    while (t->mtab[i].key != UINT64_MAX && t->mtab[i].key != key) i = (i + 1) & t->mmask;
    t->mtab[i].key = key;
    t->mtab[i].rank = rank;
    t->mtab[i].id = id;
}

static int32_t added_find(const ztok *t, const char *s) {
    for (int k = 0; k < t->n_added; k++)
        if (strcmp(t->added[k].s, s) == 0) return t->added[k].id;
    return -1;
}

/* ---------------------------------------------------------------- loading */

static int is_false(const json_t *o, const char *key) { /* absent, null or false */
    json_t *v = json_object_get(o, key);
    return !v || json_is_null(v) || json_is_false(v);
}

static int is_empty_str(const json_t *o, const char *key) { /* absent, null or "" */
    json_t *v = json_object_get(o, key);
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

static int type_is(const json_t *o, const char *type) {
    const char *s = json_string_value(json_object_get(o, "type"));
    return s && strcmp(s, type) == 0;
}

static const char *type_of(const json_t *o) {
    const char *s = json_is_object(o) ? json_string_value(json_object_get(o, "type")) : NULL;
    return s ? s : "?";
}

static int check_pipeline(ztok *t, json_t *root, zerr *e) {
    /* normalizer: none, NFC, or a Sequence of just NFC */
    json_t *nz = json_object_get(root, "normalizer");
    if (!nz || json_is_null(nz)) t->nfc = 0;
    else if (type_is(nz, "NFC")) t->nfc = 1;
    else if (type_is(nz, "Sequence") && json_array_size(json_object_get(nz, "normalizers")) == 1 &&
             type_is(json_array_get(json_object_get(nz, "normalizers"), 0), "NFC"))
        t->nfc = 1;
    else
        return zerr_set(e, ZE_UNSUPPORTED, "normalizer \"%s\" is not supported (only NFC)", type_of(nz));

    json_t *pt = json_object_get(root, "pre_tokenizer");
    json_t *seq = json_object_get(pt, "pretokenizers");
    if (!type_is(pt, "Sequence") || json_array_size(seq) != 2)
        return zerr_set(e, ZE_UNSUPPORTED,
                        "pre_tokenizer \"%s\" is not supported (only Sequence[Split(Qwen2 regex), ByteLevel])",
                        type_of(pt));
    json_t *sp = json_array_get(seq, 0), *bl = json_array_get(seq, 1);
    const char *re = json_string_value(json_object_get(json_object_get(sp, "pattern"), "Regex"));
    const char *beh = json_string_value(json_object_get(sp, "behavior"));
    if (!type_is(sp, "Split") || !re || strcmp(re, k_qwen2_regex) != 0 || !beh ||
        strcmp(beh, "Isolated") != 0 || !is_false(sp, "invert"))
        return zerr_set(e, ZE_UNSUPPORTED,
                        "pre_tokenizer Split is not the Qwen2 regex with behavior Isolated (unsupported)");
    if (!type_is(bl, "ByteLevel") || !json_is_false(json_object_get(bl, "add_prefix_space")) ||
        !json_is_false(json_object_get(bl, "use_regex")))
        return zerr_set(e, ZE_UNSUPPORTED,
                        "pre_tokenizer ByteLevel must have add_prefix_space=false, use_regex=false");

    json_t *pp = json_object_get(root, "post_processor");
    if (pp && !json_is_null(pp) && !type_is(pp, "ByteLevel"))
        return zerr_set(e, ZE_UNSUPPORTED, "post_processor \"%s\" is not supported (adds tokens?)",
                        type_of(pp));

    json_t *m = json_object_get(root, "model");
    if (!json_is_object(m)) return zerr_set(e, ZE_FORMAT, "no \"model\" object");
    const char *mt = json_string_value(json_object_get(m, "type"));
    if (mt && strcmp(mt, "BPE") != 0)
        return zerr_set(e, ZE_UNSUPPORTED, "model type \"%s\" is not supported (only BPE)", mt);
    if (!is_false(m, "dropout") && !(json_is_number(json_object_get(m, "dropout")) &&
                                     json_number_value(json_object_get(m, "dropout")) == 0.0))
        return zerr_set(e, ZE_UNSUPPORTED, "BPE dropout is not supported");
    if (!is_empty_str(m, "continuing_subword_prefix") || !is_empty_str(m, "end_of_word_suffix"))
        return zerr_set(e, ZE_UNSUPPORTED, "BPE continuing_subword_prefix/end_of_word_suffix not supported");
    if (!is_false(m, "byte_fallback")) return zerr_set(e, ZE_UNSUPPORTED, "BPE byte_fallback not supported");
    if (!is_false(m, "ignore_merges")) return zerr_set(e, ZE_UNSUPPORTED, "BPE ignore_merges not supported");
    return ZE_OK;
}

static int load_vocab(ztok *t, json_t *vocab, json_t *added, zerr *e) {
    if (!json_is_object(vocab)) return zerr_set(e, ZE_FORMAT, "model.vocab is not an object");
    if (added && !json_is_null(added) && !json_is_array(added))
        return zerr_set(e, ZE_FORMAT, "added_tokens is not an array");
    size_t nv = json_object_size(vocab), na = json_is_array(added) ? json_array_size(added) : 0;
    if (nv == 0) return zerr_set(e, ZE_FORMAT, "model.vocab is empty");

    /* ids */
    json_int_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= MAX_ID)
            return zerr_set(e, ZE_FORMAT, "model.vocab[\"%.40s\"] is not a valid id", key);
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    for (size_t i = 0; i < na; i++) {
        json_t *a = json_array_get(added, i), *id = json_object_get(a, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= MAX_ID)
            return zerr_set(e, ZE_FORMAT, "added_tokens[%zu].id is not a valid id", i);
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    t->n_ids = (int32_t)max_id + 1;
    t->tok_off = malloc((size_t)t->n_ids * sizeof *t->tok_off);
    t->tok_len = calloc((size_t)t->n_ids, sizeof *t->tok_len);
    t->added_of = malloc((size_t)t->n_ids * sizeof *t->added_of);
    size_t vcap = pow2_at_least(nv * 2);
    t->vslot = calloc(vcap, sizeof *t->vslot);
    t->vmask = vcap - 1;
    if (!t->tok_off || !t->tok_len || !t->added_of || !t->vslot) return zerr_set(e, ZE_NOMEM, "out of memory");
    memset(t->tok_off, 0xFF, (size_t)t->n_ids * sizeof *t->tok_off);
    memset(t->added_of, 0xFF, (size_t)t->n_ids * sizeof *t->added_of);

    json_object_foreach(vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        size_t n = strlen(key);
        if (t->tok_off[id] != UINT32_MAX)
            return zerr_set(e, ZE_FORMAT, "model.vocab: id %d is used twice", (int)id);
        ZTRY(pool_add(t, key, n, &t->tok_off[id], e));
        t->tok_len[id] = (uint32_t)n;
        size_t s = hash_bytes(key, n) & t->vmask;
        while (t->vslot[s]) s = (s + 1) & t->vmask;
        t->vslot[s] = (uint32_t)id + 1;
    }

    /* added tokens */
    t->added = calloc(na ? na : 1, sizeof *t->added);
    if (!t->added) return zerr_set(e, ZE_NOMEM, "out of memory");
    for (size_t i = 0; i < na; i++) {
        json_t *ja = json_array_get(added, i);
        const char *c = json_string_value(json_object_get(ja, "content"));
        int32_t id = (int32_t)json_integer_value(json_object_get(ja, "id"));
        if (!c || !*c) return zerr_set(e, ZE_FORMAT, "added_tokens[%zu] has no content", i);
        if (!is_false(ja, "single_word") || !is_false(ja, "lstrip") || !is_false(ja, "rstrip") ||
            !is_false(ja, "normalized"))
            return zerr_set(e, ZE_UNSUPPORTED,
                            "added token \"%.40s\": single_word/lstrip/rstrip/normalized=true not supported", c);
        size_t n = strlen(c);
        if (zt_utf8_check((const uint8_t *)c, n) >= 0)
            return zerr_set(e, ZE_FORMAT, "added token %d is not valid UTF-8", (int)id);
        for (int k = 0; k < t->n_added; k++)
            if (t->added[k].len == n && memcmp(t->added[k].s, c, n) == 0)
                return zerr_set(e, ZE_FORMAT, "added token \"%.40s\" listed twice", c);
        if (t->added_of[id] >= 0) return zerr_set(e, ZE_FORMAT, "added_tokens: id %d is used twice", (int)id);
        /* an added token may reuse a vocab id; decode then gives the content */
        added_tok *a = &t->added[t->n_added];
        if (!(a->s = malloc(n + 1))) return zerr_set(e, ZE_NOMEM, "out of memory");
        memcpy(a->s, c, n + 1);
        a->len = n;
        a->id = id;
        t->added_of[id] = t->n_added++;
        t->added_first[(uint8_t)c[0]] = 1;
    }
    /* the match order: longest first (stable insertion sort, a few dozen entries) */
    t->by_len = malloc((size_t)(t->n_added ? t->n_added : 1) * sizeof *t->by_len);
    if (!t->by_len) return zerr_set(e, ZE_NOMEM, "out of memory");
    for (int i = 0; i < t->n_added; i++) {
        int j = i - 1;
        while (j >= 0 && t->added[t->by_len[j]].len < t->added[i].len) {
            t->by_len[j + 1] = t->by_len[j];
            j--;
        }
        t->by_len[j + 1] = i;
    }
    return ZE_OK;
}

/* "a b" (legacy) or ["a", "b"] */
static int merge_parts(json_t *m, const char **a, size_t *an, const char **b, size_t *bn) {
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *an = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *bn = json_string_length(json_array_get(m, 1));
        return 1;
    }
    if (json_is_string(m)) {
        const char *s = json_string_value(m), *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' ')) return 0;
        *a = s;
        *an = (size_t)(sp - s);
        *b = sp + 1;
        *bn = strlen(sp + 1);
        return 1;
    }
    return 0;
}

static int load_merges(ztok *t, json_t *merges, zerr *e) {
    if (!json_is_array(merges)) return zerr_set(e, ZE_FORMAT, "model.merges is not an array");
    size_t nm = json_array_size(merges);
    if (nm >= (size_t)INT32_MAX) return zerr_set(e, ZE_FORMAT, "too many merges");
    size_t cap = pow2_at_least(nm * 2 + 2);
    t->mtab = malloc(cap * sizeof *t->mtab);
    if (!t->mtab) return zerr_set(e, ZE_NOMEM, "out of memory");
    for (size_t i = 0; i < cap; i++) t->mtab[i].key = UINT64_MAX;
    t->mmask = cap - 1;
    t->n_merges = (int32_t)nm;
    char *cat = NULL;
    size_t cat_cap = 0;
    for (size_t i = 0; i < nm; i++) {
        const char *a, *b;
        size_t an, bn;
        if (!merge_parts(json_array_get(merges, i), &a, &an, &b, &bn)) {
            free(cat);
            return zerr_set(e, ZE_FORMAT, "model.merges[%zu] is not a pair", i);
        }
        if (an + bn > cat_cap) {
            cat_cap = (an + bn) * 2;
            char *c = realloc(cat, cat_cap);
            if (!c) { free(cat); return zerr_set(e, ZE_NOMEM, "out of memory"); }
            cat = c;
        }
        memcpy(cat, a, an);
        memcpy(cat + an, b, bn);
        int32_t ia = vocab_find(t, a, an), ib = vocab_find(t, b, bn), ic = vocab_find(t, cat, an + bn);
        if (ia < 0 || ib < 0 || ic < 0) {
            free(cat);
            return zerr_set(e, ZE_FORMAT, "model.merges[%zu] (\"%.*s\" \"%.*s\"): token not in vocab", i,
                            (int)(an > 40 ? 40 : an), a, (int)(bn > 40 ? 40 : bn), b);
        }
        merge_put(t, ia, ib, (uint32_t)i, ic);
    }
    free(cat);
    return ZE_OK;
}

/* A jansson load error as ZE_IO (cannot open) or ZE_FORMAT, naming the file. */
static int json_fail(const json_error_t *je, const char *path, zerr *e) {
    if (json_error_code(je) == json_error_cannot_open_file) return zerr_set(e, ZE_IO, "%s", je->text);
    return zerr_set(e, ZE_FORMAT, "%s: invalid JSON at line %d, column %d: %s", path, je->line, je->column,
                    je->text);
}

static int check_config(ztok *t, const char *path, zerr *e) {
    json_error_t je;
    json_t *c = json_load_file(path, 0, &je);
    if (!c) return json_fail(&je, path, e);
    int rc = ZE_OK;
    json_t *atd = json_object_get(c, "added_tokens_decoder");
    const char *tpl = json_string_value(json_object_get(c, "chat_template"));
    if (!json_is_object(c)) {
        rc = zerr_set(e, ZE_FORMAT, "%s: not a JSON object", path);
    } else if (!is_false(c, "add_bos_token") || !is_false(c, "add_eos_token")) {
        rc = zerr_set(e, ZE_UNSUPPORTED, "%s: add_bos_token/add_eos_token=true is not supported", path);
    } else if (!is_false(c, "split_special_tokens")) {
        rc = zerr_set(e, ZE_UNSUPPORTED, "%s: split_special_tokens=true is not supported", path);
    } else if (tpl && (!strstr(tpl, "<|im_start|>") || !strstr(tpl, "<|im_end|>"))) {
        rc = zerr_set(e, ZE_UNSUPPORTED, "%s: chat_template is not ChatML (<|im_start|> ... <|im_end|>)", path);
    } else if (atd && json_is_object(atd)) {
        const char *key;
        json_t *v;
        json_object_foreach(atd, key, v) {
            char *end;
            long id = strtol(key, &end, 10);
            const char *content = json_string_value(json_object_get(v, "content"));
            if (*end || id < 0 || id >= t->n_ids || t->added_of[id] < 0 || !content ||
                strcmp(content, t->added[t->added_of[id]].s) != 0) {
                rc = zerr_set(e, ZE_MODEL, "%s: added token %s \"%.40s\" is not in tokenizer.json", path, key,
                              content ? content : "?");
                break;
            }
        }
    }
    json_decref(c);
    return rc;
}

int ztok_load(ztok **out, const char *path, const char *config_path, zerr *e) {
    if (!out || !path) return zerr_set(e, ZE_INVALID, "ztok_load: NULL argument");
    *out = NULL;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return json_fail(&je, path, e);
    ztok *t = calloc(1, sizeof *t);
    int rc;
    if (!t) {
        rc = zerr_set(e, ZE_NOMEM, "out of memory");
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = zerr_set(e, ZE_FORMAT, "not a JSON object");
        goto fail;
    }
    json_t *m = json_object_get(root, "model");
    if ((rc = check_pipeline(t, root, e)) != ZE_OK) goto fail;
    if ((rc = load_vocab(t, json_object_get(m, "vocab"), json_object_get(root, "added_tokens"), e)) != ZE_OK)
        goto fail;
    if ((rc = load_merges(t, json_object_get(m, "merges"), e)) != ZE_OK) goto fail;
    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        int n = zt_utf8_encode(byte_to_cp(b), u);
        t->byte_id[b] = vocab_find(t, (const char *)u, (size_t)n);
        if (t->byte_id[b] < 0) {
            rc = zerr_set(e, ZE_FORMAT, "vocab lacks the byte-level token of byte 0x%02x", b);
            goto fail;
        }
    }
    /* the template's markers must be added tokens */
    t->has_chatml = added_find(t, "<|im_start|>") >= 0 && added_find(t, "<|im_end|>") >= 0;
    json_decref(root);
    root = NULL;
    if (config_path && (rc = check_config(t, config_path, e)) != ZE_OK) goto fail;
    *out = t;
    return ZE_OK;
fail:
    zerr_prefix(e, "tokenizer %s", path);
    json_decref(root);
    ztok_free(t);
    return rc;
}

void ztok_free(ztok *t) {
    if (!t) return;
    free(t->tok_off);
    free(t->tok_len);
    free(t->added_of);
    free(t->pool);
    for (int k = 0; k < t->n_added; k++) free(t->added[k].s);
    free(t->by_len);
    free(t->vslot);
    free(t->mtab);
    free(t->added);
    free(t);
}

int ztok_token_id(const ztok *t, const char *token) {
    if (!t || !token) return -1;
    int32_t id = added_find(t, token);
    return id >= 0 ? id : vocab_find(t, token, strlen(token));
}

int ztok_vocab_size(const ztok *t) { return t ? t->n_ids : 0; }

/* --------------------------------------------------------------- encoding */

typedef struct {
    uint32_t rank, pos;
    int32_t id;
} heap_ent;

typedef struct {
    uint64_t h;
    uint32_t koff, klen, ioff, in; /* klen 0 = empty slot */
} cache_ent;

#define CACHE_MIN_TEXT 4096 /* memoise pieces only in texts at least this long */
#define CACHE_MAX_KEY 128   /* ... and only pieces up to this many bytes */
#define CACHE_MAX_SLOTS (1u << 20)

#define ENC_STOP 1 /* internal: enough ids (positive, unlike the ZE_* errors) */

typedef struct {
    const ztok *t;
    zerr *e;
    int32_t *ids; /* output */
    size_t n, cap;
    size_t limit; /* stop once this many ids exist (0 = no limit) */
    /* BPE scratch */
    int32_t *sym, *prv, *nxt;
    size_t sym_cap;
    heap_ent *heap;
    size_t hn, hcap;
    /* piece cache */
    int use_cache;
    cache_ent *ctab;
    size_t cmask, cused;
    uint8_t *kpool;
    size_t kn, kcap;
    int32_t *ipool;
    size_t inn, icap;
} enc_ws;

static int grow(void **p, size_t *cap, size_t need, size_t elem, zerr *e) {
    if (need <= *cap) return ZE_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return zerr_set(e, ZE_NOMEM, "tokenizer: out of memory");
    *p = q;
    *cap = c;
    return ZE_OK;
}

static int push_id(enc_ws *w, int32_t id) {
    if (w->n == w->cap) ZTRY(grow((void **)&w->ids, &w->cap, w->n + 1, sizeof *w->ids, w->e));
    w->ids[w->n++] = id;
    return ZE_OK;
}

static inline int heap_less(const heap_ent *a, const heap_ent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(enc_ws *w, uint32_t rank, uint32_t pos, int32_t id) {
    if (w->hn == w->hcap) ZTRY(grow((void **)&w->heap, &w->hcap, w->hn + 1, sizeof *w->heap, w->e));
    heap_ent x = {rank, pos, id};
    size_t i = w->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = x;
    return ZE_OK;
}

static heap_ent heap_pop(enc_ws *w) {
    heap_ent top = w->heap[0], x = w->heap[--w->hn];
    size_t i = 0, n = w->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!heap_less(&w->heap[c], &x)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = x;
    return top;
}

/* BPE of one piece (n >= 2 bytes); appends the ids. */
static int bpe(enc_ws *w, const uint8_t *p, size_t n) {
    const ztok *t = w->t;
    if (n > w->sym_cap) {
        size_t c = w->sym_cap ? w->sym_cap : 64;
        while (c < n) c *= 2;
        int32_t *a = realloc(w->sym, c * sizeof *a), *b = NULL, *d = NULL;
        if (a) w->sym = a;
        if (a && (b = realloc(w->prv, c * sizeof *b))) w->prv = b;
        if (b && (d = realloc(w->nxt, c * sizeof *d))) w->nxt = d;
        if (!d) return zerr_set(w->e, ZE_NOMEM, "tokenizer: out of memory");
        w->sym_cap = c;
    }
    int32_t *sym = w->sym, *prv = w->prv, *nxt = w->nxt;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[p[i]];
        prv[i] = (int32_t)i - 1;
        nxt[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    w->hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const merge_ent *m = merge_find(t, sym[i], sym[i + 1]);
        if (m) ZTRY(heap_push(w, m->rank, (uint32_t)i, m->id));
    }
    while (w->hn) {
        heap_ent top = heap_pop(w);
        int32_t i = (int32_t)top.pos;
        if (sym[i] < 0) continue; /* merged away */
        int32_t j = nxt[i];
        if (j < 0) continue;
        const merge_ent *m = merge_find(t, sym[i], sym[j]);
        if (!m || m->id != top.id) continue; /* stale entry */
        sym[i] = top.id;
        nxt[i] = nxt[j];
        if (nxt[j] >= 0) prv[nxt[j]] = i;
        sym[j] = -1;
        if (prv[i] >= 0 && (m = merge_find(t, sym[prv[i]], sym[i])))
            ZTRY(heap_push(w, m->rank, (uint32_t)prv[i], m->id));
        if (nxt[i] >= 0 && (m = merge_find(t, sym[i], sym[nxt[i]])))
            ZTRY(heap_push(w, m->rank, (uint32_t)i, m->id));
    }
    for (int32_t i = 0; i >= 0; i = nxt[i]) ZTRY(push_id(w, sym[i]));
    return ZE_OK;
}

static int cache_rehash(enc_ws *w, size_t cap) {
    cache_ent *nt = calloc(cap, sizeof *nt);
    if (!nt) return zerr_set(w->e, ZE_NOMEM, "tokenizer: out of memory");
    if (w->ctab) {
        for (size_t i = 0; i <= w->cmask; i++) {
            if (!w->ctab[i].klen) continue;
            size_t s = w->ctab[i].h & (cap - 1);
            while (nt[s].klen) s = (s + 1) & (cap - 1);
            nt[s] = w->ctab[i];
        }
        free(w->ctab);
    }
    w->ctab = nt;
    w->cmask = cap - 1;
    return ZE_OK;
}

static int piece_ids(enc_ws *w, const uint8_t *p, size_t n) {
    if (n == 1) return push_id(w, w->t->byte_id[p[0]]);
    if (!w->use_cache || n > CACHE_MAX_KEY) return bpe(w, p, n);
    uint64_t h = hash_bytes(p, n);
    size_t s = h & w->cmask;
    for (;; s = (s + 1) & w->cmask) {
        cache_ent *c = &w->ctab[s];
        if (!c->klen) break;
        if (c->h == h && c->klen == n && memcmp(w->kpool + c->koff, p, n) == 0) {
            if (w->n + c->in > w->cap)
                ZTRY(grow((void **)&w->ids, &w->cap, w->n + c->in, sizeof *w->ids, w->e));
            memcpy(w->ids + w->n, w->ipool + c->ioff, c->in * sizeof *w->ids);
            w->n += c->in;
            return ZE_OK;
        }
    }
    size_t first = w->n;
    ZTRY(bpe(w, p, n));
    size_t cnt = w->n - first;
    if (w->cused * 2 >= w->cmask + 1) {
        if (w->cmask + 1 >= CACHE_MAX_SLOTS) return ZE_OK; /* full: stop memoising */
        ZTRY(cache_rehash(w, (w->cmask + 1) * 2));
        s = h & w->cmask;
        while (w->ctab[s].klen) s = (s + 1) & w->cmask;
    }
    if (w->kn + n > UINT32_MAX || w->inn + cnt > UINT32_MAX) return ZE_OK;
    ZTRY(grow((void **)&w->kpool, &w->kcap, w->kn + n, 1, w->e));
    ZTRY(grow((void **)&w->ipool, &w->icap, w->inn + cnt, sizeof *w->ipool, w->e));
    memcpy(w->kpool + w->kn, p, n);
    memcpy(w->ipool + w->inn, w->ids + first, cnt * sizeof *w->ids);
    w->ctab[s] = (cache_ent){h, (uint32_t)w->kn, (uint32_t)n, (uint32_t)w->inn, (uint32_t)cnt};
    w->kn += n;
    w->inn += cnt;
    w->cused++;
    return ZE_OK;
}

static int on_piece(void *ctx, const uint8_t *p, size_t n) {
    enc_ws *w = ctx;
    int rc = piece_ids(w, p, n);
    return !rc && w->limit && w->n >= w->limit ? ENC_STOP : rc;
}

/* NFC + regex + BPE of the text between two added tokens. */
static int encode_segment(enc_ws *w, const uint8_t *s, size_t n) {
    if (!n) return ZE_OK;
    uint8_t *norm = NULL;
    size_t nn = n;
    if (w->t->nfc) ZTRY(zt_nfc(s, n, &norm, &nn, w->e));
    int rc = zt_pretokenize(norm ? norm : s, nn, on_piece, w);
    free(norm);
    return rc;
}

static void ws_free(enc_ws *w) {
    free(w->sym);
    free(w->prv);
    free(w->nxt);
    free(w->heap);
    free(w->ctab);
    free(w->kpool);
    free(w->ipool);
}

/* ztok_encode; with limit > 0 it may stop once limit ids exist (ids come
 * out in order and are never revised, so a prefix of the full result). */
static int encode_impl(const ztok *t, const char *text, size_t len, size_t limit, int32_t **ids, int *n, zerr *e) {
    if (!ids || !n) return zerr_set(e, ZE_INVALID, "ztok_encode: NULL argument");
    *ids = NULL;
    *n = 0;
    if (!t || (!text && len)) return zerr_set(e, ZE_INVALID, "ztok_encode: NULL argument");
    const uint8_t *s = (const uint8_t *)text;
    ptrdiff_t bad = len ? zt_utf8_check(s, len) : -1;
    if (bad >= 0)
        return zerr_set(e, ZE_INVALID, "text is not valid UTF-8: bad byte 0x%02x at offset %td", s[bad], bad);

    enc_ws w = {.t = t, .e = e, .limit = limit};
    size_t guess = len / 3 + 16;
    int rc = grow((void **)&w.ids, &w.cap, limit && limit + 16 < guess ? limit + 16 : guess, sizeof *w.ids, e);
    if (!rc && len >= CACHE_MIN_TEXT) {
        w.use_cache = 1;
        rc = cache_rehash(&w, 1u << 12);
    }
    size_t seg = 0;
    for (size_t i = 0; i < len && !rc;) {
        if (!t->added_first[s[i]]) { i++; continue; }
        int hit = -1;
        for (int k = 0; k < t->n_added; k++) {
            const added_tok *a = &t->added[t->by_len[k]];
            if (a->len <= len - i && memcmp(a->s, s + i, a->len) == 0) { hit = t->by_len[k]; break; }
        }
        if (hit < 0) { i++; continue; }
        rc = encode_segment(&w, s + seg, i - seg);
        if (!rc) rc = push_id(&w, t->added[hit].id);
        if (!rc && limit && w.n >= limit) rc = ENC_STOP;
        i += t->added[hit].len;
        seg = i;
    }
    if (!rc) rc = encode_segment(&w, s + seg, len - seg);
    if (rc == ENC_STOP) rc = ZE_OK;
    if (!rc && w.n > (size_t)INT_MAX) rc = zerr_set(e, ZE_INVALID, "text too long (%zu tokens)", w.n);
    ws_free(&w);
    if (rc) {
        free(w.ids);
        return rc;
    }
    *ids = w.ids;
    *n = (int)w.n;
    return ZE_OK;
}

int ztok_encode(const ztok *t, const char *text, size_t len, int32_t **ids, int *n, zerr *e) {
    return encode_impl(t, text, len, 0, ids, n, e);
}

int ztok_encode_prompt(const ztok *t, const char *prompt, int max_length, int32_t **ids, int *n, zerr *e) {
    if (!ids || !n) return zerr_set(e, ZE_INVALID, "ztok_encode_prompt: NULL argument");
    *ids = NULL;
    *n = 0;
    if (!t || !prompt) return zerr_set(e, ZE_INVALID, "ztok_encode_prompt: NULL argument");
    if (!t->has_chatml)
        return zerr_set(e, ZE_MODEL, "tokenizer has no <|im_start|>/<|im_end|> added tokens for the chat template");
    size_t hn = sizeof k_tpl_head - 1, pn = strlen(prompt), tn = sizeof k_tpl_tail - 1;
    char *s = malloc(hn + pn + tn + 1);
    if (!s) return zerr_set(e, ZE_NOMEM, "out of memory");
    memcpy(s, k_tpl_head, hn);
    memcpy(s + hn, prompt, pn);
    memcpy(s + hn + pn, k_tpl_tail, tn + 1);
    ptrdiff_t bad = zt_utf8_check((const uint8_t *)prompt, pn);
    int rc = bad >= 0 ? zerr_set(e, ZE_INVALID, "prompt is not valid UTF-8: bad byte 0x%02x at offset %td",
                                 (uint8_t)prompt[bad], bad)
                      : encode_impl(t, s, hn + pn + tn, max_length > 0 ? (size_t)max_length : 0, ids, n, e);
    free(s);
    if (rc) return rc;
    if (max_length > 0 && *n > max_length) *n = max_length; /* right truncation */
    return ZE_OK;
}

/* --------------------------------------------------------------- decoding */

/* Append s[0..n) to o with ill-formed UTF-8 replaced by U+FFFD per maximal
 * subpart (Rust's from_utf8_lossy). o needs room for 3 * n bytes. */
static size_t utf8_lossy(const uint8_t *s, size_t n, uint8_t *o) {
    size_t on = 0;
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        if (b < 0x80) { o[on++] = b; i++; continue; }
        size_t need = 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b >= 0xE0 && b <= 0xEF) { need = 2; lo = b == 0xE0 ? 0xA0 : 0x80; hi = b == 0xED ? 0x9F : 0xBF; }
        else if (b >= 0xF0 && b <= 0xF4) { need = 3; lo = b == 0xF0 ? 0x90 : 0x80; hi = b == 0xF4 ? 0x8F : 0xBF; }
        size_t k = 1;
        if (need && i + 1 < n && s[i + 1] >= lo && s[i + 1] <= hi) {
            k = 2;
            while (k <= need && i + k < n && (s[i + k] & 0xC0) == 0x80) k++;
        }
        if (need && k == need + 1) {
            memcpy(o + on, s + i, k);
            on += k;
        } else {
            o[on++] = 0xEF; o[on++] = 0xBF; o[on++] = 0xBD;
        }
        i += k;
    }
    return on;
}

int ztok_decode(const ztok *t, const int32_t *ids, int n, char **text, zerr *e) {
    if (!text) return zerr_set(e, ZE_INVALID, "ztok_decode: NULL argument");
    *text = NULL;
    if (!t || n < 0 || (!ids && n)) return zerr_set(e, ZE_INVALID, "ztok_decode: bad argument");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || (t->tok_off[id] == UINT32_MAX && t->added_of[id] < 0))
            return zerr_set(e, ZE_INVALID, "ztok_decode: unknown id %d at position %d", (int)id, i);
        total += t->added_of[id] >= 0 ? t->added[t->added_of[id]].len : t->tok_len[id];
    }
    int32_t map[324]; /* byte-level code point -> byte */
    for (int c = 0; c < 324; c++) map[c] = -1;
    for (int b = 0; b < 256; b++) map[byte_to_cp(b)] = b;
    uint8_t *raw = malloc(total + 1), *o = malloc(total * 3 + 1);
    if (!raw || !o) {
        free(raw);
        free(o);
        return zerr_set(e, ZE_NOMEM, "out of memory");
    }
    size_t rn = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (t->added_of[id] >= 0) {
            const added_tok *a = &t->added[t->added_of[id]];
            memcpy(raw + rn, a->s, a->len);
            rn += a->len;
            continue;
        }
        const uint8_t *s = (const uint8_t *)t->pool + t->tok_off[id];
        size_t len = t->tok_len[id];
        for (size_t k = 0; k < len;) {
            int l;
            uint32_t c = zt_utf8_decode(s + k, len - k, &l);
            k += (size_t)l;
            if (c < 324 && map[c] >= 0) raw[rn++] = (uint8_t)map[c];
            else { /* not a byte-level character: keep it as UTF-8 */
                rn += (size_t)zt_utf8_encode(c, raw + rn);
            }
        }
    }
    size_t on = utf8_lossy(raw, rn, o);
    o[on] = 0;
    free(raw);
    *text = (char *)o;
    return ZE_OK;
}
