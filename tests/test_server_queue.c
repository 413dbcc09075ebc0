/* test_server_queue.c - the server's job queue (src/server/queue.c) with a
 * fake engine (tests/server_fake.h): batching of same-size requests up to
 * max_batch, splitting of large jobs, results routed back to their jobs
 * (exact pixels), 'queue full', cancel (queued and running), a failing job
 * failing alone, TTL expiry, retained-bytes cap, shutdown. */
#include "util/testutil.h"

#include <string.h>

#include "base/log.h"
#include "server/queue.h"
#include "server_fake.h"

static zs_limits LIM = {16, 256, 64, 4, 50, 8, 8192};

static zs_gen_req mkreq(const char *prompt, int w, int h, int steps, int64_t seed, int n) {
    zs_gen_req r;
    memset(&r, 0, sizeof r);
    char body[512];
    snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"width\":%d,\"height\":%d,\"steps\":%d,\"seed\":%lld,\"n\":%d}",
             prompt, w, h, steps, (long long)seed, n);
    zs_req_err e;
    int rc = zs_parse_job(body, strlen(body), &LIM, &r, &e);
    if (rc) fail_msg("mkreq: %s (%s)", e.msg, e.field);
    return r;
}

static zs_queue *mkqueue(int max_queue, int max_batch, double ttl, zs_engine *eng, fake_engine **fe, int step_ms) {
    *eng = fake_new(step_ms, fe);
    zs_queue_config c = {.max_queue = max_queue, .max_batch = max_batch, .job_ttl = ttl,
                         .max_retained = (size_t)64 << 20, .shutdown_grace = 5, .model_name = "fake"};
    zs_queue *q;
    assert_int_equal(zs_queue_new(&q, &c, eng, 1, NULL), ZS_Q_OK);
    return q;
}

static void done_queue(zs_queue *q, zs_engine *eng) {
    zs_queue_free(q);
    eng->destroy(eng->ctx);
}

static zs_job *submit(zs_queue *q, const char *prompt, int w, int steps, int64_t seed, int n) {
    zs_gen_req r = mkreq(prompt, w, w, steps, seed, n);
    zs_job *j = NULL;
    int rc = zs_queue_submit(q, ZS_API_JOBS, &r, 1, &j, NULL);
    if (rc != ZS_Q_OK) fail_msg("submit failed: %d", rc);
    return j;
}

static int wait_final(zs_queue *q, zs_job *j, double timeout) {
    unsigned ver = 0;
    double t0 = ztime_now();
    for (;;) {
        zs_job_view v;
        zs_queue_view(q, j, 0, 0, &v);
        if (zs_job_final(v.status)) return v.status;
        if (ztime_now() - t0 > timeout) return -1;
        zs_queue_wait(q, j, &ver, 0.1);
    }
}

/* The images of a completed job encode their seeds and prompt. */
static void check_images(zs_job *j, const char *prompt) {
    for (int i = 0; i < j->n; i++) {
        assert_non_null(j->images[i]);
        uint8_t want[6 * 3];
        fake_image(want, 6, 1, prompt, j->seeds[i]);
        if (j->images[i][0] != want[0] || j->images[i][1] != want[1] || j->images[i][2] != want[2])
            fail_msg("job %s image %d: pixel0 (%d,%d,%d) want (%d,%d,%d) for seed %lld", j->id, i, j->images[i][0],
                     j->images[i][1], j->images[i][2], want[0], want[1], want[2], (long long)j->seeds[i]);
    }
}

static void test_batching(void **state) {
    (void)state;
    zs_engine eng;
    fake_engine *f;
    zs_queue *q = mkqueue(16, 4, 60, &eng, &f, 1);
    fake_close_gate(f);
    zs_job *a = submit(q, "a", 64, 2, 100, 1);
    fake_wait_gate(f); /* a is running, held at the gate */
    zs_job *b = submit(q, "b", 64, 2, 200, 1);
    zs_job *c = submit(q, "c", 64, 2, 300, 2);
    zs_job *d = submit(q, "d", 128, 2, 400, 1); /* other size */
    zs_job *e = submit(q, "e", 64, 2, 500, 1);
    zs_job *g = submit(q, "g", 64, 2, 600, 1); /* would be the 5th item: next batch */
    zs_job_view v;
    zs_queue_view(q, b, 0, 0, &v);
    assert_int_equal(v.status, ZS_JOB_QUEUED);
    assert_int_equal(v.position, 0);
    zs_queue_view(q, g, 0, 0, &v);
    assert_int_equal(v.position, 4);
    fake_open_gate(f);
    zs_job *all[] = {a, b, c, d, e, g};
    const char *pr[] = {"a", "b", "c", "d", "e", "g"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(wait_final(q, all[i], 10), ZS_JOB_COMPLETED);
        check_images(all[i], pr[i]);
    }
    /* a alone; b + c(2) + e = 4; then d (other size) and g */
    assert_int_equal(f->calls, 4);
    assert_int_equal(f->batch_sizes[0], 1);
    assert_int_equal(f->batch_sizes[1], 4);
    assert_int_equal(f->batch_sizes[2], 1);
    assert_int_equal(f->batch_sizes[3], 1);
    assert_int_equal(c->seeds[0], 300);
    assert_int_equal(c->seeds[1], 301);
    for (int i = 0; i < 6; i++) zs_queue_release(q, all[i]);
    done_queue(q, &eng);
}

