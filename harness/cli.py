"""The `harness` command: one `Command` per subcommand, each registering its own arguments and handling them.

Imports stay light here: torch and diffusers load inside the handlers that need them, so `--help` and `list` answer
quickly. Options objects are built from the parsed arguments by field name (`options_from`): an argument's `dest` is
the options field it sets.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import UsageError
from harness.registry import COMPRESSORS, DEFAULT_MODEL, MODELS, SUITES

REGISTRIES = {"models": MODELS, "methods": COMPRESSORS, "suites": SUITES}


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def _seed(text: str) -> int:
    seed = _int(text)
    if not 0 <= seed < 2**63:  # torch generators take 64-bit seeds; per-image seeds are derived below 2**63
        raise argparse.ArgumentTypeError(f"'{text}' is not a seed between 0 and 2**63-1")
    return seed


def _names(sep: str) -> Any:
    def split(text: str) -> list[str]:
        parts = [part.strip() for part in text.split(sep)]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"'{text}' has an empty name (names are separated by '{sep}')")
        return parts

    return split


def options_from(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """An options dataclass from parsed arguments: each field takes the argument of the same name when it was given
    (None leaves the field's default), then `values`."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None}
    return cls(**{**given, **values})


def add_settings(parser: argparse.ArgumentParser, example: str, metavar: str = "SCOPE.KEY=VALUE") -> None:
    """`--set`, the one way to set a method's, a suite's or the sampling's parameters."""
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar=metavar,
                        help=f"set a parameter, e.g. --set {example} (repeatable)")


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def add_cache_dir(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"{what} (default: $HARNESS_CACHE_DIR or ~/.cache/dit-compression-harness)")


def add_method(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--method", dest="methods", required=required, default=None if required else ["none"],
                        type=_names("+"), help="compressor chain applied in order, e.g. 'none' or "
                        "'hierarchicalprune+nf4'" + ("" if required else " (default: none)"))


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="registered model name, local diffusers folder or "
                        f"Hub repo id (default: {DEFAULT_MODEL})")
    parser.add_argument("--weights", help="local diffusers folder holding the weights of a registered model; "
                        "beside a saved compressed model (--model DIR), the folder of its base model, if it moved; "
                        "'random' or 'random:SEED': the preset's architecture with seeded random weights, built on the "
                        "device without a download (device suites and structural methods only)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="default: the model's")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.generation import SEED_MODES

    parser.add_argument("--limit", type=_positive_int, help="use only the first N prompts of each suite")
    parser.add_argument("--seed", type=_seed, default=0, help="base seed, 0 to 2**63-1 (default: 0)")
    parser.add_argument("--seed-mode", choices=SEED_MODES, default="per-image",
                        help="per-image: a seed per (prompt, sample); per-prompt: one generator per prompt seeded "
                        "with --seed, as GenEval's and HierarchicalPrune's scripts do (default: per-image)")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="images per batch (default: the model's: 16 for the reference model, else 4)")
    add_cache_dir(parser, "image cache")
    add_progress(parser)


class Command:
    """A subcommand: its name and help, its arguments, and what it does (an exit code, or None for 0)."""

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str | None] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int | None:
        raise NotImplementedError


class List(Command):
    name = "list"
    help = "list registered models, methods and suites"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("kind", nargs="?", choices=sorted(REGISTRIES), help="only this kind (default: all)")
        parser.add_argument("--params", action="store_true",
                            help="under each method and suite, its parameters (--set NAME.KEY=VALUE): type and default")

    def run(self, args: argparse.Namespace) -> None:
        for name_of_kind, registry in REGISTRIES.items():
            if args.kind not in (None, name_of_kind):
                continue
            if args.kind is None:
                print(f"{name_of_kind}:")
            names = registry.names()
            width = max(map(len, names), default=0)
            for name in names:
                origin = registry.entry(name).origin
                suffix = "" if origin == "builtin" else f" [{origin}]"
                print(f"{'  ' if args.kind is None else ''}{name:<{width}}  {registry.describe(name)}{suffix}")
                if args.params and name_of_kind != "models":
                    indent = "    " if args.kind is None else "  "
                    for field in dataclasses.fields(registry.get(name).Params):
                        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
                        print(f"{indent}  {name}.{field.name}: {field.type} = {default!r}")


