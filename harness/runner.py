"""`harness run`: model -> compressors -> generation (cached) -> suites -> results.

Under `accelerate launch` every process loads the model, applies the chain and generates its share of the batches;
the main process then scores everything and writes the one merged result.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.generation import GenerationSetup, GenerationStats, ImageCache, load_samples
from harness.params import build_params, override_params, parse_set_options
from harness.registry import COMPRESSORS, DEFAULT_MODEL, SUITES, Registry


def default_cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "dit-compression-harness"))


@dataclass
class RunOptions:
    model: str = DEFAULT_MODEL
    weights: str | None = None
    methods: list[str] = field(default_factory=lambda: ["none"])
    suites: list[str] = field(default_factory=lambda: ["fidelity"])
    limit: int | None = None
    seed: int = 0
    seed_mode: str = "per-image"
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None  # None: the model's (ModelSpec.batch_size)
    output_dir: Path = Path("results/runs")
    cache_dir: Path = field(default_factory=default_cache_dir)
    settings: list[str] = field(default_factory=list)
    progress: bool = True
    # return an identical finished run in output_dir (same weights, chain, suites, seeds, device type) instead of
    # measuring it again: what lets an interrupted recipe resume without duplicate rows
    skip_finished: bool = False


def _distributed_state(device: str | None) -> Any:
    """accelerate's process state: rank and world size under `accelerate launch`, a single process otherwise."""
    import torch
    from accelerate import PartialState

    wants_cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    return PartialState(cpu=wants_cpu)


def _resolve_device(requested: str | None, state: Any) -> str:
    import torch

    if requested is None:
        return str(state.device) if state.num_processes > 1 else ("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--device {requested}: no CUDA device is visible to torch {torch.__version__}; use --device cpu"
        )
    if state.num_processes > 1 and requested.startswith("cuda"):
        return str(state.device)  # one GPU per process
    try:
        return str(torch.device(requested))
    except RuntimeError:
        raise UsageError(f"--device '{requested}' is not a torch device (e.g. cpu, cuda, cuda:1)") from None


def instantiate(registry: Registry, names: list[str], settings: dict[str, dict[str, str]]) -> list[Any]:
    """Plugin objects (compressors or suites) built with their `--set` parameters."""
    objects = []
    for name in names:
        cls = registry.get(name)
        objects.append(cls(build_params(cls.Params, settings.get(name, {}), name)))
    return objects


def open_model(name: str, weights: str | None, device: str | None, dtype: str | None) -> tuple[Any, Any, str]:
    """(accelerate process state, loaded model, device) for `--model/--weights/--device/--dtype`."""
    from harness.memory import PeakMemory
    from harness.models.loading import load_model, resolve_model

    spec = resolve_model(name)
    state = _distributed_state(device)
    resolved = _resolve_device(device, state)
    with PeakMemory(resolved) as loading:
        model = load_model(spec, weights=weights, device=resolved, dtype=dtype)
    model.load_memory = loading
    return state, model, resolved


def expand_suites(names: list[str], quality_suites: tuple[str, ...]) -> list[str]:
    """Suite names with the groups (quality, device, full) replaced by their members, each once, in order."""
    from suites import SUITE_GROUPS

    expanded: list[str] = []
    for name in names:
        if name == "quality":
            members = list(quality_suites)
        elif name in SUITE_GROUPS:
            members = expand_suites(list(SUITE_GROUPS[name]), quality_suites)
        else:
            members = [name]
        expanded += [m for m in members if m not in expanded]
    return expanded


THUMBNAIL_PROMPTS = 6  # per suite, the first prompts' images kept small in the run folder (leaderboard grids)
THUMBNAIL_SIZE = 128


def thumbnail_name(suite: str, prompt_index: int, sample_index: int) -> str:
    return f"thumb-{suite}-{prompt_index}-{sample_index}.png"


def thumbnails(suite: str, samples: list[Any]) -> dict[str, bytes]:
    """Small PNGs of the first prompts' first images, so a run folder carries what the leaderboard shows."""
    import io

    from PIL import Image

    prompts = sorted({s.request.prompt_index for s in samples})[:THUMBNAIL_PROMPTS]
    files = {}
    for sample in samples:
        if sample.request.prompt_index in prompts and sample.request.sample_index == 0:
            image = Image.fromarray(sample.image)
            image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            files[thumbnail_name(suite, sample.request.prompt_index, 0)] = buffer.getvalue()
    return files


