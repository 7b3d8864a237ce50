"""`pickscore`: PickScore (Kirstain et al., 2023), a CLIP ViT-H/14 fine-tuned on Pick-a-Pic human preferences.

As its authors score: the processor of `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` prepares image and prompt, the model
`yuvalkirstain/PickScore_v1` embeds both, and an image's score is the model's logit scale (exp) x the cosine of the
normalised embeddings (about 18-23 for real images). Both from local folders or the Hub cache, named in the notes.
Prompts: a prompt file (`prompts=`), by default the 16 bundled prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.generation import ImageRequest, Sample, check_samples_per_prompt
from harness.metrics import Metric
from suites.base import ImageSuite, Scores, prompt_file_requests
from suites.clip_models import image_embeddings, load_clip, text_embeddings

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class PickScoreSuite(ImageSuite):
    name = "pickscore"
    metrics = (Metric("pickscore", "score", True, "PickScore: logit scale x cosine of the image and prompt "
                      "embeddings of the PickScore_v1 CLIP, mean over images"),)

    @dataclass(frozen=True)
    class Params:
        model: str = DEFAULT_MODEL  # repo id or local folder of the PickScore CLIP
        processor: str = DEFAULT_PROCESSOR  # repo id or local folder of its processor
        prompts: Path | None = None  # prompt file, one a line; default: the 16 bundled prompts
        samples_per_prompt: int = 1
        batch_size: int = 16

        def __post_init__(self) -> None:
            check_samples_per_prompt(self.samples_per_prompt)

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        self._clip: tuple[Any, Any] | None = None

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return prompt_file_requests(self.params.prompts, limit, self.params.samples_per_prompt)

    def prepare(self) -> None:
        if self._clip is None:
            self._clip = load_clip(self.name, self.params.model, "model", self.params.processor, "processor")

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        self.prepare()
        assert self._clip is not None
        model, processor = self._clip
        images = image_embeddings(model, processor, [s.image for s in samples], self.params.batch_size)
        texts = text_embeddings(model, processor, [s.request.prompt for s in samples])
        scale = float(model.logit_scale.exp())
        scores = scale * (images * texts).sum(-1)
        return Scores([{"pickscore": float(v)} for v in scores],
                      [f"pickscore: model {self.params.model}, processor {self.params.processor}"])
