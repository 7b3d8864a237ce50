"""A tiny random-weight Qwen-Image pipeline (QwenImagePipeline) built offline from config, for tests and smoke runs;
and the stand-in Qwen2 tokenizer with the released vocabulary size, for weight-free builds of the real preset.

Qwen-Image in miniature: 4 dual-stream MMDiT blocks of hidden 32 (2 heads of 16), transformers' own
Qwen2_5_VLForConditionalGeneration (the released text encoder's class) with a 2-layer text model of width 32 and a
1-layer vision tower that the text-to-image pipeline never runs, the pipeline's own VAE class
(AutoencoderKLQwenImage: causal 3D convolutions, 8x spatial compression, 16 latent channels normalised by the
released per-channel means and standard deviations), and the released scheduler (exponential, resolution-dependent
shift). A 64x64 image is 8x8 latents, 4x4 packed tokens of 64 channels.

The tokenizer is a byte-level BPE laid out as Qwen2's (the same pre-tokenizer regex and byte alphabet, the 22 added
tokens after the regular ones, <|endoftext|> as pad): its merges make each word of the pipeline's prompt template,
and the words of CLIP's BPE (`harness.models.tiny._clip_bpe`), a single token, so the template's system prefix is
the 34 tokens the pipeline drops (`prompt_template_encode_start_idx`), as with the released tokenizer.

Configs are plain data; torch, diffusers, transformers and tokenizers are imported inside the builders.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from harness.models.tiny import _CLIP_MERGES, CLIP_ALL_MERGES, SEED, _clip_bpe, _eval

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

# Qwen2's added tokens, in id order after the regular vocabulary (151643 ids in the released one), and whether each
# is special (Qwen2.5-VL's tokenizer_config.json: the tool-call and fill-in-the-middle ones are not)
_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
)
QWEN2_REGULAR_TOKENS = 151643  # the released vocab.json: ids below <|endoftext|>
QWEN2_VOCAB_SIZE = 152064  # the released text encoder's embedding rows (the tokenizer's 151665 ids, padded)

# QwenImagePipeline.__init__'s prompt_template_encode (diffusers 0.42), whose words the tiny BPE makes single tokens
_PROMPT_TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
                    "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
                    "<|im_end|>\n<|im_start|>assistant\n")

# ChatML, as Qwen2's tokenizers carry it (text-only messages)
_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


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
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token, _ in _ADDED_TOKENS}
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
    """A Qwen2Tokenizer on an in-memory byte-level BPE: the 256 byte symbols, merges making the pipeline template's
    words and CLIP's first `merge_count` merges' words (each with and without a leading space) single tokens, then
    Qwen2's 22 added tokens. `regular_tokens` pads the regular vocabulary with unreachable filler entries up to
    that many ids (the released 151643: `stand_in_qwen2_tokenizer`)."""
    from transformers import AddedToken, Qwen2Tokenizer

    vocab_tokens, merges = _byte_level_bpe(merge_count)
    vocab = {token: i for i, token in enumerate(vocab_tokens)}
    if regular_tokens is not None:
        if regular_tokens < len(vocab):
            raise ValueError(f"{regular_tokens} regular tokens cannot hold the BPE's {len(vocab)}")
        vocab.update({f"<|filler_{i}|>": i for i in range(len(vocab), regular_tokens)})
    first_added = len(vocab)
    vocab.update({token: first_added + i for i, (token, _) in enumerate(_ADDED_TOKENS)})
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",  # Qwen2.5-VL-Instruct's
        pad_token="<|endoftext|>",
        errors="replace",
        add_prefix_space=False,
        model_max_length=131072,  # Qwen2.5-VL's
        chat_template=_CHAT_TEMPLATE,
    )
    tokenizer.add_tokens([AddedToken(token, special=special, normalized=False) for token, special in _ADDED_TOKENS
                          if token not in tokenizer.get_added_vocab()])
    return tokenizer


def stand_in_qwen2_tokenizer() -> Qwen2Tokenizer:
    """A stand-in for the released Qwen2.5-VL tokenizer, built offline: all of CLIP's words as single tokens,
    filler up to the released 151643 regular ids, then the added tokens at the released ids (151643-151664), so
    its ids fit the released text encoder (152064 embedding rows) and its special ids match the released config."""
    return qwen2_tokenizer(CLIP_ALL_MERGES, regular_tokens=QWEN2_REGULAR_TOKENS)


@lru_cache(maxsize=2)
def _byte_level_bpe(merge_count: int) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(vocabulary in id order, merges in rank order) of a byte-level BPE whose words are each one token.

    Words are added in order; each is split as the merges so far split it, and merges joining those pieces left to
    right are appended. Later merges rank after all earlier ones, so they never change how an earlier word is
    split: every word ends as one token. Words are byte-level chunks as Qwen2's pre-tokenizer cuts text.
    """
    import re

    from open_clip.tokenizer import bytes_to_unicode
    from tokenizers import Regex, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    words: list[str] = []
    special = "|".join(re.escape(token) for token, _ in _ADDED_TOKENS)
    for segment in re.split(special, _PROMPT_TEMPLATE.format("")):  # added tokens split text before the BPE
        words += [chunk for chunk, _ in pre_tokenizer.pre_tokenize_str(segment)]
    clip_vocab, _ = _clip_bpe(merge_count)
    space = bytes_to_unicode()[ord(" ")]  # "Ġ"
    for token in clip_vocab:
        stem = token.removesuffix("</w>")
        if token.endswith("</w>") and len(stem) > 1 and stem.isascii() and stem.isalpha():
            words += [space + stem, stem]

    vocab: list[str] = list(bytes_to_unicode().values())
    known = set(vocab)
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):  # first occurrence order
        pieces = _split(word, ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(ranks)
            merged = pieces[0] + pieces[1]
            if merged not in known:
                known.add(merged)
                vocab.append(merged)
            pieces = [merged, *pieces[2:]]
    return tuple(vocab), tuple(sorted(ranks, key=ranks.__getitem__))


def _split(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """How byte-level BPE with merge `ranks` splits `word`: repeatedly join the lowest-ranked adjacent pair."""
    pieces = list(word)
    while len(pieces) > 1:
        best = min(range(len(pieces) - 1), key=lambda i: ranks.get((pieces[i], pieces[i + 1]), len(ranks) + i))
        if (pieces[best], pieces[best + 1]) not in ranks:
            break
        pieces[best : best + 2] = [pieces[best] + pieces[best + 1]]
    return pieces
