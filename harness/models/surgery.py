"""Block surgery on diffusion transformers: physical removal of whole blocks, and reversible in-place skips.

`remove_blocks` deletes blocks and updates the config, so the result round-trips through `save_pretrained` /
`from_pretrained` with no missing or unexpected keys. `skip` swaps a whole block or one of its sub-components
(named as in `topology`) for a stand-in and puts the originals back on exit, with no reload of the pipeline: this is
what contribution analysis ablates. The stand-ins are `harness.models.stand_ins`' (or the family's own,
`Family.stand_in`). Parameter-free modules of a component (SD3's `norm2` LayerNorms) are left in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

from torch import nn

from harness.models.families import family_of_transformer
from harness.models.stand_ins import StandIn, default_stand_in
from harness.models.topology import BlockInfo, block_topology, component_modules


@dataclass(frozen=True)
class Ablation:
    """A whole block (`component` None) or one named sub-component of it, by execution-order block index."""

    block: int
    component: str | None = None

    @property
    def key(self) -> str:
        return str(self.block) if self.component is None else f"{self.block}.{self.component}"

    @classmethod
    def parse(cls, key: str) -> Ablation:
        """'7' or '7.attn' (the form `key` writes)."""
        index, _, component = key.partition(".")
        if not index.isdigit():
            raise ValueError(f"'{key}' is not an ablation key: expected <block> or <block>.<component>, e.g. 7.attn")
        return cls(int(index), component or None)


# Modules a component owns that its skip leaves in place: FLUX single blocks' proj_out projects the attention and
# MLP branches together, so skipping the MLP branch zeroes proj_mlp and keeps proj_out for the attention.
_KEPT_WHEN_SKIPPED: dict[str, tuple[str, ...]] = {"proj_mlp_out": ("proj_out",)}


class Skip:
    """Reversible in-place skips; a context manager. `restore()` puts every original module back."""

    def __init__(self, transformer: nn.Module, ablations: Iterable[Ablation]) -> None:
        self.transformer = transformer
        self._originals: list[tuple[str, nn.Module]] = []
        family = family_of_transformer(transformer)
        blocks = block_topology(transformer)
        try:
            for ablation in ablations:
                if not 0 <= ablation.block < len(blocks):
                    raise ValueError(f"block {ablation.block} does not exist: the transformer has {len(blocks)} "
                                     f"blocks (0-{len(blocks) - 1})")
                block = blocks[ablation.block]
                if ablation.component is None:
                    self._swap(block.path, family.block_stand_in(transformer.get_submodule(block.path)))
                    continue
                for path, module in component_modules(transformer, block, ablation.component).items():
                    self._check_not_skipped(path)
                    if path.rsplit(".", 1)[1] in _KEPT_WHEN_SKIPPED.get(ablation.component, ()):
                        continue
                    if any(True for _ in module.parameters()):  # parameter-free LayerNorms stay
                        self._swap(path, family.stand_in(ablation.component, module) or default_stand_in(module))
        except Exception:
            self.restore()
            raise

    def _check_not_skipped(self, path: str) -> None:
        if isinstance(self.transformer.get_submodule(path), StandIn):
            raise ValueError(f"'{path}' is already skipped")

    def _swap(self, path: str, replacement: nn.Module) -> None:
        self._check_not_skipped(path)
        original = self.transformer.get_submodule(path)
        self.transformer.set_submodule(path, replacement)
        self._originals.append((path, original))

    def restore(self) -> None:
        for path, original in reversed(self._originals):
            self.transformer.set_submodule(path, original)
        self._originals.clear()

    def __enter__(self) -> Skip:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.restore()


def skip(transformer: nn.Module, ablations: Sequence[Ablation] | Ablation) -> Skip:
    """Skip blocks or sub-components in place until the returned handle's `restore()` (or the `with` block ends)."""
    return Skip(transformer, [ablations] if isinstance(ablations, Ablation) else ablations)


def remove_components(transformer: nn.Module, ablations: Sequence[Ablation]) -> None:
    """Replace sub-components by their stand-ins for good (HierarchicalPrune's aggressive regime): their parameters
    leave the model. A saved model records the keys; `harness.models.saving` puts the stand-ins back on load."""
    if any(a.component is None for a in ablations):
        raise ValueError("remove_components takes sub-components; remove whole blocks with remove_blocks")
    Skip(transformer, ablations)._originals.clear()  # nothing to restore: the originals are dropped


def removable_blocks(transformer: nn.Module) -> list[BlockInfo]:
    """Blocks that `remove_blocks` may delete: all but those the family keeps (SD3's final `context_pre_only` block,
    which ends the text stream)."""
    family = family_of_transformer(transformer)
    return [block for block in block_topology(transformer) if family.unremovable_reason(block.kind) is None]


def remove_blocks(transformer: nn.Module, indices: Iterable[int]) -> list[BlockInfo]:
    """Delete whole blocks (execution-order indices) and update the config, or, where the family keeps block
    positions, put weightless stand-ins in their places; returns the removed blocks."""
    family = family_of_transformer(transformer)
    blocks = block_topology(transformer)
    wanted = sorted(set(indices))
    for index in wanted:
        if not 0 <= index < len(blocks):
            raise ValueError(f"block {index} does not exist: the transformer has {len(blocks)} blocks "
                             f"(0-{len(blocks) - 1})")
        reason = family.unremovable_reason(blocks[index].kind)
        if reason is not None:
            raise ValueError(f"block {index} is {reason}; remove other blocks instead")
    removed = [blocks[i] for i in wanted]
    if family.keeps_block_positions:  # every later block keeps its position: a weightless stand-in takes its place
        for block in removed:
            stand_in = family.block_stand_in(transformer.get_submodule(block.path))
            stand_in.removed_block = True  # not a block any more (`block_topology` passes over it)
            transformer.set_submodule(block.path, stand_in)
        return removed
    for block in reversed(removed):  # from the back, so earlier positions stay valid
        list_name, position = block.path.rsplit(".", 1)
        del getattr(transformer, list_name)[int(position)]
    transformer.register_to_config(**family.config_after_removal(transformer))
    return removed
