"""`harness run`: model -> compressors -> generation (cached) -> suites -> results, in three stages.

1. `plan_run`: every name, `--set` value, prompt file and output place is resolved and validated, and the scoring
   models are checked, before any weight loads.
2. `execute`: the model loads once; the original images (for suites that compare against it) are generated before any
   compressor touches the model; the chain is applied; every image suite's images are generated (cached, resumable)
   and measurement suites measure the compressed pipeline.
3. `write_result`: the main process scores the images and writes one run folder.

Under `accelerate launch` every process loads the model, applies the chain and generates its share of the batches;
the main process then scores everything and writes the one merged result.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.commands.setup import (
    GenerationOptions,
    expand_suites,
    instantiate,
    instantiate_chain,
    open_model,
    process_context,
    refuse_image_scores_on_random_weights,
)
from harness.context import Context
from harness.errors import UsageError
from harness.generation import GenerationSetup, GenerationStats, ImageCache, load_samples
from harness.models.spec import dtype_name
from harness.params import override_params, parse_set_options
from harness.registry import COMPRESSORS, SUITES
from harness.results import (
    IMAGE_RECORD,
    MEASUREMENT_RECORD,
    CompressionRecord,
    GenerationRecord,
    MethodRecord,
    ModelRecord,
    RunResult,
    SuiteRecord,
    find_finished_run,
    new_run_id,
    record_row,
    remove_stale_staging,
    run_identity,
    run_protocol,
    thumbnails,
    write_run,
)


@dataclass
class RunOptions(GenerationOptions):
    methods: list[str] = field(default_factory=lambda: ["none"])
    suites: list[str] = field(default_factory=lambda: ["fidelity"])
    output_dir: Path = Path("results/runs")
    # return an identical finished run in output_dir (same weights, chain, suites, seeds, device type) instead of
    # measuring it again: what lets an interrupted recipe resume without duplicate rows
    skip_finished: bool = False


@dataclass
class RunPlan:
    """Everything `harness run` resolved before loading weights."""

    options: RunOptions
    spec: Any  # the requested ModelSpec (a Hub repo's family is settled once its index is read)
    state: Any  # accelerate's process state
    context: Context
    compressors: list[Any]
    suites: list[Any]
    requests: dict[str, list[Any]]  # per suite, its images
    sampling_settings: dict[str, str]  # --set sampling.*
    compressor_inputs: list[dict[str, str]] | None = None  # `inputs(model)`, once the model is open

    def sampling_for(self, spec: Any) -> Any:
        return override_params(spec.sampling, self.sampling_settings, "sampling")

    def inputs(self, model: Any) -> list[dict[str, str]]:
        """Per compressor, what it will read beyond its parameters, by content (`Compressor.inputs`), asked once on
        the model as loaded, before the chain changes it."""
        if self.compressor_inputs is None:
            self.compressor_inputs = [c.inputs(model) for c in self.compressors]
        return self.compressor_inputs

    def method(self, model: Any) -> MethodRecord:
        chain = [{"name": c.name, "params": c.resolved_params(), **({"inputs": found} if found else {})}
                 for c, found in zip(self.compressors, self.inputs(model), strict=True)]
        return MethodRecord("+".join(self.options.methods), chain)

    def suite_protocols(self, sampling: Any) -> dict[str, SuiteRecord]:
        """Each suite's protocol as the result records it, before anything is scored."""
        return {suite.name: SuiteRecord(suite.resolved_params(), sampling.as_dict(), len(self.requests[suite.name]))
                for suite in self.suites}

    def identity(self, model: Any) -> str:
        """The identity (`harness.results.run_identity`) the run of this plan on `model` will have."""
        protocol = run_protocol(self.suite_protocols(model.spec.sampling), self.options.seed_mode,
                                self.options.seed, model.device.type)
        return run_identity(model.fingerprint, dtype_name(model.dtype), self.method(model).chain, protocol)

    def chain_identity(self, model: Any) -> tuple[tuple[str, str], ...]:
        """The chain as the image cache keys it: only the compressors that change the model."""
        return chain_identity(self.compressors, self.inputs(model))


