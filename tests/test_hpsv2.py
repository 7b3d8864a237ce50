"""The `hpsv2` suite: its scores equal the `hpsv2` package's own scoring on the same (small, offline-built) checkpoint,
it runs end to end, and it fails offline with exit code 2 and a message naming what to download."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import harness_env, invoke, read_results, run_args, run_harness

TINY_CLIP = "hps-parity-tiny"  # a ViT-H-14-shaped open_clip config, small enough to build in a second
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def reference_package():
    """The `hpsv2` package's scoring module, installed by `python tools/install_hpsv2.py` (make and tox do it)."""
    try:
        import hpsv2.img_score
    except (ImportError, FileNotFoundError) as exc:
        message = f"the hpsv2 package is not usable ({exc}); install it with `python tools/install_hpsv2.py`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return hpsv2.img_score


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    """An HPS-style checkpoint ({'state_dict': ...}) of the tiny config, built by the package's own open_clip fork
    exactly as `hpsv2.img_score.initialize_model` builds ViT-H-14, and that model with its evaluation transform."""
    import open_clip
    import torch

    package = reference_package()
    from hpsv2.src import open_clip as package_open_clip

    folder = tmp_path_factory.mktemp("hps")
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    package_open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    model, _, preprocess_val = package_open_clip.create_model_and_transforms(
        TINY_CLIP, None, precision="amp", device="cpu", jit=False, force_quick_gelu=False, force_custom_text=False,
        force_patch_dropout=False, force_image_size=None, pretrained_image=False, image_mean=None, image_std=None,
        light_augmentation=True, aug_cfg={}, output_dict=True, with_score_predictor=False,
        with_region_predictor=False)
    with torch.no_grad():  # random weights give near-zero cosines; spread the projections so scores differ
        model.visual.proj.mul_(8)
        model.text_projection.mul_(8)
    torch.save({"state_dict": model.state_dict()}, folder / "hps.pt")
    return {"package": package, "model": model, "preprocess_val": preprocess_val, "checkpoint": folder / "hps.pt",
            "folder": folder}


def package_scores(tiny_hps, monkeypatch, paths: list[Path], prompts: list[str]) -> list[float]:
    """`hpsv2.score` on each image file with its prompt; its ViT-H-14 set-up is replaced by the tiny model (it would
    download 3.9 GB of LAION weights first), everything after that is the package's own code."""
    package = tiny_hps["package"]
    monkeypatch.setitem(package.model_dict, "model", tiny_hps["model"])
    monkeypatch.setitem(package.model_dict, "preprocess_val", tiny_hps["preprocess_val"])
    return [float(package.score(str(path), prompt, cp=str(tiny_hps["checkpoint"]))[0])
            for path, prompt in zip(paths, prompts, strict=True)]


def test_scores_equal_the_hpsv2_package_on_the_same_checkpoint(tiny_hps, monkeypatch, tmp_path):
    from PIL import Image

    from harness.generation import ImageRequest, Sample
    from suites.hpsv2 import PROMPTS_PER_STYLE, HPSv2Suite

    rng = np.random.default_rng(0)
    # square and not, larger and smaller than the model's 32 px, and exactly its size (no resize)
    shapes = [(64, 64), (48, 80), (90, 30), (32, 32), (20, 20), (1024, 1024)]
    prompts = ["a cat on a red sofa", "concept art of a castle", "an oil painting of a harbour at dusk",
               "a photo of a bicycle", "anime girl with blue hair", "a lighthouse in the fog"]
    samples, paths = [], []
    for index, ((height, width), prompt) in enumerate(zip(shapes, prompts, strict=True)):
        smooth = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(smooth).resize((width, height), Image.BILINEAR))
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image).save(paths[-1])
        style = index % 2  # anime and concept-art
        samples.append(Sample(ImageRequest(prompt, style * PROMPTS_PER_STYLE + index, 0), 0, image, paths[-1]))

    expected = package_scores(tiny_hps, monkeypatch, paths, prompts)
    suite = HPSv2Suite(HPSv2Suite.Params(checkpoint=tiny_hps["checkpoint"], clip_model=TINY_CLIP, batch_size=4))
    result = suite.evaluate(samples, None)
    ours = [record["hps"] / 100 for record in result.records]  # the suite reports x100, the package raw cosines
    assert max(ours) - min(ours) > 0.05  # the images really score differently
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    anime = np.mean([record["hps"] for record in result.records[0::2]])
    concept = np.mean([record["hps"] for record in result.records[1::2]])
    assert result.metrics["anime"].value == pytest.approx(anime)
    assert result.metrics["overall"].value == pytest.approx((anime + concept) / 2)
    assert set(result.metrics) == {"anime", "concept-art", "overall"}
    assert "HPS v2.1" in result.notes[0]


