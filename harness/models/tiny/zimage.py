"""A tiny random-weight Z-Image pipeline (ZImagePipeline) built offline from config, for tests and smoke runs, and
the stand-in Qwen3 tokenizer with the released vocabulary size, for weight-free builds of the real preset.

Z-Image-Turbo in miniature: 2 noise-refiner + 2 context-refiner + 4 main ZImageTransformerBlocks of hidden 96 (3
heads of 32, RoPE axes 8/12/12 as the released 32/48/48 over 4), a 2-layer Qwen3 text encoder of width 32 (the
released encoder's class, `transformers.Qwen3Model`, from a tiny `Qwen3Config`) with the Qwen3 tokenizer stand-in
(`harness.models.tiny.qwen_tokenizer`: Qwen3's 26 added tokens and the chat template that the pipeline's
`apply_chat_template(..., enable_thinking=True)` needs),
FLUX.1's VAE layout with its scale and shift (as Z-Image-Turbo ships it), and Z-Image-Turbo's scheduler (static shift
3). A 64x64 image is 8x8 latents, 4x4 = 16 patch tokens (padded by the transformer to 32).

The transformer config is plain data; torch, diffusers and transformers are imported inside the builders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.models.tiny import _CLIP_MERGES, _LATENT_CHANNELS, _VAE_BLOCKS, CLIP_ALL_MERGES, SEED, _eval, small_vae
from harness.models.tiny.qwen_tokenizer import (
    QWEN3_ADDED_TOKENS,
    QWEN3_CHAT_TEMPLATE,
    QWEN_REGULAR_TOKENS,
    qwen_tokenizer,
)

if TYPE_CHECKING:
    from diffusers import ZImagePipeline
    from transformers import Qwen2Tokenizer, Qwen3Model

_QWEN3_WIDTH = 32  # the tiny text encoder's hidden size = the transformer's cap_feat_dim

# Every Linear of the transformer has in_features divisible by 32 (group-wise quantisation): hidden 96 (32 and 64
# would give the SwiGLU a hidden width of int(dim / 3 * 8) = 85 or 170), SwiGLU 256, adaLN input min(96, 256) = 96,
# patch embedder 2 x 2 x 16 = 64, caption embedder 32. Only the timestep embedder's fixed 256 -> 1024 -> 96 MLP is
# diffusers' own (mid_size=1024 is hard-coded).
TINY_ZIMAGE_TRANSFORMER: dict[str, Any] = {
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": _LATENT_CHANNELS,
    "dim": 96,
    "n_layers": 6,  # >= 2 main layers left after a default depth cut (the step caches hook those)
    "n_refiner_layers": 2,  # as released: 2 noise refiners (image tokens) and 2 context refiners (text tokens)
    "n_heads": 3,
    "n_kv_heads": 3,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "cap_feat_dim": _QWEN3_WIDTH,
    "rope_theta": 256.0,
    "t_scale": 1000.0,
    "axes_dims": (8, 12, 12),  # sums to the head dim 96 / 3
    "axes_lens": (512, 64, 64),  # captions up to ~500 tokens, images up to 64 x 16 = 1024 px a side
}

# Z-Image-Turbo's scheduler/scheduler_config.json (see the preset): static shift 3, no resolution-dependent shift
_ZIMAGE_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}
_TEMPLATE_TEXT = "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"  # ZImagePipeline's chat turn, no prompt

def zimage_tokenizer(merge_count: int = _CLIP_MERGES, regular_tokens: int | None = None) -> Qwen2Tokenizer:
    """The Qwen3 tokenizer stand-in (`harness.models.tiny.qwen_tokenizer`): the chat template's words (what
    ZImagePipeline renders: "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n") and CLIP's first
    `merge_count` merges' words as single tokens, Qwen3's chat template and 26 added tokens."""
    return qwen_tokenizer(QWEN3_ADDED_TOKENS, QWEN3_CHAT_TEMPLATE, _TEMPLATE_TEXT, merge_count, regular_tokens)


def released_qwen_tokenizer() -> Qwen2Tokenizer:
    """A stand-in for Z-Image-Turbo's tokenizer (Qwen3's) with the released vocabulary: every whole word of CLIP's
    BPE as one token, fillers up to 151643 regular ids and Qwen3's 26 added tokens at their released ids
    151643-151668, so every id fits Qwen3's 151936 embedding rows. For weight-free builds of the real preset
    (`--weights random`, pre-flight)."""
    return zimage_tokenizer(CLIP_ALL_MERGES, regular_tokens=QWEN_REGULAR_TOKENS)


def qwen3_text_encoder(tokenizer: Any, width: int = _QWEN3_WIDTH, layers: int = 2) -> Qwen3Model:
    """A tiny Qwen3Model (the released text encoder's class) for `tokenizer`: GQA with 2 query heads per key/value
    head as Qwen3-4B (32 / 8), head dim 16, SwiGLU 2 x width; the pipeline reads its second-to-last hidden state."""
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_bias=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen3Model(config)


def build_tiny_zimage(transformer_config: dict[str, Any] | None = None) -> ZImagePipeline:
    """A random-weight Z-Image-Turbo-like pipeline in float32 on the CPU, all components in eval mode;
    `transformer_config` replaces the tiny transformer's. Two builds are bit-identical; the caller's RNG is left
    alone."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        tokenizer = zimage_tokenizer()
        text_encoder = qwen3_text_encoder(tokenizer)
        pipe = ZImagePipeline(
            transformer=ZImageTransformer2DModel(**(transformer_config or TINY_ZIMAGE_TRANSFORMER)),
            scheduler=FlowMatchEulerDiscreteScheduler(**_ZIMAGE_SCHEDULER),
            # FLUX.1's VAE (Z-Image-Turbo ships its layout): scale and shift
            vae=small_vae(_VAE_BLOCKS, _LATENT_CHANNELS, 8, scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
    return _eval(pipe)
