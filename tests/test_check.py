"""`harness check`: drops follow each metric's direction, tolerances absolute or relative, paired bootstrap intervals
over prompts, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke, read_results, run_args

from harness.commands.compare import Tolerance, bootstrap_change, bootstrap_changes, bootstrap_drop, drop, load_run

FAST = ["--set", "sampling.num_inference_steps=2", "--limit", "6"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("check")
    dirs = {"cache": folder / "cache", "out": folder / "runs"}
    paths = {}
    for name, method in (("base", "none"), ("again", "none"), ("pruned", "depth-last")):
        result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", method, "--suite", "fidelity,latency",
                                  "--set", "latency.repeats=2", "--set", "latency.warmup=0", *FAST))
        assert result.returncode == 0, result.stderr
        paths[name] = Path(result.stdout.strip().splitlines()[-1]).parent
        assert read_results(result.stdout)["metrics"]["fidelity/ssim"] <= 1.0
    return paths


def test_direction_decides_what_a_drop_is():
    assert drop(0.8, 0.7, higher_better=True) == pytest.approx(0.1)
    assert drop(100.0, 120.0, higher_better=False) == pytest.approx(20.0)  # slower is worse
    assert Tolerance.parse("latency/end_to_end=10%").allowed(200.0) == pytest.approx(20.0)
    assert Tolerance.parse("fidelity/ssim=0.02").allowed(0.5) == pytest.approx(0.02)


def test_a_pruned_run_fails_and_a_rerun_passes(runs):
    failed = invoke("check", str(runs["pruned"]), "--baseline", str(runs["base"]), "--max-drop",
                    "fidelity/ssim=0.01")
    assert failed.returncode == 1, failed.stderr
    assert "FAIL" in failed.stdout and "fidelity/ssim" in failed.stdout
    passed = invoke("check", str(runs["again"]), "--baseline", str(runs["base"]), "--max-drop", "fidelity/ssim=0",
                    "--json")
    assert passed.returncode == 0, passed.stdout
    report = json.loads(passed.stdout)
    assert report["passed"] and report["checks"][0]["drop"] == 0  # identical images: cached, same numbers


def test_latency_increase_is_a_drop(runs):
    report = json.loads(invoke("check", str(runs["pruned"]), "--baseline", str(runs["base"]), "--max-drop",
                               "latency/end_to_end=1000%", "--json").stdout)
    row = report["checks"][0]
    assert row["higher_is_better"] is False
    assert row["drop"] == pytest.approx(row["run"] - row["baseline"])
    assert row["interval_95"] is None  # repeats are not prompts: no bootstrap


def test_bootstrap_interval_brackets_the_drop(runs):
    run, base = load_run(runs["pruned"]), load_run(runs["base"])
    low, high = bootstrap_drop(run, base, "fidelity/ssim", samples=300)
    point = drop(base.value("fidelity/ssim"), run.value("fidelity/ssim"), True)
    assert low <= point <= high and low > 0  # every image lost structure


def test_several_keys_share_one_resampling_pass_with_the_same_intervals(runs):
    """The leaderboard asks for every metric of a suite at once: the same intervals as one key at a time, and None
    for a measurement suite's key among them."""
    run, base = load_run(runs["pruned"]), load_run(runs["base"])
    keys = ["fidelity/ssim", "fidelity/psnr", "latency/end_to_end"]
    together = bootstrap_changes(run, base, keys, samples=200)
    assert together == {key: bootstrap_change(run, base, key, samples=200) for key in keys}
    assert together["latency/end_to_end"] is None and together["fidelity/ssim"][1] < 0
    assert bootstrap_changes(run, base, keys, samples=200, seed=1) != together  # the seed decides the draws


@pytest.mark.parametrize(("args", "message"), [
    (["--max-drop", "fidelity/ssim"], "expected <suite>/<metric>=<tolerance>"),
    (["--max-drop", "fidelity/ssim=abc"], "is not a number"),
    (["--max-drop", "fidelity/sharpness=0.1"], "has no metric 'fidelity/sharpness'"),
    ([], "give at least one --max-drop"),
])
def test_bad_input_exits_2(runs, args, message):
    result = invoke("check", str(runs["again"]), "--baseline", str(runs["base"]), *args)
    assert result.returncode == 2 and message in result.stderr


def test_missing_run_exits_2(tmp_path, runs):
    result = invoke("check", str(tmp_path / "nothing"), "--baseline", str(runs["base"]), "--max-drop",
                    "fidelity/ssim=0.1")
    assert result.returncode == 2 and "no results at" in result.stderr


def test_runs_of_other_prompts_are_refused(tmp_path, runs):
    """A baseline scored on other prompts (another --limit) cannot gate: exit 2, not a meaningless verdict."""
    import shutil

    fewer = tmp_path / "fewer"
    shutil.copytree(runs["again"], fewer)
    lines = (fewer / "samples.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line).get("prompt_index") != 0]
    assert len(kept) < len(lines)
    (fewer / "samples.jsonl").write_text("".join(line + "\n" for line in kept))
    result = invoke("check", str(fewer), "--baseline", str(runs["base"]), "--max-drop", "fidelity/ssim=0.1")
    assert result.returncode == 2
    assert "not the same prompts and samples" in result.stderr and "--limit" in result.stderr


def test_recovery_benchmark_reads_three_runs(runs):
    """benchmarks/bench_distill_recovery.py: a 'distilled' run identical to the base recovered all of the drop
    (exit 0), one identical to the pruned run none of it (exit 1)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_distill_recovery.py"

    def recovery(distilled: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(runs["base"]), str(runs["pruned"]),
                               str(runs[distilled]), "--metric", "fidelity/ssim", "--resamples", "200"],
                              capture_output=True, text=True, timeout=300)

    full, none = recovery("again"), recovery("pruned")
    assert full.returncode == 0, full.stdout + full.stderr
    assert "recovered 100.0% (95% CI 100.0% to 100.0%" in full.stdout
    assert none.returncode == 1, none.stdout + none.stderr
    assert "recovered 0.0% (95% CI 0.0% to 0.0%" in none.stdout


def test_a_baseline_under_another_protocol_is_named_in_the_verdict(runs, tmp_path):
    """check uses the runs' one identity: a baseline drawn with other sampling is still compared (fewer steps may
    be the change under test) but the verdict says so; one of the same protocol says nothing."""
    dirs = {"cache": runs["base"].parent.parent / "cache", "out": tmp_path / "runs"}
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--suite", "fidelity", "--limit", "6",
                              "--set", "sampling.num_inference_steps=3"))
    assert result.returncode == 0, result.stderr
    other = Path(result.stdout.strip().splitlines()[-1]).parent
    differing = invoke("check", str(other), "--baseline", str(runs["base"]), "--max-drop", "fidelity/ssim=1")
    assert differing.returncode == 0, differing.stderr
    assert "note: the runs differ in sampling, not only in model and method" in differing.stdout
    same = invoke("check", str(runs["pruned"]), "--baseline", str(runs["base"]), "--max-drop", "fidelity/ssim=1",
                  "--json")
    assert json.loads(same.stdout)["checks"][0]["protocol_differences"] == []
