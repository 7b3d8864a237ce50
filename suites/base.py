"""The suite plugin interface: `requests` (what to generate) and `score` (what the images are worth)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.context import Context
from harness.generation import ImageRequest, Sample
from harness.metrics import Metric, MetricValue
from harness.params import params_as_dict


@dataclass
class SuiteResult:
    metrics: dict[str, MetricValue]  # metric name (without the suite prefix) -> value
    records: list[dict[str, Any]]  # per sample, aligned with the samples scored: scores, reason
    notes: list[str] = field(default_factory=list)  # e.g. a metric that could not be computed, and why
    # files for people to look at (e.g. an image grid), by file name; written into the run folder as "<suite>-<name>"
    artifacts: dict[str, bytes] = field(default_factory=dict)


class Suite:
    """Base class of evaluation suites. Subclasses set `name`, `metrics`, a `Params` dataclass, and the two methods.

    A suite with `needs_reference = True` also receives the uncompressed model's images for the same requests
    (same prompts, seeds and batches), generated before any compressor runs.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""  # read by `harness list` for plugins; built-ins describe themselves on registration
    metrics: ClassVar[tuple[Metric, ...]] = ()
    needs_reference: ClassVar[bool] = False
    # "images": the runner generates `requests` and calls `score`; "measurement": it calls `measure` on the pipeline
    kind: ClassVar[str] = "images"

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params: Any = None, context: Context | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.context = context or Context()

    def resolved_params(self) -> dict[str, Any]:
        return params_as_dict(self.params)

    def requests(self, limit: int | None) -> list[ImageRequest]:
        """The images to generate; `limit` caps the number of prompts."""
        raise NotImplementedError

    def planned_images(self, limit: int | None) -> int:
        """How many images `requests(limit)` asks for; suites whose prompt lists must be fetched answer without
        fetching them (for dry runs on machines without the data)."""
        return len(self.requests(limit))

    def prepare(self) -> None:
        """Load or check what scoring needs (models, files) before any image is generated, so that a missing
        weight ends the run at once with a UsageError naming what to download. Called on the main process."""

    def score(self, samples: list[Sample], references: list[Sample] | None) -> SuiteResult:
        raise NotImplementedError

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        """The suite's metric values recomputed from per-image records (rows of samples.jsonl: `prompt_index` plus
        the fields `score` wrote), for bootstrap intervals over prompts. Default: the mean of each declared metric's
        field; a suite whose metrics are not per-image means overrides it."""
        import math

        values: dict[str, float] = {}
        for metric in self.metrics:
            column = [float(r[metric.name]) for r in records if isinstance(r.get(metric.name), (int, float))]
            if column:
                values[metric.name] = math.fsum(column) / len(column)
        return values


class MeasurementSuite(Suite):
    """A suite that measures the compressed pipeline itself (time, memory) instead of scoring generated images.

    The runner calls `measure` once on the main process, after the chain is applied and the other suites' images
    exist. Its records are rows of the measurement (repeats, device profiles), not images. A figure that cannot be
    measured here (GPU-only on a CPU) is left out of `metrics`, and a note says why.
    """

    kind = "measurement"

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return []

    def planned_images(self, limit: int | None) -> int:
        return 0

    def score(self, samples: list[Sample], references: list[Sample] | None) -> SuiteResult:
        raise TypeError(f"{self.name} measures the pipeline: the runner calls measure(), not score()")

    def measure(self, model: Any, sampling: Any) -> SuiteResult:
        raise NotImplementedError
