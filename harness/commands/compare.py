"""Comparing runs: metric drops with the metric's own direction, bootstrap intervals over prompts, and the
`harness check` gate.

A drop is positive when the run is worse than the baseline: lower for a higher-is-better metric, higher for a
lower-is-better one (latency, memory). Intervals resample prompts with replacement (the same prompts in both runs:
a paired bootstrap) and recompute the metric from the per-image records with the suite's own `aggregate`, so
GenEval's per-task averaging is respected.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.results import IMAGE_RECORD, RECORD_FIELD, RunResult

BOOTSTRAP_SAMPLES = 1000


@dataclass
class Run:
    results: RunResult
    records: list[dict[str, Any]]
    path: Path

    def value(self, key: str) -> float:
        if key not in self.results.metrics:
            raise UsageError(f"{self.path} has no metric '{key}'; it has: {', '.join(self.results.metrics)}")
        return float(self.results.metrics[key])

    def suite_records(self, suite: str) -> list[dict[str, Any]]:
        """The suite's per-image rows (what the paired bootstrap resamples)."""
        return [r for r in self.records if r["suite"] == suite and r[RECORD_FIELD] == IMAGE_RECORD]


def load_run(path: Path) -> Run:
    """A run folder (or its results.json) with its per-sample records."""
    from harness.results import load_records, load_results

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    results = load_results(path)
    return Run(results, load_records(folder, results.schema_version), folder)


def higher_is_better(run: Run, key: str) -> bool:
    details = run.results.metric_details.get(key)
    if details is not None and "higher_is_better" in details:
        return bool(details["higher_is_better"])
    from harness.metrics import lookup

    return lookup(key).higher_is_better


def drop(base: float, value: float, higher_better: bool) -> float:
    return base - value if higher_better else value - base


def bootstrap_change(run: Run, baseline: Run, key: str, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float] | None:
    """The `level` interval of (run - baseline) for `key` from a paired bootstrap over the prompts both runs
    scored, or None when the suite has no per-image records (measurement suites) or the runs share no prompts."""
    return bootstrap_changes(run, baseline, [key], samples, seed, level)[key]


