"""`hpsv2`: Human Preference Score v2 (Wu et al., 2023) on the HPDv2 benchmark prompts.

The scorer is OpenCLIP ViT-H-14 with the HPS checkpoint (v2.1 by default, v2.0 selectable; their scores are not
comparable, so the version is recorded), loaded once and run in batches, on the GPU when there is one. An image's
score is the cosine of its normalised image embedding and its prompt's text embedding, x100 as the benchmark reports
it (about 25-32). Prompts: 4 styles x 800 (anime, concept-art, paintings, photo), one image each; `--limit N` keeps
the first N prompts of each style. The figures are the per-style means and their average (`overall`).

Weights and prompts come from the Hub (`xswu/HPSv2`, the `zhwang/HPDv2` data set) or from local paths
(`checkpoint`, `prompts`); the checkpoint is read with `torch.load(weights_only=True)`, which refuses anything but
tensors and plain containers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.errors import UsageError
from harness.generation import ImageRequest, Sample
from harness.metrics import Metric, MetricValue, stderr_of_mean_of_means, summarize
from suites.base import ImageSuite, Scores

STYLES = ("anime", "concept-art", "paintings", "photo")
CHECKPOINT_REPO = "xswu/HPSv2"
CHECKPOINTS = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
PROMPTS_REPO = "zhwang/HPDv2"  # data set; benchmark/<style>.json holds each style's 800 prompts
PROMPTS_PER_STYLE = 800


class HPSv2Suite(ImageSuite):
    name = "hpsv2"
    metrics = (
        Metric("overall", "score x100", True, "mean of the four styles' mean HPS"),
        *(Metric(style, "score x100", True, f"mean HPS of the {style} prompts' images") for style in STYLES),
    )

    @dataclass(frozen=True)
    class Params:
        version: Literal["v2.1", "v2.0"] = "v2.1"
        checkpoint: Path | None = None  # a local HPS checkpoint (.pt); default: downloaded from xswu/HPSv2
        prompts: Path | None = None  # a folder with <style>.json prompt lists; default: the HPDv2 data set
        clip_model: str = "ViT-H-14"
        batch_size: int = 16

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        self._prompts: dict[str, list[str]] | None = None
        self._scorer: HPSScorer | None = None

    def prompts(self) -> dict[str, list[str]]:
        """Each style's prompt list, in order."""
        if self._prompts is None:
            self._prompts = {style: _read_prompts(self._prompt_file(style), style) for style in STYLES}
        return self._prompts

    def _prompt_file(self, style: str) -> Path:
        if self.params.prompts is not None:
            path = Path(self.params.prompts) / f"{style}.json"
            if not path.is_file():
                raise UsageError(f"hpsv2.prompts '{self.params.prompts}' has no {style}.json (it needs "
                                 f"{', '.join(s + '.json' for s in STYLES)})")
            return path
        return _hub_file(PROMPTS_REPO, f"benchmark/{style}.json", "dataset", "the HPDv2 benchmark prompts",
                         "hpsv2.prompts=<folder with the four <style>.json files>")

    def requests(self, limit: int | None) -> list[ImageRequest]:
        requests = []
        for position, prompts in enumerate(self.prompts().values()):
            for index, prompt in enumerate(prompts[:limit]):
                requests.append(ImageRequest(prompt, position * PROMPTS_PER_STYLE + index, 0))
        return requests

    def planned_images(self, limit: int | None) -> int:
        if self.params.prompts is not None:
            return super().planned_images(limit)
        return len(STYLES) * min(limit or PROMPTS_PER_STYLE, PROMPTS_PER_STYLE)

    def prepare(self) -> None:
        if self._scorer is None:
            checkpoint = self.params.checkpoint or _hub_file(
                CHECKPOINT_REPO, CHECKPOINTS[self.params.version], "model", f"the HPS {self.params.version} checkpoint",
                "hpsv2.checkpoint=<file>")
            self._scorer = HPSScorer(self.params.clip_model, Path(checkpoint))

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        self.prepare()
        assert self._scorer is not None
        scores: list[float] = []
        for start in range(0, len(samples), self.params.batch_size):
            batch = samples[start:start + self.params.batch_size]
            scores += self._scorer([np.asarray(s.image)[..., :3] for s in batch], [s.request.prompt for s in batch])
        records = [{"style": STYLES[s.request.prompt_index // PROMPTS_PER_STYLE], "hps": value}
                   for s, value in zip(samples, scores, strict=True)]
        source = self.params.checkpoint or f"{CHECKPOINT_REPO}/{CHECKPOINTS[self.params.version]}"
        return Scores(records, [f"HPS {self.params.version} ({source}), {self.params.clip_model}; scores x100"])

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, MetricValue]:
        """Each style's mean HPS and `overall`, the unweighted mean of the styles present."""
        metrics: dict[str, MetricValue] = {}
        for style in STYLES:
            values = [r["hps"] for r in records if r["style"] == style]
            if values:
                metrics[style] = summarize(values)
        if metrics:
            means = [m.value for m in metrics.values()]
            metrics["overall"] = MetricValue(sum(means) / len(means), len(records),
                                             stderr_of_mean_of_means([m.stderr for m in metrics.values()]))
        return metrics


def _read_prompts(path: Path, style: str) -> list[str]:
    try:
        prompts = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"HPDv2 prompts '{path}' cannot be read ({exc})") from None
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise UsageError(f"HPDv2 prompts '{path}' must be a JSON list of {style} prompt strings")
    return prompts


