"""What the distribution suites share (fid, cmmd): the distance between the set of the compressed model's images and
the set of the uncompressed model's images for the same prompts and seeds (generated before any compressor runs,
from the image cache when it has them), the question these metrics answer best for compression.

Each image's record holds its features and its reference image's (float32, base64), so `aggregate` recomputes the
distance from whichever records it is given: the reported figure from all of them, the paired bootstrap of
`harness check` and the leaderboard from prompts resampled with their references. The prompts are a prompt file's
(`prompts=`, default the 16 bundled ones; the fidelity suite's, so one run's images serve both); the sample count is
recorded with each figure and a note says when it is too few for the figure to compare with published ones.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.generation import ImageRequest, Sample, check_samples_per_prompt
from harness.metrics import MetricValue
from suites.base import ImageSuite, Scores, prompt_file_requests


def encode_features(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")


def decode_features(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4").astype(np.float64)


class DistributionSuite(ImageSuite):
    """Subclasses set `name`, `metrics`, `few_samples` (below which a note warns) and give `load_extractor`,
    `features` and `distances`."""

    needs_reference = True
    few_samples: ClassVar[int]
    few_samples_reason: ClassVar[str]

    @dataclass(frozen=True)
    class Params:
        prompts: Path | None = None  # prompt file, one a line; default: the 16 bundled prompts
        samples_per_prompt: int = 1
        batch_size: int = 32

        def __post_init__(self) -> None:
            check_samples_per_prompt(self.samples_per_prompt)

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        self._extractor: Any = None

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return prompt_file_requests(self.params.prompts, limit, self.params.samples_per_prompt)

    def prepare(self) -> None:
        if self._extractor is None:
            self._extractor = self.load_extractor()

    def load_extractor(self) -> Any:
        """The feature network, or a UsageError naming what to download and the setting for a local copy."""
        raise NotImplementedError

    def features(self, extractor: Any, images: list[np.ndarray]) -> np.ndarray:
        """n x d float features of RGB uint8 images."""
        raise NotImplementedError

    def distances(self, generated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        """The suite's figures between the two feature sets (rows paired)."""
        raise NotImplementedError

    def describe(self) -> str:
        """What scored the images, for the run's notes."""
        raise NotImplementedError

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        assert references is not None and len(references) == len(samples)
        self.prepare()
        generated = self.features(self._extractor, [s.image for s in samples])
        reference = self.features(self._extractor, [s.image for s in references])
        records = [{"features": encode_features(g), "reference_features": encode_features(r)}
                   for g, r in zip(generated, reference, strict=True)]
        notes = [f"{self.name}: {self.describe()}; {len(samples)} images against the uncompressed model's "
                 f"{len(references)}"]
        if len(samples) < self.few_samples:
            notes.append(f"{self.name}: {len(samples)} images are too few for figures comparable with published "
                         f"ones ({self.few_samples_reason}); compare runs of one protocol only")
        return Scores(records, notes)

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, MetricValue]:
        if len(records) < 2:
            return {}
        generated = np.stack([decode_features(r["features"]) for r in records])
        reference = np.stack([decode_features(r["reference_features"]) for r in records])
        return {name: MetricValue(value, len(records)) for name, value in self.distances(generated,
                                                                                         reference).items()}
