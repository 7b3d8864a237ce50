"""FLOPs of whatever runs inside `count_flops`, counted from the modules (works on the meta device too): 2 * in * out
per token for every Linear, the convolution's multiply-adds, and 4 * Lq * Lk * head_dim per head for every attention
(QK^T and AV). `transformer_flops` counts one denoising step (doubled by classifier-free guidance, whether it
doubles the batch or runs a second forward).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def count_flops() -> Iterator[dict[str, int]]:
    """Count Linear, Conv2d and scaled-dot-product-attention FLOPs of whatever runs inside (any device)."""
    import torch
    import torch.nn.functional as F

    counts = {"linear": 0, "conv": 0, "attention": 0}

    def linear_hook(module: Any, inputs: Any, _output: Any) -> None:
        x = inputs[0]
        counts["linear"] += 2 * (x.numel() // x.shape[-1]) * module.in_features * module.out_features

    def conv_hook(module: Any, _inputs: Any, output: Any) -> None:
        kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        counts["conv"] += 2 * output.numel() * kernel

    original_sdpa = F.scaled_dot_product_attention

    def sdpa(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        batch_heads = query.numel() // (query.shape[-2] * query.shape[-1])
        counts["attention"] += 2 * batch_heads * query.shape[-2] * key.shape[-2] * (query.shape[-1] + value.shape[-1])
        return original_sdpa(query, key, value, *args, **kwargs)

    handles = [torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: linear_hook(m, i, o) if isinstance(m, torch.nn.Linear) else (
            conv_hook(m, i, o) if isinstance(m, torch.nn.Conv2d) else None))]
    F.scaled_dot_product_attention = sdpa
    try:
        yield counts
    finally:
        F.scaled_dot_product_attention = original_sdpa
        for handle in handles:
            handle.remove()


def transformer_flops(transformer: Any, spec: Any, sampling: Any, text_tokens: int) -> dict[str, int]:
    """FLOPs of one denoising step at the sampling resolution: one forward on the family's forward batch (twice the
    images where CFG doubles it), times its forwards per step (2 where CFG is a second forward)."""
    import torch

    from harness.models.families import family_of

    family = family_of(spec.family)
    batch = family.forward_batch_size(sampling, 1)
    device = next(transformer.parameters()).device
    inputs = family.transformer_inputs(transformer, batch, sampling.height, sampling.width, text_tokens, device,
                                       next(transformer.parameters()).dtype)
    with count_flops() as counts, torch.no_grad():
        transformer(**inputs)
    forwards = family.forwards_per_step(sampling)
    counts = {kind: flops * forwards for kind, flops in counts.items()}
    return {**counts, "total": sum(counts.values()), "batch": batch, "forwards": forwards}


OVERHEAD_FRACTION = 0.3  # below this fraction of its roofline a forward is bound by launches and Python, not the chip


def roofline(flops: int, seconds: float, weight_bytes: int, peak: Any) -> dict[str, Any]:
    """Speed of light of one forward of `flops` that took `seconds` and read `weight_bytes` of weights, against
    `peak` (harness.devices.Peak): achieved TFLOP/s, its fraction of the peak, the arithmetic intensity (FLOPs per
    weight byte; activations are left out, so it is an upper bound) and what bounds it: "compute" when the
    intensity is past the ridge (peak FLOP/s over bandwidth), else "bandwidth"; "overhead" when the forward reached
    less than OVERHEAD_FRACTION of the roof the intensity allows (kernel launches, Python, synchronisation)."""
    achieved = flops / seconds / 1e12 if seconds > 0 else None
    intensity = flops / weight_bytes if weight_bytes else None
    report: dict[str, Any] = {"flops": flops, "seconds": seconds, "weight_bytes": weight_bytes,
                              "achieved_tflops": achieved, "intensity_flop_per_byte": intensity,
                              "peak_tflops": peak.tflops, "peak_bandwidth_gbs": peak.bandwidth_gbs,
                              "peak_source": peak.source, "peak_fraction": None, "bound": None}
    if achieved is None or peak.tflops is None:
        return report
    report["peak_fraction"] = achieved / peak.tflops
    if intensity is None or peak.bandwidth_gbs is None:
        return report
    roof = min(peak.tflops, intensity * peak.bandwidth_gbs / 1e3)  # GB/s x FLOP/B = GFLOP/s
    ridge = peak.tflops * 1e3 / peak.bandwidth_gbs
    report["ridge_flop_per_byte"] = ridge
    report["roof_fraction"] = achieved / roof
    report["bound"] = "overhead" if achieved < OVERHEAD_FRACTION * roof else (
        "compute" if intensity >= ridge else "bandwidth")
    return report
