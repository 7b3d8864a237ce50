"""The modules an ablation swaps in for a block or a sub-component (`harness.models.surgery`), following
HierarchicalPrune's release:
- whole block: both token streams pass through unchanged;
- an AdaLN modulation (`w_norm1`, `w_norm1_context`, `w_norm`): the parameter-free LayerNorm stays, shifts and
  scales become 0 and gates 1;
- `attn` (and `attn2` where present): returns its input, the normalised tokens, not zero;
- `ff`, `ff_context`: return their input;
- `proj_mlp_out` (FLUX single blocks): the MLP branch outputs zeros, so `proj_out` carries attention alone.
Every stand-in is a `StandIn`, so a second skip of the same module is caught. A family whose blocks hold other
modulation or attention layers builds its own stand-ins on `StandIn` (`Family.stand_in`).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_processor import Attention
from diffusers.models.normalization import (
    AdaLayerNormContinuous,
    AdaLayerNormZero,
    AdaLayerNormZeroSingle,
    SD35AdaLayerNormZeroX,
)
from torch import nn


class StandIn(nn.Module):
    """Base of the modules `skip` swaps in (so a second skip of the same module is caught)."""


class Identity(StandIn):
    """A feed-forward that returns its input."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x


class PassThroughBlock(StandIn):
    """A skipped block: returns (encoder_hidden_states, hidden_states) unchanged, as every block's caller expects."""

    def __init__(self, context_pre_only: bool) -> None:
        super().__init__()
        self.context_pre_only = context_pre_only  # read by SD3's controlnet branch

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                *args: Any, **kwargs: Any) -> tuple[torch.Tensor | None, torch.Tensor]:
        return encoder_hidden_states, hidden_states


class FixedModulation(StandIn):
    """An AdaLN layer without its modulation: the parameter-free LayerNorm, shift and scale 0, gates 1."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.norm = original.norm
        if isinstance(original, SD35AdaLayerNormZeroX):
            self.layout = "zero-x"
        elif isinstance(original, AdaLayerNormZeroSingle):
            self.layout = "single"
        elif isinstance(original, AdaLayerNormZero):
            self.layout = "zero"
        else:
            self.layout = "continuous"

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        normed = self.norm(x)
        if self.layout == "continuous":
            return normed
        ones = x.new_ones(x.shape[0], x.shape[-1])
        zeros = x.new_zeros(x.shape[0], x.shape[-1])
        if self.layout == "single":
            return normed, ones
        if self.layout == "zero":
            return normed, ones, zeros, zeros, ones
        return normed, ones, zeros, zeros, ones, normed, ones


class PassThroughAttention(StandIn):
    """Attention that returns its input tokens (image stream, and the text stream when one is given)."""

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        return hidden_states if encoder_hidden_states is None else (hidden_states, encoder_hidden_states)


class Zeros(StandIn):
    """A Linear layer's output replaced by zeros of the same shape (GELU(0) = 0, so the branch contributes nothing)."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.out_features)



class PassThroughStream(StandIn):
    """A skipped block whose loop takes back one stream (single-stream blocks of Chroma, Z-Image): returns it."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class ConstantModulation(StandIn):
    """A modulation layer (SiLU + Linear) that a block chunks itself, without its modulation: each of
    len(`chunks`) equal chunks of its `out_features` outputs holds that chunk's constant, e.g. (shift, scale,
    gate) = (0, 0, 1) for a block computing x * (1 + scale) + shift and adding gate * output."""

    def __init__(self, out_features: int, chunks: tuple[float, ...]) -> None:
        super().__init__()
        if out_features % len(chunks):
            raise ValueError(f"{out_features} outputs do not split into {len(chunks)} chunks")
        self.out_features, self.chunks = out_features, chunks

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        width = self.out_features // len(self.chunks)
        return torch.cat([embedding.new_full((*embedding.shape[:-1], width), value) for value in self.chunks], -1)


def default_stand_in(module: nn.Module) -> nn.Module:
    """The stand-in for a sub-component's module, by what the module is (diffusers' AdaLN and attention layers,
    Linear layers, quantised ones too; anything else is taken for a feed-forward)."""
    if isinstance(module, (AdaLayerNormZero, SD35AdaLayerNormZeroX, AdaLayerNormZeroSingle, AdaLayerNormContinuous)):
        return FixedModulation(module)
    if isinstance(module, (Attention, AttentionModuleMixin)):  # SD3's Attention, FluxAttention
        return PassThroughAttention()
    if isinstance(module, nn.Linear) or hasattr(module, "out_features"):  # proj_mlp, also when quantised
        return Zeros(module.out_features)
    return Identity()  # FeedForward
