"""Recipes: a named list of runs that together reproduce a comparison, ending in the leaderboard.

`harness recipe NAME` runs each entry through `harness run` and then writes the leaderboard of its output folder.
An interrupted recipe resumes where it stopped: an entry already measured in the output folder (same weights,
settings and device type) is skipped, and every image and distilled model of the others is cached.
`--dry-run` prints the plan instead: each run's command, its images per suite, and the weights it needs on the GPU
(from `harness estimate`: weights only; activations come on top).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressors.hierarchicalprune import HierarchicalPruneParams
from harness.errors import UsageError, unknown_name_error

_DISTILL_STEPS = HierarchicalPruneParams.distill_steps
_FBCACHE_THRESHOLDS = ("0.1", "0.15", "0.2", "0.3")


@dataclass(frozen=True)
class RecipeRun:
    method: str
    settings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    model: str
    suites: tuple[str, ...]
    runs: tuple[RecipeRun, ...]
    settings: tuple[str, ...] = ()  # for every run (suite parameters)
    seed_mode: str = "per-image"
    batch_size: int = 4
    notes: tuple[str, ...] = field(default_factory=tuple)
    # run `harness analyze` (the model's contribution metric) before the runs: hierarchicalprune then finds its
    # ranking in the cache, for models with no published cut
    analysis: bool = False
    analysis_limit: int | None = None  # prompts per suite of the analysis (None: as the runs); --limit caps it


_PAPER_BUDGET = "0.2"
# the paper's contribution analysis of whole blocks: HPSv2, 100 prompts per style (400 images per ablation)
_PAPER_ANALYSIS_PROMPTS = 100
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        name="sd3.5-large-turbo-paper",
        description="HierarchicalPrune's SD3.5 Large Turbo table: the original, the published 8-block cut with and "
        "without NF4, and the depth baselines at the same budget; GenEval and HPSv2 with the release's settings",
        model="sd3.5-large-turbo",
        suites=("geneval", "hpsv2", "latency", "memory"),
        runs=(
            RecipeRun("none"),
            RecipeRun("hierarchicalprune", ("hierarchicalprune.published_cut=true",
                                            "hierarchicalprune.distill_steps=0")),
            RecipeRun("hierarchicalprune+nf4", ("hierarchicalprune.published_cut=true",
                                                "hierarchicalprune.distill_steps=0")),
            RecipeRun("depth-last", (f"depth-last.budget={_PAPER_BUDGET}",)),
            RecipeRun("depth-uniform", (f"depth-uniform.budget={_PAPER_BUDGET}",)),
            RecipeRun("nf4"),
        ),
        # the release: GenEval 4 images per prompt from one generator per prompt seeded 0; HPSv2 v2.1, one image
        settings=("geneval.samples_per_prompt=4", "hpsv2.version=v2.1"),
        seed_mode="per-prompt",
        batch_size=4,
        notes=("The published cut is scored without the release's 64k-step distillation (8 GPUs); add "
               "--set hierarchicalprune.distill_steps=N with distill_data to train it.",),
    ),
    Recipe(
        name="reference-table",
        description="every method on the embedded reference model: pruning at budgets 0.20 and 0.30 without "
        "distillation and at 0.20 with it, quantisers, step caches at several settings, and combinations",
        model="reference",
        suites=("geneval-shapes", "latency", "memory"),
        runs=(
            RecipeRun("none"),
            *(RecipeRun(method, (f"{method}.budget={budget}", f"{method}.distill_steps=0"))
              for budget in ("0.2", "0.3")
              for method in ("hierarchicalprune", "depth-last", "depth-uniform", "depth-importance")),
            RecipeRun("hierarchicalprune", ("hierarchicalprune.budget=0.2",)),  # with its default distillation
            # the baselines followed by the same distillation, so the comparison at 0.20 is fair
            *(RecipeRun(method, (f"{method}.budget=0.2", f"{method}.distill_steps={_DISTILL_STEPS}"))
              for method in ("depth-last", "depth-uniform", "depth-importance")),
            RecipeRun("nf4"), RecipeRun("int8"), RecipeRun("torchao-int8"), RecipeRun("torchao-int4"),
            RecipeRun("hierarchicalprune+nf4", ("hierarchicalprune.budget=0.2",)),
            # speed: step caches at two or more settings each, int8 activations, and combinations with pruning
            *(RecipeRun("fbcache", (f"fbcache.threshold={threshold}",)) for threshold in _FBCACHE_THRESHOLDS),
            *(RecipeRun("taylorseer", (f"taylorseer.cache_interval={interval}",)) for interval in ("2", "4")),
            *(RecipeRun("pab", (f"pab.skip_range={skip}",)) for skip in ("2", "3")),
            RecipeRun("int8dq"),
            RecipeRun("hierarchicalprune+fbcache", ("hierarchicalprune.budget=0.2", "fbcache.threshold=0.2")),
            RecipeRun("hierarchicalprune+nf4+fbcache", ("hierarchicalprune.budget=0.2", "fbcache.threshold=0.2")),
            RecipeRun("depth-last+int8dq", ("depth-last.budget=0.2", "depth-last.distill_steps=0")),
            RecipeRun("int8dq+fbcache", ("fbcache.threshold=0.2",)),
            RecipeRun("compile"),
            RecipeRun("fbcache+compile", ("fbcache.threshold=0.2",)),
        ),
        batch_size=16,
    ),
)}


def _hierarchicalprune_comparison(model: str, title: str) -> Recipe:
    """HierarchicalPrune against the depth baselines and NF4 at the paper's budget, on a model with no published
    cut: the contribution analysis comes first. Distillation needs the user's images (`distill_data`), so these
    runs prune without it."""
    return Recipe(
        name=f"{model}-hierarchicalprune",
        description=f"HierarchicalPrune on {title}: contribution analysis, then the method at {_PAPER_BUDGET} with "
        "and without NF4 against the depth baselines at the same budget and NF4 alone",
        model=model,
        suites=("geneval", "hpsv2", "latency", "memory"),
        runs=(
            RecipeRun("none"),
            RecipeRun("hierarchicalprune", (f"hierarchicalprune.budget={_PAPER_BUDGET}",
                                            "hierarchicalprune.distill_steps=0")),
            RecipeRun("hierarchicalprune+nf4", (f"hierarchicalprune.budget={_PAPER_BUDGET}",
                                                "hierarchicalprune.distill_steps=0")),
            RecipeRun("depth-last", (f"depth-last.budget={_PAPER_BUDGET}",)),
            RecipeRun("depth-uniform", (f"depth-uniform.budget={_PAPER_BUDGET}",)),
            RecipeRun("nf4"),
        ),
        settings=("geneval.samples_per_prompt=4", "hpsv2.version=v2.1"),
        seed_mode="per-prompt",
        analysis=True,
        analysis_limit=_PAPER_ANALYSIS_PROMPTS,
        notes=(f"No published cut exists for {title}: `harness analyze` ranks its blocks first (step 0: the "
               "paper's whole-block protocol, 100 HPSv2 prompts per style), and hierarchicalprune reads that ranking "
               "from the cache. Add --set hierarchicalprune.distill_steps=N with distill_data (an image-caption "
               "folder or a prompt list) to distil.",),
    )


RECIPES.update({r.name: r for r in (
    _hierarchicalprune_comparison("qwen-image", "Qwen-Image"),
    _hierarchicalprune_comparison("flux.2-dev", "FLUX.2 [dev]"),
    _hierarchicalprune_comparison("z-image-turbo", "Z-Image-Turbo"),
    _hierarchicalprune_comparison("chroma1-hd", "Chroma1-HD"),
)})


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise unknown_name_error("recipe", name, RECIPES)
    return RECIPES[name]


def analysis_limit(recipe: Recipe, limit: int | None) -> int | None:
    """The prompts per suite the recipe's contribution analysis uses: its own count, or --limit where smaller."""
    return min((n for n in (limit, recipe.analysis_limit) if n), default=None)


