"""Depth pruning: remove whole transformer blocks up to a parameter budget, optionally followed by distillation.

Every pruning method here shares `PruningParams`: the same budget (the fraction of transformer parameters REMOVED),
the same explicit block list, and the same distillation settings, so methods differ only in which blocks they pick
and how they recover. Budgets are met from below: blocks are removed in the method's order until the removed
parameters reach `budget` of the transformer's (SD3.5 Large Turbo at 0.20 -> 8 of 38 blocks, 21.2%).
"""

from __future__ import annotations

import bisect
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from compressors.base import Compressor
from harness.errors import UsageError


@dataclass(frozen=True)
class PruningParams:
    budget: float = 0.20  # fraction of transformer parameters removed
    blocks: tuple[int, ...] = ()  # explicit blocks to remove (execution order); overrides budget
    distill_steps: int = 0  # recovery training steps after pruning (0: none)
    distill_lr: float | None = None  # None: the model's training rate (ModelSpec.training_lr), else the release's 1e-4
    distill_batch_size: int = 16
    feature_weight: float = 1e-4  # l_feat: image- and text-stream block outputs, student vs teacher
    task_weight: float = 0.0  # l_task: MSE of the predicted clean latent against the data
    distill_data: Path | None = None  # real models: an image-caption folder, or a prompt list the teacher draws

    def __post_init__(self) -> None:
        if not 0.0 < self.budget < 1.0:
            raise ValueError(f"budget must be a fraction of parameters removed, between 0 and 1 (got {self.budget})")
        if any(b < 0 for b in self.blocks):
            raise ValueError(f"block indices must be non-negative (got {self.blocks})")
        if self.distill_steps < 0:
            raise ValueError(f"distill_steps must be at least 0 (got {self.distill_steps})")
        if self.distill_lr is not None and not self.distill_lr > 0:
            raise ValueError(f"distill_lr must be above 0 (got {self.distill_lr})")
        if self.distill_batch_size < 1:
            raise ValueError(f"distill_batch_size must be at least 1 (got {self.distill_batch_size})")
        if self.distill_data is not None and not Path(self.distill_data).expanduser().exists():
            raise ValueError(f"distill_data '{self.distill_data}' does not exist")
        if self.feature_weight < 0 or self.task_weight < 0:
            raise ValueError(f"feature_weight and task_weight must be at least 0 (got {self.feature_weight}, "
                             f"{self.task_weight})")


def smallest_meeting_budget(pick: Any, candidates: int, transformer: Any, budget: float) -> list[int]:
    """`pick(n)` (n blocks to remove) for the smallest n whose blocks hold at least `budget` of the transformer's
    parameters."""
    from harness.models.footprint import parameter_count
    from harness.models.topology import block_topology

    sizes = {b.index: b.num_parameters for b in block_topology(transformer)}
    total = parameter_count(transformer)
    removed = 0
    for count in range(1, candidates + 1):
        chosen = sorted(pick(count))
        removed = sum(sizes[i] for i in chosen)
        if removed >= budget * total:
            return chosen
    raise UsageError(f"budget {budget} cannot be met: removing every removable block takes only "
                     f"{removed / total:.1%} of the transformer's parameters")


