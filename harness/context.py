"""What a run hands its plugins besides the model: where to cache, which device, whether to show progress.

Compressors and suites both get a `Context` (`plugin.context`), so a suite that fetches data (GenEval's metadata) or
a compressor that trains (distillation checkpoints) writes under the run's `--cache-dir` and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_cache_dir() -> Path:
    """`$HARNESS_CACHE_DIR`, else ~/.cache/dit-compression-harness."""
    return Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "dit-compression-harness"))


@dataclass(frozen=True)
class Context:
    """The run's cache folder, device and progress setting, as plugins see them, and the local folder its weights load
    from (`--weights`, or `--model` given as a folder; None for a hub id, a model built from config or random weights),
    so a suite can read what the model folder says of itself (geneval-shapes: the world it was trained on)."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    device: str = "cpu"
    progress: bool = True
    weights_folder: Path | None = None
