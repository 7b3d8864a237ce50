"""The real `geneval` suite without its weights: the official metadata only by its hash, the official folder layout
for all 553 prompts, and clear exit-2 messages when a scoring model is not available offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import harness_env, invoke, read_results, run_args, run_harness, shared_data

from harness.generation import ImageRequest, Sample
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


@pytest.fixture(scope="module")
def tiny_scorers(tmp_path_factory):
    """A Mask2Former over GenEval's 80 COCO classes and an open_clip model, both tiny and random, built from configs
    and saved as a user's local weights (a model folder, a checkpoint file)."""
    import open_clip
    import torch
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    folder = tmp_path_factory.mktemp("scorers")
    names = [n for n in shared_data("geneval/object_names.txt").read_text().splitlines() if n]
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1, decoder_layers=2,
                               num_queries=12, num_attention_heads=2, num_labels=len(names),
                               id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder / "detector")
    Mask2FormerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder / "detector")
    (folder / "tiny-clip.json").write_text(json.dumps({
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(folder / "tiny-clip.json")
    torch.save(open_clip.create_model("tiny-clip").state_dict(), folder / "clip.pt")
    return folder


def test_transformers_backend_runs_end_to_end_on_tiny_scorers(dirs, tiny_scorers):
    official = shared_data("geneval/evaluation_metadata.jsonl")
    export = dirs["out"] / "export"
    settings = {"metadata": official, "detector": tiny_scorers / "detector", "clip_model": "tiny-clip",
                "clip_pretrained": tiny_scorers / "clip.pt", "samples_per_prompt": 2, "export_dir": export}
    args = [a for key, value in settings.items() for a in ("--set", f"geneval.{key}={value}")]
    result = invoke(*run_args(dirs, "--suite", "geneval", "--limit", "8", *args))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    suite = results["suites"]["geneval"]
    assert suite["samples_scored"] == 16
    assert any("not the official GenEval number" in note for note in suite["notes"])
    for name in ("overall", "correct_images", "correct_prompts"):
        assert 0.0 <= results["metrics"][f"geneval/{name}"] <= 1.0
    folder = Path(result.stdout.strip().splitlines()[-1]).parent
    records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 16 and all(r["backend"] == "transformers" and r["reason"] is not None for r in records)
    # the verdicts come from the rules engine on real detections: wrong ones say why
    assert all(r["reason"] for r in records if not r["correct"])
    assert len({r["tag"] for r in records}) == 6  # --limit keeps every task
    prompts = sorted({r["prompt_index"] for r in records})
    assert sorted(p.name for p in export.iterdir()) == [f"{i:05d}" for i in prompts] and len(prompts) == 8
    for index in prompts:
        assert sorted(p.name for p in (export / f"{index:05d}" / "samples").iterdir()) == ["00000.png", "00001.png"]
        line = (export / f"{index:05d}" / "metadata.jsonl").read_text()
        assert json.loads(line)["prompt"] == next(r["prompt"] for r in records if r["prompt_index"] == index)


def test_the_run_cache_dir_alone_decides_where_the_metadata_is(tmp_path, monkeypatch):
    # the official file is in the run's --cache-dir; the environment's cache is empty and the network unreachable,
    # so the suite can only succeed by looking where its context says
    from harness.context import Context
    from suites.geneval import OFFICIAL_COMMIT

    run_cache = tmp_path / "run-cache"
    (run_cache / "geneval").mkdir(parents=True)
    official = shared_data("geneval/evaluation_metadata.jsonl")
    (run_cache / "geneval" / f"evaluation_metadata-{OFFICIAL_COMMIT}.jsonl").write_bytes(official.read_bytes())
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "env-cache"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    suite = GenevalSuite(GenevalSuite.Params(), Context(cache_dir=run_cache))
    explicit = GenevalSuite(GenevalSuite.Params(metadata=official)).requests(3)
    assert [r.prompt for r in suite.requests(3)] == [r.prompt for r in explicit]
    assert not (tmp_path / "env-cache").exists()
