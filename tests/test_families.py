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
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, harness_env, invoke, read_results, run_args, run_harness

from harness.flops import transformer_flops
from harness.models.families import family_of
from harness.models.presets import PRESETS
from harness.models.saving import load_compressed_transformer
from harness.models.surgery import Ablation, removable_blocks, remove_blocks, skip
from harness.models.topology import block_topology, component_modules
from harness.ranking import load_ranking

# one tiny pipeline per family (SD3.5 Medium's dual-attention blocks count as their own)
FAMILY_MODELS = ["tiny-sd3", "tiny-sd3.5-medium", "tiny-flux", "tiny-qwenimage", "tiny-flux2", "tiny-zimage",
                 "tiny-chroma"]
# sub-components whose output the transformer discards: Qwen-Image's last block updates the text stream, which no
# layer reads after the blocks (the test asserts that skipping them changes nothing)
DISCARDED = {("tiny-qwenimage", "3.ff_context")}
PROMPTS = ("a red cube", "two cats")  # a tuple: ZImagePipeline writes its templated prompts into a list it gets


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
        return family.velocity(transformer(**inputs))


def test_builds_are_bit_identical_and_leave_the_global_rng_alone(name):
    state = torch.get_rng_state()
    first, second = PRESETS[name].build(), PRESETS[name].build()
    assert torch.equal(torch.get_rng_state(), state)
    for component, module in first.components.items():
        if isinstance(module, torch.nn.Module):
            a, b = module.state_dict(), second.components[component].state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), component
            assert not module.training, component  # as from_pretrained leaves it


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
    family = family_of(PRESETS[name].family)
    if family.keeps_block_positions:  # the removal is in place: the saved model records it, as `compress` saves
        transformer.save_pretrained(tmp_path / "transformer")
        provenance = {"family": family.name, "recipe": [], "costs": [{"cost": {"removed_blocks": victims}}]}
        # refuses any missing or unexpected key
        reloaded = load_compressed_transformer(tmp_path, family.name, "cpu", torch.float32, provenance)
        assert {k for k, _ in reloaded.named_parameters()} == {k for k, _ in transformer.named_parameters()}
    else:
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
            ablation = Ablation(block.index, component)
            with skip(transformer, ablation):
                changed = _forward(transformer, name)
            assert torch.isfinite(changed).all()
            if (name, ablation.key) in DISCARDED:
                assert torch.equal(changed, original), f"skipping {ablation.key} changed the output"
            else:
                assert not torch.equal(changed, original), f"skipping {ablation.key} changed nothing"
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
        own = pipe(prompt=list(PROMPTS), generator=generators(), output_type="np", **kwargs).images
        latents = family.draw_noise(pipe, len(PROMPTS), sampling, generators(), torch.device("cpu"), torch.float32)
        ours = pipe(prompt=list(PROMPTS), latents=latents, output_type="np", **kwargs).images
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
    for attribute, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            loaded_module = reloaded.components[attribute]
            saved, loaded = module.state_dict(), loaded_module.state_dict()
            assert saved.keys() == loaded.keys(), attribute
            assert all(torch.equal(saved[k], loaded[k]) for k in saved), attribute
            # tensors read from a safetensors file start where the file's header ends, not on a 64-byte boundary, and
            # on CPUs without AVX-512 the matmul kernels then sum in another order (images 1e-6 apart); the same
            # values in freshly allocated memory draw the same images bit for bit
            for tensor in [*loaded_module.parameters(), *loaded_module.buffers()]:
                tensor.data = tensor.data.clone()
    kwargs = {**family.call_kwargs(spec.sampling, 1), "num_inference_steps": 2, "output_type": "np"}
    for p in (pipe, reloaded):
        p.set_progress_bar_config(disable=True)
    with torch.no_grad():
        images = [p(prompt=list(PROMPTS[:1]), generator=torch.Generator().manual_seed(0), **kwargs).images
                  for p in (pipe, reloaded)]
    np.testing.assert_array_equal(*images)
    prompt = "A photo of a purple giraffe, Ünïcödé 🐱!"
    for attribute, tokenizer in pipe.components.items():
        if attribute.startswith("tokenizer") and tokenizer is not None:
            text = getattr(tokenizer, "tokenizer", tokenizer)  # a processor (FLUX.2's) holds its tokenizer
            assert getattr(reloaded, attribute) is not None, attribute
            reloaded_text = getattr(getattr(reloaded, attribute), "tokenizer", getattr(reloaded, attribute))
            assert reloaded_text(prompt).input_ids == text(prompt).input_ids, attribute


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
        inputs = family.training_inputs(pipe, x_t, sigma, (64, 64), list(PROMPTS), spec.sampling, torch.device("cpu"),
                                        torch.float32)
        velocity = family.velocity(pipe.transformer(**inputs))
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
    assert len(load_ranking(ranking).scores) == len(block_topology(_transformer(name)))
    prompts = tmp_path / "prompts.txt"  # the teacher draws the distillation's images of these
    prompts.write_text("a red circle\na blue square\n")
    method = ("--method", "hierarchicalprune+nf4", "--set", f"hierarchicalprune.ranking={ranking}",
              "--set", "hierarchicalprune.budget=0.3", "--set", "hierarchicalprune.distill_steps=2",
              "--set", "hierarchicalprune.distill_batch_size=2", "--set", f"hierarchicalprune.distill_data={prompts}")
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


