"""`pickscore`: PickScore (Kirstain et al., 2023), a CLIP ViT-H/14 fine-tuned on Pick-a-Pic human preferences.

As its authors score: the processor of `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` prepares image and prompt, the model
`yuvalkirstain/PickScore_v1` embeds both, and an image's score is the model's logit scale (exp) x the cosine of the
normalised embeddings (about 18-23 for real images). Both from local folders or the Hub cache, named in the notes.
Prompts: a prompt file (`prompts=`), by default the 16 bundled prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.metrics import Metric
from suites.clip_models import ClipPromptSuite

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class PickScoreSuite(ClipPromptSuite):
    name = "pickscore"
    metrics = (Metric("pickscore", "score", True, "PickScore: logit scale x cosine of the image and prompt "
                      "embeddings of the PickScore_v1 CLIP, mean over images"),)

    @dataclass(frozen=True)
    class Params(ClipPromptSuite.Params):
        model: str = DEFAULT_MODEL  # repo id or local folder of the PickScore CLIP
        processor: str = DEFAULT_PROCESSOR  # repo id or local folder of its processor
        batch_size: int = 16

    def clip_sources(self) -> tuple[str | None, str | None]:
        return self.params.processor, "processor"

    def from_cosines(self, model: Any, cosines: np.ndarray) -> np.ndarray:
        return float(model.logit_scale.exp()) * cosines

    def describe(self) -> str:
        return f"model {self.params.model}, processor {self.params.processor}"
