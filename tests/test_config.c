/* test_config.c - component configs (the real Z-Image-Turbo JSONs of spec
 * 1.2, both transformers config forms, bad values: every message must name
 * the file and the key) and model-folder resolution (modeldir.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/modeldir.h"
#include "models/config.h"
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

static void expect_msg(const zerr *e, const char *a, const char *b, const char *c) {
    const char *n[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (n[i] && !strstr(e->msg, n[i])) {
            fprintf(stderr, "message: %s\nmissing: '%s'\n", e->msg, n[i]);
            fail();
        }
}

static void ok(int rc, const zerr *e) {
    if (rc) fprintf(stderr, "unexpected error: %s\n", e->msg);
    assert_int_equal(rc, ZE_OK);
}

/* Real configs of Tongyi-MAI/Z-Image-Turbo (spec 1.2). */
static const char *DIT_JSON =
    "{\n  \"_class_name\": \"ZImageTransformer2DModel\",\n  \"_diffusers_version\": \"0.36.0.dev0\",\n"
    "  \"all_f_patch_size\": [1],\n  \"all_patch_size\": [2],\n  \"axes_dims\": [32, 48, 48],\n"
    "  \"axes_lens\": [1536, 512, 512],\n  \"cap_feat_dim\": 2560,\n  \"dim\": 3840,\n  \"in_channels\": 16,\n"
    "  \"n_heads\": 30,\n  \"n_kv_heads\": 30,\n  \"n_layers\": 30,\n  \"n_refiner_layers\": 2,\n"
    "  \"norm_eps\": 1e-05,\n  \"qk_norm\": true,\n  \"rope_theta\": 256.0,\n  \"t_scale\": 1000.0\n}\n";

static const char *TE_JSON_4 =
    "{\n  \"architectures\": [\"Qwen3ForCausalLM\"],\n  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 151643,\n  \"eos_token_id\": 151645,\n  \"head_dim\": 128,\n  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 2560,\n  \"initializer_range\": 0.02,\n  \"intermediate_size\": 9728,\n"
    "  \"max_position_embeddings\": 40960,\n  \"max_window_layers\": 36,\n  \"model_type\": \"qwen3\",\n"
    "  \"num_attention_heads\": 32,\n  \"num_hidden_layers\": 36,\n  \"num_key_value_heads\": 8,\n"
    "  \"rms_norm_eps\": 1e-06,\n  \"rope_scaling\": null,\n  \"rope_theta\": 1000000,\n  \"sliding_window\": null,\n"
    "  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"bfloat16\",\n  \"transformers_version\": \"4.51.0\",\n"
    "  \"use_cache\": true,\n  \"use_sliding_window\": false,\n  \"vocab_size\": 151936\n}\n";

/* transformers 5.x writes rope_parameters (theta changed to see it is read). */
static const char *TE_JSON_5 =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"attention_bias\": false, \"dtype\": \"bfloat16\","
    "\"head_dim\": 128, \"hidden_act\": \"silu\", \"hidden_size\": 2560, \"intermediate_size\": 9728,"
    "\"layer_types\": [\"full_attention\", \"full_attention\"], \"max_position_embeddings\": 40960,"
    "\"model_type\": \"qwen3\", \"num_attention_heads\": 32, \"num_hidden_layers\": 36, \"num_key_value_heads\": 8,"
    "\"rms_norm_eps\": 1e-06, \"rope_parameters\": {\"rope_theta\": 500000, \"rope_type\": \"default\"},"
    "\"sliding_window\": null, \"transformers_version\": \"5.17.0\", \"use_sliding_window\": false,"
    "\"vocab_size\": 151936}";

static const char *VAE_JSON =
    "{\n  \"_class_name\": \"AutoencoderKL\",\n  \"_diffusers_version\": \"0.36.0.dev0\",\n  \"act_fn\": \"silu\",\n"
    "  \"block_out_channels\": [128, 256, 512, 512],\n  \"down_block_types\": [\"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],\n  \"force_upcast\": true,\n"
    "  \"in_channels\": 3,\n  \"latent_channels\": 16,\n  \"latents_mean\": null,\n  \"latents_std\": null,\n"
    "  \"layers_per_block\": 2,\n  \"mid_block_add_attention\": true,\n  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 3,\n  \"sample_size\": 1024,\n  \"scaling_factor\": 0.3611,\n  \"shift_factor\": 0.1159,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"],\n"
    "  \"use_post_quant_conv\": false,\n  \"use_quant_conv\": false\n}\n";

