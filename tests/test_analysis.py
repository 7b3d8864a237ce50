"""Contribution analysis: `harness analyze` scores every removal in place, caches and resumes, and writes a ranking
and a heatmap; rankings load from its own format and from the HierarchicalPrune release's."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from conftest import invoke, shared_data
from PIL import Image

from harness.ranking import HEATMAP_FILE, load_ranking

FAST = ["--set", "sampling.num_inference_steps=2", "--limit", "2", "--no-progress"]


def _analyze(dirs, *extra: str):
    result = invoke("analyze", "--cache-dir", str(dirs["cache"]), "--out", str(dirs["out"]), *FAST, *extra)
    assert result.returncode == 0, result.stderr
    return result


def _cached_images(dirs) -> set:
    return {p.name for p in (dirs["cache"] / "images").rglob("*.png")}


def test_block_analysis_scores_each_removal_like_a_pruned_model(dirs):
    _analyze(dirs, "--model", "tiny-sd3", "--metric", "fidelity/ssim")
    ranking = load_ranking(dirs["out"] / "contribution_ranking.json")
    assert ranking.metric == "fidelity/ssim" and ranking.granularity == "block"
    assert sorted(ranking.scores) == ["0", "1", "2", "3"]
    assert ranking.base_score == pytest.approx(1.0)  # the original images compared with themselves
    assert all(score < 1.0 for score in ranking.scores.values())
    assert all(ranking.drop(k) == pytest.approx(1.0 - ranking.scores[k]) for k in ranking.scores)
    assert ranking.order == sorted(ranking.scores, key=lambda k: -ranking.scores[k])
    assert ranking.details["samples"] == 2  # 2 prompts, one image each (fidelity's default)

    # removing block 1 for real and scoring the same requests gives the same number
    from harness.generation import GenerationSetup, ImageCache, generate, load_samples
    from harness.models.loading import load_model, resolve_model
    from harness.models.surgery import remove_blocks
    from suites.fidelity import FidelitySuite

    spec = resolve_model("tiny-sd3")
    sampling = dataclasses.replace(spec.sampling, num_inference_steps=2)
    model = load_model(spec, weights=None, device="cpu")
    suite = FidelitySuite()
    requests = suite.requests(2)
    cache = ImageCache(dirs["cache"])
    base = GenerationSetup.for_model(model, sampling)
    references = load_samples(cache, base, requests, 4)  # cached by the analysis
    remove_blocks(model.transformer, [1])
    pruned = dataclasses.replace(base, chain=(("test-removed", "1"),))
    generate(model, pruned, requests, cache, batch_size=4, sampling=sampling, progress=False)
    score = suite.evaluate(load_samples(cache, pruned, requests, 4), references).metrics["ssim"].value
    assert score == pytest.approx(ranking.scores["1"], abs=1e-6)


def test_a_metric_infinite_on_the_original_is_refused(dirs):
    """PSNR of the original's images against themselves is infinite: every drop would be too, ties would fall back
    on block index and hierarchicalprune would remove the earliest blocks. Refused, naming a metric that works."""
    result = invoke("analyze", "--model", "tiny-sd3", "--metric", "fidelity/psnr", "--cache-dir", str(dirs["cache"]),
                    "--out", str(dirs["out"]), *FAST)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "fidelity/psnr of the uncompressed model is inf" in result.stderr and "fidelity/ssim" in result.stderr
    assert not dirs["out"].exists()  # nothing half-written


def test_analysis_resumes_without_regenerating_and_draws_a_heatmap(dirs):
    _analyze(dirs, "--model", "tiny-flux", "--metric", "fidelity/ssim", "--granularity", "component")
    ranking = load_ranking(dirs["out"] / "contribution_ranking.json")
    assert len(ranking.scores) == 2 * 5 + 2 * 3  # FLUX: 2 double blocks x 5 components + 2 single x 3
    assert ranking.base_score == pytest.approx(1.0)  # SSIM of identical images
    images = _cached_images(dirs)
    progress = json.loads((dirs["out"] / "progress.json").read_text())
    assert len(progress["scores"]) == 16
    # drop three finished ablations from the progress file: only their scores are recomputed, from cached images
    for key in list(progress["scores"])[:3]:
        del progress["scores"][key]
    (dirs["out"] / "progress.json").write_text(json.dumps(progress))
    _analyze(dirs, "--model", "tiny-flux", "--metric", "fidelity/ssim", "--granularity", "component")
    assert _cached_images(dirs) == images
    assert load_ranking(dirs["out"] / "contribution_ranking.json").scores == ranking.scores
    heatmap = Image.open(io.BytesIO((dirs["out"] / HEATMAP_FILE).read_bytes()))
    pixels = np.asarray(heatmap.convert("RGB"))
    assert heatmap.size[1] > 4 * 18 and (pixels[..., 0] > pixels[..., 1] + 50).any()  # rows drawn, red cells


def test_analysis_rejects_an_unknown_metric(dirs):
    result = invoke("analyze", "--model", "tiny-sd3", "--metric", "fidelity/sharpness", "--cache-dir",
                    str(dirs["cache"]))
    assert result.returncode == 2
    assert "unknown metric of suite fidelity 'sharpness'" in result.stderr and "psnr" in result.stderr


def test_the_released_ranking_loads_with_a_base_score():
    path = shared_data("hierarchicalprune/sd3.5-large-turbo_hpsv2_component_ranking.json")
    ranking = load_ranking(path, base_score=30.0)
    assert len(ranking.scores) == 38 * 5 and ranking.granularity == "component"
    sensitivity = ranking.block_sensitivity()
    assert list(sensitivity) == list(range(38))
    # w_norm1 removal is catastrophic in the early blocks (FACTS section 1): they are far more sensitive
    assert min(sensitivity[b] for b in range(0, 5)) > max(sensitivity[b] for b in (25, 26, 27, 28))
    with pytest.raises(Exception, match="holds no base score"):
        load_ranking(path)


def test_the_flux_heatmap_marks_double_and_single_blocks(dirs):
    _analyze(dirs, "--model", "tiny-flux", "--metric", "fidelity/ssim")
    ranking = load_ranking(dirs["out"] / "contribution_ranking.json")
    assert ranking.details["block_kinds"] == {"0": "flux-double", "1": "flux-double", "2": "flux-single",
                                              "3": "flux-single"}
    pixels = np.asarray(Image.open(io.BytesIO((dirs["out"] / HEATMAP_FILE).read_bytes())).convert("L"))
    rule = 40 + 2 * 18 - 1  # above the first single-stream block's row (top 40, rows of 18 px)
    assert (pixels[rule] < 50).mean() > 0.9  # a black rule across the image
    assert (pixels[40 + 18 - 1] < 50).mean() < 0.5  # none between two double-stream blocks
