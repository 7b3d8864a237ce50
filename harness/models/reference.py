"""The reference pipeline's architecture: a 12-block SD3 MMDiT, a factor-4 VAE and two small CLIP text towers.

Everything is built from config here with random weights; `harness reference train`
(harness/commands/reference_train.py) trains it and saves it in diffusers format into `WEIGHTS_DIR`, from where it
loads with `StableDiffusion3Pipeline.from_pretrained`, exactly as a real model does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness.reference
from harness.reference.world import IMAGE_SIZE

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, StableDiffusion3Pipeline

# the committed trained weights, beside the world they were trained on
WEIGHTS_DIR = Path(harness.reference.__file__).parent / "weights"

LATENT_CHANNELS = 4
VAE_BLOCKS = (16, 32, 64)  # three blocks: two downsamplings, 64x64 images -> 16x16 latents; narrow at full size
CLIP_WIDTHS = (64, 128)  # like CLIP-L and CLIP-G, smaller
CLIP_LAYERS = 3
CLIP_MAX_LENGTH = 16  # the world's longest prompt is 12 tokens with its start and end tokens
TEXT_TOKENS_T5 = 1  # no T5: the pipeline appends this many zero tokens
# the transformer's peak training rate (`harness reference train`), also distillation's default rate for it
TRAINING_LR = 1e-3

TRANSFORMER_CONFIG: dict[str, Any] = {
    "sample_size": IMAGE_SIZE // 4,
    "patch_size": 2,  # 8x8 = 64 image tokens
    "in_channels": LATENT_CHANNELS,
    "num_layers": 12,  # the last block is context_pre_only, as in SD3.5
    "attention_head_dim": 32,
    "num_attention_heads": 4,
    "joint_attention_dim": sum(CLIP_WIDTHS),  # the concatenated CLIP token features, no padding
    "caption_projection_dim": 128,
    "pooled_projection_dim": sum(CLIP_WIDTHS),
    "out_channels": LATENT_CHANNELS,
    "pos_embed_max_size": IMAGE_SIZE // 8,
    "qk_norm": "rms_norm",
}


def build_vae() -> AutoencoderKL:
    from harness.models.tiny import small_vae

    # scale and shift are set from the latents' statistics once the autoencoder is trained
    return small_vae(VAE_BLOCKS, LATENT_CHANNELS, 16, scaling_factor=1.0, shift_factor=0.0)


def build_untrained_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """The reference pipeline with random weights (adaLN modulations and the output projection start at zero, as in
    DiT, so the untrained transformer predicts zero velocity and the loss starts at exactly 2)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from harness.models.tiny import clip_text_encoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoders = [clip_text_encoder(w, with_projection=True, layers=CLIP_LAYERS, max_length=CLIP_MAX_LENGTH)
                    for w in CLIP_WIDTHS]
        transformer = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
        with torch.no_grad():
            for name, module in transformer.named_modules():
                if name.endswith(("norm1.linear", "norm1_context.linear", "norm_out.linear")) or name == "proj_out":
                    module.weight.zero_()
                    module.bias.zero_()
        pipe = StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),  # 64 image tokens need no resolution shift
            vae=build_vae(),
            text_encoder=encoders[0][0],
            tokenizer=encoders[0][1],
            text_encoder_2=encoders[1][0],
            tokenizer_2=encoders[1][1],
            text_encoder_3=None,
            tokenizer_3=None,
        )
    return pipe
