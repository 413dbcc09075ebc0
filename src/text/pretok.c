/* pretok.c - UTF-8, Unicode classes, NFC and the Qwen2 pre-tokenizer regex
 * (see pretok.h for the contract and the Unicode-version notes).
 *
 * The two small tables below were measured by probing HF `tokenizers`
 * 0.23.3 on every code point (tools/fixtures/tok.py writes the same probes
 * as test fixtures, and tests/test_tokenizer.c checks every code point):
 *   k_uni16[]   code points that utf8proc 2.8 (Unicode 15) leaves
 *               unassigned but Oniguruma (Unicode 16) classes as L or N.
 *   k_post9[]   code points with normalization properties in Unicode 15
 *               (non-zero ccc, canonical decomposition, or composition
 *               partner) that were assigned after Unicode 9.0, so HF's NFC
 *               treats them as inert starters.
 */
#include "pretok.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ------------------------------------------------------------------ UTF-8 */

ptrdiff_t zt_utf8_check(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) { i++; continue; }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte */
        if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            if (b == 0xE0) lo = 0xA0;        /* overlong */
            else if (b == 0xED) hi = 0x9F;   /* surrogates */
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            if (b == 0xF0) lo = 0x90;        /* overlong */
            else if (b == 0xF4) hi = 0x8F;   /* > U+10FFFF */
        } else return (ptrdiff_t)i;
        if (i + need >= n) return (ptrdiff_t)i; /* truncated */
        if (s[i + 1] < lo || s[i + 1] > hi) return (ptrdiff_t)i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return (ptrdiff_t)i;
        i += need + 1;
    }
    return -1;
}