def bootstrap_changes(run: Run, baseline: Run, keys: list[str], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                      level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """`bootstrap_change` for several keys, one resampling pass per suite."""
    return bootstrap_intervals([run, baseline], keys, lambda v: v[0] - v[1], samples, seed, level)


def bootstrap_interval(runs: list[Run], key: str, statistic: Callable[[list[float]], float],
                       samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float] | None:
    """The `level` interval of `statistic(values of key in each run)` from a paired bootstrap over the prompts
    every run scored (`bootstrap_intervals` for one key)."""
    return bootstrap_intervals(runs, [key], statistic, samples, seed, level)[key]


def bootstrap_intervals(runs: list[Run], keys: list[str], statistic: Callable[[list[float]], float],
                        samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                        level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """For each of `keys` (any suites), the `level` interval of `statistic(values of the key in each run)` from a
    paired bootstrap over the prompts every run scored: each resample draws prompts with replacement and
    recomputes the metrics of every run from the same prompts' per-image records. A key's interval is None when
    its suite has no per-image records, the runs share no prompts, or some resample's metric is undefined;
    resamples where the statistic is not finite are left out. The draws depend only on the shared prompts and
    `seed`, so the keys of one suite share one pass of `aggregate` per resample (the same intervals as one key at
    a time, at a fraction of the cost)."""
    from harness.registry import SUITES

    by_suite: dict[str, list[str]] = {}
    for key in keys:
        suite_name, _, metric = key.partition("/")
        by_suite.setdefault(suite_name, []).append(metric)
    intervals: dict[str, tuple[float, float] | None] = {key: None for key in keys}
    for suite_name, metrics in by_suite.items():
        if suite_name not in SUITES.names():
            continue
        suite = SUITES.get(suite_name)()
        if suite.kind != "images":
            continue
        grouped = [_by_prompt(run.suite_records(suite_name)) for run in runs]
        prompts = sorted(set.intersection(*(set(g) for g in grouped)))
        if not prompts:
            continue
        rng = random.Random(seed)
        values: dict[str, list[float] | None] = {metric: [] for metric in metrics}
        for _ in range(samples):
            chosen = [rng.choice(prompts) for _ in prompts]
            aggregates = [suite.aggregate([r for p in chosen for r in g[p]]) for g in grouped]
            for metric, kept in values.items():
                if kept is None:
                    continue
                per_run = [_value(aggregate.get(metric)) for aggregate in aggregates]
                if any(m is None or not math.isfinite(m) for m in per_run):
                    values[metric] = None
                    continue
                value = statistic([float(m) for m in per_run if m is not None])
                if math.isfinite(value):
                    kept.append(value)
        for metric, kept in values.items():
            if kept:
                kept.sort()
                tail = (1 - level) / 2
                intervals[f"{suite_name}/{metric}"] = (kept[int(tail * (len(kept) - 1))],
                                                       kept[int(math.ceil((1 - tail) * (len(kept) - 1)))])
    return intervals


def bootstrap_drop(run: Run, baseline: Run, key: str, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float] | None:
    """The interval of the drop (positive = worse, the metric's direction applied), from `bootstrap_change`."""
    interval = bootstrap_change(run, baseline, key, samples, seed, level)
    if interval is None:
        return None
    low, high = interval
    return (-high, -low) if higher_is_better(baseline, key) else (low, high)


def _value(metric: Any) -> float | None:
    return None if metric is None else metric.value


def _by_prompt(records: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(int(record["prompt_index"]), []).append(record)
    return grouped


@dataclass(frozen=True)
class Tolerance:
    key: str
    amount: float
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or "/" not in key or not value:
            raise UsageError(f"--max-drop '{text}': expected <suite>/<metric>=<tolerance>, e.g. "
                             "geneval-shapes/overall=0.02 or latency/end_to_end=10%")
        relative = value.endswith("%")
        try:
            amount = float(value[:-1] if relative else value)
        except ValueError:
            raise UsageError(f"--max-drop '{text}': '{value}' is not a number (or a percentage)") from None
        if amount < 0 or not math.isfinite(amount):
            raise UsageError(f"--max-drop '{text}': the tolerance must be a finite number >= 0")
        return cls(key, amount / 100 if relative else amount, relative)

    def allowed(self, base: float) -> float:
        return self.amount * abs(base) if self.relative else self.amount


def check(run_path: Path, baseline_path: Path, tolerances: list[Tolerance],
          significant_only: bool = False) -> dict[str, Any]:
    """Each tolerance's verdict; `passed` is False when some metric dropped by more than allowed (and, with
    `significant_only`, its bootstrap interval lies above zero)."""
    if not tolerances:
        raise UsageError("give at least one --max-drop <suite>/<metric>=<tolerance>")
    run, baseline = load_run(run_path), load_run(baseline_path)
    rows = []
    for tolerance in tolerances:
        _require_same_samples(run, baseline, tolerance.key)
        base, value = baseline.value(tolerance.key), run.value(tolerance.key)
        better = higher_is_better(baseline, tolerance.key)
        lost = drop(base, value, better)
        allowed = tolerance.allowed(base)
        interval = bootstrap_drop(run, baseline, tolerance.key)
        exceeded = lost > allowed
        significant = interval is not None and interval[0] > 0
        failed = exceeded and (significant or not significant_only or interval is None)
        rows.append({"metric": tolerance.key, "higher_is_better": better, "baseline": base, "run": value,
                     "protocol_differences": run.results.protocol_differences(baseline.results,
                                                                              tolerance.key.partition("/")[0]),
                     "drop": lost, "allowed": allowed, "tolerance": f"{tolerance.amount * 100:g}%" if
                     tolerance.relative else f"{tolerance.amount:g}",
                     "interval_95": list(interval) if interval else None, "significant": significant,
                     "passed": not failed})
    return {"run": str(run.path), "baseline": str(baseline.path), "significant_only": significant_only,
            "passed": all(row["passed"] for row in rows), "checks": rows}


def _require_same_samples(run: Run, baseline: Run, key: str) -> None:
    """A gate that compares means over different prompts (another --limit, other suite settings) measures nothing:
    refuse it, naming the fix."""
    suite = key.partition("/")[0]
    ours = {(r["prompt_index"], r.get("sample_index")) for r in run.suite_records(suite)}
    theirs = {(r["prompt_index"], r.get("sample_index")) for r in baseline.suite_records(suite)}
    if ours and theirs and ours != theirs:
        raise UsageError(f"{key}: the run scored {len(ours)} {suite} images and the baseline {len(theirs)}, not the "
                         f"same prompts and samples ({len(ours & theirs)} shared); rerun with the baseline's --limit "
                         "and suite settings (its results.json records them)")


def format_check(report: dict[str, Any]) -> str:
    header = f"{'metric':<34} {'baseline':>10} {'run':>10} {'drop':>10} {'allowed':>10}  {'95% CI of drop':<22} verdict"
    lines = [f"run      {report['run']}", f"baseline {report['baseline']}", "", header]
    for row in report["checks"]:
        low_high = row["interval_95"]
        # + 0.0 turns a negative zero (identical runs) into +0
        interval = "-" if low_high is None else f"[{low_high[0] + 0.0:+.4g}, {low_high[1] + 0.0:+.4g}]"
        verdict = "ok" if row["passed"] else "FAIL"
        lines.append(f"{row['metric']:<34} {row['baseline']:>10.4g} {row['run']:>10.4g} {row['drop']:>+10.4g} "
                     f"{row['allowed']:>10.4g}  {interval:<22} {verdict}")
        if row["protocol_differences"]:  # a deliberate change (fewer steps) or a mistake: the reader decides
            lines.append(f"  note: the runs differ in {', '.join(row['protocol_differences'])}, not only in "
                         "model and method")
    lines += ["", "passed" if report["passed"] else "FAILED: a metric dropped by more than its tolerance"]
    return "\n".join(lines)
