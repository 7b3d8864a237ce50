"""Deterministic, cached, resumable, shardable image generation.

Pixels depend on the model, the compressor chain, the sampling settings, the seed AND on which images share a batch
(batched kernels round differently). So the batch plan is a pure function of the full request list and the batch
size, and every image's cache key names its batch's members and its position in it: a resumed remainder, a shard or
a subset can never reuse an image made under different conditions, and reproduces the same bits when it runs the
same batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.errors import UsageError

MAX_SAMPLES_PER_PROMPT = 1000  # images of one prompt; more is a typo, not a protocol


def check_samples_per_prompt(count: int) -> None:
    """A suite's `samples_per_prompt`, checked once for every suite that has one."""
    if not 1 <= count <= MAX_SAMPLES_PER_PROMPT:
        raise ValueError(f"samples_per_prompt must be at least 1 and at most {MAX_SAMPLES_PER_PROMPT}, got {count}")


SeedMode = Literal["per-image", "per-prompt"]
SEED_MODES: tuple[str, ...] = ("per-image", "per-prompt")


@dataclass(frozen=True)
class ImageRequest:
    """One image to generate: a prompt of a suite, and which of its samples."""

    prompt: str
    prompt_index: int
    sample_index: int


@dataclass
class Sample:
    """A generated image with where it came from."""

    request: ImageRequest
    seed: int
    image: np.ndarray  # H x W x 3 uint8, exactly as cached
    path: Path
    # what the transformer computed for the image's batch (harness.models.denoising.TransformerCalls.as_dict), as
    # recorded beside its pixels; None for an image cached before the harness recorded it
    transformer_calls: dict[str, Any] | None = None


def image_seed(base_seed: int, prompt_index: int, sample_index: int) -> int:
    """The per-image seed of the default mode: independent of batching, order, subset and shard."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class GenerationSetup:
    """Everything besides the requests that decides the pixels. Its digest is part of every cache key.

    seed_mode "per-image": each image has its own generator seeded by image_seed(base_seed, prompt, sample), on the
    CPU so noise does not depend on the device. "per-prompt": the official protocols' seeding (GenEval's reference
    script, the HierarchicalPrune release): one generator per prompt, seeded with base_seed, on the run's device,
    drawing the prompt's samples batch after batch.
    """

    model_fingerprint: str
    dtype: str
    device: str  # "cpu" or the accelerator's name: kernels differ between devices
    chain: tuple[tuple[str, str], ...]  # (compressor name, canonical JSON of its resolved parameters)
    sampling: str  # canonical JSON of the SamplingSettings
    seed_mode: SeedMode
    base_seed: int

    @classmethod
    def for_model(cls, model: Any, sampling: Any, seed_mode: SeedMode = "per-image", base_seed: int = 0,
                  chain: tuple[tuple[str, str], ...] = ()) -> GenerationSetup:
        """The setup of a loaded model (harness.models.loading.LoadedModel) sampled with `sampling`."""
        from harness.environment import device_name
        from harness.models.spec import dtype_name

        return cls(
            model_fingerprint=model.fingerprint,
            dtype=dtype_name(model.dtype),
            device=device_name(model.device),
            chain=chain,
            sampling=json.dumps(sampling.as_dict(), sort_keys=True),
            seed_mode=seed_mode,
            base_seed=base_seed,
        )

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def seed_of(self, request: ImageRequest) -> int:
        if self.seed_mode == "per-image":
            return image_seed(self.base_seed, request.prompt_index, request.sample_index)
        return self.base_seed


@dataclass(frozen=True)
class PlannedBatch:
    index: int
    requests: tuple[ImageRequest, ...]
    keys: tuple[str, ...]  # the cache key of each image, in batch order


def plan_batches(setup: GenerationSetup, requests: Sequence[ImageRequest], batch_size: int) -> list[PlannedBatch]:
    """Fixed batches: consecutive chunks of the request list (per-prompt mode: never mixing prompts)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    groups: list[list[ImageRequest]] = []
    if setup.seed_mode == "per-image":
        groups = [list(requests)]
    else:
        by_prompt: dict[int, list[ImageRequest]] = {}
        for request in requests:
            by_prompt.setdefault(request.prompt_index, []).append(request)
        groups = list(by_prompt.values())
    setup_digest = setup.digest()
    batches = []
    for group in groups:
        for start in range(0, len(group), batch_size):
            members = tuple(group[start : start + batch_size])
            members_json = json.dumps([asdict(r) for r in members], sort_keys=True)
            batch_digest = hashlib.sha256(f"{setup_digest}|{members_json}".encode()).hexdigest()
            keys = tuple(hashlib.sha256(f"{batch_digest}|{i}".encode()).hexdigest() for i in range(len(members)))
            batches.append(PlannedBatch(len(batches), members, keys))
    return batches


