"""Diffusers folders of configurations the presets do not have (another block count, sample size, head count; a
dual-attention SD3.5-Medium-like model; FLUX with guidance embeddings), as a new user brings them: each runs at its
own default size, compresses, and every bad try exits 2 with a message that names the fix, never a traceback."""

from __future__ import annotations

import pytest
from conftest import FOLDER_CONFIGS as CONFIGS
from conftest import invoke, read_results, run_args

FAST = ("--limit", "1", "--set", "sampling.num_inference_steps=1", "--suite", "fidelity")
SIZE = {"flux-guidance": ("--set", "sampling.height=64", "--set", "sampling.width=64")}  # FLUX's default is 1024


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_folder_model_runs_compressed_at_its_own_size(dirs, folders, name):
    result = invoke(*run_args(dirs, "--model", str(folders[name]), "--method", "depth-last", *FAST,
                              *SIZE.get(name, ())))
    assert result.returncode == 0, result.stderr[-3000:]
    results = read_results(result.stdout)
    sampling = results["suites"]["fidelity"]["sampling"]
    if name == "sd3-6-blocks":
        assert (sampling["height"], sampling["width"]) == (32, 32)  # sample size 4 x the VAE's 8
    assert results["compression"]["steps"][0]["cost"]["removed_blocks"]
    assert results["metrics"]["fidelity/psnr"] != "inf"


@pytest.mark.parametrize(("name", "settings", "fragment"), [
    ("sd3-6-blocks", ("sampling.height=1024", "sampling.width=1024"), "positional table"),
    ("sd3-6-blocks", ("sampling.height=36",), "multiples of 16"),
    ("sd35m-8-blocks", ("sampling.width=72",), "multiples of 16"),
    ("flux-guidance", ("sampling.height=40", "sampling.width=64"), "multiples of 16"),
])
def test_a_size_the_folder_model_cannot_draw_names_the_fix(dirs, folders, name, settings, fragment):
    result = invoke(*run_args(dirs, "--model", str(folders[name]), *FAST,
                              *[a for s in settings for a in ("--set", s)]))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert fragment in result.stderr and "--set sampling.height=H" in result.stderr
    assert not (dirs["cache"] / "images").exists()  # refused before any image


@pytest.mark.parametrize("name", list(CONFIGS))
def test_analyze_and_compress_work_on_folder_models(dirs, folders, tmp_path, name):
    analyzed = invoke("analyze", "--model", str(folders[name]), "--metric", "fidelity/ssim", "--limit", "1",
                      "--set", "sampling.num_inference_steps=1", *SIZE.get(name, ()), "--cache-dir",
                      str(dirs["cache"]), "--out", str(tmp_path / "analysis"), "--no-progress")
    assert analyzed.returncode == 0, analyzed.stderr[-3000:]
    saved = tmp_path / "saved"
    compressed = invoke("compress", "--model", str(folders[name]), "--method", "depth-importance+nf4", "--set",
                        f"depth-importance.ranking={tmp_path / 'analysis' / 'contribution_ranking.json'}",
                        *SIZE.get(name, ()), "--save", str(saved), "--cache-dir", str(dirs["cache"]), "--no-progress")
    assert compressed.returncode == 0, compressed.stderr[-3000:]
    reloaded = invoke(*run_args(dirs, "--model", str(saved), *FAST))
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]


def test_hints_name_the_folder_and_the_published_cut_is_refused_plainly(dirs, folders):
    folder = folders["sd3-6-blocks"]
    result = invoke(*run_args(dirs, "--model", str(folder), "--method", "depth-importance", *FAST))
    assert result.returncode == 2 and f"harness analyze --model {folder}" in result.stderr
    result = invoke(*run_args(dirs, "--model", str(folder), "--method", "hierarchicalprune", "--set",
                              "hierarchicalprune.published_cut=true", "--set", "hierarchicalprune.distill_steps=0",
                              *FAST))
    assert result.returncode == 2 and "published cuts for sd3.5-large-turbo" in result.stderr
    assert "none was found" not in result.stderr


def test_missing_training_data_is_refused_before_any_weight_loads(dirs, folders, monkeypatch):
    import harness.commands.run as run_command

    def never(*args, **kwargs):
        raise AssertionError("the model was opened before the plan was refused")

    monkeypatch.setattr(run_command, "open_model", never)
    result = invoke(*run_args(dirs, "--model", str(folders["sd3-6-blocks"]), "--method", "depth-last", "--set",
                              "depth-last.distill_steps=5", *FAST))
    assert result.returncode == 2 and "needs training data" in result.stderr
    assert f"distilling '{folders['sd3-6-blocks']}'" in result.stderr


def test_a_folder_runs_in_its_stored_dtype_and_quietly(dirs, folders):
    result = invoke(*run_args(dirs, "--model", str(folders["sd35m-8-blocks"]), *FAST))
    assert result.returncode == 0, result.stderr
    assert read_results(result.stdout)["model"]["dtype"] == "float32"  # saved in float32, not cast to bfloat16
    assert "Loading pipeline components" not in result.stderr and "Loading weights" not in result.stderr


def test_a_folder_digest_is_cached_by_path_size_and_mtime_and_rehashed_on_change(tmp_path, folders):
    """Hashing a 16 GB folder takes 16 s a run: the digest is reused while every file's path, size and modification
    time are unchanged, and recomputed when a file is touched, added or removed."""
    import json
    import os
    import shutil

    from harness.models.loading import DIGEST_CACHE, folder_fingerprint

    folder = tmp_path / "model"
    shutil.copytree(folders["sd3-6-blocks"], folder)
    uncached = folder_fingerprint(folder)
    cache = tmp_path / "cache"
    assert folder_fingerprint(folder, cache) == uncached
    stored = json.loads((cache / DIGEST_CACHE).read_text())
    assert stored[str(folder.resolve())]["digest"] == uncached
    # a planted digest is returned while nothing changed: the cache, not a rehash, answered
    stored[str(folder.resolve())]["digest"] = "sha256:planted"
    (cache / DIGEST_CACHE).write_text(json.dumps(stored))
    assert folder_fingerprint(folder, cache) == "sha256:planted"
    weights = next(folder.rglob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert folder_fingerprint(folder, cache) == uncached  # touched: rehashed, the planted digest replaced
    (folder / "transformer" / "extra.bin").write_bytes(b"\0")
    added = folder_fingerprint(folder, cache)
    assert added != uncached and added == folder_fingerprint(folder)
    (folder / "transformer" / "extra.bin").unlink()
    assert folder_fingerprint(folder, cache) == uncached
    (cache / DIGEST_CACHE).write_text("{not json")  # a damaged cache is rehashed over, never an error
    assert folder_fingerprint(folder, cache) == uncached


def test_a_run_keeps_the_folder_digest_in_its_cache_dir(dirs, folders):
    import json

    from harness.models.loading import DIGEST_CACHE

    result = invoke(*run_args(dirs, "--model", str(folders["sd3-6-blocks"]), *FAST))
    assert result.returncode == 0, result.stderr[-3000:]
    stored = json.loads((dirs["cache"] / DIGEST_CACHE).read_text())
    fingerprint = read_results(result.stdout)["model"]["fingerprint"]
    assert stored[str(folders["sd3-6-blocks"].resolve())]["digest"] == fingerprint
