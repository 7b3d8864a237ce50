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


def transformer_inputs(
    transformer: torch.nn.Module,
    batch_size: int,
    height: int,
    width: int,
    text_tokens: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Random keyword arguments for one transformer forward at an image size (pixels), as the pipeline would pass
    them: SD3 takes latents [B, C, H/8, W/8]; FLUX takes 2x2-packed latents plus position ids (and guidance when
    the model embeds it). On the meta device nothing is drawn."""
    from diffusers import FluxTransformer2DModel

    config = transformer.config
    latent_h, latent_w = height // 8, width // 8

    def draw(*shape: int) -> torch.Tensor:
        if torch.device(device).type == "meta":
            return torch.empty(*shape, device=device, dtype=dtype)
        return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device, dtype)

    inputs: dict[str, Any] = {
        "encoder_hidden_states": draw(batch_size, text_tokens, config.joint_attention_dim),
        "pooled_projections": draw(batch_size, config.pooled_projection_dim),
        "return_dict": False,
    }
    if isinstance(transformer, FluxTransformer2DModel):
        image_tokens = (latent_h // 2) * (latent_w // 2)
        inputs["hidden_states"] = draw(batch_size, image_tokens, config.in_channels)
        inputs["timestep"] = torch.full((batch_size,), 0.5, device=device, dtype=dtype)  # FLUX takes t in [0, 1]
        rows, columns = torch.meshgrid(torch.arange(latent_h // 2), torch.arange(latent_w // 2), indexing="ij")
        positions = torch.stack([torch.zeros_like(rows), rows, columns], dim=-1).reshape(image_tokens, 3)
        inputs["img_ids"] = positions.to(device, dtype)  # (0, row, column) as FluxPipeline builds them
        inputs["txt_ids"] = torch.zeros(text_tokens, 3, device=device, dtype=dtype)
        if config.guidance_embeds:
            inputs["guidance"] = torch.full((batch_size,), 3.5, device=device, dtype=dtype)
    else:
        inputs["hidden_states"] = draw(batch_size, config.in_channels, latent_h, latent_w)
        inputs["timestep"] = torch.full((batch_size,), 500.0, device=device, dtype=dtype)
    return inputs


def to_model_range(images: Any, device: torch.device | str) -> torch.Tensor:
    """uint8 images [N, H, W, 3] (numpy) as the VAE's input: float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def encode_images(pipeline: Any, images: Any, sample: bool = True) -> torch.Tensor:
    """uint8 images [N, H, W, 3] as the transformer's clean latents: VAE posterior (a sample, or its mode), shifted
    and scaled by the VAE's config as the pipelines undo it before decoding. FLUX's are then packed by the caller."""
    vae = pipeline.vae
    with torch.no_grad():
        x = to_model_range(images, vae.device).to(vae.dtype)
        posterior = vae.encode(x).latent_dist
        latents = posterior.sample() if sample else posterior.mode()
    shift = vae.config.shift_factor or 0.0
    return (latents - shift) * vae.config.scaling_factor


def encode_prompts(pipeline: Any, family: Family, prompts: list[str], max_sequence_length: int | None,
                   device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(token embeddings, pooled embedding) of the prompts as the pipeline feeds its transformer, without CFG."""
    length = max_sequence_length or (256 if family == "sd3" else 512)
    if family == "sd3":
        embeds, _, pooled, _ = pipeline.encode_prompt(prompt=prompts, prompt_2=prompts, prompt_3=prompts,
                                                      device=device, do_classifier_free_guidance=False,
                                                      max_sequence_length=length)
    else:
        embeds, pooled, _ = pipeline.encode_prompt(prompt=prompts, prompt_2=prompts, device=device,
                                                   max_sequence_length=length)
    return embeds, pooled
