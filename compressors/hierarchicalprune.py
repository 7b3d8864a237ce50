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

from compressors.pruning import DepthImportance, MissingRanking, RankedPruningParams
from harness.errors import UsageError

# The release's hand-picked cuts (FACTS section 1): model preset -> blocks removed.
PUBLISHED_CUTS: dict[str, tuple[int, ...]] = {
    "sd3.5-large-turbo": (25, 26, 27, 28, 31, 32, 33, 34),
    "sd3.5-medium": (13, 15, 16, 18, 20, 21),
}


@dataclass(frozen=True)
class HierarchicalPruneParams(RankedPruningParams):
    position_weight: float = 0.5  # strength of the positional prior (0: importance alone)
    distill_steps: int = 1000  # SGDistill is part of the method
    intensity_exponent: float = 1.0  # 0: the release's binary freeze
    preserve_early: bool = True  # PWP
    published_cut: bool = False  # use the release's cut for this model even when a ranking exists
    # the aggressive regime: after the blocks, remove sub-components (never attention) of the middle third of the
    # blocks, least important first by a component ranking, until this fraction of parameters is gone (0: off)
    total_budget: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.position_weight < 0 or self.intensity_exponent < 0:
            raise ValueError(f"position_weight and intensity_exponent must be at least 0 (got "
                             f"{self.position_weight}, {self.intensity_exponent})")
        if self.total_budget and not self.budget < self.total_budget < 1:
            raise ValueError(f"total_budget must lie between budget ({self.budget}) and 1 (got {self.total_budget})")


class HierarchicalPrune(DepthImportance):
    name = "hierarchicalprune"
    Params = HierarchicalPruneParams

    def ranking_for(self, model: Any) -> Any | None:
        """The ranking found for the model, also beside an explicit block list (it sets the update intensities);
        None with `published_cut` or when none is found (`select_blocks` then falls back on the published cut)."""
        from compressors.pruning import find_ranking

        if self.params.published_cut:
            return None
        return find_ranking(model, self.params.ranking, self.params.ranking_base_score, self.context.cache_dir)

    def select_blocks(self, model: Any, ranking: Any | None) -> tuple[list[int], dict[str, Any]]:
        if self.params.blocks:
            return super().select_blocks(model, ranking)  # the explicit list; the ranking still sets the intensities
        if ranking is not None:
            return self.choose_with_ranking(model, ranking, self.params.position_weight)
        cut = PUBLISHED_CUTS.get(model.spec.name)
        if self.params.published_cut and cut is None:
            raise UsageError(f"hierarchicalprune.published_cut: the release published cuts for "
                             f"{', '.join(PUBLISHED_CUTS)} only, not for '{model.spec.argument}': drop published_cut "
                             "to prune by this model's contribution ranking")
        default_budget = HierarchicalPruneParams().budget
        if cut is not None and (self.params.published_cut or self.params.budget == default_budget):
            return list(cut), {"selection": f"the release's published cut for {model.spec.name}"}
        raise MissingRanking(
            f"hierarchicalprune needs a contribution ranking of '{model.spec.name}' and none was found"
            + (f" (the published cut applies only at budget {default_budget})" if cut is not None else "")
            + f": run `harness analyze --model {model.spec.argument}` first, or pass "
            "--set hierarchicalprune.ranking=<file> or an explicit --set hierarchicalprune.blocks=...")

    def prune(self, model: Any, ranking: Any | None) -> dict[str, Any]:
        cost = super().prune(model, ranking)
        if self.params.total_budget > cost["removed_fraction"]:
            cost.update(self._remove_components(model, cost, ranking))
        return cost

    def _remove_components(self, model: Any, cost: dict[str, Any], ranking: Any | None) -> dict[str, Any]:
        """The aggressive regime: sub-components of the middle third of the original blocks, never attention, least
        important first, until `total_budget` of the original parameters is removed. Keys name the blocks of the
        pruned transformer."""
        from harness.models.footprint import parameter_count
        from harness.models.surgery import Ablation, remove_components
        from harness.models.topology import block_topology

        if ranking is None or ranking.granularity != "component":
            raise UsageError("hierarchicalprune.total_budget (the aggressive regime) needs a component ranking: run "
                             f"`harness analyze --model {model.spec.argument} --granularity component` first")
        removed = cost["removed_blocks"]
        kept = block_topology(model.transformer)
        total = len(kept) + len(removed)
        new_index = {old: new for new, old in enumerate(i for i in range(total) if i not in set(removed))}
        middle = range(total // 3, (2 * total) // 3)
        target = self.params.total_budget * cost["parameters_before"]
        taken: list[str] = []
        for key in ranking.order:
            ablation = Ablation.parse(key)
            if cost["parameters_before"] - parameter_count(model.transformer) >= target:
                break
            if ablation.component == "attn" or ablation.block not in middle or ablation.block not in new_index:
                continue
            block = kept[new_index[ablation.block]]
            if ablation.component not in block.components:
                continue
            target_ablation = Ablation(block.index, ablation.component)
            remove_components(model.transformer, [target_ablation])
            taken.append(target_ablation.key)
        after = parameter_count(model.transformer)
        if cost["parameters_before"] - after < target:
            raise UsageError(f"total_budget {self.params.total_budget} cannot be met by removing sub-components of "
                             f"the middle blocks (reached {1 - after / cost['parameters_before']:.1%})")
        return {"removed_components": taken, "parameters_after": after,
                "removed_fraction": round(1 - after / cost["parameters_before"], 6)}

    def trains_embedders(self) -> bool:
        return not self.params.preserve_early

    def update_intensity(self, model: Any, removed: list[int], ranking: Any | None) -> dict[int, float]:
        from harness.models.topology import block_topology

        kept = block_topology(model.transformer)
        original = [i for i in range(len(kept) + len(removed)) if i not in set(removed)]  # new index -> old
        first_cut = min(removed)
        trained = [b.index for b in kept if not (self.params.preserve_early and original[b.index] < first_cut)]
        intensity = {b.index: 0.0 for b in kept}
        if ranking is None or self.params.intensity_exponent == 0:
            intensity.update({j: 1.0 for j in trained})
            return intensity
        sensitivity = ranking.block_sensitivity()  # per original block index
        measured = {j: sensitivity.get(original[j], 0.0) for j in trained}
        floor = 0.01 * max(max(measured.values(), default=0.0), 1e-12)
        floored = {j: max(s, floor) for j, s in measured.items()}
        smallest = min(floored.values(), default=1.0)
        intensity.update({j: (smallest / s) ** self.params.intensity_exponent for j, s in floored.items()})
        return intensity
