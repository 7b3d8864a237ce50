"""The results schema (one JSON per run, per-sample JSONL beside it) and crash-safe writing.

A run folder appears complete or not at all: its files are written into a hidden staging folder that is renamed
into place at the end, so a crash never leaves a partial or corrupt file among the results.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RECORD_FIELD = "record"  # what a samples.jsonl row is:
IMAGE_RECORD = "image"  # one generated image and its scores
MEASUREMENT_RECORD = "measurement"  # a row of a measurement suite (a timed repeat, a device profile)

SCHEMA_VERSION = 2  # 2: every samples.jsonl row says what it is (RECORD_FIELD)
READABLE_VERSIONS = (1, 2)  # version 1 documents have the same fields; their rows are told apart on reading
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def json_safe(value: Any) -> Any:
    """Strict JSON has no inf/nan: write them as the strings "inf", "-inf", "nan" (read back by `load_results`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def from_json_safe(value: Any) -> Any:
    """The inverse of `json_safe`."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


def process_tag() -> str:
    """"<pid>@<host>": who writes a temporary file or staging folder, so that a later process can tell whether its
    writer is gone, also on a file system shared between hosts."""
    return f"{os.getpid()}@{socket.gethostname()}"


def stale_process_tag(tag: str) -> bool:
    """Whether the writer `tag` names is dead: a process of THIS host that no longer runs. A writer on another host
    cannot be asked, so its files are never called stale. A bare pid (written before hosts were recorded) is this
    host's."""
    import psutil

    pid, _, host = tag.partition("@")
    if not pid.isdigit() or (host and host != socket.gethostname()):
        return False
    return not psutil.pid_exists(int(pid))


def temporary_of(path: Path) -> Path:
    """The temporary name `write_atomic` writes `path` under before renaming it."""
    return path.with_name(f".{path.name}.{process_tag()}.tmp")


def writer_tag(name: str) -> str:
    """The process tag at the end of a temporary's or staging folder's name ("...<sep><pid>@<host>", or a bare
    "<pid>" in names written before hosts were recorded); "" when there is none."""
    head, at, host = name.rpartition("@")
    pid = re.search(r"(\d+)$", head if at else name)
    return "" if pid is None else f"{pid.group(1)}{at}{host}"


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporaries (`temporary_of`) under `folder` whose writer is dead; returns how many."""
    removed = 0
    for temporary in Path(folder).rglob(".*.tmp"):
        if stale_process_tag(writer_tag(temporary.name.removesuffix(".tmp"))):
            temporary.unlink(missing_ok=True)
            removed += 1
    return removed


def write_atomic(path: Path, content: bytes) -> None:
    """Write a file whole or not at all: a temporary file beside it, flushed, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_of(path)
    try:
        with temporary.open("wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def dumps(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, sort_keys=False, allow_nan=False)


def new_run_id(model: str, method: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "-", f"{model}_{method}").strip("-")[:80]
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}_{slug}"


def check_output_folder(folder: Path, option: str, what: str = "files") -> None:
    """Fail before any work unless `folder` is a folder this process can write `what` into, or can be made one (the
    nearest existing parent is a writable folder); `option` names where the path came from. Creates nothing."""
    from harness.errors import UsageError

    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = "it is a file" if existing == folder else f"'{existing}' is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"'{existing}' is read-only for this user"
    else:
        return
    raise UsageError(f"cannot write {what} to '{folder}' ({option}): {reason}, not a writable folder; choose another "
                     f"{option}")


def record_row(what: str, suite: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A samples.jsonl row: what it is (IMAGE_RECORD or MEASUREMENT_RECORD), its suite, then the suite's fields."""
    reserved = {RECORD_FIELD, "suite"} & set(fields)
    if reserved:
        raise RuntimeError(f"suite {suite} wrote the reserved record field(s) {sorted(reserved)}")
    return {RECORD_FIELD: what, "suite": suite, **fields}


def write_run(output_dir: Path, result: RunResult, records: list[dict[str, Any]],
              artifacts: dict[str, bytes] | None = None) -> Path:
    """Write results.json, samples.jsonl and any artifacts as one atomic folder rename; returns results.json's path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / result.run_id
    staging = output_dir / f".staging-{result.run_id}-{process_tag()}"
    staging.mkdir()
    try:
        (staging / SAMPLES_FILE).write_text("".join(json.dumps(json_safe(r), allow_nan=False) + "\n"
                                                    for r in records))
        (staging / RESULTS_FILE).write_text(dumps(result.to_json()) + "\n")
        for name, content in (artifacts or {}).items():
            (staging / name).write_bytes(content)
        for file in staging.iterdir():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final / RESULTS_FILE


def remove_stale_staging(output_dir: Path) -> None:
    """Staging folders whose writer process is gone (killed mid-write, `stale_process_tag`) are deleted."""
    for folder in output_dir.glob(".staging-*"):
        if stale_process_tag(writer_tag(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)


THUMBNAIL_PROMPTS = 6  # per suite, the first prompts' images kept small in the run folder (leaderboard grids)
THUMBNAIL_SIZE = 128
THUMBNAIL_GLOB = "thumb-*.png"


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


@dataclass
class ModelRecord:
    """The model as it ran: which weights (fingerprint), in what dtype, and the transformer after the chain."""

    name: str
    family: str
    source: str
    fingerprint: str
    dtype: str
    base: dict[str, Any] | None = None  # a saved compressed model's base model
    transformer_parameters: int | None = None  # after the chain: what the leaderboard sizes methods by
    transformer_weight_bytes: int | None = None


@dataclass
class MethodRecord:
    name: str  # the chain as given, e.g. "hierarchicalprune+nf4"
    chain: list[dict[str, Any]]  # per step: {"name", "params"} with every parameter resolved


@dataclass
class SuiteRecord:
    """One suite's protocol (parameters, sampling, sample count) and what it scored."""

    params: dict[str, Any]
    sampling: dict[str, Any]
    samples_requested: int
    samples_scored: int = 0
    notes: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    # what the transformer computed for the scored images (harness.models.denoising.summarize_calls); None for
    # measurement suites and images cached before it was recorded
    transformer_calls: dict[str, Any] | None = None


@dataclass
class GenerationRecord:
    seed_mode: str
    base_seed: int
    batch_size: int
    num_processes: int = 1
    cache_dir: str = ""
    images_generated_main_process: int = 0
    images_cached_main_process: int = 0
    seconds: float = 0.0


@dataclass
class CompressionRecord:
    wall_seconds: float
    steps: list[dict[str, Any]]  # per step: name, params, wall_seconds, cost (or from_cache)


@dataclass
class RunResult:
    """The run document (results.json): what ran, on what, and every metric with its details."""

    run_id: str
    created: str
    command: list[str]
    model: ModelRecord
    method: MethodRecord
    suites: dict[str, SuiteRecord]
    metrics: dict[str, float]
    metric_details: dict[str, dict[str, Any]]
    generation: GenerationRecord
    compression: CompressionRecord
    device: dict[str, Any]  # harness.environment.device_info
    versions: dict[str, str]
    git_commit: str | None
    wall_seconds: float
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        for suite in document["suites"].values():  # written only where known, so older documents round-trip
            if suite["transformer_calls"] is None:
                del suite["transformer_calls"]
        return {"schema_version": document.pop("schema_version"), **document}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """The document of any readable schema version (the fields did not change from version 1)."""
        data = dict(data)
        data["model"] = ModelRecord(**data["model"])
        data["method"] = MethodRecord(**data["method"])
        data["suites"] = {name: SuiteRecord(**suite) for name, suite in data["suites"].items()}
        data["generation"] = GenerationRecord(**data["generation"])
        data["compression"] = CompressionRecord(**data["compression"])
        return cls(**data)

    def protocol(self, suite: str | None = None) -> dict[str, Any]:
        """This run's protocol (`run_protocol`), of every suite or only of `suite`."""
        suites = self.suites if suite is None else {suite: self.suites[suite]}
        return run_protocol(suites, self.generation.seed_mode, self.generation.base_seed, self.device["type"])

    def identity(self) -> str:
        return run_identity(self.model.fingerprint, self.model.dtype, self.method.chain, self.protocol())

    def protocol_differences(self, other: RunResult, suite: str) -> list[str]:
        """Which parts of `suite`'s protocol differ between this run and `other` (empty: they compare pairwise)."""
        if suite not in self.suites or suite not in other.suites:
            return [f"{suite} is not in both runs"]
        ours, theirs = self.protocol(suite), other.protocol(suite)
        differences = [part for part, index in (("suite parameters", 0), ("sampling", 1), ("sample count", 2))
                       if ours["suites"][suite][index] != theirs["suites"][suite][index]]
        return differences + [part for part in ("seeds", "device") if ours[part] != theirs[part]]


def run_protocol(suites: dict[str, SuiteRecord], seed_mode: str, base_seed: int, device_type: str) -> dict[str, Any]:
    """How images were drawn and scored, apart from the model and the method: each suite's resolved parameters,
    sampling and sample count, the seeds and the device type. Two runs compare pairwise only under one protocol."""
    return json_safe({
        "suites": {name: [s.params, s.sampling, s.samples_requested] for name, s in sorted(suites.items())},
        "seeds": [seed_mode, base_seed], "device": device_type})


def run_identity(fingerprint: str, dtype: str, chain: list[dict[str, Any]], protocol: dict[str, Any]) -> str:
    """What makes two runs the same measurement: the weights and dtype, the resolved chain and the protocol; not
    when they ran or how they were batched. The one definition recipes (skip a finished run), the leaderboard
    (newest run per identity) and `harness check` use."""
    return json.dumps({"model": [fingerprint, dtype], "method": json_safe(chain), **protocol}, sort_keys=True)


def find_finished_run(output_dir: Path, identity: str) -> Path | None:
    """The results.json of a finished run in `output_dir` whose identity is `identity`, if there is one."""
    from harness.errors import UsageError

    for path in sorted(Path(output_dir).glob(f"*/{RESULTS_FILE}")):
        try:
            if load_results(path).identity() == identity:
                return path
        except UsageError:
            continue  # another schema or a damaged file is not this run
    return None


def load_results(path: Path) -> RunResult:
    """Read a results.json (or its run folder): this schema, or an older one migrated on reading."""
    from harness.errors import UsageError

    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no results at '{path}'") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"'{path}' is not a valid results file ({exc})") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version not in READABLE_VERSIONS:
        raise UsageError(f"'{path}' has schema version {version if version is not None else '?'}; this harness "
                         f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        raise UsageError(f"'{path}' has no metrics map: it is not a finished harness run (rerun it)")
    for key, value in metrics.items():
        number = from_json_safe(value)
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise UsageError(f"'{path}': metric {key} is {value!r}, not a number: the file was edited or damaged")
    try:
        return RunResult.from_json(from_json_safe(data))
    except (TypeError, KeyError, ValueError, AttributeError) as exc:  # a field missing or of another type
        raise UsageError(f"'{path}' is not a complete results file ({type(exc).__name__}: {exc}): rerun the run")\
            from None


def load_records(folder: Path, schema_version: int = SCHEMA_VERSION) -> list[dict[str, Any]]:
    """The rows of a run folder's samples.jsonl, each saying what it is in RECORD_FIELD (rows of version 1 did not:
    an image row was the one with a `prompt_index`)."""
    path = Path(folder) / SAMPLES_FILE
    if not path.is_file():
        return []
    from harness.errors import UsageError

    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            row = from_json_safe(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}:{number} is not a JSON record ({exc}): the run folder is damaged") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{number} is not a JSON object: the run folder is damaged")
        rows.append(row)
    if schema_version == 1:
        rows = [{RECORD_FIELD: IMAGE_RECORD if "prompt_index" in row else MEASUREMENT_RECORD, **row} for row in rows]
    return rows
