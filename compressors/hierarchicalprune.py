"""HierarchicalPrune (arXiv 2508.04663): Hierarchical Position Pruning, Positional Weight Preservation and
Sensitivity-Guided Distillation.

- HPP picks blocks by `importance_order` (compressors/pruning.py): the contribution ranking's block sensitivities
  combined with a positional prior favouring later blocks. Without a ranking, the published cut for the model is
  used (SD3.5 Large Turbo, SD3.5 Medium), else the method stops and asks for `harness analyze`.
- PWP freezes everything before the first pruned position (embedders and the early blocks, which carry semantics).
- SGDistill trains the rest against the unpruned teacher (compressors/distill.py) with per-block update intensity

      alpha_j = (s_min / s_j) ** intensity_exponent

  for each trained block j (s_j its measured sensitivity, floored at 1% of the largest so a zero does not divide;
  s_min the smallest among trained blocks): the most sensitive block gets the smallest updates, the least sensitive
  the full learning rate. Blocks frozen by PWP have alpha 0. intensity_exponent 0 is the release's binary scheme
  (frozen or fully trained); modules after the blocks (final norm, output projection) train at alpha 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compressors.pruning import DepthImportance, RankedPruningParams, importance_order
from harness.errors import UsageError

# The release's hand-picked cuts (FACTS section 1): model preset -> blocks removed.
PUBLISHED_CUTS: dict[str, tuple[int, ...]] = {
    "sd3.5-large-turbo": (25, 26, 27, 28, 31, 32, 33, 34),
    "sd3.5-medium": (13, 15, 16, 18, 20, 21),
}


@dataclass(frozen=True)
class HierarchicalPruneParams(RankedPruningParams):
    position_weight: float = 0.5  # strength of the positional prior (0: importance alone)
    distill_steps: int = 300  # SGDistill is part of the method
    intensity_exponent: float = 1.0  # 0: the release's binary freeze
    preserve_early: bool = True  # PWP
    published_cut: bool = False  # use the release's cut for this model even when a ranking exists


class HierarchicalPrune(DepthImportance):
    name = "hierarchicalprune"
    Params = HierarchicalPruneParams

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        self._sensitivity: dict[int, float] | None = None  # per original block index, once a ranking is read

    def choose_blocks(self, model: Any) -> tuple[list[int], dict[str, Any]]:
        from compressors.pruning import find_ranking

        ranking = None if self.params.published_cut else find_ranking(
            model, self.params.ranking, self.params.ranking_base_score, self.context.cache_dir)
        if ranking is not None:
            self._sensitivity = ranking.block_sensitivity()
        if self.params.blocks:
            return super().choose_blocks(model)  # the explicit list; the ranking still sets the intensities
        if ranking is not None:
            return self._with_ranking(model, ranking)
        cut = PUBLISHED_CUTS.get(model.spec.name)
        default_budget = HierarchicalPruneParams().budget
        if cut is not None and (self.params.published_cut or self.params.budget == default_budget):
            return list(cut), {"selection": f"the release's published cut for {model.spec.name}"}
        raise UsageError(
            f"hierarchicalprune needs a contribution ranking of '{model.spec.name}' and none was found"
            + (f" (the published cut applies only at budget {default_budget})" if cut is not None else "")
            + f": run `harness analyze --model {model.spec.name}` first, or pass "
            "--set hierarchicalprune.ranking=<file> or an explicit --set hierarchicalprune.blocks=...")

    def _with_ranking(self, model: Any, ranking: Any) -> tuple[list[int], dict[str, Any]]:
        from compressors.pruning import smallest_meeting_budget
        from harness.models.surgery import removable_blocks

        order = importance_order(ranking, model.transformer, self.params.position_weight)
        chosen = smallest_meeting_budget(lambda n: order[:n], len(removable_blocks(model.transformer)),
                                         model.transformer, self.params.budget)
        return chosen, {"selection": f"budget {self.params.budget}, ranking {ranking.metric} "
                        f"({ranking.granularity}), position_weight {self.params.position_weight}"}

    def trains_embedders(self) -> bool:
        return not self.params.preserve_early

    def update_intensity(self, model: Any, removed: list[int]) -> dict[int, float]:
        from harness.models.topology import block_topology

        kept = block_topology(model.transformer)
        original = [i for i in range(len(kept) + len(removed)) if i not in set(removed)]  # new index -> old
        first_cut = min(removed)
        trained = [b.index for b in kept if not (self.params.preserve_early and original[b.index] < first_cut)]
        intensity = {b.index: 0.0 for b in kept}
        sensitivity = self._sensitivity
        if sensitivity is None or self.params.intensity_exponent == 0:
            intensity.update({j: 1.0 for j in trained})
            return intensity
        measured = {j: sensitivity.get(original[j], 0.0) for j in trained}
        floor = 0.01 * max(max(measured.values(), default=0.0), 1e-12)
        floored = {j: max(s, floor) for j, s in measured.items()}
        smallest = min(floored.values(), default=1.0)
        intensity.update({j: (smallest / s) ** self.params.intensity_exponent for j, s in floored.items()})
        return intensity
