"""`harness estimate`: weight bytes of the real presets from their architectures alone (checked against the
HierarchicalPrune release's measurements, FACTS section 1), and FLOPs counted from the modules against
torch.utils.flop_counter."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import invoke
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from harness.devices import GIB
from harness.flops import transformer_flops
from harness.models.architecture import build_architecture, text_tokens_of
from harness.models.families import family_of_transformer
from harness.models.presets import PRESETS


def _estimate(*args: str) -> dict:
    result = invoke("estimate", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _transformer_gib(report: dict, when: str) -> float:
    return report["weight_bytes"][when]["transformer"] / GIB


def test_sd35_large_turbo_and_the_published_cut_with_nf4():
    report = _estimate("--model", "sd3.5-large-turbo", "--method", "hierarchicalprune+nf4")
    assert _transformer_gib(report, "before") == pytest.approx(15.56, rel=0.03)  # measured by the release
    # published cut + NF4, weights only: the paper's 3.56 GiB is a forward peak (activations on top)
    assert 3.0 <= _transformer_gib(report, "after") <= 3.56
    assert report["chain"][0]["structure"]["removed_blocks"] == [25, 26, 27, 28, 31, 32, 33, 34]
    flops = report["transformer_flops_per_step"]
    assert flops["after"]["total"] < 0.85 * flops["before"]["total"]


@pytest.mark.parametrize(("model", "measured_gib"), [("sd3.5-medium", 4.63), ("flux.1-schnell", 22.16)])
def test_transformer_weights_of_the_other_presets(model, measured_gib):
    report = _estimate("--model", model)
    assert _transformer_gib(report, "before") == pytest.approx(measured_gib, rel=0.03)


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-sd3.5-medium", "tiny-flux", "reference"])
def test_flops_match_torch_flop_counter(model):
    spec = PRESETS[model]
    components = build_architecture(spec)
    transformer = components["transformer"]
    tokens = text_tokens_of(spec, spec.sampling, components)
    ours = transformer_flops(transformer, spec, spec.sampling, tokens)
    inputs = family_of_transformer(transformer).transformer_inputs(transformer, ours["batch"], spec.sampling.height,
                                                                   spec.sampling.width, tokens)
    # the math backend spells attention as matmuls, which the flop counter counts (its CPU fused kernel it does not)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        transformer(**inputs)
    assert ours["attention"] > 0
    assert ours["total"] == pytest.approx(counter.get_total_flops(), rel=0.05)


def test_quantised_estimate_equals_real_quantised_bytes():
    from harness.models.footprint import weight_bytes
    from harness.models.loading import load_model

    estimated = _estimate("--model", "tiny-sd3", "--method", "depth-last+nf4")["weight_bytes"]["after"]["transformer"]
    model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
    from compressors.pruning import DepthLast
    from compressors.quantize import BitsAndBytes4Bit

    DepthLast().apply(model)
    BitsAndBytes4Bit().apply(model)
    # exact but for bitsandbytes' serialised statistics (a JSON string per layer whose floats vary in length)
    assert estimated == pytest.approx(weight_bytes(model.transformer), rel=1e-3)


@pytest.mark.slow
def test_every_preset_estimates():
    for name in PRESETS:
        report = _estimate("--model", name)
        assert report["weight_bytes"]["before"]["transformer"] > 0
        assert report["transformer_flops_per_step"]["before"]["total"] > 0


def test_the_paper_recipe_dry_run_prints_the_whole_plan():
    result = invoke("recipe", "sd3.5-large-turbo-paper", "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = result.stdout
    for method in ("none", "hierarchicalprune", "hierarchicalprune+nf4", "depth-last", "depth-uniform", "nf4"):
        assert f". {method}\n" in plan
    assert plan.count("images: geneval 2212, hpsv2 3200, latency 0, memory 0") == 6
    assert "--seed-mode per-prompt" in plan and "hierarchicalprune.published_cut=true" in plan
    weights = [float(line.split("GPU weights: ")[1].split(" GiB")[0]) for line in plan.splitlines()
               if "GPU weights:" in line]
    # bf16 pipeline: transformer 15.17 + T5-XXL 8.87 (4.762 B, its shared embedding once) + CLIP-L 0.23 + CLIP-G 1.29
    # + VAE 0.16
    assert weights[0] == pytest.approx(25.72, abs=0.05)
    assert weights[2] < weights[1] < weights[0]  # the cut, then the cut with NF4


def test_a_new_presets_recipe_analyses_first_on_the_papers_prompt_count():
    """No published cut exists: step 0 is the contribution analysis, on the paper's whole-block protocol (100 HPSv2
    prompts per style, one image each, for the original and every block removed), unless --limit asks for fewer.
    The four new presets share the recipe; Z-Image-Turbo (34 blocks with its refiners) is the quickest to plan."""
    model, blocks = "z-image-turbo", 34
    plan = invoke("recipe", f"{model}-hierarchicalprune", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    step = lines.index("0. contribution analysis")
    assert f"harness analyze --model {model} --metric hpsv2/overall" in lines[step + 1]
    assert "--limit 100" in lines[step + 1]
    assert lines[step + 2].startswith(f"   images: hpsv2 {(blocks + 1) * 4 * 100} ")
    assert plan.stdout.count("images: geneval 2212, hpsv2 3200, latency 0, memory 0") == 6
    weights = [float(line.split("GPU weights: ")[1].split(" GiB")[0]) for line in lines if "GPU weights:" in line]
    assert weights[2] < weights[1] < weights[0] and weights[2] < weights[5]  # the cut with NF4 holds the least
    fewer = invoke("recipe", f"{model}-hierarchicalprune", "--dry-run", "--limit", "5")
    assert f"images: hpsv2 {(blocks + 1) * 4 * 5} " in fewer.stdout


def test_tied_weights_are_counted_once():
    """T5 ties its encoder's token embedding to the shared one: state_dict lists it under both keys, the weights hold
    it once (T5-XXL: 0.25 GiB in bfloat16 that the estimate and the memory suite would count twice)."""
    from harness.models.footprint import weight_bytes
    from harness.models.loading import load_model

    t5 = load_model(PRESETS["tiny-flux"], weights=None, device="cpu").pipeline.text_encoder_2
    assert t5.shared.weight is t5.encoder.embed_tokens.weight
    unique = {id(t): t for t in [*t5.parameters(), *t5.buffers()]}
    assert weight_bytes(t5) == sum(t.numel() * t.element_size() for t in unique.values())
