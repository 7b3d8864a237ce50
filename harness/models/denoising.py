"""One pipeline call is one denoising scope: what a step cache keeps (diffusers' stateful hooks) lives inside it.

Step caches (diffusers' First-Block Cache, TaylorSeer, Pyramid Attention Broadcast hooks) keep outputs of earlier
denoising steps and read their state under a named cache context. Some pipelines set that context around each
transformer call (FLUX's); others set none (SD3's: its transformer is no `CacheMixin`). So every pipeline call of the
harness runs inside `denoising_scope`: the hooks' state is emptied before and after it (a cache never carries from
one image batch, prompt or suite into the next) and a context is set for pipelines that set none; a pipeline's own
context, set per call, takes precedence. With `count=True` it also counts what the transformer computed: each
Linear layer of its blocks that ran (not in a compiled transformer, where hooks would force recompilation). A
transformer call in which fewer block layers ran than in the batch's fullest call (the first: a cache always
computes it) reused cached outputs for part or all of its blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CONTEXT_NAME = "cond"  # the name FLUX's pipeline gives its conditional calls; SD3 runs CFG in one doubled batch


@dataclass
class TransformerCalls:
    """What the transformer computed during one pipeline call (one image batch)."""

    layer_runs: list[int] = field(default_factory=list)  # block Linear layers that ran, per transformer call
    counted: bool = True  # False: nothing was counted (not asked, or a compiled transformer)

    @property
    def calls(self) -> int:
        return len(self.layer_runs)

    @property
    def computed(self) -> int:
        """Calls in which every block layer ran."""
        full = max(self.layer_runs, default=0)
        return sum(1 for runs in self.layer_runs if runs == full)

    @property
    def block_work(self) -> float:
        """The fraction of the block layers' runs of a fully computed batch that ran (1.0: nothing reused)."""
        full = max(self.layer_runs, default=0)
        return sum(self.layer_runs) / (full * len(self.layer_runs)) if full else 1.0

    def as_dict(self) -> dict[str, Any] | None:
        if not self.counted:
            return None
        return {"transformer_calls": self.calls, "computed_calls": self.computed,
                "block_work": round(self.block_work, 6)}


def summarize_calls(per_image: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Per image (each `TransformerCalls.as_dict` of its batch): the mean transformer calls, computed calls and block
    work; None when any image lacks its record (cached before it was recorded)."""
    if not per_image or any(calls is None for calls in per_image):
        return None
    count = len(per_image)
    return {"images": count,
            "transformer_calls_per_image": sum(c["transformer_calls"] for c in per_image) / count,
            "computed_calls_per_image": sum(c["computed_calls"] for c in per_image) / count,
            "block_work": sum(c["block_work"] for c in per_image) / count}


def has_step_cache(transformer: Any) -> bool:
    """Whether diffusers hooks sit anywhere in the transformer (a step cache was applied to its blocks)."""
    return any(hasattr(module, "_diffusers_hook") for module in transformer.modules())


def is_compiled(transformer: Any) -> bool:
    """Whether torch.compile was applied to the transformer or any module in it (`nn.Module.compile`)."""
    return any(getattr(module, "_compiled_call_impl", None) is not None for module in transformer.modules())


def _block_linears(transformer: Any) -> list[Any]:
    import torch

    from harness.models.topology import block_modules

    return [layer for block in block_modules(transformer) for layer in block.modules()
            if isinstance(layer, torch.nn.Linear)]


@contextlib.contextmanager
def denoising_scope(transformer: Any, count: bool = False) -> Iterator[TransformerCalls]:
    """Run one pipeline call (or one bare transformer forward) inside this: step-cache state starts and ends empty;
    yields the call counts (filled when `count`)."""
    # counting hooks added inside compiled code would make it recompile: a compiled transformer is not counted
    count = count and not is_compiled(transformer)
    calls = TransformerCalls(counted=count)
    handles: list[Any] = []
    if count:
        def on_transformer(_module: Any, _args: Any) -> None:
            calls.layer_runs.append(0)

        def on_layer(_module: Any, _args: Any) -> None:
            if calls.layer_runs:  # a block called outside a transformer forward is not one of its calls
                calls.layer_runs[-1] += 1

        handles.append(transformer.register_forward_pre_hook(on_transformer))
        handles += [layer.register_forward_pre_hook(on_layer) for layer in _block_linears(transformer)]
    cached = has_step_cache(transformer)
    try:
        if not cached:
            yield calls
            return
        # CacheMixin's own context manager and reset, called on a transformer that may not be a CacheMixin: they use
        # nothing of the class but the hook registry every module can carry
        from diffusers.models.cache_utils import CacheMixin

        CacheMixin._reset_stateful_cache(transformer)
        try:
            with CacheMixin.cache_context(transformer, CONTEXT_NAME):
                yield calls
        finally:
            CacheMixin._reset_stateful_cache(transformer)
    finally:
        for handle in handles:
            handle.remove()
