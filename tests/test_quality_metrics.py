"""The metrics compression papers report beside GenEval: CLIPScore equals torchmetrics' own, PickScore its authors'
recipe, FID and KID equal torchmetrics' metrics and clean-fid's formulas, CMMD its paper's formula; each runs end to
end on tiny local weights and stops offline, before generating anything, naming the download and the setting."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import harness_env, invoke, read_results, run_args, run_harness

from harness.metrics import frechet_distance, gaussian_mmd, kernel_inception_distance
from suites.distribution_base import decode_features, encode_features


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLIP of a few thousand parameters with CLIP's real tokenizer, saved as a local model folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from harness.models.tiny import clip_tokenizer

    tokenizer = clip_tokenizer(max_length=77)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "vocab_size": len(tokenizer), "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).eval().save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch-fidelity's Inception-v3 with seeded random weights, saved as its weights file is (a state dict)."""
    import torch
    from torch_fidelity import feature_extractor_inceptionv3 as module

    torch.manual_seed(0)
    build = module.FeatureExtractorInceptionV3.load_state_dict
    module.FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
    original_url_loader, module.load_state_dict_from_url = module.load_state_dict_from_url, lambda *a, **k: {}
    try:
        network = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        module.FeatureExtractorInceptionV3.load_state_dict = build
        module.load_state_dict_from_url = original_url_loader
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(network.state_dict(), path)
    return path


