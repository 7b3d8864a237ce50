#!/usr/bin/env python
"""What contribution analysis costs beyond the generation and scoring it needs.

`harness analyze` (block granularity, cold image cache) is timed end to end in-process, model loading included.
Against it: the bare work, i.e. one model load, then for the original and for each block removal the same images
generated with plain pipeline calls (same batches and seeds) and scored by the same suite. The ratio analysis / bare
must be at most 1.05 (exit status 1 otherwise). The bare path swaps blocks with the same in-place skip: what is
compared is everything else (cache keys and PNG files, progress file, ranking, heatmap, extra loads).

Both are timed in a warmed process (one load and one generation first): a process's first pipeline load imports
diffusers' model zoo and torch's compiler stack (about 10 s on this 2-core machine), a one-off cost of the process,
not of the analysis; timed cold, it made whichever path ran first look 15% dearer. The two are run in turns
(bare, analysis, bare, analysis by default) and each path's fastest repeat is compared, so a slow spell of the machine
does not decide the verdict.

Usage: python benchmarks/bench_analysis.py [--model reference] [--limit 24] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REQUIRED_RATIO = 1.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="reference")
    parser.add_argument("--metric", default=None, help="<suite>/<metric> (default: the model's)")
    parser.add_argument("--limit", type=int, default=24, help="prompts (default: 24)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timings of each path, taken in turns (default: 2)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)

    import torch

    from harness.commands.analyze import AnalyzeOptions, analyze
    from harness.generation import ImageRequest, Sample, image_seed, to_uint8
    from harness.metrics import lookup
    from harness.models.loading import load_model, resolve_model
    from harness.models.surgery import skip
    from harness.ranking import ablations_for
    from harness.registry import SUITES

    spec = resolve_model(args.model)
    metric = args.metric or spec.contribution_metric
    lookup(metric)
    suite_name, metric_name = metric.split("/", 1)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    suite = SUITES.get(suite_name)()
    requests: list[ImageRequest] = suite.requests(args.limit)
    sampling = spec.sampling

    def images(model: Any, chunks: list[list[ImageRequest]]) -> list[Sample]:
        samples = []
        for chunk in chunks:
            generators = [torch.Generator("cpu").manual_seed(image_seed(0, r.prompt_index, r.sample_index))
                          for r in chunk]
            with torch.inference_mode():
                output = model.pipeline(prompt=[r.prompt for r in chunk], generator=generators, output_type="np",
                                        **model.family.call_kwargs(sampling, len(chunk)))
            samples += [Sample(r, 0, image, Path("-")) for r, image in zip(chunk, to_uint8(output.images),
                                                                          strict=True)]
        return samples

    chunks = [requests[start:start + args.batch_size] for start in range(0, len(requests), args.batch_size)]
    warm = load_model(spec, weights=None, device=device)
    images(warm, chunks[:1])  # warm-up: imports and first calls
    sets = len(ablations_for(warm.transformer, "block")) + 1
    del warm

    def time_bare() -> float:
        started = time.perf_counter()
        model = load_model(spec, weights=None, device=device)
        references = images(model, chunks)
        suite.evaluate(references, references if suite.needs_reference else None).metrics[metric_name]
        for ablation in ablations_for(model.transformer, "block"):
            with skip(model.transformer, ablation):
                samples = images(model, chunks)
            suite.evaluate(samples, references if suite.needs_reference else None).metrics[metric_name]
        return time.perf_counter() - started

    def time_analysis() -> float:
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            analyze(AnalyzeOptions(model=args.model, metric=metric, limit=args.limit, batch_size=args.batch_size,
                                   device=device, cache_dir=Path(cache), progress=False))
            return time.perf_counter() - started

    bares, analyses = [], []
    for _ in range(args.repeats):
        bares.append(time_bare())
        analyses.append(time_analysis())
    bare, analysis = min(bares), min(analyses)
    ratio = analysis / bare
    verdict = "ok" if ratio <= REQUIRED_RATIO else "FAIL"
    print(f"{args.model} on {device}, {metric}, {len(requests)} images x {sets} sets, fastest of {args.repeats}: "
          f"analyze {analysis:.1f} s (all: {', '.join(f'{t:.1f}' for t in analyses)}), bare generation + scoring "
          f"{bare:.1f} s (all: {', '.join(f'{t:.1f}' for t in bares)}), ratio {ratio:.3f} "
          f"(required <= {REQUIRED_RATIO}): {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