static const char *SCHED_JSON =
    "{\n  \"_class_name\": \"FlowMatchEulerDiscreteScheduler\",\n  \"_diffusers_version\": \"0.36.0.dev0\",\n"
    "  \"num_train_timesteps\": 1000,\n  \"use_dynamic_shifting\": false,\n  \"shift\": 3.0\n}\n";

static const char *INDEX_JSON =
    "{\"_class_name\": \"ZImagePipeline\", \"_diffusers_version\": \"0.36.0.dev0\","
    "\"scheduler\": [\"diffusers\", \"FlowMatchEulerDiscreteScheduler\"], \"text_encoder\": [\"transformers\", "
    "\"Qwen3Model\"], \"tokenizer\": [\"transformers\", \"Qwen2Tokenizer\"], \"transformer\": [\"diffusers\", "
    "\"ZImageTransformer2DModel\"], \"vae\": [\"diffusers\", \"AutoencoderKL\"]}";

/* Write text to dir/name and return the path. */
static const char *put(const char *name, const char *text) {
    const char *p = st_path(dir, name);
    st_write_text(p, text);
    return p;
}

/* Replace the first occurrence of `from` in `src` with `to` (static buffer). */
static const char *edit(const char *src, const char *from, const char *to) {
    static char buf[8192];
    const char *at = strstr(src, from);
    assert_non_null(at);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - src), src, to, at + strlen(from));
    return buf;
}

/* ---- real values ---- */

static void test_real_configs(void **state) {
    (void)state;
    zerr e = {0};
    dit_config d;
    ok(dit_config_load(&d, put("dit.json", DIT_JSON), &e), &e);
    assert_int_equal(d.patch_size, 2);
    assert_int_equal(d.f_patch_size, 1);
    assert_int_equal(d.in_channels, 16);
    assert_int_equal(d.dim, 3840);
    assert_int_equal(d.n_layers, 30);
    assert_int_equal(d.n_refiner_layers, 2);
    assert_int_equal(d.n_heads, 30);
    assert_int_equal(d.n_kv_heads, 30);
    assert_true(d.norm_eps == 1e-5f);
    assert_int_equal(d.qk_norm, 1);
    assert_int_equal(d.cap_feat_dim, 2560);
    assert_int_equal(d.axes_dims[0], 32);
    assert_int_equal(d.axes_dims[2], 48);
    assert_int_equal(d.axes_lens[0], 1536);
    assert_int_equal(d.axes_lens[1], 512);
    assert_true(d.rope_theta == 256.0);
    assert_true(d.t_scale == 1000.0f);
    assert_int_equal(d.head_dim, 128);
    assert_int_equal(d.ffn_dim, 10240);
    assert_int_equal(d.adaln_dim, 256);

    qwen3_config q;
    ok(qwen3_config_load(&q, put("te4.json", TE_JSON_4), &e), &e);
    assert_int_equal(q.hidden_size, 2560);
    assert_int_equal(q.intermediate_size, 9728);
    assert_int_equal(q.num_hidden_layers, 36);
    assert_int_equal(q.num_attention_heads, 32);
    assert_int_equal(q.num_key_value_heads, 8);
    assert_int_equal(q.head_dim, 128);
    assert_int_equal(q.vocab_size, 151936);
    assert_int_equal(q.max_position_embeddings, 40960);
    assert_true(q.rms_norm_eps == 1e-6f);
    assert_true(q.rope_theta == 1e6);
    ok(qwen3_config_load(&q, put("te5.json", TE_JSON_5), &e), &e);
    assert_true(q.rope_theta == 5e5);
    assert_int_equal(q.num_key_value_heads, 8);

    vae_config v;
    ok(vae_config_load(&v, put("vae.json", VAE_JSON), &e), &e);
    assert_int_equal(v.n_blocks, 4);
    assert_int_equal(v.block_out_channels[0], 128);
    assert_int_equal(v.block_out_channels[1], 256);
    assert_int_equal(v.block_out_channels[3], 512);
    assert_int_equal(v.layers_per_block, 2);
    assert_int_equal(v.latent_channels, 16);
    assert_int_equal(v.norm_num_groups, 32);
    assert_int_equal(v.mid_block_add_attention, 1);
    assert_true(v.scaling_factor == 0.3611f);
    assert_true(v.shift_factor == 0.1159f);
    assert_int_equal(v.use_quant_conv, 0);

    sched_config s;
    ok(sched_config_load(&s, put("sched.json", SCHED_JSON), &e), &e);
    assert_int_equal(s.num_train_timesteps, 1000);
    assert_true(s.shift == 3.0f);
    assert_int_equal(s.use_dynamic_shifting, 0);

    /* defaults == the real values */
    dit_config dd;
    qwen3_config qd;
    vae_config vd;
    dit_config_default(&dd);
    qwen3_config_default(&qd);
    vae_config_default(&vd);
    ok(dit_config_finish(&dd, &e), &e);
    ok(qwen3_config_check(&qd, &e), &e);
    ok(vae_config_check(&vd, &e), &e);
    assert_int_equal(dd.ffn_dim, d.ffn_dim);
    assert_int_equal(qd.vocab_size, q.vocab_size);
    assert_true(vd.scaling_factor == v.scaling_factor);
    /* an empty object keeps every default */
    ok(dit_config_load(&d, put("empty.json", "{}"), &e), &e);
    assert_int_equal(d.dim, 3840);
    assert_int_equal(d.axes_lens[0], 1536);
}

