/* test_safetensors.c - the safetensors reader: good files, every malformed
 * header we reject (each message must name the file and the tensor), and
 * sharded sets through an index json.  All files are written to a temp
 * folder by the test itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "util/st_writer.h"
#include "util/testutil.h"

static const char *dir;

static int setup(void **state) {
    (void)state;
    dir = st_tmpdir();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    st_rmtree(dir);
    return 0;
}

/* Assert that msg contains every needle; print it otherwise. */
static void expect_msg(const zerr *e, const char *a, const char *b, const char *c) {
    const char *n[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (n[i] && !strstr(e->msg, n[i])) {
            fprintf(stderr, "message: %s\nmissing: '%s'\n", e->msg, n[i]);
            fail();
        }
}

/* Open path; expect failure with code and message parts. */
static void expect_open_fail(const char *path, int code, const char *a, const char *b) {
    zst_file *f = NULL;
    zerr e = {0};
    int rc = zst_open(&f, path, &e);
    if (rc != code) fprintf(stderr, "rc %d (want %d): %s\n", rc, code, e.msg);
    assert_int_equal(rc, code);
    assert_null(f);
    expect_msg(&e, path, a, b);
}

static void test_good_file(void **state) {
    (void)state;
    const char *p = st_path(dir, "good.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {0x3f80, 0x4000, 0xc040};
    int64_t c[2] = {7, -9};
    stw *w = stw_new();
    stw_meta(w, "format", "pt");
    stw_add_f32(w, "a.weight", 2, (int64_t[]){2, 3}, a);
    stw_add(w, "b", "BF16", 1, (int64_t[]){3}, b, sizeof b);
    stw_add(w, "c", "I64", 1, (int64_t[]){2}, c, sizeof c);
    stw_add(w, "empty", "F32", 2, (int64_t[]){0, 5}, NULL, 0);
    stw_add(w, "scalar", "F32", 0, NULL, a, 4);
    stw_write(w, p);
    stw_free(w);

    zst_file *f = NULL;
    zerr e = {0};
    assert_int_equal(zst_open(&f, p, &e), ZE_OK);
    assert_int_equal(f->n, 5);
    assert_string_equal(zst_meta(f, "format"), "pt");
    assert_null(zst_meta(f, "nope"));
    const zst_tensor *t = zst_find(f, "a.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, ZST_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_memory_equal(t->data, a, sizeof a);
    t = zst_find(f, "b");
    assert_int_equal(t->dtype, ZST_BF16);
    assert_memory_equal(t->data, b, sizeof b);
    t = zst_find(f, "c");
    assert_int_equal(t->dtype, ZST_I64);
    assert_memory_equal(t->data, c, sizeof c);
    t = zst_find(f, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_null(zst_find(f, "d"));
    zst_close(f);

    /* the same bytes parsed from memory */
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    assert_int_equal(zst_parse(&f, buf, n, "mem", &e), ZE_OK);
    assert_int_equal(f->n, 5);
    assert_ptr_equal(zst_find(f, "a.weight")->data, buf + f->data_off);
    zst_close(f);
}

static void test_all_dtypes_known(void **state) {
    (void)state;
    const char *names[] = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"};
    const size_t sizes[] = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1, 1, 1};
    const char *p = st_path(dir, "dtypes.safetensors");
    char data[16] = {0};
    stw *w = stw_new();
    for (int i = 0; i < 12; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "t%d", i);
        stw_add(w, nm, names[i], 1, (int64_t[]){2}, data, 2 * sizes[i]);
    }
    stw_write(w, p);
    stw_free(w);
    zst_file *f = NULL;
    zerr e = {0};
    assert_int_equal(zst_open(&f, p, &e), ZE_OK);
    for (int i = 0; i < 12; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "t%d", i);
        const zst_tensor *t = zst_find(f, nm);
        assert_non_null(t);
        assert_string_equal(zst_dtype_name(t->dtype), names[i]);
        assert_int_equal(zst_dtype_size(t->dtype), sizes[i]);
    }
    zst_close(f);
}

static void test_truncated(void **state) {
    (void)state;
    const char *p = st_path(dir, "trunc.safetensors");
    st_write_bytes(p, "\x10\x00\x00", 3);
    expect_open_fail(p, ZE_FORMAT, "truncated", NULL);
    st_write_bytes(p, "", 0);
    expect_open_fail(p, ZE_FORMAT, "truncated", NULL);
    /* valid header, data cut short */
    float d[4] = {0};
    st_write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, d, 10);
    expect_open_fail(p, ZE_FORMAT, "'w'", "outside the data section");
}

static void test_header_len_beyond(void **state) {
    (void)state;
    const char *p = st_path(dir, "hl.safetensors");
    st_write_raw(p, "{}", 1000, NULL, 0);
    expect_open_fail(p, ZE_FORMAT, "header length 1000 extends beyond the end of the file", NULL);
    st_write_raw(p, "{}", (int64_t)0x7fffffffffffffffLL, NULL, 0);
    expect_open_fail(p, ZE_FORMAT, "extends beyond", NULL);
}