def test_open_clip_stock_transform_would_not_match(tiny_hps, monkeypatch, tmp_path):
    """Why the suite carries its own preprocessing: open_clip's stock transform scores a 1024 px image differently."""
    import open_clip
    import torch
    from PIL import Image

    image = np.asarray(Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))
                       .resize((1024, 1024), Image.BILINEAR))
    Image.fromarray(image).save(tmp_path / "big.png")
    expected = package_scores(tiny_hps, monkeypatch, [tmp_path / "big.png"], ["a photo of a dog"])[0]
    model, _, stock = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=None)
    model.load_state_dict(torch.load(tiny_hps["checkpoint"], weights_only=True)["state_dict"])
    model.eval()
    with torch.no_grad():
        image_features = model.encode_image(stock(Image.fromarray(image))[None], normalize=True)
        text_features = model.encode_text(open_clip.get_tokenizer(TINY_CLIP)(["a photo of a dog"]), normalize=True)
    assert abs(float((image_features * text_features).sum()) - expected) > 1e-5


def write_prompts(folder: Path) -> Path:
    from suites.hpsv2 import STYLES

    folder.mkdir(parents=True, exist_ok=True)
    for style in STYLES:
        (folder / f"{style}.json").write_text(json.dumps([f"{style} prompt {i}: a red cube" for i in range(3)]))
    return folder


def test_runs_end_to_end_with_local_weights_and_prompts(tiny_hps, dirs, tmp_path):
    prompts = write_prompts(tmp_path / "prompts")
    result = invoke(*run_args(dirs, "--suite", "hpsv2", "--limit", "2", "--set", f"hpsv2.prompts={prompts}",
                              "--set", f"hpsv2.checkpoint={tiny_hps['checkpoint']}", "--set",
                              f"hpsv2.clip_model={TINY_CLIP}", "--set", "hpsv2.version=v2.0"))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    styles = ("anime", "concept-art", "paintings", "photo")
    assert {f"hpsv2/{style}" for style in styles} | {"hpsv2/overall"} <= set(results["metrics"])
    means = [results["metrics"][f"hpsv2/{style}"] for style in styles]
    assert results["metrics"]["hpsv2/overall"] == pytest.approx(sum(means) / 4)
    assert results["suites"]["hpsv2"]["samples_scored"] == 8
    assert any("HPS v2.0" in note for note in results["suites"]["hpsv2"]["notes"])


@pytest.mark.parametrize("local_prompts", [False, True])
def test_offline_without_weights_stops_with_exit_code_2_naming_the_download(tmp_path, local_prompts):
    args = ["run", "--model", "tiny-sd3", "--suite", "hpsv2", "--limit", "1", "--no-progress",
            "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    if local_prompts:
        args += ["--set", f"hpsv2.prompts={write_prompts(tmp_path / 'prompts')}"]
    result = run_harness(*args, env=harness_env(HF_HOME=str(tmp_path / "hf-home")))
    assert result.returncode == 2, result.stderr
    if local_prompts:  # the prompts are here: what is missing is the checkpoint
        assert "xswu/HPSv2" in result.stderr and "HPS_v2.1_compressed.pt" in result.stderr
        assert "--set hpsv2.checkpoint=" in result.stderr
    else:
        assert "zhwang/HPDv2" in result.stderr and "--set hpsv2.prompts=" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "cache").rglob("*.png"))  # stopped before generating anything
