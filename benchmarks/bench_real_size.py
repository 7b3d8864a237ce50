#!/usr/bin/env python
"""A released model at real size on this CPU, with random weights (latency and memory do not depend on their values).

1. `harness run --model sd3.5-medium --weights random --dtype bfloat16 --suite device` at 256x256 and 2 steps, in a
   fresh process: the whole pipeline (T5-XXL included) drawn in bfloat16 with no download; its load and inference
   peaks, per-step latency and the fraction of the CPU's peak measured in the same run.
2. The transformer-only forward peak by the release's protocol (FACTS section 1: one no-grad forward with random
   inputs, batch 2 under CFG), at this size: on a CPU the transformer's weight bytes plus what the forward adds to the
   resident set (there is no allocator statistic).
3. The published cut {13, 15, 16, 18, 20, 21} + nf4 through `harness run` on the same random weights: the
   transformer bytes measured after the chain against `harness estimate` for the same chain (target: within 2%).

Prints one JSON object with every figure and the wall time of each part. Run it alone: it needs about 16 GiB of host
memory and minutes of both cores.

Usage: python benchmarks/bench_real_size.py [--model sd3.5-medium] [--size 256] [--steps 2] [--out /tmp/real-size]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TARGET = 0.02  # measured vs estimated transformer bytes of the cut + nf4


def _harness(*args: str) -> dict:
    """`harness ARGS` in a fresh process (its load peak is its own); the results.json it wrote."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"harness {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    results = json.loads(Path(done.stdout.strip().splitlines()[-1]).read_text())
    results["bench_wall_seconds"] = time.perf_counter() - started
    return results


def forward_peak(model: str, size: int, dtype_name: str) -> dict:
    """The release's transformer-only protocol on the CPU: weight bytes + the resident-set growth of one forward."""
    import psutil
    import torch

    from harness.memory import PeakMemory
    from harness.models.families import family_of
    from harness.models.footprint import weight_bytes
    from harness.models.presets import PRESETS
    from harness.models.random_weights import draw_random_weights, weightless_pipeline

    spec, dtype = PRESETS[model], getattr(torch, dtype_name)
    # only the transformer is drawn: the protocol's model
    transformer = draw_random_weights(weightless_pipeline(spec).transformer, "cpu", dtype, seed=0)
    family = family_of(spec.family)
    text_tokens = 77 + (spec.sampling.max_sequence_length or family.default_max_sequence_length)
    inputs = family.transformer_inputs(transformer, family.forward_batch_size(spec.sampling, 1), size, size,
                                       text_tokens, torch.device("cpu"), dtype, torch.Generator().manual_seed(0))
    before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    with PeakMemory("cpu") as peak, torch.no_grad():
        transformer(**inputs)
    weights = weight_bytes(transformer)
    return {"weights_gib": weights / 2**30, "forward_peak_gib": (weights + peak.rss - before) / 2**30,
            "forward_seconds": time.perf_counter() - started, "text_tokens": text_tokens,
            "batch": inputs["hidden_states"].shape[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sd3.5-medium")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/real-size"))
    args = parser.parse_args(argv)
    common = ["--model", args.model, "--weights", "random", "--dtype", "bfloat16", "--device", "cpu",
              "--no-progress", "--output-dir", str(args.out / "runs"), "--cache-dir", str(args.out / "cache"),
              "--set", f"sampling.height={args.size}", "--set", f"sampling.width={args.size}",
              "--set", f"sampling.num_inference_steps={args.steps}"]
    cut = ["--method", "hierarchicalprune+nf4", "--set", "hierarchicalprune.published_cut=true",
           "--set", "hierarchicalprune.distill_steps=0"]
    report: dict = {"model": args.model, "size": args.size, "steps": args.steps}

    whole = _harness("run", *common, "--suite", "device", "--set", "latency.repeats=2", "--set", "latency.warmup=0",
                     "--set", "latency.forward_repeats=2")
    metrics = whole["metrics"]
    report["whole_pipeline"] = {
        "wall_seconds": whole["bench_wall_seconds"],
        **{key.partition("/")[2]: metrics.get(key) for key in (
            "memory/weights_total_gib", "memory/weights_transformer_gib", "memory/load_peak_rss_gib",
            "memory/inference_peak_rss_gib", "latency/end_to_end", "latency/per_step", "latency/transformer_forward",
            "latency/forward_tflop", "latency/achieved_tflops", "latency/peak_fraction", "latency/other_load")},
        "speed_of_light": next(n for n in whole["suites"]["latency"]["notes"] if n.startswith("speed of light")),
        "load": next(n for n in whole["suites"]["latency"]["notes"] if n.startswith("measured")),
    }
    started = time.perf_counter()
    report["transformer_forward_protocol"] = {**forward_peak(args.model, args.size, "bfloat16"),
                                              "wall_seconds": time.perf_counter() - started}
    pruned = _harness("run", *common, *cut, "--suite", "memory")
    estimate = subprocess.run([sys.executable, "-m", "harness", "estimate", "--model", args.model, *cut, "--json"],
                              capture_output=True, text=True, check=True)
    estimated = json.loads(estimate.stdout)["weight_bytes"]["after"]["transformer"] / 2**30
    measured = pruned["metrics"]["memory/weights_transformer_gib"]
    report["cut_nf4"] = {"wall_seconds": pruned["bench_wall_seconds"], "measured_transformer_gib": measured,
                         "estimated_transformer_gib": estimated, "relative_gap": measured / estimated - 1,
                         "inference_peak_rss_gib": pruned["metrics"].get("memory/inference_peak_rss_gib")}
    print(json.dumps(report, indent=1))
    gap = abs(report["cut_nf4"]["relative_gap"])
    print(f"cut + nf4 transformer: measured {measured:.4f} GiB, estimated {estimated:.4f} GiB ({gap:.2%}; target "
          f"{TARGET:.0%}): {'met' if gap <= TARGET else 'MISSED'}")
    return 0 if gap <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
