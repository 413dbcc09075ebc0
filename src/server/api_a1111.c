/* api_a1111.c - the AUTOMATIC1111 / Forge web UI API subset that clients
 * of those UIs use: POST /sdapi/v1/txt2img, GET /sdapi/v1/progress,
 * POST /sdapi/v1/interrupt (and /skip), GET /sdapi/v1/sd-models,
 * GET/POST /sdapi/v1/options, GET /sdapi/v1/samplers.
 *
 * txt2img answers {"images": [b64 PNG with the "parameters" text],
 * "parameters": the request with defaults filled, "info": a JSON *string*
 * with prompt, all_prompts, seed, all_seeds, infotexts, ...}.  Image i of
 * batch_size * n_iter uses seed + i, as A1111 does.  Validation errors are
 * 422 in FastAPI's {"detail": [{"loc", "msg", "type"}]} shape; an interrupt
 * returns the images finished so far.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/http.h"
#include "server/imgenc.h"

static json_t *info_json(zs_server *s, zs_job *j) {
    const zs_gen_req *q = &j->req;
    json_t *all_prompts = json_array(), *all_neg = json_array(), *all_seeds = json_array(), *all_sub = json_array(),
           *infotexts = json_array();
    for (int i = 0; i < j->n; i++) {
        if (!j->images[i]) continue;
        json_array_append_new(all_prompts, json_string(q->prompt));
        json_array_append_new(all_neg, json_string(q->negative_prompt));
        json_array_append_new(all_seeds, json_integer(j->seeds[i]));
        json_array_append_new(all_sub, json_integer(j->seeds[i]));
        json_array_append_new(infotexts, json_string(zs_job_infotext(s->q, j, i)));
    }
    char ts[32];
    time_t t = (time_t)j->created;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y%m%d%H%M%S", &tm);
    json_t *o = json_object();
    json_object_set_new(o, "prompt", json_string(q->prompt));
    json_object_set_new(o, "all_prompts", all_prompts);
    json_object_set_new(o, "negative_prompt", json_string(q->negative_prompt));
    json_object_set_new(o, "all_negative_prompts", all_neg);
    json_object_set_new(o, "seed", json_integer(j->seeds[0]));
    json_object_set_new(o, "all_seeds", all_seeds);
    json_object_set_new(o, "subseed", json_integer(j->seeds[0]));
    json_object_set_new(o, "all_subseeds", all_sub);
    json_object_set_new(o, "subseed_strength", json_integer(0));
    json_object_set_new(o, "width", json_integer(q->width));
    json_object_set_new(o, "height", json_integer(q->height));
    json_object_set_new(o, "sampler_name", json_string("Euler"));
    json_object_set_new(o, "cfg_scale", json_real(q->cfg_scale));
    json_object_set_new(o, "steps", json_integer(q->steps));
    json_object_set_new(o, "batch_size", json_integer(q->batch_size));
    json_object_set_new(o, "restore_faces", json_false());
    json_object_set_new(o, "face_restoration_model", json_null());
    json_object_set_new(o, "sd_model_name", json_string(s->model_name));
    json_object_set_new(o, "sd_model_hash", json_null());
    json_object_set_new(o, "sd_vae_name", json_null());
    json_object_set_new(o, "sd_vae_hash", json_null());
    json_object_set_new(o, "seed_resize_from_w", json_integer(-1));
    json_object_set_new(o, "seed_resize_from_h", json_integer(-1));
    json_object_set_new(o, "denoising_strength", json_null());
    json_object_set_new(o, "extra_generation_params", json_object());
    json_object_set_new(o, "index_of_first_image", json_integer(0));
    json_object_set_new(o, "infotexts", infotexts);
    json_object_set_new(o, "styles", json_array());
    json_object_set_new(o, "job_timestamp", json_string(ts));
    json_object_set_new(o, "clip_skip", json_integer(1));
    json_object_set_new(o, "is_using_inpainting_conditioning", json_false());
    json_object_set_new(o, "version", json_string("zimage-" ZIMAGE_VERSION));
    return o;
}

enum MHD_Result zs_a1111_txt2img(zs_req *r) {
    zs_server *s = r->s;
    zs_gen_req req;
    zs_req_err err;
    if (zs_parse_a1111(r->body, r->len, &s->lim, &req, &err)) return zs_reply_a1111_error(r, err.status, err.field, err.msg);
    pthread_mutex_lock(&s->mu);
    zs_a1111_opts opts = s->a1111;
    pthread_mutex_unlock(&s->mu);
    if (req.format == ZS_FMT_PNG) req.format = opts.samples_format;
    if (!zs_format_available(req.format)) req.format = ZS_FMT_PNG; /* A1111 falls back too */
    req.preview = opts.live_previews_enable;
    zs_job *j;
    int rc = zs_queue_submit(s->q, ZS_API_A1111, &req, 0, &j, NULL);
    if (rc != ZS_Q_OK) {
        zs_gen_req_free(&req);
        return zs_reply_submit_error(r, rc, 1);
    }
    if (zs_wait_final(r, j)) {
        zs_queue_drop(s->q, j);
        zs_queue_release(s->q, j);
        return MHD_NO;
    }
    zs_job_view v;
    zs_queue_view(s->q, j, 0, 0, &v);
    enum MHD_Result ret;
    if (v.status == ZS_JOB_COMPLETED || (v.status == ZS_JOB_CANCELLED && v.cancel == ZS_CANCEL_INTERRUPT)) {
        json_t *images = json_array();
        int ok = 1;
        if (j->req.send_images)
            for (int i = 0; i < j->n && ok; i++) {
                if (!j->images[i]) continue;
                char *b = zs_job_image_b64(s, j, i);
                if (!b) ok = 0;
                else json_array_append_new(images, json_string(b));
                free(b);
            }
        json_t *info = info_json(s, j);
        char *info_s = json_dumps(info, JSON_COMPACT);
        json_decref(info);
        if (ok && info_s) {
            ret = zs_reply_json(r, 200,
                                json_pack("{s:o, s:O, s:s}", "images", images, "parameters", j->req.echo, "info", info_s));
        } else {
            json_decref(images);
            ret = zs_reply_error(r, 500, "server_error", NULL, "could not encode the images");
        }
        free(info_s);
    } else if (v.status == ZS_JOB_FAILED) {
        ret = zs_reply_json(r, 500,
                            json_pack("{s:s, s:s, s:s, s:s}", "error", "RuntimeError", "detail", "", "body", "",
                                      "errors", v.error));
    } else {
        ret = zs_reply_submit_error(r, ZS_Q_CLOSED, 1);
    }
    zs_queue_drop(s->q, j);
    zs_queue_release(s->q, j);
    return ret;
}

