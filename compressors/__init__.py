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
COMPRESSORS.register("nf4", "compressors.quantize:BitsAndBytes4Bit",
                     "bitsandbytes NF4 weight-only quantisation of the transformer's Linear layers (CPU and CUDA).")
COMPRESSORS.register("int8", "compressors.quantize:BitsAndBytes8Bit",
                     "bitsandbytes LLM.int8 weight quantisation of the transformer's Linear layers.")
COMPRESSORS.register("torchao-int8", "compressors.quantize:TorchAOInt8", "torchao int8 weight-only quantisation.")
COMPRESSORS.register("torchao-int4", "compressors.quantize:TorchAOInt4",
                     "torchao int4 weight-only quantisation, per-group scales (packed on CUDA).")
COMPRESSORS.register("int8dq", "compressors.quantize:TorchAOInt8Dynamic",
                     "torchao int8 dynamic-activation int8-weight quantisation: int8 matmuls (CPU and CUDA).")
COMPRESSORS.register("fp8dq", "compressors.quantize:TorchAOFloat8Dynamic",
                     "torchao FP8 dynamic-activation FP8-weight quantisation (CUDA GPUs with FP8: Ada, Hopper, "
                     "Blackwell).")
COMPRESSORS.register("fp8wo", "compressors.quantize:TorchAOFloat8WeightOnly",
                     "torchao FP8 weight-only quantisation (CUDA GPUs with FP8: Ada, Hopper, Blackwell).")
COMPRESSORS.register("fbcache", "compressors.caching:FirstBlockCache",
                     "Step cache (diffusers First-Block Cache): skip the other blocks when the first block's residual "
                     "changed less than `threshold` since the last computed step.")
COMPRESSORS.register("taylorseer", "compressors.caching:TaylorSeer",
                     "Step cache (diffusers TaylorSeer): compute attention every `cache_interval` steps, predict it "
                     "by a Taylor expansion in between.")
COMPRESSORS.register("pab", "compressors.caching:PyramidAttentionBroadcast",
                     "Step cache (diffusers Pyramid Attention Broadcast): reuse attention outputs for `skip_range` "
                     "steps within a timestep range.")
COMPRESSORS.register("compile", "compressors.compile:Compile",
                     "torch.compile of the transformer: each block (regional, default) or the whole model; compile "
                     "time reported as its cost.")
