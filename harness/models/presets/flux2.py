"""The FLUX.2 presets: the released model and its tiny twin.

Sources (cited per number below):
  [call]  diffusers 0.42.1 pipelines/flux2/pipeline_flux2.py: Flux2Pipeline.__call__ defaults (num_inference_steps=50,
          guidance_scale=4.0, max_sequence_length=512, text_encoder_out_layers=(10, 20, 30)) and Flux2Pipeline.__init__
          (default_sample_size=128 x vae_scale_factor 8 = 1024 px, tokenizer_max_length=512); no negative_prompt
          argument exists (guidance-distilled, `guidance` is embedded).
  [card]  https://huggingface.co/black-forest-labs/FLUX.2-dev (model card): 32B flow transformer, Mistral Small 3.2 24B
          text encoder; its diffusers example samples with num_inference_steps=50 ("28 is a good trade-off") and
          guidance_scale=4 at 1024x1024 (recalled, not re-read offline: the card was not in the stored corpus; the
          diffusers defaults [call] give the same numbers).
  [tcls]  diffusers 0.42.1 models/transformers/transformer_flux2.py: Flux2Transformer2DModel.__init__ defaults, which
          are the released transformer/config.json (8 + 48 blocks, 48 heads x 128 = 6144, joint_attention_dim 15360
          = 3 x 5120); measured on the meta device: 32,223,281,152 parameters (32.22 B).
  [te]    FLUX.2-dev text_encoder/config.json = mistralai/Mistral-Small-3.2-24B-Instruct-2506's config.json; the same
          numbers are transformers 5.25 Mistral3Config.sub_configs_defaults (models/mistral3/configuration_mistral3.py),
          which carry the Mistral Small 3.x architecture; tie_word_embeddings False as released (24.01 B parameters
          on the meta device; tied it would be 23.3 B, not Mistral Small's 24 B).
  [vae]   diffusers 0.42.1 models/autoencoders/autoencoder_kl_flux2.py: AutoencoderKLFlux2.__init__ defaults
          (= FLUX.2-dev vae/config.json: 32 latent channels, (128, 256, 512, 512), 2 layers per block, quant convs,
          BatchNorm over the 2x2-patchified 128 channels); 84.0 M parameters.
  [sched] FLUX.2-dev scheduler/scheduler_config.json: FlowMatchEulerDiscreteScheduler with dynamic shifting (the
          pipeline passes its own empirical mu, `compute_empirical_mu`, and its own sigmas linspace(1, 1/steps));
          base/max shift and sequence lengths as FLUX.1-dev's (recalled, not re-read offline; with dynamic shifting
          and the pipeline's mu they do not enter the schedule: only use_dynamic_shifting=True does).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.models.presets.common import TINY_NOTE, tiny_sampling, tiny_spec
from harness.models.spec import ModelSpec, SamplingSettings
from harness.models.tiny.flux2 import TINY_FLUX2_TRANSFORMER, build_tiny_flux2

# [tcls] Flux2Transformer2DModel's defaults, written out
_FLUX2_DEV_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 128,  # 32 VAE channels x 2x2 patch
    "out_channels": None,
    "num_layers": 8,
    "num_single_layers": 48,
    "attention_head_dim": 128,
    "num_attention_heads": 48,
    "joint_attention_dim": 15360,  # hidden states of Mistral layers 10, 20, 30 stacked: 3 x 5120
    "timestep_guidance_channels": 256,
    "mlp_ratio": 3.0,
    "axes_dims_rope": (32, 32, 32, 32),
    "rope_theta": 2000,
    "eps": 1e-6,
    "guidance_embeds": True,
}

# [te] Mistral Small 3.2 24B (Mistral3ForConditionalGeneration: Mistral text decoder + Pixtral vision tower)
_MISTRAL_SMALL_3 = {
    "text_config": {"model_type": "mistral", "vocab_size": 131072, "hidden_size": 5120, "intermediate_size": 32768,
                    "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 1e9,
                    "sliding_window": None, "hidden_act": "silu"},
    "vision_config": {"model_type": "pixtral", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "head_dim": 64, "patch_size": 14, "image_size": 1540,
                      "num_channels": 3, "hidden_act": "silu", "rope_theta": 10000.0},
    "image_token_index": 10,
    "spatial_merge_size": 2,
    "projector_hidden_act": "gelu",
    "multimodal_projector_bias": False,
    "vision_feature_layer": -1,
    "tie_word_embeddings": False,
}

# [vae] AutoencoderKLFlux2's defaults, written out
_FLUX2_VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
              "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512),
              "layers_per_block": 2, "latent_channels": 32, "norm_num_groups": 32, "sample_size": 1024,
              "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
              "batch_norm_eps": 1e-4, "batch_norm_momentum": 0.1, "patch_size": (2, 2)}

_FLUX2_COMPONENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "text_encoder": ("transformers:Mistral3ForConditionalGeneration", _MISTRAL_SMALL_3),
    "vae": ("diffusers:AutoencoderKLFlux2", _FLUX2_VAE),
}

# [sched]
_FLUX2_DEV_SCHEDULER = ("diffusers:FlowMatchEulerDiscreteScheduler",
                        {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                         "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096})

SPECS = (
    ModelSpec(
        name="flux.2-dev",
        description="FLUX.2 [dev]: 32.2 B parameters, 8 double + 48 single blocks (shared modulation), Mistral Small "
        "3.2 text encoder, guidance-distilled; 50 steps, guidance 4",
        family="flux2",
        sampling=SamplingSettings(
            num_inference_steps=50,  # [call] default, [card]
            guidance_scale=4.0,  # [call] default, [card]; embedded guidance, one forward per step
            height=1024,  # [call]: default_sample_size 128 x the VAE's 8
            width=1024,
            max_sequence_length=512,  # [call] default (the pipeline's tokenizer_max_length)
            negative_prompt=None,  # [call]: Flux2Pipeline takes none
        ),
        transformer_config=_FLUX2_DEV_TRANSFORMER,
        component_configs=_FLUX2_COMPONENTS,
        scheduler=_FLUX2_DEV_SCHEDULER,
        repo_id="black-forest-labs/FLUX.2-dev",
    ),
    tiny_spec(
        name="tiny-flux2",
        description=f"tiny FLUX.2-dev-like pipeline (2 double + 6 single blocks, hidden 32, 30-layer tiny Mistral "
        f"3): {TINY_NOTE}",
        family="flux2",
        # 64 text tokens, not 16: FLUX.2's system message comes first in every prompt's chat template (40 tokens of
        # the stand-in tokenizer), so 16 would leave the prompt itself out
        sampling=dataclasses.replace(tiny_sampling(guidance_scale=4.0, negative_prompt=None),
                                     max_sequence_length=64),
        transformer_config=TINY_FLUX2_TRANSFORMER,
        build=build_tiny_flux2,
    ),
)