enum MHD_Result zs_a1111_progress(zs_req *r) {
    zs_server *s = r->s;
    const char *skip = zs_query(r, "skip_current_image");
    int skip_img = skip && (!strcmp(skip, "true") || !strcmp(skip, "1") || !strcmp(skip, "True"));
    pthread_mutex_lock(&s->mu);
    int live = s->a1111.live_previews_enable;
    pthread_mutex_unlock(&s->mu);
    zs_queue_stats st;
    zs_queue_stats_get(s->q, &st);
    zs_job *j = zs_queue_current(s->q);
    double progress = 0, eta = 0;
    int step = 0, steps = 0, job_no = 0;
    char job_id[32] = "", ts[32] = "0";
    json_t *current = json_null();
    if (j) {
        zs_job_view v;
        zs_queue_view(s->q, j, 0, live && !skip_img, &v);
        progress = v.progress;
        if (progress > 0.01) eta = v.run_s / progress - v.run_s;
        step = v.step;
        steps = v.steps;
        job_no = v.done;
        snprintf(job_id, sizeof job_id, "%s", j->id);
        time_t t = (time_t)j->created;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%Y%m%d%H%M%S", &tm);
        if (v.preview) {
            char *url = zs_preview_data_url(v.preview, v.preview_w, v.preview_h);
            if (url) {
                json_decref(current);
                current = json_string(url + 22);
                free(url);
            }
            free(v.preview);
        }
        zs_queue_release(s->q, j);
    }
    json_t *state = json_pack("{s:b, s:b, s:b, s:s, s:i, s:s, s:i, s:i, s:i}", "skipped", 0, "interrupted", 0,
                              "stopping_generation", 0, "job", job_id, "job_count", st.waiting_jobs + st.running_jobs,
                              "job_timestamp", ts, "job_no", job_no, "sampling_step", step, "sampling_steps", steps);
    return zs_reply_json(r, 200,
                         json_pack("{s:f, s:f, s:o, s:o, s:n}", "progress", progress, "eta_relative", eta, "state",
                                   state, "current_image", current, "textinfo"));
}

enum MHD_Result zs_a1111_interrupt(zs_req *r) {
    zs_queue_interrupt(r->s->q);
    return zs_reply_json(r, 200, json_object());
}

enum MHD_Result zs_a1111_sd_models(zs_req *r) {
    zs_server *s = r->s;
    return zs_reply_json(r, 200,
                         json_pack("[{s:s, s:s, s:n, s:n, s:s, s:n}]", "title", s->model_title, "model_name",
                                   s->model_name, "hash", "sha256", "filename", s->model_path, "config"));
}

static json_t *options_json(zs_server *s) {
    pthread_mutex_lock(&s->mu);
    zs_a1111_opts o = s->a1111;
    pthread_mutex_unlock(&s->mu);
    return json_pack("{s:s, s:n, s:b, s:i, s:s, s:s, s:i, s:i, s:s, s:s}", "sd_model_checkpoint", s->model_title,
                     "sd_checkpoint_hash", "live_previews_enable", o.live_previews_enable,
                     "show_progress_every_n_steps", o.show_progress_every_n_steps, "samples_format",
                     o.samples_format == ZS_FMT_JPEG ? "jpg" : zs_format_name(o.samples_format),
                     "live_previews_image_format", "png", "CLIP_stop_at_last_layers", 1, "eta_noise_seed_delta", 0,
                     "sd_vae", "Automatic", "sd_model_name", s->model_name);
}

enum MHD_Result zs_a1111_options_get(zs_req *r) { return zs_reply_json(r, 200, options_json(r->s)); }

enum MHD_Result zs_a1111_options_post(zs_req *r) {
    zs_server *s = r->s;
    zs_req_err err;
    pthread_mutex_lock(&s->mu);
    zs_a1111_opts o = s->a1111;
    pthread_mutex_unlock(&s->mu);
    if (zs_parse_a1111_options(r->body, r->len, s->model_title, &o, &err))
        return zs_reply_a1111_error(r, err.status, err.field, err.msg);
    if (!zs_format_available(o.samples_format))
        return zs_reply_a1111_error(r, 422, "samples_format", "this format is not available in this server build");
    pthread_mutex_lock(&s->mu);
    s->a1111 = o;
    pthread_mutex_unlock(&s->mu);
    return zs_reply_json(r, 200, json_null());
}

enum MHD_Result zs_a1111_samplers(zs_req *r) {
    return zs_reply_json(r, 200,
                         json_pack("[{s:s, s:[s,s], s:{}}]", "name", "Euler", "aliases", "k_euler", "euler", "options"));
}
