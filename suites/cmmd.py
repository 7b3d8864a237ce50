"""`cmmd`: CMMD (Jayasumana et al., 2024) of the compressed model's images against the uncompressed model's
(`suites.distribution_base`): the MMD with a Gaussian kernel (sigma 10, x1000) between L2-normalised CLIP image
embeddings (`harness.metrics.gaussian_mmd`). Unlike FID it assumes no normal distribution and is unbiased in the
sample count, so it is usable from a few hundred images.

The CLIP is the paper's ViT-L/14 at 336 px (`openai/clip-vit-large-patch14-336`) through transformers, from a local
folder or the Hub cache (`clip_model=`), its processor preparing the images (bicubic resize, for square images the
paper's direct resize to 336 px).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.metrics import Metric, gaussian_mmd
from suites.clip_models import image_embeddings, load_clip
from suites.distribution_base import DistributionSuite

DEFAULT_CLIP = "openai/clip-vit-large-patch14-336"


class CMMDSuite(DistributionSuite):
    name = "cmmd"
    metrics = (Metric("cmmd", "", False, "CLIP-MMD (Gaussian kernel, sigma 10, x1000) to the uncompressed model's "
                      "images (same prompts and seeds)"),)
    few_samples = 200
    few_samples_reason = "the CMMD paper's estimates settle from a few hundred images"

    @dataclass(frozen=True)
    class Params(DistributionSuite.Params):
        clip_model: str = DEFAULT_CLIP  # a transformers CLIP: repo id or local folder

    def load_extractor(self) -> Any:
        return load_clip(self.name, self.params.clip_model, "clip_model")

    def features(self, extractor: Any, images: list[np.ndarray]) -> np.ndarray:
        model, processor = extractor
        return image_embeddings(model, processor, images, self.params.batch_size)

    def distances(self, generated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        return {"cmmd": gaussian_mmd(generated, reference)}

    def describe(self) -> str:
        return f"CLIP {self.params.clip_model} image embeddings"