uint32_t zt_utf8_decode(const uint8_t *s, size_t n, int *len) {
    uint8_t b = s[0];
    if (b < 0x80 || n < 2) { *len = 1; return b; }
    if (b < 0xE0) { *len = 2; return ((uint32_t)(b & 0x1F) << 6) | (s[1] & 0x3F); }
    if (b < 0xF0 || n < 4) {
        *len = 3;
        return ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *len = 4;
    return ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
           ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

int zt_utf8_encode(uint32_t c, uint8_t *o) {
    if (c < 0x80) { o[0] = (uint8_t)c; return 1; }
    if (c < 0x800) { o[0] = (uint8_t)(0xC0 | (c >> 6)); o[1] = (uint8_t)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (c >> 12));
        o[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (c >> 18));
    o[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* ---------------------------------------------------------------- classes */

typedef struct { uint32_t lo, hi; } cp_range;

/* Unicode 16.0 letters (L) and digits (N) unassigned in Unicode 15.0. */
static const cp_range k_uni16_L[] = {
    {0x1C89, 0x1C8A}, {0xA7CB, 0xA7CD}, {0xA7DA, 0xA7DC}, {0x105C0, 0x105F3},
    {0x10D4A, 0x10D65}, {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x11380, 0x11389},
    {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113B7},
    {0x113D1, 0x113D1}, {0x113D3, 0x113D3}, {0x11BC0, 0x11BE0}, {0x13460, 0x143FA},
    {0x16100, 0x1611D}, {0x16D40, 0x16D6C}, {0x18CFF, 0x18CFF}, {0x1E5D0, 0x1E5ED},
    {0x1E5F0, 0x1E5F0}, {0x2EBF0, 0x2EE5D},
};
static const cp_range k_uni16_N[] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x16130, 0x16139},
    {0x16D70, 0x16D79}, {0x1CCF0, 0x1CCF9}, {0x1E5F1, 0x1E5FA},
};

/* Normalization-relevant code points assigned in Unicode 10.0 .. 15.0. */
static const cp_range k_post9[] = {
    {0x7FD, 0x7FD}, {0x898, 0x89F}, {0x8CA, 0x8D3}, {0x9FE, 0x9FE},
    {0xC3C, 0xC3C}, {0xD3B, 0xD3C}, {0xEBA, 0xEBA}, {0x1715, 0x1715},
    {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA}, {0xA82C, 0xA82C}, {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A},
    {0x11930, 0x11930}, {0x11935, 0x11935}, {0x11938, 0x11938}, {0x1193D, 0x1193E},
    {0x11943, 0x11943}, {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47},
    {0x11A99, 0x11A99}, {0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97},
    {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136},
    {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF},
};

/* Code points with ccc 0 that occur as non-initial parts of canonical
 * decompositions (besides the Hangul V/T jamo): text containing one of them
 * may change under NFC although none of its characters decomposes.  Sorted. */
static const uint32_t k_ccc0_second[] = {
    0x9BE, 0x9D7, 0xB3E, 0xB56, 0xB57, 0xBBE, 0xBD7, 0xCC2, 0xCD5, 0xCD6,
    0xD3E, 0xD57, 0xDCF, 0xDDF, 0xFB5, 0xFB7, 0x102E, 0x1B35, 0x11127,
    0x1133E, 0x11357, 0x114B0, 0x114BA, 0x114BD, 0x115AF, 0x11930,
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int in_ranges(const cp_range *r, size_t n, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < r[mid].lo) hi = mid;
        else if (c > r[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static const uint8_t k_ascii_class[128] = {
    /* 0x00 */ 4, 4, 4, 4, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 4, 4,
    /* 0x10 */ 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    /* 0x20 */ 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    /* 0x30 */ 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4,
    /* 0x40 */ 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x50 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4,
    /* 0x60 */ 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x70 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4,
};

int zt_cp_class(uint32_t c) {
    if (c < 128) return k_ascii_class[c];
    if (c == 0x85) return ZT_S;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return ZT_L;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return ZT_N;
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
        return ZT_S;
    case UTF8PROC_CATEGORY_CN:
        if (in_ranges(k_uni16_L, NELEM(k_uni16_L), c)) return ZT_L;
        if (in_ranges(k_uni16_N, NELEM(k_uni16_N), c)) return ZT_N;
        return ZT_O;
    default:
        return ZT_O;
    }
}

/* -------------------------------------------------------------------- NFC */

/* Stand-in for the post-9.0 code points while utf8proc normalizes: a
 * private-use starter with no decomposition and no compositions, exactly
 * how HF's Unicode 9 tables see the masked characters. */
#define NFC_MASK 0xE000u

/* 1 if c may take part in a change under NFC (quick check). */
static int nfc_suspect(uint32_t c) {
    if (c < 0x300) return 0;
    if ((c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7A3)) return 0; /* CJK, Hangul LV/LVT */
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
    if (p->combining_class != 0) return 1;
    if (p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0) return 1; /* canonical */
    if ((c >= 0x1161 && c <= 0x1175) || (c >= 0x11A8 && c <= 0x11C2)) return 1; /* Hangul V, T */
    if (c >= k_ccc0_second[0] && c <= k_ccc0_second[NELEM(k_ccc0_second) - 1]) {
        size_t lo = 0, hi = NELEM(k_ccc0_second);
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (k_ccc0_second[mid] == c) return 1;
            if (k_ccc0_second[mid] < c) lo = mid + 1;
            else hi = mid;
        }
    }
    return c == NFC_MASK || in_ranges(k_post9, NELEM(k_post9), c);
}

static int is_masked(uint32_t c) {
    return c == NFC_MASK || in_ranges(k_post9, NELEM(k_post9), c);
}

static utf8proc_int32_t nfc_mask_fn(utf8proc_int32_t c, void *data) {
    (void)data;
    return is_masked((uint32_t)c) ? (utf8proc_int32_t)NFC_MASK : c;
}

int zt_nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_n, zerr *e) {
    *out = NULL;
    *out_n = n;
    /* Quick check; also count the masked code points. */
    size_t n_mask = 0, n_cp = 0;
    int suspect = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0xCC) { /* below U+0300 (or a continuation byte of one) */
            i++;
            n_cp += (s[i - 1] & 0xC0) != 0x80;
            continue;
        }
        int len;
        uint32_t c = zt_utf8_decode(s + i, n - i, &len);
        i += (size_t)len;
        n_cp++;
        if (nfc_suspect(c)) {
            suspect = 1;
            n_mask += is_masked(c);
        }
    }
    if (!suspect) return ZE_OK;

    uint32_t *orig = NULL; /* original code points behind each NFC_MASK, in order */
    if (n_mask) {
        orig = malloc(n_mask * sizeof *orig);
        if (!orig) return zerr_set(e, ZE_NOMEM, "NFC: out of memory");
        size_t k = 0;
        for (size_t i = 0; i < n;) {
            int len;
            uint32_t c = zt_utf8_decode(s + i, n - i, &len);
            i += (size_t)len;
            if (is_masked(c)) orig[k++] = c;
        }
    }
    const utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    utf8proc_ssize_t cap = (utf8proc_ssize_t)n_cp * 2 + 16, m;
    utf8proc_int32_t *buf = NULL;
    for (;;) {
        utf8proc_int32_t *nb = realloc(buf, (size_t)cap * sizeof *buf);
        if (!nb) { free(buf); free(orig); return zerr_set(e, ZE_NOMEM, "NFC: out of memory"); }
        buf = nb;
        m = utf8proc_decompose_custom(s, (utf8proc_ssize_t)n, buf, cap, opt, nfc_mask_fn, NULL);
        if (m < 0) {
            free(buf);
            free(orig);
            return zerr_set(e, ZE_INVALID, "NFC: %s", utf8proc_errmsg(m));
        }
        if (m <= cap) break;
        cap = m;
    }
    m = utf8proc_normalize_utf32(buf, m, opt);
    if (m < 0) {
        free(buf);
        free(orig);
        return zerr_set(e, ZE_INVALID, "NFC: %s", utf8proc_errmsg(m));
    }
    uint8_t *o = malloc((size_t)m * 4 + 1);
    if (!o) { free(buf); free(orig); return zerr_set(e, ZE_NOMEM, "NFC: out of memory"); }
    size_t on = 0, k = 0;
    for (utf8proc_ssize_t i = 0; i < m; i++) {
        uint32_t c = (uint32_t)buf[i];
        if (c == NFC_MASK && k < n_mask) c = orig[k++];
        on += (size_t)zt_utf8_encode(c, o + on);
    }
    free(buf);
    free(orig);
    *out = o;
    *out_n = on;
    return ZE_OK;
}

