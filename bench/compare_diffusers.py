#!/usr/bin/env python3
"""bench/compare_diffusers.py - time diffusers on the full-size Z-Image-Turbo
architecture with random bf16 weights, on the same GPU and in the same device
call as `zimage bench`, so the ratio is measured side by side.

Pinned reference versions (as for tools/make_fixtures.py): torch 2.11.0,
transformers 5.17.0, diffusers 0.42.1.  The device image has torch and
transformers; diffusers is carried as a wheel (pip install --no-deps).

Measures (1024x1024, 128-token prompt, batch 1, bf16, CUDA events, median):
  dit      one transformer forward, eager and with compile_repeated_blocks
  te       the text encoder as the pipeline runs it (pads to 512, 36 layers)
  vae      VAE decode of a 128x128 latent
  e2e      the whole ZImagePipeline call, 8 steps, output_type "pil"
           (eager and compiled transformer)
Prints one JSON object per measurement and a table at the end.
"""
import argparse
import json
import statistics
import sys
import time

import torch


def ev_time(fn, warmup=2, reps=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) / 1000.0)
    return statistics.median(ts)


DIT_CFG = dict(all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2,
               n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0,
               t_scale=1000.0, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512])
VAE_CFG = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
               up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
               act_fn="silu", latent_channels=16, norm_num_groups=32, sample_size=1024, scaling_factor=0.3611,
               shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
               mid_block_add_attention=True)


def te_config():
    from transformers import Qwen3Config
    return Qwen3Config(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, rms_norm_eps=1e-6,
                       rope_theta=1000000.0, max_position_embeddings=40960, tie_word_embeddings=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", default="dit,te,vae,e2e")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--tokenizer", default="tests/fixtures/tokenizer")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import AutoTokenizer, Qwen3Model

    dev, dt = "cuda", torch.bfloat16
    out = []

    def rec(**kw):
        kw.update(card=torch.cuda.get_device_name(), torch=torch.__version__, diffusers=diffusers.__version__,
                  transformers=transformers.__version__)
        print(json.dumps(kw), flush=True)
        out.append(kw)

    what = a.what.split(",")
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device(dev):
        dit = ZImageTransformer2DModel(**DIT_CFG).to(dt).eval()
        vae = AutoencoderKL(**VAE_CFG).to(dt).eval()
        te = Qwen3Model(te_config()).to(dt).eval()
    print(f"built random models in {time.time() - t0:.1f} s", file=sys.stderr)
    h = w = a.size // 8
    L = a.tokens
    x = [torch.randn(16, 1, h, w, device=dev, dtype=dt)]
    cap = [torch.randn(L, 2560, device=dev, dtype=dt)]
    tt = torch.tensor([0.5], device=dev, dtype=dt)

    @torch.no_grad()
    def dit_fwd():
        return dit(x, tt, cap, return_dict=False)[0]

    if "te" in what:
        ids = torch.randint(0, 150000, (1, 512), device=dev)
        mask = torch.zeros(1, 512, dtype=torch.bool, device=dev)
        mask[0, :L] = True

        @torch.no_grad()
        def te_fwd():
            return te(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]

        rec(stage="text_encoder", mode="pipeline (pad 512, 36 layers)", seconds=ev_time(te_fwd))
    if "vae" in what:
        z = torch.randn(1, 16, h, w, device=dev, dtype=dt)

        @torch.no_grad()
        def vae_dec():
            return vae.decode(z, return_dict=False)[0]

        rec(stage="vae_decode", mode="eager", seconds=ev_time(vae_dec, warmup=1, reps=3))
        torch.cuda.reset_peak_memory_stats()
    if "e2e" in what:
        tok = AutoTokenizer.from_pretrained(a.tokenizer)
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)
        pipe = ZImagePipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok, transformer=dit)
        pipe.set_progress_bar_config(disable=True)
        prompt = "a" + " cat" * (L - 9)

        def run():
            g = torch.Generator(dev).manual_seed(42)
            return pipe(prompt, height=a.size, width=a.size, num_inference_steps=a.steps, guidance_scale=0.0,
                        generator=g, output_type="pil").images[0]

        torch.cuda.reset_peak_memory_stats()
        s = ev_time(run, warmup=1, reps=3)
        rec(stage="end_to_end", mode="eager", seconds=s, peak_gib=torch.cuda.max_memory_allocated() / 2**30)
    if "dit" in what:
        s = ev_time(dit_fwd)
        rec(stage="dit_forward", mode="eager", seconds=s)
        if not a.no_compile:
            dit.compile_repeated_blocks(fullgraph=True)
            t0 = time.time()
            dit_fwd()
            torch.cuda.synchronize()
            print(f"compile took {time.time() - t0:.1f} s", file=sys.stderr)
            s = ev_time(dit_fwd)
            rec(stage="dit_forward", mode="compile_repeated_blocks", seconds=s)
    if "e2e" in what and not a.no_compile:
        if "dit" not in what:
            dit.compile_repeated_blocks(fullgraph=True)
        s = ev_time(run, warmup=1, reps=3)
        rec(stage="end_to_end", mode="compile_repeated_blocks", seconds=s)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    print("\n| stage | mode | seconds |", file=sys.stderr)
    for r in out:
        print(f"| {r['stage']} | {r['mode']} | {r['seconds']:.4f} |", file=sys.stderr)


if __name__ == "__main__":
    main()
