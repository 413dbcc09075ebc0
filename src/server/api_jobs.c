/* api_jobs.c - the asynchronous jobs API (used by the web page):
 *   POST /v1/jobs                 -> 202 {job}, Location: /v1/jobs/{id}
 *   GET  /v1/jobs/{id}[?b64=0]    -> {job} (result images as url + b64_json)
 *   POST /v1/jobs/{id}/cancel     -> {job}
 *   GET  /v1/jobs/{id}/events     -> SSE: "status", "progress" (with a
 *                                    preview data: URL when asked for), then
 *                                    one of "completed" / "failed" /
 *                                    "cancelled" carrying the final {job}
 *   GET  /v1/jobs/{id}/images/{i} -> the encoded image
 * Request body: prompt (required), negative_prompt, width/height or size,
 * steps, cfg_scale / guidance_scale, seed (-1 random), n, output_format,
 * quality, preview (bool).  Jobs are kept job_ttl seconds after finishing.
 *
 * {job} = {"id", "object": "job", "status", "created", "queue_position",
 *  "progress", "stage", "step", "steps", "n", "images_done", "seed",
 *  "seeds", "params", "error", "prompt_cache_hit", "timings", "result"}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/http.h"
#include "server/imgenc.h"

json_t *zs_job_json(zs_server *s, zs_job *j, int with_b64) {
    zs_job_view v;
    zs_queue_view(s->q, j, 0, 0, &v);
    const zs_gen_req *q = &j->req;
    json_t *seeds = json_array();
    for (int i = 0; i < j->n; i++) json_array_append_new(seeds, json_integer(j->seeds[i]));
    json_t *params = json_pack("{s:s, s:s, s:i, s:i, s:i, s:f, s:I, s:i, s:s}", "prompt", q->prompt,
                               "negative_prompt", q->negative_prompt, "width", q->width, "height", q->height, "steps",
                               q->steps, "cfg_scale", (double)q->cfg_scale, "seed", (json_int_t)j->seeds[0], "n", j->n,
                               "output_format", zs_format_name(q->format));
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "object", json_string("job"));
    json_object_set_new(o, "status", json_string(zs_job_status_name(v.status)));
    json_object_set_new(o, "created", json_integer(j->created));
    json_object_set_new(o, "queue_position", v.position >= 0 ? json_integer(v.position) : json_null());
    json_object_set_new(o, "progress", json_real(v.progress));
    json_object_set_new(o, "stage", json_string(v.stage ? v.stage : ""));
    json_object_set_new(o, "step", json_integer(v.step));
    json_object_set_new(o, "steps", json_integer(v.steps));
    json_object_set_new(o, "n", json_integer(j->n));
    json_object_set_new(o, "images_done", json_integer(v.done));
    json_object_set_new(o, "seed", json_integer(j->seeds[0]));
    json_object_set_new(o, "seeds", seeds);
    json_object_set_new(o, "params", params);
    json_object_set_new(o, "error", v.error[0] ? json_string(v.error) : json_null());
    json_object_set_new(o, "queued_s", json_real(v.queued_s));
    json_object_set_new(o, "run_s", json_real(v.run_s));
    if (zs_job_final(v.status)) {
        json_object_set_new(o, "prompt_cache_hit", json_boolean(v.prompt_cache_hit));
        json_object_set_new(o, "timings",
                            json_pack("{s:f, s:f, s:f, s:f, s:f}", "tokenize", v.timings.tokenize, "encode",
                                      v.timings.encode, "denoise", v.timings.denoise, "decode", v.timings.decode,
                                      "total", v.timings.total));
        json_t *imgs = json_array();
        for (int i = 0; i < j->n; i++) {
            if (!j->images[i]) continue; /* final: immutable */
            char url[128];
            snprintf(url, sizeof url, "/v1/jobs/%s/images/%d", j->id, i);
            json_t *it = json_pack("{s:i, s:I, s:s, s:s, s:s}", "index", i, "seed", (json_int_t)j->seeds[i], "url",
                                   url, "mime", zs_format_mime(q->format), "infotext", zs_job_infotext(s->q, j, i));
            if (with_b64) {
                char *b = zs_job_image_b64(s, j, i);
                if (b) json_object_set_new(it, "b64_json", json_string(b));
                free(b);
            }
            json_array_append_new(imgs, it);
        }
        json_object_set_new(o, "result", json_pack("{s:o}", "images", imgs));
    } else {
        json_object_set_new(o, "result", json_null());
    }
    return o;
}

enum MHD_Result zs_jobs_create(zs_req *r) {
    zs_gen_req req;
    zs_req_err err;
    if (zs_parse_job(r->body, r->len, &r->s->lim, &req, &err))
        return zs_reply_error(r, err.status, "invalid_request_error", err.field, "%s", err.msg);
    if (!zs_format_available(req.format)) {
        zs_reply_error(r, 422, "invalid_request_error", "output_format",
                       "output_format '%s' is not available in this server build", zs_format_name(req.format));
        zs_gen_req_free(&req);
        return MHD_YES;
    }
    zs_job *j;
    int rc = zs_queue_submit(r->s->q, ZS_API_JOBS, &req, 1, &j, NULL);
    if (rc != ZS_Q_OK) {
        zs_gen_req_free(&req);
        return zs_reply_submit_error(r, rc, 0);
    }
    json_t *body = zs_job_json(r->s, j, 0);
    char loc[80];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", j->id);
    zs_queue_release(r->s->q, j);
    char *txt = json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(body);
    if (!txt) return zs_reply_error(r, 500, "server_error", NULL, "out of memory");
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(txt);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Location", loc);
    if (r->s->cors) MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->s->cors);
    r->status = 202;
    enum MHD_Result ret = MHD_queue_response(r->conn, 202, resp);
    MHD_destroy_response(resp);
    return ret;
}

