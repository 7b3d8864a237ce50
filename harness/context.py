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
    """The run's cache folder, device and progress setting, as plugins see them."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    device: str = "cpu"
    progress: bool = True
