"""Bad input never gets a traceback: exit code 2 and a message naming the input and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import harness_env, invoke, run_args, run_harness


def assert_usage_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("option", "name", "fragments"),
    [
        ("--model", "tiny-sd4", ["unknown model 'tiny-sd4'", "Did you mean 'tiny-sd3'", "sd3.5-large-turbo"]),
        ("--method", "nonee", ["unknown method 'nonee'", "Did you mean 'none'"]),
        ("--suite", "fidelty", ["unknown suite 'fidelty'", "Did you mean 'fidelity'"]),
    ],
)
def test_unknown_names_list_valid_ones_and_closest_match(dirs, option, name, fragments):
    assert_usage_error(invoke(*run_args(dirs, option, name)), *fragments)


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("no-equals-sign", "malformed --set 'no-equals-sign'"),
        ("unscoped=3", "malformed --set 'unscoped=3'"),
        ("fidelity.samples_per_prompt=many", "'many' is not a valid int"),
        ("fidelity.samples_per_prompt=0", "samples_per_prompt must be at least 1"),
        ("fidelity.sample_per_prompt=2", "Did you mean 'samples_per_prompt'"),
        ("sampling.guidance_scale=high", "'high' is not a valid float"),
        ("fidelty.samples_per_prompt=2", "unknown --set scope 'fidelty'"),
    ],
)
def test_malformed_set_values(dirs, setting, fragment):
    assert_usage_error(invoke(*run_args(dirs, "--set", setting)), fragment)


@pytest.mark.parametrize("limit", ["0", "-3", "ten"])
def test_bad_limits(dirs, limit):
    assert_usage_error(invoke(*run_args(dirs, "--limit", limit)), "--limit")


def test_folder_that_is_not_a_diffusers_pipeline(dirs, tmp_path):
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "weights.safetensors").write_bytes(b"\0" * 16)
    assert_usage_error(invoke(*run_args(dirs, "--model", str(tmp_path / "not-a-model"))),
                       "is not a diffusers pipeline folder (no model_index.json)")


def test_folder_with_unsupported_pipeline_class(dirs, tmp_path):
    folder = tmp_path / "sdxl"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    assert_usage_error(invoke(*run_args(dirs, "--model", str(folder))),
                       "holds a StableDiffusionXLPipeline pipeline", "StableDiffusion3Pipeline")


def test_truncated_weight_file(dirs, tmp_path, tiny_sd3_folder):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_sd3_folder, folder)
    weights = next((folder / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_usage_error(invoke(*run_args(dirs, "--model", str(folder), "--limit", "1")),
                       f"the pipeline in '{folder}' cannot be loaded", "truncated, corrupt or missing")


def test_pickled_weights_are_never_loaded(dirs, tmp_path, tiny_sd3_folder):
    """A folder whose transformer is only a pickle (.bin) is refused: we load safetensors only."""
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_sd3_folder, folder)
    for file in (folder / "transformer").glob("*.safetensors"):
        file.rename(file.with_name("diffusion_pytorch_model.bin"))
    assert_usage_error(invoke(*run_args(dirs, "--model", str(folder), "--limit", "1")), "cannot be loaded")


def test_local_folder_loads_and_runs(dirs, tiny_sd3_folder):
    proc = invoke(*run_args(dirs, "--model", str(tiny_sd3_folder), "--limit", "1",
                            "--set", "sampling.num_inference_steps=2", "--set", "sampling.height=64",
                            "--set", "sampling.width=64"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("results.json")


@pytest.mark.parametrize("model", ["sd3.5-large-turbo", "someone/some-sd3-model"])
def test_missing_weights_offline_names_the_repo_and_the_fix(dirs, tmp_path, model):
    env = harness_env(HF_HOME=str(tmp_path / "empty-hf-home"), HF_HUB_OFFLINE="1")
    proc = run_harness(*run_args(dirs, "--model", model, "--limit", "1"), env=env)
    repo = "stabilityai/stable-diffusion-3.5-large-turbo" if model == "sd3.5-large-turbo" else model
    assert_usage_error(proc, f"the weights of '{repo}' are not in the local Hugging Face cache",
                       f"hf download {repo}", "--weights")


def test_unwritable_output_folder(dirs, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = invoke("run", "--output-dir", str(blocker / "runs"), "--cache-dir", str(dirs["cache"]), "--limit", "1")
    assert_usage_error(proc, f"cannot write results to '{blocker / 'runs'}'", "--output-dir")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bad.jsonl", '{"prompt": "a cat"}\n{"prompt": \n', "bad.jsonl:2: not a JSON object"),
        ("wrong.jsonl", '{"text": "a cat"}\n', 'wrong.jsonl:1: expected an object with a non-empty "prompt"'),
        ("empty.txt", "# only a comment\n\n", "holds no prompts"),
        ("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"), "is not UTF-8 text"),
        ("missing.txt", None, "does not exist"),
    ],
)
def test_malformed_prompt_file(dirs, tmp_path, name, content, fragment):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert_usage_error(invoke(*run_args(dirs, "--set", f"fidelity.prompts={path}")), fragment)
    assert not Path(dirs["out"]).exists() or not any(Path(dirs["out"]).iterdir())


def test_cuda_requested_without_cuda(dirs):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_usage_error(invoke(*run_args(dirs, "--device", "cuda", "--limit", "1")), "no CUDA device is visible")


def test_reference_training_without_a_compiler_names_the_eager_fallback(tmp_path, monkeypatch):
    """A compiled training step needs a C++ compiler on the CPU: its absence is reported before any work."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no c++, g++ or clang++ on it
    monkeypatch.delenv("CXX", raising=False)
    out = tmp_path / "out"
    proc = invoke("reference", "train", "--out", str(out), "--work-dir", str(tmp_path / "work"), "--device", "cpu",
                  "--set", "compile=true")
    assert_usage_error(proc, "compile=true needs a C++ compiler", "--set compile=false")
    assert not out.exists()
