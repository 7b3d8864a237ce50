"""A tiny random-weight Chroma pipeline (ChromaPipeline) built offline from config, for tests and smoke runs.

Chroma1-HD in miniature: 2 double-stream + 2 single-stream blocks of hidden 32, the approximator that computes every
block's modulation (2 layers of width 64), the T5 encoder and stand-in T5 tokenizer the FLUX builder uses
(`harness.models.tiny._t5`: transformers' T5EncoderModel, the released encoder's class, and a unigram tokenizer with
<pad> and </s>, built from an in-memory vocabulary), FLUX.1's VAE layout with its scale and shift, and Chroma1-HD's
scheduler (static shift 3). A 64x64 image is 4x4 packed latent tokens. Chroma's tokenizer is T5's, so weight-free
builds of the real preset use `harness.models.tiny.t5_tokenizer` as every T5 pipeline does.

The config is plain data; torch and diffusers are imported inside the builder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.models.tiny import SEED, TINY_FLUX_GEOMETRY, _eval, _t5, flux_vae

if TYPE_CHECKING:
    from diffusers import ChromaPipeline

# Every Linear of the blocks and the approximator has in_features divisible by 32 (group-wise quantisation): hidden
# 32 (2 heads of 16), MLP 128, single blocks' proj_out 32 + 128, approximator 64 -> 64 -> 32.
TINY_CHROMA_TRANSFORMER: dict[str, Any] = {
    **TINY_FLUX_GEOMETRY,
    "num_single_layers": 6,  # >= 2 single blocks left after a default depth cut (the step caches hook those)
    "approximator_num_channels": 64,  # 16 timestep + 16 guidance + 32 index-embedding channels, as released
    "approximator_hidden_dim": 64,
    "approximator_layers": 2,
}

# Chroma1-HD's scheduler/scheduler_config.json (see the preset): static shift 3, no resolution-dependent shift
_CHROMA_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": False,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def build_tiny_chroma(transformer_config: dict[str, Any] | None = None) -> ChromaPipeline:
    """A random-weight Chroma1-HD-like pipeline (T5 only) in float32 on the CPU, all components in eval mode;
    `transformer_config` replaces the tiny transformer's. Two builds are bit-identical; the caller's RNG is left
    alone."""
    import torch
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        text_encoder, tokenizer = _t5()
        pipe = ChromaPipeline(
            transformer=ChromaTransformer2DModel(**(transformer_config or TINY_CHROMA_TRANSFORMER)),
            scheduler=FlowMatchEulerDiscreteScheduler(**_CHROMA_SCHEDULER),
            vae=flux_vae(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
    return _eval(pipe)
