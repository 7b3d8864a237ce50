"""`--weights random`: a preset's real architecture with seeded random weights, built on the device in its dtype with
no download and no full-precision host copy; device suites and structural methods only, marked everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke, read_results, run_args

from harness.models.loading import hash_modules, load_model
from harness.models.presets import PRESETS
from harness.models.random_weights import MARK, random_fingerprint

DEVICE = ("--suite", "device", "--set", "latency.repeats=2", "--set", "latency.warmup=0",
          "--set", "latency.forward_repeats=2")


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux", "reference"])
def test_the_same_seed_gives_the_same_weights_and_another_seed_others(name):
    import torch

    first = load_model(PRESETS[name], weights="random", device="cpu")
    again = load_model(PRESETS[name], weights="random:0", device="cpu")
    other = load_model(PRESETS[name], weights="random:1", device="cpu")
    assert first.fingerprint == again.fingerprint == random_fingerprint(0) and other.fingerprint == "random:seed=1"
    assert MARK in first.source
    assert hash_modules(first.pipeline) == hash_modules(again.pipeline) != hash_modules(other.pipeline)
    assert hash_modules(first.pipeline) != load_model(PRESETS[name], weights=None, device="cpu").fingerprint
    weights = dict(first.transformer.named_parameters())
    assert all(not p.is_meta for p in weights.values())
    matrix = next(p for n, p in weights.items() if p.dim() == 2 and n.endswith("weight"))
    assert float(matrix.detach().std()) == pytest.approx(matrix.shape[1] ** -0.5, rel=0.2)  # N(0, 1/fan_in)
    image = first.pipeline(prompt="a red circle", num_inference_steps=2, height=64, width=64, output_type="pt",
                           generator=torch.Generator().manual_seed(0)).images
    assert torch.isfinite(image).all()


_BUILD_AND_REPORT = """
import dataclasses, json, psutil, torch
from harness.memory import PeakMemory
from harness.models.footprint import weight_bytes
from harness.models.presets import PRESETS
from harness.models.random_weights import build_random_pipeline
tiny = PRESETS["tiny-sd3"]
config = {**tiny.transformer_config, "num_layers": 8, "attention_head_dim": 64, "num_attention_heads": 16,
          "joint_attention_dim": 1024, "caption_projection_dim": 1024}
spec = dataclasses.replace(tiny, build=lambda: tiny.build(config))
build_random_pipeline(tiny, "cpu", torch.bfloat16, seed=0)  # the imports a first build pulls in are not weights
start = psutil.Process().memory_info().rss
with PeakMemory("cpu") as peak:
    pipeline = build_random_pipeline(spec, "cpu", torch.bfloat16, seed=0)
print(json.dumps({"grown": peak.rss - start, "bf16": weight_bytes(pipeline.transformer),
                  "dtype": str(pipeline.transformer.dtype)}))
