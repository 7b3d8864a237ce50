"""One suite over every family, on each family's tiny pipeline: what works for SD3.5 and FLUX.1 works for each.

Structure (blocks, removal with save/load round trips, skips equal to removal bit for bit, every skip restored),
the family's hooks against its own pipeline (noise drawn as the pipeline draws it, bare and meta-device forwards,
training inputs), and the commands end to end: `analyze`, `run` with hierarchicalprune+nf4 on fidelity, latency and
memory with that ranking, `compress --save` and loading back, the depth baselines, the quantisers, the step caches
and compilation. Family-specific facts (SD3's final block, dual-attention positions, FLUX's zero MLP branch) stay in
test_surgery.py and test_topology.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import invoke, read_results, run_args

from harness.flops import transformer_flops
from harness.models.families import family_of
from harness.models.presets import PRESETS
from harness.models.surgery import Ablation, removable_blocks, remove_blocks, skip
from harness.models.topology import block_topology, component_modules

# one tiny pipeline per family (SD3.5 Medium's dual-attention blocks count as their own)
FAMILY_MODELS = ["tiny-sd3", "tiny-sd3.5-medium", "tiny-flux"]
PROMPTS = ["a red cube", "two cats"]


def _transformer(name: str) -> torch.nn.Module:
    return PRESETS[name].build().transformer.eval()


@pytest.fixture(scope="module", params=FAMILY_MODELS)
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def transformer(name) -> torch.nn.Module:
    return _transformer(name)


def _forward(transformer: torch.nn.Module, name: str) -> torch.Tensor:
    family = family_of(PRESETS[name].family)
    with torch.no_grad():
        inputs = family.transformer_inputs(transformer, 2, 64, 64, 5, generator=torch.Generator().manual_seed(0))
        return transformer(**inputs)[0]


def test_builds_are_bit_identical_and_leave_the_global_rng_alone(name):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first, second = PRESETS[name].build(), PRESETS[name].build()
    assert torch.equal(torch.rand(1), expected_next)
    for component in ("transformer", "vae", "text_encoder"):
        a, b = first.components[component].state_dict(), second.components[component].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), component


def test_the_components_of_each_block_are_disjoint_named_parts_of_it(name, transformer):
    family = family_of(PRESETS[name].family)
    blocks = block_topology(transformer)
    assert len(blocks) >= 3 and [b.index for b in blocks] == list(range(len(blocks)))
    for block in blocks:
        assert block.components == family.kind_components[block.kind]
        owned = [p for c in block.components for m in component_modules(transformer, block, c).values()
                 for p in m.parameters()]
        assert owned and len({id(p) for p in owned}) == len(owned), block  # each parameter in one component
        assert {id(p) for p in owned} <= {id(p) for p in transformer.get_submodule(block.path).parameters()}


def test_removal_round_trips_with_no_missing_keys(name, tmp_path):
    transformer = _transformer(name)  # a fresh copy: removal is destructive
    blocks = block_topology(transformer)
    victims = [b.index for b in removable_blocks(transformer)][1::2]  # every other removable block
    assert victims
    assert [b.index for b in remove_blocks(transformer, victims)] == victims
    assert len(block_topology(transformer)) == len(blocks) - len(victims)
    expected = _forward(transformer, name)
    transformer.save_pretrained(tmp_path)
    reloaded, info = type(transformer).from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert [b.kind for b in block_topology(reloaded)] == [b.kind for b in block_topology(transformer)]
    torch.testing.assert_close(_forward(reloaded.eval(), name), expected, rtol=0, atol=0)


def test_skipping_a_block_equals_removing_it_bit_for_bit(name, transformer):
    # the first removable block of each kind in each block list
    firsts: dict[tuple[str, str], int] = {}
    for block in removable_blocks(transformer):
        firsts.setdefault((block.path.rsplit(".", 1)[0], block.kind), block.index)
    for index in firsts.values():
        with skip(transformer, Ablation(index)):
            skipped = _forward(transformer, name)
        pruned = _transformer(name)
        remove_blocks(pruned, [index])
        torch.testing.assert_close(skipped, _forward(pruned, name), rtol=0, atol=0)


def test_every_skip_changes_the_output_and_restores_exactly(name, transformer):
    original = _forward(transformer, name)
    parameters = dict(transformer.named_parameters())
    for block in block_topology(transformer):
        for component in (None, *block.components):
            with skip(transformer, Ablation(block.index, component)):
                changed = _forward(transformer, name)
            assert torch.isfinite(changed).all()
            assert not torch.equal(changed, original), f"skipping {block.index}.{component} changed nothing"
    torch.testing.assert_close(_forward(transformer, name), original, rtol=0, atol=0)
    assert all(parameters[k] is p for k, p in transformer.named_parameters())


def test_noise_drawn_by_the_family_is_what_the_pipeline_draws(name):
    """The harness hands the pipeline latents from `draw_noise`; the images equal the pipeline's own from the same
    generator, so a cached image is the image the pipeline makes."""
    spec = PRESETS[name]
    family, sampling = family_of(spec.family), spec.sampling
    pipe = spec.build()
    pipe.set_progress_bar_config(disable=True)
    kwargs = {**family.call_kwargs(sampling, len(PROMPTS)), "num_inference_steps": 2}

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(seed) for seed in (0, 1)]

    with torch.no_grad():
        own = pipe(prompt=PROMPTS, generator=generators(), output_type="np", **kwargs).images
        latents = family.draw_noise(pipe, len(PROMPTS), sampling, generators(), torch.device("cpu"), torch.float32)
        ours = pipe(prompt=PROMPTS, latents=latents, output_type="np", **kwargs).images
    assert own.shape == (2, 64, 64, 3) and np.isfinite(own).all() and own.std() > 0.01
    assert not np.array_equal(own[0], own[1])
    np.testing.assert_array_equal(ours, own)


def test_a_saved_pipeline_loads_back_drawing_the_same_images(name, tmp_path):
    spec = PRESETS[name]
    family = family_of(spec.family)
    pipe = spec.build()
    pipe.save_pretrained(tmp_path)
    # components saved as [null, null] (SD3 without T5) are passed as None, as the harness loads such folders
    absent = {k: None for k, v in json.loads((tmp_path / "model_index.json").read_text()).items() if v == [None, None]}
    reloaded = family.pipeline_class().from_pretrained(tmp_path, **absent)
    kwargs = {**family.call_kwargs(spec.sampling, 1), "num_inference_steps": 2, "output_type": "np"}
    for p in (pipe, reloaded):
        p.set_progress_bar_config(disable=True)
    with torch.no_grad():
        images = [p(prompt=PROMPTS[:1], generator=torch.Generator().manual_seed(0), **kwargs).images
                  for p in (pipe, reloaded)]
    np.testing.assert_array_equal(*images)


def test_bare_forwards_run_on_the_cpu_and_count_the_same_flops_on_the_meta_device(name, transformer):
    spec = PRESETS[name]
    family = family_of(spec.family)
    tokens = family.text_tokens(spec.sampling, {})
    on_cpu = transformer_flops(transformer, spec, spec.sampling, tokens)
    with torch.device("meta"):
        meta = family.transformer_class()(**spec.transformer_config)
    assert next(meta.parameters()).device.type == "meta"
    on_meta = transformer_flops(meta, spec, spec.sampling, tokens)
    assert on_meta == on_cpu and on_cpu["total"] > 0
    guided = family.forward_batch_size(spec.sampling, 1) * family.forwards_per_step(spec.sampling)
    assert guided == (2 if spec.sampling.guidance_scale > 1 and family.takes_negative_prompt else 1)


def test_training_inputs_give_a_velocity_shaped_like_the_latents(name):
    spec = PRESETS[name]
    family = family_of(spec.family)
    pipe = spec.build()
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    sigma = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        latents = family.training_latents(pipe, images)
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
        s = sigma.view(-1, *[1] * (latents.dim() - 1))
        x_t = s * noise + (1 - s) * latents
        inputs = family.training_inputs(pipe, x_t, sigma, (64, 64), PROMPTS, spec.sampling, torch.device("cpu"),
                                        torch.float32)
        velocity = pipe.transformer(**inputs)[0]
    assert velocity.shape == x_t.shape and torch.isfinite(velocity).all()


# -- the commands, end to end ------------------------------------------------------------------------------------

FAST = ("--set", "sampling.num_inference_steps=2", "--no-progress")


@pytest.mark.slow
def test_analyze_then_hierarchicalprune_nf4_then_compress_and_load_back(name, dirs, tmp_path):
    analysis = tmp_path / "analysis"
    analyzed = invoke("analyze", "--model", name, "--metric", "fidelity/ssim", "--limit", "2", "--cache-dir",
                      str(dirs["cache"]), "--out", str(analysis), *FAST)
    assert analyzed.returncode == 0, analyzed.stderr
    ranking = analysis / "contribution_ranking.json"
    scores = json.loads(ranking.read_text())["scores"]
    assert len(scores) == len(block_topology(_transformer(name)))
    method = ("--method", "hierarchicalprune+nf4", "--set", f"hierarchicalprune.ranking={ranking}",
              "--set", "hierarchicalprune.budget=0.3", "--set", "hierarchicalprune.distill_steps=2",
              "--set", "hierarchicalprune.distill_batch_size=2")
    run = invoke(*run_args(dirs, "--model", name, *method, "--suite", "fidelity,latency,memory", "--limit", "4",
                           "--set", "latency.repeats=1", "--set", "latency.forward_repeats=1", *FAST))
    assert run.returncode == 0, run.stderr
    result = read_results(run.stdout)
    assert 0 < float(result["metrics"]["fidelity/ssim"]) < 1
    assert float(result["metrics"]["latency/end_to_end"]) > 0
    assert result["model"]["transformer_parameters"] < sum(p.numel() for p in _transformer(name).parameters())
    saved = tmp_path / "saved"
    compressed = invoke("compress", "--model", name, *method, "--save", str(saved), "--cache-dir",
                        str(dirs["cache"]), *FAST)
    assert compressed.returncode == 0, compressed.stderr
    again = invoke(*run_args(dirs, "--model", str(saved), "--suite", "fidelity", "--limit", "4", *FAST))
    assert again.returncode == 0, again.stderr
    reloaded = read_results(again.stdout)
    assert reloaded["model"]["transformer_parameters"] == result["model"]["transformer_parameters"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["depth-last", "depth-uniform+int8dq", "torchao-int8+fbcache",
                                    "int8+taylorseer", "torchao-int4+pab", "nf4+compile"])
def test_baselines_quantisers_and_speed_methods_run(name, method, dirs):
    extra = ("--set", "compile.backend=eager") if "compile" in method else ()
    run = invoke(*run_args(dirs, "--model", name, "--method", method, "--suite", "fidelity", "--limit", "2",
                           *extra, *FAST))
    assert run.returncode == 0, run.stderr
    assert np.isfinite(float(read_results(run.stdout)["metrics"]["fidelity/psnr"]))
