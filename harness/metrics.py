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
    """A suite's figure: `statistic` ("mean" or "median") over `n` values, its standard error (of that statistic:
    a median's is bootstrapped, never the mean's) and the values' quantiles."""

    value: float
    n: int
    stderr: float | None = None
    distribution: dict[str, float] | None = None
    statistic: str = "mean"

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "n": self.n, "stderr": self.stderr, "distribution": self.distribution,
                "statistic": self.statistic}


QUANTILES = {"min": 0.0, "p05": 0.05, "p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95, "max": 1.0}
MEDIAN_BOOTSTRAP_RESAMPLES = 2000


def stderr_of_mean(values: Sequence[float]) -> float | None:
    """The standard error of the mean (sample standard deviation, ddof 1, over sqrt n); None for fewer than two
    values or any infinite one."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    if array.size < 2 or not np.isfinite(array).all():
        return None
    return float(array.std(ddof=1) / math.sqrt(array.size))


def stderr_of_mean_of_means(stderrs: Sequence[float | None]) -> float | None:
    """The standard error of an unweighted mean of k independent groups' means (GenEval's overall over tags, HPSv2's
    over styles): sqrt(sum of their squared standard errors) / k. Unknown when any group's is (a single value)."""
    if not stderrs or any(e is None for e in stderrs):
        return None
    return math.sqrt(sum(e * e for e in stderrs if e is not None)) / len(stderrs)


def ratio_stderr(numerator: float, numerator_stderr: float | None, denominator: float,
                 denominator_stderr: float | None) -> float | None:
    """The standard error of numerator / denominator for two independent estimates (first-order propagation: the
    ratio times the root sum of their squared relative errors); None when either error is unknown."""
    if numerator_stderr is None or denominator_stderr is None or not numerator or not denominator:
        return None
    return abs(numerator / denominator) * math.hypot(numerator_stderr / numerator, denominator_stderr / denominator)


def _distribution(array: Any) -> dict[str, float]:
    import numpy as np

    # interpolating between infinite values gives nan: take the nearest order statistic then
    method = "linear" if bool(np.isfinite(array).all()) else "nearest"
    values = np.quantile(array, list(QUANTILES.values()), method=method)
    return {name: float(value) for name, value in zip(QUANTILES, values, strict=True)}


def summarize(values: Sequence[float]) -> MetricValue:
    """Mean, standard error of the mean, and quantiles. Infinite values (PSNR of identical images) propagate."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("cannot summarize zero values")
    return MetricValue(float(array.mean()), int(array.size), stderr_of_mean(array), _distribution(array))


def summarize_median(values: Sequence[float], resamples: int = MEDIAN_BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> MetricValue:
    """The median, its bootstrap standard error (the standard deviation of the medians of `resamples` resamples
    with replacement, seeded: the same values give the same figure) and quantiles. Timings are skewed by the odd
    slow call, which moves the mean and its standard error but hardly the median."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("cannot summarize zero values")
    stderr = None
    if array.size > 1 and np.isfinite(array).all():
        draws = np.random.default_rng(seed).integers(0, array.size, size=(resamples, array.size))
        stderr = float(np.median(array[draws], axis=1).std(ddof=1))
    distribution = _distribution(array)
    return MetricValue(distribution["median"], int(array.size), stderr, distribution, "median")


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


# --- distances between two sets of image features (FID, KID, CMMD) ------------------------------------------------
# Features are float64 arrays of shape (n, d), one row per image. The formulas are torchmetrics' (FID, KID) and the
# CMMD paper's; the suites that report them and the paired bootstrap both call these, so a figure and its interval
# never come from two formulas.

CMMD_SIGMA = 10.0  # the Gaussian kernel's bandwidth, as the CMMD paper (Jayasumana et al., 2024) fixes it
CMMD_SCALE = 1000.0  # the paper's reporting scale
KID_SUBSETS = 100  # torchmetrics' and torch-fidelity's defaults
KID_SUBSET_SIZE = 1000


def frechet_distance(a: Any, b: Any) -> float:
    """FID between feature sets: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with unbiased covariances and
    the trace of the square root from the eigenvalues of S_a S_b, as torchmetrics computes it."""
    import torch
    from torchmetrics.image.fid import _compute_fid

    def statistics(x: Any) -> tuple[Any, Any]:
        x = torch.as_tensor(x, dtype=torch.float64)
        return x.mean(0), torch.cov(x.T)

    (mu_a, sigma_a), (mu_b, sigma_b) = statistics(a), statistics(b)
    return float(_compute_fid(mu_a, sigma_a, mu_b, sigma_b))


def kernel_inception_distance(a: Any, b: Any, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                              seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD^2 with the cubic polynomial kernel (torchmetrics' `poly_mmd`), mean and standard
    deviation over `subsets` random subsets of `subset_size` images of each set (seeded). With no more images than
    `subset_size`, one subset of all of them: exact, and its deviation 0."""
    import torch
    from torchmetrics.image.kid import poly_mmd

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    n = min(len(a), len(b))
    if n < 2:
        raise ValueError("KID needs at least 2 images in each set")
    if n <= subset_size:
        return float(poly_mmd(a[:n], b[:n])), 0.0
    generator = torch.Generator().manual_seed(seed)
    values = torch.stack([poly_mmd(a[torch.randperm(len(a), generator=generator)[:subset_size]],
                                   b[torch.randperm(len(b), generator=generator)[:subset_size]])
                          for _ in range(subsets)])
    return float(values.mean()), float(values.std(unbiased=False))


def gaussian_mmd(a: Any, b: Any, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> float:
    """CMMD's distance: scale x the (biased, all pairs) MMD^2 between the sets with the Gaussian kernel
    exp(-|x - y|^2 / (2 sigma^2)), on the embeddings as given (CMMD's are L2-normalised CLIP image embeddings)."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    gamma = 1.0 / (2 * sigma**2)

    def mean_kernel(x: Any, y: Any) -> float:
        squared = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
        return float(np.exp(-gamma * squared).mean())

    return scale * (mean_kernel(a, a) + mean_kernel(b, b) - 2 * mean_kernel(a, b))
