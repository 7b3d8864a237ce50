"""`--weights random[:SEED]`: a model's real architecture with seeded random weights, for device figures.

Latency and memory do not depend on the weights' values, so a model built from its preset's configs answers "does it
fit my card, and how fast is it" before anything is downloaded (optimum-benchmark's `no_weights` idea). The modules
are built with their parameters on the meta device (buffers, small and computed at construction, are real), then
each parameter is allocated directly on the target device in the target dtype and filled from a seeded generator:
there is never a full-precision copy on the host, so a 24 GiB machine builds SD3.5 Medium's pipeline with T5-XXL in
bfloat16. The tokenizers are offline stand-ins with the released vocabulary sizes (CLIP's real BPE; a T5-sized
unigram one): the pipeline pads every prompt to the same token counts, so the shapes are the released model's.

Images from such a model are noise: the fingerprint says "random" and the seed, so they never mix with real ones, and
the run commands refuse image-scoring suites (`harness.commands.setup.refuse_for_random_weights`).
"""

from __future__ import annotations

import math
from typing import Any

from harness.errors import UsageError

RANDOM = "random"
FINGERPRINT_PREFIX = "random:"
MARK = "random weights: device figures only"


def random_seed(weights: str | None) -> int | None:
    """The seed `--weights random` (0) or `--weights random:SEED` asks for; None for any other --weights."""
    if weights is None or not (weights == RANDOM or weights.startswith(RANDOM + ":")):
        return None
    text = weights.partition(":")[2] or "0"
    try:
        seed = int(text)
    except ValueError:
        raise UsageError(f"--weights '{weights}': the seed after 'random:' must be an integer, e.g. --weights "
                         "random:1 (or --weights random for seed 0)") from None
    if seed < 0:
        raise UsageError(f"--weights '{weights}': the seed must be at least 0")
    return seed


def random_fingerprint(seed: int) -> str:
    return f"{FINGERPRINT_PREFIX}seed={seed}"


def is_random(fingerprint: str | None) -> bool:
    """Whether a fingerprint names seeded random weights (device figures only)."""
    return bool(fingerprint) and str(fingerprint).startswith(FINGERPRINT_PREFIX)


def weights_argument(fingerprint: str) -> str:
    """The --weights that rebuilds the random weights a fingerprint names."""
    return f"{RANDOM}:{fingerprint.removeprefix(FINGERPRINT_PREFIX).removeprefix('seed=')}"


def check_buildable(spec: Any) -> None:
    """Refuse, before anything is built, a model whose architecture the harness cannot build without files."""
    if spec.build is None and spec.architecture is None and not (spec.transformer_config and spec.scheduler):
        raise UsageError(f"--weights random needs the architecture of '{spec.name}' from a registered preset (see "
                         "`harness list`); a folder or Hub repo brings its own weights: drop --weights random")


def weightless_pipeline(spec: Any) -> Any:
    """The pipeline of `spec` with its parameters on the meta device (buffers real, tied weights tied): the
    architecture in seconds and almost no memory."""
    from accelerate import init_empty_weights

    check_buildable(spec)
    with init_empty_weights(include_buffers=False):
        builder = spec.build or spec.architecture
        pipeline = builder() if builder is not None else _pipeline_from_configs(spec)
    for component in pipeline.components.values():
        if hasattr(component, "tie_weights"):  # T5's shared embedding: registering on meta untied it
            component.tie_weights()
    return pipeline


def build_random_pipeline(spec: Any, device: str, dtype: Any, seed: int) -> Any:
    """The pipeline of `spec` with every parameter drawn on `device` in `dtype` (integer tensors keep theirs) from a
    generator seeded with `seed`: the same seed gives the same weights."""
    import torch

    pipeline = weightless_pipeline(spec)
    generator = torch.Generator(device=device).manual_seed(seed)
    materialised: dict[int, torch.nn.Parameter] = {}
    for name in sorted(pipeline.components):  # a fixed order: the same seed gives the same weights
        component = pipeline.components[name]
        if isinstance(component, torch.nn.Module):
            _materialise(component, torch.device(device), dtype, generator, materialised)
            component.eval()
    return pipeline


def draw_random_weights(module: Any, device: str, dtype: Any, seed: int) -> Any:
    """One weightless module (`weightless_pipeline(spec).transformer`) drawn on `device` in `dtype` from `seed`."""
    import torch

    _materialise(module, torch.device(device), dtype, torch.Generator(device=device).manual_seed(seed), {})
    return module.eval()


def _materialise(module: Any, device: Any, dtype: Any, generator: Any, done: dict[int, Any]) -> None:
    import torch

    for submodule in module.modules():
        for name, parameter in list(submodule._parameters.items()):
            if parameter is None:
                continue
            if id(parameter) not in done:  # tied weights (T5's shared embedding) stay tied
                target = dtype if parameter.is_floating_point() else parameter.dtype
                tensor = torch.empty(parameter.shape, dtype=target, device=device)
                _initialise(tensor, name, generator)
                done[id(parameter)] = torch.nn.Parameter(tensor, requires_grad=parameter.requires_grad)
            submodule._parameters[name] = done[id(parameter)]
        for name, buffer in list(submodule._buffers.items()):
            if buffer is not None:
                submodule._buffers[name] = buffer.to(device=device,
                                                     dtype=dtype if buffer.is_floating_point() else buffer.dtype)


def _initialise(tensor: Any, name: str, generator: Any) -> None:
    """Matrices N(0, 1/fan_in), so activations keep their scale through the depth; biases 0; norm scales 1."""
    if not tensor.is_floating_point():
        tensor.zero_()
    elif tensor.dim() >= 2:
        fan_in = tensor[0].numel()
        tensor.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
    elif "bias" in name:
        tensor.zero_()
    else:
        tensor.fill_(1.0)


def _pipeline_from_configs(spec: Any) -> Any:
    """A preset's pipeline from its transformer, component and scheduler configs, with stand-in tokenizers."""
    from harness.models.architecture import component_from_config
    from harness.models.families import family_of

    family = family_of(spec.family)
    components: dict[str, Any] = {"transformer": family.transformer_class()(**spec.transformer_config)}
    for name, (path, config) in spec.component_configs.items():
        components[name] = component_from_config(path, config)
    components.update(family.stand_in_tokenizers(spec))
    path, config = spec.scheduler
    components["scheduler"] = component_from_config(path, config)
    return family.pipeline_class()(**components)
