"""A saved compressed model always runs as saved: `--weights` beside it names where its BASE model is (for the
original images), never weights to run instead; a base that moved is named in the error with what to pass."""

from __future__ import annotations

import shutil

from conftest import invoke, read_results, run_args

FAST = ("--set", "sampling.num_inference_steps=2", "--limit", "2", "--suite", "fidelity")


def _compress(dirs, base, saved):
    result = invoke("compress", "--model", str(base), "--method", "depth-last", "--save", str(saved),
                    "--cache-dir", str(dirs["cache"]), "--no-progress")
    assert result.returncode == 0, result.stderr


def test_weights_beside_a_saved_model_are_its_base_not_a_replacement(dirs, tmp_path, tiny_sd3_folder):
    base = shutil.copytree(tiny_sd3_folder, tmp_path / "base")
    saved = tmp_path / "saved"
    _compress(dirs, base, saved)
    plain = invoke(*run_args(dirs, "--model", str(saved), *FAST))
    assert plain.returncode == 0, plain.stderr
    with_base = invoke(*run_args(dirs, "--model", str(saved), "--weights", str(base), *FAST))
    assert with_base.returncode == 0, with_base.stderr
    expected, results = read_results(plain.stdout), read_results(with_base.stdout)
    assert results["model"]["transformer_parameters"] == expected["model"]["transformer_parameters"]
    assert results["model"]["fingerprint"] == expected["model"]["fingerprint"]  # the saved model's weights
    assert results["metrics"] == expected["metrics"] and results["metrics"]["fidelity/psnr"] != "inf"


def test_a_base_that_moved_is_named_and_found_again_with_weights(dirs, tmp_path, tiny_sd3_folder):
    base = shutil.copytree(tiny_sd3_folder, tmp_path / "base")
    saved = tmp_path / "saved"
    _compress(dirs, base, saved)
    moved = base.rename(tmp_path / "moved")
    lost = invoke(*run_args(dirs, "--model", str(saved), *FAST))
    assert lost.returncode == 2 and "Traceback" not in lost.stderr
    assert str(base) in lost.stderr and "--weights" in lost.stderr and "unknown model" not in lost.stderr
    found = invoke(*run_args(dirs, "--model", str(saved), "--weights", str(moved), *FAST))
    assert found.returncode == 0, found.stderr
    assert read_results(found.stdout)["metrics"]["fidelity/psnr"] != "inf"
    wrong = invoke(*run_args(dirs, "--model", str(saved), "--weights", str(saved), *FAST))  # not its base
    assert wrong.returncode == 2 and "fingerprint" in wrong.stderr and "--weights" in wrong.stderr


def test_distillation_draws_at_the_runs_sampling_and_compress_accepts_it(dirs, tmp_path):
    """--set sampling.* reaches distillation: the teacher's images of a prompt list are drawn at the run's size
    (not the model's registered 64 px), and `compress` takes the settings, saving them as the model's sampling."""
    from PIL import Image

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    size = ("--set", "sampling.height=32", "--set", "sampling.width=32")
    method = ("--method", "depth-last", "--set", "depth-last.distill_steps=1", "--set",
              "depth-last.distill_batch_size=2", "--set", f"depth-last.distill_data={prompts}")
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", *FAST, *size, *method))
    assert result.returncode == 0, result.stderr
    sizes = {Image.open(p).size for p in (dirs["cache"] / "images").rglob("*.png")}
    assert sizes == {(32, 32)}  # the teacher's images, the originals and the run's: all at the run's size
    saved = tmp_path / "saved"
    compressed = invoke("compress", "--model", "tiny-sd3", *method, *size, "--save", str(saved),
                        "--cache-dir", str(dirs["cache"]), "--no-progress")
    assert compressed.returncode == 0, compressed.stderr
    import json

    provenance = json.loads((saved / "harness_provenance.json").read_text())
    assert (provenance["sampling"]["height"], provenance["sampling"]["width"]) == (32, 32)


def test_the_provenance_says_which_loader_a_saved_folder_needs(dirs, tmp_path):
    """A pruned folder loads with diffusers' plain from_pretrained, and says so; a quantised one does not (its
    layers are bitsandbytes' storage, rebuilt by harness), and its provenance says that plainly."""
    import json

    from diffusers import StableDiffusion3Pipeline

    for method in ("depth-last", "depth-last+nf4"):
        saved = tmp_path / method
        result = invoke("compress", "--model", "tiny-sd3", "--method", method, "--save", str(saved),
                        "--cache-dir", str(dirs["cache"]), "--no-progress")
        assert result.returncode == 0, result.stderr
        loading = json.loads((saved / "harness_provenance.json").read_text())["loading"]
        if method == "depth-last":
            assert loading.startswith("diffusers' plain from_pretrained loads it")
            pipeline = StableDiffusion3Pipeline.from_pretrained(saved, text_encoder_3=None, tokenizer_3=None)
            assert len(pipeline.transformer.transformer_blocks) == 3
        else:
            assert loading.startswith("harness only") and "nf4" in loading