class BlockPruning(Compressor):
    """Base of the depth-pruning methods: subclasses give `removal_order` (preferred first)."""

    label_params: ClassVar[tuple[str, ...]] = ("budget", "blocks", "distill_steps", "total_budget")

    Params = PruningParams
    _checkpoint: Path | None = None  # the distillation's checkpoint, kept until `release`

    def removal_order(self, model: Any) -> list[int]:
        """Removable blocks, the first to remove first."""
        raise NotImplementedError

    def pick(self, model: Any, count: int) -> list[int]:
        """Which `count` blocks to remove (default: the first of `removal_order`)."""
        return self.removal_order(model)[:count]

    def ranking_for(self, model: Any) -> Any | None:
        """The contribution ranking this method chooses blocks and update intensities by (None: it uses none)."""
        return None

    def check_plan(self, spec: Any) -> None:
        from compressors.distill import needs_training_data

        if self.params.distill_steps and self.params.distill_data is None and needs_training_data(spec):
            raise UsageError(f"distilling '{spec.argument}' needs training data: pass --set {self.name}.distill_data="
                             "<folder of images with .txt captions, or a .txt prompt list>")

    def trained_weights_reason(self) -> str | None:
        if self.params.distill_steps:
            return (f"{self.name} distils for {self.params.distill_steps} steps on the model's own images: "
                    f"--set {self.name}.distill_steps=0 keeps the block removal alone")
        return None

    def inputs(self, model: Any) -> dict[str, str]:
        """The ranking `ranking_for` finds and the distillation data, by content."""
        found = {}
        ranking = self.ranking_for(model)
        if ranking is not None:
            found["ranking"] = ranking.digest()
        if self.params.distill_steps and self.params.distill_data is not None:
            from compressors.distill import data_digest

            found["distill_data"] = data_digest(self.params.distill_data)
        return found

    def select_blocks(self, model: Any, ranking: Any | None) -> tuple[list[int], dict[str, Any]]:
        """The blocks to remove by `ranking` (`ranking_for`'s) and how they were chosen (recorded in the compression
        cost): here the explicit list, else the budget met in `pick`'s order."""
        from harness.models.families import family_of_transformer
        from harness.models.surgery import removable_blocks
        from harness.models.topology import block_topology

        allowed = {b.index for b in removable_blocks(model.transformer)}
        if self.params.blocks:
            bad = [b for b in self.params.blocks if b not in allowed]
            if bad:
                family, blocks = family_of_transformer(model.transformer), block_topology(model.transformer)
                reasons = sorted({f"block {b.index} is {family.unremovable_reason(b.kind)}" for b in blocks
                                  if b.index in bad} | ({f"the transformer has {len(blocks)} blocks"}
                                                        if max(bad) >= len(blocks) else set()))
                raise UsageError(f"{self.name}: blocks {bad} cannot be removed ({'; '.join(reasons)}); removable "
                                 f"blocks: {_ranges(sorted(allowed)) or 'none'}")
            return sorted(set(self.params.blocks)), {"selection": "explicit block list"}
        chosen = smallest_meeting_budget(lambda n: self.pick(model, n), len(allowed), model.transformer,
                                         self.params.budget)
        return chosen, {"selection": f"budget {self.params.budget}"}

    def apply_structure(self, model: Any) -> dict[str, Any]:
        return self.prune(model, self.ranking_for(model))

    def prune(self, model: Any, ranking: Any | None) -> dict[str, Any]:
        """Remove the blocks `select_blocks` chooses by `ranking`; returns what was removed."""
        from harness.models.footprint import parameter_count
        from harness.models.surgery import remove_blocks

        transformer = model.transformer
        before = parameter_count(transformer)
        chosen, how = self.select_blocks(model, ranking)
        remove_blocks(transformer, chosen)
        after = parameter_count(transformer)
        return {**how, "removed_blocks": chosen, "parameters_before": before, "parameters_after": after,
                "removed_fraction": round(1 - after / before, 6)}

    def apply(self, model: Any) -> dict[str, Any]:
        ranking = self.ranking_for(model)  # read once: the blocks and the update intensities follow the same one
        teacher = copy.deepcopy(model.transformer) if self.params.distill_steps else None
        cost = self.prune(model, ranking)
        chosen = cost["removed_blocks"]
        if teacher is not None:
            from compressors.distill import distill

            cost["distillation"] = distill(model, teacher, chosen, self.update_intensity(model, chosen, ranking),
                                           self.params, self.context, train_embedders=self.trains_embedders())
            self._checkpoint = Path(cost["distillation"].pop("checkpoint"))
        return cost

    def release(self) -> None:
        if self._checkpoint is not None:
            self._checkpoint.unlink(missing_ok=True)
            self._checkpoint = None

    def trains_embedders(self) -> bool:
        """Whether distillation updates the modules before the first block (patch, time and text embedders)."""
        return True

    def update_intensity(self, model: Any, removed: list[int], ranking: Any | None) -> dict[int, float]:
        """Per kept block (indices of the pruned transformer), the factor on its learning rate; 0 freezes it.
        `ranking` is the one the blocks were chosen by (None: none); here every block trains at the full rate."""
        from harness.models.topology import block_topology

        return {b.index: 1.0 for b in block_topology(model.transformer)}


class DepthLast(BlockPruning):
    """Drop the last blocks (keeping SD3's final block): the naive baseline."""

    name = "depth-last"

    def removal_order(self, model: Any) -> list[int]:
        from harness.models.surgery import removable_blocks

        return [b.index for b in reversed(removable_blocks(model.transformer))]


class DepthUniform(BlockPruning):
    """Drop n blocks spread evenly over the depth (every k-th block), n as small as the budget allows."""

    name = "depth-uniform"

    def pick(self, model: Any, count: int) -> list[int]:
        from harness.models.surgery import removable_blocks

        candidates = [b.index for b in removable_blocks(model.transformer)]
        step = len(candidates) / count
        return [candidates[int((k + 0.5) * step)] for k in range(count)]  # the middle of each of n equal spans


def find_ranking(model: Any, explicit: Path | None, base_score: float | None, cache_dir: Path) -> Any | None:
    """The contribution ranking for this model: an explicit file, else the one shipped beside the weights
    (contribution_ranking.json), else the newest `harness analyze` result for these exact weights in the cache."""
    from harness.ranking import RANKING_FILE, load_ranking

    if explicit is not None:
        found, source = load_ranking(explicit, base_score), f"'{explicit}'"
    elif (Path(model.source) / RANKING_FILE).is_file():
        found, source = load_ranking(Path(model.source) / RANKING_FILE), f"beside the weights ({model.source})"
    else:
        candidates = []
        for path in (cache_dir / "analysis").glob(f"*/{RANKING_FILE}"):
            ranking = load_ranking(path)
            if ranking.model.get("fingerprint") == model.fingerprint:
                candidates.append((path.stat().st_mtime, ranking, path))
        if not candidates:
            return None
        _, found, newest = max(candidates, key=lambda c: c[0])
        source = f"'{newest}'"
    found.check_fits(model.transformer, source)
    return found


