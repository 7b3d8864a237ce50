"""A tiny random-weight Qwen-Image pipeline (QwenImagePipeline) built offline from config, for tests and smoke runs;
and the stand-in Qwen2 tokenizer with the released vocabulary size, for weight-free builds of the real preset.

Qwen-Image in miniature: 4 dual-stream MMDiT blocks of hidden 32 (2 heads of 16), transformers' own
Qwen2_5_VLForConditionalGeneration (the released text encoder's class) with a 2-layer text model of width 32 and a
1-layer vision tower that the text-to-image pipeline never runs, the pipeline's own VAE class
(AutoencoderKLQwenImage: causal 3D convolutions, 8x spatial compression, 16 latent channels normalised by the
released per-channel means and standard deviations), and the released scheduler (exponential, resolution-dependent
shift). A 64x64 image is 8x8 latents, 4x4 packed tokens of 64 channels.

The tokenizer is the Qwen2.5-VL stand-in (`harness.models.tiny.qwen_tokenizer`): each word of the pipeline's prompt
template and of CLIP's BPE is a single token, so the template's system prefix is the 34 tokens the pipeline drops
(`prompt_template_encode_start_idx`), as with the released tokenizer.

Configs are plain data; torch, diffusers, transformers and tokenizers are imported inside the builders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.models.tiny import _CLIP_MERGES, CLIP_ALL_MERGES, SEED, _eval
from harness.models.tiny.qwen_tokenizer import (
    CHATML_TEMPLATE,
    QWEN2_5_VL_ADDED_TOKENS,
    QWEN_REGULAR_TOKENS,
    qwen_tokenizer,
)

if TYPE_CHECKING:
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

_LATENT_CHANNELS = 16  # the released VAE's z_dim
_TEXT_WIDTH = 32  # the tiny text encoder's hidden size = the transformer's joint_attention_dim

# Every Linear of the blocks has in_features divisible by 32 (group-wise quantisation): hidden 32, MLP 128, the
# modulations 32 -> 192, img_in 64, txt_in 32.
TINY_QWENIMAGE_TRANSFORMER: dict[str, Any] = {
    "patch_size": 2,
    "in_channels": 4 * _LATENT_CHANNELS,  # 2x2 packed latents
    "out_channels": _LATENT_CHANNELS,
    "num_layers": 4,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": _TEXT_WIDTH,
    "axes_dims_rope": (4, 6, 6),  # sums to the head dim, as (16, 56, 56) to 128
}

# The released VAE's latent statistics (Qwen/Qwen-Image vae/config.json = AutoencoderKLQwenImage's defaults)
_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
                 -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
                1.6382, 1.1253, 2.8251, 1.9160]

# Qwen/Qwen-Image scheduler/scheduler_config.json (see the preset)
QWENIMAGE_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 0.9,
    "base_image_seq_len": 256,
    "max_image_seq_len": 8192,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "invert_sigmas": False,
    "stochastic_sampling": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
}

# QwenImagePipeline.__init__'s prompt_template_encode (diffusers 0.42), whose words the tiny BPE makes single tokens
_PROMPT_TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
                    "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
                    "<|im_end|>\n<|im_start|>assistant\n")


def build_tiny_qwenimage(transformer_config: dict[str, Any] | None = None) -> QwenImagePipeline:
    """A random-weight Qwen-Image-like pipeline in float32 on the CPU, all components in eval mode;
    `transformer_config` replaces the tiny transformer's. Two builds are bit-identical; the caller's RNG is left
    alone."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline, QwenImageTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        text_encoder, tokenizer = _qwen2_5_vl()
        pipe = QwenImagePipeline(
            transformer=QwenImageTransformer2DModel(**(transformer_config or TINY_QWENIMAGE_TRANSFORMER)),
            scheduler=FlowMatchEulerDiscreteScheduler(**QWENIMAGE_SCHEDULER),
            vae=small_qwenimage_vae(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
    return _eval(pipe)


def small_qwenimage_vae() -> AutoencoderKLQwenImage:
    """AutoencoderKLQwenImage in miniature: base width 8 (8, 16, 32, 32), one residual block per level, the
    released 8x spatial compression (three downsamplings), latent channels and latent statistics."""
    from diffusers import AutoencoderKLQwenImage

    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=_LATENT_CHANNELS,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
        latents_mean=list(_LATENTS_MEAN),
        latents_std=list(_LATENTS_STD),
    )


def _qwen2_5_vl() -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer]:
    """A Qwen2.5-VL text encoder (2 text layers of width 32, 2 heads sharing one key-value head, multimodal RoPE
    sections scaled from (16, 24, 24) of 64 to (2, 3, 3) of 8; a 1-layer vision tower) and the tiny tokenizer."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = qwen2_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token, _ in QWEN2_5_VL_ADDED_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": _TEXT_WIDTH,
            "intermediate_size": 2 * _TEXT_WIDTH,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-6,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "rope_theta": 1000000.0,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": _TEXT_WIDTH,
            "intermediate_size": 2 * _TEXT_WIDTH,
            "num_heads": 2,
            "out_hidden_size": _TEXT_WIDTH,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [0],
            "tokens_per_second": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    return Qwen2_5_VLForConditionalGeneration(config), tokenizer


def qwen2_tokenizer(merge_count: int = _CLIP_MERGES, regular_tokens: int | None = None) -> Qwen2Tokenizer:
    """The Qwen2.5-VL tokenizer stand-in (`harness.models.tiny.qwen_tokenizer`): the pipeline template's words and
    CLIP's first `merge_count` merges' words as single tokens, ChatML, Qwen2.5-VL's 22 added tokens."""
    return qwen_tokenizer(QWEN2_5_VL_ADDED_TOKENS, CHATML_TEMPLATE, _PROMPT_TEMPLATE.format(""), merge_count,
                          regular_tokens)


def stand_in_qwen2_tokenizer() -> Qwen2Tokenizer:
    """A stand-in for the released Qwen2.5-VL tokenizer, built offline: all of CLIP's words as single tokens,
    filler up to the released 151643 regular ids, then the added tokens at the released ids (151643-151664), so
    its ids fit the released text encoder (152064 embedding rows) and its special ids match the released config."""
    return qwen2_tokenizer(CLIP_ALL_MERGES, regular_tokens=QWEN_REGULAR_TOKENS)
