"""Which blocks a diffusion transformer has, in execution order, and which submodules make up each block's components.

Compressors rank, remove, freeze or distil blocks and sub-components by name (HierarchicalPrune's `w_norm1`, `attn`,
`ff`, ...). This module walks a transformer as its family (`harness.models.families`) lays it out: which block lists
hold which blocks, of which kinds, with which components. It reads only module structure, so it works on meta-device
models too (architectures of the real presets, no weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.models.families import family_of_transformer
from harness.models.footprint import parameter_count


@dataclass(frozen=True)
class BlockInfo:
    """One transformer block: where it sits, what kind it is, and which named components it has."""

    index: int  # position in execution order over all block lists
    path: str  # module path inside the transformer, e.g. "transformer_blocks.3", "single_transformer_blocks.0"
    kind: str  # the family's name for it, e.g. SD3's "joint" | "joint-dual" | "joint-last", FLUX's "flux-single"
    components: tuple[str, ...]
    num_parameters: int  # footprint.parameter_count: a quantised block counts its unquantised parameters


def block_topology(transformer: torch.nn.Module) -> list[BlockInfo]:
    """All blocks of a transformer of a registered family in execution order (FLUX: double-stream blocks, then
    single-stream); the stand-ins of removed blocks, where a family keeps positions, are no blocks."""
    family = family_of_transformer(transformer)
    blocks: list[BlockInfo] = []
    for list_name, block_class in family.block_lists():
        for position, block in enumerate(getattr(transformer, list_name)):
            path = f"{list_name}.{position}"
            if getattr(block, "removed_block", False):  # a removed block's stand-in, where positions are kept
                continue
            if not isinstance(block, block_class):
                raise ValueError(f"block '{path}' is a {type(block).__name__}, expected a {block_class.__name__}")
            kind = family.block_kind(block)
            blocks.append(
                BlockInfo(
                    index=len(blocks),
                    path=path,
                    kind=kind,
                    components=family.kind_components[kind],
                    num_parameters=parameter_count(block),
                )
            )
    return blocks


def block_modules(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """What the family's block lists hold, in execution order, whatever it is (an ablation's stand-in too)."""
    family = family_of_transformer(transformer)
    return [block for list_name, _ in family.block_lists() for block in getattr(transformer, list_name)]


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
        for attribute in family_of_transformer(transformer).component_attributes[component]
        if getattr(module, attribute, None) is not None
    }

