"""What every command sets up the same way: the process state and device, plugins built from `--set`, the model
opened with its load measured, and `--suite` groups expanded. `run`, `compress`, `analyze`, `estimate` and `recipe`
all come through here, so a rule about any of these is written once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.context import Context, default_cache_dir
from harness.errors import UsageError
from harness.params import build_params
from harness.registry import DEFAULT_MODEL, MODELS, Registry


@dataclass
class ModelOptions:
    """Which model, where its weights are, and on what it runs (`--model --weights --device --dtype`)."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    device: str | None = None
    dtype: str | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    settings: list[str] = field(default_factory=list)  # --set SCOPE.KEY=VALUE
    progress: bool = True


@dataclass
class GenerationOptions(ModelOptions):
    """How images are drawn: prompts per suite, seeds and batching."""

    limit: int | None = None
    seed: int = 0
    seed_mode: str = "per-image"
    batch_size: int | None = None  # None: the model's (ModelSpec.batch_size)


def distributed_state(device: str | None) -> Any:
    """accelerate's process state: rank and world size under `accelerate launch`, a single process otherwise."""
    import torch
    from accelerate import PartialState

    wants_cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    return PartialState(cpu=wants_cpu)


def resolve_device(requested: str | None, state: Any) -> str:
    """The torch device a process runs on: `--device`, else the process's GPU under accelerate, else cuda or cpu."""
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
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(f"--device '{requested}' is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type not in ("cpu", "cuda", "mps"):  # meta holds no data; others are not supported
        raise UsageError(f"--device '{requested}': the harness runs on cpu, cuda or mps, not {device.type}")
    return str(device)


def _loading_bars(show: bool) -> None:
    """diffusers' and transformers' own bars ("Loading pipeline components", "Loading weights") follow
    --no-progress like the harness's."""
    import diffusers.utils.logging
    import transformers.utils.logging

    for library in (diffusers.utils.logging, transformers.utils.logging):
        (library.enable_progress_bar if show else library.disable_progress_bar)()


def process_context(options: ModelOptions) -> tuple[Any, Context]:
    """(accelerate's process state, the plugins' context) of a command's options: the process's device, the cache
    folder, and progress bars on the main process only."""
    from harness.results import check_output_folder

    check_output_folder(Path(options.cache_dir), "--cache-dir (or $HARNESS_CACHE_DIR)", "the cache")
    _loading_bars(options.progress)
    state = distributed_state(options.device)
    context = Context(cache_dir=Path(options.cache_dir), device=resolve_device(options.device, state),
                      progress=options.progress and state.is_main_process, weights_folder=weights_folder(options))
    return state, context


def weights_folder(options: ModelOptions) -> Path | None:
    """The local folder the weights load from, as `load_model` reads the options: --weights when it is a folder
    (random weights are not), else --model when it is a folder and no registered name (`resolve_model`)."""
    from harness.models.random_weights import random_seed

    if options.weights is not None:
        folder = Path(options.weights).expanduser()
        return folder if random_seed(options.weights) is None and folder.is_dir() else None
    folder = Path(options.model).expanduser()
    return folder if options.model not in MODELS.names() and folder.is_dir() else None


def instantiate(registry: Registry, names: list[str], settings: dict[str, dict[str, str]],
                context: Any = None) -> list[Any]:
    """Plugin objects (compressors or suites) built with their `--set` parameters and the run's context."""
    objects = []
    for name in names:
        cls = registry.get(name)
        objects.append(cls(build_params(cls.Params, settings.get(name, {}), name), context))
    return objects


def instantiate_chain(methods: list[str], settings: dict[str, dict[str, str]], context: Any = None,
                      spec: Any = None, weights: str | None = None) -> list[Any]:
    """The compressors of `--method a+b`, their order checked (`compressors.base.check_chain_order`), on random
    weights only those that need no trained weights, and, given the model's spec, what each cannot do for it
    (`Compressor.check_plan`)."""
    from compressors.base import check_chain_order
    from harness.models.random_weights import random_seed
    from harness.registry import COMPRESSORS

    compressors = instantiate(COMPRESSORS, methods, settings, context)
    check_chain_order(compressors)
    if random_seed(weights) is not None and (reasons := [r for c in compressors if (r := c.trained_weights_reason())]):
        raise UsageError(f"--weights random draws noise, and {'; '.join(reasons)}")
    for compressor in compressors if spec is not None else ():
        compressor.check_plan(spec)
    return compressors


def refuse_image_scores_on_random_weights(weights: str | None, spec: Any, suites: list[Any]) -> None:
    """`--weights random` is for device figures: refuse a model it cannot build and every suite that scores images,
    before anything is built."""
    from harness.models.random_weights import check_buildable, random_seed

    if random_seed(weights) is None:
        return
    check_buildable(spec)
    if scoring := [s.name for s in suites if s.kind == "images"]:
        raise UsageError(f"--weights random: {', '.join(scoring)} score{'s' if len(scoring) == 1 else ''} images, and "
                         "a model with random weights draws noise, so the numbers would mean nothing. Measure the "
                         "device suites on random weights (--suite device: latency, memory), or give the real "
                         "weights for quality")


def open_model(spec: Any, weights: str | None, context: Any, dtype: str | None,
               sampling_settings: dict[str, str] | None = None) -> Any:
    """The loaded model of a resolved spec on the context's device (a folder's fingerprint cached in its cache
    folder), with its load's memory peaks in `load_memory`. Its
    `spec.sampling` is the command's (the model's own with `--set sampling.*` applied), so that everything drawn
    for it (teacher images, distillation batches, measurements) uses the size and guidance the run evaluates at;
    a size its transformer cannot draw is a UsageError here, before any image."""
    import dataclasses

    import torch

    from harness.memory import PeakMemory
    from harness.models.loading import load_model, missing_hub_weights
    from harness.models.random_weights import random_seed
    from harness.params import override_params
    from harness.preflight import check_fit

    try:
        check_fit(spec, context.device, getattr(torch, dtype or spec.dtype), random_seed(weights) is not None)
    except UsageError as cannot_fit:  # both problems at once: a download that could not load here is no fix
        missing = missing_hub_weights(spec, weights)
        if missing is None:
            raise
        raise UsageError(f"{missing} Even then it cannot load here: {cannot_fit}") from None
    with PeakMemory(context.device) as loading:
        model = load_model(spec, weights=weights, device=context.device, dtype=dtype, cache_dir=context.cache_dir)
    model.load_memory = loading
    sampling = override_params(model.spec.sampling, sampling_settings or {}, "sampling")
    model.spec = dataclasses.replace(model.spec, sampling=sampling)
    model.family.check_size(model.pipeline, sampling)
    return model


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
