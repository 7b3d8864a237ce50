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

from typing import Any


def estimate(model_name: str, methods: list[str], settings: list[str]) -> dict[str, Any]:
    """Weight bytes per component and transformer FLOPs per step, before and after the chain."""
    from types import SimpleNamespace

    from harness.commands.setup import instantiate_chain
    from harness.devices import GIB, fits
    from harness.flops import transformer_flops
    from harness.models.architecture import build_architecture, text_tokens_of
    from harness.models.families import family_of
    from harness.models.footprint import parameter_count, weight_bytes
    from harness.models.loading import resolve_model
    from harness.params import parse_set_options
    from harness.registry import COMPRESSORS

    spec = resolve_model(model_name)
    for name in methods:
        COMPRESSORS.entry(name)
    compressors = instantiate_chain(methods, parse_set_options(settings, list(dict.fromkeys(methods))))
    components = build_architecture(spec)
    sampling = spec.sampling
    tokens = text_tokens_of(spec, sampling, components)
    before = {name: weight_bytes(module) for name, module in components.items()}
    flops_before = transformer_flops(components["transformer"], spec, sampling, tokens)
    model = SimpleNamespace(spec=spec, transformer=components["transformer"], family=family_of(spec.family),
                            source=spec.repo_id or "", fingerprint=f"architecture:{spec.name}")
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
        # the whole pipeline's weights after the chain against each GPU profile (activations come on top)
        "fits": fits(sum(after.values()) / GIB, "pipeline weights after the chain, activations not included"),
    }


def format_estimate(report: dict[str, Any]) -> str:
    """The estimate as a text table: weight GiB per component before and after, FLOPs per step, chain structure."""
    import json

    from harness.devices import GIB

    before, after = report["weight_bytes"]["before"], report["weight_bytes"]["after"]
    lines = [f"{report['model']} with {report['method']} ({report['dtype']}); weights in GiB (2^30 bytes)",
             f"{'component':<16} {'before':>10} {'after':>10}"]
    lines += [f"{name:<16} {before[name] / GIB:>10.3f} {after[name] / GIB:>10.3f}" for name in before]
    lines.append(f"{'total':<16} {sum(before.values()) / GIB:>10.3f} {sum(after.values()) / GIB:>10.3f}")
    flops = report["transformer_flops_per_step"]
    ratio = flops["after"]["total"] / flops["before"]["total"]
    lines.append(f"transformer FLOPs per denoising step: {flops['before']['total'] / 1e12:.2f} T -> "
                 f"{flops['after']['total'] / 1e12:.2f} T ({ratio:.1%}); batch {flops['before']['batch']} x "
                 f"{flops['before']['forwards']} forward(s), {report['sampling']['height']}x"
                 f"{report['sampling']['width']}, {report['text_tokens']} text tokens")
    lines += [f"{step['name']}: {json.dumps(step['structure'])}" for step in report["chain"]]
    verdicts = report["fits"]
    lines.append(f"weights fit ({verdicts[0]['basis']}): "
                 + (", ".join(v["profile"] for v in verdicts if v["fits"]) or "no profile")
                 + "; too large for: " + (", ".join(v["profile"] for v in verdicts if not v["fits"]) or "none"))
    return "\n".join(lines)
