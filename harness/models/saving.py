"""Compressed pipelines on disk: diffusers layout plus `harness_provenance.json`.

`save_compressed` writes the whole pipeline with `save_pretrained` (safetensors; pruned transformers have their
config updated, quantised Linear layers store their packed weights and statistics) into a staging folder renamed
into place, plus the provenance: base model (name, source, fingerprint), the resolved recipe, each step's cost, and
the base model's sampling and contribution metric, so `--model DIR` samples and is analysed like its base and
`fidelity` can find the original. `load_compressed_transformer` rebuilds the transformer from its config, removes the
recorded sub-components again, and lets each recipe step's compressor (found by name in the registry) put back the
layers whose storage it owns (`restore`: the quantisers' layers from their stored statistics).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.models.spec import dtype_name
from harness.params import params_from_record
from harness.registry import COMPRESSORS

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
            "dtype": dtype_name(model.dtype),
            "transformer_weight_bytes": weight_bytes(model.transformer),
        }
        own = [s["name"] for s in recipe if COMPRESSORS.get(s["name"]).stores_own_layers]
        reasons = ([f"the {', '.join(own)} layers are stored in their own format"] if own else []) + (
            ["removed blocks and sub-components need stand-ins"]
            if removed_components(provenance) or positional_removals(provenance) else [])
        if reasons:
            provenance["loading"] = (
                f"harness only (`harness run --model {folder}`, or harness.models.loading.load_model): "
                f"{' and '.join(reasons)}, which diffusers' plain from_pretrained does not rebuild")
        else:
            provenance["loading"] = "diffusers' plain from_pretrained loads it, or `harness run --model` this folder"
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            folder.rmdir()
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def positional_removals(provenance: dict[str, Any]) -> list[list[int]]:
    """Per recipe step, the blocks it removed from a family that keeps block positions (their stand-ins are put
    back on load; other families' removals are in the saved config)."""
    from harness.models.families import family_of

    if not family_of(provenance["family"]).keeps_block_positions:
        return []
    return [step["cost"]["removed_blocks"] for step in provenance["costs"]
            if step.get("cost", {}).get("removed_blocks")]


def removed_components(provenance: dict[str, Any]) -> list[str]:
    """Sub-components a recipe removed for good (keys of the pruned transformer), from its steps' costs."""
    return [key for step in provenance["costs"] for key in step.get("cost", {}).get("removed_components", [])]


def load_compressed_transformer(folder: Path, family: str, device: str, dtype: Any,
                                provenance: dict[str, Any]) -> Any:
    """The transformer of a saved compressed pipeline on `device`: removed sub-components replaced by their
    stand-ins again, layers with a compressor's own storage (quantised) restored by that compressor."""
    import torch
    from accelerate import init_empty_weights
    from safetensors.torch import load_file

    from harness.models.families import family_of

    model_class = family_of(family).transformer_class()
    subfolder = Path(folder) / "transformer"
    state: dict[str, torch.Tensor] = {}
    for file in sorted(subfolder.glob("*.safetensors")):
        state.update(load_file(file))
    # parameters on meta, buffers real: non-persistent buffers (Chroma's modulation index table) are computed at
    # construction and are in no weight file
    with init_empty_weights(include_buffers=False):
        transformer = model_class.from_config(model_class.load_config(subfolder))
    from harness.models.surgery import Ablation, remove_blocks, remove_components

    for blocks in positional_removals(provenance):  # in recipe order, each in the indices of its time
        remove_blocks(transformer, blocks)
    removed = removed_components(provenance)
    if removed:
        remove_components(transformer, [Ablation.parse(key) for key in removed])
    for step in provenance["recipe"]:  # in recipe order: each takes the stored tensors of the layers it built
        compressor_class = COMPRESSORS.get(step["name"])
        compressor = compressor_class(params_from_record(compressor_class.Params, step["params"], step["name"]))
        compressor.restore(transformer, state, device, dtype)
    _, unexpected = transformer.load_state_dict(state, strict=False, assign=True)
    missing = [name for name, tensor in [*transformer.named_parameters(), *transformer.named_buffers()]
               if tensor.is_meta]  # neither restored nor loaded
    if missing or unexpected:
        raise UsageError(f"'{subfolder}' does not match its config: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}; the folder is damaged: save it again")
    return transformer.to(device).eval().requires_grad_(False)
