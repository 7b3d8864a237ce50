"""One metric path: a run's reported figures are its suites' aggregation of its own records; the spread reported
with a median is the median's."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, read_results, run_args

from harness.commands.compare import bootstrap_interval, load_run
from harness.metrics import ratio_stderr, stderr_of_mean, stderr_of_mean_of_means, summarize, summarize_median
from harness.registry import SUITES
from harness.results import IMAGE_RECORD, RECORD_FIELD, load_records


def test_reported_figures_are_the_aggregate_of_the_runs_own_records(dirs):
    """Every image suite's value and standard error in results.json, recomputed by its `aggregate` from the rows of
    samples.jsonl (what the paired bootstrap resamples), come out the same to the last bit."""
    result = invoke(*run_args(dirs, "--model", "reference", "--method", "depth-last", "--suite",
                              "geneval-shapes,fidelity", "--limit", "6", "--batch-size", "8"))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    rows = load_records(Path(result.stdout.strip().splitlines()[-1]).parent)
    checked = 0
    for suite_name in ("geneval-shapes", "fidelity"):
        suite = SUITES.get(suite_name)()
        recomputed = suite.aggregate([r for r in rows if r["suite"] == suite_name and r[RECORD_FIELD] == IMAGE_RECORD])
        reported = {k.partition("/")[2]: v for k, v in results["metric_details"].items() if k.startswith(suite_name)}
        assert set(recomputed) == set(reported)
        for name, value in recomputed.items():
            assert (value.value, value.n, value.stderr) == (reported[name]["value"], reported[name]["n"],
                                                           reported[name]["stderr"]), (suite_name, name)
            checked += 1
    assert checked >= 10  # geneval-shapes' overall, tags, correct_images/prompts; fidelity's psnr, ssim


def test_a_measurement_suite_has_no_bootstrap(dirs):
    result = invoke(*run_args(dirs, "--suite", "latency", "--set", "latency.repeats=2", "--set", "latency.warmup=0",
                              "--set", "latency.forward_repeats=2"))
    assert result.returncode == 0, result.stderr
    run = load_run(Path(result.stdout.strip().splitlines()[-1]))
    assert run.results.metrics["latency/end_to_end"] > 0
    assert bootstrap_interval([run, run], "latency/end_to_end", lambda v: v[0] - v[1], samples=20) is None


def test_the_median_carries_the_medians_standard_error():
    # two slow calls in 21: the mean and its standard error move a lot, the median and its spread hardly
    timings = [10.0] * 19 + [1000.0] * 2
    median = summarize_median(timings)
    assert median.value == 10.0 and median.statistic == "median"
    assert stderr_of_mean(timings) > 60 and median.stderr < 1.0
    # over many normal samples, the bootstrap standard error averages to the true spread of their medians
    samples = np.random.default_rng(1).normal(50.0, 4.0, size=(300, 101))
    true_spread = float(np.median(samples, axis=1).std(ddof=1))
    bootstrapped = float(np.mean([summarize_median(s, resamples=400).stderr for s in samples]))
    assert bootstrapped == pytest.approx(true_spread, rel=0.15)
    assert bootstrapped > 1.15 * float(np.mean([stderr_of_mean(s) for s in samples]))  # the median's is wider
    assert summarize_median(samples[0]).stderr == summarize_median(samples[0]).stderr  # seeded: one figure
    assert summarize_median([5.0]).stderr is None


def test_the_stderr_of_a_mean_of_group_means():
    groups = [[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]]
    errors = [summarize(g).stderr for g in groups]
    assert stderr_of_mean_of_means(errors) == pytest.approx(math.sqrt(errors[0] ** 2 + errors[1] ** 2) / 2)
    assert stderr_of_mean_of_means([errors[0], None]) is None  # a one-image group: unknown, not zero
    assert stderr_of_mean([1.0, float("inf")]) is None


def test_the_ratio_of_two_independent_estimates_carries_both_relative_errors():
    """Checked against simulation: the spread of a / b for independent normal a and b."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(100.0, 2.0, 200_000), rng.normal(50.0, 1.5, 200_000)
    assert ratio_stderr(100.0, 2.0, 50.0, 1.5) == pytest.approx(float(np.std(a / b)), rel=0.02)
    assert ratio_stderr(100.0, None, 50.0, 1.5) is None