def apply_chain(model: Any, compressors: list[Any], cache_dir: Path, progress: bool, is_main: bool) -> list[Any]:
    """Apply the compressors in order and return one record per step (name, params, wall time, cost).

    A chain that trained something (distillation) is expensive to redo: its transformer is saved in the cache under
    (base fingerprint, dtype, device, resolved chain) and a later run with the same chain loads it instead."""
    import hashlib
    import json

    from compressors.base import CompressionContext
    from harness.errors import UsageError
    from harness.models.saving import load_compressed_transformer, read_provenance, removed_components, save_compressed

    chain = [c.cache_identity() for c in compressors if c.changes_model]
    identity = json.dumps([model.fingerprint, str(model.dtype), model.device.type, chain])
    stored = cache_dir / "models" / hashlib.sha256(identity.encode()).hexdigest()[:24]
    provenance = read_provenance(stored) if chain else None
    if provenance is not None:
        model.pipeline.transformer = load_compressed_transformer(stored, model.spec.family, str(model.device),
                                                                 model.dtype, removed_components(provenance))
        return [{**step, "from_cache": str(stored)} for step in provenance["costs"]]
    steps = []
    for compressor in compressors:
        started = time.perf_counter()
        compressor.context = CompressionContext(cache_dir=cache_dir, progress=progress)
        cost = compressor.apply(model)
        steps.append({"name": compressor.name, "params": compressor.resolved_params(),
                      "wall_seconds": time.perf_counter() - started, "cost": cost})
    if is_main and any("distillation" in step["cost"] for step in steps):
        try:
            save_compressed(model, stored, [{"name": s["name"], "params": s["params"]} for s in steps], steps,
                            transformer_only=True)
        except UsageError as exc:  # not storable (torchao): it will be recomputed next time
            print(f"harness: the compressed model is not cached: {exc}", file=sys.stderr)
    return steps


