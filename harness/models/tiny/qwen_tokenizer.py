"""Offline stand-ins for Qwen's tokenizers: Qwen2.5-VL's (Qwen-Image's text encoder) and Qwen3's (Z-Image's).

A `Qwen2Tokenizer` on a byte-level BPE built in memory: the 256 byte symbols, then merges that make each word of
the pipeline's prompt template and of CLIP's vocabulary (with and without a leading space, as Qwen's pre-tokenizer
cuts text) one token, then the release's added tokens after the regular vocabulary, at the released ids when the
regular vocabulary is padded to the released size (`QWEN_REGULAR_TOKENS`). Words outside the list fall back to
byte symbols, so any text tokenizes. Plain data and imports inside the functions: importing this module is light.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from harness.models.tiny import _CLIP_MERGES, _clip_bpe

if TYPE_CHECKING:
    from transformers import Qwen2Tokenizer

QWEN_REGULAR_TOKENS = 151643  # the released vocab.json of Qwen2, Qwen2.5-VL and Qwen3: ids below <|endoftext|>

AddedTokens = tuple[tuple[str, bool], ...]  # (token, special), in id order after the regular vocabulary
_COMMON_ADDED = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
)
_FILL_IN_THE_MIDDLE = ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
                       "<|file_sep|>")
# Qwen2.5-VL's tokenizer_config.json: 22 added tokens, the fill-in-the-middle ones not special (151643-151664)
QWEN2_5_VL_ADDED_TOKENS: AddedTokens = (*_COMMON_ADDED, *((token, False) for token in _FILL_IN_THE_MIDDLE))
# Qwen3's: those 22 with the fill-in-the-middle ones special, then the tool-response and think tags (151643-151668)
QWEN3_ADDED_TOKENS: AddedTokens = (
    *_COMMON_ADDED, *((token, True) for token in _FILL_IN_THE_MIDDLE),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
)

# ChatML, as Qwen2's tokenizers carry it (text-only messages)
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Qwen3's chat template for plain text turns (system, user, assistant; no tools, no reasoning content);
# enable_thinking=False appends Qwen3's empty think block
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


def qwen_tokenizer(added_tokens: AddedTokens, chat_template: str, template_text: str = "",
                   merge_count: int = _CLIP_MERGES, regular_tokens: int | None = None) -> Qwen2Tokenizer:
    """The stand-in: `template_text`'s words (the pipeline's prompt template) and the words of CLIP's first
    `merge_count` merges as single tokens, <|im_end|> ending a sequence and <|endoftext|> padding it on the right.
    `regular_tokens` pads the regular vocabulary with unreachable fillers up to that many ids (the released
    `QWEN_REGULAR_TOKENS`), so the added tokens take their released ids."""
    from transformers import AddedToken, Qwen2Tokenizer

    vocab_tokens, merges = _byte_level_bpe(tuple(token for token, _ in added_tokens), template_text, merge_count)
    vocab = {token: i for i, token in enumerate(vocab_tokens)}
    if regular_tokens is not None:
        if regular_tokens < len(vocab):
            raise ValueError(f"{regular_tokens} regular tokens cannot hold the BPE's {len(vocab)}")
        vocab.update({f"<|filler_{i}|>": i for i in range(len(vocab), regular_tokens)})
    first_added = len(vocab)
    vocab.update({token: first_added + i for i, (token, _) in enumerate(added_tokens)})
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=list(merges), unk_token=None, bos_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>", errors="replace",
                               add_prefix_space=False, padding_side="right", model_max_length=131072,
                               chat_template=chat_template)
    tokenizer.add_tokens([AddedToken(token, special=special, normalized=False) for token, special in added_tokens
                          if token not in tokenizer.get_added_vocab()])
    return tokenizer


@lru_cache(maxsize=4)
def _byte_level_bpe(added: tuple[str, ...], template_text: str,
                    merge_count: int) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(vocabulary in id order, merges in rank order) of a byte-level BPE whose words are each one token.

    Words are added in order; each is split as the merges so far split it, and merges joining those pieces left to
    right are appended. Later merges rank after all earlier ones, so they never change how an earlier word is
    split: every word ends as one token. Words are byte-level chunks as Qwen2's pre-tokenizer cuts text.
    """
    from open_clip.tokenizer import bytes_to_unicode
    from tokenizers import Regex, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    words: list[str] = []
    for segment in re.split("|".join(map(re.escape, added)), template_text):  # added tokens split text first
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
