/* fuzz_safetensors.c - libFuzzer target: arbitrary bytes into the
 * safetensors header parser (zst_parse), the shard index parser
 * (zst_index_parse) and the .npy parser (npy_parse).  Every tensor a
 * successful parse hands out is read end to end, so ASan catches any
 * offset that escapes the buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/npy.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zerr e = {0};
    /* a private copy: the parser must stay inside [buf, buf + size) */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);

    zst_file *f = NULL;
    if (zst_parse(&f, buf, size, "fuzz", &e) == ZE_OK) {
        volatile uint8_t acc = 0;
        for (int i = 0; i < f->n; i++) {
            const zst_tensor *t = &f->t[i];
            const uint8_t *p = t->data;
            for (uint64_t j = 0; j < t->end - t->begin; j++) acc ^= p[j];
            if (zst_find(f, t->name) != t) abort(); /* names are unique and sorted */
        }
        for (int i = 0; i < f->n_meta; i++) (void)zst_meta(f, f->meta[2 * i]);
        (void)acc;
        zst_close(f);
    }

    char **names = NULL, **shards = NULL;
    int n = 0;
    if (zst_index_parse((const char *)buf, size, "fuzz", &names, &shards, &n, &e) == ZE_OK)
        zst_index_free(names, shards, n);

    npy_array a;
    if (npy_parse(buf, size, &a, &e) == ZE_OK) npy_free(&a);
    free(buf);
    return 0;
}
