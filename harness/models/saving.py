"""Compressed pipelines on disk: diffusers layout plus `harness_provenance.json`.

`save_compressed` writes the whole pipeline with `save_pretrained` (safetensors; pruned transformers have their
config updated, quantised Linear layers store their packed weights and statistics) into a staging folder renamed
into place, plus the provenance: base model (name, source, fingerprint), the resolved recipe, each step's cost, and
the base model's sampling and contribution metric, so `--model DIR` samples and is analysed like its base and
`fidelity` can find the original. `load_compressed_transformer` rebuilds the transformer from its config and puts the
quantised layers back from their stored statistics (bitsandbytes NF4/FP4 and LLM.int8; detected from the keys).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import UsageError

PROVENANCE_FILE = "harness_provenance.json"
PROVENANCE_FORMAT = "harness-compressed-model"
PROVENANCE_VERSION = 1


def read_provenance(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("format") != PROVENANCE_FORMAT or data.get("version") != PROVENANCE_VERSION:
        raise UsageError(f"'{path}' is not a version-{PROVENANCE_VERSION} harness provenance file")
    return data


def save_compressed(model: Any, folder: Path, recipe: list[dict[str, Any]], costs: list[Any],
                    transformer_only: bool = False) -> Path:
    """Write the compressed pipeline (or only its transformer, for the run cache) and its provenance to `folder`,
    whole or not at all; returns `folder`."""
    from harness.models.footprint import weight_bytes

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"--save '{folder}' exists and is not empty: choose a new folder")
    staging = folder.with_name(f".staging-{folder.name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            if transformer_only:
                model.transformer.save_pretrained(staging / "transformer", safe_serialization=True)
            else:
                model.pipeline.save_pretrained(staging, safe_serialization=True)
        except (TypeError, RuntimeError, NotImplementedError) as exc:  # e.g. torchao's tensor subclasses
            raise UsageError(f"this compressed pipeline cannot be saved as safetensors ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); torchao-quantised models are not "
                             "saved yet: save before quantising, or quantise with nf4/int8") from None
        base = model.base if getattr(model, "base", None) else {
            "name": model.spec.name, "source": model.source, "fingerprint": model.fingerprint}
        provenance = {
            "format": PROVENANCE_FORMAT, "version": PROVENANCE_VERSION,
            "base": base, "family": model.spec.family, "recipe": recipe, "costs": costs,
            "sampling": model.spec.sampling.as_dict(), "contribution_metric": model.spec.contribution_metric,
            "quality_suites": list(model.spec.quality_suites),
            "dtype": str(model.dtype).removeprefix("torch."),
            "transformer_weight_bytes": weight_bytes(model.transformer),
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            folder.rmdir()
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def removed_components(provenance: dict[str, Any]) -> list[str]:
    """Sub-components a recipe removed for good (keys of the pruned transformer), from its steps' costs."""
    return [key for step in provenance["costs"] for key in step.get("cost", {}).get("removed_components", [])]


def load_compressed_transformer(folder: Path, family: str, device: str, dtype: Any,
                                removed: Sequence[str] = ()) -> Any:
    """The transformer of a saved compressed pipeline on `device`: removed sub-components replaced by their
    stand-ins again, quantised layers restored from their statistics."""
    import torch
    from safetensors.torch import load_file

    from harness.models.families import family_of

    model_class = family_of(family).transformer_class()
    subfolder = Path(folder) / "transformer"
    state: dict[str, torch.Tensor] = {}
    for file in sorted(subfolder.glob("*.safetensors")):
        state.update(load_file(file))
    with torch.device("meta"):
        transformer = model_class.from_config(model_class.load_config(subfolder))
    if removed:
        from harness.models.surgery import Ablation, remove_components

        remove_components(transformer, [Ablation.parse(key) for key in removed])
    restored = []
    for name, linear in [(n, m) for n, m in transformer.named_modules() if type(m) is torch.nn.Linear]:
        layer = _restore_quantised(name, linear, state, device, dtype)
        if layer is not None:
            transformer.set_submodule(name, layer)
            restored.append(name + ".")
    missing, unexpected = transformer.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.startswith(tuple(restored))]  # their weights came with them
    if missing or unexpected:
        raise UsageError(f"'{subfolder}' does not match its config: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}; the folder is damaged: save it again")
    return transformer.to(device).eval().requires_grad_(False)


def disable_cpu_repacking(layer: Any) -> None:
    """bitsandbytes repacks 4-bit weights for its AVX512-bf16 CPU kernel on the first eval-mode forward; that
    repacking fails for layers narrower than the block size (tiny models) and gives other numbers than the layer
    had before saving, so it is turned off: a saved and reloaded layer computes exactly what the original did."""
    layer.support_avx512bf16_for_cpu = False


def _restore_quantised(name: str, linear: Any, state: dict[str, Any], device: str, dtype: Any) -> Any | None:
    """A bitsandbytes layer rebuilt from its stored weights and statistics (popped from `state`), else None."""
    import torch

    prefix = f"{name}.weight."
    if any(k.startswith(prefix + "quant_state.bitsandbytes__") for k in state):
        import bitsandbytes as bnb

        stats = {k[len(prefix):]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        weight = bnb.nn.Params4bit.from_prequantized(data=state.pop(f"{name}.weight"), quantized_stats=stats,
                                                     requires_grad=False, device=device)
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=f"{name}.bias" in state,
                                  compute_dtype=dtype, quant_type=weight.quant_type, device="meta")
        layer.weight = weight
        disable_cpu_repacking(layer)
    elif f"{name}.SCB" in state:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=f"{name}.bias" in state,
                                    has_fp16_weights=False, device="meta")
        layer.weight = bnb.nn.Int8Params(torch.zeros(linear.out_features, linear.in_features), requires_grad=False,
                                         has_fp16_weights=False)
        layer = layer.to(device)  # an int8 layer must exist before its stored state loads
        layer.weight.data.copy_(state.pop(f"{name}.weight"))
        layer.weight.SCB.copy_(state.pop(f"{name}.SCB"))
        state.pop(f"{name}.weight_format", None)
    else:
        return None
    if f"{name}.bias" in state:
        layer.bias = torch.nn.Parameter(state.pop(f"{name}.bias").to(device), requires_grad=False)
    return layer
