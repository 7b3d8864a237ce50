"""Compression methods. Each is one module plus one registration line here (or an entry point in
the group `harness.compressors` of another distribution)."""

from harness.registry import COMPRESSORS

COMPRESSORS.register("none", "compressors.none:NoCompression", "No compression: the original model (the baseline).")
COMPRESSORS.register("depth-last", "compressors.pruning:DepthLast",
                     "Baseline: remove the last blocks (SD3's final block stays) up to the budget.")
COMPRESSORS.register("depth-uniform", "compressors.pruning:DepthUniform",
                     "Baseline: remove blocks spread evenly over the depth up to the budget.")
COMPRESSORS.register("depth-importance", "compressors.pruning:DepthImportance",
                     "Baseline: remove the least important blocks by contribution ranking, no positional prior.")
COMPRESSORS.register("hierarchicalprune", "compressors.hierarchicalprune:HierarchicalPrune",
                     "HierarchicalPrune: position-aware block pruning (HPP), early weights frozen (PWP), "
                     "sensitivity-guided distillation (SGDistill).")
