"""CLIP models through transformers for the suites that score with one (clipscore, pickscore, cmmd): loaded once
from a local folder or a Hub repo (the local cache when offline), and a clear UsageError before any image is
generated when neither has it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.generation import ImageRequest, Sample, check_samples_per_prompt
from suites.base import ImageSuite, Scores, prompt_file_requests


class ClipPromptSuite(ImageSuite):
    """What clipscore and pickscore share: a prompt file's requests, one CLIP loaded before generation, and each
    image's cosine with its prompt; a subclass names its CLIP (`clip_sources`) and turns cosines into its score
    (`from_cosines`)."""

    @dataclass(frozen=True)
    class Params:
        model: str = ""  # a transformers CLIP: repo id or local folder (each suite sets its default)
        prompts: Path | None = None  # prompt file, one a line; default: the 16 bundled prompts
        samples_per_prompt: int = 1
        batch_size: int = 32

        def __post_init__(self) -> None:
            check_samples_per_prompt(self.samples_per_prompt)

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        self._clip: tuple[Any, Any] | None = None

    def clip_sources(self) -> tuple[str | None, str | None]:
        """The processor's repo id or folder and its parameter name, when it is not the model's."""
        return None, None

    def from_cosines(self, model: Any, cosines: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return prompt_file_requests(self.params.prompts, limit, self.params.samples_per_prompt)

    def prepare(self) -> None:
        if self._clip is None:
            self._clip = load_clip(self.name, self.params.model, "model", *self.clip_sources())

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        self.prepare()
        assert self._clip is not None
        model, processor = self._clip
        images = image_embeddings(model, processor, [s.image for s in samples], self.params.batch_size)
        texts = text_embeddings(model, processor, [s.request.prompt for s in samples])
        scores = self.from_cosines(model, (images * texts).sum(-1))
        return Scores([{self.name: float(v)} for v in scores], [f"{self.name}: {self.describe()}"])


def load_clip(suite: str, model: str, setting: str, processor: str | None = None,
              processor_setting: str | None = None) -> tuple[Any, Any]:
    """`CLIPModel` and `CLIPProcessor` from `model` (a folder or a repo id; `setting` is the suite parameter that
    names it), the processor from `processor` when the model repo has none (PickScore's), in eval mode on the GPU
    when there is one."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    def load(loader: Any, name: str, what: str, setting: str) -> Any:
        local = Path(name).expanduser()
        try:
            return loader.from_pretrained(str(local) if local.is_dir() else name)
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if local.is_dir() or name.startswith((".", "/", "~")):
                raise UsageError(f"{suite}: the {what} folder '{name}' cannot be loaded ({first}); pass a folder "
                                 f"written by save_pretrained with --set {suite}.{setting}=<folder>") from None
            raise UsageError(f"{suite}: the {what} '{name}' is not in the local Hugging Face cache and cannot be "
                             f"downloaded ({first}). Download it where the Hub is reachable (`hf download {name}`) "
                             f"and copy the cache here, or pass a local copy with --set {suite}.{setting}=<folder>"
                             ) from None

    clip = load(CLIPModel, model, "CLIP model", setting)
    clip_processor = load(CLIPProcessor, processor or model, "CLIP processor", processor_setting or setting)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return clip.to(device).eval(), clip_processor


def image_embeddings(model: Any, processor: Any, images: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """L2-normalised image embeddings (n x d, float64) of RGB uint8 images, prepared by the model's processor."""
    import torch

    out = []
    for start in range(0, len(images), batch_size):
        batch = [np.ascontiguousarray(np.asarray(i)[..., :3]) for i in images[start:start + batch_size]]
        pixels = processor(images=batch, return_tensors="pt")["pixel_values"].to(model.device)
        with torch.inference_mode():
            features = _as_tensor(model.get_image_features(pixel_values=pixels)).double()
        out.append(torch.nn.functional.normalize(features, dim=-1).cpu().numpy())
    return np.concatenate(out)


def text_embeddings(model: Any, processor: Any, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised text embeddings (n x d, float64); texts longer than the model's context are cut to it."""
    import torch

    out = []
    for start in range(0, len(texts), batch_size):
        tokens = processor(text=texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                           max_length=model.config.text_config.max_position_embeddings).to(model.device)
        with torch.inference_mode():
            features = _as_tensor(model.get_text_features(input_ids=tokens["input_ids"],
                                                          attention_mask=tokens["attention_mask"])).double()
        out.append(torch.nn.functional.normalize(features, dim=-1).cpu().numpy())
    return np.concatenate(out)


def _as_tensor(output: Any) -> Any:
    """transformers 5 returns a model output whose pooled embedding is the projection; 4.x a tensor."""
    return output if hasattr(output, "double") else output.pooler_output