static void test_dit_derived(void **state) {
    (void)state;
    zerr e = {0};
    dit_config d;
    /* Python: int(100 / 3 * 8) = int(266.666...) = 266; min(100, 256) = 100 */
    ok(dit_config_load(&d, put("small.json", "{\"dim\": 100, \"n_heads\": 2, \"n_kv_heads\": 1, "
                                             "\"axes_dims\": [16, 16, 18], \"all_patch_size\": 2}"),
                       &e),
       &e);
    assert_int_equal(d.head_dim, 50);
    assert_int_equal(d.ffn_dim, 266);
    assert_int_equal(d.adaln_dim, 100);
    assert_int_equal(d.n_kv_heads, 2); /* diffusers ignores n_kv_heads: K/V have n_heads heads */
    /* diffusers' pipeline test config (spec 10): dim 32, 2 heads, axes [8, 4, 4] -> ffn int(85.33) = 85 */
    ok(dit_config_load(&d, put("tiny.json", "{\"dim\": 32, \"n_layers\": 2, \"n_refiner_layers\": 1, "
                                            "\"n_heads\": 2, \"n_kv_heads\": 2, \"cap_feat_dim\": 16, "
                                            "\"axes_dims\": [8, 4, 4], \"axes_lens\": [256, 32, 32]}"),
                       &e),
       &e);
    assert_int_equal(d.head_dim, 16);
    assert_int_equal(d.ffn_dim, 85);
    assert_int_equal(d.adaln_dim, 32);
    /* its transformer test config: n_heads 1, n_kv_heads 2 (not a divisor) loads */
    ok(dit_config_load(&d, put("tiny2.json", "{\"dim\": 16, \"n_layers\": 1, \"n_refiner_layers\": 1, "
                                             "\"n_heads\": 1, \"n_kv_heads\": 2, \"cap_feat_dim\": 16, "
                                             "\"axes_dims\": [8, 4, 4], \"axes_lens\": [256, 32, 32]}"),
                       &e),
       &e);
    assert_int_equal(d.n_kv_heads, 1);
    assert_int_equal(d.ffn_dim, 42);
}

/* ---- bad values ---- */

static void expect_fail_dit(const char *json, int code, const char *a, const char *b) {
    zerr e = {0};
    dit_config d;
    const char *p = put("bad_dit.json", json);
    int rc = dit_config_load(&d, p, &e);
    if (rc != code) fprintf(stderr, "rc %d want %d: %s\n", rc, code, e.msg);
    assert_int_equal(rc, code);
    expect_msg(&e, p, a, b);
}

