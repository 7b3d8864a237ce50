"""Contribution analysis (`harness analyze`): how much a metric drops when one block, or one sub-component of a
block, is removed.

Each removal is an in-place, reversible skip (`harness.models.surgery`), so the pipeline is loaded once. Images go
through the run cache: the base images are the same ones `harness run` makes, and every ablation's images are cached
under its own chain entry ("ablate", key). Finished ablations' scores are kept in a progress file, so an interrupted
analysis resumes where it stopped. The result is a ranking file (JSON, `RANKING_FORMAT`) and a heatmap PNG.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.commands.setup import GenerationOptions
from harness.errors import UsageError
from harness.ranking import HEATMAP_FILE, RANKING_FILE, Granularity, Ranking, ablations_for, heatmap_png


@dataclass
class AnalyzeOptions(GenerationOptions):
    metric: str | None = None  # <suite>/<metric>; default: the model's contribution_metric
    granularity: Granularity = "block"
    output_dir: Path | None = None  # default: <cache_dir>/analysis/<model>-<digest>


def analyze(options: AnalyzeOptions) -> Path:
    """Run (or resume) a contribution analysis; returns the path of the ranking file."""
    from harness.commands.setup import (
        instantiate,
        open_model,
        process_context,
        refuse_image_scores_on_random_weights,
    )
    from harness.generation import GenerationSetup, ImageCache, generate, load_samples
    from harness.metrics import lookup
    from harness.models.loading import resolve_model
    from harness.models.surgery import skip
    from harness.params import override_params, parse_set_options
    from harness.registry import SUITES
    from harness.results import dumps, write_atomic

    if options.granularity not in ("block", "component"):
        raise UsageError(f"--granularity '{options.granularity}' is not one of block, component")
    spec = resolve_model(options.model)
    metric_key = options.metric or spec.contribution_metric
    metric = lookup(metric_key)
    suite_name, metric_name = metric_key.split("/", 1)
    settings = parse_set_options(options.settings, ["sampling", suite_name])
    _, context = process_context(options)
    (suite,) = instantiate(SUITES, [suite_name], settings, context)
    refuse_image_scores_on_random_weights(options.weights, spec, [suite])  # the analysis scores images
    if suite.kind != "images":
        raise UsageError(f"{suite_name} measures the pipeline, it scores no images: rank removals by an image "
                         f"metric, e.g. --metric {spec.contribution_metric}")
    if options.output_dir is not None:
        from harness.results import check_output_folder

        check_output_folder(options.output_dir, "--out", "the ranking")
    requests = suite.requests(options.limit)
    override_params(spec.sampling, settings["sampling"], "sampling")  # fail before loading

    model = open_model(spec, options.weights, context, options.dtype, settings["sampling"])
    sampling = model.spec.sampling
    options = dataclasses.replace(options, batch_size=options.batch_size or model.spec.batch_size)
    cache = ImageCache(context.cache_dir)
    base = GenerationSetup.for_model(model, sampling, options.seed_mode, options.seed)  # type: ignore[arg-type]
    identity = json.dumps({"setup": base.digest(), "metric": metric_key, "granularity": options.granularity,
                           "suite": suite.resolved_params(), "limit": options.limit,
                           "batch_size": options.batch_size}, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    folder = options.output_dir or options.cache_dir / "analysis" / f"{model.spec.name}-{digest}"
    progress_path = folder / "progress.json"
    done: dict[str, float] = {}
    if progress_path.is_file():
        done = _read_progress(progress_path, identity)

    def images(setup: GenerationSetup, label: str) -> list[Any]:
        generate(model, setup, requests, cache, batch_size=options.batch_size, sampling=sampling,
                 description=label, progress=options.progress)
        return load_samples(cache, setup, requests, options.batch_size)

    started = time.perf_counter()
    references = images(base, "original")
    base_score = suite.evaluate(references, references if suite.needs_reference else None).metrics[metric_name].value
    if not math.isfinite(base_score):
        raise UsageError(f"{metric_key} of the uncompressed model is {base_score} ({suite_name} compares its images "
                         "with themselves): every removal would drop it infinitely and the ranking would order blocks "
                         "by index. Rank by a metric with a finite base score, e.g. --metric fidelity/ssim")
    folder.mkdir(parents=True, exist_ok=True)
    ablations = ablations_for(model.transformer, options.granularity)
    for number, ablation in enumerate(ablations, 1):
        if ablation.key in done:
            continue
        setup = dataclasses.replace(base, chain=(("ablate", ablation.key),))
        with skip(model.transformer, ablation):
            samples = images(setup, f"ablation {number}/{len(ablations)} ({ablation.key})")
        result = suite.evaluate(samples, references if suite.needs_reference else None)
        done[ablation.key] = result.metrics[metric_name].value
        write_atomic(progress_path, dumps({"identity": identity, "scores": done}).encode())

    from harness.environment import package_versions
    from harness.models.spec import dtype_name
    from harness.models.topology import block_topology

    ranking = Ranking(
        metric_key, metric.higher_is_better, options.granularity, base_score,
        {a.key: done[a.key] for a in ablations},
        model={"name": model.spec.name, "fingerprint": model.fingerprint, "source": model.source},
        details={"created": datetime.now(timezone.utc).isoformat(), "samples": len(requests),
                 "block_kinds": {str(b.index): b.kind for b in block_topology(model.transformer)},
                 "limit": options.limit, "suite_params": suite.resolved_params(), "sampling": sampling.as_dict(),
                 "seed": options.seed, "seed_mode": options.seed_mode, "batch_size": options.batch_size,
                 "device": str(model.device), "dtype": dtype_name(model.dtype),
                 "seconds_this_session": round(time.perf_counter() - started, 1),
                 "versions": package_versions()},
    )
    write_atomic(folder / HEATMAP_FILE, heatmap_png(ranking))
    ranking_path = folder / RANKING_FILE
    write_atomic(ranking_path, (dumps(ranking.as_json()) + "\n").encode())
    return ranking_path


def _read_progress(path: Path, identity: str) -> dict[str, float]:
    """The finished ablations' scores of an earlier run of the same analysis; a damaged or foreign progress file is
    ignored with a warning naming it (its ablations are scored again), never a crash."""
    from harness.results import from_json_safe

    try:
        saved = from_json_safe(json.loads(path.read_text()))
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        if saved.get("identity") != identity:
            return {}
        scores = saved["scores"]
        if not isinstance(scores, dict) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                                   and not isinstance(v, bool) for k, v in scores.items()):
            raise ValueError("its scores are not a map of ablation keys to numbers")
        return {k: float(v) for k, v in scores.items()}
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        print(f"harness: ignoring the damaged progress file {path} ({exc}): scoring its ablations again",
              file=sys.stderr)
        return {}
