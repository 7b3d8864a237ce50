"""Anything that decides pixels is in the image cache's key, also what a compressor finds at apply time: the
ranking's content (not its path) and the distillation data's content. A changed input regenerates; an unchanged one
reuses."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from conftest import invoke, read_results, run_args
from PIL import Image

from harness.ranking import RANKING_FILE, RANKING_FORMAT, RANKING_VERSION
from harness.reference.render import training_batch
from harness.reference.world import TRAINING_WORLD

FAST = ("--model", "tiny-sd3", "--suite", "fidelity", "--limit", "2", "--set", "sampling.num_inference_steps=2")


def _write_ranking(path: Path, least_sensitive: int, fingerprint: str = "") -> Path:
    """A block ranking of tiny-sd3's removable blocks 0-2 in which `least_sensitive` costs least to remove."""
    path.parent.mkdir(parents=True, exist_ok=True)
    drops = {b: (0.01 if b == least_sensitive else 0.2 + 0.1 * b) for b in range(3)}
    path.write_text(json.dumps({
        "format": RANKING_FORMAT, "version": RANKING_VERSION, "metric": "fidelity/ssim", "higher_is_better": True,
        "granularity": "block", "base_score": 1.0, "model": {"fingerprint": fingerprint},
        "ablations": [{"key": str(b), "score": 1.0 - d, "drop": d} for b, d in drops.items()]}))
    return path


def _run(dirs, *extra: str) -> dict:
    result = invoke(*run_args(dirs, *FAST, *extra))
    assert result.returncode == 0, result.stderr
    return read_results(result.stdout)


def _removed(results: dict) -> list[int]:
    return results["compression"]["steps"][0]["cost"]["removed_blocks"]


def test_an_explicit_ranking_file_is_keyed_by_its_content(dirs, tmp_path):
    ranking = _write_ranking(tmp_path / "ranking.json", least_sensitive=2)
    method = ("--method", "depth-importance", "--set", f"depth-importance.ranking={ranking}")
    first = _run(dirs, *method)
    assert _removed(first) == [2]
    assert _run(dirs, *method)["generation"]["images_generated_main_process"] == 0  # same content: reused
    _write_ranking(ranking, least_sensitive=0)  # same path, other content
    second = _run(dirs, *method)
    assert _removed(second) == [0]
    assert second["generation"]["images_generated_main_process"] == 2  # the new blocks' images, not the old ones
    assert second["metrics"]["fidelity/ssim"] != first["metrics"]["fidelity/ssim"]
    assert second["method"]["chain"][0]["inputs"]["ranking"] != first["method"]["chain"][0]["inputs"]["ranking"]


def test_a_newer_analysis_found_in_the_cache_changes_the_key(dirs):
    fingerprint = _run(dirs)["model"]["fingerprint"]  # --method none: the tiny model's fingerprint
    analysis = dirs["cache"] / "analysis"
    _write_ranking(analysis / "older" / RANKING_FILE, least_sensitive=2, fingerprint=fingerprint)
    method = ("--method", "hierarchicalprune", "--set", "hierarchicalprune.distill_steps=0")
    first = _run(dirs, *method)
    assert _removed(first) == [2]
    newer = _write_ranking(analysis / "newer" / RANKING_FILE, least_sensitive=0, fingerprint=fingerprint)
    os.utime(newer, (newer.stat().st_atime + 10, newer.stat().st_mtime + 10))
    second = _run(dirs, *method)
    assert _removed(second) == [0]
    assert second["generation"]["images_generated_main_process"] == 2


def test_distillation_data_is_keyed_by_its_content(dirs, tmp_path):
    data = tmp_path / "pairs"
    data.mkdir()
    captions, images = training_batch(TRAINING_WORLD, random.Random(0), 4)
    for i, (caption, image) in enumerate(zip(captions, images, strict=True)):
        Image.fromarray(image).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(caption)
    method = ("--method", "depth-last", "--set", "depth-last.distill_steps=2", "--set",
              "depth-last.distill_batch_size=2", "--set", f"depth-last.distill_data={data}")
    first = _run(dirs, *method)
    again = _run(dirs, *method)
    assert again["generation"]["images_generated_main_process"] == 0
    (data / "0.txt").write_text("a photo of something else entirely")
    changed = _run(dirs, *method)
    assert changed["generation"]["images_generated_main_process"] == 2
    assert changed["compression"]["steps"][0].get("from_cache") is None  # trained anew, not the stored model
    assert changed["method"]["chain"][0]["inputs"] != first["method"]["chain"][0]["inputs"]