def analysis_plan(recipe: Recipe, limit: int | None) -> dict[str, Any] | None:
    """The contribution analysis a recipe runs first: its command and images (the original's and one set per
    block removed), or None."""
    from harness.commands.setup import instantiate
    from harness.models.architecture import build_architecture
    from harness.models.loading import resolve_model
    from harness.models.topology import block_topology
    from harness.registry import SUITES

    if not recipe.analysis:
        return None
    spec, limit = resolve_model(recipe.model), analysis_limit(recipe, limit)
    (suite,) = instantiate(SUITES, [spec.contribution_metric.split("/")[0]], {})
    blocks = len(block_topology(build_architecture(spec)["transformer"]))
    command = ["harness", "analyze", "--model", recipe.model, "--metric", spec.contribution_metric,
               "--batch-size", str(recipe.batch_size), *(["--limit", str(limit)] if limit else [])]
    return {"command": " ".join(command), "blocks": blocks, "suite": suite.name,
            "images": (blocks + 1) * suite.planned_images(limit)}


def plan(recipe: Recipe, limit: int | None, extra: list[str]) -> list[dict[str, Any]]:
    """Per run: its command line, images per suite and the weights it needs on the GPU."""
    from harness.commands.estimate import estimate
    from harness.commands.setup import instantiate
    from harness.devices import GIB
    from harness.models.loading import resolve_model
    from harness.params import override_params, parse_set_options
    from harness.registry import SUITES

    # every entry's settings are checked as its run will see them: scopes of the whole recipe, sampling values
    scopes = ["sampling", *dict.fromkeys(m for e in recipe.runs for m in e.method.split("+")), *recipe.suites]
    sampling = resolve_model(recipe.model).sampling
    for entry in recipe.runs:
        parsed = parse_set_options([*recipe.settings, *entry.settings, *extra], scopes)
        override_params(sampling, parsed["sampling"], "sampling")
    rows = []
    for entry in recipe.runs:
        methods = entry.method.split("+")
        settings = [*recipe.settings, *entry.settings, *extra]
        suite_settings = parse_set_options([s for s in settings if s.split(".")[0] in recipe.suites],
                                           list(recipe.suites))
        suites = instantiate(SUITES, list(recipe.suites), suite_settings)
        method_settings = [s for s in settings if s.split(".")[0] in methods]
        report = estimate(recipe.model, methods, method_settings)
        command = ["harness", "run", "--model", recipe.model, "--method", entry.method, "--suite",
                   ",".join(recipe.suites), "--seed-mode", recipe.seed_mode, "--batch-size", str(recipe.batch_size),
                   *(["--limit", str(limit)] if limit else []), *[f"--set {s}" for s in settings]]
        rows.append({
            "method": entry.method, "command": " ".join(command),
            "images": {suite.name: suite.planned_images(limit) for suite in suites},
            "weights_gib": {name: size / GIB for name, size in report["weight_bytes"]["after"].items()},
            "transformer_flops_per_step": report["transformer_flops_per_step"]["after"]["total"],
        })
    return rows


