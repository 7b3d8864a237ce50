#!/usr/bin/env python
"""One short pass over the CUDA paths, for a machine with a GPU: NF4, int8, int8-activation and FP8 layers on the
GPU, First-Block Cache and torch.compile there (with their compile time), CUDA-event latency, the allocator's and
NVML's peaks, the emulated small card, and the release's transformer-forward peak.

Each check runs `harness run` in-process on the reference model (its untrained architecture is enough when the
weights are absent: pass --model tiny-sd3) and prints the figures a session note needs. Without a GPU it runs its
CPU path: the same runs on the CPU, where the GPU-only ones (fp8dq, fp8wo, the emulated card) must be refused with
exit 2. Exit status 1 when a figure is missing or a run did not end as it should.

Usage: python benchmarks/device_check.py [--model reference] [--out /tmp/device-check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="reference")
    parser.add_argument("--out", type=Path, default=Path("/tmp/device-check"))
    args = parser.parse_args(argv)

    import torch

    from compressors.quantize import FP8_CAPABILITY
    from harness.cli import main as harness

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        print(f"device: {torch.cuda.get_device_name(0)} (compute capability "
              f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}), torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}")
    else:
        print(f"no CUDA device: the CPU path (torch {torch.__version__})")
    fp8 = cuda and torch.cuda.get_device_capability(0) >= FP8_CAPABILITY
    common = ["--model", args.model, "--device", device, "--no-progress", "--output-dir", str(args.out / "runs"),
              "--cache-dir", str(args.out / "cache"), "--set", "latency.repeats=5"]
    # (method, extra arguments, whether it can run here)
    checks = [("none", [], True), ("nf4", [], True), ("int8", [], True), ("int8dq", [], True),
              ("fbcache", ["--set", "fbcache.threshold=0.2"], True), ("fp8dq", [], fp8), ("fp8wo", [], fp8),
              ("compile", [], True), ("fbcache+compile", ["--set", "fbcache.threshold=0.2"], True),
              ("none", ["--emulate-device", "rtx4060"], cuda)]
    failures = 0
    for method, extra, runs_here in checks:
        code = harness(["run", *common, "--method", method, "--suite", "latency,memory,fidelity", "--limit", "4",
                        *extra])
        if code != (0 if runs_here else 2):
            print(f"{method} {extra}: exit {code}, expected {0 if runs_here else 2}")
            failures += 1
    for results in sorted((args.out / "runs").glob("*/results.json")):
        data = json.loads(results.read_text())
        metrics = data["metrics"]
        wanted = ["latency/end_to_end", "latency/per_step", "latency/transformer_forward",
                  "memory/inference_allocated_peak_gib", "memory/inference_reserved_peak_gib",
                  "memory/inference_nvml_peak_gib", "memory/transformer_forward_peak_gib",
                  "memory/weights_transformer_gib", "fidelity/psnr"]
        print(f"\n{data['method']['name']} ({data['suites']['memory']['params']}):")
        for key in wanted:
            print(f"  {key:<40} {metrics.get(key, 'MISSING')}")
        print(f"  transformer calls: {data['suites']['fidelity'].get('transformer_calls')}")
        costs = {step["name"]: step["cost"] for step in data["compression"]["steps"]}
        if "compile" in costs:
            print(f"  compile: {costs['compile']}")
        print("  notes:", "; ".join(data["suites"]["memory"]["notes"] + data["suites"]["latency"]["notes"]))
        required = wanted[:6] if cuda else wanted[:3]
        failures += sum(key not in metrics for key in required)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
