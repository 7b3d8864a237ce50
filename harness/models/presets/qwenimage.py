"""The Qwen-Image presets: the released model and its tiny twin.

Sources: cited beside each number below.
"""

from __future__ import annotations

from typing import Any

from harness.models.presets.common import TINY_NOTE, tiny_sampling, tiny_spec
from harness.models.spec import ModelSpec, SamplingSettings
from harness.models.tiny.qwenimage import QWENIMAGE_SCHEDULER, TINY_QWENIMAGE_TRANSFORMER, build_tiny_qwenimage

# Qwen/Qwen-Image transformer/config.json = QwenImageTransformer2DModel's defaults in diffusers 0.42
# (models/transformers/transformer_qwenimage.py: QwenImageTransformer2DModel.__init__). The released file also has
# "pooled_projection_dim": 768, which the class no longer takes (from_pretrained ignores it), so it is left out.
# Meta-device parameter count: 20,430,401,088 (20.43 B).
_QWEN_IMAGE_TRANSFORMER: dict[str, Any] = {
    "patch_size": 2,
    "in_channels": 64,  # 16 latent channels x 2x2 packing
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,  # hidden 3072
    "joint_attention_dim": 3584,  # Qwen2.5-VL-7B's hidden size
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}

# Qwen/Qwen-Image text_encoder/config.json (Qwen2.5-VL-7B-Instruct's: Qwen2_5_VLForConditionalGeneration,
# 8.29 B parameters with its vision tower), nested as transformers 5's Qwen2_5_VLConfig takes it.
_QWEN2_5_VL_7B: dict[str, Any] = {
    "text_config": {
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_act": "silu", "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "bos_token_id": 151643, "eos_token_id": 151645, "use_sliding_window": False, "sliding_window": 32768,
        "max_window_layers": 28, "tie_word_embeddings": False,
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "hidden_act": "silu",
        "in_channels": 3, "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
    },
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "tie_word_embeddings": False,
}

# Qwen/Qwen-Image vae/config.json = AutoencoderKLQwenImage's defaults in diffusers 0.42
# (models/autoencoders/autoencoder_kl_qwenimage.py: AutoencoderKLQwenImage.__init__): 126.9 M parameters.
_QWEN_IMAGE_VAE: dict[str, Any] = {
    "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
    "temperal_downsample": [False, True, True], "dropout": 0.0,
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
                     -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
                    1.6382, 1.1253, 2.8251, 1.9160],
}

_QWEN_IMAGE_COMPONENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "text_encoder": ("transformers:Qwen2_5_VLForConditionalGeneration", _QWEN2_5_VL_7B),
    "vae": ("diffusers:AutoencoderKLQwenImage", _QWEN_IMAGE_VAE),
}

# Qwen/Qwen-Image scheduler/scheduler_config.json: FlowMatchEulerDiscreteScheduler, exponential time shift with a
# resolution-dependent mu (base_shift 0.5 at 256 tokens, max_shift 0.9 at 8192), stretched to end at 0.02
_QWEN_IMAGE_SCHEDULER = ("diffusers:FlowMatchEulerDiscreteScheduler", dict(QWENIMAGE_SCHEDULER))

SPECS = (ModelSpec(
    name="qwen-image",
    description="Qwen-Image: 20.4 B-parameter MMDiT, 60 dual-stream blocks, Qwen2.5-VL-7B text encoder; 50 steps, "
    "true CFG 4 (two forwards a step)",
    family="qwenimage",
    sampling=SamplingSettings(
        # https://huggingface.co/Qwen/Qwen-Image (model card, "Quick Start"): num_inference_steps=50 (also
        # diffusers pipelines/qwenimage/pipeline_qwenimage.py:QwenImagePipeline.__call__ default 50)
        num_inference_steps=50,
        # model card: true_cfg_scale=4.0 (also QwenImagePipeline.__call__ default true_cfg_scale=4.0); the family
        # maps guidance_scale to true_cfg_scale
        guidance_scale=4.0,
        # model card: aspect_ratios "1:1": (1328, 1328). (QwenImagePipeline.__call__ without height/width draws
        # default_sample_size 128 x vae_scale_factor 8 = 1024.)
        height=1328,
        width=1328,
        # QwenImagePipeline.__call__ default max_sequence_length=512 (the model card passes none)
        max_sequence_length=512,
        # model card: negative_prompt = " " ("using an empty string if you do not have specific concept to
        # remove"); any negative prompt turns true CFG on (QwenImagePipeline.__call__: do_true_cfg)
        negative_prompt=" ",
    ),
    transformer_config=_QWEN_IMAGE_TRANSFORMER,
    component_configs=_QWEN_IMAGE_COMPONENTS,
    scheduler=_QWEN_IMAGE_SCHEDULER,
    repo_id="Qwen/Qwen-Image",
),
 tiny_spec(
    name="tiny-qwenimage",
    description=f"tiny Qwen-Image-like pipeline (4 dual-stream blocks, hidden 32, true CFG): {TINY_NOTE}",
    family="qwenimage",
    sampling=tiny_sampling(guidance_scale=4.0, negative_prompt=" "),  # 4 steps, 64x64, 16 text tokens at most
    transformer_config=TINY_QWENIMAGE_TRANSFORMER,
    build=build_tiny_qwenimage,
))