static void test_bad_dit(void **state) {
    (void)state;
    expect_fail_dit(edit(DIT_JSON, "\"dim\": 3840", "\"dim\": \"big\""), ZE_FORMAT, "key 'dim' must be an integer",
                    "found a string");
    expect_fail_dit(edit(DIT_JSON, "\"all_patch_size\": [2]", "\"all_patch_size\": [2, 4]"), ZE_UNSUPPORTED,
                    "'all_patch_size' lists 2 patch sizes", "single-resolution");
    expect_fail_dit(edit(DIT_JSON, "\"all_f_patch_size\": [1]", "\"all_f_patch_size\": [1, 1]"), ZE_UNSUPPORTED,
                    "'all_f_patch_size'", NULL);
    expect_fail_dit(edit(DIT_JSON, "\"all_patch_size\": [2]", "\"all_patch_size\": []"), ZE_FORMAT,
                    "'all_patch_size' must list 1 values", NULL);
    expect_fail_dit(edit(DIT_JSON, "[32, 48, 48]", "[32, 48, 40]"), ZE_MODEL, "sum(axes_dims) = 120",
                    "head_dim = dim / n_heads = 128");
    expect_fail_dit(edit(DIT_JSON, "[32, 48, 48]", "[32, 48]"), ZE_FORMAT, "'axes_dims' must list 3 values",
                    "found 2");
    expect_fail_dit(edit(DIT_JSON, "\"n_heads\": 30", "\"n_heads\": 7"), ZE_MODEL,
                    "dim 3840 is not a multiple of n_heads 7", NULL);
    expect_fail_dit(edit(DIT_JSON, "\"n_layers\": 30", "\"n_layers\": -1"), ZE_FORMAT, "'n_layers' = -1 is out of range",
                    NULL);
    expect_fail_dit(edit(DIT_JSON, "\"qk_norm\": true", "\"qk_norm\": 1"), ZE_FORMAT, "'qk_norm' must be true or false",
                    NULL);
    expect_fail_dit(edit(DIT_JSON, "\"norm_eps\": 1e-05", "\"norm_eps\": 0"), ZE_FORMAT, "'norm_eps' = 0", NULL);
    expect_fail_dit(edit(DIT_JSON, "\"dim\": 3840,", "\"dim\": 3840, \"siglip_feat_dim\": 1152,"), ZE_UNSUPPORTED,
                    "'siglip_feat_dim'", NULL);
    expect_fail_dit(edit(DIT_JSON, "\"_class_name\": \"ZImageTransformer2DModel\"", "\"_class_name\": \"FluxTransformer2DModel\""),
                    ZE_UNSUPPORTED, "'_class_name' = \"FluxTransformer2DModel\"", NULL);
    expect_fail_dit(edit(DIT_JSON, "\"t_scale\": 1000.0\n}", "\"t_scale\": 1000.0,\n}"), ZE_FORMAT, "malformed JSON",
                    "line");
    expect_fail_dit("[1, 2]", ZE_FORMAT, "expected a JSON object", NULL);
    zerr e = {0};
    dit_config d;
    const char *p = st_path(dir, "nope.json");
    assert_int_equal(dit_config_load(&d, p, &e), ZE_IO);
    expect_msg(&e, p, "No such file", NULL);
}

static void expect_fail_te(const char *json, int code, const char *a, const char *b) {
    zerr e = {0};
    qwen3_config q;
    const char *p = put("bad_te.json", json);
    int rc = qwen3_config_load(&q, p, &e);
    if (rc != code) fprintf(stderr, "rc %d want %d: %s\n", rc, code, e.msg);
    assert_int_equal(rc, code);
    expect_msg(&e, p, a, b);
}

