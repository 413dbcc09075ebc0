/* tokenizer.h - the Qwen2/Qwen3 byte-level BPE tokenizer (Z-Image's text
 * tokenizer), equal to transformers' Qwen2Tokenizer(Fast) on the same
 * tokenizer.json.  Spec: zimage-turbo.md section 2.
 *
 * Encoding (ztok_encode), in HF's order:
 *   1. added tokens: every occurrence of an added token's content in the
 *      raw text (special or not; leftmost match, longest first) becomes its
 *      id; the text between them goes through steps 2-5;
 *   2. NFC (if the normalizer is NFC; HF's Unicode 9.0 tables, pretok.h);
 *   3. pre-tokenizer: the Qwen2 Split regex (pretok.h), then ByteLevel
 *      (bytes -> GPT-2 printable code points);
 *   4. BPE by merge rank (lowest rank first, ties leftmost first);
 *   5. vocabulary lookup.  No BOS/EOS is added.
 * Everything (vocab, merges, added tokens) comes from tokenizer.json; load
 * fails with ZE_UNSUPPORTED if its normalizer / pre_tokenizer / model /
 * post_processor are not the ones implemented here (NFC or none; Split with
 * the Qwen2 regex + ByteLevel; BPE without dropout, prefixes or byte
 * fallback; ByteLevel or no post_processor).
 *
 * Input text must be valid UTF-8: any ill-formed byte sequence (bad lead or
 * continuation byte, truncated sequence, overlong form, surrogate, > U+10FFFF)
 * makes ztok_encode/ztok_encode_prompt fail with ZE_INVALID and a message
 * naming the byte offset.  No replacement is done.  NUL bytes are ordinary
 * characters for ztok_encode (the length is explicit).
 *
 * A loaded ztok is read-only: any number of threads may encode with it at
 * once (the BPE cache is per call).
 */
#ifndef ZIMAGE_TEXT_TOKENIZER_H
#define ZIMAGE_TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct ztok ztok;

/* Load tokenizer.json (required) and tokenizer_config.json (optional, NULL
 * to skip; if given it is checked for settings this tokenizer does not
 * implement: add_bos_token/add_eos_token true, split_special_tokens true,
 * added_tokens_decoder disagreeing with tokenizer.json, a non-ChatML
 * chat_template).  Errors: ZE_IO, ZE_FORMAT (bad JSON / missing fields),
 * ZE_UNSUPPORTED, ZE_MODEL, ZE_NOMEM. */
int ztok_load(ztok **out, const char *tokenizer_json, const char *tokenizer_config_json, zerr *e);
void ztok_free(ztok *t);

/* Raw encoding of text[0..len) (no template, no truncation).  *ids is
 * malloc'd (caller frees; non-NULL even when *n == 0). */
int ztok_encode(const ztok *t, const char *text, size_t len, int32_t **ids, int *n, zerr *e);

/* The Z-Image prompt (spec 2.2/2.3): encode
 *   "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"
 * (the Qwen3 chat template with add_generation_prompt, enable_thinking=True)
 * and keep the first max_length ids (max_length <= 0: no limit).  No padding.
 * prompt is NUL-terminated.  ZE_MODEL if <|im_start|>/<|im_end|> are not
 * added tokens of this tokenizer. */
int ztok_encode_prompt(const ztok *t, const char *prompt, int max_length, int32_t **ids, int *n,
                       zerr *e);

/* Decode ids to text (for debugging): added tokens give their content,
 * BPE tokens their bytes; byte sequences that are not valid UTF-8 (a token
 * boundary inside a character) are replaced by U+FFFD per maximal invalid
 * subpart, as Rust's String::from_utf8_lossy does (HF errors="replace").
 * *text is malloc'd and NUL-terminated.  ZE_INVALID for an unknown id. */
int ztok_decode(const ztok *t, const int32_t *ids, int n, char **text, zerr *e);

/* Id of a token: an added token's content ("<|im_end|>") or a vocab entry in
 * its byte-level spelling ("Ġcat"); -1 if absent. */
int ztok_token_id(const ztok *t, const char *token);

/* 1 + the largest id (vocab and added tokens). */
int ztok_vocab_size(const ztok *t);

#endif
