"""The real `geneval` suite without its weights: the official metadata only by its hash, the official folder layout
for all 553 prompts, and clear exit-2 messages when a scoring model is not available offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import harness_env, run_args, run_harness, shared_data

from harness.generation import ImageRequest
from suites.base import Sample
from suites.geneval import METADATA_SHA256, GenevalSuite, sha256_of


def test_the_official_metadata_is_recognised_by_its_hash(tmp_path):
    official = shared_data("geneval/evaluation_metadata.jsonl")
    assert sha256_of(official) == METADATA_SHA256
    suite = GenevalSuite(GenevalSuite.Params(metadata=official))
    requests = suite.requests(None)
    assert len(requests) == 553 * 4 and len({r.prompt_index for r in requests}) == 553
    changed = tmp_path / "changed.jsonl"
    changed.write_text(official.read_text().replace("a photo of a bench", "a photo of a chair", 1))
    from harness.errors import UsageError

    try:
        GenevalSuite(GenevalSuite.Params(metadata=changed)).requests(None)
    except UsageError as exc:
        assert "not the official file's" in str(exc) and "metadata_sha256=" in str(exc)
    else:
        raise AssertionError("a changed metadata file was accepted silently")
    accepted = GenevalSuite(GenevalSuite.Params(metadata=changed, metadata_sha256=sha256_of(changed)))
    assert len(accepted.requests(2)) == 8


def test_export_has_the_official_layout_for_all_prompts(tmp_path):
    official = shared_data("geneval/evaluation_metadata.jsonl")
    suite = GenevalSuite(GenevalSuite.Params(metadata=official))
    requests = suite.requests(None)
    image = np.zeros((8, 8, 3), np.uint8)
    samples = [Sample(r, 0, image, tmp_path / "absent.png") for r in requests]
    folder = suite.export(samples, suite.prompts(), tmp_path / "out")
    lines = official.read_text().splitlines()
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}" for i in range(553)]
    for index in (0, 100, 552):
        prompt_folder = folder / f"{index:05d}"
        assert json.loads((prompt_folder / "metadata.jsonl").read_text()) == json.loads(lines[index])
        assert sorted(p.name for p in (prompt_folder / "samples").iterdir()) == [f"{k:05d}.png" for k in range(4)]


def test_scoring_models_missing_offline_stop_the_run_before_generation(dirs, tmp_path):
    official = shared_data("geneval/evaluation_metadata.jsonl")
    env = harness_env(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    result = run_harness(*run_args(dirs, "--suite", "geneval", "--limit", "1", "--set",
                                   f"geneval.metadata={official}"), env=env)
    assert result.returncode == 2, result.stderr
    assert "the detector 'facebook/mask2former-swin-small-coco-instance' cannot be loaded" in result.stderr
    assert "--set geneval.detector=<path>" in result.stderr
    assert not (dirs["cache"] / "images").exists()  # nothing was generated first
    official_backend = run_harness(*run_args(dirs, "--suite", "geneval", "--limit", "1", "--set",
                                             f"geneval.metadata={official}", "--set", "geneval.backend=official"),
                                   env=env)
    assert official_backend.returncode == 2 and "geneval.official_repo" in official_backend.stderr


def test_metadata_download_failure_says_what_to_do(dirs, tmp_path):
    env = harness_env(HARNESS_CACHE_DIR=str(tmp_path / "cache"), https_proxy="http://127.0.0.1:9",
                      HTTPS_PROXY="http://127.0.0.1:9")
    result = run_harness(*run_args(dirs, "--suite", "geneval", "--limit", "1"), env=env)
    assert result.returncode == 2
    assert "could not be downloaded" in result.stderr and "--set geneval.metadata=<file>" in result.stderr


def test_requests_are_unchanged_by_the_metadata_path(tmp_path):
    official = shared_data("geneval/evaluation_metadata.jsonl")
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(official.read_bytes())
    a = GenevalSuite(GenevalSuite.Params(metadata=official)).requests(10)
    b = GenevalSuite(GenevalSuite.Params(metadata=copy)).requests(10)
    assert a == b and isinstance(a[0], ImageRequest) and Path(copy).is_file()
