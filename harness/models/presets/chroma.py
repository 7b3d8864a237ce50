"""The Chroma presets: the released model and its tiny twin.

Sources:
- sampling: diffusers' documented Chroma1-HD example, https://huggingface.co/docs/diffusers/main/en/api/pipelines/chroma
  ("Inference": ChromaPipeline.from_pretrained("lodestones/Chroma1-HD"), num_inference_steps=40, guidance_scale=3.0,
  the negative prompt below), the same numbers as the Hugging Face demo Space of the model,
  https://huggingface.co/spaces/multimodalart/Chroma1-HD/blob/main/app.py (infer(): 40 steps, guidance 3.0,
  1024x1024, that negative prompt). The model card, https://huggingface.co/lodestones/Chroma1-HD ("How to Use":
  diffusers ChromaPipeline), was seen here only in a truncated copy. Size and T5 length are also
  ChromaPipeline.__call__'s defaults (diffusers pipelines/chroma/pipeline_chroma.py: height = width =
  default_sample_size 128 x vae_scale_factor 8 = 1024; max_sequence_length=512, its maximum). The pipeline's own
  step and guidance defaults (35, 5.0) are the family's default_sampling for folders that are not this preset.
  ChromaPipeline's example docstring (EXAMPLE_DOC_STRING, diffusers 0.42.1) names the same repo id,
  "lodestones/Chroma1-HD".
- transformer: ChromaTransformer2DModel's default config (diffusers models/transformers/transformer_chroma.py,
  ChromaTransformer2DModel.__init__ defaults; its docstring's reference is lodestones/Chroma1-HD). A diffusers-format
  copy of Chroma1-HD, https://huggingface.co/TensorStack/Chroma1-HD-ts/blob/main/transformer/config.json, has the
  same values (approximator 5120 x 5 layers, 64 channels; 19 + 38 blocks; 24 heads of 128; T5 width 4096; RoPE
  16/56/56) plus FLUX keys (guidance_embeds, pooled_projection_dim) the Chroma class does not take. Meta-device
  count: 8,899,983,424 parameters (8.900 B; the model card says 8.9 B).
- text encoder: T5EncoderModel, google/t5-v1_1-xxl (ChromaPipeline's docstring: "specifically the
  google/t5-v1_1-xxl variant"), with the values presets.py already uses for FLUX.1's text_encoder_2 (`_T5_XXL`).
- VAE: FLUX.1's AutoencoderKL (16 latent channels, scaling 0.3611, shift 0.1159, no quant convs), which Chroma
  uses unchanged (https://huggingface.co/lodestones/Chroma, "put FLUX VAE into ComfyUI/models/vae"; presets.py
  `_vae`).
- scheduler: FlowMatchEulerDiscreteScheduler, shift 3.0, use_dynamic_shifting false (the pipeline's mu is then
  unused), base/max shift 0.5/1.15, image sequence 256/4096, as the diffusers-format copy's
  https://huggingface.co/TensorStack/Chroma1-HD-ts/blob/main/scheduler/scheduler_config.json (diffusers 0.35.1).
  Not checked against lodestones/Chroma1-HD's own scheduler/scheduler_config.json (no network here): verify it
  before relying on the schedule.
"""

from __future__ import annotations

from typing import Any

from harness.models.presets.common import FLUX1_GEOMETRY, T5_XXL, TINY_NOTE, autoencoder_kl, tiny_sampling, tiny_spec
from harness.models.spec import ModelSpec, SamplingSettings
from harness.models.tiny.chroma import TINY_CHROMA_TRANSFORMER, build_tiny_chroma

# ChromaTransformer2DModel's defaults (= the diffusers-format copy's transformer/config.json, see the sources)
_CHROMA1_HD_TRANSFORMER: dict[str, Any] = {
    **FLUX1_GEOMETRY,
    "approximator_num_channels": 64,
    "approximator_hidden_dim": 5120,
    "approximator_layers": 5,
}

_CHROMA_COMPONENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "text_encoder": ("transformers:T5EncoderModel", T5_XXL),  # T5 v1.1 XXL, as FLUX.1's text_encoder_2
    "vae": ("diffusers:AutoencoderKL", autoencoder_kl(0.3611, 0.1159)),  # FLUX.1's VAE
}

# Chroma1-HD's scheduler/scheduler_config.json (see the sources above)
_CHROMA_SCHEDULER = ("diffusers:FlowMatchEulerDiscreteScheduler",
                     {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False, "base_shift": 0.5,
                      "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096})

# the negative prompt of diffusers' Chroma1-HD example and of the demo Space
_CHROMA_NEGATIVE_PROMPT = ("low quality, ugly, unfinished, out of focus, deformed, disfigure, blurry, smudged, "
                           "restricted palette, flat colors")

SPECS = (
    ModelSpec(
        name="chroma1-hd",
        description="Chroma1-HD: 8.9 B-parameter FLUX.1-schnell derivative, 19 double + 38 single blocks, T5 only; "
        "40 steps, true CFG 3 (a second forward per step)",
        family="chroma",
        sampling=SamplingSettings(
            num_inference_steps=40,  # diffusers docs example and demo Space (ChromaPipeline default: 35)
            guidance_scale=3.0,  # diffusers docs example and demo Space (pipeline default: 5.0)
            height=1024,  # ChromaPipeline.__call__ default: default_sample_size 128 x VAE scale 8
            width=1024,
            max_sequence_length=512,  # ChromaPipeline.__call__ default (and its maximum)
            negative_prompt=_CHROMA_NEGATIVE_PROMPT,  # diffusers docs example and demo Space
        ),
        transformer_config=_CHROMA1_HD_TRANSFORMER,
        component_configs=_CHROMA_COMPONENTS,
        scheduler=_CHROMA_SCHEDULER,
        repo_id="lodestones/Chroma1-HD",
    ),
    tiny_spec(
        name="tiny-chroma",
        description=f"tiny Chroma1-HD-like pipeline (2 double + 6 single blocks, hidden 32, T5 only): {TINY_NOTE}",
        family="chroma",
        sampling=tiny_sampling(guidance_scale=4.0, negative_prompt=""),  # CFG on: two forwards per step
        transformer_config=TINY_CHROMA_TRANSFORMER,
        build=build_tiny_chroma,
    ),
)
