"""`imagereward`: ImageReward (Xu et al., 2023), the human-preference reward the caching and quantisation papers
report on DrawBench.

Scored by the `image-reward` package's own model code and preprocessing (`ImageReward.score`, BLIP ViT-L + a
reward head) in a subprocess (`suites/imagereward_worker.py`) that runs beside the package's overlay of
transformers 4, which `python tools/install_imagereward.py` installs: the package does not import beside
transformers 5. Weights: `ImageReward.pt` and `med_config.json` of the Hub repo `THUDM/ImageReward` (local cache) or
local files (`checkpoint=`, `med_config=`); the package's BLIP tokenizer is `bert-base-uncased` from the Hugging Face
cache. The checkpoint is read with weights_only=True, and a checkpoint lacking weights of the model is refused (the
package's own loader would skip them silently). Prompts: a prompt file (`prompts=`), by default the bundled
DrawBench-style prompts (the benchmark's eleven categories, one prompt a line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.generation import ImageRequest, Sample, check_samples_per_prompt
from harness.metrics import Metric
from suites.base import ImageSuite, Scores, prompt_file_requests

REPO = "THUDM/ImageReward"
CHECKPOINT, MED_CONFIG = "ImageReward.pt", "med_config.json"
TOKENIZER_REPO = "bert-base-uncased"  # what the package's BLIP loads by name
DEFAULT_PROMPTS = Path(__file__).parent / "data" / "drawbench_style_prompts.txt"
WORKER = Path(__file__).parent / "imagereward_worker.py"
INSTALL = "python tools/install_imagereward.py"


def default_environment() -> Path:
    """Where tools/install_imagereward.py puts the package's overlay by default."""
    return Path(sys.prefix) / "imagereward-env"


class ImageRewardSuite(ImageSuite):
    name = "imagereward"
    metrics = (Metric("imagereward", "reward", True, "ImageReward v1.0 of each image and its prompt (the package's "
                      "standardised reward, about -2 to 2), mean over images"),)

    @dataclass(frozen=True)
    class Params:
        checkpoint: Path | None = None  # ImageReward.pt; default: the THUDM/ImageReward repo's, from the Hub cache
        med_config: Path | None = None  # the BLIP text model's config; default: the same repo's med_config.json
        environment: Path | None = None  # the package's overlay; default: tools/install_imagereward.py's folder
        prompts: Path | None = None  # prompt file, one a line; default: the bundled DrawBench-style prompts
        samples_per_prompt: int = 1

        def __post_init__(self) -> None:
            check_samples_per_prompt(self.samples_per_prompt)

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        self._files: tuple[Path, Path] | None = None

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return prompt_file_requests(self.params.prompts or DEFAULT_PROMPTS, limit, self.params.samples_per_prompt)

    def environment(self) -> Path:
        return Path(self.params.environment).expanduser() if self.params.environment else default_environment()

    def prepare(self) -> None:
        if self._files is not None:
            return
        environment = self.environment()
        if not (environment / "ImageReward").is_dir():
            raise UsageError(f"imagereward: the image-reward package's environment is not at {environment}: run "
                             f"`{INSTALL}` (or pass its folder with --set imagereward.environment=<folder>)")
        checkpoint = self._local(self.params.checkpoint, CHECKPOINT, "checkpoint")
        med_config = self._local(self.params.med_config, MED_CONFIG, "med_config")
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(TOKENIZER_REPO, "vocab.txt"), str):
            raise UsageError(f"imagereward: the package's BLIP tokenizer '{TOKENIZER_REPO}' is not in the local "
                             f"Hugging Face cache: `hf download {TOKENIZER_REPO}` where the Hub is reachable, then "
                             "copy the cache here")
        self._files = (checkpoint, med_config)
        self._run_worker([])  # the environment imports and the checkpoint fits the model: before any image exists

    def _local(self, given: Path | None, filename: str, setting: str) -> Path:
        if given is not None:
            path = Path(given).expanduser()
            if not path.is_file():
                raise UsageError(f"imagereward.{setting} '{given}' is not a file")
            return path
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(REPO, filename))
        except Exception as exc:  # the hub client raises many types for "cannot get this file"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"imagereward: {REPO}: {filename} cannot be had ({first}). Download it where the Hub "
                             f"is reachable (`hf download {REPO} {filename}`) and copy the Hugging Face cache here, "
                             f"or pass a local copy with --set imagereward.{setting}=<file>") from None

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        from PIL import Image

        self.prepare()
        assert self._files is not None
        checkpoint = self._files[0]
        with tempfile.TemporaryDirectory(prefix="imagereward-") as folder:
            pairs = []
            for number, sample in enumerate(samples):
                path = Path(folder) / f"{number:06d}.png"  # PNG: the worker reads exactly these pixels
                Image.fromarray(sample.image[..., :3]).save(path)
                pairs.append((sample.request.prompt, str(path)))
            scored = self._run_worker(pairs)
        versions = sorted(d.name.removesuffix(".dist-info") for d in self.environment().glob("*.dist-info")
                          if d.name.startswith(("image_reward-", "transformers-")))
        notes = [f"imagereward: ImageReward ({checkpoint}, the image-reward package's model and preprocessing; "
                 f"{', '.join(versions)})"]
        if scored["unexpected_keys"]:
            notes.append(f"imagereward: {len(scored['unexpected_keys'])} checkpoint entries unused by the model")
        return Scores([{"imagereward": value} for value in scored["scores"]], notes)

    def _run_worker(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        """Scores of (prompt, image file) pairs from the worker; a checkpoint lacking weights of the model is a
        UsageError, a failing worker a RuntimeError with the end of its output."""
        assert self._files is not None
        checkpoint, med_config = self._files
        with tempfile.TemporaryDirectory(prefix="imagereward-job-") as folder:
            job, out = Path(folder) / "job.json", Path(folder) / "scores.json"
            job.write_text(json.dumps({"checkpoint": str(checkpoint), "med_config": str(med_config),
                                       "pairs": pairs}))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(self.environment()), *filter(None, [os.environ.get("PYTHONPATH")])])}
            result = subprocess.run([sys.executable, str(WORKER), str(job), str(out)], capture_output=True,
                                    text=True, env=env)
            if result.returncode != 0:
                tail = "\n".join(result.stderr.strip().splitlines()[-5:])
                raise RuntimeError(f"imagereward: the scoring subprocess failed:\n{tail}")
            scored = json.loads(out.read_text())
        missing = [k for k in scored["missing_keys"] if not k.endswith("position_ids")]
        if missing:
            raise UsageError(f"imagereward: the checkpoint {checkpoint} lacks {len(missing)} weights of the model "
                             f"(e.g. {', '.join(missing[:3])}): it is not an ImageReward checkpoint for this config")
        return scored
