"""The compressor plugin interface: a name, typed parameters, `apply`, and `restore` for a saved model."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from harness.errors import UsageError
from harness.plugin import Plugin

# The stages of a chain, in the order they run: what removes or retrains blocks, what changes how weights are stored,
# what hooks the blocks to reuse earlier steps' outputs, what compiles the result. A later stage never rebuilds what an
# earlier one made, so a chain must list its steps in this order. The last two change how the pipeline runs, not
# what it stores ("runtime" steps): they are applied again after a stored model loads.
STAGES: tuple[str, ...] = ("structure", "weights", "step-cache", "compile")
RUNTIME_STAGES: tuple[str, ...] = ("step-cache", "compile")
_WHY_ORDER = {
    "structure": "pruning and distillation rebuild the blocks that later steps quantise, hook or compile",
    "weights": "quantisation replaces the layers that a step cache hooks and a compiler traces",
    "step-cache": "a compiler must trace the cache hooks to keep them",
}


class Compressor(Plugin):
    """Base class of compression methods. Subclasses set `name`, a `Params` dataclass and `apply`.

    `apply` changes the loaded model in place and returns what the compression cost, as the method counts it
    (e.g. {"ablations": 190, "distillation_steps": 2000}); the harness adds the wall time.
    """

    def check_plan(self, spec: Any) -> None:
        """Refuse, before any weight loads, what this method cannot do for the model `spec` describes (a
        UsageError naming the fix). By default it can do anything."""

    def trained_weights_reason(self) -> str | None:
        """Why `apply` needs the model's trained weights (it trains on or scores the model's own images), naming the
        setting that avoids it; None when it only changes structure, storage or how the pipeline runs, which is all a
        model with random weights (`--weights random`) can be measured for."""
        return None

    def inputs(self, model: Any) -> dict[str, str]:
        """What `apply` will read beyond its parameters, each by a digest of its content: a ranking it finds by
        itself, the files a path parameter names. Part of the chain's identity, so that a newer analysis or an edited
        file never reuses images made from the old one. Asked once per run, on the model before the chain."""
        return {}

    stage: ClassVar[str] = "structure"  # one of STAGES: where in a chain it runs
    # the parameters that tell its runs apart in a leaderboard row's label ("fbcache (threshold 0.2)")
    label_params: ClassVar[tuple[str, ...]] = ()

    # whether `harness compress` can save what `apply` made (and a distilled chain can be cached): a quantiser whose
    # layers safetensors cannot hold says False, and is refused before any weight loads
    saves: ClassVar[bool] = True
    # whether its saved layers are its own storage, rebuilt by `restore`: such a folder loads with `harness`, not with
    # diffusers' plain from_pretrained (which knows nothing of them); the provenance file says so
    stores_own_layers: ClassVar[bool] = False

    def cache_identity(self, inputs: dict[str, str] | None = None) -> tuple[str, str]:
        """(name, canonical parameters and `inputs`): what makes its images differ from every other chain's."""
        params = self.resolved_params()
        return self.name, json.dumps({**params, "inputs": inputs} if inputs else params, sort_keys=True)

    @property
    def changes_model(self) -> bool:
        return True

    @property
    def runtime(self) -> bool:
        """Whether it changes how the pipeline runs rather than what it stores (applied again after loading)."""
        return self.stage in RUNTIME_STAGES

    def apply(self, model: Any) -> dict[str, Any]:
        raise NotImplementedError

    def release(self) -> None:
        """Delete what `apply` kept so that a killed run could resume (a training checkpoint); called on the main
        process once the compressed model is stored, or known not to be storable."""

    def restore(self, transformer: Any, state: dict[str, Any], device: str, dtype: Any) -> None:
        """Put back what `apply` changed that a saved transformer's config does not say, when a saved compressed
        model loads: `transformer` is rebuilt from that config (pruned blocks gone, removed sub-components replaced
        by their stand-ins) with meta-device weights, and `state` holds the saved tensors. A quantiser swaps in its
        layers built from their stored tensors and pops those keys; what is left loads into the transformer as is.
        By default there is nothing to put back."""

    def apply_structure(self, model: Any) -> dict[str, Any]:
        """The structural part of `apply` on a weight-free (meta-device) model, for `harness estimate`: what it
        removes or how it stores weights, without data or training. Returns what it did."""
        if not self.changes_model:
            return {}
        raise UsageError(f"{self.name} has no weight-free estimate (it does not implement apply_structure)")


def check_chain_order(compressors: list[Compressor]) -> None:
    """Refuse a chain with two runtime steps of one stage, or whose steps are not in stage order, naming the fix.
    Steps that change nothing (`none`) go anywhere."""
    steps = [c for c in compressors if c.changes_model]
    for step in steps:
        if step.stage not in STAGES:
            raise UsageError(f"method {step.name} declares the unknown stage '{step.stage}' (its plugin's bug). "
                             f"Valid choices: {', '.join(STAGES)}")
    for stage in RUNTIME_STAGES:
        if len(named := [c.name for c in steps if c.stage == stage]) > 1:
            raise UsageError(f"{' and '.join(repr(n) for n in named)} are {'both' if len(named) == 2 else 'all'} "
                             f"{stage} steps, which would hook or compile the same blocks twice: choose one")
    fix = "+".join(c.name for c in sorted(steps, key=lambda c: STAGES.index(c.stage)))
    for earlier, later in zip(steps, steps[1:], strict=False):
        if STAGES.index(later.stage) < STAGES.index(earlier.stage):
            raise UsageError(f"'{later.name}' ({later.stage}) cannot run after '{earlier.name}' ({earlier.stage}): "
                             f"{_WHY_ORDER[later.stage]}; use --method {fix}")
