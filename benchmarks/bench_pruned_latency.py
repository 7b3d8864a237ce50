#!/usr/bin/env python
"""Does whole-block removal buy the speed its FLOPs promise? Transformer-forward latency of a pruned model against
the original, next to their FLOP ratio.

For each block count removed by `depth-last` (the last removable blocks; the final block stays), the pruned and the
original transformer run one forward at the model's sampling resolution (batch doubled under CFG), alternating for
`--repeats` rounds after a warm-up, their forwards interleaved one by one; a round's ratio is the pruned model's
median forward time over the original's, and the latency ratio is the median over rounds. The FLOPs come
from `harness.flops.count_flops` on the same forward. The requirement: the latency ratio is within 10% of the
FLOP ratio (|latency / flops - 1| <= 0.10; exit status 1 otherwise). Rounds during which other processes used more
than `--max-other-load` of the CPUs are reported as noisy and redone (see bench_generation.py).

Usage: python benchmarks/bench_pruned_latency.py [--model reference] [--remove 2,4,6] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

from harness.monitors import OtherLoad

TOLERANCE = 0.10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="reference", help="registered model (default: reference; its "
                        "untrained architecture is used when the weights are absent: latency does not need them)")
    parser.add_argument("--remove", default="2,4,6", help="comma-separated numbers of blocks to remove")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (default: 7)")
    parser.add_argument("--forwards", type=int, default=20, help="forwards per round and model (default: 20)")
    parser.add_argument("--max-other-load", type=float, default=0.05, help="noisy-round threshold (default 0.05)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)

    import torch

    from harness.errors import UsageError
    from harness.flops import count_flops
    from harness.models.architecture import build_architecture, text_tokens_of
    from harness.models.families import family_of
    from harness.models.loading import load_model, resolve_model
    from harness.models.surgery import removable_blocks, remove_blocks

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    spec = resolve_model(args.model)
    try:
        pipeline = load_model(spec, weights=None, device=device).pipeline
        components = {n: m for n, m in pipeline.components.items() if isinstance(m, torch.nn.Module)}
        source = "trained weights"
    except UsageError:
        components = build_architecture(spec)
        source = "untrained architecture"
    transformer = components["transformer"].to(device).eval()
    tokens = text_tokens_of(spec, spec.sampling, components)
    family = family_of(spec.family)
    inputs = family.transformer_inputs(transformer, family.forward_batch_size(spec.sampling, 1), spec.sampling.height,
                                       spec.sampling.width, tokens, device, transformer.dtype,
                                       torch.Generator().manual_seed(0))

    def flops(model: torch.nn.Module) -> int:
        with count_flops() as counts, torch.no_grad():
            model(**inputs)
        return sum(counts.values())

    def forward_seconds(model: torch.nn.Module) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        model(**inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def round_ratio(base: torch.nn.Module, cut: torch.nn.Module) -> float:
        """Forwards of the two models interleaved one by one (a slow spell hits both alike); the ratio of their
        median forward times."""
        times: dict[int, list[float]] = {0: [], 1: []}
        with torch.inference_mode():
            for _ in range(args.forwards):
                times[0].append(forward_seconds(base))
                times[1].append(forward_seconds(cut))
        return statistics.median(times[1]) / statistics.median(times[0])

    print(f"{args.model} ({source}) on {device}: batch {inputs['hidden_states'].shape[0]}, "
          f"{spec.sampling.height}x{spec.sampling.width}, {tokens} text tokens, {torch.get_num_threads()} threads")
    original_flops = flops(transformer)
    failures = 0
    for count in [int(c) for c in args.remove.split(",")]:
        pruned = copy.deepcopy(transformer)
        candidates = [b.index for b in removable_blocks(pruned)]
        remove_blocks(pruned, candidates[-count:])
        flop_ratio = flops(pruned) / original_flops
        round_ratio(transformer, pruned)  # warm-up
        ratios: list[float] = []
        noisy = 0
        while len(ratios) < args.repeats and noisy <= args.repeats:
            with OtherLoad("cpu") as meter:
                ratio = round_ratio(transformer, pruned)
            other = meter.report.other_share
            if other is not None and other > args.max_other_load:
                noisy += 1
                print(f"  noisy round (other processes used {other:.0%} of the CPUs): redone")
                continue
            ratios.append(ratio)
        latency_ratio = statistics.median(ratios)
        gap = latency_ratio / flop_ratio - 1
        verdict = "ok" if abs(gap) <= TOLERANCE else "FAIL"
        failures += verdict == "FAIL"
        print(f"remove {count:>2} blocks: FLOP ratio {flop_ratio:.3f}, latency ratio {latency_ratio:.3f} "
              f"(median of {len(ratios)}; rounds {min(ratios):.3f}-{max(ratios):.3f}), gap {gap:+.1%}: {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
