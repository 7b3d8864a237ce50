"""`clipscore`: CLIPScore, the text-image agreement the caching and quantisation papers report (Hessel et al., 2021,
in torchmetrics' form: 100 x the cosine of CLIP's image and text embeddings, the mean clamped at 0).

The model is a transformers CLIP, ViT-L/14 (`openai/clip-vit-large-patch14`) by default, from a local folder or the
Hub cache, named in the run's notes: scores of different CLIPs are not comparable. Images are prepared by the
model's own processor exactly as torchmetrics' `clip_score` prepares them (tested equal to it). Prompts: a prompt
file (`prompts=`, e.g. DrawBench's 200 exported one a line), by default the 16 bundled prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.metrics import Metric, MetricValue, summarize
from suites.clip_models import ClipPromptSuite

DEFAULT_MODEL = "openai/clip-vit-large-patch14"


class ClipScoreSuite(ClipPromptSuite):
    name = "clipscore"
    metrics = (Metric("clipscore", "score x100", True, "100 x cosine of CLIP's image and prompt embeddings, mean "
                      "over images, clamped at 0 (torchmetrics' CLIPScore)"),)

    @dataclass(frozen=True)
    class Params(ClipPromptSuite.Params):
        model: str = DEFAULT_MODEL  # a transformers CLIP: repo id or local folder

    def from_cosines(self, model: Any, cosines: np.ndarray) -> np.ndarray:
        return 100.0 * cosines

    def describe(self) -> str:
        return f"CLIP {self.params.model}"

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, MetricValue]:
        summary = summarize([r["clipscore"] for r in records])
        summary.value = max(summary.value, 0.0)  # torchmetrics clamps the mean, not each image's score
        return {"clipscore": summary}