/* ---------------------------------------------------------- pre-tokenizer */

typedef struct {
    uint32_t cp;
    int k;      /* ZT_* */
    size_t end; /* byte offset after this character */
} zchar;

static inline void peek(const uint8_t *s, size_t n, size_t p, zchar *c) {
    if (s[p] < 0x80) {
        c->cp = s[p];
        c->k = k_ascii_class[s[p]];
        c->end = p + 1;
        return;
    }
    int len;
    c->cp = zt_utf8_decode(s + p, n - p, &len);
    c->k = zt_cp_class(c->cp);
    c->end = p + (size_t)len;
}

static inline int is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

/* End of the run of characters of class k starting at byte p. */
static size_t run_end(const uint8_t *s, size_t n, size_t p, int k) {
    zchar c;
    while (p < n) {
        peek(s, n, p, &c);
        if (c.k != k) break;
        p = c.end;
    }
    return p;
}

/* Length of a contraction (?i:'s|'t|'re|'ve|'m|'ll|'d) at p, or 0.  Under
 * Oniguruma's case folding 's' also matches U+017F LATIN SMALL LETTER LONG S
 * (probed over all letters; no other non-ASCII letter matches). */
static size_t contraction(const uint8_t *s, size_t n, size_t p) {
    if (s[p] != '\'' || p + 1 >= n) return 0;
    uint8_t a = s[p + 1] | 0x20, b = p + 2 < n ? (s[p + 2] | 0x20) : 0;
    if (s[p + 1] == 0xC5 && p + 2 < n && s[p + 2] == 0xBF) return 3; /* 'ſ */
    if (s[p + 1] >= 0x80) return 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (p + 2 >= n || s[p + 2] >= 0x80) return 0;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* Byte length of the regex match at p (always >= 1 character). */
static size_t match_at(const uint8_t *s, size_t n, size_t p) {
    size_t m = contraction(s, n, p);
    if (m) return m;
    zchar c0, c1;
    peek(s, n, p, &c0);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (c0.k == ZT_L) return run_end(s, n, c0.end, ZT_L) - p;
    if (c0.k != ZT_N && !is_crlf(c0.cp) && c0.end < n) {
        peek(s, n, c0.end, &c1);
        if (c1.k == ZT_L) return run_end(s, n, c1.end, ZT_L) - p;
    }
    /* \p{N} */
    if (c0.k == ZT_N) return c0.end - p;
    /* " ?[^\s\p{L}\p{N}]+[\r\n]*" */
    size_t q = 0;
    if (c0.k == ZT_O) q = c0.end;
    else if (c0.cp == ' ' && c0.end < n) {
        peek(s, n, c0.end, &c1);
        if (c1.k == ZT_O) q = c1.end;
    }
    if (q) {
        q = run_end(s, n, q, ZT_O);
        while (q < n && is_crlf(s[q])) q++;
        return q - p;
    }
    /* c0 is whitespace: \s*[\r\n]+ | \s+(?!\S) | \s+ */
    size_t q_nl = 0, last = p, e = p;
    while (e < n) {
        peek(s, n, e, &c1);
        if (c1.k != ZT_S) break;
        last = e;
        e = c1.end;
        if (is_crlf(c1.cp)) q_nl = e;
    }
    if (q_nl) return q_nl - p;          /* up to the last \r or \n of the run */
    if (e == n || last == p) return e - p; /* at the end, or a single space */
    return last - p;                    /* leave the last space to the next word */
}

int zt_pretokenize(const uint8_t *s, size_t n, zt_piece_fn fn, void *ctx) {
    size_t p = 0;
    while (p < n) {
        size_t m = match_at(s, n, p);
        int rc = fn(ctx, s + p, m);
        if (rc) return rc;
        p += m;
    }
    return 0;
}
