"""What differs between the SD3 and FLUX pipelines, in one place: pipeline class, noise and call arguments."""

from __future__ import annotations

from typing import Any

import torch

from harness.models.spec import Family, SamplingSettings

PIPELINE_CLASS_NAMES: dict[Family, str] = {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}


def family_of(pipeline_class_name: str) -> Family | None:
    for family, class_name in PIPELINE_CLASS_NAMES.items():
        if class_name == pipeline_class_name:
            return family
    return None


def pipeline_class(family: Family) -> type:
    import diffusers

    return getattr(diffusers, PIPELINE_CLASS_NAMES[family])


def draw_noise(
    pipeline: Any,
    family: Family,
    batch_size: int,
    settings: SamplingSettings,
    generator: torch.Generator | list[torch.Generator],
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The initial latents exactly as the pipeline itself would draw them from `generator`.

    Drawing them here (and passing `latents=`) lets the harness control and replay the generator's state.
    """
    in_channels = pipeline.transformer.config.in_channels
    channels = in_channels if family == "sd3" else in_channels // 4  # FLUX packs 2x2 patches into channels
    latents = pipeline.prepare_latents(
        batch_size, channels, settings.height, settings.width, dtype, device, generator
    )
    return latents[0] if family == "flux" else latents


def call_kwargs(family: Family, settings: SamplingSettings, batch_size: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "num_inference_steps": settings.num_inference_steps,
        "guidance_scale": settings.guidance_scale,
        "height": settings.height,
        "width": settings.width,
    }
    if settings.max_sequence_length is not None:
        kwargs["max_sequence_length"] = settings.max_sequence_length
    if family == "sd3" and settings.negative_prompt is not None:
        kwargs["negative_prompt"] = [settings.negative_prompt] * batch_size
    return kwargs
