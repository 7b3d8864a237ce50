"""Pre-flight fit: before any weight loads, what the load will hold against the memory free for it.

Loading a pipeline holds all of its weights in the load dtype: on the host (diffusers reads every component there
before `.to(device)`), then on the device. A load that cannot fit is refused with the figures and the options that
would fit, instead of the kernel's OOM killer ending the process half-way through (or CUDA failing after minutes of
reading). The need is the weight-free estimate of `harness estimate` (`harness.models.architecture`): the preset's
modules built on the meta device, counted in the load dtype; a local folder's is its weight files' size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.devices import GIB
from harness.errors import UsageError


def load_bytes(spec: Any, dtype: Any) -> int | None:
    """Bytes of the pipeline's weights (parameters and buffers) in `dtype` (integer tensors keep theirs), from its
    architecture without weights; a local folder's from its .safetensors files; None where neither is known (a Hub
    repo before its configs are downloaded)."""
    import torch

    folder = Path(spec.repo_id) if spec.repo_id and Path(spec.repo_id).is_dir() else None
    if folder is not None and spec.build is None and spec.architecture is None:
        from harness.models.loading import stored_dtype
        from harness.models.saving import read_provenance

        stored = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
        stored_as = stored_dtype(folder)
        if read_provenance(folder) is not None or stored_as is None:
            return stored  # a saved compressed model loads as saved (its quantised layers do not convert)
        return int(stored * dtype.itemsize / getattr(torch, stored_as).itemsize)
    from harness.models.random_weights import weightless_pipeline

    try:
        pipeline = weightless_pipeline(spec)
    except UsageError:  # no architecture without files (a Hub repo before its configs are downloaded)
        return None
    tensors = {id(t): t for module in pipeline.components.values() if isinstance(module, torch.nn.Module)
               for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * (dtype.itemsize if t.is_floating_point() else t.element_size()) for t in tensors.values())


def format_bytes(count: int) -> str:
    """GiB (2^30 bytes) to two decimals; MiB below a tenth of a GiB, where two decimals of GiB say nothing."""
    return f"{count / GIB:.2f} GiB" if count >= GIB / 10 else f"{count / 2**20:.1f} MiB"


def check_fit(spec: Any, device: str, dtype: Any, random_weights: bool) -> None:
    """Refuse (UsageError, exit 2) a load whose weights cannot fit where they go: the host for a load from files (or
    any load onto the CPU), and the GPU for a load onto it. Random weights are drawn on the device directly."""
    import torch

    from harness.memory import available_memory

    need = load_bytes(spec, dtype)
    if need is None:
        return
    places = [torch.device(device)]
    if not random_weights and places[0].type != "cpu":
        places.insert(0, torch.device("cpu"))  # read on the host first
    for place in places:
        free, source = available_memory(place)
        if free is not None and need > free:
            raise UsageError(_refusal(spec, place, dtype, need, free, source, random_weights))


def _refusal(spec: Any, place: Any, dtype: Any, need: int, free: int, source: str, random_weights: bool) -> str:
    from harness.models.spec import dtype_name

    where = "host" if place.type == "cpu" else str(place)
    options = []
    if dtype.itemsize > 2:
        import torch

        half = load_bytes(spec, torch.bfloat16) or need // 2
        if half <= free:
            options.append(f"--dtype bfloat16 ({format_bytes(half)})")
    smaller = _smaller_presets(spec, dtype, free)
    if smaller:
        options.append("a smaller model of the same family: " + ", ".join(f"--model {name} ({format_bytes(size)})"
                                                                          for name, size in smaller))
    if place.type == "cpu" and not random_weights and spec.transformer_config:
        options.append("on a GPU with room for it, --weights random builds the architecture there with no host copy "
                       "(device figures only)")
    if place.type == "cpu":
        options.append("a machine with more host memory (compressing first does not help: the whole model loads "
                       "before the chain runs; `harness estimate` gives each chain's size after)")
    else:
        options.append("a GPU with more free memory, or --device cpu where the host has room (quantisers and step "
                       "caches apply after the whole model has loaded; `harness estimate` gives each chain's size)")
    return (f"{spec.name} in {dtype_name(dtype)} needs {format_bytes(need)} of {where} memory for its weights alone "
            f"to load, and {format_bytes(free)} is {source}: it cannot fit. Options: " + "; ".join(options))


def _smaller_presets(spec: Any, dtype: Any, free: int) -> list[tuple[str, int]]:
    from harness.registry import MODELS

    found = []
    for name in MODELS.names():
        other = MODELS.get(name)
        if other.family != spec.family or other.name == spec.name or other.build or other.architecture:
            continue  # released models only: not the tiny test models or the embedded reference model
        size = load_bytes(other, dtype)
        if size is not None and size <= free:
            found.append((name, size))
    return sorted(found, key=lambda item: -item[1])
