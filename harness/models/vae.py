"""Images to and from the VAE's side: what `Family.training_latents` does by default (families whose VAE or latents
differ override it)."""

from __future__ import annotations

from typing import Any

import torch


def to_model_range(images: Any, device: torch.device | str) -> torch.Tensor:
    """uint8 images [N, H, W, 3] (numpy) as the VAE's input: float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def encode_images(pipeline: Any, images: Any, sample: bool = True) -> torch.Tensor:
    """uint8 images [N, H, W, 3] as the transformer's clean latents: VAE posterior (a sample, or its mode), shifted
    and scaled by the VAE's config as the pipelines undo it before decoding."""
    vae = pipeline.vae
    with torch.no_grad():
        x = to_model_range(images, vae.device).to(vae.dtype)
        posterior = vae.encode(x).latent_dist
        latents = posterior.sample() if sample else posterior.mode()
    shift = vae.config.shift_factor or 0.0
    return (latents - shift) * vae.config.scaling_factor
