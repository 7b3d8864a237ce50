"""The `imagereward` suite: its scores equal the `image-reward` package's own `ImageReward.score` on a model built
from the package's classes with a small text config (the vision tower is the package's fixed ViT-L), it runs end to
end, and it stops offline, before generating anything, naming what to download."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import harness_env, invoke, read_results, run_args, run_harness

from suites.imagereward import ImageRewardSuite, default_environment

pytestmark = pytest.mark.slow  # each scoring builds the package's 300 M-parameter BLIP ViT-L

WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] a an of the photo red blue green yellow cat dog circle square and on in "
         "astronaut riding horse bowl fruit city night").split()


def environment() -> Path:
    """The package's overlay, installed by `python tools/install_imagereward.py` (make and tox do it)."""
    path = default_environment()
    if not (path / "ImageReward").is_dir():
        message = f"image-reward is not installed at {path}; run `python tools/install_imagereward.py`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def overlay_env(hf_home: Path) -> dict[str, str]:
    return harness_env(HF_HOME=str(hf_home), PYTHONPATH=str(environment()))


@pytest.fixture(scope="module")
def tiny_imagereward(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A BLIP text config of one layer, a tokenizer cached as `bert-base-uncased` (a vocabulary of the test's words;
    the package loads its tokenizer by that name), and the state dict of the package's ImageReward built from them
    with seeded random weights: what the THUDM/ImageReward repo's files are to the real model."""
    folder = tmp_path_factory.mktemp("imagereward")
    hf_home = folder / "hf"
    snapshot = hf_home / "hub" / "models--bert-base-uncased" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (hf_home / "hub" / "models--bert-base-uncased" / "refs").mkdir()
    (hf_home / "hub" / "models--bert-base-uncased" / "refs" / "main").write_text("0" * 40)
    (snapshot / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    med_config = folder / "med_config.json"  # the package's MLP head fixes the text width at 768
    med_config.write_text(json.dumps({
        "hidden_size": 768, "num_hidden_layers": 1, "num_attention_heads": 12, "intermediate_size": 64,
        "vocab_size": len(WORDS) + 2, "max_position_embeddings": 64, "type_vocab_size": 2, "pad_token_id": 0,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12, "initializer_range": 0.02, "model_type": "bert", "encoder_width": 1024,
        "add_cross_attention": True}))
    checkpoint = folder / "ImageReward.pt"
    build = (f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parents[1] / 'suites')!r}); "
             "from imagereward_worker import import_model_class; torch.manual_seed(0); "
             f"model = import_model_class()(med_config={str(med_config)!r}, device='cpu'); "
             # the package initialises its reward head at std 1/769, which makes every reward the same to 1e-9
             "[torch.nn.init.normal_(p, std=0.3) for p in model.mlp.parameters()]; "
             f"torch.save({{k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}}, "
             f"{str(checkpoint)!r})")
    subprocess.run([sys.executable, "-c", build], check=True, env=overlay_env(hf_home), timeout=600)
    return {"hf_home": hf_home, "med_config": med_config, "checkpoint": checkpoint}


@pytest.fixture
def tiny_hub_cache(tiny_imagereward, monkeypatch):
    """The tiny tokenizer's Hugging Face cache for this process and its subprocesses. huggingface_hub reads HF_HOME
    once, at import, which an earlier test may already have done: its cache constant is set too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tiny_imagereward["hf_home"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tiny_imagereward["hf_home"] / "hub"))
    return tiny_imagereward


def package_scores(files: dict[str, Path], pictures: list[np.ndarray], prompts: list[str], folder: Path) -> list:
    """`ImageReward.score(prompt, PIL image)` of the package, each image handed over as a PIL image in memory."""
    np.save(folder / "pictures.npy", np.stack(pictures))
    code = f"""
import json, sys, numpy as np, torch
from PIL import Image
sys.path.insert(0, {str(Path(__file__).parents[1] / 'suites')!r})
from imagereward_worker import import_model_class
model = import_model_class()(med_config={str(files['med_config'])!r}, device='cpu')
model.load_state_dict(torch.load({str(files['checkpoint'])!r}, weights_only=True))
model.eval()
pictures = np.load({str(folder / 'pictures.npy')!r})
with torch.no_grad():
    print(json.dumps([float(model.score(p, Image.fromarray(i))) for p, i in zip({prompts!r}, pictures)]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=overlay_env(files["hf_home"]), timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_scores_equal_the_packages_own(tiny_hub_cache, tmp_path):
    from harness.generation import ImageRequest, Sample

    tiny_imagereward = tiny_hub_cache
    rng = np.random.default_rng(0)
    pictures = [np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8) for _ in range(3)]
    prompts = ["a photo of a red circle", "a cat on a horse", "a city at night"]
    suite = ImageRewardSuite(ImageRewardSuite.Params(checkpoint=tiny_imagereward["checkpoint"],
                                                     med_config=tiny_imagereward["med_config"]))
    samples = [Sample(ImageRequest(p, i, 0), 0, image, Path(f"{i}.png"))
               for i, (p, image) in enumerate(zip(prompts, pictures, strict=True))]
    result = suite.evaluate(samples, None)
    ours = [r["imagereward"] for r in result.records]
    theirs = package_scores(tiny_imagereward, pictures, prompts, tmp_path)
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert len(set(np.round(ours, 5))) == 3  # each image scored, not a constant
    assert result.metrics["imagereward"].value == pytest.approx(np.mean(theirs), abs=1e-5)
    assert "image_reward-1.5" in result.notes[0] and "transformers-4.46.3" in result.notes[0]  # what scored them


def test_a_checkpoint_missing_weights_is_refused_before_generating(tiny_hub_cache, tmp_path):
    import torch

    from harness.errors import UsageError

    tiny_imagereward = tiny_hub_cache
    state = torch.load(tiny_imagereward["checkpoint"], weights_only=True)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("mlp.")}, partial)
    suite = ImageRewardSuite(ImageRewardSuite.Params(checkpoint=partial, med_config=tiny_imagereward["med_config"]))
    with pytest.raises(UsageError, match=r"lacks \d+ weights of the model \(e.g. mlp\."):
        suite.prepare()


def test_runs_end_to_end_on_the_tiny_model(dirs, tiny_hub_cache):
    tiny_imagereward = tiny_hub_cache
    result = invoke(*run_args(dirs, "--method", "depth-last", "--suite", "imagereward", "--limit", "4",
                              "--set", f"imagereward.checkpoint={tiny_imagereward['checkpoint']}",
                              "--set", f"imagereward.med_config={tiny_imagereward['med_config']}"))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    assert results["suites"]["imagereward"]["samples_scored"] == 4
    assert np.isfinite(results["metrics"]["imagereward/imagereward"])
    assert results["metric_details"]["imagereward/imagereward"]["higher_is_better"] is True


def test_offline_without_weights_stops_before_generating_naming_the_download(tmp_path):
    environment()
    args = ["run", "--model", "tiny-sd3", "--suite", "imagereward", "--limit", "1", "--no-progress",
            "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    result = run_harness(*args, env=harness_env(HF_HOME=str(tmp_path / "hf-home")))
    assert result.returncode == 2, result.stderr
    assert "THUDM/ImageReward" in result.stderr and "ImageReward.pt" in result.stderr
    assert "--set imagereward.checkpoint=" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "cache").rglob("*.png"))
