"""The built-in models: the five released SD3.5 / FLUX.1 checkpoints, three tiny random-weight stand-ins and the
reference model here; Qwen-Image, FLUX.2, Z-Image and Chroma (each released model with its tiny twin) in a module
of their own beside this one.

Sampling settings of the real models are those used for every evaluation of HierarchicalPrune (1024x1024, bf16,
empty negative prompt for SD3, none for FLUX). Transformer configs are copied from each repo's
`transformer/config.json`, so an architecture can be built on the meta device without downloading anything.
Importing this module does not import torch or diffusers: the tiny builders import them when called.
"""

from __future__ import annotations

from typing import Any

from harness.models.presets import chroma, flux2, qwenimage, zimage
from harness.models.presets.common import (
    CLIP_G,
    CLIP_L,
    FLUX1_GEOMETRY,
    T5_XXL,
    TINY_NOTE,
    autoencoder_kl,
    tiny_sampling,
    tiny_spec,
)
from harness.models.reference import TEXT_TOKENS_T5, TRAINING_LR, build_untrained_pipeline
from harness.models.reference import TRANSFORMER_CONFIG as REFERENCE_TRANSFORMER
from harness.models.reference import WEIGHTS_DIR as REFERENCE_WEIGHTS
from harness.models.spec import ModelSpec, SamplingSettings
from harness.models.tiny import (
    TINY_FLUX_TRANSFORMER,
    TINY_SD3_TRANSFORMER,
    TINY_SD35_MEDIUM_TRANSFORMER,
    build_tiny_flux,
    build_tiny_sd3,
    build_tiny_sd35_medium,
)
from harness.reference.world import IMAGE_SIZE

_SD35_LARGE_TRANSFORMER: dict[str, Any] = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 38,
    "attention_head_dim": 64,
    "num_attention_heads": 38,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 2432,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 192,
    "qk_norm": "rms_norm",
}

_SD35_MEDIUM_TRANSFORMER: dict[str, Any] = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 384,
    "dual_attention_layers": tuple(range(13)),
    "qk_norm": "rms_norm",
}


def _flux_transformer(guidance_embeds: bool) -> dict[str, Any]:
    return {**FLUX1_GEOMETRY, "pooled_projection_dim": 768, "guidance_embeds": guidance_embeds}


_SD35_COMPONENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "text_encoder": ("transformers:CLIPTextModelWithProjection", CLIP_L),
    "text_encoder_2": ("transformers:CLIPTextModelWithProjection", CLIP_G),
    "text_encoder_3": ("transformers:T5EncoderModel", T5_XXL),
    "vae": ("diffusers:AutoencoderKL", autoencoder_kl(1.5305, 0.0609)),
}
_FLUX_COMPONENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "text_encoder": ("transformers:CLIPTextModel", CLIP_L),
    "text_encoder_2": ("transformers:T5EncoderModel", T5_XXL),
    "vae": ("diffusers:AutoencoderKL", autoencoder_kl(0.3611, 0.1159)),
}


