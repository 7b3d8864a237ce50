"""Resolve `--model` to a ModelSpec and load it as a diffusers pipeline, with a fingerprint of its exact weights.

Weights load only through safetensors: never unpickle a file the user did not write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError, unknown_name_error
from harness.models.families import HUB_REPO_FAMILY, Family, family_of, family_of_pipeline_class, registered_families
from harness.models.random_weights import MARK as RANDOM_MARK
from harness.models.random_weights import (
    build_random_pipeline,
    is_random,
    random_fingerprint,
    random_seed,
    weights_argument,
)
from harness.models.saving import load_compressed_transformer, read_provenance
from harness.models.spec import ModelSpec, SamplingSettings, dtype_name
from harness.reference.world import WORLD_FILE
from harness.registry import MODELS


@dataclass
class LoadedModel:
    spec: ModelSpec
    pipeline: Any
    fingerprint: str  # identifies the exact weights: "hf:<repo>@<commit>" or "sha256:<digest>"
    source: str  # repo id, folder, or "built from config"
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    base: dict[str, Any] | None = None  # a saved compressed model's base model (name, source, fingerprint)
    base_weights: str | None = None  # a saved compressed model's --weights: where its base model is now
    load_memory: Any = None  # harness.memory.PeakMemory of loading, when the runner measured it

    @property
    def transformer(self) -> Any:
        return self.pipeline.transformer

    @property
    def family(self) -> Family:
        return family_of(self.spec.family)


def _read_model_index(folder: Path) -> dict[str, Any]:
    index = folder / "model_index.json"
    if not folder.is_dir() or not index.is_file():
        raise UsageError(
            f"'{folder}' is not a diffusers pipeline folder (no model_index.json). Pass a folder written by "
            "`pipeline.save_pretrained(...)` or downloaded with `hf download <repo> --local-dir <folder>`."
        )
    try:
        return json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"'{index}' is not valid JSON ({exc}); the folder is damaged: download it again.") from None


def _family_of_folder(folder: Path) -> Family:
    class_name = _read_model_index(folder).get("_class_name", "")
    family = family_of_pipeline_class(class_name)
    if family is None:
        raise UsageError(
            f"'{folder}' holds a {class_name or 'unnamed'} pipeline; the harness supports "
            f"{', '.join(f.pipeline_class_name for f in registered_families())}."
        )
    return family


def _component_config(folder: Path, component: str) -> dict[str, Any]:
    try:
        return json.loads((folder / component / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}  # a missing or damaged config is reported when the pipeline loads


_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def stored_dtype(folder: Path) -> str | None:
    """The float dtype the folder's transformer weights are stored in (from a safetensors header), or None."""
    for file in sorted((folder / "transformer").glob("*.safetensors")):
        try:
            with file.open("rb") as handle:
                header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        except (OSError, ValueError, UnicodeDecodeError):
            return None  # a damaged file is reported when the pipeline loads
        for name, entry in header.items():
            if name != "__metadata__" and isinstance(entry, dict) and entry.get("dtype") in _SAFETENSORS_DTYPES:
                return _SAFETENSORS_DTYPES[entry["dtype"]]
    return None


def folder_sampling(family: Family, folder: Path) -> SamplingSettings:
    """The family's default sampling at the folder's own image size (its transformer's default sample size times
    the VAE's scale, as diffusers' pipeline draws it), not a size its positional table may not cover."""
    native = family.native_size(_component_config(folder, "transformer"), _component_config(folder, "vae"))
    if native is None:
        return family.default_sampling
    return dataclasses.replace(family.default_sampling, height=native, width=native)


def resolve_model(name: str) -> ModelSpec:
    """A registered model name, a local diffusers folder, or a Hub repo id ("org/name")."""
    if not name.strip():
        raise UsageError("--model is empty: give a registered model name (see `harness list`), a local diffusers "
                         "folder or a Hub repo id (org/name)")
    if name in MODELS.names():
        return MODELS.get(name)
    path = Path(name).expanduser()
    if not path.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name[:1]):
        raise UsageError(f"--model '{name}' does not exist (a path; registered models: "
                         f"{', '.join(sorted(MODELS.names()))})")
    if path.exists():
        family = _family_of_folder(path)
        provenance = read_provenance(path)
        if provenance is not None:  # saved by `harness compress`: samples and is analysed like its base model
            recipe = "+".join(step["name"] for step in provenance["recipe"])
            return ModelSpec(
                name=path.resolve().name,
                description=f"{provenance['base']['name']} compressed with {recipe} ({path})",
                family=family.name,
                sampling=SamplingSettings(**provenance["sampling"]),
                transformer_config={},
                dtype=provenance["dtype"],
                repo_id=str(path.resolve()),
                contribution_metric=provenance["contribution_metric"],
                quality_suites=tuple(provenance["quality_suites"]),
            )
        return ModelSpec(
            name=path.resolve().name,
            description=f"local folder {path}",
            family=family.name,
            sampling=folder_sampling(family, path),  # `--set sampling.<field>=` overrides it
            transformer_config={},
            dtype=stored_dtype(path) or ModelSpec.dtype,  # as stored; --dtype overrides it
            repo_id=str(path.resolve()),
        )
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return ModelSpec(
            name=name,
            description=f"Hub repo {name}",
            family=HUB_REPO_FAMILY.name,  # checked against the repo's model_index.json once it is downloaded
            sampling=HUB_REPO_FAMILY.default_sampling,
            transformer_config={},
            repo_id=name,
        )
    raise unknown_name_error("model", name, MODELS.names())


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _missing_weights(repo_id: str, where: str) -> str:
    return (f"the weights of '{repo_id}' {where}. Download them where the Hub is reachable "
            f"(`hf download {repo_id}`, after accepting the model's licence on its Hub page and `hf auth login`), "
            "then either copy the Hugging Face cache here or pass the folder with --weights <folder>.")


