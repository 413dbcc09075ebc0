/* api_openai.c - OpenAI images API: POST /v1/images/generations (blocking,
 * or SSE with stream: true) and GET /v1/models[/{id}].
 *
 * Request: prompt, n, size "WxH", response_format b64_json|url,
 * output_format png|jpeg|webp, output_compression, stream, partial_images,
 * plus the extras negative_prompt, seed, steps / num_inference_steps,
 * guidance_scale (diffusers meaning) / cfg_scale (A1111 meaning).
 * Response: {"created", "data": [{"b64_json"|"url", "revised_prompt",
 * "seed"}], "output_format", "size", "quality", "background", "usage"}.
 * Errors: 400 {"error": {"message", "type", "param", "code"}} for any bad
 * request, as OpenAI answers.
 * Stream: events image_generation.partial_image (a preview of the current
 * x0 estimate, b64 PNG, partial_image_index), then one
 * image_generation.completed per image; "error" on failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/http.h"
#include "server/imgenc.h"

static json_t *usage_json(const zs_job *j) {
    (void)j;
    return json_pack("{s:i, s:i, s:i, s:{s:i, s:i}}", "total_tokens", 0, "input_tokens", 0, "output_tokens", 0,
                     "input_tokens_details", "text_tokens", 0, "image_tokens", 0);
}

static json_t *result_json(zs_req *r, zs_job *j) {
    json_t *data = json_array();
    char base[320];
    zs_base_url(r, base, sizeof base);
    for (int i = 0; i < j->n; i++) {
        if (!j->images[i]) continue;
        json_t *it = json_object();
        if (j->req.response_url) {
            char url[512];
            snprintf(url, sizeof url, "%s/v1/jobs/%s/images/%d", base, j->id, i);
            json_object_set_new(it, "url", json_string(url));
        } else {
            char *b = zs_job_image_b64(r->s, j, i);
            if (!b) {
                json_decref(it);
                json_decref(data);
                return NULL;
            }
            json_object_set_new(it, "b64_json", json_string(b));
            free(b);
        }
        json_object_set_new(it, "revised_prompt", json_string(j->req.prompt));
        json_object_set_new(it, "seed", json_integer(j->seeds[i]));
        json_array_append_new(data, it);
    }
    return json_pack("{s:I, s:o, s:s, s:s, s:s, s:s, s:o}", "created", (json_int_t)j->created, "data", data, "output_format",
                     zs_format_name(j->req.format), "size", j->req.size_str ? j->req.size_str : "", "quality", "auto",
                     "background", "opaque", "usage", usage_json(j));
}

/* ---- streaming --------------------------------------------------------------------- */

typedef struct ostream {
    zs_job *job;
    unsigned version, preview_seq;
    int partials_sent;
} ostream;

static json_t *event_base(const char *type, const zs_job *j) {
    return json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "type", type, "created_at", (json_int_t)j->created, "size",
                     j->req.size_str ? j->req.size_str : "", "quality", "auto", "background", "opaque",
                     "output_format", zs_format_name(j->req.format));
}

static void o_produce(zs_sse *e) {
    ostream *st = e->user;
    zs_job *j = st->job;
    zs_queue_wait(e->s->q, j, &st->version, 0.25);
    zs_job_view v;
    zs_queue_view(e->s->q, j, st->preview_seq, 1, &v);
    if (v.preview && !zs_job_final(v.status)) {
        int want = j->req.partial_images; /* -1: every preview */
        int send = want < 0 || (st->partials_sent < want && v.steps > 0 &&
                                v.step * (want + 1) >= (st->partials_sent + 1) * v.steps);
        if (send) {
            char *url = zs_preview_data_url(v.preview, v.preview_w, v.preview_h);
            if (url) {
                json_t *ev = event_base("image_generation.partial_image", j);
                json_object_set_new(ev, "b64_json", json_string(url + 22)); /* strip "data:image/png;base64," */
                json_object_set_new(ev, "partial_image_index", json_integer(st->partials_sent));
                json_object_set_new(ev, "step", json_integer(v.step));
                json_object_set_new(ev, "steps", json_integer(v.steps));
                zs_sse_event(e, "image_generation.partial_image", 0, ev);
                st->partials_sent++;
                free(url);
            }
        }
        st->preview_seq = v.preview_seq;
    }
    free(v.preview);
    if (!zs_job_final(v.status)) return;
    if (v.status == ZS_JOB_COMPLETED) {
        for (int i = 0; i < j->n; i++) {
            char *b = zs_job_image_b64(e->s, j, i);
            if (!b) continue;
            json_t *ev = event_base("image_generation.completed", j);
            json_object_set_new(ev, "b64_json", json_string(b));
            json_object_set_new(ev, "seed", json_integer(j->seeds[i]));
            json_object_set_new(ev, "index", json_integer(i));
            json_object_set_new(ev, "usage", usage_json(j));
            zs_sse_event(e, "image_generation.completed", 0, ev);
            free(b);
        }
    } else {
        const char *type = v.status == ZS_JOB_FAILED ? "server_error" : "cancelled";
        zs_sse_event(e, "error", 0,
                     json_pack("{s:s, s:{s:s, s:s, s:n, s:n}}", "type", "error", "error", "message",
                               v.error[0] ? v.error : "generation failed", "type", type, "param", "code"));
    }
    e->done = 1;
}

