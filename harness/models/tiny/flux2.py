"""A tiny random-weight FLUX.2 [dev] pipeline (Flux2Pipeline), built offline from config, and the stand-in Mistral
tokenizer (a processor with FLUX.2's chat template) that the tiny and the weight-free real builds use.

Everything the real pipeline runs is here in miniature: the Mistral 3 text encoder of transformers' own class
(`Mistral3ForConditionalGeneration`, a tiny text tower of 30 layers so the pipeline's default hidden-state layers
(10, 20, 30) exist, and a tiny Pixtral vision tower it never runs for text), the processor's chat template with
FLUX.2's system message, the guidance-embedding transformer with shared modulation, and the FLUX.2 VAE with its
patchified BatchNorm latent statistics (seeded, not the identity, so the (de)normalisation is exercised).

The tokenizer is CLIP's real BPE (`harness.models.tiny._clip_bpe`) behind Mistral's (Tekken's) id layout: the 1000
control tokens first (`<unk>` 0, `<s>` 1, `</s>` 2, `[INST]` 3, `[/INST]` 4, `[IMG]` 10, `<pad>` 11, `[IMG_BREAK]`
12, `[IMG_END]` 13, `[SYSTEM_PROMPT]` 17, `[/SYSTEM_PROMPT]` 18, the rest `<SPECIAL_n>`), then the BPE vocabulary.
Its text pieces are not Tekken's (CLIP's lowercasing BPE), so token counts of a prompt differ from the released
tokenizer's; the pipeline pads and truncates to `max_sequence_length`, so the transformer's shapes do not.

The configs are plain data; torch, diffusers and transformers are imported inside the builders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.models.tiny import _CLIP_MERGES, CLIP_ALL_MERGES, SEED, _clip_bpe, _eval, flux_scheduler

if TYPE_CHECKING:
    from diffusers import Flux2Pipeline
    from transformers import PixtralProcessor

_TEXT_WIDTH = 32  # the tiny Mistral's hidden size; the pipeline stacks 3 of its layers: 96 = joint_attention_dim
_TEXT_LAYERS = 30  # Flux2Pipeline's default text_encoder_out_layers are (10, 20, 30): hidden states 0..30 must exist
_HIDDEN_STATE_LAYERS = 3
_LATENT_CHANNELS = 32  # AutoencoderKLFlux2's latent channels; 2x2 patchified: 128 transformer input channels
_VAE_BLOCKS = (8, 16, 32, 32)  # four blocks: a factor-8 VAE as the released one, so 64x64 images give 8x8 latents

RELEASED_VOCAB_SIZE = 131072  # Mistral Small 3.x (Tekken) vocabulary, text_config.vocab_size of FLUX.2-dev's encoder
CONTROL_TOKENS = 1000  # Tekken reserves ids 0-999 for control tokens
_NAMED_CONTROL_TOKENS = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]", 6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]",
    13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]",
}
IMAGE_TOKEN_ID = 10
BOS_ID, EOS_ID, PAD_ID = 1, 2, 11

# Mistral Small 3.x's chat template in substance (as the processor of FLUX.2-dev's tokenizer folder applies it): BOS,
# the system message in [SYSTEM_PROMPT] tags, each user turn in [INST] tags with its text blocks (an image block
# becomes [IMG], which the processor expands), assistant turns ended by EOS. Messages may carry a string or a list of
# content blocks, as `diffusers.pipelines.flux2.pipeline_flux2.format_input` gives them.
CHAT_TEMPLATE = (
    "{%- macro text_of(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for block in content -%}"
    "{%- if block['type'] == 'text' -%}{{ block['text'] }}"
    "{%- elif block['type'] in ['image', 'image_url'] -%}[IMG]"
    "{%- else -%}{{ raise_exception('Only text and image blocks are supported in message content!') }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{{- bos_token -}}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system_message = text_of(messages[0]['content']) -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_message = 'You are a helpful assistant.' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' -}}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}{{- '[INST]' + text_of(message['content']) + '[/INST]' -}}"
    "{%- elif message['role'] == 'system' -%}"
    "{{- '[SYSTEM_PROMPT]' + text_of(message['content']) + '[/SYSTEM_PROMPT]' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- text_of(message['content']) + eos_token -}}"
    "{%- else -%}{{- raise_exception('Only user, system and assistant roles are supported!') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# FLUX.2 [dev] in miniature: 2 double-stream + 6 single-stream blocks, hidden 32 (2 heads of 16), guidance embedding
# on, as the released config (Flux2Transformer2DModel's defaults) apart from the sizes. Every Linear's in_features is
# a multiple of 32 (group-wise quantisation needs it): 32, 96 (context, ff out), 128 (latents, single out), 256.
TINY_FLUX2_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 4 * _LATENT_CHANNELS,  # 2x2 patchified VAE latents
    "num_layers": 2,
    "num_single_layers": 6,  # >= 2 single blocks left after a default depth cut (the step caches hook those)
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": _HIDDEN_STATE_LAYERS * _TEXT_WIDTH,  # three stacked hidden states of the text encoder
    "timestep_guidance_channels": 256,
    "mlp_ratio": 3.0,
    "axes_dims_rope": (4, 4, 4, 4),  # (t, h, w, l), sums to the head dim
    "rope_theta": 2000,
    "guidance_embeds": True,
}

# The tiny Mistral 3 (text: Mistral decoder; vision: Pixtral, never run for text prompts).
TINY_MISTRAL3_TEXT: dict[str, Any] = {
    "model_type": "mistral",
    "hidden_size": _TEXT_WIDTH,
    "intermediate_size": 64,
    "num_hidden_layers": _TEXT_LAYERS,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "rope_theta": 1e9,
    "sliding_window": None,
    "hidden_act": "silu",
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "pad_token_id": PAD_ID,
}
TINY_MISTRAL3_VISION: dict[str, Any] = {
    "model_type": "pixtral",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "head_dim": 16,
    "image_size": 64,
    "patch_size": 8,
    "num_channels": 3,
}


def build_tiny_flux2(transformer_config: dict[str, Any] | None = None) -> Flux2Pipeline:
    """A random-weight FLUX.2-dev-like pipeline in float32 on the CPU; `transformer_config` replaces the tiny
    transformer's."""
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        processor = mistral_processor()
        text_encoder = Mistral3ForConditionalGeneration(Mistral3Config(
            text_config={**TINY_MISTRAL3_TEXT, "vocab_size": len(processor.tokenizer)},
            vision_config=dict(TINY_MISTRAL3_VISION),
            image_token_index=IMAGE_TOKEN_ID,
            spatial_merge_size=2,
            projector_hidden_act="gelu",
            multimodal_projector_bias=False,
            vision_feature_layer=-1,
            tie_word_embeddings=False,  # as the released Mistral Small 3.x
        ))
        transformer = Flux2Transformer2DModel(**(transformer_config or TINY_FLUX2_TRANSFORMER))
        vae = AutoencoderKLFlux2(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(_VAE_BLOCKS),
            up_block_types=("UpDecoderBlock2D",) * len(_VAE_BLOCKS),
            block_out_channels=_VAE_BLOCKS,
            layers_per_block=1,
            latent_channels=_LATENT_CHANNELS,
            norm_num_groups=8,
            sample_size=64,
        )
        # the patchified latents' running statistics, which the pipeline undoes before decoding: seeded values
        # (a fresh BatchNorm's are 0 and 1, which would hide a missing or doubled normalisation)
        channels = vae.bn.running_mean.numel()
        vae.bn.running_mean.copy_(0.1 * torch.randn(channels))
        vae.bn.running_var.copy_(0.5 + torch.rand(channels))
        pipe = Flux2Pipeline(
            transformer=transformer,
            scheduler=flux_scheduler(),  # as FLUX.2-dev's (the pipeline passes its empirical mu)
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=processor,
        )
    return _eval(pipe)


