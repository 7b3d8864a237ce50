"""The generation benchmark runs end to end and reports its median ratio. Its speed verdict is the benchmark's own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_generation.py"


def test_bench_generation_smoke():
    # One thread: a tiny run on a shared CPU is then not stalled by another process's load.
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--images", "2", "--batch-size", "2", "--repeats", "1", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    match = re.search(r"^median ratio harness/bare: (\S+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    ratio = float(match.group(1))
    assert ratio > 0
    assert "identical pixels: yes" in result.stdout, result.stdout
    assert re.search(r"^(PASS|FAIL): ", result.stdout, re.MULTILINE), result.stdout
    assert "torch threads: 1 " in result.stdout and "model: tiny-sd3 " in result.stdout
