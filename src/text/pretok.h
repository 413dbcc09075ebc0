/* pretok.h - the text-level half of the Qwen2 byte-level BPE tokenizer:
 * UTF-8 checking, Unicode character classes as HF `tokenizers` (Oniguruma)
 * sees them, NFC exactly as HF `tokenizers` computes it, and the Qwen2
 * pre-tokenizer regex as a hand-written matcher.  The BPE half lives in
 * tokenizer.c.  Internal header: used by tokenizer.c and the tests.
 *
 * Unicode versions (measured against tokenizers 0.23.3 over all code points,
 * see tools/fixtures/tok.py and docs/NOTES.md):
 *   - the regex classes \p{L}, \p{N}, \s come from Oniguruma's Unicode 16
 *     tables; we take them from utf8proc (Unicode 15 in utf8proc 2.8) plus
 *     a table of the Unicode 16 letters/digits (zt_cp_class).
 *   - NFC comes from the `unicode-normalization-alignments` crate, whose
 *     tables are Unicode 9.0: combining marks, composites and composition
 *     pairs assigned in Unicode 10..15 are left alone by HF.  We run
 *     utf8proc's NFC with those code points masked (zt_nfc).
 */
#ifndef ZIMAGE_TEXT_PRETOK_H
#define ZIMAGE_TEXT_PRETOK_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Character classes of the pre-tokenizer regex. */
enum {
    ZT_L = 1, /* \p{L}  (Lu Ll Lt Lm Lo)                               */
    ZT_N = 2, /* \p{N}  (Nd Nl No)                                     */
    ZT_S = 3, /* \s     (U+0009..000D, 0020, 0085, Zs, Zl, Zp)         */
    ZT_O = 4, /* anything else                                         */
};

/* Byte offset of the first byte that does not start a well-formed UTF-8
 * sequence (overlong forms, surrogates and code points above U+10FFFF are
 * ill-formed), or -1 if all n bytes are valid.  NUL bytes are valid. */
ptrdiff_t zt_utf8_check(const uint8_t *s, size_t n);

/* Decode the code point at s[0] of *valid* UTF-8 (n >= 1 bytes available);
 * stores its byte length in *len. */
uint32_t zt_utf8_decode(const uint8_t *s, size_t n, int *len);

/* Append cp as UTF-8 to out (room for 4 bytes); returns the byte count. */
int zt_utf8_encode(uint32_t cp, uint8_t *out);

/* Regex class (ZT_L/N/S/O) of a code point. */
int zt_cp_class(uint32_t cp);

/* NFC of valid UTF-8 s[0..n) as HF tokenizers computes it.  If the text is
 * already normalized by the quick check, *out = NULL and nothing is
 * allocated (use s as is); otherwise *out is malloc'd (caller frees) with
 * *out_n bytes.  Returns ZE_OK or ZE_NOMEM / ZE_INVALID with e set. */
int zt_nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_n, zerr *e);

/* Split valid UTF-8 s[0..n) into pieces with the Qwen2 regex
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
 *   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * (Oniguruma leftmost-first semantics; every character is covered by some
 * alternative, so the matches tile the text).  Calls fn for every piece in
 * order; a non-zero return from fn stops the split and is returned. */
typedef int (*zt_piece_fn)(void *ctx, const uint8_t *piece, size_t n);
int zt_pretokenize(const uint8_t *s, size_t n, zt_piece_fn fn, void *ctx);

#endif
