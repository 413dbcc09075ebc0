/* safetensors.h - read-only safetensors files (mmap) and sharded sets.
 *
 * File layout (https://github.com/huggingface/safetensors):
 *   u64 little-endian N | N bytes of JSON header | data section
 * The header is an object: name -> {"dtype": "F32", "shape": [..],
 * "data_offsets": [begin, end]} (offsets relative to the data section),
 * plus an optional "__metadata__" object of string values.
 *
 * Everything in the header is validated before any tensor is handed out:
 * header length inside the file, well-formed JSON (duplicate keys
 * rejected), every entry complete, dtype known, rank <= 4, byte size ==
 * numel * dtype size (overflow-checked), offsets inside the data section,
 * begin <= end, no two tensors overlapping.  Every error names the file and,
 * where there is one, the tensor.
 *
 * A zst_set is one file, or the shards listed by a *.safetensors.index.json
 * ({"weight_map": {name: shard file}}); every shard is opened and every
 * mapped name must be present in its shard.
 */
#ifndef ZIMAGE_SAFETENSORS_H
#define ZIMAGE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../base/err.h"

typedef enum {
    ZST_F64 = 0,
    ZST_F32,
    ZST_F16,
    ZST_BF16,
    ZST_I64,
    ZST_I32,
    ZST_I16,
    ZST_I8,
    ZST_U8,
    ZST_BOOL,
    ZST_F8_E4M3,
    ZST_F8_E5M2,
    ZST_NDTYPE
} zst_dtype;

#define ZST_MAXDIM 4
/* Header JSON larger than this is rejected (the reference reader's limit). */
#define ZST_MAX_HEADER (100u << 20)

typedef struct zst_tensor {
    const char *name;
    zst_dtype dtype;
    int ndim;
    int64_t shape[ZST_MAXDIM];
    uint64_t begin, end;  /* byte offsets inside the data section */
    const void *data;     /* start of the tensor's bytes (in the buffer) */
} zst_tensor;

typedef struct zst_file {
    char *path;               /* file name (or label) used in messages  */
    const uint8_t *buf;       /* whole file                             */
    size_t len;
    int mapped;               /* 1: buf is our mmap                     */
    size_t data_off;          /* 8 + header length                      */
    int n;                    /* tensors, sorted by name                */
    zst_tensor *t;
    int n_meta;               /* __metadata__ pairs                     */
    char **meta;              /* key0, value0, key1, value1, ...        */
    char *strings;            /* storage for names                      */
} zst_file;

size_t zst_dtype_size(zst_dtype t);
const char *zst_dtype_name(zst_dtype t);

/* mmap `path` and validate its header. */
int zst_open(zst_file **out, const char *path, zerr *e);
/* Validate a safetensors image held in memory (not copied: buf must outlive
 * the result).  label names it in messages. */
int zst_parse(zst_file **out, const void *buf, size_t len, const char *label, zerr *e);
void zst_close(zst_file *f);
const zst_tensor *zst_find(const zst_file *f, const char *name);
/* __metadata__ value, or NULL. */
const char *zst_meta(const zst_file *f, const char *key);

/* ---- sharded sets --------------------------------------------------------- */
typedef struct zst_entry {
    const zst_tensor *t;
    int file;                 /* index into files                        */
} zst_entry;

typedef struct zst_set {
    char *path;               /* the file or index json opened           */
    int nfiles;
    zst_file **files;
    int n;                    /* all tensors of all files, sorted by name */
    zst_entry *all;
} zst_set;

/* path: a .safetensors file or a *.safetensors.index.json. */
int zst_set_open(zst_set **out, const char *path, zerr *e);
void zst_set_close(zst_set *s);
const zst_entry *zst_set_find(const zst_set *s, const char *name);

/* Parse an index json held in memory: the weight_map as parallel arrays of
 * names and shard file names (shard names: relative, no "..").  *names and
 * *shards are malloc'd arrays of malloc'd strings; free with
 * zst_index_free.  Used by zst_set_open and by the fuzzer. */
int zst_index_parse(const char *json, size_t len, const char *label, char ***names, char ***shards, int *n,
                    zerr *e);
void zst_index_free(char **names, char **shards, int n);

#endif
