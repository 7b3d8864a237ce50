"""One pipeline call is one denoising scope: what a step cache keeps (diffusers' stateful hooks) lives inside it.

Step caches (diffusers' First-Block Cache, TaylorSeer, Pyramid Attention Broadcast hooks) keep outputs of earlier
denoising steps and read their state under a named cache context. Some pipelines set that context around each
transformer call (FLUX's); others set none (SD3's: its transformer is no `CacheMixin`). So every pipeline call of the
harness runs inside `denoising_scope`: the hooks' state is emptied before and after it (a cache never carries from
one image batch, prompt or suite into the next) and each transformer call's context is named: "cond", or "uncond"
for a step's second forward (classifier-free guidance as two calls), as the pipelines that name theirs do. With
`count=True` it also counts what the transformer computed: each Linear layer of its blocks that ran (not in a
compiled transformer, where hooks would force recompilation). A transformer call in which fewer block layers ran
than in the batch's fullest call (the first: a cache always
computes it) reused cached outputs for part or all of its blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CONTEXT_NAME = "cond"  # the name FLUX's pipeline gives its conditional calls; SD3 runs CFG in one doubled batch
UNCONDITIONAL_CONTEXT = "uncond"  # Qwen-Image's name for its second, unconditional forward of a step


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


def _context_namer(transformer: Any) -> Any:
    """A forward pre-hook naming each transformer call's cache context as the pipelines that name theirs do: a call
    at the timestep of the call before it is the same step's unconditional forward ("uncond"), any other "cond".
    Pipelines that run CFG as a second forward without naming it (Chroma's) would otherwise mix the prompt's and
    the negative prompt's cached outputs; for those that name their calls (FLUX, Qwen-Image) it gives the same
    names."""
    import torch
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    previous: list[Any] = [None]

    def name_the_call(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        timestep = kwargs.get("timestep")
        repeat = (isinstance(timestep, torch.Tensor) and isinstance(previous[0], torch.Tensor)
                  and timestep.shape == previous[0].shape and torch.equal(timestep, previous[0]))
        previous[0] = None if repeat else timestep
        _set_cache_context(transformer, CacheContext(UNCONDITIONAL_CONTEXT if repeat else CONTEXT_NAME))

    return name_the_call


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
        handles.append(transformer.register_forward_pre_hook(_context_namer(transformer), with_kwargs=True))
        try:
            with CacheMixin.cache_context(transformer, CONTEXT_NAME):
                yield calls
        finally:
            CacheMixin._reset_stateful_cache(transformer)
    finally:
        for handle in handles:
            handle.remove()