static void test_bad_te(void **state) {
    (void)state;
    expect_fail_te(edit(TE_JSON_4, "\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}"),
                   ZE_UNSUPPORTED, "'rope_scaling'", NULL);
    expect_fail_te(edit(TE_JSON_5, "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\""), ZE_UNSUPPORTED,
                   "'rope_parameters.rope_type'", NULL);
    expect_fail_te(edit(TE_JSON_5, "\"rope_theta\": 500000", "\"rope_theta\": \"x\""), ZE_FORMAT,
                   "key 'rope_parameters.rope_theta' must be a number", NULL);
    expect_fail_te(edit(TE_JSON_4, "\"attention_bias\": false", "\"attention_bias\": true"), ZE_UNSUPPORTED,
                   "'attention_bias'", NULL);
    expect_fail_te(edit(TE_JSON_4, "\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5"), ZE_MODEL,
                   "num_attention_heads 32 is not a multiple of num_key_value_heads 5", NULL);
    expect_fail_te(edit(TE_JSON_4, "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""), ZE_UNSUPPORTED,
                   "'hidden_act' = \"gelu\"", NULL);
    expect_fail_te(edit(TE_JSON_4, "\"model_type\": \"qwen3\"", "\"model_type\": \"qwen2\""), ZE_UNSUPPORTED,
                   "'model_type'", NULL);
    expect_fail_te(edit(TE_JSON_4, "\"num_hidden_layers\": 36", "\"num_hidden_layers\": 1"), ZE_MODEL,
                   "num_hidden_layers = 1", NULL);
    expect_fail_te(edit(TE_JSON_4, "\"hidden_size\": 2560", "\"hidden_size\": 2560.5"), ZE_FORMAT,
                   "'hidden_size' must be an integer", NULL);
    expect_fail_te("{\"hidden_size\": ", ZE_FORMAT, "malformed JSON", NULL);
}

static void test_bad_vae_sched(void **state) {
    (void)state;
    zerr e = {0};
    vae_config v;
    sched_config s;
    const char *p = put("bad_vae.json", edit(VAE_JSON, "\"use_quant_conv\": false", "\"use_quant_conv\": true"));
    assert_int_equal(vae_config_load(&v, p, &e), ZE_UNSUPPORTED);
    expect_msg(&e, p, "use_quant_conv", "another model family");
    p = put("bad_vae.json", edit(VAE_JSON, "[128, 256, 512, 512]", "[32, 32, 32, 32, 32, 32, 32, 32, 32]"));
    assert_int_equal(vae_config_load(&v, p, &e), ZE_FORMAT);
    expect_msg(&e, p, "'block_out_channels' must list 1 to 8 values, found 9", NULL);
    p = put("bad_vae.json", edit(VAE_JSON, "[128, 256, 512, 512]", "[]"));
    assert_int_equal(vae_config_load(&v, p, &e), ZE_FORMAT);
    expect_msg(&e, p, "'block_out_channels'", "found 0");
    p = put("bad_vae.json", edit(VAE_JSON, "[128, 256, 512, 512]", "[128, 256, 500, 512]"));
    assert_int_equal(vae_config_load(&v, p, &e), ZE_MODEL);
    expect_msg(&e, p, "block_out_channels[2] = 500", "norm_num_groups 32");
    p = put("bad_vae.json", edit(VAE_JSON, "[128, 256, 512, 512]", "[128, 256, 512]"));
    assert_int_equal(vae_config_load(&v, p, &e), ZE_MODEL);
    expect_msg(&e, p, "'down_block_types' lists 4 blocks but block_out_channels lists 3", NULL);
    p = put("bad_vae.json", edit(VAE_JSON, "\"scaling_factor\": 0.3611", "\"scaling_factor\": \"0.3611\""));
    assert_int_equal(vae_config_load(&v, p, &e), ZE_FORMAT);
    expect_msg(&e, p, "'scaling_factor' must be a number", NULL);
    /* three blocks parse (the block count is not fixed at 4) */
    p = put("vae3.json", "{\"block_out_channels\": [64, 128, 128]}");
    ok(vae_config_load(&v, p, &e), &e);
    assert_int_equal(v.n_blocks, 3);

    p = put("bad_sched.json", edit(SCHED_JSON, "\"use_dynamic_shifting\": false", "\"use_dynamic_shifting\": true"));
    assert_int_equal(sched_config_load(&s, p, &e), ZE_UNSUPPORTED);
    expect_msg(&e, p, "'use_dynamic_shifting' is true", "not implemented");
    p = put("bad_sched.json", edit(SCHED_JSON, "\"shift\": 3.0", "\"shift\": \"3\""));
    assert_int_equal(sched_config_load(&s, p, &e), ZE_FORMAT);
    expect_msg(&e, p, "'shift' must be a number", NULL);
    p = put("bad_sched.json", edit(SCHED_JSON, "\"shift\": 3.0", "\"shift\": 3.0, \"shift_terminal\": 0.02"));
    assert_int_equal(sched_config_load(&s, p, &e), ZE_UNSUPPORTED);
    expect_msg(&e, p, "'shift_terminal'", NULL);
    p = put("sched2.json", edit(SCHED_JSON, "\"shift\": 3.0", "\"shift\": 6"));
    ok(sched_config_load(&s, p, &e), &e);
    assert_true(s.shift == 6.0f);
}

/* ---- model folders ---- */

static char root[4096];

static void mk(const char *sub) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", root, sub);
    assert_int_equal(mkdir(p, 0700), 0);
}

