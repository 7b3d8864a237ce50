"""`harness estimate`: weight bytes and transformer FLOPs of a model and a compressor chain, without weights.

The architecture is built on the meta device from the preset's configs (seconds, little RAM; tiny and reference
models are small enough to build for real). The chain's structural part is applied: block removal by the pruning
methods, quantised storage by the quantisers (`Compressor.apply_structure`). Weight bytes are what `state_dict`
would store (parameters, persistent buffers, quantisation statistics), per component. FLOPs of one denoising step
are counted from the modules during one forward on the meta device: 2 * in * out per token for every Linear,
the convolution's multiply-adds for the patch embedding, and 4 * Lq * Lk * head_dim per head for every attention
(QK^T and AV); doubled when classifier-free guidance runs the batch twice.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from harness.errors import UsageError


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


def _component(path: str, config: dict[str, Any]) -> Any:
    module_name, class_name = path.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if module_name == "transformers":
        config_class = cls.config_class
        return cls(config_class(**config))
    return cls(**config)


def build_architecture(spec: Any) -> dict[str, Any]:
    """The model's components (transformer, text encoders, VAE) without weights, in the model's dtype."""
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # casting a weightless model to bf16 needs no "keep in float32" advice
    try:
        builder = spec.architecture or spec.build
        if builder is not None:
            pipeline = builder()
            return {name: module.to(getattr(torch, spec.dtype)) for name, module in pipeline.components.items()
                    if isinstance(module, torch.nn.Module)}
        if not spec.transformer_config:
            raise UsageError(f"'{spec.name}' has no architecture config to estimate from: use a registered preset")
        model_class = SD3Transformer2DModel if spec.family == "sd3" else FluxTransformer2DModel
        with torch.device("meta"):
            components = {"transformer": model_class(**spec.transformer_config)}
            components.update({name: _component(path, config)
                               for name, (path, config) in spec.component_configs.items()})
        return {name: module.to(getattr(torch, spec.dtype)) for name, module in components.items()}
    finally:
        diffusers_logging.set_verbosity(verbosity)


def transformer_flops(transformer: Any, spec: Any, sampling: Any, text_tokens: int) -> dict[str, int]:
    """FLOPs of one denoising step (one forward, or two with CFG) at the sampling resolution."""
    import torch

    from harness.models.families import transformer_inputs

    cfg = sampling.guidance_scale > 1 and spec.family == "sd3"
    device = next(transformer.parameters()).device
    inputs = transformer_inputs(transformer, 2 if cfg else 1, sampling.height, sampling.width, text_tokens,
                                device, next(transformer.parameters()).dtype)
    with count_flops() as counts, torch.no_grad():
        transformer(**inputs)
    return {**counts, "total": sum(counts.values()), "batch": 2 if cfg else 1}


def text_tokens_of(spec: Any, sampling: Any, components: dict[str, Any]) -> int:
    """How many text tokens the transformer sees: SD3 77 CLIP tokens + the T5 length; FLUX the T5 length."""
    t5 = sampling.max_sequence_length or (256 if spec.family == "sd3" else 512)
    if spec.family == "flux":
        return t5
    clip = components["text_encoder"].config.max_position_embeddings if "text_encoder" in components else 77
    return clip + t5


def estimate(model_name: str, methods: list[str], settings: list[str]) -> dict[str, Any]:
    """Weight bytes per component and transformer FLOPs per step, before and after the chain."""
    from types import SimpleNamespace

    from harness.models.footprint import parameter_count, weight_bytes
    from harness.models.loading import resolve_model
    from harness.params import parse_set_options
    from harness.registry import COMPRESSORS
    from harness.runner import instantiate

    spec = resolve_model(model_name)
    for name in methods:
        COMPRESSORS.entry(name)
    compressors = instantiate(COMPRESSORS, methods, parse_set_options(settings, list(dict.fromkeys(methods))))
    components = build_architecture(spec)
    sampling = spec.sampling
    tokens = text_tokens_of(spec, sampling, components)
    before = {name: weight_bytes(module) for name, module in components.items()}
    flops_before = transformer_flops(components["transformer"], spec, sampling, tokens)
    model = SimpleNamespace(spec=spec, transformer=components["transformer"], source=spec.repo_id or "",
                            fingerprint=f"architecture:{spec.name}")
    steps = []
    for compressor in compressors:
        steps.append({"name": compressor.name, "params": compressor.resolved_params(),
                      "structure": compressor.apply_structure(model)})
    after = {name: weight_bytes(module) for name, module in components.items()}
    flops_after = transformer_flops(components["transformer"], spec, sampling, tokens)
    return {
        "model": spec.name, "method": "+".join(methods), "dtype": spec.dtype, "chain": steps,
        "sampling": sampling.as_dict(), "text_tokens": tokens,
        "weight_bytes": {"before": before, "after": after},
        "transformer_parameters_after": parameter_count(components["transformer"]),
        "transformer_flops_per_step": {"before": flops_before, "after": flops_after},
    }
