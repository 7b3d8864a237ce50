"""Tiny random-weight pipelines built offline from config: SD3, SD3.5 Medium and FLUX here, the shared text
encoders, tokenizers and VAE builders too; one module per newer family beside this one (`tiny/<family>.py`).

They exercise every code path of the real pipelines (two CLIP encoders, zero T5 embeddings or a real T5, CFG, the
guidance embedder, VAE scaling and shift, block structure) in well under a second on a CPU, so tests and smoke runs
need neither weights nor a network. Every build is seeded inside its own RNG fork: two builds are bit-identical and
the caller's global RNG is untouched.

The transformer configs below are plain data, and torch, diffusers and transformers are imported inside the builders,
so `harness.models.presets` can read these configs without importing torch.
"""

from __future__ import annotations

import gzip
import math
import string
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5Tokenizer

SEED = 0

# Text encoders. Two CLIP towers of different widths, like CLIP-L (768) and CLIP-G (1280) in SD3, so the pipeline's
# zero padding of their concatenation up to the T5 width is exercised. Every Linear that a compressor may touch in the
# transformers below has in_features divisible by 32 (group-wise quantisation needs it).
_CLIP_L_WIDTH = 32
_CLIP_G_WIDTH = 64
_CLIP_MAX_LENGTH = 77  # as the real CLIP tokenizers: ordinary prompts are never truncated
_CLIP_MERGES = 8000  # the 8000 most frequent BPE merges: common words are single tokens
_T5_WIDTH = 32

_VAE_BLOCKS = (8, 16, 32, 32)  # four blocks: a factor-8 VAE as in SD3 and FLUX, so 64x64 images give 8x8 latents
_LATENT_CHANNELS = 16

# SD3.5 Large in miniature: 4 joint blocks (the last one context_pre_only, as diffusers makes it), hidden 32.
TINY_SD3_TRANSFORMER: dict[str, Any] = {
    "sample_size": 8,  # latent size of a 64x64 image
    "patch_size": 2,
    "in_channels": _LATENT_CHANNELS,
    "num_layers": 4,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 128,  # T5 width; CLIP features (32 + 64) are zero-padded to it, as 2048 -> 4096 in SD3
    "caption_projection_dim": 32,
    "pooled_projection_dim": _CLIP_L_WIDTH + _CLIP_G_WIDTH,
    "out_channels": _LATENT_CHANNELS,
    "pos_embed_max_size": 32,  # images up to 256x256
    "qk_norm": "rms_norm",
}

# SD3.5 Medium in miniature: the first half of the blocks are dual-attention (attn2), as blocks 0-12 of 24.
TINY_SD35_MEDIUM_TRANSFORMER: dict[str, Any] = {**TINY_SD3_TRANSFORMER, "dual_attention_layers": (0, 1)}

# FLUX.1's block geometry in miniature (Chroma keeps it): 2 double-stream + 2 single-stream blocks, hidden 32.
TINY_FLUX_GEOMETRY: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 4 * _LATENT_CHANNELS,  # 2x2 packed latents
    "num_layers": 2,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": _T5_WIDTH,
    "axes_dims_rope": (4, 6, 6),  # sums to the head dim
}

# FLUX.1-dev in miniature: the geometry with CLIP's pooled embedding and the guidance embedding on.
TINY_FLUX_TRANSFORMER: dict[str, Any] = {**TINY_FLUX_GEOMETRY, "pooled_projection_dim": _CLIP_L_WIDTH,
                                         "guidance_embeds": True}


def build_tiny_sd3(transformer_config: dict[str, Any] | None = None) -> StableDiffusion3Pipeline:
    """A random-weight SD3.5-Large-like pipeline (CLIP x2, no T5) in float32 on the CPU; `transformer_config`
    replaces the tiny transformer's (for models of other configurations)."""
    return _build_sd3(transformer_config or TINY_SD3_TRANSFORMER)


def build_tiny_sd35_medium() -> StableDiffusion3Pipeline:
    """As `build_tiny_sd3`, with SD3.5 Medium's dual-attention blocks."""
    return _build_sd3(TINY_SD35_MEDIUM_TRANSFORMER)


