"""What the presets of several families share: the released text encoders' and VAEs' configs, and the tiny
presets' sampling. Importing it does not import torch."""

from __future__ import annotations

from typing import Any

from harness.models.spec import ModelSpec, SamplingSettings

# Text encoders and VAE of the real models, for weight-free estimates (`harness estimate`): class and config as in
# each repo's <component>/config.json (only what decides the parameter count and dtype-independent layout).
CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
           "num_attention_heads": 12, "max_position_embeddings": 77, "projection_dim": 768, "hidden_act": "quick_gelu"}
CLIP_G = {"vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
           "num_attention_heads": 20, "max_position_embeddings": 77, "projection_dim": 1280, "hidden_act": "gelu"}
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
           "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32}


# FLUX.1's transformer geometry, 12 B parameters with its modulation (Chroma keeps it, less the modulation): 2x2
# packed 16-channel latents, 19 double + 38 single blocks of 24 heads x 128, T5 width 4096, RoPE axes 16 + 56 + 56.
FLUX1_GEOMETRY: dict[str, Any] = {"patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
                                  "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
                                  "axes_dims_rope": (16, 56, 56)}


def autoencoder_kl(scaling_factor: float, shift_factor: float) -> dict[str, Any]:
    return {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2, "latent_channels": 16, "norm_num_groups": 32, "use_quant_conv": False,
            "use_post_quant_conv": False, "scaling_factor": scaling_factor, "shift_factor": shift_factor}


def tiny_sampling(guidance_scale: float, negative_prompt: str | None) -> SamplingSettings:
    return SamplingSettings(
        num_inference_steps=4,
        guidance_scale=guidance_scale,
        height=64,
        width=64,
        max_sequence_length=16,
        negative_prompt=negative_prompt,
    )


TINY_NOTE = "random weights, built from config in code; for tests and smoke runs, images are noise"


def tiny_spec(**fields: Any) -> ModelSpec:
    """A tiny twin's preset: `fields` (name, description, family, sampling, transformer_config, build) with what
    every tiny twin shares, float32, no quality suites, and contribution analysis on closeness to the original (with
    random weights, nothing else means anything)."""
    return ModelSpec(dtype="float32", contribution_metric="fidelity/ssim", quality_suites=(), **fields)

