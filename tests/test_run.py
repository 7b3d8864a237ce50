"""End-to-end `harness run` on the tiny default model: results schema, caching, methods never sharing images."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, invoke, read_results, run_args

from harness.results import IMAGE_RECORD, RECORD_FIELD, SCHEMA_VERSION, load_results


def test_run_writes_versioned_results_and_second_run_generates_nothing(dirs):
    first = invoke(*run_args(dirs, "--limit", "6", "--batch-size", "4"))
    assert first.returncode == 0, first.stderr
    results = read_results(first.stdout)
    assert results["schema_version"] == SCHEMA_VERSION == 2
    assert results["model"]["name"] == "tiny-sd3" and results["model"]["fingerprint"].startswith("sha256:")
    assert results["method"] == {"name": "none", "chain": [{"name": "none", "params": {}}]}
    assert results["suites"]["fidelity"]["samples_requested"] == 6
    assert results["suites"]["fidelity"]["samples_scored"] == 6
    assert results["suites"]["fidelity"]["sampling"]["num_inference_steps"] == 4
    assert results["generation"]["images_generated_main_process"] == 6  # the original's images, reused by 'none'
    # 'none' is the uncompressed model: identical pixels, so PSNR is infinite (stored as "inf") and SSIM is 1
    assert results["metrics"]["fidelity/psnr"] == "inf"
    assert abs(results["metrics"]["fidelity/ssim"] - 1.0) < 1e-9
    assert results["metric_details"]["fidelity/psnr"]["unit"] == "dB"
    assert results["metric_details"]["fidelity/psnr"]["higher_is_better"] is True
    for key in ("device", "versions", "git_commit", "wall_seconds", "created", "run_id", "compression"):
        assert key in results
    assert results["versions"]["torch"] and results["versions"]["diffusers"]
    samples_file = Path(first.stdout.strip().splitlines()[-1]).parent / "samples.jsonl"
    records = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(records) == 6 and {r["prompt_index"] for r in records} == set(range(6))
    assert all(Path(r["image"]).is_file() and r["psnr"] == "inf" for r in records)
    assert {r[RECORD_FIELD] for r in records} == {IMAGE_RECORD}

    second = invoke(*run_args(dirs, "--limit", "6", "--batch-size", "4"))
    assert second.returncode == 0, second.stderr
    again = read_results(second.stdout)
    assert again["generation"]["images_generated_main_process"] == 0
    assert again["generation"]["images_cached_main_process"] == 12  # original + run phase
    assert again["metrics"] == results["metrics"]
    assert again["run_id"] != results["run_id"]


@pytest.fixture
def attenuate_output(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example plugin's compressor registered in this process (not through its entry point) for one test: the
    registry's tables, sys.path and the imported module are as they were afterwards."""
    import sys

    from harness.registry import COMPRESSORS

    COMPRESSORS.names()  # discover the built-ins first, so the snapshot holds them
    monkeypatch.setattr(COMPRESSORS, "_entries", dict(COMPRESSORS._entries))
    monkeypatch.setattr(COMPRESSORS, "_loaded", dict(COMPRESSORS._loaded))
    monkeypatch.syspath_prepend(str(REPO / "tests" / "plugin_example"))
    from harness_plugin_example import AttenuateOutput

    COMPRESSORS.register(AttenuateOutput.name, AttenuateOutput, "scale the output projection")
    yield
    sys.modules.pop("harness_plugin_example", None)


def test_the_example_plugin_fixture_leaves_no_trace(attenuate_output):
    from harness.registry import COMPRESSORS

    assert "attenuate-output" in COMPRESSORS.names()


def test_after_the_fixture_the_registry_and_path_are_as_before():
    import sys

    from harness.registry import COMPRESSORS

    assert "attenuate-output" not in COMPRESSORS.names()
    assert "harness_plugin_example" not in sys.modules
    assert not any(path.endswith("plugin_example") for path in sys.path)