def build_tiny_flux(transformer_config: dict[str, Any] | None = None) -> FluxPipeline:
    """A random-weight FLUX.1-dev-like pipeline (CLIP + T5) in float32 on the CPU; `transformer_config` replaces
    the tiny transformer's."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        text_encoder, tokenizer = clip_text_encoder(_CLIP_L_WIDTH, with_projection=False)
        text_encoder_2, tokenizer_2 = _t5()
        pipe = FluxPipeline(
            transformer=FluxTransformer2DModel(**(transformer_config or TINY_FLUX_TRANSFORMER)),
            scheduler=flux_scheduler(),
            vae=flux_vae(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
        )
    return _eval(pipe)


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1-dev's scheduler (FLUX.2-dev's too): shift 3 with the resolution-dependent shift on."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


def flux_vae() -> AutoencoderKL:
    """A small VAE with FLUX.1's scale and shift (Chroma ships FLUX.1's VAE)."""
    return small_vae(_VAE_BLOCKS, _LATENT_CHANNELS, 8, scaling_factor=0.3611, shift_factor=0.1159)


def _build_sd3(transformer_config: dict[str, Any]) -> StableDiffusion3Pipeline:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        text_encoder, tokenizer = clip_text_encoder(_CLIP_L_WIDTH, with_projection=True)
        text_encoder_2, tokenizer_2 = clip_text_encoder(_CLIP_G_WIDTH, with_projection=True)
        pipe = StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**transformer_config),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD3.5's scheduler
            # SD3's VAE scale and shift
            vae=small_vae(_VAE_BLOCKS, _LATENT_CHANNELS, 8, scaling_factor=1.5305, shift_factor=0.0609),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            text_encoder_3=None,  # the pipeline then feeds zeros of width joint_attention_dim
            tokenizer_3=None,
        )
    return _eval(pipe)


def _eval(pipe: Any) -> Any:
    """Put every model in eval mode, as `from_pretrained` does, so a fresh build and a reloaded one agree."""
    for component in pipe.components.values():
        if hasattr(component, "eval"):
            component.eval()
    return pipe


def small_vae(
    blocks: tuple[int, ...], latent_channels: int, norm_num_groups: int, scaling_factor: float, shift_factor: float
) -> AutoencoderKL:
    """An SD3/FLUX-style AutoencoderKL (no quant convs) with one layer per block; len(blocks) - 1 downsamplings."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=blocks,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=64,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,  # as the SD3 and FLUX VAEs
        use_post_quant_conv=False,
    )


CLIP_ALL_MERGES = 48894  # the real CLIP tokenizers' merges: 2 x 256 byte symbols + these + 2 specials = 49408


@lru_cache(maxsize=2)
def _clip_bpe(merge_count: int = _CLIP_MERGES) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """CLIP's vocabulary and merges, cut to the first `merge_count` merges, from the BPE file open_clip ships.

    The vocabulary is laid out as CLIP's: the 256 byte-level symbols, the same with "</w>", the merged tokens in rank
    order, then the two special tokens. The byte-level symbols make any text tokenizable.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : 1 + merge_count])  # line 0 is a version header
    symbols = list(bytes_to_unicode().values())
    vocab = (
        *symbols,
        *(s + "</w>" for s in symbols),
        *("".join(m) for m in merges),
        "<|startoftext|>",
        "<|endoftext|>",
    )
    return vocab, merges


def clip_tokenizer(max_length: int = _CLIP_MAX_LENGTH, merge_count: int = _CLIP_MERGES) -> CLIPTokenizer:
    """A CLIP tokenizer on CLIP's real BPE (all of it with `CLIP_ALL_MERGES`: the released tokenizers' vocabulary)."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe(merge_count)
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=list(merges),
                         model_max_length=max_length)


def t5_tokenizer(max_length: int = 512) -> T5Tokenizer:
    """A unigram tokenizer whose pieces are CLIP's words and word pieces, built offline in place of T5's.

    Whole CLIP words become word-initial pieces ("▁red"), other CLIP tokens word-internal ones, each scored by its
    merge rank; single ASCII characters are the costly fallback; anything else maps to <unk>, as in T5. Its
    vocabulary is smaller than T5's, so its ids fit any T5 encoder.
    """
    from transformers import T5Tokenizer

    vocab, _ = _clip_bpe()
    pieces: dict[str, float] = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -5.0}
    for rank, token in enumerate(vocab):
        stem = token.removesuffix("</w>")
        if stem.isascii() and stem.isalnum():
            piece = "▁" + stem if token.endswith("</w>") else stem
            pieces.setdefault(piece, -5.0 - math.log1p(rank))
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault(char, -20.0)
        pieces.setdefault("▁" + char, -20.0)
    return T5Tokenizer(vocab=list(pieces.items()), extra_ids=0, model_max_length=max_length)


def clip_text_encoder(
    width: int, *, with_projection: bool, layers: int = 2, max_length: int = _CLIP_MAX_LENGTH
) -> tuple[CLIPTextModel | CLIPTextModelWithProjection, CLIPTokenizer]:
    """A CLIP text tower of `width` (projection to `width` for SD3's pooled embedding) and its tokenizer.

    Random weights, CLIP's real BPE: the tiny models and the reference model's text encoders start from here.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer(max_length)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        projection_dim=width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # CLIP pools the hidden state at the first end-of-text token
        pad_token_id=tokenizer.pad_token_id,
    )
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_class(config), tokenizer


def _t5() -> tuple[T5EncoderModel, T5Tokenizer]:
    """A 2-layer T5 v1.1-style encoder and the stand-in T5 tokenizer (`t5_tokenizer`)."""
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=_T5_WIDTH,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5EncoderModel(config), tokenizer
