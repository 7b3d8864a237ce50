"""Step caching (compressors/caching.py) through the harness's denoising scope: bit-identity at threshold 0, no state
across batches, what a run records, refused chain orders, families that set no cache context (SD3) and one that does
(FLUX)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke, read_results, run_args

from compressors.caching import FirstBlockCache, PyramidAttentionBroadcast, TaylorSeer
from harness.generation import GenerationSetup, ImageCache, ImageRequest, generate, load_samples
from harness.models.denoising import denoising_scope
from harness.models.loading import load_model
from harness.models.presets import PRESETS

PROMPTS = ["a red circle", "two blue squares", "a green triangle above a red circle", "three yellow stars"]
REQUESTS = [ImageRequest(p, i, 0) for i, p in enumerate(PROMPTS)]


def _model(name: str = "reference"):
    return load_model(PRESETS[name], weights=None, device="cpu")


def _images(model, cache_dir: Path, requests=REQUESTS, batch_size=2, chain=()):
    """Generate `requests` with `model` as it is now into a cache; their samples (pixels and transformer calls)."""
    setup = GenerationSetup.for_model(model, model.spec.sampling, chain=chain)
    cache = ImageCache(cache_dir)
    generate(model, setup, requests, cache, batch_size=batch_size, sampling=model.spec.sampling, progress=False)
    return load_samples(cache, setup, requests, batch_size)


def test_threshold_zero_first_block_cache_is_bit_identical_to_no_cache(tmp_path):
    model = _model()
    plain = _images(model, tmp_path / "plain")
    FirstBlockCache(FirstBlockCache.Params(threshold=0.0)).apply(model)
    cached = _images(model, tmp_path / "cached", chain=(("fbcache", "0"),))
    steps = model.spec.sampling.num_inference_steps
    for a, b in zip(plain, cached, strict=True):
        assert np.array_equal(a.image, b.image)
        assert b.transformer_calls == {"transformer_calls": steps, "computed_calls": steps, "block_work": 1.0}
    assert plain[0].transformer_calls == cached[0].transformer_calls


def test_a_reusing_cache_records_fewer_computed_calls_and_changes_pixels(tmp_path):
    model = _model()
    plain = _images(model, tmp_path / "plain", REQUESTS[:2])
    FirstBlockCache(FirstBlockCache.Params(threshold=0.3)).apply(model)
    cached = _images(model, tmp_path / "cached", REQUESTS[:2], chain=(("fbcache", "0.3"),))
    calls = cached[0].transformer_calls
    assert calls["transformer_calls"] == model.spec.sampling.num_inference_steps
    assert 1 <= calls["computed_calls"] < calls["transformer_calls"]
    assert 0 < calls["block_work"] < 1
    assert not np.array_equal(plain[0].image, cached[0].image)


@pytest.mark.parametrize("method", [FirstBlockCache(FirstBlockCache.Params(threshold=0.3)),
                                    TaylorSeer(TaylorSeer.Params(cache_interval=2)),
                                    PyramidAttentionBroadcast(PyramidAttentionBroadcast.Params(skip_range=3))],
                         ids=lambda m: m.name)
def test_cache_state_never_crosses_batches(tmp_path, method):
    """A batch's pixels are the same whether it runs first, after other batches, or alone on a fresh model."""
    model = _model()
    method.apply(model)
    forward = _images(model, tmp_path / "forward")
    backward = _images(model, tmp_path / "backward", REQUESTS[::-1])
    fresh = _model()
    type(method)(method.params).apply(fresh)
    alone = _images(fresh, tmp_path / "alone", REQUESTS[2:])
    by_prompt = {s.request.prompt: s for s in backward}
    for sample in forward:
        assert np.array_equal(sample.image, by_prompt[sample.request.prompt].image)
    for sample in alone:
        assert np.array_equal(sample.image, forward[sample.request.prompt_index].image)
    assert forward[0].transformer_calls["computed_calls"] < forward[0].transformer_calls["transformer_calls"]


def test_each_scope_starts_empty_so_a_bare_forward_computes_in_full():
    model = _model()
    FirstBlockCache(FirstBlockCache.Params(threshold=10.0)).apply(model)  # reuses whenever it can
    family, transformer = model.family, model.transformer
    inputs = family.transformer_inputs(transformer, 2, 64, 64, 17, generator=torch.Generator().manual_seed(0))
    # the next step's timestep: a repeated one would be that step's unconditional call, a cache context of its own
    next_step = {**inputs, "timestep": inputs["timestep"] * 0.5}
    with torch.inference_mode():
        with denoising_scope(transformer, count=True) as together:
            first = transformer(**inputs)[0]
            transformer(**next_step)
        with denoising_scope(transformer, count=True) as alone:
            again = transformer(**inputs)[0]
    assert together.computed == 1 and together.calls == 2  # the second call of one scope reused the first's blocks
    assert alone.computed == 1 and alone.layer_runs == together.layer_runs[:1]
    assert torch.equal(first, again)


def test_flux_pipelines_set_their_own_context_and_the_cache_works_there(tmp_path):
    """Also after the pipeline ran uncached (as the originals are drawn before the chain): FLUX's first cache
    context makes diffusers remember the transformer's hook registries, which must then learn of the new hooks."""
    model = _model("tiny-flux")
    _images(model, tmp_path / "originals", REQUESTS[:1])
    FirstBlockCache(FirstBlockCache.Params(threshold=10.0)).apply(model)
    calls = _images(model, tmp_path / "flux", REQUESTS[:2], chain=(("fbcache", "10"),))[0].transformer_calls
    assert calls["transformer_calls"] == model.spec.sampling.num_inference_steps
    assert calls["computed_calls"] == 1  # the first step computes, every later one reuses


