#!/usr/bin/env python
"""Wall time of the whole geneval-shapes suite on the reference model (553 prompts x 2 images, generation and
scoring), from a cold image cache, through `harness run` in a subprocess as a user runs it. Required: at most
5 minutes (exit status 1 otherwise).

Usage: python benchmarks/bench_geneval_shapes.py [--batch-size N]  (default: the model's, 16)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

LIMIT_MINUTES = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the model's, as `harness run` uses it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "reference", "--suite",
                                 "geneval-shapes", *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
                                 "--no-progress",
                                 "--cache-dir", f"{folder}/cache", "--output-dir", f"{folder}/runs"],
                                capture_output=True, text=True)
        minutes = (time.perf_counter() - started) / 60
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return 1
    scores = [line for line in result.stdout.splitlines() if line.startswith("geneval-shapes/")]
    verdict = "ok" if minutes <= LIMIT_MINUTES else "FAIL"
    print(f"geneval-shapes on the reference model: {minutes:.2f} min (required <= {LIMIT_MINUTES}): {verdict}")
    print("\n".join(scores))
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