def images(n: int, size: int = 64, seed: int = 0, shift: int = 0) -> list[np.ndarray]:
    """Smooth random RGB images (blobs, not noise), `shift` brightening them to make a second distribution."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 200, (n, 8, 8, 3))
    return [np.clip(np.kron(c, np.ones((size // 8, size // 8, 1))) + shift, 0, 255).astype(np.uint8)
            for c in coarse]


def samples_of(pictures: list[np.ndarray], prompts: list[str]):
    from harness.generation import ImageRequest, Sample

    return [Sample(ImageRequest(p, i, 0), 0, image, Path(f"{i}.png"))
            for i, (image, p) in enumerate(zip(pictures, prompts, strict=True))]


PROMPTS = ["a red circle", "a photo of a cat", "an astronaut riding a horse", "a bowl of fruit", "two dogs",
           "a city at night", "a watercolour of a lighthouse", "a blue square and a green triangle"]


# --- CLIPScore and PickScore --------------------------------------------------------------------------------------


def test_clipscore_equals_torchmetrics_clip_score(tiny_clip):
    import torch
    from torchmetrics.functional.multimodal import clip_score
    from transformers import CLIPModel, CLIPProcessor

    from suites.clipscore import ClipScoreSuite

    class TensorFeatures(CLIPModel):
        """torchmetrics 1.9 expects the tensors transformers 4 returned; transformers 5 returns model outputs."""

        def get_image_features(self, *args, **kwargs):
            return super().get_image_features(*args, **kwargs).pooler_output

        def get_text_features(self, *args, **kwargs):
            return super().get_text_features(*args, **kwargs).pooler_output

    pictures = images(len(PROMPTS))
    suite = ClipScoreSuite(ClipScoreSuite.Params(model=str(tiny_clip)))
    result = suite.evaluate(samples_of(pictures, PROMPTS), None)
    per_image = [r["clipscore"] for r in result.records]
    model, processor = TensorFeatures.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    for picture, prompt, ours in zip(pictures, PROMPTS, per_image, strict=True):
        with torch.no_grad():
            theirs = clip_score(torch.from_numpy(picture).permute(2, 0, 1), prompt, lambda: (model, processor))
        assert max(ours, 0.0) == pytest.approx(float(theirs), abs=1e-4)  # one image: torchmetrics clamps it
    with torch.no_grad():
        batch = clip_score([torch.from_numpy(p).permute(2, 0, 1) for p in pictures], PROMPTS,
                           lambda: (model, processor))
    assert result.metrics["clipscore"].value == pytest.approx(float(batch), abs=1e-4)
    assert len(set(np.round(per_image, 4))) == len(PROMPTS)  # a real score per image, not a constant
    assert result.notes == [f"clipscore: CLIP {tiny_clip}"]


def test_pickscore_follows_its_authors_recipe(tiny_clip):
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from suites.pickscore import PickScoreSuite

    pictures = images(4, seed=3)
    prompts = PROMPTS[:4]
    suite = PickScoreSuite(PickScoreSuite.Params(model=str(tiny_clip), processor=str(tiny_clip)))
    ours = [r["pickscore"] for r in suite.evaluate(samples_of(pictures, prompts), None).records]
    # the PickScore README's scoring, one prompt against its image
    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    for picture, prompt, value in zip(pictures, prompts, ours, strict=True):
        image_inputs = processor(images=[Image.fromarray(picture)], padding=True, truncation=True, max_length=77,
                                 return_tensors="pt")
        text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            image_embs = model.get_image_features(**image_inputs).pooler_output
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs).pooler_output
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            expected = (model.logit_scale.exp() * (text_embs @ image_embs.T))[0, 0]
        assert value == pytest.approx(float(expected), abs=1e-4)


# --- FID, KID, CMMD -----------------------------------------------------------------------------------------------


def test_frechet_and_kernel_distances_equal_clean_fid_on_known_features():
    from cleanfid.fid import frechet_distance as clean_frechet
    from cleanfid.fid import kernel_distance as clean_kernel

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 24)), rng.normal(0.2, 1.3, size=(400, 24))
    expected = clean_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    kid, spread = kernel_inception_distance(a, b)  # 400 < the subset size: one exact subset, as clean-fid takes
    assert kid == pytest.approx(clean_kernel(a, b), rel=1e-8) and spread == 0.0
    # more images than a subset: seeded subsets, the same figure every time, near the exact one
    many_a, many_b = rng.normal(size=(1500, 8)), rng.normal(0.1, 1.0, size=(1500, 8))
    first, second = kernel_inception_distance(many_a, many_b), kernel_inception_distance(many_a, many_b)
    assert first == second and first[1] > 0
    assert first[0] == pytest.approx(kernel_inception_distance(many_a, many_b, subset_size=1500)[0], rel=0.1)


def test_cmmd_equals_its_formula_computed_pair_by_pair():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.5, 1.0, size=(9, 5))
    x, y = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)

    def mean_kernel(p, q):
        return np.mean([math.exp(-np.sum((u - v) ** 2) / (2 * 10.0**2)) for u, v in itertools.product(p, q)])

    expected = 1000 * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))
    assert gaussian_mmd(x, y) == pytest.approx(expected, rel=1e-10)
    assert gaussian_mmd(x, x) == pytest.approx(0.0, abs=1e-12) and gaussian_mmd(x, y) > 0


def test_fid_and_kid_equal_torchmetrics_and_torch_fidelity_on_the_same_images(inception_weights):
    import torch
    import torch_fidelity
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    from suites.fid import FIDSuite

    n = 12
    generated, reference = images(n, size=299, seed=4), images(n, size=299, seed=5, shift=40)
    suite = FIDSuite(FIDSuite.Params(inception_weights=inception_weights))
    result = suite.evaluate(samples_of(generated, PROMPTS[:4] * 3), samples_of(reference, PROMPTS[:4] * 3))
    as_batch = [torch.from_numpy(np.stack(s)).permute(0, 3, 1, 2) for s in (generated, reference)]
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(inception_weights))
    kid = KernelInceptionDistance(feature=fid.inception, subset_size=n)  # KID takes no weights path: the same network
    for metric in (fid, kid):
        metric.update(as_batch[1], real=True)
        metric.update(as_batch[0], real=False)
    assert result.metrics["fid"].value == pytest.approx(float(fid.compute()), rel=1e-4)
    assert result.metrics["kid"].value == pytest.approx(float(kid.compute()[0]), rel=1e-4, abs=1e-9)
    assert result.metrics["fid"].value > 0 and result.metrics["fid"].n == n

    class Folder(torch.utils.data.Dataset):
        def __init__(self, pictures):
            self.pictures = pictures

        def __len__(self):
            return len(self.pictures)

        def __getitem__(self, i):
            return torch.from_numpy(self.pictures[i]).permute(2, 0, 1)

    theirs = torch_fidelity.calculate_metrics(
        input1=Folder(generated), input2=Folder(reference), fid=True, kid=True, kid_subset_size=n, cuda=False,
        feature_extractor_weights_path=str(inception_weights), verbose=False, cache=False)
    # torch-fidelity's own feature code and scipy's matrix square root: equal within float32 features' precision
    assert result.metrics["fid"].value == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert result.metrics["kid"].value == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
    assert any("too few" in note and "2048" in note for note in result.notes)


def test_distribution_records_recompute_the_figure_from_any_subset(tiny_clip):
    from suites.cmmd import CMMDSuite

    suite = CMMDSuite(CMMDSuite.Params(clip_model=str(tiny_clip)))
    generated, reference = images(8, seed=6), images(8, seed=7, shift=60)
    result = suite.evaluate(samples_of(generated, PROMPTS), samples_of(reference, PROMPTS))
    model, processor = suite._extractor
    from suites.clip_models import image_embeddings

    expected = gaussian_mmd(image_embeddings(model, processor, generated), image_embeddings(model, processor,
                                                                                              reference))
    assert result.metrics["cmmd"].value == pytest.approx(expected, rel=1e-5) and expected > 0
    rows = [dict(r, prompt_index=i, sample_index=0) for i, r in enumerate(result.records)]
    half = suite.aggregate(rows[:4])["cmmd"]
    assert half.n == 4 and half.value == pytest.approx(
        gaussian_mmd(*(np.stack([decode_features(r[k]) for r in rows[:4]]) for k in ("features",
                                                                                     "reference_features"))))
    vector = np.random.default_rng(0).normal(size=16).astype(np.float32)
    assert np.array_equal(decode_features(encode_features(vector)), vector.astype(np.float64))
    same = suite.evaluate(samples_of(generated, PROMPTS), samples_of(generated, PROMPTS))
    assert same.metrics["cmmd"].value == pytest.approx(0.0, abs=1e-9)


# --- end to end, and offline ---------------------------------------------------------------------------------------

LOCAL = {
    "clipscore": lambda clip, inception: [f"clipscore.model={clip}"],
    "pickscore": lambda clip, inception: [f"pickscore.model={clip}", f"pickscore.processor={clip}"],
    "fid": lambda clip, inception: [f"fid.inception_weights={inception}"],
    "cmmd": lambda clip, inception: [f"cmmd.clip_model={clip}"],
}


@pytest.mark.parametrize("suite", list(LOCAL))
def test_each_suite_runs_end_to_end_on_local_tiny_weights(dirs, tiny_clip, inception_weights, suite):
    settings = [arg for s in LOCAL[suite](tiny_clip, inception_weights) for arg in ("--set", s)]
    result = invoke(*run_args(dirs, "--method", "depth-last", "--suite", suite, "--limit", "4", *settings))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    keys = [k for k in results["metrics"] if k.startswith(f"{suite}/")]
    assert keys and all(math.isfinite(results["metrics"][k]) for k in keys)
    assert results["suites"][suite]["samples_scored"] == 4
    samples = Path(result.stdout.strip().splitlines()[-1]).parent / "samples.jsonl"
    assert len([line for line in samples.read_text().splitlines() if f'"suite": "{suite}"' in line]) >= 4
    for key in keys:
        assert results["metric_details"][key]["higher_is_better"] == (suite in ("clipscore", "pickscore"))


OFFLINE = {
    "clipscore": ("openai/clip-vit-large-patch14", "--set clipscore.model="),
    "pickscore": ("yuvalkirstain/PickScore_v1", "--set pickscore.model="),
    "cmmd": ("openai/clip-vit-large-patch14-336", "--set cmmd.clip_model="),
    "fid": ("weights-inception-2015-12-05-6726825d.pth", "--set fid.inception_weights="),
}


@pytest.mark.parametrize("suite", list(OFFLINE))
def test_offline_without_weights_stops_before_generating_naming_the_download(tmp_path, suite):
    download, setting = OFFLINE[suite]
    args = ["run", "--model", "tiny-sd3", "--suite", suite, "--limit", "1", "--no-progress",
            "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    env = harness_env(HF_HOME=str(tmp_path / "hf-home"), TORCH_HOME=str(tmp_path / "torch-home"))
    result = run_harness(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert download in result.stderr and setting in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "cache").rglob("*.png"))  # stopped before generating anything


def test_fid_refuses_a_weights_file_that_is_not_plain_tensors(tmp_path):
    """torch-fidelity unpickles its weights file with weights_only=False; the suite checks it holds only tensors."""
    import pickle

    from harness.errors import UsageError
    from suites.fid import FIDSuite

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    bad = tmp_path / "weights.pth"
    bad.write_bytes(pickle.dumps({"Conv2d_1a_3x3.conv.weight": Payload()}))
    with pytest.raises(UsageError, match="is not torch-fidelity's Inception weights"):
        FIDSuite(FIDSuite.Params(inception_weights=bad)).prepare()


def test_the_leaderboard_shows_the_new_metrics_with_direction_and_interval(dirs, tiny_clip, tmp_path):
    """A base run and a pruned run with clipscore and cmmd: the table heads each metric with its direction and gives
    the pruned run's change with a bootstrap interval (cmmd's recomputed from resampled records)."""
    settings = ["--suite", "clipscore,cmmd", "--limit", "6", "--set", f"clipscore.model={tiny_clip}",
                "--set", f"cmmd.clip_model={tiny_clip}"]
    for method in ("none", "depth-last"):
        result = invoke(*run_args(dirs, "--method", method, *settings))
        assert result.returncode == 0, result.stderr
    board = tmp_path / "board"
    result = invoke("leaderboard", str(dirs["out"]), "--out", str(board))
    assert result.returncode == 0, result.stderr
    markdown = (board / "LEADERBOARD.md").read_text()
    assert "clipscore/clipscore ↑" in markdown and "cmmd/cmmd ↓" in markdown
    pruned = next(line for line in markdown.splitlines() if line.startswith("| depth-last"))
    assert pruned.count("CI [") == 2, pruned


def test_paper_groups_name_the_suites_each_paper_reports():
    from harness.commands.setup import expand_suites
    from harness.registry import SUITES

    assert expand_suites(["paper"], ("geneval-shapes",)) == ["geneval", "hpsv2", "latency", "memory"]
    assert expand_suites(["svdquant"], ("geneval", "hpsv2")) == ["fid", "imagereward", "clipscore", "fidelity"]
    assert set(expand_suites(["paper", "svdquant"], ())) <= set(SUITES.names())


def test_against_a_folder_of_real_images(dirs, tiny_clip, tmp_path):
    """cmmd against real images: no original is generated, the folder's features are computed once and cached,
    the figure equals the formula on both sets, and a bad folder stops the run before any image is generated."""
    from PIL import Image

    from suites.clip_models import image_embeddings, load_clip
    from suites.cmmd import CMMDSuite

    real = tmp_path / "mjhq" / "people"
    real.mkdir(parents=True)
    for i, picture in enumerate(images(6, size=96, seed=9, shift=30)):  # another size: cropped and resized
        Image.fromarray(picture).save(real / f"{i}.jpg", quality=95)
    settings = ["--suite", "cmmd", "--limit", "4", "--set", f"cmmd.clip_model={tiny_clip}",
                "--set", f"cmmd.real_images={real.parent}"]
    result = invoke(*run_args(dirs, "--method", "depth-last", *settings))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    assert results["generation"]["images_generated_main_process"] == 4  # the compressed model's only
    cached = list((dirs["cache"] / "real-features").glob("cmmd-*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape[0] == 6
    assert any("6 real images" in note for note in results["suites"]["cmmd"]["notes"])
    # the figure is the formula on the generated images' embeddings and the real ones'
    folder = Path(result.stdout.strip().splitlines()[-1]).parent
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    generated = np.stack([decode_features(r["features"]) for r in rows if r.get("suite") == "cmmd"
                          and "features" in r])
    from harness.generation import load_image_file

    model, processor = load_clip("cmmd", str(tiny_clip), "clip_model")
    real_embeddings = image_embeddings(model, processor, [load_image_file(f, (64, 64))
                                                          for f in sorted(real.glob("*.jpg"))])
    assert results["metrics"]["cmmd/cmmd"] == pytest.approx(gaussian_mmd(generated, real_embeddings), rel=1e-5)
    suite = CMMDSuite(CMMDSuite.Params(clip_model=str(tiny_clip), real_images=real.parent))
    assert suite.needs_reference is False and CMMDSuite(CMMDSuite.Params()).needs_reference is True
    bad = invoke(*run_args(dirs, "--suite", "cmmd", "--limit", "2", "--set", f"cmmd.clip_model={tiny_clip}",
                           "--set", f"cmmd.real_images={tmp_path / 'absent'}"))
    assert bad.returncode == 2 and "is not a folder" in bad.stderr