def chain_identity(compressors: list[Any], inputs: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    """The chain's cache key: each model-changing compressor's parameters and what it reads, by content."""
    return tuple(c.cache_identity(found) for c, found in zip(compressors, inputs, strict=True) if c.changes_model)


def plan_run(options: RunOptions) -> RunPlan:
    """Resolve and check everything a run needs, before any weight loads."""
    from harness.models.loading import resolve_model
    from harness.results import check_output_folder

    spec = resolve_model(options.model)
    suite_names = expand_suites(options.suites, spec.quality_suites)
    for name in options.methods:
        COMPRESSORS.entry(name)
    for name in suite_names:
        SUITES.entry(name)
    settings = parse_set_options(options.settings, ["sampling", *dict.fromkeys(options.methods), *suite_names])
    state, context = process_context(options)
    suites = instantiate(SUITES, suite_names, settings, context)
    refuse_image_scores_on_random_weights(options.weights, spec, suites)
    compressors = instantiate_chain(options.methods, settings, context, spec, options.weights)
    # reads prompt files: fail early
    requests = {suite.name: suite.requests(options.limit) if suite.kind == "images" else [] for suite in suites}
    plan = RunPlan(options, spec, state, context, compressors, suites, requests, settings["sampling"])
    plan.sampling_for(spec)  # a bad sampling value fails here, not after loading
    if state.is_main_process:
        for suite in suites:
            suite.prepare()  # scoring models present offline? (fails before any generation)
    check_output_folder(options.output_dir, "--output-dir", "results")
    return plan


def apply_chain(model: Any, compressors: list[Any], chain: tuple[tuple[str, str], ...], cache_dir: Path,
                is_main: bool) -> list[Any]:
    """Apply the compressors in order and return one record per step (name, params, wall time, cost).

    A chain that trained something (distillation) is expensive to redo: its transformer is saved in the cache under
    (base fingerprint, dtype, device, the chain's stored part: the resolved steps with their inputs) and a later run
    with the same stored part loads it instead. Runtime steps (step caches, compilation: the chain's tail, by stage
    order) are applied after that every time."""
    import hashlib
    import json

    from harness.models.saving import load_compressed_transformer, read_provenance, save_compressed

    runtime = [c for c in compressors if c.runtime]  # the chain's tail: `check_chain_order` refuses them elsewhere
    stored_part = [c for c in compressors if not c.runtime]
    # `chain` holds the model-changing steps only, in order
    stored_chain = tuple(entry for c, entry in zip([c for c in compressors if c.changes_model], chain, strict=True)
                         if not c.runtime)
    # the sampling too: distillation draws its batches and teacher images at the run's size and guidance
    identity = json.dumps([model.fingerprint, str(model.dtype), model.device.type, [list(c) for c in stored_chain],
                           model.spec.sampling.as_dict()])
    stored = cache_dir / "models" / hashlib.sha256(identity.encode()).hexdigest()[:24]
    provenance = read_provenance(stored) if stored_chain else None

    def run_steps(part: list[Any]) -> list[dict[str, Any]]:
        steps = []
        for compressor in part:
            started = time.perf_counter()
            cost = compressor.apply(model)
            steps.append({"name": compressor.name, "params": compressor.resolved_params(),
                          "wall_seconds": time.perf_counter() - started, "cost": cost})
        return steps

    if provenance is not None:
        model.pipeline.transformer = load_compressed_transformer(stored, model.spec.family, str(model.device),
                                                                 model.dtype, provenance)
        return [{**step, "from_cache": str(stored)} for step in provenance["costs"]] + run_steps(runtime)
    steps = run_steps(stored_part)
    if is_main and any("distillation" in step["cost"] for step in steps):
        try:
            if unsaved := [c.name for c in stored_part if not c.saves]:
                raise UsageError(f"{', '.join(unsaved)} cannot be saved")
            save_compressed(model, stored, [{"name": s["name"], "params": s["params"]} for s in steps], steps,
                            transformer_only=True)
        except UsageError as exc:  # not storable: it will be recomputed next time
            print(f"harness: the compressed model is not cached: {exc}", file=sys.stderr)
    if is_main:
        for compressor in stored_part:  # only now: a kill before the model was stored resumes from what they kept
            compressor.release()
    return steps + run_steps(runtime)


@dataclass
class Execution:
    """What `execute` produced: the compressed model, the setups its images and the originals are cached under, and
    what generation and compression cost."""

    model: Any
    sampling: Any
    run_setup: GenerationSetup
    reference_setup: GenerationSetup
    batch_size: int
    compression_steps: list[Any]
    stats: GenerationStats
    measurements: dict[str, Any]  # measurement suite name -> its SuiteResult


def execute(plan: RunPlan, model: Any) -> Execution:
    """Generate the originals' and the compressed model's images (this process's share) and measure the pipeline."""
    from harness.generation import generate

    options, state = plan.options, plan.state
    sampling = model.spec.sampling  # the run's: `open_model` applied --set sampling.*
    batch_size = options.batch_size or model.spec.batch_size
    cache = ImageCache(plan.context.cache_dir)
    stats = GenerationStats()

    def generate_all(source: Any, setup: GenerationSetup, suite_names: list[str], label: str) -> None:
        for suite_name in suite_names:
            stats.add(generate(source, setup, plan.requests[suite_name], cache, batch_size=batch_size,
                               sampling=sampling, rank=state.process_index, world_size=state.num_processes,
                               description=f"{label} {suite_name}", progress=plan.context.progress))

    base_setup = GenerationSetup.for_model(model, sampling, options.seed_mode, options.seed)
    reference_setup = base_setup
    reference_suites = [s.name for s in plan.suites if s.needs_reference]
    if reference_suites:
        original = model
        if model.base is not None:  # a saved compressed model: the original images come from its base model
            from harness.models.loading import load_base

            original = load_base(model, plan.context.cache_dir)
            reference_setup = GenerationSetup.for_model(original, sampling, options.seed_mode, options.seed)
        generate_all(original, reference_setup, reference_suites, "original")
        del original

    chain = plan.chain_identity(model)  # before the chain changes the model
    steps = apply_chain(model, plan.compressors, chain, plan.context.cache_dir, state.is_main_process)
    run_setup = dataclasses.replace(base_setup, chain=chain)
    generate_all(model, run_setup, [s.name for s in plan.suites if s.kind == "images"],
                 "compressed" if run_setup.chain else "original")
    state.wait_for_everyone()
    measurements = {}
    if state.is_main_process:
        measurements = {s.name: s.measure(model, sampling) for s in plan.suites if s.kind == "measurement"}
    return Execution(model, sampling, run_setup, reference_setup, batch_size, steps, stats, measurements)


def run(options: RunOptions) -> Path | None:
    """Run the benchmark; returns the path of results.json on the main process, None on the others."""

    started = time.perf_counter()
    plan = plan_run(options)
    model = open_model(plan.spec, options.weights, plan.context, options.dtype, plan.sampling_settings)
    if plan.state.is_main_process:
        remove_stale_staging(options.output_dir)
    if options.skip_finished:
        finished = find_finished_run(options.output_dir, plan.identity(model))
        if finished is not None:
            if plan.state.is_main_process:
                print(f"harness: {plan.method(model).name} already measured in {finished.parent}: skipped",
                      file=sys.stderr)
            return finished if plan.state.is_main_process else None
    execution = execute(plan, model)
    if not plan.state.is_main_process:
        return None
    return write_result(plan, execution, started)


def write_result(plan: RunPlan, execution: Execution, started: float) -> Path:
    """Score every image suite, gather the measurements and write the run folder (main process)."""
    from harness.environment import device_info, git_commit, package_versions
    from harness.models.denoising import summarize_calls
    from harness.models.footprint import parameter_count, weight_bytes

    options, model, cache = plan.options, execution.model, ImageCache(plan.context.cache_dir)
    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    suite_records = plan.suite_protocols(execution.sampling)
    records: list[dict[str, Any]] = []
    artifacts: dict[str, bytes] = {}
    for suite in plan.suites:
        samples: list[Any] = []
        if suite.kind == "measurement":
            result = execution.measurements[suite.name]
            records += [record_row(MEASUREMENT_RECORD, suite.name, row) for row in result.records]
        else:
            requests = plan.requests[suite.name]
            samples = load_samples(cache, execution.run_setup, requests, execution.batch_size)
            references = (load_samples(cache, execution.reference_setup, requests, execution.batch_size)
                          if suite.needs_reference else None)
            result = suite.evaluate(samples, references)
            for index, (sample, scores) in enumerate(zip(samples, result.records, strict=True)):
                record = record_row(IMAGE_RECORD, suite.name, {
                    "prompt": sample.request.prompt, "prompt_index": sample.request.prompt_index,
                    "sample_index": sample.request.sample_index, "seed": sample.seed, "image": str(sample.path),
                    **(sample.transformer_calls or {}), **scores})
                if references is not None:
                    record["reference_image"] = str(references[index].path)
                records.append(record)
        declared = {m.name: m for m in suite.metrics}
        for metric_name, value in result.metrics.items():
            key = f"{suite.name}/{metric_name}"
            if metric_name not in declared:
                raise RuntimeError(f"suite {suite.name} reported undeclared metric {metric_name}")
            metrics[key] = value.value
            details[key] = {**value.as_dict(), "unit": declared[metric_name].unit,
                            "higher_is_better": declared[metric_name].higher_is_better}
        suite_record = suite_records[suite.name]
        suite_record.samples_scored, suite_record.notes = len(samples), result.notes
        if samples:
            suite_record.transformer_calls = summarize_calls([sample.transformer_calls for sample in samples])
        suite_record.artifacts = [f"{suite.name}-{name}" for name in result.artifacts]
        artifacts.update({f"{suite.name}-{name}": content for name, content in result.artifacts.items()})
        artifacts.update(thumbnails(suite.name, samples))

    spec, stats, steps = model.spec, execution.stats, execution.compression_steps
    result = RunResult(
        run_id=new_run_id(spec.name, plan.method(model).name),
        created=datetime.now(timezone.utc).isoformat(),
        command=sys.argv,
        model=ModelRecord(name=spec.name, family=spec.family, source=model.source, fingerprint=model.fingerprint,
                          dtype=execution.run_setup.dtype, base=model.base,
                          transformer_parameters=parameter_count(model.transformer),
                          transformer_weight_bytes=weight_bytes(model.transformer)),
        method=plan.method(model),
        suites=suite_records,
        metrics=metrics,
        metric_details=details,
        generation=GenerationRecord(seed_mode=options.seed_mode, base_seed=options.seed,
                                    batch_size=execution.batch_size, num_processes=plan.state.num_processes,
                                    cache_dir=str(plan.context.cache_dir),
                                    images_generated_main_process=stats.generated,
                                    images_cached_main_process=stats.cached, seconds=stats.seconds),
        compression=CompressionRecord(wall_seconds=sum(s["wall_seconds"] for s in steps), steps=steps),
        device=device_info(plan.context.device),
        versions=package_versions(),
        git_commit=git_commit(),
        wall_seconds=time.perf_counter() - started,
    )
    return write_run(options.output_dir, result, records, artifacts)


def compress(options: RunOptions, save: Path) -> Path:
    """`harness compress`: apply the chain (or take it from the model cache) and save the pipeline to `save`."""
    from harness.models.loading import resolve_model
    from harness.models.saving import save_compressed

    for name in options.methods:
        COMPRESSORS.entry(name)
    # --set sampling.* sets what distillation draws at, and becomes the saved model's own sampling
    settings = parse_set_options(options.settings, ["sampling", *dict.fromkeys(options.methods)])
    from harness.results import check_output_folder

    check_output_folder(Path(save), "--save", "the compressed pipeline")
    if Path(save).exists() and any(Path(save).iterdir()):
        raise UsageError(f"--save '{save}' exists and is not empty: choose a new folder")
    spec = resolve_model(options.model)
    state, context = process_context(options)
    refuse_image_scores_on_random_weights(options.weights, spec, [])
    compressors = instantiate_chain(options.methods, settings, context, spec, options.weights)
    if runtime := [c.name for c in compressors if c.runtime]:
        stored = "+".join(c.name for c in compressors if not c.runtime) or "none"
        raise UsageError(f"{', '.join(runtime)} change how the pipeline runs, not what it stores: save "
                         f"`--method {stored}` and add `+{'+'.join(runtime)}` when you run the saved model")
    if unsaved := [c.name for c in compressors if not c.saves]:
        raise UsageError(f"{', '.join(unsaved)} cannot be saved (its quantised layers are not safetensors): "
                         f"measure it with `harness run --method {'+'.join(options.methods)}` instead, which "
                         "applies the chain in memory")
    model = open_model(spec, options.weights, context, options.dtype, settings["sampling"])
    inputs = [c.inputs(model) for c in compressors]
    steps = apply_chain(model, compressors, chain_identity(compressors, inputs), context.cache_dir,
                        state.is_main_process)
    for step, found in zip(steps, inputs, strict=True):
        if found:
            step["inputs"] = found
    state.wait_for_everyone()
    if state.is_main_process:
        save_compressed(model, save, [{"name": s["name"], "params": s["params"]} for s in steps], steps)
    return Path(save)