static void test_overlap(void **state) {
    (void)state;
    const char *p = st_path(dir, "overlap.safetensors");
    float d[8] = {0};
    st_write_raw(p,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[12,28]}}",
                 -1, d, 32);
    expect_open_fail(p, ZE_FORMAT, "'a' [0, 16] and 'b' [12, 28] overlap", NULL);
    /* identical ranges overlap too */
    st_write_raw(p,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                 -1, d, 32);
    expect_open_fail(p, ZE_FORMAT, "overlap", NULL);
    /* zero-sized tensors may sit anywhere */
    st_write_raw(p,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}",
                 -1, d, 16);
    zst_file *f = NULL;
    zerr e = {0};
    assert_int_equal(zst_open(&f, p, &e), ZE_OK);
    zst_close(f);
}

static void test_out_of_range(void **state) {
    (void)state;
    const char *p = st_path(dir, "oor.safetensors");
    float d[4] = {0};
    st_write_raw(p, "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", -1, d, 16);
    expect_open_fail(p, ZE_FORMAT, "'x.weight'", "outside the data section");
    st_write_raw(p, "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,8]}}", -1, d, 16);
    expect_open_fail(p, ZE_FORMAT, "'x.weight'", "begin > end");
    st_write_raw(p, "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-4,12]}}", -1, d, 16);
    expect_open_fail(p, ZE_FORMAT, "'x.weight'", "non-negative");
}

static void test_unknown_dtype(void **state) {
    (void)state;
    const char *p = st_path(dir, "dt.safetensors");
    float d[4] = {0};
    st_write_raw(p, "{\"q.weight\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]}}", -1, d, 2);
    expect_open_fail(p, ZE_FORMAT, "'q.weight'", "unknown dtype 'F4'");
    st_write_raw(p, "{\"q.weight\":{\"dtype\":7,\"shape\":[4],\"data_offsets\":[0,2]}}", -1, d, 2);
    expect_open_fail(p, ZE_FORMAT, "'q.weight'", "dtype");
}

static void test_size_mismatch(void **state) {
    (void)state;
    const char *p = st_path(dir, "size.safetensors");
    float d[8] = {0};
    st_write_raw(p, "{\"k\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,32]}}", -1, d, 32);
    expect_open_fail(p, ZE_FORMAT, "'k'", "hold 32 bytes but shape [2, 3] F32 needs 24");
    /* shape product overflow */
    st_write_raw(p,
                 "{\"k\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,32]}}", -1, d,
                 32);
    expect_open_fail(p, ZE_FORMAT, "'k'", "too large");
}

static void test_rank(void **state) {
    (void)state;
    const char *p = st_path(dir, "rank.safetensors");
    float d[1] = {0};
    st_write_raw(p, "{\"big\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", -1, d, 4);
    expect_open_fail(p, ZE_FORMAT, "'big' has rank 5", NULL);
}

static void test_malformed_json(void **state) {
    (void)state;
    const char *p = st_path(dir, "json.safetensors");
    st_write_raw(p, "{\"a\":{\"dtype\":\"F32\",", -1, NULL, 0);
    expect_open_fail(p, ZE_FORMAT, "malformed header JSON", NULL);
    st_write_raw(p, "[1, 2]", -1, NULL, 0);
    expect_open_fail(p, ZE_FORMAT, "not start with '{'", NULL);
    st_write_raw(p, "{\"a\":1}", -1, NULL, 0);
    expect_open_fail(p, ZE_FORMAT, "'a'", "expected an object");
    st_write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[0]}}", -1, NULL, 0);
    expect_open_fail(p, ZE_FORMAT, "'a'", "lacks \"data_offsets\"");
    st_write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"x\"],\"data_offsets\":[0,0]}}", -1, NULL, 0);
    expect_open_fail(p, ZE_FORMAT, "'a'", "shape[0]");
    /* duplicate keys */
    st_write_raw(p,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                 -1, NULL, 0);
    expect_open_fail(p, ZE_FORMAT, "malformed header JSON", NULL);
    /* metadata must be strings */
    st_write_raw(p, "{\"__metadata__\":{\"n\":3}}", -1, NULL, 0);
    expect_open_fail(p, ZE_FORMAT, "__metadata__", "'n'");
}

static void test_missing_file(void **state) {
    (void)state;
    zst_file *f = NULL;
    zerr e = {0};
    const char *p = st_path(dir, "nope.safetensors");
    assert_int_equal(zst_open(&f, p, &e), ZE_IO);
    expect_msg(&e, p, "No such file", NULL);
    assert_int_equal(zst_open(&f, dir, &e), ZE_IO);
    expect_msg(&e, "not a regular file", NULL, NULL);
}

