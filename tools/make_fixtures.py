#!/usr/bin/env python3
"""Generates the zimage test fixtures (tests/fixtures/) from the Python reference implementations.

Pinned reference versions (goldens are only meaningful against exactly these):
    torch==2.11.0 (CPU build is enough; a local tag such as +cpu/+cu130 is accepted)
    transformers==5.17.0
    diffusers==0.42.1
    safetensors, numpy (any recent version; numpy >= 2)
The script refuses to run with other versions of torch/transformers/diffusers unless --force.

Usage:
    python3 tools/make_fixtures.py --out tests/fixtures            # everything
    python3 tools/make_fixtures.py --out tests/fixtures --only models
Parts = the modules in tools/fixtures/ that exist, run in this order, each as make(out_dir):
    tok     tokenizer files + tokenizer goldens     (tools/fixtures/tok.py)
    rng     torch RNG goldens                       (tools/fixtures/rng.py)
    models  tiny models + te/dit/sched/vae/pipe goldens (tools/fixtures/models.py)
Everything is fp32 on the CPU with fixed seeds; re-running produces byte-identical .npy files.
Layout contract: tests/fixtures/README.md.
"""
import argparse
import importlib
import importlib.metadata
import os
import sys
import time

PINS = {"torch": "2.11.0", "transformers": "5.17.0", "diffusers": "0.42.1"}
REQUIRED = ("safetensors", "numpy")
PARTS = ("tok", "rng", "models")
HERE = os.path.dirname(os.path.abspath(__file__))


def check_versions(force):
    bad = []
    for pkg, want in PINS.items():
        try:
            have = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have is None or have.split("+")[0] != want:
            bad.append(f"{pkg}=={want} required, found {have}")
    for pkg in REQUIRED:
        try:
            importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            bad.append(f"{pkg} required, not installed")
    if bad:
        msg = "make_fixtures: version mismatch:\n  " + "\n  ".join(bad)
        if not force:
            sys.exit(msg + "\n(use --force to run anyway; goldens may then differ from the committed ones)")
        print(msg + "\n(--force: continuing)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures", help="fixture root (default tests/fixtures)")
    ap.add_argument("--only", action="append", default=None, metavar="PART",
                    help="run only these parts (repeatable or comma-separated): " + ", ".join(PARTS))
    ap.add_argument("--force", action="store_true", help="run even with unpinned library versions")
    args = ap.parse_args()
    check_versions(args.force)
    only = None
    if args.only:
        only = [p.strip() for o in args.only for p in o.split(",") if p.strip()]
        unknown = [p for p in only if p not in PARTS]
        if unknown:
            sys.exit(f"make_fixtures: unknown part(s) {unknown}; known: {list(PARTS)}")
    sys.path.insert(0, HERE)
    os.makedirs(args.out, exist_ok=True)
    t_all = time.time()
    for part in PARTS:
        if only is not None and part not in only:
            continue
        if not os.path.exists(os.path.join(HERE, "fixtures", part + ".py")):
            print(f"[{part}] tools/fixtures/{part}.py not present, skipped")
            continue
        t0 = time.time()
        importlib.import_module("fixtures." + part).make(args.out)
        print(f"[{part}] done in {time.time() - t0:.1f} s")
    print(f"all done in {time.time() - t_all:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
