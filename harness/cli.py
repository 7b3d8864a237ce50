"""The `harness` command. Imports stay light here: torch and diffusers load inside the commands that need them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UsageError
from harness.registry import COMPRESSORS, DEFAULT_MODEL, MODELS, SUITES

REGISTRIES = {"models": MODELS, "methods": COMPRESSORS, "suites": SUITES}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def _split(text: str, sep: str) -> list[str]:
    parts = [part.strip() for part in text.split(sep)]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"'{text}' has an empty name (names are separated by '{sep}')")
    return parts


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="harness",
        description="Compress text-to-image diffusion transformers (SD3.5, FLUX) and measure what it costs.",
        epilog="Example: harness run --method none --suite fidelity   (the tiny default model, on the CPU)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="list registered models, methods and suites")
    listing.add_argument("kind", nargs="?", choices=sorted(REGISTRIES), help="only this kind (default: all)")

    run = commands.add_parser(
        "run", help="compress a model, generate images (cached) and score them with suites",
        description="Apply a compressor chain to a model, generate each suite's images (cached, resumable, "
        "shardable with `accelerate launch -m harness run ...`) and write results/runs/<run-id>/results.json. "
        "The last line printed is the path of results.json.",
    )
    _add_model_arguments(run)
    run.add_argument("--method", default="none", type=lambda t: _split(t, "+"),
                     help="compressor chain applied in order, e.g. 'none' or 'a+b' (default: none)")
    run.add_argument("--suite", default="fidelity", type=lambda t: _split(t, ","),
                     help="comma-separated suites (default: fidelity)")
    _add_generation_arguments(run)
    run.add_argument("--emulate-device", metavar="PROFILE",
                     help="with the memory suite on a GPU: cap the allocator at this card's memory (e.g. rtx4070); "
                     "running out is recorded as 'does not fit' (same as --set memory.emulate_device=PROFILE)")
    run.add_argument("--output-dir", type=Path, default=Path("results/runs"),
                     help="where run folders are written (default: results/runs)")
    run.add_argument("--set", dest="settings", action="append", default=[], metavar="SCOPE.KEY=VALUE",
                     help="set a parameter of a method, a suite or the sampling, e.g. "
                     "--set sampling.num_inference_steps=8 --set fidelity.samples_per_prompt=2 (repeatable)")

    compress = commands.add_parser(
        "compress", help="apply a compressor chain and save the compressed pipeline",
        description="Apply a compressor chain to a model and save the pipeline (diffusers layout, safetensors) with "
        "its provenance (base model, fingerprint, recipe, costs), so that `--model DIR` loads it back and "
        "`fidelity` compares it with its base model.",
    )
    _add_model_arguments(compress)
    compress.add_argument("--method", required=True, type=lambda t: _split(t, "+"),
                          help="compressor chain applied in order, e.g. 'hierarchicalprune+nf4'")
    compress.add_argument("--save", type=Path, required=True, help="new folder for the compressed pipeline")
    compress.add_argument("--cache-dir", type=Path, default=None, help="cache for analyses and distillation")
    compress.add_argument("--set", dest="settings", action="append", default=[], metavar="METHOD.KEY=VALUE",
                          help="set a parameter of a method, e.g. --set hierarchicalprune.budget=0.3 (repeatable)")
    compress.add_argument("--no-progress", action="store_true", help="no progress bars")

    estimate = commands.add_parser(
        "estimate", help="weight bytes and transformer FLOPs of a model and a method, without downloading weights",
        description="Build the model's architecture on the meta device from its preset configs, apply the "
        "structural part of the compressor chain (block removal, quantised storage) and report weight bytes per "
        "component (parameters, persistent buffers, quantisation statistics) and transformer FLOPs per denoising "
        "step at the preset's sampling settings.",
    )
    estimate.add_argument("--model", default=DEFAULT_MODEL, help=f"a registered model (default: {DEFAULT_MODEL})")
    estimate.add_argument("--method", default="none", type=lambda t: _split(t, "+"),
                          help="compressor chain, e.g. 'hierarchicalprune+nf4' (default: none)")
    estimate.add_argument("--set", dest="settings", action="append", default=[], metavar="METHOD.KEY=VALUE",
                          help="set a parameter of a method (repeatable)")
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")

    check = commands.add_parser(
        "check", help="fail (exit 1) when a run's metrics dropped against a baseline run by more than allowed",
        description="Compare a run with a baseline run, metric by metric. A drop follows the metric's direction "
        "(a latency or memory increase is a drop). Exit 0 when every metric is within its tolerance, 1 when one "
        "is not, 2 on bad input. Example: harness check results/runs/NEW --baseline results/runs/BASE "
        "--max-drop geneval-shapes/overall=0.02 --max-drop latency/end_to_end=10%%",
    )
    check.add_argument("run", type=Path, help="the run folder (or its results.json) to judge")
    check.add_argument("--baseline", type=Path, required=True, help="the baseline run folder or results.json")
    check.add_argument("--max-drop", dest="tolerances", action="append", default=[], metavar="SUITE/METRIC=TOL",
                       help="allowed drop, absolute in the metric's unit, or relative with a trailing %% "
                       "(repeatable)")
    check.add_argument("--significant", action="store_true",
                       help="fail only when the drop is also significant (95%% paired bootstrap over prompts)")
    check.add_argument("--json", action="store_true", help="print the verdicts as JSON")

    leaderboard = commands.add_parser(
        "leaderboard", help="tables, plots and image grids comparing every run under a results folder",
        description="Collect every results.json under RESULTS_DIR (newest run per model, method and suites), "
        "compare each model's runs with its base run (method none) and write LEADERBOARD.md, leaderboard.csv and "
        "a self-contained leaderboard.html (sortable table, quality-vs-memory and quality-vs-latency plots with "
        "the Pareto front, per-prompt image grids).",
    )
    leaderboard.add_argument("results_dir", nargs="?", type=Path, default=Path("results"),
                             help="folder searched for runs (default: results)")
    leaderboard.add_argument("--out", type=Path, help="where to write the three files (default: RESULTS_DIR)")

    recipe = commands.add_parser(
        "recipe", help="run a named comparison (several methods, several suites) and build its leaderboard",
        description="Run every entry of a recipe through `harness run` (cached and resumable: rerun the same command "
        "after an interruption; runs already in --output-dir are skipped) and write the leaderboard of --output-dir. "
        "Recipes: sd3.5-large-turbo-paper (the HierarchicalPrune table on your GPU), reference-table (every method on "
        "the reference model).",
    )
    recipe.add_argument("name", help="the recipe")
    recipe.add_argument("--dry-run", action="store_true",
                        help="print the plan: commands, images per suite, GPU weights per run (no weights needed)")
    recipe.add_argument("--limit", type=_positive_int, help="use only the first N prompts of each suite")
    recipe.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    recipe.add_argument("--output-dir", type=Path, help="default: results/recipes/<name>")
    recipe.add_argument("--cache-dir", type=Path, default=None, help="image and model cache")
    recipe.add_argument("--set", dest="settings", action="append", default=[], metavar="SCOPE.KEY=VALUE",
                        help="added to every run, e.g. --set geneval.backend=official (repeatable)")
    recipe.add_argument("--no-progress", action="store_true", help="no progress bars")

    analyze = commands.add_parser(
        "analyze", help="contribution analysis: score the model with each block or sub-component removed",
        description="Remove each transformer block (or each sub-component of each block) in turn, in place and "
        "reversibly, generate a suite's images (cached) and score them with one metric. Writes a ranking file "
        "(contribution_ranking.json, read by hierarchicalprune and depth-importance) and a heatmap PNG. Rerunning "
        "resumes where an interrupted analysis stopped. The last line printed is the ranking file's path.",
    )
    _add_model_arguments(analyze)
    analyze.add_argument("--metric", help="<suite>/<metric> to score removals with (default: the model's, "
                         "geneval-shapes/overall for the reference model, hpsv2/overall for real models)")
    analyze.add_argument("--granularity", choices=["block", "component"], default="block",
                         help="remove whole blocks, or each sub-component of each block (default: block)")
    _add_generation_arguments(analyze)
    analyze.add_argument("--out", type=Path, default=None,
                         help="folder for the ranking, heatmap and progress (default: <cache dir>/analysis/...)")
    analyze.add_argument("--set", dest="settings", action="append", default=[], metavar="SCOPE.KEY=VALUE",
                         help="set a parameter of the metric's suite or the sampling (repeatable)")

    reference = commands.add_parser("reference", help="the embedded reference model")
    reference_commands = reference.add_subparsers(dest="reference_command", metavar="ACTION", required=True)
    train = reference_commands.add_parser(
        "train", help="train the reference model from scratch (resumable)",
        description="Train the reference model from scratch with a fixed seed and save it in diffusers format into "
        "--out, with its training log and model card. Rerunning with the same --work-dir resumes from the last "
        "checkpoint.",
    )
    train.add_argument("--out", type=Path, required=True, help="folder for the trained pipeline, log and card")
    train.add_argument("--work-dir", type=Path, default=None,
                       help="checkpoints (default: <cache dir>/reference-train)")
    train.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    train.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                       help="override a training setting, e.g. --set steps=2000 (see harness/reference/train.py)")
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="registered model name, local diffusers folder or "
                        f"Hub repo id (default: {DEFAULT_MODEL})")
    parser.add_argument("--weights", help="local diffusers folder holding the weights of a registered model")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="default: the model's")


def _add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.generation import SEED_MODES
    from harness.runner import default_cache_dir

    parser.add_argument("--limit", type=_positive_int, help="use only the first N prompts of each suite")
    parser.add_argument("--seed", type=_int, default=0, help="base seed (default: 0)")
    parser.add_argument("--seed-mode", choices=SEED_MODES, default="per-image",
                        help="per-image: a seed per (prompt, sample); per-prompt: one generator per prompt seeded "
                        "with --seed, as GenEval's and HierarchicalPrune's scripts do (default: per-image)")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="images per batch (default: the model's: 16 for the reference model, else 4)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"image cache (default: $HARNESS_CACHE_DIR or {default_cache_dir()})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _list(kind: str | None) -> None:
    for name_of_kind, registry in REGISTRIES.items():
        if kind not in (None, name_of_kind):
            continue
        if kind is None:
            print(f"{name_of_kind}:")
        names = registry.names()
        width = max(map(len, names), default=0)
        for name in names:
            origin = registry.entry(name).origin
            suffix = "" if origin == "builtin" else f" [{origin}]"
            print(f"{'  ' if kind is None else ''}{name:<{width}}  {registry.describe(name)}{suffix}")


def _run(args: argparse.Namespace) -> None:
    from harness.runner import RunOptions, default_cache_dir, run

    settings = list(args.settings)
    if args.emulate_device:
        if "memory" not in args.suite and "device" not in args.suite and "full" not in args.suite:
            raise UsageError("--emulate-device caps the GPU for the memory suite: add --suite memory (or device)")
        settings.append(f"memory.emulate_device={args.emulate_device}")
    options = RunOptions(
        model=args.model, weights=args.weights, methods=args.method, suites=args.suite, limit=args.limit,
        seed=args.seed, seed_mode=args.seed_mode, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
        output_dir=args.output_dir, cache_dir=args.cache_dir or default_cache_dir(), settings=settings,
        progress=not args.no_progress,
    )
    path = run(options)
    if path is not None:
        from harness.results import load_results

        for key, value in load_results(path)["metrics"].items():
            print(f"{key} = {value:.4f}" if isinstance(value, float) else f"{key} = {value}")
        print(path)


def _compress(args: argparse.Namespace) -> None:
    from harness.runner import RunOptions, compress, default_cache_dir

    options = RunOptions(model=args.model, weights=args.weights, methods=args.method, device=args.device,
                         dtype=args.dtype, cache_dir=args.cache_dir or default_cache_dir(), settings=args.settings,
                         progress=not args.no_progress)
    print(compress(options, args.save))


def _estimate(args: argparse.Namespace) -> None:
    import json

    from harness.devices import GIB
    from harness.estimate import estimate

    report = estimate(args.model, args.method, args.settings)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    before, after = report["weight_bytes"]["before"], report["weight_bytes"]["after"]
    print(f"{report['model']} with {report['method']} ({report['dtype']}); weights in GiB (2^30 bytes)")
    print(f"{'component':<16} {'before':>10} {'after':>10}")
    for name in before:
        print(f"{name:<16} {before[name] / GIB:>10.3f} {after[name] / GIB:>10.3f}")
    print(f"{'total':<16} {sum(before.values()) / GIB:>10.3f} {sum(after.values()) / GIB:>10.3f}")
    flops = report["transformer_flops_per_step"]
    ratio = flops["after"]["total"] / flops["before"]["total"]
    print(f"transformer FLOPs per denoising step: {flops['before']['total'] / 1e12:.2f} T -> "
          f"{flops['after']['total'] / 1e12:.2f} T ({ratio:.1%}); batch {flops['before']['batch']}, "
          f"{report['sampling']['height']}x{report['sampling']['width']}, {report['text_tokens']} text tokens")
    for step in report["chain"]:
        print(f"{step['name']}: {json.dumps(step['structure'])}")


def _check(args: argparse.Namespace) -> int:
    import json

    from harness.compare import Tolerance, check, format_check

    report = check(args.run, args.baseline, [Tolerance.parse(t) for t in args.tolerances], args.significant)
    print(json.dumps(report, indent=2) if args.json else format_check(report))
    return 0 if report["passed"] else 1


def _leaderboard(args: argparse.Namespace) -> None:
    from harness.leaderboard import write

    for path in write(args.results_dir, args.out).values():
        print(path)


def _recipe(args: argparse.Namespace) -> None:
    from harness import recipes
    from harness.runner import default_cache_dir

    recipe = recipes.get(args.name)
    if args.dry_run:
        print(recipes.format_plan(recipe, recipes.plan(recipe, args.limit, args.settings)))
        return
    paths = recipes.run_recipe(recipe, args.limit, args.settings, args.output_dir or Path("results/recipes") /
                               recipe.name, args.cache_dir or default_cache_dir(), args.device, not args.no_progress)
    for path in paths.values():
        print(path)


def _analyze(args: argparse.Namespace) -> None:
    from harness.analysis import AnalyzeOptions, analyze, load_ranking
    from harness.runner import default_cache_dir

    path = analyze(AnalyzeOptions(
        model=args.model, weights=args.weights, metric=args.metric, granularity=args.granularity, limit=args.limit,
        seed=args.seed, seed_mode=args.seed_mode, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
        cache_dir=args.cache_dir or default_cache_dir(), output_dir=args.out, settings=args.settings,
        progress=not args.no_progress,
    ))
    ranking = load_ranking(path)
    print(f"{ranking.metric} without removal: {ranking.base_score:.4f}")
    print("removal        score     drop")
    for key in ranking.order:
        print(f"{key:<12} {ranking.scores[key]:>8.4f} {ranking.drop(key):>+8.4f}")
    print(path)


def _reference_train(args: argparse.Namespace) -> None:
    import torch

    from harness.params import override_params, parse_set_options
    from harness.reference.train import TrainConfig, train
    from harness.runner import default_cache_dir

    settings = parse_set_options([f"train.{s}" for s in args.settings], ["train"])["train"]
    config = override_params(TrainConfig(), settings, "train")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(train(args.out, args.work_dir or default_cache_dir() / "reference-train", config, device))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            _list(args.kind)
        elif args.command == "run":
            _run(args)
        elif args.command == "compress":
            _compress(args)
        elif args.command == "recipe":
            _recipe(args)
        elif args.command == "leaderboard":
            _leaderboard(args)
        elif args.command == "check":
            return _check(args)
        elif args.command == "estimate":
            _estimate(args)
        elif args.command == "analyze":
            _analyze(args)
        elif args.command == "reference":
            _reference_train(args)
    except UsageError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
