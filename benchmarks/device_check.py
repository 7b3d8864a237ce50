#!/usr/bin/env python
"""One short pass over the CUDA-only paths, for a machine with a GPU: NF4 and int8 layers on the GPU, CUDA-event
latency, the allocator's and NVML's peaks, the emulated small card, and the release's transformer-forward peak.

Each check runs `harness run` in-process on the reference model (its untrained architecture is enough when the
weights are absent: pass --model tiny-sd3) and prints the figures a session note needs. Exit status 1 when a GPU
figure is missing or a run failed.

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

    from harness.cli import main as harness

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    common = ["--model", args.model, "--device", "cuda", "--no-progress", "--output-dir", str(args.out / "runs"),
              "--cache-dir", str(args.out / "cache"), "--set", "latency.repeats=5"]
    failures = 0
    for method, extra in (("none", []), ("nf4", []), ("int8", []), ("none", ["--emulate-device", "rtx4060"])):
        code = harness(["run", *common, "--method", method, "--suite", "latency,memory,fidelity", "--limit", "4",
                        *extra])
        if code != 0:
            print(f"{method} {extra}: exit {code}")
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
        print("  notes:", "; ".join(data["suites"]["memory"]["notes"] + data["suites"]["latency"]["notes"]))
        failures += sum(key not in metrics for key in wanted[:6])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