static void o_close(zs_sse *e) {
    ostream *st = e->user;
    zs_queue_drop(e->s->q, st->job); /* cancels it if the client went away early */
    zs_queue_release(e->s->q, st->job);
    free(st);
}

/* ---- handlers ------------------------------------------------------------------------- */

enum MHD_Result zs_openai_generations(zs_req *r) {
    zs_gen_req req;
    zs_req_err err;
    if (zs_parse_openai(r->body, r->len, &r->s->lim, &req, &err))
        return zs_reply_error(r, err.status == 500 ? 500 : 400, "invalid_request_error", err.field, "%s", err.msg);
    if (!zs_format_available(req.format)) {
        zs_reply_error(r, 400, "invalid_request_error", "output_format",
                       "output_format '%s' is not available in this server build", zs_format_name(req.format));
        zs_gen_req_free(&req);
        return MHD_YES;
    }
    zs_job *j;
    int rc = zs_queue_submit(r->s->q, ZS_API_OPENAI, &req, req.response_url, &j, NULL);
    if (rc != ZS_Q_OK) {
        zs_gen_req_free(&req);
        return zs_reply_submit_error(r, rc, 0);
    }
    if (j->req.stream) {
        zs_sse *e = calloc(1, sizeof *e);
        ostream *st = calloc(1, sizeof *st);
        if (!e || !st) {
            free(e);
            free(st);
            zs_queue_drop(r->s->q, j);
            zs_queue_release(r->s->q, j);
            return zs_reply_error(r, 500, "server_error", NULL, "out of memory");
        }
        st->job = j;
        e->user = st;
        e->produce = o_produce;
        e->on_close = o_close;
        return zs_reply_sse(r, e);
    }
    if (zs_wait_final(r, j)) { /* client went away: its job is cancelled */
        zs_queue_drop(r->s->q, j);
        zs_queue_release(r->s->q, j);
        return MHD_NO;
    }
    zs_job_view v;
    zs_queue_view(r->s->q, j, 0, 0, &v);
    enum MHD_Result ret;
    if (v.status == ZS_JOB_COMPLETED || (v.status == ZS_JOB_CANCELLED && v.done > 0 && v.cancel == ZS_CANCEL_INTERRUPT)) {
        json_t *body = result_json(r, j);
        ret = body ? zs_reply_json(r, 200, body)
                   : zs_reply_error(r, 500, "server_error", NULL, "could not encode the image");
    } else if (v.status == ZS_JOB_FAILED) {
        ret = zs_reply_error(r, 500, "server_error", NULL, "generation failed: %s", v.error);
    } else if (v.cancel == ZS_CANCEL_SHUTDOWN) {
        ret = zs_reply_submit_error(r, ZS_Q_CLOSED, 0);
    } else {
        ret = zs_reply_error(r, 409, "cancelled", NULL, "the generation was %s", v.error[0] ? v.error : "cancelled");
    }
    zs_queue_drop(r->s->q, j);
    zs_queue_release(r->s->q, j);
    return ret;
}

static json_t *model_json(zs_server *s) {
    return json_pack("{s:s, s:s, s:I, s:s}", "id", s->model_name, "object", "model", "created",
                     (json_int_t)0, "owned_by", "zimage");
}

enum MHD_Result zs_openai_models(zs_req *r) {
    return zs_reply_json(r, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_json(r->s)));
}

enum MHD_Result zs_openai_model(zs_req *r) {
    if (strcmp(r->p1, r->s->model_name) != 0)
        return zs_reply_error(r, 404, "invalid_request_error", "model", "The model '%s' does not exist", r->p1);
    return zs_reply_json(r, 200, model_json(r->s));
}