static void test_split_large_job(void **state) {
    (void)state;
    zs_engine eng;
    fake_engine *f;
    zs_queue *q = mkqueue(16, 3, 60, &eng, &f, 0);
    zs_job *j = submit(q, "big", 32, 1, 7, 8);
    assert_int_equal(wait_final(q, j, 10), ZS_JOB_COMPLETED);
    check_images(j, "big");
    assert_int_equal(f->calls, 3); /* 3 + 3 + 2 */
    assert_int_equal(f->batch_sizes[2], 2);
    for (int i = 0; i < 8; i++) assert_int_equal(fake_count_seed(f, 7 + i), 1);
    zs_queue_release(q, j);
    done_queue(q, &eng);
}

static void test_random_seed(void **state) {
    (void)state;
    zs_engine eng;
    fake_engine *f;
    zs_queue *q = mkqueue(16, 4, 60, &eng, &f, 0);
    zs_job *j = submit(q, "r", 32, 1, -1, 3);
    assert_true(j->seeds[0] >= 0);
    assert_int_equal(j->seeds[1], j->seeds[0] + 1);
    assert_int_equal(wait_final(q, j, 10), ZS_JOB_COMPLETED);
    check_images(j, "r");
    zs_queue_release(q, j);
    done_queue(q, &eng);
}

static void test_full_and_cancel(void **state) {
    (void)state;
    zs_engine eng;
    fake_engine *f;
    zs_queue *q = mkqueue(2, 1, 60, &eng, &f, 1);
    fake_close_gate(f);
    zs_job *a = submit(q, "a", 32, 2, 1, 1);
    fake_wait_gate(f);
    zs_job *b = submit(q, "b", 32, 2, 2, 1);
    zs_job *c = submit(q, "c", 32, 2, 3, 1);
    assert_true(zs_queue_full(q));
    zs_gen_req r = mkreq("x", 32, 32, 2, 4, 1);
    zs_job *x = NULL;
    assert_int_equal(zs_queue_submit(q, ZS_API_JOBS, &r, 1, &x, NULL), ZS_Q_FULL);
    zs_gen_req_free(&r);
    /* cancel a queued job: frees a slot, never runs */
    assert_int_equal(zs_queue_cancel(q, b, ZS_CANCEL_CLIENT), ZS_JOB_CANCELLED);
    assert_false(zs_queue_full(q));
    /* cancel the running one: the engine sees the callback ask to stop */
    assert_int_equal(zs_queue_cancel(q, a, ZS_CANCEL_CLIENT), ZS_JOB_CANCELLED);
    fake_open_gate(f);
    assert_int_equal(wait_final(q, c, 10), ZS_JOB_COMPLETED);
    assert_int_equal(fake_count_seed(f, 2), 0);
    assert_int_equal(fake_count_seed(f, 1), 0);
    assert_int_equal(f->cancels, 1);
    zs_job_view v;
    zs_queue_view(q, a, 0, 0, &v);
    assert_int_equal(v.status, ZS_JOB_CANCELLED);
    assert_string_equal(v.error, "cancelled");
    zs_queue_release(q, a);
    zs_queue_release(q, b);
    zs_queue_release(q, c);
    done_queue(q, &eng);
}

static void test_failure_isolated(void **state) {
    (void)state;
    zs_engine eng;
    fake_engine *f;
    zs_queue *q = mkqueue(16, 4, 60, &eng, &f, 0);
    fake_close_gate(f);
    zs_job *a = submit(q, "first", 32, 1, 1, 1);
    fake_wait_gate(f);
    zs_job *b = submit(q, "ok one", 32, 1, 10, 1);
    zs_job *c = submit(q, "please FAIL", 32, 1, 20, 1);
    zs_job *d = submit(q, "ok two", 32, 1, 30, 2);
    fake_open_gate(f);
    assert_int_equal(wait_final(q, a, 10), ZS_JOB_COMPLETED);
    assert_int_equal(wait_final(q, b, 10), ZS_JOB_COMPLETED);
    assert_int_equal(wait_final(q, c, 10), ZS_JOB_FAILED);
    assert_int_equal(wait_final(q, d, 10), ZS_JOB_COMPLETED);
    check_images(b, "ok one");
    check_images(d, "ok two");
    zs_job_view v;
    zs_queue_view(q, c, 0, 0, &v);
    assert_non_null(strstr(v.error, "fake failure"));
    /* a alone, then the batch of 4 fails, then b, c, d alone */
    assert_int_equal(f->calls, 5);
    zs_queue_release(q, a);
    zs_queue_release(q, b);
    zs_queue_release(q, c);
    zs_queue_release(q, d);
    done_queue(q, &eng);
}

