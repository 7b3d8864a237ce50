"""The results schema (one JSON per run, per-sample JSONL beside it) and crash-safe writing.

A run folder appears complete or not at all: its files are written into a hidden staging folder that is renamed
into place at the end, so a crash never leaves a partial or corrupt file among the results.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
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


def write_atomic(path: Path, content: bytes) -> None:
    """Write a file whole or not at all: a temporary file beside it, flushed, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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


def check_writable(output_dir: Path) -> None:
    """Fail before any work if results cannot be written there."""
    from harness.errors import UsageError

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write results to '{output_dir}' ({exc.strerror}): choose another --output-dir") \
            from None


def write_run(output_dir: Path, run_id: str, results: dict[str, Any], records: list[dict[str, Any]],
              artifacts: dict[str, bytes] | None = None) -> Path:
    """Write results.json, samples.jsonl and any artifacts as one atomic folder rename; returns results.json's path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / run_id
    staging = output_dir / f".staging-{run_id}-{os.getpid()}"
    staging.mkdir()
    try:
        (staging / SAMPLES_FILE).write_text("".join(json.dumps(json_safe(r), allow_nan=False) + "\n"
                                                    for r in records))
        (staging / RESULTS_FILE).write_text(dumps(results) + "\n")
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
    """Staging folders whose writer process is gone (killed mid-write) are deleted."""
    import psutil

    for folder in output_dir.glob(".staging-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not psutil.pid_exists(int(pid)):
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


def run_identity(results: dict[str, Any]) -> str:
    """What makes two runs the same measurement: the weights, the resolved method chain, each suite's resolved
    parameters, sampling and sample count, the seeds and the device type; not when they ran or how they were batched."""
    return json.dumps(json_safe({
        "model": [results["model"]["fingerprint"], results["model"]["dtype"]],
        "method": results["method"]["chain"],
        "suites": {name: [s["params"], s["sampling"], s["samples_requested"]] for name, s in results["suites"].items()},
        "seeds": [results["generation"]["seed_mode"], results["generation"]["base_seed"]],
        "device": results["device"]["type"]}), sort_keys=True)


def find_finished_run(output_dir: Path, identity: str) -> Path | None:
    """The results.json of a finished run in `output_dir` whose `run_identity` is `identity`, if there is one."""
    for path in sorted(Path(output_dir).glob(f"*/{RESULTS_FILE}")):
        if run_identity(from_json_safe(json.loads(path.read_text()))) == identity:
            return path
    return None


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json (or its run folder), checking the schema version."""
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
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"'{path}' has schema version {data.get('schema_version') if isinstance(data, dict) else '?'}"
                         f"; this harness reads version {SCHEMA_VERSION}")
    return from_json_safe(data)