# each repo's scheduler/scheduler_config.json
_SD35_SCHEDULER = ("diffusers:FlowMatchEulerDiscreteScheduler", {"num_train_timesteps": 1000, "shift": 3.0})
_FLUX_DEV_SCHEDULER = ("diffusers:FlowMatchEulerDiscreteScheduler",
                       {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                        "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096})
_FLUX_SCHNELL_SCHEDULER = ("diffusers:FlowMatchEulerDiscreteScheduler",
                           {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False})


_SPECS = (
    ModelSpec(
        name="sd3.5-large",
        description="Stable Diffusion 3.5 Large: 8.1 B-parameter MMDiT, 38 joint blocks; 28 steps, CFG 3.5",
        family="sd3",
        sampling=SamplingSettings(num_inference_steps=28, guidance_scale=3.5, max_sequence_length=512),
        transformer_config=_SD35_LARGE_TRANSFORMER,
        component_configs=_SD35_COMPONENTS,
        scheduler=_SD35_SCHEDULER,
        repo_id="stabilityai/stable-diffusion-3.5-large",
    ),
    ModelSpec(
        name="sd3.5-large-turbo",
        description="Stable Diffusion 3.5 Large Turbo: distilled SD3.5 Large; 4 steps, no CFG",
        family="sd3",
        sampling=SamplingSettings(num_inference_steps=4, guidance_scale=0.0, max_sequence_length=512),
        transformer_config=dict(_SD35_LARGE_TRANSFORMER),  # the same architecture, its own copy
        component_configs=_SD35_COMPONENTS,
        scheduler=_SD35_SCHEDULER,
        repo_id="stabilityai/stable-diffusion-3.5-large-turbo",
    ),
    ModelSpec(
        name="sd3.5-medium",
        description="Stable Diffusion 3.5 Medium: 2.2 B-parameter MMDiT-X, 24 blocks (0-12 dual-attention); "
        "28 steps, CFG 7",
        family="sd3",
        sampling=SamplingSettings(num_inference_steps=28, guidance_scale=7.0, max_sequence_length=256),
        transformer_config=_SD35_MEDIUM_TRANSFORMER,
        component_configs=_SD35_COMPONENTS,
        scheduler=_SD35_SCHEDULER,
        repo_id="stabilityai/stable-diffusion-3.5-medium",
    ),
    ModelSpec(
        name="flux.1-dev",
        description="FLUX.1 [dev]: 11.9 B parameters, 19 double + 38 single blocks, guidance-distilled; "
        "50 steps, guidance 3.5",
        family="flux",
        sampling=SamplingSettings(
            num_inference_steps=50, guidance_scale=3.5, max_sequence_length=512, negative_prompt=None
        ),
        transformer_config=_flux_transformer(guidance_embeds=True),
        component_configs=_FLUX_COMPONENTS,
        scheduler=_FLUX_DEV_SCHEDULER,
        repo_id="black-forest-labs/FLUX.1-dev",
    ),
    ModelSpec(
        name="flux.1-schnell",
        description="FLUX.1 [schnell]: 11.9 B parameters, 19 double + 38 single blocks, timestep-distilled; 4 steps",
        family="flux",
        sampling=SamplingSettings(
            num_inference_steps=4, guidance_scale=0.0, max_sequence_length=256, negative_prompt=None
        ),
        transformer_config=_flux_transformer(guidance_embeds=False),
        component_configs=_FLUX_COMPONENTS,
        scheduler=_FLUX_SCHNELL_SCHEDULER,
        repo_id="black-forest-labs/FLUX.1-schnell",
    ),
    tiny_spec(
        name="tiny-sd3",
        description=f"tiny SD3.5-Large-like pipeline (4 joint blocks, hidden 32): {TINY_NOTE}",
        family="sd3",
        sampling=tiny_sampling(guidance_scale=4.0, negative_prompt=""),
        transformer_config=TINY_SD3_TRANSFORMER,
        build=build_tiny_sd3,
    ),
    tiny_spec(
        name="tiny-sd3.5-medium",
        description=f"tiny SD3.5-Medium-like pipeline (4 blocks, 2 dual-attention, hidden 32): {TINY_NOTE}",
        family="sd3",
        sampling=tiny_sampling(guidance_scale=4.0, negative_prompt=""),
        transformer_config=TINY_SD35_MEDIUM_TRANSFORMER,
        build=build_tiny_sd35_medium,
    ),
    tiny_spec(
        name="tiny-flux",
        description=f"tiny FLUX.1-dev-like pipeline (2 double + 2 single blocks, hidden 32): {TINY_NOTE}",
        family="flux",
        sampling=tiny_sampling(guidance_scale=3.5, negative_prompt=None),
        transformer_config=TINY_FLUX_TRANSFORMER,
        build=build_tiny_flux,
    ),
    ModelSpec(
        name="reference",
        description="the embedded reference model: a 12-block SD3 MMDiT (7 M parameters) trained on the synthetic "
        "shapes world (harness reference train); 64x64, 20 steps, CFG 2.5",
        family="sd3",
        sampling=SamplingSettings(num_inference_steps=20, guidance_scale=2.5, height=IMAGE_SIZE, width=IMAGE_SIZE,
                                  max_sequence_length=TEXT_TOKENS_T5, negative_prompt=""),
        transformer_config=REFERENCE_TRANSFORMER,
        dtype="float32",
        repo_id=str(REFERENCE_WEIGHTS),
        architecture=build_untrained_pipeline,
        contribution_metric="geneval-shapes/overall",
        quality_suites=("geneval-shapes",),
        training_lr=TRAINING_LR,
        # a 7 M-parameter model on a CPU is bound by per-call overhead: 16 images a call generate about 1.45x as
        # many images a second as 4 (measured on a 2-core CPU)
        batch_size=16,
    ),
)

# the newer families' presets, one module each (the released model and its tiny twin)
_FAMILY_SPECS = (*chroma.SPECS, *flux2.SPECS, *qwenimage.SPECS, *zimage.SPECS)

PRESETS: dict[str, ModelSpec] = {spec.name: spec for spec in (*_SPECS, *_FAMILY_SPECS)}