class ImageCache:
    """PNG files under `root`, one per cache key, each written atomically (temporary file + rename) with a digest of
    its key, pixels and what the transformer computed for it in text chunks. What is read is checked against it: a
    truncated, garbled or replaced file (also another key's image) is never used."""

    DIGEST_CHUNK = "harness-sha256"
    CALLS_CHUNK = "harness-transformer-calls"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / "images" / key[:2] / f"{key}.png"

    @staticmethod
    def digest(key: str, image: np.ndarray, calls: str | None = None) -> str:
        header = f"{key}:{image.shape}:{image.dtype}" + (f":{calls}" if calls is not None else "")
        return hashlib.sha256(header.encode() + np.ascontiguousarray(image).tobytes()).hexdigest()

    def _load(self, key: str) -> tuple[np.ndarray | None, dict[str, Any] | None, str]:
        """The verified pixels and transformer calls, or None and why they cannot be used."""
        from PIL import Image

        try:
            with Image.open(self.path(key)) as file:
                image = np.array(file.convert("RGB"))
                recorded, calls = file.info.get(self.DIGEST_CHUNK), file.info.get(self.CALLS_CHUNK)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for files it cannot decode
            return None, None, f"cannot be decoded: {exc}"
        if recorded is None:
            return None, None, "carries no harness digest (not written by this cache, or by a version before digests)"
        if recorded != self.digest(key, image, calls):
            return None, None, "its pixels do not match the digest recorded when it was written (replaced or damaged)"
        return image, None if calls is None else json.loads(calls), ""

    def usable(self, key: str) -> bool:
        """Whether a verified image is cached under `key`; a file that fails the check is deleted, with a warning
        naming it, so that it is regenerated."""
        path = self.path(key)
        if not path.is_file():
            return False
        image, _, problem = self._load(key)
        if image is None:
            print(f"harness: cached image {path} {problem}: regenerating it", file=sys.stderr)
            path.unlink(missing_ok=True)
        return image is not None

    def read(self, key: str) -> tuple[np.ndarray, dict[str, Any] | None]:
        """The verified pixels and the transformer calls recorded with them (None if none were)."""
        image, calls, problem = self._load(key)
        if image is None:
            raise UsageError(f"cached image {self.path(key)} {problem}; run the command again to regenerate it")
        return image, calls

    def write(self, key: str, image: np.ndarray, calls: dict[str, Any] | None = None) -> None:
        from PIL import Image, PngImagePlugin

        from harness.results import write_atomic

        info = PngImagePlugin.PngInfo()
        calls_text = None if calls is None else json.dumps(calls, sort_keys=True)
        if calls_text is not None:
            info.add_text(self.CALLS_CHUNK, calls_text)
        info.add_text(self.DIGEST_CHUNK, self.digest(key, image, calls_text))
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", pnginfo=info)
        write_atomic(self.path(key), buffer.getvalue())

    def remove_stale_temporaries(self) -> None:
        """Delete the temporaries of writers killed mid-write (this host's dead processes only)."""
        from harness.results import remove_stale_temporaries

        if (self.root / "images").is_dir():
            remove_stale_temporaries(self.root / "images")