def run(options: RunOptions) -> Path | None:
    """Run the benchmark; returns the path of results.json on the main process, None on the others."""
    started = time.perf_counter()
    from harness.environment import device_info, git_commit, package_versions
    from harness.models.footprint import parameter_count, weight_bytes
    from harness.models.loading import resolve_model
    from harness.results import (
        SCHEMA_VERSION,
        check_writable,
        find_finished_run,
        new_run_id,
        remove_stale_staging,
        run_identity,
        write_run,
    )
    from suites.base import MeasurementSuite

    requested_spec = resolve_model(options.model)
    suite_names = expand_suites(options.suites, requested_spec.quality_suites)
    for name in options.methods:
        COMPRESSORS.entry(name)
    for name in suite_names:
        SUITES.entry(name)
    scopes = ["sampling", *dict.fromkeys(options.methods), *suite_names]
    settings = parse_set_options(options.settings, scopes)
    compressors = instantiate(COMPRESSORS, options.methods, settings)
    suites = instantiate(SUITES, suite_names, settings)
    requests = {suite.name: suite.requests(options.limit) for suite in suites}  # reads prompt files: fail early

    override_params(requested_spec.sampling, settings["sampling"], "sampling")  # fail before loading
    if _distributed_state(options.device).is_main_process:
        for suite in suites:
            suite.prepare()  # scoring models present offline? (fails before any generation)
    check_writable(options.output_dir)
    state, model, device = open_model(options.model, options.weights, options.device, options.dtype)
    if state.is_main_process:
        remove_stale_staging(options.output_dir)
    spec = model.spec  # a Hub repo's family is known once its index is read
    sampling = override_params(spec.sampling, settings["sampling"], "sampling")
    options = dataclasses.replace(options, batch_size=options.batch_size or spec.batch_size)
    cache = ImageCache(options.cache_dir)
    base_setup = GenerationSetup.for_model(model, sampling, options.seed_mode, options.seed)
    stats = GenerationStats()
    method = {"name": "+".join(options.methods),
              "chain": [{"name": c.name, "params": c.resolved_params()} for c in compressors]}
    planned_suites = {suite.name: {"params": suite.resolved_params(), "sampling": sampling.as_dict(),
                                   "samples_requested": len(requests[suite.name])} for suite in suites}
    if options.skip_finished:
        finished = find_finished_run(options.output_dir, run_identity({
            "model": {"fingerprint": model.fingerprint, "dtype": base_setup.dtype}, "method": method,
            "suites": planned_suites, "generation": {"seed_mode": options.seed_mode, "base_seed": options.seed},
            "device": {"type": model.device.type}}))
        if finished is not None:
            if state.is_main_process:
                print(f"harness: {method['name']} already measured in {finished.parent}: skipped", file=sys.stderr)
            return finished if state.is_main_process else None

    def generate_all(source: Any, setup: GenerationSetup, suite_names: list[str], label: str) -> None:
        from harness.generation import generate

        for suite_name in suite_names:
            stats.add(generate(source, setup, requests[suite_name], cache, batch_size=options.batch_size,
                               sampling=sampling, rank=state.process_index, world_size=state.num_processes,
                               description=f"{label} {suite_name}",
                               progress=options.progress and state.is_main_process))

    reference_suites = [s.name for s in suites if s.needs_reference]
    reference_setup = base_setup
    if reference_suites:
        original = model
        if model.base is not None:  # a saved compressed model: the original images come from its base model
            from harness.models.loading import load_base

            original = load_base(model)
            reference_setup = GenerationSetup.for_model(original, sampling, options.seed_mode, options.seed)
        generate_all(original, reference_setup, reference_suites, "original")
        del original

    compression_steps = apply_chain(model, compressors, options.cache_dir, options.progress and state.is_main_process,
                                    state.is_main_process)
    run_setup = dataclasses.replace(base_setup,
                                    chain=tuple(c.cache_identity() for c in compressors if c.changes_model))
    generate_all(model, run_setup, [s.name for s in suites], "compressed" if run_setup.chain else "original")

    state.wait_for_everyone()
    if not state.is_main_process:
        return None

    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    suite_records: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    artifacts: dict[str, bytes] = {}
    for suite in suites:
        samples = load_samples(cache, run_setup, requests[suite.name], options.batch_size)
        references = (load_samples(cache, reference_setup, requests[suite.name], options.batch_size)
                      if suite.needs_reference else None)
        if isinstance(suite, MeasurementSuite):
            result = suite.measure(model, sampling)
            records += [{"suite": suite.name, **row} for row in result.records]
        else:
            result = suite.score(samples, references)
        declared = {m.name: m for m in suite.metrics}
        for metric_name, value in result.metrics.items():
            key = f"{suite.name}/{metric_name}"
            if metric_name not in declared:
                raise RuntimeError(f"suite {suite.name} reported undeclared metric {metric_name}")
            metrics[key] = value.value
            details[key] = {**value.as_dict(), "unit": declared[metric_name].unit,
                            "higher_is_better": declared[metric_name].higher_is_better}
        suite_records[suite.name] = {
            **planned_suites[suite.name],
            "samples_scored": len(samples),
            "notes": result.notes,
            "artifacts": [f"{suite.name}-{name}" for name in result.artifacts],
        }
        artifacts.update({f"{suite.name}-{name}": content for name, content in result.artifacts.items()})
        artifacts.update(thumbnails(suite.name, samples))
        image_records = [] if isinstance(suite, MeasurementSuite) else result.records
        for index, (sample, scores) in enumerate(zip(samples, image_records, strict=True)):
            record = {"suite": suite.name, "prompt": sample.request.prompt,
                      "prompt_index": sample.request.prompt_index, "sample_index": sample.request.sample_index,
                      "seed": sample.seed, "image": str(sample.path), **scores}
            if references is not None:
                record["reference_image"] = str(references[index].path)
            records.append(record)

    run_id = new_run_id(spec.name, method["name"])
    results = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(),
        "command": sys.argv,
        "model": {"name": spec.name, "family": spec.family, "source": model.source,
                  "fingerprint": model.fingerprint, "dtype": base_setup.dtype,
                  "base": model.base,  # a saved compressed model's base model, else None
                  # the transformer as it ran (after the chain): what the leaderboard sizes methods by
                  "transformer_parameters": parameter_count(model.transformer),
                  "transformer_weight_bytes": weight_bytes(model.transformer)},
        "method": method,
        "suites": suite_records,
        "metrics": metrics,
        "metric_details": details,
        "generation": {"seed_mode": options.seed_mode, "base_seed": options.seed, "batch_size": options.batch_size,
                       "num_processes": state.num_processes, "cache_dir": str(options.cache_dir),
                       "images_generated_main_process": stats.generated,
                       "images_cached_main_process": stats.cached, "seconds": stats.seconds},
        "compression": {"wall_seconds": sum(s["wall_seconds"] for s in compression_steps),
                        "steps": compression_steps},
        "device": device_info(device),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "wall_seconds": time.perf_counter() - started,
    }
    return write_run(options.output_dir, run_id, results, records, artifacts)



def compress(options: RunOptions, save: Path) -> Path:
    """`harness compress`: apply the chain (or take it from the model cache) and save the pipeline to `save`."""
    from harness.models.saving import save_compressed

    for name in options.methods:
        COMPRESSORS.entry(name)
    settings = parse_set_options(options.settings, ["sampling", *dict.fromkeys(options.methods)])
    if settings["sampling"]:
        raise UsageError("harness compress takes no sampling settings (the saved model keeps its base's)")
    compressors = instantiate(COMPRESSORS, options.methods, settings)
    if Path(save).exists() and any(Path(save).iterdir()):
        raise UsageError(f"--save '{save}' exists and is not empty: choose a new folder")
    state, model, _ = open_model(options.model, options.weights, options.device, options.dtype)
    steps = apply_chain(model, compressors, options.cache_dir, options.progress, state.is_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        save_compressed(model, save, [{"name": s["name"], "params": s["params"]} for s in steps], steps)
    return Path(save)
