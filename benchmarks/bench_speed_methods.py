#!/usr/bin/env python
"""Speed methods on the reference model: step caches at several settings, int8 activations and torch.compile, each
against the base model (and int8 activations against weight-only int8), quality and latency side by side in one run.

Quality: each setting's geneval-shapes run of the reference-table recipe (553 prompts x 2 images, batch 16), found
in `--results` or measured into it (cached images are reused); the change of `overall` against the base run with its
95% paired-bootstrap interval over prompts, and the transformer calls computed per image. Latency: every setting's
pipeline is built in this one process and timed call after call, the settings in a rotating order each round, after
warm-up rounds; the end-to-end speed-up is the median over rounds of (base call / setting call) of the same round,
so drifts of a shared CPU cancel. Each timed call runs in its own denoising scope, as the harness runs a batch.
A compiled setting's compile time is its own first call's, recorded when it is built (`compile_seconds`); its timed
calls are steady-state ones.

Usage: python benchmarks/bench_speed_methods.py [--results results/reference/runs] [--rounds 15] [--batch-size 1]
Run it alone on the machine: the latency ratios are only as quiet as the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from harness.commands.compare import bootstrap_change, load_run

METRIC = "geneval-shapes/overall"
# the reference-table recipe's rows of these methods, each against its base row (and int8dq against weight-only int8)
SPEED_METHODS = ("none", "fbcache", "taylorseer", "pab", "int8dq", "torchao-int8", "int8", "compile",
                 "fbcache+compile")
WEIGHT_ONLY = "torchao-int8"


def settings_of_table() -> list[tuple[str, str, tuple[str, ...]]]:
    """(label, --method, --set values) of the recipe's rows of SPEED_METHODS, the recipe's common settings first."""
    from harness.commands import recipe

    table = recipe.get("reference-table")
    return [(" ".join([entry.method, *(s.split(".", 1)[1] for s in entry.settings)]), entry.method,
             (*table.settings, *entry.settings)) for entry in table.runs if entry.method in SPEED_METHODS]


def quality_run(method: str, settings: tuple[str, ...], results: Path, cache_dir: Path | None,
                limit: int | None) -> Path:
    """The setting's finished geneval-shapes run in `results`, measured there first if it is missing."""
    from harness.commands import recipe
    from harness.commands.run import RunOptions, run
    from harness.context import default_cache_dir

    table = recipe.get("reference-table")
    path = run(RunOptions(model=table.model, methods=method.split("+"), suites=list(table.suites), limit=limit,
                          seed_mode=table.seed_mode, batch_size=table.batch_size, output_dir=results,
                          cache_dir=cache_dir or default_cache_dir(), settings=list(settings), progress=False,
                          skip_finished=True))
    assert path is not None
    return path.parent


def build_pipeline(method: str, settings: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """The reference model with the setting's chain applied, as `harness run` applies it, and each step's cost."""
    from harness.commands.setup import instantiate_chain
    from harness.context import Context
    from harness.models.loading import load_model, resolve_model
    from harness.params import parse_set_options

    spec = resolve_model("reference")
    model = load_model(spec, weights=None, device="cpu")
    methods = [] if method == "none" else method.split("+")
    costs = {}
    for compressor in instantiate_chain(methods, parse_set_options(list(settings), methods), Context()):
        costs[compressor.name] = compressor.apply(model)
    return model, costs


def time_call(model: Any, batch_size: int) -> float:
    """Seconds of one pipeline call (text encoding, every step, VAE decode) at the model's sampling."""
    import torch

    from harness.models.denoising import denoising_scope

    sampling = model.spec.sampling
    generator = torch.Generator("cpu").manual_seed(0)
    started = time.perf_counter()
    with torch.inference_mode(), denoising_scope(model.transformer):
        model.pipeline(prompt=["a red circle left of a blue square"] * batch_size, generator=generator,
                       output_type="np", **model.family.call_kwargs(sampling, batch_size))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results/reference/runs"),
                        help="where the settings' geneval-shapes runs are found or written")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--limit", type=int, help="first N prompts only (a smoke test: other runs than the table's)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    settings_list = settings_of_table()
    runs = {label: load_run(quality_run(method, settings, args.results, args.cache_dir, args.limit))
            for label, method, settings in settings_list}
    built = {label: build_pipeline(method, settings) for label, method, settings in settings_list}
    models = {label: model for label, (model, _) in built.items()}
    labels = list(models)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for round_index in range(args.warmup + args.rounds):
        order = labels[round_index % len(labels):] + labels[:round_index % len(labels)]
        for label in order:
            elapsed = time_call(models[label], args.batch_size)
            if round_index >= args.warmup:
                times[label].append(elapsed)

    def speedup(over: str, label: str) -> float:
        return statistics.median(a / b for a, b in zip(times[over], times[label], strict=True))

    rows = []
    for label in labels:
        run, base = runs[label], runs["none"]
        interval = bootstrap_change(run, base, METRIC) if label != "none" else None
        calls = next((s.transformer_calls for s in run.results.suites.values() if s.transformer_calls), None)
        rows.append({"setting": label, "run": run.path.name, METRIC: run.value(METRIC),
                     "change": run.value(METRIC) - base.value(METRIC), "ci95": interval,
                     "computed_calls_per_image": calls and calls["computed_calls_per_image"],
                     "median_ms": 1000 * statistics.median(times[label]), "speedup": speedup("none", label)})
    print(f"reference model, {args.rounds} rounds (+{args.warmup} warm-up), batch {args.batch_size}; quality: "
          f"{METRIC} over {runs['none'].results.suites['geneval-shapes'].samples_scored} images")
    print(f"{'setting':34s} {'overall':>8s} {'change':>8s} {'95% CI':>19s} {'calls':>6s} {'ms':>8s} {'speed-up':>8s}")
    for row in rows:
        ci = f"[{row['ci95'][0]:+.3f}, {row['ci95'][1]:+.3f}]" if row["ci95"] else "-"
        calls = f"{row['computed_calls_per_image']:.1f}" if row["computed_calls_per_image"] is not None else "-"
        print(f"{row['setting']:34s} {row[METRIC]:8.4f} {row['change']:+8.4f} {ci:>19s} {calls:>6s} "
              f"{row['median_ms']:8.1f} {row['speedup']:7.2f}x")
    for label, (_, costs) in built.items():
        if "compile" in costs:
            cost = costs["compile"]
            print(f"{label}: compile {cost['compile_seconds']:.1f} s (first forward {cost['first_forward_seconds']:.1f}"
                  f" s, then {1000 * cost['compiled_forward_seconds']:.1f} ms)")
            next(row for row in rows if row["setting"] == label)["compile"] = cost
    weight_only = WEIGHT_ONLY
    versus = {"speedup": speedup(weight_only, "int8dq"),
              "change": runs["int8dq"].value(METRIC) - runs[weight_only].value(METRIC),
              "ci95": bootstrap_change(runs["int8dq"], runs[weight_only], METRIC)}
    ci = versus["ci95"]
    print(f"int8dq against weight-only {WEIGHT_ONLY}: speed-up {versus['speedup']:.2f}x, {METRIC} change "
          f"{versus['change']:+.4f}" + (f" (95% CI {ci[0]:+.3f} to {ci[1]:+.3f})" if ci else ""))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "int8dq_vs_weight_only": versus}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