@dataclass
class GenerationStats:
    generated: int = 0
    cached: int = 0
    seconds: float = 0.0

    def add(self, other: GenerationStats) -> None:
        self.generated += other.generated
        self.cached += other.cached
        self.seconds += other.seconds


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] to uint8, rounding as diffusers' numpy_to_pil does."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def generate(
    model: Any,
    setup: GenerationSetup,
    requests: Sequence[ImageRequest],
    cache: ImageCache,
    *,
    batch_size: int,
    sampling: Any,
    rank: int = 0,
    world_size: int = 1,
    description: str = "generating",
    progress: bool = True,
) -> GenerationStats:
    """Generate every request this process owns (batch index modulo world_size) that the cache lacks."""
    import torch
    from tqdm.auto import tqdm

    from harness.models.denoising import denoising_scope

    all_batches = plan_batches(setup, requests, batch_size)
    batches = [b for b in all_batches if b.index % world_size == rank]
    stats = GenerationStats()
    cache.remove_stale_temporaries()
    todo: list[tuple[PlannedBatch, set[str]]] = []  # batches with images to make, and which of their keys
    for batch in batches:
        missing = {k for k in batch.keys if not cache.usable(k)}
        stats.cached += len(batch.keys) - len(missing)
        if missing:
            todo.append((batch, missing))
    family, pipeline = model.family, model.pipeline
    # per-prompt mode: one generator per prompt, advanced over the prompt's earlier batches (replayed draws if cached)
    prompt_generators: dict[int, tuple[torch.Generator, int]] = {}

    def prompt_noise(batch: PlannedBatch) -> torch.Tensor:
        prompt_index = batch.requests[0].prompt_index
        generator, next_batch = prompt_generators.get(prompt_index, (None, 0))
        if generator is None:
            generator = torch.Generator(model.device).manual_seed(setup.base_seed)
            next_batch = next(b.index for b in all_batches if b.requests[0].prompt_index == prompt_index)
        for earlier in all_batches[next_batch : batch.index]:  # replay draws of batches not generated here
            family.draw_noise(pipeline, len(earlier.requests), sampling, generator, model.device, model.dtype)
        noise = family.draw_noise(pipeline, len(batch.requests), sampling, generator, model.device, model.dtype)
        prompt_generators[prompt_index] = (generator, batch.index + 1)
        return noise

    started = time.perf_counter()
    total = sum(len(b.keys) for b in batches)
    with tqdm(total=total, initial=stats.cached, unit="img", desc=description, disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for batch, missing in todo:
            if setup.seed_mode == "per-image":
                generators = [torch.Generator("cpu").manual_seed(setup.seed_of(r)) for r in batch.requests]
                noise = family.draw_noise(pipeline, len(batch.requests), sampling, generators, model.device,
                                          model.dtype)
            else:
                noise = prompt_noise(batch)
            with torch.inference_mode(), denoising_scope(pipeline.transformer, count=True) as calls:
                output = pipeline(
                    prompt=[r.prompt for r in batch.requests],
                    latents=noise,
                    output_type="np",
                    **family.call_kwargs(sampling, len(batch.requests)),
                )
            for key, image in zip(batch.keys, to_uint8(np.asarray(output.images)), strict=True):
                if key in missing:  # a batch runs whole (its pixels depend on it), but only new images are written
                    cache.write(key, image, calls.as_dict())
                    stats.generated += 1
                    bar.update(1)
    stats.seconds = time.perf_counter() - started
    return stats


def load_samples(cache: ImageCache, setup: GenerationSetup, requests: Sequence[ImageRequest],
                 batch_size: int) -> list[Any]:
    """The cached images of `requests` as Sample objects, in request order."""
    samples = []
    for batch in plan_batches(setup, requests, batch_size):
        for request, key in zip(batch.requests, batch.keys, strict=True):
            image, calls = cache.read(key)
            samples.append(Sample(request, setup.seed_of(request), image, cache.path(key), calls))
    return samples


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # image files the harness reads (data sets, caption folders)


def load_image_file(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An image file centre-cropped to the aspect ratio of size (height, width) and resized to it (bicubic), RGB
    uint8."""
    from PIL import Image

    height, width = size
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = max(width / image.width, height / image.height)
        resized = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                               Image.Resampling.BICUBIC)
        left, top = (resized.width - width) // 2, (resized.height - height) // 2
        return np.asarray(resized.crop((left, top, left + width, top + height)))