def _hub_file(repo: str, filename: str, repo_type: str, what: str, setting: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, repo_type=repo_type))
    except Exception as exc:  # the hub client raises many types for "cannot get this file"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{what} ({repo}: {filename}) cannot be had ({first}). Download it where the Hub is "
                         f"reachable (`hf download {repo} {filename}"
                         f"{' --repo-type dataset' if repo_type == 'dataset' else ''}`) and copy the Hugging Face "
                         f"cache here, or pass --set {setting}") from None


class HPSScorer:
    """OpenCLIP with an HPS checkpoint: images and prompts -> HPS x100, batched, on the GPU when available.

    Images are prepared as HPSv2's own scoring prepares them (`release_preprocess`), not with open_clip's stock
    transform, so the scores equal the `hpsv2` package's (tested)."""

    def __init__(self, model_name: str, checkpoint: Path) -> None:
        import open_clip
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = open_clip.create_model(model_name, pretrained=None, device=self.device)
        try:
            state = torch.load(checkpoint, map_location=self.device, weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise UsageError(f"HPS checkpoint '{checkpoint}' cannot be read ({exc})") from None
        self.model.load_state_dict(state.get("state_dict", state))
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        visual = self.model.visual
        self.image_size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
        self.mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        self.std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD

    def __call__(self, images: list[np.ndarray], prompts: list[str]) -> list[float]:
        import torch

        pixels = torch.stack([release_preprocess(image, self.image_size, self.mean, self.std) for image in images])
        tokens = self.tokenizer(prompts).to(self.device)
        with torch.inference_mode():
            image_features = self.model.encode_image(pixels.to(self.device), normalize=True).float()
            text_features = self.model.encode_text(tokens, normalize=True).float()
        return [100.0 * float(v) for v in (image_features * text_features).sum(-1).tolist()]


def release_preprocess(image: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """An RGB uint8 image as HPSv2 feeds it to CLIP (its open_clip fork's evaluation transform): scaled to [0, 1],
    resized on the tensor (bicubic) so its longer side is `size`, zero-padded to a centred square, normalised.
    open_clip's stock transform (PIL resize, centre crop) scores the same image differently."""
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode

    pixels = F.to_tensor(np.ascontiguousarray(image))
    height, width = pixels.shape[1:]
    scale = size / max(height, width)
    if scale != 1.0:
        height, width = round(height * scale), round(width * scale)
        pixels = F.resize(pixels, [height, width], InterpolationMode.BICUBIC)
    pad_h, pad_w = size - height, size - width
    pixels = F.pad(pixels, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return F.normalize(pixels, list(mean), list(std))