static void make_model(void) {
    snprintf(root, sizeof root, "%s/Z-Image-Turbo", dir);
    assert_int_equal(mkdir(root, 0700), 0);
    st_write_text(st_path(root, "model_index.json"), INDEX_JSON);
    mk("transformer");
    mk("text_encoder");
    mk("vae");
    mk("tokenizer");
    mk("scheduler");
    st_write_text(st_path(root, "transformer/config.json"), DIT_JSON);
    st_write_text(st_path(root, "text_encoder/config.json"), TE_JSON_4);
    st_write_text(st_path(root, "vae/config.json"), VAE_JSON);
    st_write_text(st_path(root, "tokenizer/tokenizer.json"), "{}");
    st_write_text(st_path(root, "tokenizer/tokenizer_config.json"), "{}");
    st_write_text(st_path(root, "scheduler/scheduler_config.json"), SCHED_JSON);
}

static void test_modeldir(void **state) {
    (void)state;
    static zmodel_paths p; /* 40 KiB: keep off the stack */
    zerr e = {0};
    make_model();
    char withslash[4200];
    snprintf(withslash, sizeof withslash, "%s/", root);
    ok(zmodel_resolve(&p, withslash, NULL, NULL, NULL, NULL, &e), &e);
    assert_string_equal(p.root, root);
    assert_string_equal(p.dit, st_path(root, "transformer"));
    assert_string_equal(p.dit_config, st_path(root, "transformer/config.json"));
    assert_string_equal(p.te, st_path(root, "text_encoder"));
    assert_string_equal(p.te_config, st_path(root, "text_encoder/config.json"));
    assert_string_equal(p.vae, st_path(root, "vae"));
    assert_string_equal(p.vae_config, st_path(root, "vae/config.json"));
    assert_string_equal(p.tok_json, st_path(root, "tokenizer/tokenizer.json"));
    assert_string_equal(p.tok_config, st_path(root, "tokenizer/tokenizer_config.json"));
    assert_string_equal(p.sched_config, st_path(root, "scheduler/scheduler_config.json"));
    /* the resolved configs parse */
    dit_config d;
    ok(dit_config_load(&d, p.dit_config, &e), &e);

    /* single-file overrides: no config path */
    const char *dfile = put("z_image_turbo_bf16.safetensors", "x");
    const char *tfile = put("qwen_3_4b.safetensors", "x");
    ok(zmodel_resolve(&p, root, dfile, tfile, NULL, NULL, &e), &e);
    assert_string_equal(p.dit, dfile);
    assert_string_equal(p.dit_config, "");
    assert_string_equal(p.te, tfile);
    assert_string_equal(p.te_config, "");
    assert_string_equal(p.vae_config, st_path(root, "vae/config.json"));
    /* an override folder keeps its config */
    ok(zmodel_resolve(&p, NULL, st_path(root, "transformer"), tfile, put("ae.safetensors", "x"),
                      st_path(root, "tokenizer"), &e),
       &e);
    assert_string_equal(p.root, "");
    assert_string_equal(p.dit_config, st_path(root, "transformer/config.json"));
    assert_string_equal(p.vae_config, "");
    assert_string_equal(p.tok_json, st_path(root, "tokenizer/tokenizer.json"));
    assert_string_equal(p.tok_config, st_path(root, "tokenizer/tokenizer_config.json"));
    assert_string_equal(p.sched_config, "");
    /* tokenizer as a single file */
    ok(zmodel_resolve(&p, NULL, dfile, tfile, dfile, st_path(root, "tokenizer/tokenizer.json"), &e), &e);
    assert_string_equal(p.tok_config, "");

    /* errors */
    assert_int_equal(zmodel_resolve(&p, NULL, dfile, tfile, NULL, st_path(root, "tokenizer"), &e), ZE_INVALID);
    expect_msg(&e, "no vae: no model folder and no --vae FILE was given", NULL, NULL);
    assert_int_equal(zmodel_resolve(&p, NULL, dfile, tfile, dfile, NULL, &e), ZE_INVALID);
    expect_msg(&e, "no tokenizer", "--tokenizer", NULL);
    assert_int_equal(zmodel_resolve(&p, root, st_path(dir, "missing.safetensors"), NULL, NULL, NULL, &e), ZE_IO);
    expect_msg(&e, "--diffusion-model", "missing.safetensors", NULL);
    assert_int_equal(zmodel_resolve(&p, st_path(dir, "nope"), NULL, NULL, NULL, NULL, &e), ZE_IO);
    expect_msg(&e, "model folder", "nope does not exist", NULL);
    assert_int_equal(zmodel_resolve(&p, dfile, NULL, NULL, NULL, NULL, &e), ZE_INVALID);
    expect_msg(&e, dfile, "is not a folder", NULL);

    char te_dir[4200], moved[4200];
    snprintf(te_dir, sizeof te_dir, "%s/text_encoder", root);
    snprintf(moved, sizeof moved, "%s/text_encoder.moved", root);
    assert_int_equal(rename(te_dir, moved), 0);
    assert_int_equal(zmodel_resolve(&p, root, NULL, NULL, NULL, NULL, &e), ZE_IO);
    expect_msg(&e, "no text encoder: ", te_dir, "does not exist and no --text-encoder FILE was given");
    ok(zmodel_resolve(&p, root, NULL, moved, NULL, NULL, &e), &e); /* an override folder fills the gap */
    assert_string_equal(p.te_config, st_path(moved, "config.json"));
    assert_int_equal(rename(moved, te_dir), 0);

    /* component folder without its config */
    unlink(st_path(root, "vae/config.json"));
    assert_int_equal(zmodel_resolve(&p, root, NULL, NULL, NULL, NULL, &e), ZE_IO);
    expect_msg(&e, "vae config missing", st_path(root, "vae/config.json"), NULL);
    st_write_text(st_path(root, "vae/config.json"), VAE_JSON);

    /* no scheduler folder: defaults */
    st_rmtree(st_path(root, "scheduler"));
    ok(zmodel_resolve(&p, root, NULL, NULL, NULL, NULL, &e), &e);
    assert_string_equal(p.sched_config, "");

    /* model_index.json: other class warns, malformed / missing fail */
    st_write_text(st_path(root, "model_index.json"), "{\"_class_name\": \"FluxPipeline\"}");
    ok(zmodel_resolve(&p, root, NULL, NULL, NULL, NULL, &e), &e);
    st_write_text(st_path(root, "model_index.json"), "{\"_class_name\": ");
    assert_int_equal(zmodel_resolve(&p, root, NULL, NULL, NULL, NULL, &e), ZE_FORMAT);
    expect_msg(&e, st_path(root, "model_index.json"), "malformed JSON", NULL);
    unlink(st_path(root, "model_index.json"));
    assert_int_equal(zmodel_resolve(&p, root, NULL, NULL, NULL, NULL, &e), ZE_IO);
    expect_msg(&e, "not a diffusers model folder", "model_index.json does not exist", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_configs), cmocka_unit_test(test_dit_derived),
        cmocka_unit_test(test_bad_dit),      cmocka_unit_test(test_bad_te),
        cmocka_unit_test(test_bad_vae_sched), cmocka_unit_test(test_modeldir),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
