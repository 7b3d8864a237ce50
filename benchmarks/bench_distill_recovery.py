#!/usr/bin/env python
"""How much of pruning's quality drop does distillation win back? The recovered fraction
(distilled - pruned) / (base - pruned) of one metric, from three finished runs on the same prompts and seeds, with a
95% paired-bootstrap interval over prompts (each resample recomputes all three runs' metric from the same prompts'
per-image records, so GenEval's per-task averaging is kept). The requirement (issue 4): the interval's lower end is
at least `--min-recovered` (default 0.25: a quarter of the drop, outside the interval; exit status 1 otherwise).

Usage: python benchmarks/bench_distill_recovery.py BASE PRUNED DISTILLED [--metric geneval-shapes/overall]
  e.g. the reference-table recipe's runs: none, hierarchicalprune at 0.20 with distill_steps=0, and with its
  default distillation (results/reference/runs/*)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from harness.commands.compare import bootstrap_interval, load_run


def recovered(values: list[float]) -> float:
    """(distilled - pruned) / (base - pruned) from [base, pruned, distilled]; NaN when pruning changed nothing."""
    base, pruned, distilled = values
    return (distilled - pruned) / (base - pruned) if base != pruned else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs=3, type=Path, metavar="RUN", help="base, pruned and distilled run folders")
    parser.add_argument("--metric", default="geneval-shapes/overall", help="<suite>/<metric> (higher is better)")
    parser.add_argument("--min-recovered", type=float, default=0.25)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    runs = [load_run(path) for path in args.runs]
    values = [run.value(args.metric) for run in runs]
    interval = bootstrap_interval(runs, args.metric, recovered, samples=args.resamples)
    if interval is None:
        print(f"the three runs share no scored prompts for {args.metric}", file=sys.stderr)
        return 2
    low, high = interval
    gain = bootstrap_interval(runs, args.metric, lambda v: v[2] - v[1], samples=args.resamples)
    for name, run, value in zip(("base", "pruned", "distilled"), runs, values, strict=True):
        print(f"{name:9s} {value:.4f}  {run.results.method.name}  ({run.path.name})")
    verdict = "ok" if low >= args.min_recovered else "FAIL"
    gain_text = f" (95% CI {gain[0]:+.4f} to {gain[1]:+.4f})" if gain else ""
    print(f"{args.metric}: drop {values[0] - values[1]:+.4f}, distillation gain {values[2] - values[1]:+.4f}"
          f"{gain_text}")
    print(f"recovered {recovered(values):.1%} (95% CI {low:.1%} to {high:.1%}; required lower end >= "
          f"{args.min_recovered:.0%}): {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
