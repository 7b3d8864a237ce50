"""Device suites on the CPU: latency medians with spread, memory figures named and GPU-only ones reported as
unavailable (never a crash), device profiles, suite groups."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import invoke, read_results, run_args

from harness.commands.setup import expand_suites
from harness.devices import GIB, PROFILES, fits
from harness.memory import PeakMemory, cuda_index
from harness.metrics import summarize_median
from harness.results import load_records


def test_device_suites_on_cpu(dirs):
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--suite", "device", "--set", "latency.repeats=3",
                              "--set", "latency.warmup=1", "--set", "latency.forward_repeats=3"))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    metrics, details = results["metrics"], results["metric_details"]
    for name in ("end_to_end", "per_step", "transformer_forward", "first_call"):
        assert metrics[f"latency/{name}"] > 0
    end_to_end = details["latency/end_to_end"]
    assert end_to_end["n"] == 3 and end_to_end["value"] == end_to_end["distribution"]["median"]
    assert end_to_end["distribution"]["min"] <= end_to_end["value"] <= end_to_end["distribution"]["max"]
    # the spread reported with the median is the median's (bootstrapped from the timed calls), not the mean's
    rows = load_records(Path(result.stdout.strip().splitlines()[-1]).parent)
    timed = [r["ms_per_image"] for r in rows if r["suite"] == "latency" and r["kind"] == "pipeline_call"]
    assert end_to_end["statistic"] == "median" and end_to_end["stderr"] == summarize_median(timed).stderr
    assert metrics["latency/per_step"] < metrics["latency/end_to_end"]  # 4 steps plus encoding and decoding
    # stored weights: a float32 tiny pipeline; the components add up
    total = sum(metrics[f"memory/weights_{c}_gib"] for c in ("transformer", "text_encoders", "vae"))
    assert metrics["memory/weights_total_gib"] == pytest.approx(total)
    assert metrics["memory/inference_peak_rss_gib"] > metrics["memory/weights_total_gib"]
    for gpu_only in ("inference_allocated_peak_gib", "inference_nvml_peak_gib", "transformer_forward_peak_gib"):
        assert f"memory/{gpu_only}" not in metrics
    notes = " ".join(results["suites"]["memory"]["notes"])
    assert "nvml peak: unavailable: no CUDA device" in notes and "device profiles: unavailable" in notes
    assert "batch 1, 64x64, 4 steps" in results["suites"]["latency"]["notes"][0]


def test_gpu_only_settings_say_so_on_cpu(dirs):
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--suite", "memory", "--set",
                              "memory.emulate_device=rtx4070"))
    assert result.returncode == 2 and "needs a CUDA device" in result.stderr
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--suite", "memory", "--emulate-device", "rtx4070"))
    assert result.returncode == 2 and "needs a CUDA device" in result.stderr
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--suite", "fidelity", "--emulate-device", "rtx4070"))
    assert result.returncode == 2 and "add --suite memory" in result.stderr
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--suite", "memory", "--set",
                              "memory.emulate_device=rtx9999"))
    assert result.returncode == 2 and "rtx4070" in result.stderr  # lists the profiles


def test_cuda_index_resolves_a_bare_cuda_device(monkeypatch):
    # torch.cuda.set_per_process_memory_fraction refuses torch.device("cuda"); --device cuda must still cap (this
    # crashed --emulate-device on an H100)
    import torch

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert cuda_index(torch.device("cuda")) == 3
    assert cuda_index("cuda:1") == 1


def test_profiles_and_fits():
    assert PROFILES["rtx4070"].memory_gib == pytest.approx(12e9 / GIB)
    rows = {row["profile"]: row for row in fits(10.0, "test")}
    assert rows["rtx4070"]["fits"] and not rows["rtx4060"]["fits"]
    assert rows["rtx4060"]["headroom_gib"] == pytest.approx(8e9 / GIB - 10.0, abs=1e-3)
    assert {row["kind"] for row in rows.values()} == {"server", "consumer"}


def test_suite_groups_expand_per_model():
    assert expand_suites(["full"], ("geneval-shapes",)) == ["geneval-shapes", "fidelity", "latency", "memory"]
    assert expand_suites(["quality", "fidelity"], ("geneval", "hpsv2")) == ["geneval", "hpsv2", "fidelity"]
    assert expand_suites(["device", "latency"], ()) == ["latency", "memory"]


def test_peak_rss_sees_an_allocation():
    import numpy as np

    with PeakMemory("cpu") as baseline:
        pass
    with PeakMemory("cpu") as phase:
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
        del block
    assert phase.rss - baseline.rss > 48 * 1024 * 1024
    assert phase.allocated is None and "allocated" in phase.unavailable


def test_a_nested_phase_does_not_erase_the_enclosing_peak():
    import numpy as np

    with PeakMemory("cpu") as outer:
        block = np.ones(64 * 1024 * 1024 // 8)
        del block
        with PeakMemory("cpu") as inner:
            pass
    assert outer.rss - inner.rss > 48 * 1024 * 1024