static void test_ttl(void **state) {
    (void)state;
    zs_engine eng;
    fake_engine *f;
    zs_queue *q = mkqueue(16, 4, 1.0, &eng, &f, 0);
    zs_job *a = submit(q, "a", 32, 1, 1, 1);
    char id[32];
    snprintf(id, sizeof id, "%s", a->id);
    assert_int_equal(wait_final(q, a, 10), ZS_JOB_COMPLETED);
    zs_queue_release(q, a);
    zs_job *again = zs_queue_find(q, id);
    assert_non_null(again);
    size_t len = 0;
    const uint8_t *png = zs_job_image(q, again, 0, &len);
    assert_non_null(png);
    assert_true(len > 8 && png[1] == 'P' && png[2] == 'N' && png[3] == 'G');
    zs_queue_release(q, again);
    zs_queue_stats st;
    zs_queue_stats_get(q, &st);
    assert_int_equal(st.retained_jobs, 1);
    assert_true(st.retained_bytes >= 32 * 32 * 3);
    fake_sleep_ms(1500);
    assert_null(zs_queue_find(q, id));
    zs_queue_stats_get(q, &st);
    assert_int_equal(st.retained_jobs, 0);
    assert_int_equal((int)st.retained_bytes, 0);
    assert_null(zs_queue_find(q, "job_nonexistent"));
    done_queue(q, &eng);
}

static void test_progress_and_preview(void **state) {
    (void)state;
    zs_engine eng;
    fake_engine *f;
    zs_queue *q = mkqueue(16, 4, 60, &eng, &f, 50);
    zs_gen_req r = mkreq("p", 32, 32, 5, 1, 1);
    r.preview = 1;
    zs_job *j;
    assert_int_equal(zs_queue_submit(q, ZS_API_JOBS, &r, 1, &j, NULL), ZS_Q_OK);
    unsigned ver = 0, seen = 0;
    double last = -1;
    int previews = 0, steps_seen = 0, last_step = 0;
    for (;;) {
        zs_queue_wait(q, j, &ver, 1.0);
        zs_job_view v;
        zs_queue_view(q, j, seen, 1, &v);
        if (v.progress < last) fail_msg("progress went back: %f after %f", v.progress, last);
        last = v.progress;
        if (v.step < last_step && !zs_job_final(v.status)) fail_msg("step went back: %d after %d", v.step, last_step);
        if (v.step > last_step) steps_seen++;
        last_step = v.step;
        if (v.preview) {
            previews++;
            seen = v.preview_seq;
            assert_int_equal(v.preview_w, 8);
            free(v.preview);
        }
        if (zs_job_final(v.status)) {
            assert_int_equal(v.status, ZS_JOB_COMPLETED);
            assert_true(v.progress == 1.0);
            break;
        }
    }
    assert_true(previews >= 2);
    assert_true(steps_seen >= 2);
    zs_queue_release(q, j);
    done_queue(q, &eng);
}

static void test_close(void **state) {
    (void)state;
    zs_engine eng;
    fake_engine *f;
    zs_queue *q = mkqueue(16, 1, 60, &eng, &f, 1);
    fake_close_gate(f);
    zs_job *a = submit(q, "a", 32, 3, 1, 2);
    fake_wait_gate(f);
    zs_job *b = submit(q, "b", 32, 3, 9, 1);
    fake_open_gate(f);
    zs_queue_close(q);
    /* a was running: it finishes (both of its items); b never started */
    zs_job_view v;
    zs_queue_view(q, a, 0, 0, &v);
    assert_int_equal(v.status, ZS_JOB_COMPLETED);
    assert_int_equal(v.done, 2);
    zs_queue_view(q, b, 0, 0, &v);
    assert_int_equal(v.status, ZS_JOB_CANCELLED);
    assert_int_equal(v.cancel, ZS_CANCEL_SHUTDOWN);
    zs_gen_req r = mkreq("late", 32, 32, 1, 1, 1);
    zs_job *x = NULL;
    assert_int_equal(zs_queue_submit(q, ZS_API_JOBS, &r, 1, &x, NULL), ZS_Q_CLOSED);
    zs_gen_req_free(&r);
    zs_queue_release(q, a);
    zs_queue_release(q, b);
    done_queue(q, &eng);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batching),       cmocka_unit_test(test_split_large_job),
        cmocka_unit_test(test_random_seed),    cmocka_unit_test(test_full_and_cancel),
        cmocka_unit_test(test_failure_isolated), cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_progress_and_preview), cmocka_unit_test(test_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