class Run(Command):
    name = "run"
    help = "compress a model, generate images (cached) and score them with suites"
    description = ("Apply a compressor chain to a model, generate each suite's images (cached, resumable, "
                   "shardable with `accelerate launch -m harness run ...`) and write results/runs/<run-id>/"
                   "results.json. The last line printed is the path of results.json.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_model_arguments(parser)
        add_method(parser)
        parser.add_argument("--suite", dest="suites", default=["fidelity"], type=_names(","),
                            help="comma-separated suites or groups (quality, device, full; default: fidelity)")
        add_generation_arguments(parser)
        parser.add_argument("--emulate-device", metavar="PROFILE",
                            help="with the memory suite on a GPU: cap the allocator at this card's memory (e.g. "
                            "rtx4070); running out is recorded as 'does not fit' (same as --set "
                            "memory.emulate_device=PROFILE)")
        parser.add_argument("--output-dir", type=Path, default=Path("results/runs"),
                            help="where run folders are written (default: results/runs)")
        add_settings(parser, "sampling.num_inference_steps=8 --set fidelity.samples_per_prompt=2")

    def run(self, args: argparse.Namespace) -> None:
        from harness.commands.run import RunOptions, run
        from harness.results import load_results

        settings = list(args.settings)
        if args.emulate_device:
            if not {"memory", "device", "full"} & set(args.suites):
                raise UsageError("--emulate-device caps the GPU for the memory suite: add --suite memory (or device)")
            settings.append(f"memory.emulate_device={args.emulate_device}")
        path = run(options_from(RunOptions, args, settings=settings))
        if path is not None:
            for key, value in load_results(path).metrics.items():
                print(f"{key} = {value:.4f}" if isinstance(value, float) else f"{key} = {value}")
            print(path)


class Compress(Command):
    name = "compress"
    help = "apply a compressor chain and save the compressed pipeline"
    description = ("Apply a compressor chain to a model and save the pipeline (diffusers layout, safetensors) with "
                   "its provenance (base model, fingerprint, recipe, costs), so that `--model DIR` loads it back "
                   "and `fidelity` compares it with its base model.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_model_arguments(parser)
        add_method(parser, required=True)
        parser.add_argument("--save", type=Path, required=True, help="new folder for the compressed pipeline")
        add_cache_dir(parser, "cache for analyses and distillation")
        add_settings(parser, "hierarchicalprune.budget=0.3", "METHOD.KEY=VALUE")
        add_progress(parser)

    def run(self, args: argparse.Namespace) -> None:
        from harness.commands.run import RunOptions, compress

        print(compress(options_from(RunOptions, args), args.save))


class Estimate(Command):
    name = "estimate"
    help = "weight bytes and transformer FLOPs of a model and a method, without downloading weights"
    description = ("Build the model's architecture on the meta device from its preset configs, apply the "
                   "structural part of the compressor chain (block removal, quantised storage) and report weight "
                   "bytes per component (parameters, persistent buffers, quantisation statistics) and transformer "
                   "FLOPs per denoising step at the preset's sampling settings.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", default=DEFAULT_MODEL, help=f"a registered model (default: {DEFAULT_MODEL})")
        add_method(parser)
        add_settings(parser, "hierarchicalprune.budget=0.3", "METHOD.KEY=VALUE")
        parser.add_argument("--json", action="store_true", help="print the estimate as JSON")

    def run(self, args: argparse.Namespace) -> None:
        import json

        from harness.commands.estimate import estimate, format_estimate

        report = estimate(args.model, args.methods, args.settings)
        print(json.dumps(report, indent=2) if args.json else format_estimate(report))


class Check(Command):
    name = "check"
    help = "fail (exit 1) when a run's metrics dropped against a baseline run by more than allowed"
    description = ("Compare a run with a baseline run, metric by metric. A drop follows the metric's direction "
                   "(a latency or memory increase is a drop). Exit 0 when every metric is within its tolerance, 1 "
                   "when one is not, 2 on bad input. Example: harness check results/runs/NEW --baseline "
                   "results/runs/BASE --max-drop geneval-shapes/overall=0.02 --max-drop latency/end_to_end=10%")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", type=Path, help="the run folder (or its results.json) to judge")
        parser.add_argument("--baseline", type=Path, required=True, help="the baseline run folder or results.json")
        parser.add_argument("--max-drop", dest="tolerances", action="append", default=[], metavar="SUITE/METRIC=TOL",
                            help="allowed drop, absolute in the metric's unit, or relative with a trailing %% "
                            "(repeatable)")
        parser.add_argument("--significant", action="store_true",
                            help="fail only when the drop is also significant (95%% paired bootstrap over prompts)")
        parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")

    def run(self, args: argparse.Namespace) -> int:
        import json

        from harness.commands.compare import Tolerance, check, format_check

        report = check(args.run, args.baseline, [Tolerance.parse(t) for t in args.tolerances], args.significant)
        print(json.dumps(report, indent=2) if args.json else format_check(report))
        return 0 if report["passed"] else 1


class Leaderboard(Command):
    name = "leaderboard"
    help = "tables, plots and image grids comparing every run under a results folder"
    description = ("Collect every results.json under RESULTS_DIR (newest run per model, method and suites), "
                   "compare each model's runs with its base run (method none) and write LEADERBOARD.md, "
                   "leaderboard.csv and a self-contained leaderboard.html (sortable table, quality-vs-memory and "
                   "quality-vs-latency plots with the Pareto front, per-prompt image grids).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("results_dir", nargs="?", type=Path, default=Path("results"),
                            help="folder searched for runs (default: results)")
        parser.add_argument("--out", type=Path, help="where to write the three files (default: RESULTS_DIR)")

    def run(self, args: argparse.Namespace) -> None:
        from harness.commands.leaderboard import write

        for path in write(args.results_dir, args.out).values():
            print(path)


class Recipe(Command):
    name = "recipe"
    help = "run a named comparison (several methods, several suites) and build its leaderboard"
    description = ("Run every entry of a recipe through `harness run` (cached and resumable: rerun the same command "
                   "after an interruption; runs already in --output-dir are skipped) and write the leaderboard of "
                   "--output-dir. Recipes: sd3.5-large-turbo-paper (the HierarchicalPrune table on your GPU), "
                   "reference-table (every method on the reference model), and for qwen-image, flux.2-dev, "
                   "z-image-turbo and chroma1-hd a HierarchicalPrune comparison that runs the contribution analysis "
                   "first (<model>-hierarchicalprune; on the paper's 100 HPSv2 prompts per style, or --limit where "
                   "fewer).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recipe", help="the recipe")
        parser.add_argument("--dry-run", action="store_true",
                            help="print the plan: commands, images per suite, GPU weights per run (no weights needed)")
        parser.add_argument("--limit", type=_positive_int, help="use only the first N prompts of each suite")
        parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
        parser.add_argument("--output-dir", type=Path, help="default: results/recipes/<name>")
        add_cache_dir(parser, "image and model cache")
        add_settings(parser, "geneval.backend=official (added to every run)")
        add_progress(parser)

    def run(self, args: argparse.Namespace) -> None:
        from harness.commands import recipe as recipes
        from harness.context import default_cache_dir

        recipe = recipes.get(args.recipe)
        if args.dry_run:
            print(recipes.format_plan(recipe, recipes.plan(recipe, args.limit, args.settings),
                                      recipes.analysis_plan(recipe, args.limit)))
            return
        paths = recipes.run_recipe(recipe, args.limit, args.settings,
                                   args.output_dir or Path("results/recipes") / recipe.name,
                                   args.cache_dir or default_cache_dir(), args.device, args.progress)
        for path in paths.values():
            print(path)


class Analyze(Command):
    name = "analyze"
    help = "contribution analysis: score the model with each block or sub-component removed"
    description = ("Remove each transformer block (or each sub-component of each block) in turn, in place and "
                   "reversibly, generate a suite's images (cached) and score them with one metric. Writes a ranking "
                   "file (contribution_ranking.json, read by hierarchicalprune and depth-importance) and a heatmap "
                   "PNG. Rerunning resumes where an interrupted analysis stopped. The last line printed is the "
                   "ranking file's path.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_model_arguments(parser)
        parser.add_argument("--metric", help="<suite>/<metric> to score removals with (default: the model's, "
                            "geneval-shapes/overall for the reference model, hpsv2/overall for real models)")
        parser.add_argument("--granularity", choices=["block", "component"], default="block",
                            help="remove whole blocks, or each sub-component of each block (default: block)")
        add_generation_arguments(parser)
        parser.add_argument("--out", dest="output_dir", type=Path, default=None,
                            help="folder for the ranking, heatmap and progress (default: <cache dir>/analysis/...)")
        add_settings(parser, "sampling.num_inference_steps=8 (the metric's suite or the sampling)")

    def run(self, args: argparse.Namespace) -> None:
        from harness.commands.analyze import AnalyzeOptions, analyze
        from harness.ranking import load_ranking

        ranking = load_ranking(path := analyze(options_from(AnalyzeOptions, args)))
        print(f"{ranking.metric} without removal: {ranking.base_score:.4f}")
        print("removal        score     drop")
        for key in ranking.order:
            print(f"{key:<12} {ranking.scores[key]:>8.4f} {ranking.drop(key):>+8.4f}")
        print(path)


class ReferenceTrain(Command):
    name = "train"
    help = "train the reference model from scratch (resumable)"
    description = ("Train the reference model from scratch with a fixed seed and save it in diffusers format into "
                   "--out, with its training log and model card. Rerunning with the same --work-dir resumes from "
                   "the last checkpoint.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, required=True, help="folder for the trained pipeline, log and card")
        parser.add_argument("--work-dir", type=Path, default=None,
                            help="checkpoints (default: <cache dir>/reference-train)")
        parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
        add_settings(parser, "steps=2000 (a field of TrainConfig in harness/commands/reference_train.py)",
                     "KEY=VALUE")

    def run(self, args: argparse.Namespace) -> None:
        import torch

        from harness.commands.reference_train import TrainConfig, train
        from harness.context import default_cache_dir
        from harness.params import override_params, parse_set_options

        settings = parse_set_options([f"train.{s}" for s in args.settings], ["train"])["train"]
        config = override_params(TrainConfig(), settings, "train")
        from harness.commands.setup import distributed_state, resolve_device

        device = resolve_device(args.device, distributed_state(args.device)) if args.device else (
            "cuda" if torch.cuda.is_available() else "cpu")
        print(train(args.out, args.work_dir or default_cache_dir() / "reference-train", config, device))


COMMANDS: tuple[Command, ...] = (List(), Run(), Compress(), Estimate(), Check(), Leaderboard(), Recipe(), Analyze())
REFERENCE_COMMANDS: tuple[Command, ...] = (ReferenceTrain(),)


def _register(subparsers: Any, command: Command) -> None:
    parser = subparsers.add_parser(command.name, help=command.help, description=command.description)
    command.add_arguments(parser)
    parser.set_defaults(handler=command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Compress text-to-image diffusion transformers (SD3.5, FLUX) and measure what it costs.",
        epilog="Example: harness run --method none --suite fidelity   (the reference model, on the CPU)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        _register(commands, command)
    reference = commands.add_parser("reference", help="the embedded reference model")
    actions = reference.add_subparsers(dest="reference_command", metavar="ACTION", required=True)
    for command in REFERENCE_COMMANDS:
        _register(actions, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler.run(args) or 0
    except UsageError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
