#!/usr/bin/env python
"""What contribution analysis costs beyond the generation and scoring it needs.

`harness analyze` (block granularity, cold cache) is timed end to end in-process, model loading included. Against it:
the bare work on the same loaded pipeline, i.e. for the original and for each block removal, the same images
generated with plain pipeline calls (same batches and seeds) and scored by the same suite, plus one model load.
The ratio analysis / bare must be at most 1.05 (exit status 1 otherwise). The bare path swaps blocks with the same
in-place skip: what is compared is everything else (cache keys and PNG files, progress file, ranking, heatmap).

Usage: python benchmarks/bench_analysis.py [--model reference] [--limit 24] [--metric geneval-shapes/overall]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REQUIRED_RATIO = 1.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="reference")
    parser.add_argument("--metric", default=None, help="<suite>/<metric> (default: the model's)")
    parser.add_argument("--limit", type=int, default=24, help="prompts (default: 24)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    import torch

    from harness.analysis import AnalyzeOptions, ablations_for, analyze
    from harness.generation import ImageRequest, image_seed, to_uint8
    from harness.metrics import lookup
    from harness.models.families import call_kwargs
    from harness.models.loading import load_model, resolve_model
    from harness.models.surgery import skip
    from harness.registry import SUITES
    from suites.base import Sample

    spec = resolve_model(args.model)
    metric = args.metric or spec.contribution_metric
    lookup(metric)
    suite_name, metric_name = metric.split("/", 1)

    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        analyze(AnalyzeOptions(model=args.model, metric=metric, limit=args.limit, batch_size=args.batch_size,
                               cache_dir=Path(cache), progress=False))
        analysis = time.perf_counter() - started

    started = time.perf_counter()
    model = load_model(spec, weights=None, device="cpu")
    suite = SUITES.get(suite_name)()
    requests: list[ImageRequest] = suite.requests(args.limit)
    sampling = spec.sampling

    def images() -> list[Sample]:
        samples = []
        for start in range(0, len(requests), args.batch_size):
            chunk = requests[start:start + args.batch_size]
            generators = [torch.Generator("cpu").manual_seed(image_seed(0, r.prompt_index, r.sample_index))
                          for r in chunk]
            with torch.inference_mode():
                output = model.pipeline(prompt=[r.prompt for r in chunk], generator=generators, output_type="np",
                                        **call_kwargs(spec.family, sampling, len(chunk)))
            samples += [Sample(r, 0, image, Path("-")) for r, image in zip(chunk, to_uint8(output.images),
                                                                          strict=True)]
        return samples

    references = images()
    suite.score(references, references if suite.needs_reference else None).metrics[metric_name]
    for ablation in ablations_for(model.transformer, "block"):
        with skip(model.transformer, ablation):
            samples = images()
        suite.score(samples, references if suite.needs_reference else None).metrics[metric_name]
    bare = time.perf_counter() - started

    ratio = analysis / bare
    verdict = "ok" if ratio <= REQUIRED_RATIO else "FAIL"
    print(f"{args.model}, {metric}, {len(requests)} images x {len(ablations_for(model.transformer, 'block')) + 1} "
          f"sets: analyze {analysis:.1f} s, bare generation + scoring {bare:.1f} s, ratio {ratio:.3f} "
          f"(required <= {REQUIRED_RATIO}): {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
