#!/usr/bin/env python3
"""server_bench.py - load benchmark of `zimage serve` (stdlib only).

For each server configuration (batching on/off x prompt cache on/off) it
starts the server on a free loopback port, warms it up, then for each
concurrency level C runs N requests (POST /v1/images/generations, n = 1,
prompts cycling through a pool of 4 so that the prompt cache can hit, a new
seed per request) from C client threads and reports latency p50 / p95,
images/s, the mean batch size the worker formed and the prompt-cache hit
rate (both from /metrics).  With --repeat R each level runs R times and
the median run (by images/s) is reported: the CPU numbers are noisy on a
shared machine.  Prints a markdown table; --json writes the raw
numbers.

  python3 bench/server_bench.py --bin build/cpu/zimage -m tests/fixtures/models/tiny-a \
      --device cpu --size 64 --steps 8 --concurrency 1,4,16
  python3 bench/server_bench.py --bin build/cuda/zimage --random-weights \
      --tokenizer tests/fixtures/tokenizer/tokenizer.json --device cuda --size 1024 --steps 8
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

PROMPTS = [
    "a lighthouse on a cliff at dusk, oil painting",
    "a red fox in the snow, telephoto photograph",
    "a bowl of ramen on a wooden table, studio lighting",
    "an astronaut riding a horse on the moon",
]

CONFIGS = {
    "batch+cache": {"max_batch": 4, "prompt_cache": 16},
    "batch": {"max_batch": 4, "prompt_cache": 0},
    "cache": {"max_batch": 1, "prompt_cache": 16},
    "none": {"max_batch": 1, "prompt_cache": 0},
}


def start_server(a, cfg):
    cmd = [a.bin, "serve", "--host", "127.0.0.1", "--port", "0", "-q",
           "--max-batch", str(cfg["max_batch"]), "--prompt-cache", str(cfg["prompt_cache"]),
           "--max-queue", "1024", "--min-size", str(min(a.size, 256)), "--max-size", str(max(a.size, 256)),
           "--default-size", str(a.size)]
    if a.model:
        cmd += ["-m", a.model]
    if a.random_weights:
        cmd += ["--random-weights"]
    if a.tokenizer:
        cmd += ["--tokenizer", a.tokenizer]
    if a.device:
        cmd += ["--device", a.device]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    url = None
    lines = []
    while time.time() - t0 < a.load_timeout:
        line = p.stdout.readline()
        if not line:
            if p.poll() is not None:
                break
            continue
        lines.append(line)
        m = re.search(r"serving .* on (http://\S+?)/? ", line)
        if m:
            url = m.group(1).rstrip("/")
            break
    if not url:
        p.kill()
        sys.exit("server did not start:\n" + "".join(lines))
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()  # drain
    return p, url, time.time() - t0


def post(url, body, timeout=3600):
    req = urllib.request.Request(url + "/v1/images/generations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def metrics(url):
    with urllib.request.urlopen(url + "/metrics", timeout=60) as r:
        txt = r.read().decode()
    out = {}
    for line in txt.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def run_level(a, url, c, seed0):
    n_req = max(a.min_requests, c * a.requests_per_client)
    lock = threading.Lock()
    state = {"next": 0}
    lat, errors = [], []

    def worker():
        while True:
            with lock:
                i = state["next"]
                if i >= n_req:
                    return
                state["next"] += 1
            body = {"prompt": PROMPTS[i % len(PROMPTS)], "size": f"{a.size}x{a.size}", "steps": a.steps,
                    "seed": seed0 + i, "n": 1}
            t = time.perf_counter()
            try:
                r = post(url, body)
                assert len(r["data"]) == 1
                dt = time.perf_counter() - t
                with lock:
                    lat.append(dt)
            except (urllib.error.URLError, AssertionError, KeyError) as e:  # noqa: PERF203
                with lock:
                    errors.append(str(e))

    m0 = metrics(url)
    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker) for _ in range(c)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    wall = time.perf_counter() - t0
    m1 = metrics(url)
    d = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1}
    hits, misses = d.get("zimage_prompt_cache_hits_total", 0), d.get("zimage_prompt_cache_misses_total", 0)
    batches = d.get("zimage_batch_size_count", 0)
    return {
        "concurrency": c, "requests": n_req, "errors": len(errors), "wall_s": wall,
        "p50_s": pct(lat, 50), "p95_s": pct(lat, 95), "images_per_s": len(lat) / wall if wall > 0 else 0,
        "mean_batch": d.get("zimage_batch_size_sum", 0) / batches if batches else 0,
        "cache_hit_rate": hits / (hits + misses) if hits + misses else 0,
        "first_error": errors[0] if errors else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/cpu/zimage")
    ap.add_argument("-m", "--model")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--tokenizer")
    ap.add_argument("--device")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--configs", default="batch+cache,batch,cache,none")
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--min-requests", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs per level; the median (by images/s) is kept")
    ap.add_argument("--load-timeout", type=float, default=600)
    ap.add_argument("--json")
    a = ap.parse_args()
    levels = [int(x) for x in a.concurrency.split(",")]
    results = []
    for name in a.configs.split(","):
        cfg = CONFIGS[name]
        p, url, load_s = start_server(a, cfg)
        try:
            for i in range(a.warmup):
                post(url, {"prompt": "warm up", "size": f"{a.size}x{a.size}", "steps": a.steps, "seed": i})
            for c in levels:
                runs = [run_level(a, url, c, seed0=1000 * c + 100000 * k) for k in range(a.repeat)]
                runs.sort(key=lambda x: x["images_per_s"])
                r = runs[len(runs) // 2]  # the median run (by throughput)
                r["repeats"] = [round(x["images_per_s"], 3) for x in runs]
                r.update({"config": name, **cfg, "load_s": load_s})
                results.append(r)
                print(f"{name:12s} C={c:<3d} p50 {r['p50_s']:.3f} s  p95 {r['p95_s']:.3f} s  "
                      f"{r['images_per_s']:.2f} img/s  batch {r['mean_batch']:.2f}  "
                      f"cache {100 * r['cache_hit_rate']:.0f}%  errors {r['errors']}", flush=True)
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
    print()
    print("| config | max batch | prompt cache | concurrency | p50 (s) | p95 (s) | images/s | mean batch | cache hits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['max_batch']} | {r['prompt_cache']} | {r['concurrency']} | {r['p50_s']:.3f} | "
              f"{r['p95_s']:.3f} | {r['images_per_s']:.2f} | {r['mean_batch']:.2f} | "
              f"{100 * r['cache_hit_rate']:.0f}% |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "host": os.uname().nodename, "results": results}, f, indent=1)
    if any(r["errors"] for r in results):
        sys.exit("some requests failed: " + str([r["first_error"] for r in results if r["errors"]]))


if __name__ == "__main__":
    main()
