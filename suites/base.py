"""The suite plugin interfaces, one per declared `kind`.

- `ImageSuite` ("images"): `requests` says what to generate, `score` turns the images into one record per sample,
  and `aggregate` computes every reported figure from records. `evaluate` is the two in a row; the paired bootstrap
  of `harness check` and the leaderboard calls the same `aggregate` on resampled records, so a reported value and
  its interval can never come from two formulas.
- `MeasurementSuite` ("measurement"): `measure` times or weighs the compressed pipeline itself; no images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.generation import ImageRequest, Sample
from harness.metrics import Metric, MetricValue, summarize
from harness.plugin import Plugin


@dataclass
class Scores:
    """What `score` makes of the images."""

    records: list[dict[str, Any]]  # per sample, aligned with the samples scored: scores, reason
    notes: list[str] = field(default_factory=list)  # e.g. a figure that could not be computed, and why
    # files for people to look at (e.g. an image grid), by file name; written into the run folder as "<suite>-<name>"
    artifacts: dict[str, bytes] = field(default_factory=dict)


@dataclass
class SuiteResult(Scores):
    """A suite's figures (metric name without the suite prefix -> value) beside its records, notes and artifacts."""

    metrics: dict[str, MetricValue] = field(default_factory=dict)


class Suite(Plugin):
    """What every suite declares: its `metrics` and its `kind`, which tells the runner which protocol it follows."""

    metrics: ClassVar[tuple[Metric, ...]] = ()
    kind: ClassVar[str]
    needs_reference: ClassVar[bool] = False

    def planned_images(self, limit: int | None) -> int:
        """How many images the suite asks the run to generate (for dry runs): none, unless it scores images."""
        return 0

    def prepare(self) -> None:
        """Load or check what the suite needs (models, files) before any image is generated, so that a missing
        weight ends the run at once with a UsageError naming what to download. Called on the main process."""


class ImageSuite(Suite):
    """Base class of suites that score generated images. Subclasses set `name`, `metrics`, a `Params` dataclass,
    `requests` and `score`, and override `aggregate` when their figures are not per-image means.

    A suite with `needs_reference = True` also receives the uncompressed model's images for the same requests
    (same prompts, seeds and batches), generated before any compressor runs.
    """

    kind = "images"

    def requests(self, limit: int | None) -> list[ImageRequest]:
        """The images to generate; `limit` caps the number of prompts."""
        raise NotImplementedError

    def planned_images(self, limit: int | None) -> int:
        """How many images `requests(limit)` asks for; suites whose prompt lists must be fetched answer without
        fetching them (for dry runs on machines without the data)."""
        return len(self.requests(limit))

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        """One record per sample (the fields `aggregate` reads), notes and artifacts."""
        raise NotImplementedError

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, MetricValue]:
        """Every reported figure from per-image records: rows of samples.jsonl, i.e. `prompt_index` and
        `sample_index` plus the fields `score` wrote. Default: the mean of each declared metric's field, with the
        standard error of the mean."""
        values: dict[str, MetricValue] = {}
        for metric in self.metrics:
            column = [float(r[metric.name]) for r in records if isinstance(r.get(metric.name), (int, float))]
            if column:
                values[metric.name] = summarize(column)
        return values

    def evaluate(self, samples: list[Sample], references: list[Sample] | None) -> SuiteResult:
        """`score`, then `aggregate` over its records as samples.jsonl holds them."""
        scores = self.score(samples, references)
        rows = [{"prompt_index": s.request.prompt_index, "sample_index": s.request.sample_index, **record}
                for s, record in zip(samples, scores.records, strict=True)]
        metrics = self.aggregate(rows) if rows else {}
        return SuiteResult(scores.records, scores.notes, scores.artifacts, metrics)


class MeasurementSuite(Suite):
    """A suite that measures the compressed pipeline itself (time, memory) instead of scoring generated images.

    The runner calls `measure` once on the main process, after the chain is applied and the other suites' images
    exist. Its records are rows of the measurement (repeats, device profiles), not images. A figure that cannot be
    measured here (GPU-only on a CPU) is left out of `metrics`, and a note says why.
    """

    kind = "measurement"

    def measure(self, model: Any, sampling: Any) -> SuiteResult:
        raise NotImplementedError


BUNDLED_PROMPTS = Path(__file__).parent / "data" / "fidelity_prompts.txt"  # 16 prompts of varied subjects and styles


def prompt_file_requests(prompts: Path | None, limit: int | None, samples_per_prompt: int) -> list[ImageRequest]:
    """The requests of a suite driven by a prompt file (one prompt a line; default: the 16 bundled prompts): the
    first `limit` prompts, `samples_per_prompt` images each. Suites that read the same file ask for the same
    images, so the image cache serves them all."""
    from harness.prompts import read_prompt_file

    return [ImageRequest(prompt, index, sample)
            for index, prompt in enumerate(read_prompt_file(prompts or BUNDLED_PROMPTS)[:limit])
            for sample in range(samples_per_prompt)]
