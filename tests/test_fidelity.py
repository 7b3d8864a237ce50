"""The fidelity suite's numbers against independent computations on small images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.generation import ImageRequest, Sample
from suites.fidelity import FidelitySuite


def samples(images: list[np.ndarray]) -> list[Sample]:
    return [Sample(ImageRequest("p", i, 0), 0, image, Path(f"{i}.png")) for i, image in enumerate(images)]


@pytest.fixture
def images() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    originals = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    noisy = [np.clip(o.astype(int) + rng.integers(-20, 21, o.shape), 0, 255).astype(np.uint8) for o in originals]
    return originals, noisy


def test_psnr_matches_its_definition(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS weights here
    originals, noisy = images
    result = FidelitySuite().evaluate(samples(noisy), samples(originals))
    expected = [10 * np.log10(1.0 / np.mean((n / 255.0 - o / 255.0) ** 2)) for n, o in zip(noisy, originals,
                                                                                        strict=True)]
    # rel 1e-6: torchmetrics computes in float32
    assert [r["psnr"] for r in result.records] == pytest.approx(expected, rel=1e-6)
    assert result.metrics["psnr"].value == pytest.approx(np.mean(expected), rel=1e-6)
    assert result.metrics["psnr"].stderr == pytest.approx(np.std(expected, ddof=1) / np.sqrt(3), rel=1e-6)
    assert result.metrics["psnr"].n == 3


def test_ssim_is_one_for_identical_images_and_falls_with_noise(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    originals, noisy = images
    same = FidelitySuite().evaluate(samples(originals), samples(originals))
    assert same.metrics["ssim"].value == pytest.approx(1.0, abs=1e-12)
    assert same.metrics["psnr"].value == float("inf")
    worse = [np.clip(o.astype(int) + (n.astype(int) - o) * 4, 0, 255).astype(np.uint8)
             for o, n in zip(originals, noisy, strict=True)]
    ssim_noisy = FidelitySuite().evaluate(samples(noisy), samples(originals)).metrics["ssim"].value
    ssim_worse = FidelitySuite().evaluate(samples(worse), samples(originals)).metrics["ssim"].value
    assert 0 < ssim_worse < ssim_noisy < 1


def test_lpips_is_reported_unavailable_without_weights(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    originals, noisy = images
    result = FidelitySuite().evaluate(samples(noisy), samples(originals))
    assert "lpips" not in result.metrics
    assert any("fidelity/lpips not computed" in note and str(tmp_path) in note for note in result.notes)


def test_requests_follow_limit_and_samples_per_prompt(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n# comment\ntwo\nthree\n")
    suite = FidelitySuite(FidelitySuite.Params(prompts=prompts, samples_per_prompt=2))
    assert suite.requests(2) == [ImageRequest("one", 0, 0), ImageRequest("one", 0, 1),
                                 ImageRequest("two", 1, 0), ImageRequest("two", 1, 1)]
    assert len(FidelitySuite().requests(None)) == 16