def test_a_run_records_transformer_calls_and_keeps_them_when_images_are_cached(dirs):
    args = run_args(dirs, "--model", "reference", "--method", "fbcache", "--set", "fbcache.threshold=0.3",
                    "--suite", "fidelity", "--limit", "2")
    first = invoke(*args)
    assert first.returncode == 0, first.stderr
    result = read_results(first.stdout)
    calls = result["suites"]["fidelity"]["transformer_calls"]
    assert calls["images"] == 2 and calls["transformer_calls_per_image"] == 20
    assert calls["computed_calls_per_image"] < 20
    assert result["compression"]["steps"][0]["cost"]["hooked_blocks"] == 11  # the final block always computes
    rows = [json.loads(line) for line in (Path(first.stdout.strip().splitlines()[-1]).parent / "samples.jsonl")
            .read_text().splitlines()]
    assert [row["transformer_calls"] for row in rows] == [20, 20]
    assert sum(row["computed_calls"] for row in rows) / 2 == calls["computed_calls_per_image"]
    again = read_results(invoke(*args).stdout)
    assert again["generation"]["images_generated_main_process"] == 0
    assert again["suites"]["fidelity"]["transformer_calls"] == calls


def test_two_thresholds_never_share_images(dirs):
    paths = []
    for threshold in ("0.1", "0.2"):
        proc = invoke(*run_args(dirs, "--method", "fbcache", "--set", f"fbcache.threshold={threshold}",
                                "--suite", "fidelity", "--limit", "1"))
        assert proc.returncode == 0, proc.stderr
        folder = Path(proc.stdout.strip().splitlines()[-1]).parent
        paths.append({json.loads(line)["image"] for line in (folder / "samples.jsonl").read_text().splitlines()})
    assert paths[0].isdisjoint(paths[1])


@pytest.mark.parametrize(("methods", "fix"), [
    ("fbcache+depth-last", "depth-last+fbcache"),
    ("nf4+depth-uniform", "depth-uniform+nf4"),
    ("fbcache+nf4", "nf4+fbcache"),
])
def test_chains_out_of_stage_order_are_refused_with_the_order_to_use(dirs, methods, fix):
    proc = invoke(*run_args(dirs, "--method", methods))
    assert proc.returncode == 2
    assert f"--method {fix}" in proc.stderr and "Traceback" not in proc.stderr


def test_two_step_caches_and_compressing_a_step_cache_are_refused(dirs, tmp_path):
    both = invoke(*run_args(dirs, "--method", "fbcache+taylorseer"))
    assert both.returncode == 2 and "choose one" in both.stderr
    saved = invoke("compress", "--model", "tiny-sd3", "--method", "depth-last+fbcache", "--save",
                   str(tmp_path / "saved"), "--cache-dir", str(dirs["cache"]), "--no-progress")
    assert saved.returncode == 2 and "--method depth-last" in saved.stderr and "+fbcache" in saved.stderr
    assert not (tmp_path / "saved").exists()


def test_step_cache_parameters_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        FirstBlockCache.Params(threshold=-1)
    with pytest.raises(ValueError, match="skip_to < skip_from"):
        PyramidAttentionBroadcast.Params(skip_from=100, skip_to=200)
    with pytest.raises(ValueError, match="cache_interval"):
        TaylorSeer.Params(cache_interval=0)


def test_list_shows_each_step_cache_with_its_typed_parameters():
    proc = invoke("list", "methods", "--params")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    for name, parameter in [("fbcache", "fbcache.threshold: float = 0.05"),
                            ("taylorseer", "taylorseer.cache_interval: int = 5"),
                            ("pab", "pab.skip_range: int = 2")]:
        line = next(line for line in lines if line.split()[0] == name)
        assert "Step cache" in line
        assert any(entry.strip() == parameter for entry in lines)


def test_estimate_of_a_chain_with_a_step_cache_counts_the_blocks_it_hooks():
    proc = invoke("estimate", "--model", "sd3.5-large", "--method", "depth-last+fbcache", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    removed = len(report["chain"][0]["structure"]["removed_blocks"])
    assert report["chain"][1]["structure"] == {"hooked_blocks": 38 - removed - 1}  # SD3's final block computes


def test_a_step_cache_on_a_distilled_chain_loads_the_stored_model_and_hooks_it(dirs, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red apple\na blue car\n")
    distill = ("--set", "depth-last.distill_steps=2", "--set", "depth-last.distill_batch_size=2", "--set",
               f"depth-last.distill_data={prompts}")
    plain = invoke(*run_args(dirs, "--method", "depth-last", *distill, "--limit", "1"))
    assert plain.returncode == 0, plain.stderr
    cached = invoke(*run_args(dirs, "--method", "depth-last+fbcache", *distill, "--limit", "1"))
    assert cached.returncode == 0, cached.stderr
    steps = read_results(cached.stdout)["compression"]["steps"]
    assert [s["name"] for s in steps] == ["depth-last", "fbcache"]
    assert "from_cache" in steps[0] and steps[1]["cost"]["hooked_blocks"] >= 2  # trained once, hooked every run


def test_steps_that_change_nothing_go_anywhere_and_two_caches_are_named_before_the_order():
    from compressors.base import check_chain_order
    from compressors.compile import Compile
    from compressors.none import NoCompression
    from harness.errors import UsageError

    fbcache, pab = FirstBlockCache(), PyramidAttentionBroadcast()
    check_chain_order([fbcache, NoCompression()])  # no error: `none` changes nothing
    with pytest.raises(UsageError, match="'fbcache' and 'pab' are both step-cache steps"):
        check_chain_order([fbcache, Compile(), pab])
