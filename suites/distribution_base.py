"""What the distribution suites share (fid, cmmd): the distance between the set of the compressed model's images and
the set of the uncompressed model's images for the same prompts and seeds (generated before any compressor runs,
from the image cache when it has them), the question these metrics answer best for compression.

Each image's record holds its features and its reference image's (float32, base64), so `aggregate` recomputes the
distance from whichever records it is given: the reported figure from all of them, the paired bootstrap of
`harness check` and the leaderboard from prompts resampled with their references. The prompts are a prompt file's
(`prompts=`, default the 16 bundled ones; the fidelity suite's, so one run's images serve both); the sample count is
recorded with each figure and a note says when it is too few for the figure to compare with published ones.

With `real_images=FOLDER` (MJHQ-30K, COCO, any folder of image files, searched recursively, as the user has it) the
reference set is those images instead, centre-cropped and resized to the generated size; no original images are
generated. Their features are computed once per folder content, extractor and size and kept in the run's cache
folder; records then hold only the generated images' features, and the bootstrap resamples those.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.errors import UsageError
from harness.generation import IMAGE_SUFFIXES, ImageRequest, Sample, check_samples_per_prompt, load_image_file
from harness.metrics import MetricValue
from suites.base import ImageSuite, Scores, prompt_file_requests


def encode_features(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")


def decode_features(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4").astype(np.float64)


class DistributionSuite(ImageSuite):
    """Subclasses set `name`, `metrics`, `few_samples` (below which a note warns) and give `load_extractor`,
    `features` and `distances`."""

    few_samples: ClassVar[int]
    few_samples_reason: ClassVar[str]

    @dataclass(frozen=True)
    class Params:
        prompts: Path | None = None  # prompt file, one a line; default: the 16 bundled prompts
        samples_per_prompt: int = 1
        batch_size: int = 32
        real_images: Path | None = None  # a folder of real images as the reference set; default: the original's

        def __post_init__(self) -> None:
            check_samples_per_prompt(self.samples_per_prompt)

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        self._extractor: Any = None
        self._real: dict[tuple[int, int], np.ndarray] = {}

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        """The uncompressed model's images are the reference set unless a folder of real images is."""
        return self.params.real_images is None

    def real_image_files(self) -> list[Path]:
        """The image files under `real_images`, sorted; a UsageError when the folder is missing or holds none."""
        folder = Path(self.params.real_images).expanduser()
        if not folder.is_dir():
            raise UsageError(f"{self.name}.real_images '{self.params.real_images}' is not a folder")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if len(files) < 2:
            raise UsageError(f"{self.name}.real_images '{folder}' holds {len(files)} image files "
                             f"({', '.join(IMAGE_SUFFIXES)}); a distance needs at least 2")
        return files

    def real_features(self, size: tuple[int, int]) -> np.ndarray:
        """Features of the real images at the generated size: from memory, the cache folder, or computed (and
        cached) once, keyed by every file's path, size and modification time, the extractor and the size."""
        if size in self._real:
            return self._real[size]
        files = self.real_image_files()
        key = hashlib.sha256(repr((self.name, self.describe(), size, [
            (str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])).encode()).hexdigest()[:24]
        path = Path(self.context.cache_dir) / "real-features" / f"{self.name}-{key}.npy"
        if path.is_file():
            features = np.load(path)
        else:
            from tqdm.auto import tqdm

            self.prepare()
            chunks = []
            step = max(1, self.params.batch_size)
            for start in tqdm(range(0, len(files), step), desc=f"{self.name}: real images", unit="batch",
                              disable=not self.context.progress):
                chunks.append(self.features(self._extractor, [load_image_file(f, size)
                                                              for f in files[start:start + step]]))
            features = np.concatenate(chunks)
            from harness.results import write_atomic

            buffer = io.BytesIO()
            np.save(buffer, features)
            write_atomic(path, buffer.getvalue())
        self._real[size] = features
        return features

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return prompt_file_requests(self.params.prompts, limit, self.params.samples_per_prompt)

    def prepare(self) -> None:
        if self.params.real_images is not None:
            self.real_image_files()  # a wrong folder ends the run before any image is generated
        if self._extractor is None:
            self._extractor = self.load_extractor()

    def load_extractor(self) -> Any:
        """The feature network, or a UsageError naming what to download and the setting for a local copy."""
        raise NotImplementedError

    def features(self, extractor: Any, images: list[np.ndarray]) -> np.ndarray:
        """n x d float features of RGB uint8 images."""
        raise NotImplementedError

    def distances(self, generated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        """The suite's figures between the two feature sets (generated, reference; paired rows against the original,
        any size against real images)."""
        raise NotImplementedError

    def describe(self) -> str:
        """What scored the images, for the run's notes."""
        raise NotImplementedError

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        self.prepare()
        generated = self.features(self._extractor, [s.image for s in samples])
        size = [int(v) for v in samples[0].image.shape[:2]]
        if self.params.real_images is not None:
            count = len(self.real_features((size[0], size[1])))
            records = [{"features": encode_features(g), "size": size} for g in generated]
            against = f"{count} real images from {self.params.real_images}"
        else:
            assert references is not None and len(references) == len(samples)
            reference = self.features(self._extractor, [s.image for s in references])
            records = [{"features": encode_features(g), "reference_features": encode_features(r)}
                       for g, r in zip(generated, reference, strict=True)]
            count, against = len(references), f"the uncompressed model's {len(references)}"
        notes = [f"{self.name}: {self.describe()}; {len(samples)} images against {against}"]
        if min(len(samples), count) < self.few_samples:
            notes.append(f"{self.name}: {min(len(samples), count)} images are too few for figures comparable with "
                         f"published ones ({self.few_samples_reason}); compare runs of one protocol only")
        return Scores(records, notes)

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, MetricValue]:
        if len(records) < 2:
            return {}
        generated = np.stack([decode_features(r["features"]) for r in records])
        if "reference_features" in records[0]:
            reference = np.stack([decode_features(r["reference_features"]) for r in records])
        else:  # against real images: the same fixed set for every resample
            height, width = records[0]["size"]
            reference = self.real_features((height, width))
        return {name: MetricValue(value, len(records)) for name, value in self.distances(generated,
                                                                                         reference).items()}