def importance_order(ranking: Any, transformer: Any, position_weight: float) -> list[int]:
    """Removable blocks from least to most important.

    importance(i) = rank(sensitivity_i) / (n - 1) + position_weight * (1 - position_i), with position_i = i / (N - 1)
    over all N blocks and the rank taken among the n removable blocks (0 = least sensitive; tied blocks share their
    mean rank). Ranks make the two terms commensurable whatever the metric's scale; the second term is the
    positional prior: the later a block, the cheaper it looks, so a late block goes first unless its measured
    sensitivity is high ("drop late blocks, keep the sensitive ones"). position_weight 0 is importance alone
    (depth-importance).
    """
    from harness.models.surgery import removable_blocks
    from harness.models.topology import block_topology

    total = len(block_topology(transformer))
    candidates = [b.index for b in removable_blocks(transformer)]
    sensitivity = ranking.block_sensitivity()
    missing = [i for i in candidates if i not in sensitivity]
    if missing:
        raise UsageError(f"the contribution ranking has no score for blocks {missing}: it was made for another "
                         "architecture; run `harness analyze` on this model")
    # ties share their mean rank: blocks measured alike (or a ranking that has not measured them: `equal_importance`)
    # are told apart by the positional prior, not by their index
    values = sorted(sensitivity[i] for i in candidates)
    rank = {i: (bisect.bisect_left(values, sensitivity[i]) + bisect.bisect_right(values, sensitivity[i]) - 1)
            / 2 / max(len(candidates) - 1, 1) for i in candidates}
    importance = {i: rank[i] + position_weight * (1 - i / max(total - 1, 1)) for i in candidates}
    return sorted(candidates, key=lambda i: (importance[i], -i))


class MissingRanking(UsageError):
    """A ranked method found no contribution ranking for the model (`harness analyze` first)."""


def equal_importance(transformer: Any) -> Any:
    """A ranking in which every block matters equally: what `harness estimate` prunes by for a model never
    analysed, so a ranked method's weight bytes can be estimated before its analysis (they depend on how many blocks
    of each kind go, not on which)."""
    from harness.models.topology import block_topology
    from harness.ranking import Ranking

    return Ranking(metric="none (no contribution analysis yet: every block equally important)",
                   higher_is_better=True, granularity="block", base_score=0.0,
                   scores={str(block.index): 0.0 for block in block_topology(transformer)})


@dataclass(frozen=True)
class RankedPruningParams(PruningParams):
    ranking: Path | None = None  # a ranking file; default: beside the weights, else the newest `harness analyze`
    ranking_base_score: float | None = None  # for the HierarchicalPrune release's ranking format


class DepthImportance(BlockPruning):
    """Remove the blocks whose removal costs least, by the contribution ranking alone (no positional prior)."""

    name = "depth-importance"
    Params = RankedPruningParams

    def ranking_for(self, model: Any) -> Any | None:
        if self.params.blocks:
            return None  # an explicit block list needs none
        ranking = find_ranking(model, self.params.ranking, self.params.ranking_base_score, self.context.cache_dir)
        if ranking is None:
            raise MissingRanking(
                f"{self.name} needs a contribution ranking of '{model.spec.name}' and none was found: run "
                f"`harness analyze --model {model.spec.argument}` first (or pass --set {self.name}.ranking=<file>)")
        return ranking

    def apply_structure(self, model: Any) -> dict[str, Any]:
        """As pruning the model does; a model with no ranking yet is estimated with every block equally important
        (`equal_importance`), and the record says so."""
        try:
            return super().apply_structure(model)
        except MissingRanking:
            return self.prune(model, equal_importance(model.transformer))

    def select_blocks(self, model: Any, ranking: Any | None) -> tuple[list[int], dict[str, Any]]:
        if self.params.blocks:
            return super().select_blocks(model, ranking)
        return self.choose_with_ranking(model, ranking, position_weight=0.0)

    def choose_with_ranking(self, model: Any, ranking: Any, position_weight: float) -> tuple[list[int], dict]:
        """The least important blocks meeting the budget; the record names the ranking and its ablation count."""
        order = importance_order(ranking, model.transformer, position_weight)
        chosen = smallest_meeting_budget(lambda n: order[:n], len(order), model.transformer, self.params.budget)
        return chosen, {"selection": f"budget {self.params.budget}, ranking {ranking.metric} ({ranking.granularity}),"
                        f" position_weight {position_weight}", "ablations": len(ranking.scores)}


def _ranges(indices: list[int]) -> str:
    """Sorted block indices as ranges: [0, 1, 2, 5] -> '0-2, 5'."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