def _download(repo_id: str, revision: str | None) -> Path:
    """The local snapshot folder of a Hub repo (from the cache when offline)."""
    from diffusers import DiffusionPipeline

    try:
        return Path(DiffusionPipeline.download(repo_id, revision=revision, use_safetensors=True))
    except Exception as exc:  # the hub client raises a dozen types for "cannot get these files"
        where = "are not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if _hub_offline() else (
            f"could not be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )
        raise UsageError(_missing_weights(repo_id, where)) from None


def missing_hub_weights(spec: ModelSpec, weights: str | None) -> str | None:
    """What to download, where the load would read a Hub repo whose weights are not in the local cache (checked
    without reaching the Hub); None for every other load."""
    from diffusers import DiffusionPipeline

    if weights is not None or spec.build is not None or not spec.repo_id or Path(spec.repo_id).exists() \
            or Path(spec.repo_id).is_absolute():
        return None
    try:
        DiffusionPipeline.download(spec.repo_id, revision=spec.revision, use_safetensors=True, local_files_only=True)
    except Exception:  # not (completely) in the cache
        offline = " and HF_HUB_OFFLINE is set" if _hub_offline() else ""
        return _missing_weights(spec.repo_id, f"are not in the local Hugging Face cache{offline}")
    return None


# Files that describe a model folder without being part of the model: they never change its fingerprint (the
# reference model's ranking lives beside its weights and names their fingerprint).
NOT_WEIGHTS = frozenset({"README.md", "train_log.jsonl", "contribution_ranking.json", "contribution_heatmap.png",
                         WORLD_FILE})


DIGEST_CACHE = "folder-digests.json"  # under the run's cache folder