def format_plan(recipe: Recipe, rows: list[dict[str, Any]], analysis: dict[str, Any] | None = None) -> str:
    lines = [f"recipe {recipe.name}: {recipe.description}", f"model {recipe.model}; suites {', '.join(recipe.suites)}",
             ""]
    if analysis is not None:
        lines += ["0. contribution analysis", f"   {analysis['command']}",
                  f"   images: {analysis['suite']} {analysis['images']} (the original's and one set for each of the "
                  f"{analysis['blocks']} blocks removed in place); GPU weights as run 1"]
    for number, row in enumerate(rows, 1):
        images = ", ".join(f"{suite} {count}" for suite, count in row["images"].items())
        weights = row["weights_gib"]
        lines += [f"{number}. {row['method']}", f"   {row['command']}",
                  f"   images: {images} (generated once per method; the base images are shared)",
                  f"   GPU weights: {sum(weights.values()):.2f} GiB (transformer {weights['transformer']:.2f}, "
                  f"text encoders {sum(v for k, v in weights.items() if k.startswith('text_encoder')):.2f}, "
                  f"VAE {weights.get('vae', 0):.2f}) + activations; "
                  f"{row['transformer_flops_per_step'] / 1e12:.2f} TFLOPs per denoising step"]
    lines += ["", *recipe.notes]
    return "\n".join(lines)


def run_recipe(recipe: Recipe, limit: int | None, extra: list[str], output_dir: Path, cache_dir: Path,
               device: str | None, progress: bool) -> dict[str, Path]:
    """Every run in order (cached and resumable), then the leaderboard of `output_dir`."""
    from harness.commands.leaderboard import write
    from harness.commands.run import RunOptions, run
    from harness.results import check_output_folder

    if not recipe.runs:
        raise UsageError(f"recipe {recipe.name} has no runs")
    check_output_folder(output_dir, "--output-dir", "the recipe's runs")
    if recipe.analysis:  # cached and resumable like the runs; hierarchicalprune finds its ranking in the cache
        from harness.commands.analyze import AnalyzeOptions, analyze
        from harness.models.loading import resolve_model

        scopes = ("sampling.", resolve_model(recipe.model).contribution_metric.split("/")[0] + ".")
        analyze(AnalyzeOptions(model=recipe.model, limit=analysis_limit(recipe, limit), seed_mode=recipe.seed_mode,
                               device=device, batch_size=recipe.batch_size, cache_dir=cache_dir,
                               settings=[s for s in [*recipe.settings, *extra] if s.startswith(scopes)],
                               progress=progress))
    for entry in recipe.runs:
        run(RunOptions(model=recipe.model, methods=entry.method.split("+"), suites=list(recipe.suites), limit=limit,
                       seed_mode=recipe.seed_mode, device=device, batch_size=recipe.batch_size,
                       output_dir=output_dir / "runs", cache_dir=cache_dir,
                       settings=[*recipe.settings, *entry.settings, *extra], progress=progress,
                       skip_finished=True))
    return write(output_dir)