def mistral_processor(vocab_size: int | None = None, max_length: int = 512) -> PixtralProcessor:
    """The PixtralProcessor FLUX.2's pipeline calls its `tokenizer`, built offline: a stand-in Mistral tokenizer
    (see the module docstring) with the chat template, and a Pixtral image processor.

    None `vocab_size`: the tiny vocabulary (1000 control tokens + CLIP's 8000 most frequent merges); else the
    tokenizer holds exactly that many ids (all of CLIP's BPE, then unused filler tokens), e.g. RELEASED_VOCAB_SIZE
    for weight-free builds of the real model, so every id fits the released embedding.
    """
    from transformers import PixtralImageProcessor, PixtralProcessor

    tokenizer = mistral_tokenizer(vocab_size, max_length)
    image_processor = PixtralImageProcessor(patch_size={"height": 14, "width": 14}, size={"longest_edge": 1540})
    return PixtralProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                            spatial_merge_size=2, chat_template=CHAT_TEMPLATE)


def released_processor(max_length: int = 512) -> PixtralProcessor:
    """The stand-in processor with the released vocabulary size (131072 ids), for `--weights random` and other
    weight-free builds of FLUX.2-dev."""
    return mistral_processor(RELEASED_VOCAB_SIZE, max_length)


def mistral_tokenizer(vocab_size: int | None = None, max_length: int = 512) -> Any:
    """The stand-in Mistral tokenizer alone (a transformers fast tokenizer; see `mistral_processor`)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    merge_count = _CLIP_MERGES if vocab_size is None else CLIP_ALL_MERGES
    clip_vocab, merges = _clip_bpe(merge_count)
    pieces = [t for t in clip_vocab if t not in ("<|startoftext|>", "<|endoftext|>")]
    controls = [_NAMED_CONTROL_TOKENS.get(i, f"<SPECIAL_{i}>") for i in range(CONTROL_TOKENS)]
    vocab = {token: i for i, token in enumerate([*controls, *pieces])}
    if vocab_size is not None:
        if vocab_size < len(vocab):
            raise ValueError(f"vocab_size {vocab_size} is smaller than the stand-in's {len(vocab)} tokens")
        vocab.update({f"<unused_{i}>": i for i in range(len(vocab), vocab_size)})  # never produced by the BPE
    backend = Tokenizer(BPE(vocab=vocab, merges=list(merges), continuing_subword_prefix="", end_of_word_suffix="</w>",
                            fuse_unk=False, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in controls])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=max_length)