"""


def test_building_draws_in_the_target_dtype_without_a_float32_copy_on_the_host():
    """A transformer of about 300 M parameters in bfloat16, built in a fresh process: the host's peak grows by its
    bf16 bytes, not the twice as many a float32 build then cast would need."""
    import subprocess
    import sys

    from conftest import harness_env

    done = subprocess.run([sys.executable, "-c", _BUILD_AND_REPORT], capture_output=True, text=True, timeout=600,
                          env=harness_env())
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["dtype"] == "torch.bfloat16" and report["bf16"] > 500e6
    assert 0.9 * report["bf16"] < report["grown"] < 1.25 * report["bf16"], report  # float32 first: >= 2x


def test_every_real_preset_builds_from_its_configs_with_tokenizers_that_fit_its_encoders():
    """Without materialising (meta device): the released configs, the stand-in tokenizers' ids inside each text
    encoder's vocabulary, the scheduler as released."""
    from accelerate import init_empty_weights

    from harness.models.random_weights import _pipeline_from_configs

    for name in ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "flux.1-dev", "flux.1-schnell"):
        spec = PRESETS[name]
        with init_empty_weights(include_buffers=False):
            pipeline = _pipeline_from_configs(spec)
        assert type(pipeline).__name__ == ("FluxPipeline" if spec.family == "flux" else "StableDiffusion3Pipeline")
        for key, component in pipeline.components.items():
            if key.startswith("text_encoder") and component is not None:
                tokenizer = pipeline.components["tokenizer" + key.removeprefix("text_encoder")]
                ids = tokenizer("a photo of a red circle left of a blue square", padding="max_length",
                                max_length=spec.sampling.max_sequence_length or 77, truncation=True).input_ids
                assert max(ids) < component.config.vocab_size, (name, key)
        assert pipeline.transformer.config.num_layers == spec.transformer_config["num_layers"]
        assert pipeline.scheduler.config.shift == spec.scheduler[1]["shift"]
    from harness.models.tiny import CLIP_ALL_MERGES, clip_tokenizer

    assert len(clip_tokenizer(77, CLIP_ALL_MERGES)) == 49408  # the released CLIP vocabulary


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
def test_device_suites_and_structural_methods_run_marked_as_random(dirs, model):
    result = invoke(*run_args(dirs, "--model", model, "--weights", "random:2", "--method", "depth-last+nf4+fbcache",
                              *DEVICE))
    assert result.returncode == 0, result.stderr[-3000:]
    results = read_results(result.stdout)
    assert results["model"]["fingerprint"] == "random:seed=2" and MARK in results["model"]["source"]
    assert results["metrics"]["latency/end_to_end"] > 0 and results["metrics"]["memory/weights_transformer_gib"] > 0
    assert results["compression"]["steps"][0]["cost"]["removed_blocks"]
    board = invoke("leaderboard", str(dirs["out"]), "--out", str(dirs["out"].parent / "board"))
    assert board.returncode == 0, board.stderr
    page = (dirs["out"].parent / "board" / "LEADERBOARD.md").read_text()
    assert f"{model} ({MARK})" in page


@pytest.mark.parametrize(("args", "message"), [
    (["--suite", "fidelity"], "fidelity scores images"),
    (["--suite", "full"], "a model with random weights draws noise"),
    (["--method", "depth-last", "--set", "depth-last.distill_steps=5", *DEVICE],
     "--set depth-last.distill_steps=0"),
    (["--weights", "random:-1", *DEVICE], "the seed must be at least 0"),
    (["--weights", "random:one", *DEVICE], "must be an integer"),
])
def test_what_random_weights_cannot_measure_exits_2_before_anything_is_built(dirs, args, message):
    weights = [] if "--weights" in args else ["--weights", "random"]
    result = invoke(*run_args(dirs, *weights, *args))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not (dirs["cache"] / "images").exists()


def test_analysis_is_refused_and_a_folder_model_is_told_to_drop_random(dirs, folders):
    analyze = invoke("analyze", "--model", "tiny-sd3", "--weights", "random", "--cache-dir", str(dirs["cache"]),
                     "--no-progress")
    assert analyze.returncode == 2 and "fidelity scores images" in analyze.stderr and "Traceback" not in analyze.stderr
    folder = invoke(*run_args(dirs, "--model", str(folders["sd3-6-blocks"]), "--weights", "random", *DEVICE))
    assert folder.returncode == 2 and "drop --weights random" in folder.stderr


def test_a_compressed_random_model_saves_and_runs_again(dirs, tmp_path):
    saved = tmp_path / "saved"
    compress = invoke("compress", "--model", "tiny-sd3", "--weights", "random:4", "--method", "depth-last",
                      "--save", str(saved), "--cache-dir", str(dirs["cache"]), "--no-progress")
    assert compress.returncode == 0, compress.stderr[-3000:]
    provenance = json.loads((saved / "harness_provenance.json").read_text())
    assert provenance["base"]["fingerprint"] == "random:seed=4"
    rerun = invoke(*run_args(dirs, "--model", str(saved), *DEVICE))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    results = read_results(rerun.stdout)
    assert results["model"]["base"]["fingerprint"] == "random:seed=4"
    board = invoke("leaderboard", str(dirs["out"]), "--out", str(tmp_path / "board"))
    assert board.returncode == 0, board.stderr
    assert f"tiny-sd3 ({MARK})" in (tmp_path / "board" / "LEADERBOARD.md").read_text()
    assert Path(results["model"]["source"]).resolve() == saved.resolve()
