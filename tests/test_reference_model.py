"""The committed reference model: loaded exactly as a real model is, its autoencoder keeps what the judge needs,
its weights and training log are in place, and geneval-shapes sees compression."""

from __future__ import annotations

import json

import pytest
from conftest import invoke, read_results, run_args

from harness.commands.reference_train import autoencoder_agreement
from harness.models.loading import load_model
from harness.models.presets import PRESETS
from harness.models.reference import WEIGHTS_DIR
from harness.models.topology import block_topology
from harness.reference.world import TAGS, trained_world


@pytest.fixture(scope="module")
def reference():
    return load_model(PRESETS["reference"], weights=None, device="cpu")


def test_it_loads_through_the_diffusers_path(reference):
    from diffusers import StableDiffusion3Pipeline

    assert type(reference.pipeline) is StableDiffusion3Pipeline
    kinds = [b.kind for b in block_topology(reference.transformer)]
    assert len(kinds) == 12 and kinds[-1] == "joint-last"
    assert str(reference.dtype) == "torch.float32" and reference.fingerprint.startswith("sha256:")


def test_autoencoded_renders_keep_the_judge_at_least_95_percent_right(reference):
    agreement = autoencoder_agreement(reference.pipeline.vae, trained_world(WEIGHTS_DIR), seed=1234, per_task=40)
    assert set(agreement) == set(TAGS)
    assert min(agreement.values()) >= 0.95, agreement


def test_weights_log_and_card_are_committed():
    weights = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*.safetensors"))
    assert weights <= 40 * 1024 * 1024
    log = [json.loads(line) for line in (WEIGHTS_DIR / "train_log.jsonl").read_text().splitlines()]
    evaluations = [entry for entry in log if "eval" in entry]
    assert len(evaluations) >= 3 and all("overall" in entry["eval"] for entry in evaluations)
    assert any("loss" in entry and entry["stage"] == "transformer" for entry in log)
    card = (WEIGHTS_DIR / "README.md").read_text()
    assert "Training device:" in card and "min for the transformer" in card


@pytest.mark.slow
def test_geneval_shapes_sees_the_last_third_removed_and_check_gates_it(dirs):
    """depth-last at budget 0.30 removes blocks 7-10 of 12 (the last third but the final block): without recovery
    overall drops by at least 0.15, `harness check` fails it against the base run and passes a rerun of the base."""
    common = ["--model", "reference", "--suite", "geneval-shapes", "--limit", "120"]
    base = invoke(*run_args(dirs, *common))
    assert base.returncode == 0, base.stderr
    assert read_results(base.stdout)["generation"]["batch_size"] == 16  # the reference model's own default
    pruned = invoke(*run_args(dirs, *common, "--method", "depth-last", "--set", "depth-last.budget=0.3"))
    assert pruned.returncode == 0, pruned.stderr
    assert read_results(pruned.stdout)["compression"]["steps"][0]["cost"]["removed_blocks"] == [7, 8, 9, 10]
    drop = (read_results(base.stdout)["metrics"]["geneval-shapes/overall"]
            - read_results(pruned.stdout)["metrics"]["geneval-shapes/overall"])
    assert drop >= 0.15, drop
    rerun = invoke(*run_args(dirs, *common))
    gate = ["--baseline", base.stdout.strip().splitlines()[-1], "--max-drop", "geneval-shapes/overall=0.05"]
    assert invoke("check", pruned.stdout.strip().splitlines()[-1], *gate).returncode == 1
    assert invoke("check", rerun.stdout.strip().splitlines()[-1], *gate).returncode == 0


def _methods_that_run_on_a_cpu() -> set[str]:
    """The registered methods whose plan the reference model on a CPU does not refuse (fp8 needs an FP8 GPU)."""
    from harness.context import Context
    from harness.errors import UsageError
    from harness.models.loading import resolve_model
    from harness.registry import COMPRESSORS

    spec, runnable = resolve_model("reference"), set()
    for name in COMPRESSORS.names():
        compressor = COMPRESSORS.get(name)(context=Context(device="cpu"))
        try:
            compressor.check_plan(spec)
        except UsageError:
            continue
        runnable.add(name)
    return runnable


def test_committed_results_come_from_the_committed_model_and_cover_every_method():
    """results/ must not go stale: every committed run (and the CI baseline) names the fingerprint of the weights
    committed now, every registered method has a run, and the committed leaderboard has a row for each run."""
    from conftest import REPO

    from harness.models.loading import folder_fingerprint
    from harness.registry import COMPRESSORS

    fingerprint = folder_fingerprint(WEIGHTS_DIR)
    runs = [json.loads(p.read_text()) for p in sorted((REPO / "results" / "reference" / "runs").glob("*/results.json"))]
    baseline = json.loads((REPO / "results" / "ci-baseline" / "results.json").read_text())
    stale = [r["run_id"] for r in [*runs, baseline] if r["model"]["fingerprint"] != fingerprint]
    assert not stale, f"made with other weights than the committed ones: {stale}; rerun the recipe (results/README.md)"
    runnable = _methods_that_run_on_a_cpu()
    assert set(COMPRESSORS.names()) - runnable == {"fp8dq", "fp8wo"}  # GPU-only: refused on a CPU, no run here
    assert runnable <= {name for r in runs for name in r["method"]["name"].split("+")}
    leaderboard = (REPO / "results" / "LEADERBOARD.md").read_text()
    rows = [line for line in leaderboard.splitlines() if line.startswith("| ") and not line.startswith("| method ")]
    assert len(rows) == len(runs)  # one row per committed run: the page was generated from these runs