def folder_fingerprint(folder: Path, cache_dir: Path | None = None) -> str:
    """sha256 over every model file's relative path and content: any changed byte changes the fingerprint.

    Hashing reads every byte (about 16 s for a 16 GB model), so with `cache_dir` the digest is kept in
    <cache_dir>/folder-digests.json by the folder's absolute path with each file's path, size and modification
    time, and reused while all of them are unchanged; a file added, removed, resized or touched rehashes."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in NOT_WEIGHTS)
    listing = [[str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cache_file = cache_dir / DIGEST_CACHE if cache_dir is not None else None
    cached = _read_digests(cache_file)
    entry = cached.get(str(folder))
    if entry is not None and entry.get("files") == listing:
        return str(entry["digest"])
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(folder)).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    fingerprint = "sha256:" + digest.hexdigest()
    if cache_file is not None:
        cached[str(folder)] = {"files": listing, "digest": fingerprint}
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(cached, indent=1))
        os.replace(partial, cache_file)  # never a half-written cache, even beside another run
    return fingerprint


def _read_digests(cache_file: Path | None) -> dict[str, Any]:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):  # unreadable: rehash, and the next write replaces it
        return {}
    return data if isinstance(data, dict) else {}


def hash_modules(pipeline: Any) -> str:
    """sha256 over the parameters and buffers of every torch module of a pipeline built in memory."""
    import torch

    digest = hashlib.sha256()
    for component_name, component in sorted(pipeline.components.items()):
        if not isinstance(component, torch.nn.Module):
            continue
        for key, tensor in sorted(component.state_dict().items()):
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{component_name}.{key}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _snapshot_commit(folder: Path) -> str | None:
    # Hub cache layout: .../models--org--name/snapshots/<commit>/
    return folder.name if folder.parent.name == "snapshots" and len(folder.name) == 40 else None


def load_model(spec: ModelSpec, *, weights: str | None, device: str, dtype: str | None = None,
               cache_dir: Path | None = None) -> LoadedModel:
    """Build or load the pipeline on `device` in `dtype` (default: the spec's); with `cache_dir`, a local
    folder's fingerprint is cached there (`folder_fingerprint`)."""
    import torch

    torch_dtype = getattr(torch, dtype or spec.dtype)
    base = None
    # a saved compressed model always runs as saved: --weights beside it says where its base model is
    saved = bool(spec.repo_id) and Path(spec.repo_id).is_dir() and read_provenance(Path(spec.repo_id)) is not None
    base_weights, weights = (weights, None) if saved else (None, weights)
    seed = random_seed(weights)
    if seed is not None:
        pipeline = build_random_pipeline(spec, device, torch_dtype, seed)
        fingerprint, source = random_fingerprint(seed), f"{RANDOM_MARK} (seed {seed})"
    elif spec.build is not None and weights is None:
        pipeline = spec.build()
        if pipeline.transformer.dtype != torch_dtype:
            pipeline.to(dtype=torch_dtype)
        fingerprint, source = hash_modules(pipeline), "built from config"
    else:
        if weights is not None:
            folder = Path(weights).expanduser()
            if not folder.exists():
                raise UsageError(f"--weights '{weights}' does not exist")
        elif Path(spec.repo_id).is_dir():
            folder = Path(spec.repo_id)
        elif Path(spec.repo_id).is_absolute():  # a model shipped inside the package whose weights are not there
            raise UsageError(f"model '{spec.name}' has no weights at {spec.repo_id}: build them with "
                             f"`harness reference train --out {spec.repo_id}`, or pass --weights <folder>")
        else:
            folder = _download(spec.repo_id, spec.revision)
        family = _family_of_folder(folder)
        if family.name != spec.family and spec.transformer_config:
            raise UsageError(f"'{folder}' holds a {family.name} pipeline but model '{spec.name}' is {spec.family}")
        if family.name != spec.family:  # a Hub repo, whose family its model_index.json has now told
            spec = dataclasses.replace(spec, family=family.name, sampling=folder_sampling(family, folder))
        # components saved as [null, null] (e.g. SD3 without T5) must be passed as None explicitly
        absent = {k: None for k, v in _read_model_index(folder).items() if v == [None, None]}
        provenance = read_provenance(folder)
        if provenance is not None:  # pruned config, quantised layers: rebuilt by the harness, not diffusers
            base = provenance["base"]
            absent["transformer"] = load_compressed_transformer(folder, family.name, "cpu", torch_dtype, provenance)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated")  # newer diffusers
                pipeline = family.pipeline_class().from_pretrained(folder, torch_dtype=torch_dtype,
                                                                   use_safetensors=True, **absent)
        except Exception as exc:  # diffusers/safetensors raise many types for damaged files
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(
                f"the pipeline in '{folder}' cannot be loaded: {first_line}. A weight file is probably truncated, "
                "corrupt or missing (only .safetensors weights are loaded): download the model again."
            ) from None
        commit = _snapshot_commit(folder)
        fingerprint = f"hf:{spec.repo_id}@{commit}" if commit else folder_fingerprint(folder, cache_dir)
        source = str(folder)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return LoadedModel(spec, pipeline, fingerprint, source, torch.device(device), torch_dtype, base, base_weights)


def load_base(model: LoadedModel, cache_dir: Path | None = None) -> LoadedModel:
    """The uncompressed model a saved compressed model came from, on the same device and dtype: from the --weights
    given beside it, else where it was at compression time. Its fingerprint must be the one recorded then."""
    assert model.base is not None
    name, source, fingerprint = model.base["name"], model.base["source"], model.base["fingerprint"]
    registered = name in MODELS.names()
    if is_random(fingerprint) and registered:  # rebuilt from its seed
        spec, weights = MODELS.get(name), weights_argument(fingerprint)
    elif model.base_weights is not None:
        where = Path(model.base_weights).expanduser()
        if not where.is_dir():
            raise UsageError(f"--weights '{model.base_weights}' (the base model of '{model.source}') is not a folder")
        spec, weights = (MODELS.get(name), str(where)) if registered else (resolve_model(str(where)), None)
    elif registered:
        spec = MODELS.get(name)
        weights = source if spec.build is None and Path(source).is_dir() else None
    elif Path(source).is_dir():
        spec, weights = resolve_model(source), None
    else:
        raise UsageError(f"'{model.source}' was compressed from {name} at {source}, which is not there any "
                         f"more: pass the base model's folder with --weights <folder> (its fingerprint must be "
                         f"{fingerprint})")
    base = load_model(spec, weights=weights, device=str(model.device), dtype=dtype_name(model.dtype),
                      cache_dir=cache_dir)
    if base.fingerprint != fingerprint:
        raise UsageError(f"'{model.source}' was compressed from {name} with fingerprint {fingerprint}, but the base "
                         f"model found at {base.source} has {base.fingerprint}: the original images would come from "
                         "other weights. Point --weights at the original base model.")
    return base
