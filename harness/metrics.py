"""Metric declarations and summaries. Result keys are "<suite>/<metric>"; direction and unit come from here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError, unknown_name_error


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # "dB", "fraction", "ms", "GiB", "" for unitless scores
    higher_is_better: bool
    description: str


@dataclass
class MetricValue:
    """A suite's figure: the mean over `n` per-sample values, its standard error and their distribution."""

    value: float
    n: int
    stderr: float | None = None
    distribution: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "n": self.n, "stderr": self.stderr, "distribution": self.distribution}


def summarize(values: Sequence[float]) -> MetricValue:
    """Mean, standard error of the mean, and quantiles. Infinite values (PSNR of identical images) propagate."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("cannot summarize zero values")
    mean = float(array.mean())
    finite = bool(np.isfinite(array).all())
    stderr = float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 and finite else None
    quantiles = {"min": 0.0, "p05": 0.05, "p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95, "max": 1.0}
    # interpolating between infinite values gives nan: take the nearest order statistic then
    method = "linear" if finite else "nearest"
    distribution = {name: float(np.quantile(array, q, method=method)) for name, q in quantiles.items()}
    return MetricValue(mean, int(array.size), stderr, distribution)


def lookup(key: str) -> Metric:
    """The declaration of a result key "<suite>/<metric>"."""
    from harness.registry import SUITES

    suite_name, slash, metric_name = key.partition("/")
    if not slash:
        raise UsageError(f"'{key}' is not a metric key: expected <suite>/<metric>, e.g. fidelity/psnr")
    suite = SUITES.get(suite_name) if suite_name in SUITES.names() else None
    if suite is None:
        raise unknown_name_error("suite", suite_name, SUITES.names())
    metrics = {m.name: m for m in suite.metrics}
    if metric_name not in metrics:
        raise unknown_name_error(f"metric of suite {suite_name}", metric_name, metrics)
    return metrics[metric_name]
