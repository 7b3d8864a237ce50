"""A tiny random-weight Z-Image pipeline (ZImagePipeline) built offline from config, for tests and smoke runs, and
the stand-in Qwen tokenizers.

Z-Image-Turbo in miniature: 2 noise-refiner + 2 context-refiner + 4 main ZImageTransformerBlocks of hidden 96 (3
heads of 32, RoPE axes 8/12/12 as the released 32/48/48 over 4), a 2-layer Qwen3 text encoder of width 32 (the
released encoder's class, `transformers.Qwen3Model`, from a tiny `Qwen3Config`) with a byte-level BPE `Qwen2Tokenizer`
built from an in-memory vocabulary (CLIP's most frequent words as word-initial and bare merge chains, Qwen's 26
special tokens, and a Qwen3 chat template that the pipeline's `apply_chat_template(..., enable_thinking=True)` needs),
FLUX.1's VAE layout with its scale and shift (as Z-Image-Turbo ships it), and Z-Image-Turbo's scheduler (static shift
3). A 64x64 image is 8x8 latents, 4x4 = 16 patch tokens (padded by the transformer to 32).

The transformer config is plain data; torch, diffusers and transformers are imported inside the builders.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from harness.models.tiny import _LATENT_CHANNELS, _VAE_BLOCKS, CLIP_ALL_MERGES, SEED, _clip_bpe, _eval, small_vae

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
    "n_layers": 4,
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

# -- the Qwen tokenizers -------------------------------------------------------------------------------------------

# Qwen2/Qwen3's added tokens, in the released order, right after the byte-level BPE vocabulary (ids 151643-151668 in
# the released tokenizer), with whether each is special (the tool and think tags are not).
_QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", True), ("<|fim_middle|>", True), ("<|fim_suffix|>", True), ("<|fim_pad|>", True),
    ("<|repo_name|>", True), ("<|file_sep|>", True), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)
QWEN_BPE_TOKENS = 151643  # the released Qwen2/Qwen3 tokenizer's BPE vocabulary; len(tokenizer) = 151669 with the above
_TINY_WORDS = 2000  # CLIP's most frequent words that become single tokens in the tiny tokenizer
_TEMPLATE_WORDS = ("user", "assistant", "system")  # the chat template's role names: single tokens, as in Qwen's

# Qwen3's chat template for plain text turns (system, user, assistant; no tools, no reasoning content): what
# ZImagePipeline renders is "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"; enable_thinking=False
# would append Qwen3's empty think block.
QWEN3_CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or message.role == 'assistant' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


@lru_cache(maxsize=2)
def _byte_level_bpe(word_count: int | None, size: int | None) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """A byte-level BPE (GPT-2 / Qwen byte symbols) whose merges spell CLIP's most frequent words: each word once with
    the space symbol "Ġ" in front (as Qwen's pre-tokenizer leaves a word after a space) and once bare (a word after a
    newline, or the first of a text), each as a left-to-right chain of merges. The word-initial chains rank first, so
    a word of the list after a space is always one token (a bare one may split where chains compete); every other
    text falls back to byte symbols. `size`: filled
    up to this many tokens with unreachable `<|unused_N|>` entries (the released vocabulary's size)."""
    from open_clip.tokenizer import bytes_to_unicode

    vocab, _ = _clip_bpe() if word_count is not None else _clip_bpe(CLIP_ALL_MERGES)
    words = [token.removesuffix("</w>") for token in vocab if token.endswith("</w>")]
    words = [w for w in words if len(w) > 1 and w.isascii() and w.isalpha()][:word_count]
    # the chat template's role names first: their bare chains then outrank every other bare merge, so they are one
    # token each, as in Qwen's vocabulary
    words = [*_TEMPLATE_WORDS, *(w for w in words if w not in _TEMPLATE_WORDS)]
    tokens = list(bytes_to_unicode().values())  # the 256 byte symbols
    known = set(tokens)
    chains: list[tuple[str, str]] = []
    for prefix in ("Ġ", ""):
        for word in words:
            current = prefix or word[0]
            for char in word[0 if prefix else 1:]:
                merged = current + char
                if merged not in known:
                    known.add(merged)
                    tokens.append(merged)
                    chains.append((current, char))
                current = merged
    if size is not None:
        if len(tokens) > size:
            raise ValueError(f"{len(tokens)} BPE tokens do not fit a vocabulary of {size}")
        tokens += [f"<|unused_{i}|>" for i in range(size - len(tokens))]
    return tuple(tokens), tuple(chains)


def qwen_tokenizer(word_count: int | None = _TINY_WORDS, size: int | None = None,
                   model_max_length: int = 131072) -> Qwen2Tokenizer:
    """A Qwen2Tokenizer (byte-level BPE, Qwen's pre-tokenizer, its 26 added tokens after the BPE vocabulary,
    <|im_end|> as end of sequence and <|endoftext|> as padding, right padding, Qwen3's chat template) built offline
    from `_byte_level_bpe(word_count, size)`. None words: every whole word of CLIP's full BPE."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    tokens, merges = _byte_level_bpe(word_count, size)
    vocab = {token: i for i, token in enumerate(tokens)}
    for token, _ in _QWEN_ADDED_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=list(merges), unk_token=None, bos_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=model_max_length,
                               padding_side="right", chat_template=QWEN3_CHAT_TEMPLATE)
    tokenizer.add_tokens([AddedToken(token, special=special, normalized=False)
                          for token, special in _QWEN_ADDED_TOKENS])
    return tokenizer


def released_qwen_tokenizer() -> Qwen2Tokenizer:
    """A stand-in for Z-Image-Turbo's tokenizer (Qwen3's) with the released vocabulary: 151643 BPE tokens (every whole
    word of CLIP's BPE as one token, then unreachable fillers) and Qwen's 26 added tokens at their released ids
    151643-151668, so len(tokenizer) = 151669 as released and every id fits Qwen3's 151936 embedding rows. For
    weight-free builds of the real preset (`--weights random`, `harness estimate`)."""
    return qwen_tokenizer(word_count=None, size=QWEN_BPE_TOKENS)


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
        tokenizer = qwen_tokenizer()
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