def test_compressed_chain_never_shares_images_with_the_original(dirs, attenuate_output):
    """A method whose parameters differ must get its own images (the release let NF4 reuse bf16 images)."""

    def run(*extra: str) -> dict:
        proc = invoke(*run_args(dirs, "--limit", "3", *extra))
        assert proc.returncode == 0, proc.stderr
        return read_results(proc.stdout)

    half = run("--method", "attenuate-output")
    assert half["generation"]["images_generated_main_process"] == 6  # 3 originals + 3 compressed
    assert half["compression"]["steps"][0]["cost"] == {"tensors_scaled": 1}
    assert 0 < half["metrics"]["fidelity/psnr"] < 100
    quarter = run("--method", "attenuate-output", "--set", "attenuate-output.factor=0.25")
    assert quarter["generation"]["images_generated_main_process"] == 3  # originals cached, new chain params
    assert quarter["metrics"]["fidelity/psnr"] != half["metrics"]["fidelity/psnr"]
    assert quarter["method"]["chain"] == [{"name": "attenuate-output", "params": {"factor": 0.25}}]


def test_load_results_restores_infinities(dirs):
    proc = invoke(*run_args(dirs, "--limit", "1"))
    assert proc.returncode == 0, proc.stderr
    loaded = load_results(Path(proc.stdout.strip().splitlines()[-1]))
    assert loaded.metrics["fidelity/psnr"] == float("inf")


def test_an_interrupted_recipe_resumes_without_measuring_a_finished_run_again(dirs, capsys):
    """A rerun recipe skips the entries already in its output folder (no duplicate leaderboard rows); a changed
    setting, or other weights, is a new measurement."""
    from harness.commands.recipe import Recipe, RecipeRun, run_recipe
    from harness.results import find_finished_run

    recipe = Recipe(name="resume-test", description="", model="tiny-sd3", suites=("fidelity",),
                    runs=(RecipeRun("none"), RecipeRun("depth-last", ("depth-last.budget=0.3",
                                                                       "depth-last.distill_steps=0"))))

    def resume(limit: int) -> list[Path]:
        run_recipe(recipe, limit, [], dirs["out"], dirs["cache"], "cpu", progress=False)
        return sorted(dirs["out"].glob("runs/*/results.json"))

    first = resume(2)
    assert len(first) == 2
    assert resume(2) == first  # nothing measured again
    assert "already measured" in capsys.readouterr().err
    third = resume(3)
    assert len(third) == 4 and set(first) < set(third)  # --limit changes the sample count: new runs

    finished = load_results(first[0])
    assert find_finished_run(dirs["out"] / "runs", finished.identity()) == first[0]
    other_weights = dataclasses.replace(finished, model=dataclasses.replace(finished.model, fingerprint="sha256:other"))
    assert find_finished_run(dirs["out"] / "runs", other_weights.identity()) is None


def test_committed_version_1_runs_read_with_their_rows_told_apart():
    """The committed reference table predates schema 2: it still reads, its image rows are told from its
    measurement rows, and reading then writing a document keeps every field."""
    from harness.commands.compare import load_run
    from harness.results import MEASUREMENT_RECORD, RunResult, from_json_safe, json_safe

    folder = next((REPO / "results" / "reference" / "runs").glob("*_reference-none"))
    run = load_run(folder)
    assert run.results.schema_version == 1
    kinds = {r[RECORD_FIELD] for r in run.records}
    assert kinds == {IMAGE_RECORD, MEASUREMENT_RECORD}
    assert all(("prompt_index" in r) == (r[RECORD_FIELD] == IMAGE_RECORD) for r in run.records)
    assert len(run.suite_records("geneval-shapes")) == run.results.suites["geneval-shapes"].samples_scored
    document = json.loads((folder / "results.json").read_text())
    assert json_safe(RunResult.from_json(from_json_safe(document)).to_json()) == document