# every baseline, quantiser and speed method in three chains (one step per stage each)
CHAINS = ["depth-last+int8+fbcache+compile", "depth-uniform+torchao-int4+taylorseer", "int8dq+pab"]


@pytest.mark.slow
@pytest.mark.parametrize("method", CHAINS)
def test_baselines_quantisers_and_speed_methods_run(name, method, dirs):
    extra = ("--set", "compile.backend=eager") if "compile" in method else ()
    run = invoke(*run_args(dirs, "--model", name, "--method", method, "--suite", "fidelity", "--limit", "2",
                           *extra, *FAST))
    assert run.returncode == 0, run.stderr
    assert np.isfinite(float(read_results(run.stdout)["metrics"]["fidelity/psnr"]))


# Sharding (batch i to process i % world_size, per-request generators) is the same code for every family; what is
# the family's own, its noise, is checked against each pipeline above, and SD3's sharded run is in
# test_interrupt_and_shard.py. So two more, not seven (about 40 s each): FLUX.1's packed latents (shared with Chroma)
# and Qwen-Image's two forwards per step.
SHARDED_MODELS = ["tiny-flux", "tiny-qwenimage"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARDED_MODELS)
def test_a_two_process_accelerate_run_draws_the_images_of_one_process(name, tmp_path):
    """Sharded with `accelerate launch`: the same images, bit for bit, and the same metrics as one process."""
    # one thread per process in both runs, as accelerate sets for its workers (a matmul's last bits can depend on it)
    env = harness_env(OMP_NUM_THREADS="1")
    one = {"cache": tmp_path / "one-cache", "out": tmp_path / "one-runs"}
    two = {"cache": tmp_path / "two-cache", "out": tmp_path / "two-runs"}
    job = ("--model", name, "--method", "depth-last", "--suite", "fidelity", "--limit", "2", "--batch-size", "1",
           "--device", "cpu", *FAST)
    single = run_harness(*run_args(one, *job), env=env)
    assert single.returncode == 0, single.stderr
    sharded = subprocess.run(
        [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "harness",
         *run_args(two, *job)], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert sharded.returncode == 0, sharded.stderr
    assert read_results(sharded.stdout)["generation"]["num_processes"] == 2
    assert read_results(sharded.stdout)["metrics"] == read_results(single.stdout)["metrics"]
    images = [{p.relative_to(d["cache"]): p.read_bytes() for p in (d["cache"] / "images").rglob("*.png")}
              for d in (one, two)]
    assert len(images[0]) == 4 and images[0] == images[1]  # 2 originals and 2 pruned, a batch each
