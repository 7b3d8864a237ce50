"""`geneval`: GenEval (Ghosh et al., 2023) on real text-to-image models: 553 prompts, 4 images each by default.

Metadata: the official `prompts/evaluation_metadata.jsonl` of djghosh13/geneval at a pinned commit, downloaded once
into the cache and checked against its sha256, or a local file (`--set geneval.metadata=PATH`), which must have the
same sha256 unless `metadata_sha256` names its own: never a silently different file.

Export: with `export_dir` (always with the official backend) the images are written in the official layout,
`<dir>/<prompt:05d>/metadata.jsonl` (the prompt's metadata line) and `<dir>/<prompt:05d>/samples/<k:05d>.png`, so
the official evaluator runs on them unchanged.

Backends:
- `official`: the official evaluator (`evaluation/evaluate_images.py` of your GenEval checkout, in your mmdetection
  2.x environment) runs as a subprocess on the exported folder; its JSONL verdicts are read back and summarised.
- `transformers`: transformers' Mask2Former (COCO instance segmentation) detects, open_clip ViT-L-14 (OpenAI
  weights) classifies colours on the masked object pasted on grey (#999) and cropped to its box, with GenEval's
  three templates, and `harness.geneval_rules` applies the official rules. It is not the official number (another
  Mask2Former implementation and checkpoint than mmdetection's): the results say so.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.errors import UsageError
from harness.generation import Sample
from harness.geneval_rules import COLORS, Detection, PromptSpec, evaluate
from suites.geneval_base import GenevalPrompt, GenevalStyleSuite, read_metadata_file

OFFICIAL_REPOSITORY = "djghosh13/geneval"
OFFICIAL_COMMIT = "af4902f"
METADATA_URL = (f"https://raw.githubusercontent.com/{OFFICIAL_REPOSITORY}/{OFFICIAL_COMMIT}/prompts/"
                "evaluation_metadata.jsonl")
OFFICIAL_PROMPTS = 553
METADATA_SHA256 = "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13"
COLOR_TEMPLATES = ("a photo of a {color} {cls}", "a photo of a {color}-colored {cls}", "a photo of a {color} object")
GREY = 153  # #999999, the background GenEval pastes each object's mask on before asking CLIP its colour
NOT_OFFICIAL = ("transformers backend: Mask2Former from transformers and open_clip colours through GenEval's rules; "
                "not the official GenEval number (the official evaluator uses mmdetection's Mask2Former)")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def official_metadata(cache_dir: Path) -> Path:
    """The official metadata file in the cache, downloaded at the pinned commit and checked the first time."""
    from harness.results import write_atomic

    path = Path(cache_dir) / "geneval" / f"evaluation_metadata-{OFFICIAL_COMMIT}.jsonl"
    if path.is_file():
        return path
    try:
        with urllib.request.urlopen(METADATA_URL, timeout=30) as response:
            content = response.read()
    except OSError as exc:
        raise UsageError(f"GenEval's metadata could not be downloaded from {METADATA_URL} ({exc}): download it "
                         "where the network is reachable and pass --set geneval.metadata=<file>") from None
    if hashlib.sha256(content).hexdigest() != METADATA_SHA256:
        raise UsageError(f"{METADATA_URL} did not have the expected sha256 {METADATA_SHA256}: not using it")
    write_atomic(path, content)
    return path


class GenevalSuite(GenevalStyleSuite):
    name = "geneval"

    @dataclass(frozen=True)
    class Params(GenevalStyleSuite.Params):
        samples_per_prompt: int = 4
        metadata_sha256: str = METADATA_SHA256  # a local metadata file must have this hash
        backend: Literal["transformers", "official"] = "transformers"
        export_dir: Path | None = None  # write the official folder layout here (a temporary one for `official`)
        detector: str = "facebook/mask2former-swin-small-coco-instance"  # Hub id or local folder
        clip_model: str = "ViT-L-14"
        clip_pretrained: str = "openai"  # open_clip tag or a local checkpoint file
        official_repo: Path | None = None  # a checkout of djghosh13/geneval
        official_python: str = sys.executable  # the interpreter of the mmdetection 2.x environment
        official_detector: Path | None = None  # folder with the official Mask2Former checkpoint (--model-path)
        batch_size: int = 8

    def planned_images(self, limit: int | None) -> int:
        if self.params.metadata is not None:
            return super().planned_images(limit)
        return min(limit or OFFICIAL_PROMPTS, OFFICIAL_PROMPTS) * self.params.samples_per_prompt

    def load_specs(self) -> list[PromptSpec]:
        path = self.params.metadata or official_metadata(self.context.cache_dir)
        digest = sha256_of(path) if Path(path).is_file() else None
        if digest is not None and digest != self.params.metadata_sha256:
            raise UsageError(f"geneval metadata '{path}' has sha256 {digest}, not the official file's "
                             f"{self.params.metadata_sha256}: if you mean to use it, say so with "
                             f"--set geneval.metadata_sha256={digest}")
        self._raw_lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        return read_metadata_file(Path(path), self.name)

    def export(self, samples: list[Sample], prompts: list[GenevalPrompt], folder: Path) -> Path:
        """The official layout: one folder per prompt with its metadata line and samples/<k:05d>.png."""
        folder = Path(folder)
        for sample in samples:
            index = sample.request.prompt_index
            prompt_folder = folder / f"{index:05d}"
            (prompt_folder / "samples").mkdir(parents=True, exist_ok=True)
            (prompt_folder / "metadata.jsonl").write_text(self._raw_lines[index] + "\n")
            target = prompt_folder / "samples" / f"{sample.request.sample_index:05d}.png"
            if Path(sample.path).is_file():
                shutil.copyfile(sample.path, target)
            else:
                from PIL import Image

                Image.fromarray(np.asarray(sample.image)).save(target)
        return folder

    def prepare(self) -> None:
        """Load (or check) what scoring needs before any image is generated: a missing weight fails the run now."""
        if self.params.backend == "official":
            self._check_official()
            return
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._detector = Mask2FormerDetector(self.params.detector, device)
        self._colours = ClipColours(self.params.clip_model, self.params.clip_pretrained, device)

    def judge(self, samples: list[Sample], prompts: list[GenevalPrompt]) -> tuple[list[dict[str, Any]], list[str]]:
        if self.params.backend == "official":
            return self._official(samples, prompts)
        if self.params.export_dir is not None:
            self.export(samples, prompts, self.params.export_dir)
        return self._transformers(samples, prompts)

    # -- the official evaluator ------------------------------------------------------------------------------------
    def _official(self, samples: list[Sample], prompts: list[GenevalPrompt]) -> tuple[list[dict], list[str]]:
        params = self.params
        script = self._check_official()
        with tempfile.TemporaryDirectory() as scratch:
            folder = self.export(samples, prompts, params.export_dir or Path(scratch) / "images")
            outfile = Path(scratch) / "results.jsonl"
            process = subprocess.run([params.official_python, str(script), str(folder), "--outfile", str(outfile),
                                      "--model-path", str(params.official_detector)], capture_output=True, text=True,
                                     cwd=params.official_repo)
            if process.returncode != 0 or not outfile.is_file():
                tail = "\n".join(process.stderr.splitlines()[-15:])
                raise UsageError(f"the official GenEval evaluator failed (exit {process.returncode}):\n{tail}")
            verdicts = {}
            for line in outfile.read_text().splitlines():
                row = json.loads(line)
                image = Path(row["filename"])
                verdicts[(int(image.parent.parent.name), int(image.stem))] = row
        records = []
        for sample in samples:
            key = (sample.request.prompt_index, sample.request.sample_index)
            if key not in verdicts:
                raise UsageError(f"the official evaluator returned no verdict for prompt {key[0]} sample {key[1]}: "
                                 "its image is missing or unreadable")
            row = verdicts[key]
            records.append({"tag": row["tag"], "correct": bool(row["correct"]), "reason": row.get("reason", ""),
                            "backend": "official"})
        return records, [f"official GenEval evaluator ({script}) on {len(records)} images"]

    def _check_official(self) -> Path:
        params = self.params
        if params.official_repo is None or params.official_detector is None:
            raise UsageError("geneval.backend=official needs --set geneval.official_repo=<your GenEval checkout> and "
                             "--set geneval.official_detector=<folder with its Mask2Former checkpoint> (and "
                             "geneval.official_python=<the mmdetection 2.x environment's python>)")
        script = Path(params.official_repo) / "evaluation" / "evaluate_images.py"
        if not script.is_file():
            raise UsageError(f"'{script}' does not exist: geneval.official_repo must be a GenEval checkout")
        return script

    # -- the transformers backend ----------------------------------------------------------------------------------
    def _transformers(self, samples: list[Sample], prompts: list[GenevalPrompt]) -> tuple[list[dict], list[str]]:
        if getattr(self, "_detector", None) is None:
            self.prepare()
        detector, colours = self._detector, self._colours
        unknown = {c.class_name for p in prompts for c in (*p.spec.include, *p.spec.exclude)} - detector.classes
        if unknown:
            raise UsageError(f"the detector '{self.params.detector}' has no classes {sorted(unknown)}: GenEval needs "
                             "a COCO instance-segmentation model")
        records = []
        for start in range(0, len(samples), self.params.batch_size):
            batch = samples[start:start + self.params.batch_size]
            images = [np.asarray(s.image)[..., :3] for s in batch]
            for sample, image, detections in zip(batch, images, detector(images), strict=True):
                spec = prompts[sample.request.prompt_index].spec
                judgement = evaluate(image, detections, spec, colours.classify)
                records.append({"tag": spec.tag, "correct": judgement.correct, "reason": judgement.reason,
                                "backend": "transformers"})
        return records, [NOT_OFFICIAL]


def _load_error(what: str, name: str, setting: str, exc: Exception) -> UsageError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UsageError(f"{what} '{name}' cannot be loaded ({first}). Download it where the Hub is reachable "
                      f"(`hf download {name}`) and copy the Hugging Face cache here, or pass a local folder with "
                      f"--set geneval.{setting}=<path>")


class Mask2FormerDetector:
    """COCO instance segmentation with transformers' Mask2Former: every query above zero score as a Detection
    (the rules apply GenEval's thresholds), its box from its mask's extent."""

    def __init__(self, name: str, device: str) -> None:
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

        try:
            self.processor = AutoImageProcessor.from_pretrained(name)
            self.model = Mask2FormerForUniversalSegmentation.from_pretrained(name).to(device).eval()
        except (OSError, ValueError) as exc:
            raise _load_error("the detector", name, "detector", exc) from None
        self.device = device
        self.labels = {int(k): v for k, v in self.model.config.id2label.items()}
        self.classes = set(self.labels.values())

    def __call__(self, images: list[np.ndarray]) -> list[list[Detection]]:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        sizes = [image.shape[:2] for image in images]
        results = self.processor.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=sizes,
                                                                    return_binary_maps=True)
        detections = []
        for result in results:
            found = []
            maps = result["segmentation"]
            for position, info in enumerate(result["segments_info"]):
                mask = (maps[position] > 0).cpu().numpy() if maps is not None else None
                if mask is None or not mask.any():
                    continue
                rows, columns = np.nonzero(mask)
                box = (float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1))
                found.append(Detection(self.labels[int(info["label_id"])], float(info["score"]), box, mask))
            detections.append(found)
        return detections


class ClipColours:
    """GenEval's colour classifier: zero-shot CLIP over COLORS with three templates per colour, on each object's
    mask pasted on grey and cropped to its box."""

    def __init__(self, model_name: str, pretrained: str, device: str) -> None:
        import open_clip

        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device)
        except (RuntimeError, OSError, ValueError) as exc:
            raise _load_error("the CLIP model", f"{model_name} ({pretrained})", "clip_pretrained", exc) from None
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = device
        self._text: dict[str, Any] = {}

    def _text_features(self, class_name: str) -> Any:
        import torch

        if class_name not in self._text:
            prompts = [t.format(color=c, cls=class_name) for c in COLORS for t in COLOR_TEMPLATES]
            with torch.inference_mode():
                features = self.model.encode_text(self.tokenizer(prompts).to(self.device)).float()
            features = features / features.norm(dim=-1, keepdim=True)
            per_colour = features.view(len(COLORS), len(COLOR_TEMPLATES), -1).mean(1)
            self._text[class_name] = per_colour / per_colour.norm(dim=-1, keepdim=True)
        return self._text[class_name]

    def classify(self, image: np.ndarray, objects: Any, class_name: str) -> list[str]:
        import torch
        from PIL import Image

        crops = []
        for detection in objects:
            pasted = np.full_like(image, GREY)
            pasted[detection.mask] = image[detection.mask]
            x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
            crops.append(self.preprocess(Image.fromarray(pasted[y0:y1, x0:x1])))
        if not crops:
            return []
        with torch.inference_mode():
            features = self.model.encode_image(torch.stack(crops).to(self.device)).float()
        features = features / features.norm(dim=-1, keepdim=True)
        return [COLORS[i] for i in (features @ self._text_features(class_name).T).argmax(-1).tolist()]

