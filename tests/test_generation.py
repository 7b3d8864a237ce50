"""The generation engine on the tiny SD3 model: fixed batch plans, seeds, resume, shards, cache keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.generation import (
    GenerationSetup,
    ImageCache,
    ImageRequest,
    generate,
    image_seed,
    plan_batches,
    to_uint8,
)
from harness.models.loading import load_model
from harness.models.presets import PRESETS

PROMPTS = ["a red apple", "two cats on a sofa", "a blue car", "a lighthouse", "three tulips"]


@pytest.fixture(scope="module")
def model():
    return load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")


def setup_for(model, seed_mode="per-image", chain=()) -> GenerationSetup:
    return GenerationSetup.for_model(model, model.spec.sampling, seed_mode, 7, chain)


def requests(samples: int = 1) -> list[ImageRequest]:
    return [ImageRequest(p, i, s) for i, p in enumerate(PROMPTS) for s in range(samples)]


def images(cache: ImageCache, setup, reqs, batch_size) -> list[np.ndarray]:
    return [cache.read(k)[0] for b in plan_batches(setup, reqs, batch_size) for k in b.keys]


def test_batch_plan_is_fixed_and_keys_name_their_batch(model):
    setup = setup_for(model)
    plan = plan_batches(setup, requests(), 2)
    assert [len(b.requests) for b in plan] == [2, 2, 1]
    assert plan_batches(setup, requests(), 2) == plan
    # the same request in another batch composition gets another key: pixels may differ across compositions
    alone = plan_batches(setup, requests()[:1], 2)
    assert alone[0].keys[0] != plan[0].keys[0]
    # the same batch keeps its keys when only a prefix of the list runs (resume, --limit)
    assert plan_batches(setup, requests()[:4], 2)[:2] == plan[:2]
    all_keys = [k for b in plan for k in b.keys]
    assert len(set(all_keys)) == len(all_keys)


def test_seeds_are_per_image_and_stable():
    seeds = {image_seed(0, p, s) for p in range(50) for s in range(4)}
    assert len(seeds) == 200
    assert image_seed(0, 3, 1) == image_seed(0, 3, 1) != image_seed(1, 3, 1)


def test_different_chains_and_settings_never_share_cache_keys(model):
    base = setup_for(model)
    nf4 = setup_for(model, chain=(("quantize", '{"scheme": "nf4"}'),))
    int8 = setup_for(model, chain=(("quantize", '{"scheme": "int8"}'),))
    keys = [set(k for b in plan_batches(s, requests(), 2) for k in b.keys) for s in (base, nf4, int8)]
    assert not (keys[0] & keys[1]) and not (keys[1] & keys[2]) and not (keys[0] & keys[2])


def test_resume_regenerates_only_missing_images_bit_identically(model, tmp_path):
    setup, reqs = setup_for(model), requests()
    full = ImageCache(tmp_path / "full")
    stats = generate(model, setup, reqs, full, batch_size=2, sampling=model.spec.sampling, progress=False)
    assert (stats.generated, stats.cached) == (5, 0)
    reference = images(full, setup, reqs, 2)
    assert len({im.tobytes() for im in reference}) == 5  # distinct seeds, distinct images

    plan = plan_batches(setup, reqs, 2)
    full.path(plan[1].keys[0]).unlink()  # one image of the middle batch lost
    full.path(plan[2].keys[0]).unlink()
    again = generate(model, setup, reqs, full, batch_size=2, sampling=model.spec.sampling, progress=False)
    assert (again.generated, again.cached) == (2, 3)
    assert all(np.array_equal(a, b) for a, b in zip(images(full, setup, reqs, 2), reference, strict=True))


def test_shards_together_equal_one_process(model, tmp_path):
    setup, reqs = setup_for(model), requests()
    single, sharded = ImageCache(tmp_path / "one"), ImageCache(tmp_path / "two")
    generate(model, setup, reqs, single, batch_size=2, sampling=model.spec.sampling, progress=False)
    counts = [generate(model, setup, reqs, sharded, batch_size=2, sampling=model.spec.sampling, rank=r,
                       world_size=2, progress=False).generated for r in (0, 1)]
    assert counts == [3, 2]  # batches 0 and 2 on rank 0, batch 1 on rank 1
    pairs = zip(images(single, setup, reqs, 2), images(sharded, setup, reqs, 2), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)


def test_per_prompt_mode_matches_diffusers_own_generator_and_resumes(model, tmp_path):
    """One generator per prompt, seeded once, drawing the prompt's samples batch after batch, as GenEval does."""
    setup, reqs = setup_for(model, seed_mode="per-prompt"), requests(samples=4)[:8]  # 2 prompts x 4 samples
    cache = ImageCache(tmp_path / "cache")
    generate(model, setup, reqs, cache, batch_size=2, sampling=model.spec.sampling, progress=False)
    ours = images(cache, setup, reqs, 2)

    from harness.models.families import family_of

    expected = []
    for prompt in PROMPTS[:2]:
        generator = torch.Generator("cpu").manual_seed(7)
        for _ in range(2):  # two batches of two samples from the same generator
            out = model.pipeline(prompt=[prompt] * 2, generator=generator, output_type="np",
                                 **family_of("sd3").call_kwargs(model.spec.sampling, 2))
            expected.extend(to_uint8(out.images))
    assert all(np.array_equal(a, b) for a, b in zip(ours, expected, strict=True))

    plan = plan_batches(setup, reqs, 2)
    for key in plan[1].keys + plan[3].keys:  # the second batch of each prompt: needs the generator replayed
        cache.path(key).unlink()
    stats = generate(model, setup, reqs, cache, batch_size=2, sampling=model.spec.sampling, progress=False)
    assert stats.generated == 4
    assert all(np.array_equal(a, b) for a, b in zip(images(cache, setup, reqs, 2), expected, strict=True))
