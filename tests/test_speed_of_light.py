"""Speed of light, energy and other load in the latency suite: FLOPs of the forward as compressed against the device's
peak (a CPU's measured in the same run), what bounds it, joules per image where a counter is readable, and timings
taken beside other work flagged in results and the leaderboard."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import invoke, read_results, run_args

from harness.devices import Peak, measured_cpu_peak, profile_of
from harness.flops import roofline
from harness.monitors import LOADED_CORES, EnergyMeter, OtherLoad

LATENCY = ("--suite", "latency", "--set", "latency.repeats=3", "--set", "latency.warmup=1",
           "--set", "latency.forward_repeats=3")
BURN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"


def test_the_roofline_says_what_bounds_a_forward():
    peak = Peak(tflops=100.0, bandwidth_gbs=1000.0, source="a card")  # ridge: 100 FLOP per byte
    compute = roofline(int(1e12), 0.02, int(1e9), peak)  # 1000 FLOP/B, 50 TFLOP/s: half the roof
    assert compute["bound"] == "compute" and compute["peak_fraction"] == pytest.approx(0.5)
    assert compute["ridge_flop_per_byte"] == pytest.approx(100.0)
    bandwidth = roofline(int(1e10), 1e10 / 8e12, int(1e9), peak)  # 10 FLOP/B: roof 10 TFLOP/s, 8 reached
    assert bandwidth["bound"] == "bandwidth" and bandwidth["roof_fraction"] == pytest.approx(0.8)
    overhead = roofline(int(1e10), 1e10 / 1e12, int(1e9), peak)  # 1 of the 10 TFLOP/s the roof allows
    assert overhead["bound"] == "overhead" and overhead["peak_fraction"] == pytest.approx(0.01)
    unknown = roofline(int(1e10), 0.01, int(1e9), Peak(None, None, "no profile"))
    assert unknown["peak_fraction"] is None and unknown["bound"] is None and unknown["achieved_tflops"] == 1.0


def test_gpu_names_find_their_datasheet_and_the_cpu_is_measured():
    import torch

    h100 = profile_of("NVIDIA H100 80GB HBM3")
    assert h100.name == "h100" and h100.peak_tflops("bfloat16") == 989.4 and h100.peak_tflops("float8") == 1978.9
    assert profile_of("NVIDIA H100 PCIe") is None  # another card (756 TFLOP/s): no wrong figure
    assert profile_of("NVIDIA GeForce RTX 4060 Ti").name == "rtx4060ti-16gb"  # the most specific match
    assert profile_of("NVIDIA L40S").peak_tflops("float32") is None
    cpu = measured_cpu_peak(torch.float32, seconds=0.05)
    assert cpu.tflops > 0 and cpu.bandwidth_gbs > 0 and "measured on this CPU" in cpu.source


def test_latency_counts_the_forward_as_compressed_against_the_measured_peak(dirs):
    """The forward's FLOPs are the weight-free estimate's for the same model and sampling; pruning lowers them; the
    fraction of peak is the achieved rate over the peak measured in the run."""
    base = invoke(*run_args(dirs, *LATENCY))
    pruned = invoke(*run_args(dirs, "--method", "depth-last", *LATENCY))
    assert base.returncode == 0 and pruned.returncode == 0, base.stderr + pruned.stderr
    base_results, pruned_results = read_results(base.stdout), read_results(pruned.stdout)
    estimate = invoke("estimate", "--model", "tiny-sd3", "--json")
    import json

    flops_per_step = json.loads(estimate.stdout)["transformer_flops_per_step"]["before"]["total"]
    metrics = base_results["metrics"]
    assert metrics["latency/forward_tflop"] * 1e12 == pytest.approx(flops_per_step, rel=1e-9)
    assert pruned_results["metrics"]["latency/forward_tflop"] < 0.9 * metrics["latency/forward_tflop"]
    achieved = metrics["latency/forward_tflop"] / (metrics["latency/transformer_forward"] / 1000)
    assert metrics["latency/achieved_tflops"] == pytest.approx(achieved)
    note = next(n for n in base_results["suites"]["latency"]["notes"] if n.startswith("speed of light"))
    assert "measured on this CPU in this run" in note and "-bound" in note
    assert 0 < metrics["latency/peak_fraction"] < 1
    assert "energy per image: unavailable" in " ".join(base_results["suites"]["latency"]["notes"]) or \
        metrics["latency/energy_per_image"] > 0  # RAPL where this machine exposes it


@pytest.mark.slow
def test_a_compiled_forward_counts_the_same_flops(dirs):
    eager = read_results(invoke(*run_args(dirs, *LATENCY)).stdout)
    compiled = invoke(*run_args(dirs, "--method", "compile", *LATENCY))
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    assert read_results(compiled.stdout)["metrics"]["latency/forward_tflop"] == \
        eager["metrics"]["latency/forward_tflop"]


def test_energy_is_read_from_rapl_counters_with_wrap_around(tmp_path, monkeypatch):
    import harness.monitors

    monkeypatch.setattr(harness.monitors, "_RAPL", tmp_path / "absent")
    with EnergyMeter("cpu") as missing:
        pass
    assert missing.joules is None and "no readable RAPL counter" in missing.unavailable
    package = tmp_path / "intel-rapl:0"
    (tmp_path / "intel-rapl:0:0").mkdir(parents=True)  # a sub-zone (core): inside the package, not added again
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("5")
    package.mkdir()
    (package / "max_energy_range_uj").write_text("1000000000")
    (package / "energy_uj").write_text("999000000")
    monkeypatch.setattr(harness.monitors, "_RAPL", tmp_path)
    with EnergyMeter("cpu") as meter:
        (package / "energy_uj").write_text("2000000")  # wrapped past 1000 J
    assert meter.joules == pytest.approx(3.0) and "1 package" in meter.source


def test_other_processes_cpu_time_is_measured_and_flagged():
    with OtherLoad("cpu") as quiet:
        time.sleep(0.5)
    burner = subprocess.Popen([sys.executable, "-c", BURN.format(seconds=1.5)])
    try:
        time.sleep(0.2)  # the interpreter is up and spinning
        with OtherLoad("cpu") as busy:
            time.sleep(1.0)
    finally:
        burner.wait()
    assert busy.report.other_cores > 0.6 and busy.report.loaded and "measured under load" in busy.report.describe()
    assert quiet.report.other_cores < busy.report.other_cores - 0.5


def test_a_timing_taken_under_load_is_flagged_in_the_results_and_the_leaderboard(dirs):
    burner = subprocess.Popen([sys.executable, "-c", BURN.format(seconds=60)])
    try:
        loaded = invoke(*run_args(dirs, *LATENCY))
    finally:
        burner.kill()
        burner.wait()
    assert loaded.returncode == 0, loaded.stderr
    results = read_results(loaded.stdout)
    assert results["metrics"]["latency/other_load"] > LOADED_CORES
    assert any(n.startswith("measured under load") for n in results["suites"]["latency"]["notes"])
    board = invoke("leaderboard", str(dirs["out"]))
    assert board.returncode == 0, board.stderr
    assert "(under load)" in (dirs["out"] / "LEADERBOARD.md").read_text()