/* ---- sharded sets ---- */

static void write_shards(const char *sub) {
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    stw *w = stw_new();
    stw_add_f32(w, "a", 1, (int64_t[]){4}, a);
    stw_write(w, st_path(sub, "m-00001-of-00002.safetensors"));
    stw_free(w);
    w = stw_new();
    stw_add_f32(w, "b", 1, (int64_t[]){2}, b);
    stw_add_f32(w, "c", 1, (int64_t[]){2}, b);
    stw_write(w, st_path(sub, "m-00002-of-00002.safetensors"));
    stw_free(w);
}

static void test_sharded(void **state) {
    (void)state;
    const char *idx = st_path(dir, "m.safetensors.index.json");
    write_shards(dir);
    st_write_text(idx, "{\"metadata\":{\"total_size\":24},\"weight_map\":{\"a\":\"m-00001-of-00002.safetensors\","
                       "\"b\":\"m-00002-of-00002.safetensors\",\"c\":\"m-00002-of-00002.safetensors\"}}");
    zst_set *s = NULL;
    zerr e = {0};
    assert_int_equal(zst_set_open(&s, idx, &e), ZE_OK);
    assert_int_equal(s->nfiles, 2);
    assert_int_equal(s->n, 3);
    const zst_entry *en = zst_set_find(s, "b");
    assert_non_null(en);
    assert_int_equal(((const float *)en->t->data)[1], 6);
    assert_non_null(strstr(s->files[en->file]->path, "00002"));
    assert_null(zst_set_find(s, "zz"));
    zst_set_close(s);

    /* a name that is not in its shard */
    st_write_text(idx, "{\"weight_map\":{\"a\":\"m-00001-of-00002.safetensors\","
                       "\"b\":\"m-00001-of-00002.safetensors\"}}");
    assert_int_equal(zst_set_open(&s, idx, &e), ZE_FORMAT);
    expect_msg(&e, idx, "'b'", "m-00001-of-00002.safetensors, but that shard has no such tensor");

    /* a missing shard */
    st_write_text(idx, "{\"weight_map\":{\"a\":\"m-00001-of-00002.safetensors\","
                       "\"b\":\"m-00003-of-00002.safetensors\"}}");
    assert_int_equal(zst_set_open(&s, idx, &e), ZE_IO);
    expect_msg(&e, "shard 'm-00003-of-00002.safetensors'", idx, "No such file");

    /* malformed index json */
    st_write_text(idx, "{\"weight_map\":{\"a\":");
    assert_int_equal(zst_set_open(&s, idx, &e), ZE_FORMAT);
    expect_msg(&e, idx, "malformed JSON", NULL);
    st_write_text(idx, "{\"weights\":{}}");
    assert_int_equal(zst_set_open(&s, idx, &e), ZE_FORMAT);
    expect_msg(&e, idx, "weight_map", NULL);
    st_write_text(idx, "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
    assert_int_equal(zst_set_open(&s, idx, &e), ZE_FORMAT);
    expect_msg(&e, idx, "'a'", "not a plain shard file name");
    st_write_text(idx, "{\"weight_map\":{\"a\":3}}");
    assert_int_equal(zst_set_open(&s, idx, &e), ZE_FORMAT);
    expect_msg(&e, idx, "weight_map['a']", NULL);

    /* the same tensor in two shards */
    stw *w = stw_new();
    float x[2] = {0};
    stw_add_f32(w, "b", 1, (int64_t[]){2}, x);
    stw_write(w, st_path(dir, "m-00001-of-00002.safetensors"));
    stw_free(w);
    st_write_text(idx, "{\"weight_map\":{\"b\":\"m-00001-of-00002.safetensors\","
                       "\"c\":\"m-00002-of-00002.safetensors\"}}");
    assert_int_equal(zst_set_open(&s, idx, &e), ZE_FORMAT);
    expect_msg(&e, "'b' is stored in both", NULL, NULL);
}

static void test_single_file_set(void **state) {
    (void)state;
    const char *p = st_path(dir, "single.safetensors");
    float a[2] = {1, 2};
    stw *w = stw_new();
    stw_add_f32(w, "x", 1, (int64_t[]){2}, a);
    stw_write(w, p);
    stw_free(w);
    zst_set *s = NULL;
    zerr e = {0};
    assert_int_equal(zst_set_open(&s, p, &e), ZE_OK);
    assert_int_equal(s->n, 1);
    assert_non_null(zst_set_find(s, "x"));
    zst_set_close(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file),       cmocka_unit_test(test_all_dtypes_known),
        cmocka_unit_test(test_truncated),       cmocka_unit_test(test_header_len_beyond),
        cmocka_unit_test(test_overlap),         cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_unknown_dtype),   cmocka_unit_test(test_size_mismatch),
        cmocka_unit_test(test_rank),            cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_missing_file),    cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_single_file_set),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
