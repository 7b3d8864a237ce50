"""`clipscore`: CLIPScore, the text-image agreement the caching and quantisation papers report (Hessel et al., 2021,
in torchmetrics' form: 100 x the cosine of CLIP's image and text embeddings, the mean clamped at 0).

The model is a transformers CLIP, ViT-L/14 (`openai/clip-vit-large-patch14`) by default, from a local folder or the
Hub cache, named in the run's notes: scores of different CLIPs are not comparable. Images are prepared by the
model's own processor exactly as torchmetrics' `clip_score` prepares them (tested equal to it). Prompts: a prompt
file (`prompts=`, e.g. DrawBench's 200 exported one a line), by default the 16 bundled prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.generation import ImageRequest, Sample, check_samples_per_prompt
from harness.metrics import Metric, MetricValue, summarize
from suites.base import ImageSuite, Scores, prompt_file_requests
from suites.clip_models import image_embeddings, load_clip, text_embeddings

DEFAULT_MODEL = "openai/clip-vit-large-patch14"


class ClipScoreSuite(ImageSuite):
    name = "clipscore"
    metrics = (Metric("clipscore", "score x100", True, "100 x cosine of CLIP's image and prompt embeddings, mean "
                      "over images, clamped at 0 (torchmetrics' CLIPScore)"),)

    @dataclass(frozen=True)
    class Params:
        model: str = DEFAULT_MODEL  # a transformers CLIP: repo id or local folder
        prompts: Path | None = None  # prompt file, one a line; default: the 16 bundled prompts
        samples_per_prompt: int = 1
        batch_size: int = 32

        def __post_init__(self) -> None:
            check_samples_per_prompt(self.samples_per_prompt)

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        self._clip: tuple[Any, Any] | None = None

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return prompt_file_requests(self.params.prompts, limit, self.params.samples_per_prompt)

    def prepare(self) -> None:
        if self._clip is None:
            self._clip = load_clip(self.name, self.params.model, "model")

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        self.prepare()
        assert self._clip is not None
        model, processor = self._clip
        images = image_embeddings(model, processor, [s.image for s in samples], self.params.batch_size)
        texts = text_embeddings(model, processor, [s.request.prompt for s in samples])
        scores = 100.0 * (images * texts).sum(-1)
        return Scores([{"clipscore": float(v)} for v in scores], [f"clipscore: CLIP {self.params.model}"])

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, MetricValue]:
        summary = summarize([r["clipscore"] for r in records])
        summary.value = max(summary.value, 0.0)  # torchmetrics clamps the mean, not each image's score
        return {"clipscore": summary}

