"""The Z-Image presets: the released model and its tiny twin.

Sources (no network here: the Hub files were not read directly; each value below is cited where it comes from):
- sampling: the model card https://huggingface.co/Tongyi-MAI/Z-Image-Turbo (README, diffusers example):
  height=1024, width=1024, num_inference_steps=9 ("This actually results in 8 DiT forwards"), guidance_scale=0.0
  ("Guidance should be 0 for the Turbo models"), torch_dtype=torch.bfloat16; no negative prompt and no
  max_sequence_length in the example, so diffusers pipelines/z_image/pipeline_z_image.py:ZImagePipeline.__call__
  defaults hold: max_sequence_length=512, negative_prompt=None (the pipeline encodes "" where guidance is on, which
  Turbo's 0 never is). Note: in diffusers 0.42.1 nine steps are nine transformer forwards (one per sigma of
  get_default_z_image_sigmas(9) = linspace(1, 1/9, 9)); the card's "8 DiT forwards" counts differently.
  ZImagePipeline's own example docstring (EXAMPLE_DOC_STRING, diffusers 0.42.1) uses 1024x1024, 8 steps,
  guidance 0.0.
- transformer: ZImageTransformer2DModel's default config (diffusers models/transformers/transformer_z_image.py
  ZImageTransformer2DModel.__init__ defaults) = the released architecture, except axes_lens: the repo's
  transformer/config.json (https://huggingface.co/Tongyi-MAI/Z-Image-Turbo/blob/main/transformer/config.json, as
  third-party copies of it give it: "_diffusers_version": "0.36.0.dev0") has axes_lens [1536, 512, 512], the class
  default [1024, 512, 512]. axes_lens sizes the RoPE tables only (no parameters): 1536 lets captions of up to
  ~1500 tokens index positions. Meta-device count: 6,154,908,736 parameters (6.155 B; the card's "6B", 6.15 B in
  third-party write-ups): 30 main + 2 noise-refiner + 2 context-refiner blocks of 3840.
- text encoder: transformers Qwen3Model (the repo's model_index.json: "text_encoder": ["transformers",
  "Qwen3Model"], "tokenizer": ["transformers", "Qwen2Tokenizer"]) with Qwen3-4B's config (text_encoder/config.json,
  "architectures": ["Qwen3ForCausalLM"], as DiffSynth-Studio's diffsynth/models/z_image_text_encoder.py copies it:
  hidden 2560, 36 layers, 32 heads / 8 KV heads of 128, SwiGLU 9728, vocab 151936, tied embeddings, RoPE theta 1e6,
  max positions 40960). Meta-device count: 4,022,468,096 parameters. The pipeline reads hidden_states[-2].
- VAE: FLUX.1's AutoencoderKL (vae/config.json: 16 latent channels, scaling_factor 0.3611, shift_factor 0.1159,
  block_out_channels 128/256/512/512, no quant convs), presets.py `_vae(0.3611, 0.1159)` as FLUX.1's.
- scheduler: scheduler/scheduler_config.json: FlowMatchEulerDiscreteScheduler, num_train_timesteps 1000, shift 3.0,
  use_dynamic_shifting false (the pipeline's mu is then unused), as third-party copies of the file give it.
"""

from __future__ import annotations

from typing import Any

from harness.models.presets.common import TINY_NOTE, autoencoder_kl, tiny_spec
from harness.models.spec import ModelSpec, SamplingSettings
from harness.models.tiny.zimage import TINY_ZIMAGE_TRANSFORMER, build_tiny_zimage

# ZImageTransformer2DModel's defaults with the repo's axes_lens (see the sources above)
_Z_IMAGE_TURBO_TRANSFORMER: dict[str, Any] = {
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": 16,
    "dim": 3840,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "cap_feat_dim": 2560,
    "rope_theta": 256.0,
    "t_scale": 1000.0,
    "axes_dims": (32, 48, 48),
    "axes_lens": (1536, 512, 512),
}

# Qwen3-4B, Z-Image-Turbo's text_encoder/config.json (see the sources above)
_QWEN3_4B: dict[str, Any] = {"vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728,
                             "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                             "head_dim": 128, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
                             "rope_theta": 1000000.0, "tie_word_embeddings": True, "attention_bias": False,
                             "bos_token_id": 151643, "eos_token_id": 151645}

_Z_IMAGE_COMPONENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "text_encoder": ("transformers:Qwen3Model", _QWEN3_4B),
    "vae": ("diffusers:AutoencoderKL", autoencoder_kl(0.3611, 0.1159)),  # FLUX.1's VAE
}

# Z-Image-Turbo's scheduler/scheduler_config.json
_Z_IMAGE_TURBO_SCHEDULER = ("diffusers:FlowMatchEulerDiscreteScheduler",
                            {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False})

SPECS = (
    ModelSpec(
        name="z-image-turbo",
        description="Z-Image-Turbo: 6.2 B-parameter single-stream DiT (S3-DiT), 30 main + 2 + 2 refiner blocks, "
        "Qwen3-4B text encoder, distilled; 9 steps, no guidance",
        family="zimage",
        # the model card's example (https://huggingface.co/Tongyi-MAI/Z-Image-Turbo): 1024x1024, 9 steps, guidance
        # 0.0; max_sequence_length and negative_prompt: diffusers pipeline_z_image.py:ZImagePipeline.__call__ defaults
        sampling=SamplingSettings(num_inference_steps=9, guidance_scale=0.0, height=1024, width=1024,
                                  max_sequence_length=512, negative_prompt=None),
        transformer_config=_Z_IMAGE_TURBO_TRANSFORMER,
        component_configs=_Z_IMAGE_COMPONENTS,
        scheduler=_Z_IMAGE_TURBO_SCHEDULER,
        repo_id="Tongyi-MAI/Z-Image-Turbo",
    ),
    tiny_spec(
        name="tiny-zimage",
        description=f"tiny Z-Image-Turbo-like pipeline (2 + 2 refiner and 6 main blocks, hidden 96): {TINY_NOTE}",
        family="zimage",
        # as _tiny_sampling, with Turbo's guidance 0 and 64 caption tokens: the chat template alone takes 9 of them
        sampling=SamplingSettings(num_inference_steps=4, guidance_scale=0.0, height=64, width=64,
                                  max_sequence_length=64, negative_prompt=None),
        transformer_config=TINY_ZIMAGE_TRANSFORMER,
        build=build_tiny_zimage,
    ),
)
