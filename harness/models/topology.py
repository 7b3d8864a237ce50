"""Which blocks a diffusion transformer has, in execution order, and which submodules make up each block's components.

Compressors rank, remove, freeze or distil blocks and sub-components by name (HierarchicalPrune's `w_norm1`, `attn`,
`ff`, ...). This module is the one place that maps those names onto diffusers' SD3 and FLUX module layouts. It reads
only module structure, so it works on meta-device models too (architectures of the real presets, no weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
from diffusers.models.attention import JointTransformerBlock
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

from harness.models.footprint import parameter_count

# Component name -> the block attributes it covers. Attributes that are None or absent in a block are skipped
# (`attn2` outside dual-attention blocks).
_COMPONENT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "w_norm1": ("norm1",),
    "w_norm1_context": ("norm1_context",),
    "attn": ("attn", "attn2"),
    "ff": ("ff", "norm2"),
    "ff_context": ("ff_context", "norm2_context"),
    "w_norm": ("norm",),
    "proj_mlp_out": ("proj_mlp", "proj_out"),
}

_DOUBLE_STREAM = ("w_norm1", "w_norm1_context", "attn", "ff", "ff_context")
_KIND_COMPONENTS: dict[str, tuple[str, ...]] = {
    "joint": _DOUBLE_STREAM,
    "joint-dual": _DOUBLE_STREAM,
    "joint-last": _DOUBLE_STREAM[:-1],  # context_pre_only: the text stream ends here, so there is no ff_context
    "flux-double": _DOUBLE_STREAM,
    "flux-single": ("w_norm", "attn", "proj_mlp_out"),
}

_SUPPORTED = "SD3Transformer2DModel, FluxTransformer2DModel"


@dataclass(frozen=True)
class BlockInfo:
    """One transformer block: where it sits, what kind it is, and which named components it has."""

    index: int  # position in execution order over all block lists
    path: str  # module path inside the transformer, e.g. "transformer_blocks.3", "single_transformer_blocks.0"
    kind: str  # "joint" | "joint-dual" (has attn2) | "joint-last" (context_pre_only) | "flux-double" | "flux-single"
    components: tuple[str, ...]
    num_parameters: int  # footprint.parameter_count: a quantised block counts its unquantised parameters


def block_topology(transformer: torch.nn.Module) -> list[BlockInfo]:
    """All blocks of an SD3 or FLUX transformer in execution order (FLUX: double-stream blocks, then single-stream)."""
    if isinstance(transformer, SD3Transformer2DModel):
        lists = [("transformer_blocks", JointTransformerBlock)]
    elif isinstance(transformer, FluxTransformer2DModel):
        lists = [
            ("transformer_blocks", FluxTransformerBlock),
            ("single_transformer_blocks", FluxSingleTransformerBlock),
        ]
    else:
        raise ValueError(f"unsupported transformer type {type(transformer).__name__}; supported: {_SUPPORTED}")
    blocks: list[BlockInfo] = []
    for list_name, block_class in lists:
        for position, block in enumerate(getattr(transformer, list_name)):
            path = f"{list_name}.{position}"
            if not isinstance(block, block_class):
                raise ValueError(f"block '{path}' is a {type(block).__name__}, expected a {block_class.__name__}")
            kind = _kind(block)
            blocks.append(
                BlockInfo(
                    index=len(blocks),
                    path=path,
                    kind=kind,
                    components=_KIND_COMPONENTS[kind],
                    num_parameters=parameter_count(block),
                )
            )
    return blocks


def component_modules(transformer: torch.nn.Module, block: BlockInfo, component: str) -> dict[str, torch.nn.Module]:
    """The submodules making up `component` of `block`, keyed by their path inside the transformer.

    The paths suit `transformer.get_submodule` / `set_submodule`, so a compressor can swap a component for an identity
    and put it back.
    """
    if component not in block.components:
        raise ValueError(
            f"unknown component '{component}' for {block.kind} block '{block.path}'; "
            f"valid components: {', '.join(block.components)}"
        )
    module = transformer.get_submodule(block.path)
    return {
        f"{block.path}.{attribute}": getattr(module, attribute)
        for attribute in _COMPONENT_ATTRIBUTES[component]
        if getattr(module, attribute, None) is not None
    }


def _kind(block: torch.nn.Module) -> str:
    if isinstance(block, FluxSingleTransformerBlock):
        return "flux-single"
    if isinstance(block, FluxTransformerBlock):
        return "flux-double"
    if block.context_pre_only:
        return "joint-last"
    return "joint-dual" if block.attn2 is not None else "joint"