static zs_job *find_or_404(zs_req *r, enum MHD_Result *ret) {
    zs_job *j = zs_queue_find(r->s->q, r->p1);
    if (!j) *ret = zs_reply_error(r, 404, "not_found", "id", "no job '%s' (unknown or expired)", r->p1);
    return j;
}

enum MHD_Result zs_jobs_get(zs_req *r) {
    enum MHD_Result ret;
    zs_job *j = find_or_404(r, &ret);
    if (!j) return ret;
    const char *b = zs_query(r, "b64");
    int with_b64 = !(b && (!strcmp(b, "0") || !strcmp(b, "false")));
    ret = zs_reply_json(r, 200, zs_job_json(r->s, j, with_b64));
    zs_queue_release(r->s->q, j);
    return ret;
}

enum MHD_Result zs_jobs_cancel(zs_req *r) {
    enum MHD_Result ret;
    zs_job *j = find_or_404(r, &ret);
    if (!j) return ret;
    zs_queue_cancel(r->s->q, j, ZS_CANCEL_CLIENT);
    ret = zs_reply_json(r, 200, zs_job_json(r->s, j, 0));
    zs_queue_release(r->s->q, j);
    return ret;
}

enum MHD_Result zs_jobs_image(zs_req *r) {
    enum MHD_Result ret;
    zs_job *j = find_or_404(r, &ret);
    if (!j) return ret;
    char *end;
    long i = strtol(r->p2, &end, 10);
    size_t len = 0;
    const uint8_t *d = (*end || end == r->p2) ? NULL : zs_job_image(r->s->q, j, (int)i, &len);
    if (d) ret = zs_reply_bytes(r, 200, zs_format_mime(j->req.format), d, len, 1);
    else ret = zs_reply_error(r, 404, "not_found", "index", "no image %s in job %s (yet)", r->p2, j->id);
    zs_queue_release(r->s->q, j);
    return ret;
}

/* ---- events ------------------------------------------------------------------------------ */

typedef struct jstream {
    zs_job *job;
    unsigned version, preview_seq, id;
    int sent_status;
    int last_step;
    double last_progress;
} jstream;

static void j_produce(zs_sse *e) {
    jstream *st = e->user;
    zs_job *j = st->job;
    if (st->sent_status) zs_queue_wait(e->s->q, j, &st->version, 0.25);
    zs_job_view v;
    zs_queue_view(e->s->q, j, st->preview_seq, j->req.preview, &v);
    if (!st->sent_status) {
        st->sent_status = 1;
        st->version = v.version;
        zs_sse_event(e, "status", ++st->id,
                     json_pack("{s:s, s:s, s:o, s:i}", "id", j->id, "status", zs_job_status_name(v.status),
                               "queue_position", v.position >= 0 ? json_integer(v.position) : json_null(), "n", j->n));
    }
    if (!zs_job_final(v.status) && v.status == ZS_JOB_RUNNING &&
        (v.progress > st->last_progress || v.step != st->last_step || v.preview)) {
        json_t *ev = json_pack("{s:s, s:s, s:f, s:s, s:i, s:i, s:i, s:i}", "id", j->id, "status", "running",
                               "progress", v.progress, "stage", v.stage ? v.stage : "", "step", v.step, "steps",
                               v.steps, "images_done", v.done, "n", j->n);
        if (v.preview) {
            char *url = zs_preview_data_url(v.preview, v.preview_w, v.preview_h);
            if (url) json_object_set_new(ev, "preview", json_string(url));
            free(url);
            st->preview_seq = v.preview_seq;
        }
        zs_sse_event(e, "progress", ++st->id, ev);
        st->last_progress = v.progress;
        st->last_step = v.step;
    } else if (v.status == ZS_JOB_QUEUED) {
        /* queue position changes */
    }
    free(v.preview);
    if (zs_job_final(v.status)) {
        zs_sse_event(e, zs_job_status_name(v.status), ++st->id, zs_job_json(e->s, j, 1));
        e->done = 1;
    }
}

static void j_close(zs_sse *e) {
    jstream *st = e->user;
    zs_queue_release(e->s->q, st->job); /* watching is not owning: no cancel */
    free(st);
}

enum MHD_Result zs_jobs_events(zs_req *r) {
    enum MHD_Result ret;
    zs_job *j = find_or_404(r, &ret);
    if (!j) return ret;
    zs_sse *e = calloc(1, sizeof *e);
    jstream *st = calloc(1, sizeof *st);
    if (!e || !st) {
        free(e);
        free(st);
        zs_queue_release(r->s->q, j);
        return zs_reply_error(r, 500, "server_error", NULL, "out of memory");
    }
    st->job = j;
    st->last_step = -1;
    st->last_progress = -1;
    e->user = st;
    e->produce = j_produce;
    e->on_close = j_close;
    return zs_reply_sse(r, e);
}
