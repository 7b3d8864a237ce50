"""Depth pruning methods: block choice at a budget (on the real SD3.5 Large Turbo architecture, meta device), the
published cuts, the positional prior against the release's ranking, end-to-end runs, and sensitivity-guided
distillation's per-block update intensities."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import invoke, read_results, run_args, shared_data
from diffusers import SD3Transformer2DModel
from PIL import Image

from compressors.hierarchicalprune import PUBLISHED_CUTS, HierarchicalPrune, HierarchicalPruneParams
from compressors.pruning import DepthImportance, DepthLast, DepthUniform, PruningParams, RankedPruningParams
from harness.context import Context
from harness.errors import UsageError
from harness.models.presets import PRESETS
from harness.ranking import RANKING_FORMAT, RANKING_VERSION
from harness.reference.render import training_batch
from harness.reference.world import TRAINING_WORLD


def _meta_model(name: str, tmp_path: Path) -> SimpleNamespace:
    spec = PRESETS[name]
    with torch.device("meta"):
        transformer = SD3Transformer2DModel(**spec.transformer_config)
    return SimpleNamespace(spec=spec, transformer=transformer, source=str(tmp_path), fingerprint="meta")


def _select(method: Any, model: Any) -> tuple[list[int], dict[str, Any]]:
    """The blocks `method` removes from `model`, by the ranking it finds itself, as `apply` chooses them."""
    return method.select_blocks(model, method.ranking_for(model))


def _context(tmp_path: Path) -> Context:
    return Context(cache_dir=tmp_path / "cache", progress=False)


def test_budgets_count_removed_parameters(tmp_path):
    model = _meta_model("sd3.5-large-turbo", tmp_path)
    last, how = _select(DepthLast(PruningParams(budget=0.20)), model)
    assert last == list(range(29, 37)) and how["selection"] == "budget 0.2"  # 8 x 213 M = 21.2% >= 20%
    assert _select(DepthLast(PruningParams(budget=0.30)), model)[0] == list(range(25, 37))  # 12 blocks: 31.7%
    uniform, _ = _select(DepthUniform(PruningParams(budget=0.20)), model)
    assert len(uniform) == 8 and np.diff(uniform).min() >= 4  # spread over the depth, never the final block
    assert max(uniform) < 37
    with pytest.raises(UsageError, match="blocks \\[37\\] cannot be removed"):
        _select(DepthLast(PruningParams(blocks=(3, 37))), model)
    with pytest.raises(ValueError, match="between 0 and 1"):
        PruningParams(budget=1.5)


def test_hierarchicalprune_uses_the_published_cut_without_a_ranking(tmp_path):
    model = _meta_model("sd3.5-large-turbo", tmp_path)
    method = HierarchicalPrune(context=_context(tmp_path))
    chosen, how = _select(method, model)
    assert chosen == list(PUBLISHED_CUTS["sd3.5-large-turbo"]) and "published cut" in how["selection"]
    medium = _meta_model("sd3.5-medium", tmp_path)
    assert _select(method, medium)[0] == [13, 15, 16, 18, 20, 21]
    with pytest.raises(UsageError, match="run `harness analyze --model sd3.5-large` first"):
        _select(method, _meta_model("sd3.5-large", tmp_path))
    with pytest.raises(UsageError, match="needs a contribution ranking"):
        _select(DepthImportance(context=_context(tmp_path)), model)


def test_hpp_on_the_released_ranking_overlaps_the_published_cut(tmp_path):
    ranking = shared_data("hierarchicalprune/sd3.5-large-turbo_hpsv2_component_ranking.json")
    model = _meta_model("sd3.5-large-turbo", tmp_path)
    params = HierarchicalPruneParams(ranking=ranking, ranking_base_score=30.0)
    chosen, how = _select(HierarchicalPrune(params, _context(tmp_path)), model)
    published = set(PUBLISHED_CUTS["sd3.5-large-turbo"])
    assert len(chosen) == 8 and len(published & set(chosen)) >= 6, chosen  # the prior keeps the late blocks
    assert 35 not in chosen  # late but sensitive (its attn and w_norm1 matter): kept
    importance_only, _ = _select(DepthImportance(RankedPruningParams(ranking=ranking, ranking_base_score=30.0),
                                                 _context(tmp_path)), model)
    assert len(importance_only) == 8


def test_depth_last_end_to_end(dirs):
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", "depth-last", "--set",
                              "depth-last.budget=0.3", "--suite", "fidelity", "--limit", "2",
                              "--set", "sampling.num_inference_steps=2"))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    cost = results["compression"]["steps"][0]["cost"]
    assert cost["removed_blocks"] == [1, 2] and cost["removed_fraction"] >= 0.3  # the final block 3 stays
    assert results["metrics"]["fidelity/psnr"] < 40


def _ranking_file(path: Path, sensitivity: dict[int, float]) -> Path:
    path.write_text(json.dumps({
        "format": RANKING_FORMAT, "version": RANKING_VERSION, "metric": "fidelity/ssim", "higher_is_better": True,
        "granularity": "block", "base_score": 1.0, "model": {},
        "ablations": [{"key": str(b), "score": 1.0 - s, "drop": s} for b, s in sensitivity.items()]}))
    return path


def _caption_folder(folder: Path, count: int = 8) -> Path:
    import random

    folder.mkdir()
    captions, images = training_batch(TRAINING_WORLD, random.Random(0), count)
    for i, (caption, image) in enumerate(zip(captions, images, strict=True)):
        Image.fromarray(image).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(caption)
    return folder


def _block_changes(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> float:
    return float(np.mean([(after[k] - before[k]).abs().mean().item() for k in before if k.startswith(prefix)]))


@pytest.mark.parametrize("preserve_early", [False, True])
def test_sgdistill_update_intensity_is_inverse_to_sensitivity(tmp_path, preserve_early):
    from harness.models.loading import load_model

    model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
    sensitivity = {0: 4.0, 1: 1.0, 2: 0.5, 3: 2.0}  # block 2 is removed; kept 0, 1, 3 -> new indices 0, 1, 2
    params = HierarchicalPruneParams(blocks=(2,), ranking=_ranking_file(tmp_path / "r.json", sensitivity),
                                     distill_steps=2, distill_batch_size=4, distill_lr=1e-3,
                                     distill_data=_caption_folder(tmp_path / "data"), preserve_early=preserve_early)
    before = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    cost = HierarchicalPrune(params, _context(tmp_path)).apply(model)
    assert cost["removed_blocks"] == [2] and cost["distillation"]["steps"] == 2
    after = model.pipeline.transformer.state_dict()
    # the pruned transformer's block 2 was block 3: compare it with the original's
    renamed = {k.replace("transformer_blocks.3.", "transformer_blocks.2."): v for k, v in before.items()
               if not k.startswith("transformer_blocks.2.")}
    change = {j: _block_changes(renamed, after, f"transformer_blocks.{j}.") for j in range(3)}
    embedders = _block_changes(renamed, after, "pos_embed.") + _block_changes(renamed, after, "context_embedder.")
    if preserve_early:  # PWP: everything before the cut (blocks 0 and 1, embedders) is frozen
        assert change[0] == 0 and change[1] == 0 and embedders == 0 and change[2] > 0
        assert cost["distillation"]["intensity"] == {"0": 0.0, "1": 0.0, "2": 1.0}
    else:  # intensities 1/4 : 1 : 1/2 -> update magnitudes in the inverse order of sensitivity
        assert change[1] > change[2] > change[0] > 0 and embedders > 0
        assert cost["distillation"]["intensity"] == {"0": 0.25, "1": 1.0, "2": 0.5}
        assert change[1] / change[0] == pytest.approx(4.0, rel=0.35)


def test_update_intensity_is_set_by_the_ranking_it_is_given(tmp_path):
    from harness.models.surgery import remove_blocks
    from harness.ranking import load_ranking

    model = _meta_model("tiny-sd3", tmp_path)
    remove_blocks(model.transformer, [2])  # kept 0, 1, 3 -> new indices 0, 1, 2
    ranking = load_ranking(_ranking_file(tmp_path / "r.json", {0: 4.0, 1: 1.0, 2: 0.5, 3: 2.0}))
    method = HierarchicalPrune(HierarchicalPruneParams(preserve_early=False), _context(tmp_path))  # chose nothing
    assert method.update_intensity(model, [2], ranking) == {0: 0.25, 1: 1.0, 2: 0.5}
    assert method.update_intensity(model, [2], None) == {0: 1.0, 1: 1.0, 2: 1.0}  # no ranking, said so: full rate
    with pytest.raises(TypeError):
        method.update_intensity(model, [2])  # the ranking is never implied


def test_a_saved_compressed_model_loads_back_and_scores_identically(dirs, tmp_path):
    fast = ["--set", "sampling.num_inference_steps=2", "--limit", "2", "--suite", "fidelity"]
    direct = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", "depth-last+nf4", *fast))
    assert direct.returncode == 0, direct.stderr
    saved = tmp_path / "saved"
    result = invoke("compress", "--model", "tiny-sd3", "--method", "depth-last+nf4", "--save", str(saved),
                    "--cache-dir", str(dirs["cache"]), "--no-progress")
    assert result.returncode == 0, result.stderr
    provenance = json.loads((saved / "harness_provenance.json").read_text())
    assert [s["name"] for s in provenance["recipe"]] == ["depth-last", "nf4"]
    assert provenance["base"]["name"] == "tiny-sd3"
    files = list((saved / "transformer").glob("*.safetensors"))
    # tensor data only: a safetensors file is an 8-byte header length, a JSON header, then the data
    stored = sum(f.stat().st_size - 8 - int.from_bytes(f.read_bytes()[:8], "little") for f in files)
    assert abs(stored - provenance["transformer_weight_bytes"]) < 0.1 * provenance["transformer_weight_bytes"]
    reloaded = invoke(*run_args(dirs, "--model", str(saved), *fast))
    assert reloaded.returncode == 0, reloaded.stderr
    direct_metrics, reloaded_metrics = read_results(direct.stdout)["metrics"], read_results(reloaded.stdout)["metrics"]
    assert reloaded_metrics == direct_metrics  # same pixels, and fidelity compares with the base model's images
    again = invoke("compress", "--model", "tiny-sd3", "--method", "none", "--save", str(saved))
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_distillation_does_not_depend_on_what_ran_before_it(tmp_path):
    from harness.models.loading import load_model

    data = _caption_folder(tmp_path / "data", count=4)
    weights = []
    for history in (1, 2):  # the process's global generator in two different states
        torch.manual_seed(history)
        torch.randn(history * 10)
        model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
        params = PruningParams(blocks=(1,), distill_steps=2, distill_batch_size=2, distill_lr=1e-3, distill_data=data)
        DepthLast(params, Context(cache_dir=tmp_path / f"cache{history}", progress=False)).apply(model)
        weights.append(model.pipeline.transformer.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_an_interrupted_distillation_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import compressors.distill as distill
    from harness.models.loading import load_model

    monkeypatch.setattr(distill, "CHECKPOINT_EVERY", 2)
    data = _caption_folder(tmp_path / "data", count=4)
    params = PruningParams(blocks=(1,), distill_steps=5, distill_batch_size=2, distill_lr=1e-3, distill_data=data)

    def distilled(cache: str) -> dict[str, torch.Tensor]:
        model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
        DepthLast(params, Context(cache_dir=tmp_path / cache, progress=False)).apply(model)
        return model.pipeline.transformer.state_dict()

    uninterrupted = distilled("once")
    real_next, calls = distill._Pairs.next, []

    def interrupted_next(self, size):  # the 4th batch never comes: stopped after the step-2 checkpoint
        calls.append(size)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_next(self, size)

    monkeypatch.setattr(distill._Pairs, "next", interrupted_next)
    with pytest.raises(KeyboardInterrupt):
        distilled("twice")
    assert list((tmp_path / "twice" / "distill").glob("*/checkpoint.pt"))
    monkeypatch.setattr(distill._Pairs, "next", real_next)
    resumed = distilled("twice")
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


def test_distillation_runs_on_flux_too(tmp_path):
    from harness.models.loading import load_model

    model = load_model(PRESETS["tiny-flux"], weights=None, device="cpu")
    before = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    params = PruningParams(blocks=(1,), distill_steps=2, distill_batch_size=2, distill_lr=1e-3,
                           distill_data=_caption_folder(tmp_path / "data", count=4))
    cost = DepthLast(params, _context(tmp_path)).apply(model)
    assert cost["removed_blocks"] == [1] and cost["distillation"]["steps"] == 2
    after = model.pipeline.transformer.state_dict()
    changed = [k for k in after if k in before and not torch.equal(after[k], before[k])]
    assert any(k.startswith("single_transformer_blocks.") for k in changed)  # every kept block trains
    assert model.pipeline.transformer.training is False


def _component_ranking(path: Path, blocks: int, components: tuple[str, ...]) -> Path:
    """A component ranking whose drops grow with the block's distance from the middle and put attn last."""
    ablations = []
    for block in range(blocks):
        for rank, component in enumerate(components):
            drop = abs(block - blocks / 2) / blocks + (1.0 if component == "attn" else 0.01 * rank)
            ablations.append({"key": f"{block}.{component}", "score": 1.0 - drop, "drop": drop})
    path.write_text(json.dumps({"format": RANKING_FORMAT, "version": RANKING_VERSION, "metric": "fidelity/ssim",
                                "higher_is_better": True, "granularity": "component", "base_score": 1.0,
                                "model": {}, "ablations": ablations}))
    return path


def test_aggressive_regime_removes_middle_subcomponents_and_round_trips(dirs, tmp_path):
    from harness.models.reference import build_untrained_pipeline
    from harness.models.topology import block_topology

    # on the reference architecture: 12 blocks, the middle third is blocks 4-7
    transformer = build_untrained_pipeline(0).transformer
    model = SimpleNamespace(spec=PRESETS["reference"], transformer=transformer, source=str(tmp_path),
                            fingerprint="x")
    ranking = _component_ranking(tmp_path / "r.json", 12, ("w_norm1", "w_norm1_context", "attn", "ff", "ff_context"))
    params = HierarchicalPruneParams(ranking=ranking, budget=0.2, total_budget=0.3, distill_steps=0)
    cost = HierarchicalPrune(params, _context(tmp_path)).apply_structure(model)
    assert cost["removed_fraction"] >= 0.3 and cost["removed_components"]
    kept_original = [i for i in range(12) if i not in cost["removed_blocks"]]
    for key in cost["removed_components"]:
        block, component = key.split(".")
        assert component != "attn" and 4 <= kept_original[int(block)] < 8
    assert len(block_topology(transformer)) == 12 - len(cost["removed_blocks"])

    # through the CLI on tiny-sd3 (4 blocks: the middle third is block 1), saved and loaded back
    tiny_ranking = _component_ranking(tmp_path / "tiny.json", 4, ("w_norm1", "w_norm1_context", "attn", "ff",
                                                                   "ff_context"))
    settings = ["--set", f"hierarchicalprune.ranking={tiny_ranking}", "--set", "hierarchicalprune.blocks=2",
                "--set", "hierarchicalprune.total_budget=0.3", "--set", "hierarchicalprune.distill_steps=0"]
    fast = ["--set", "sampling.num_inference_steps=2", "--limit", "2", "--suite", "fidelity"]
    direct = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", "hierarchicalprune", *settings, *fast))
    assert direct.returncode == 0, direct.stderr
    assert read_results(direct.stdout)["compression"]["steps"][0]["cost"]["removed_components"]
    saved = tmp_path / "saved"
    result = invoke("compress", "--model", "tiny-sd3", "--method", "hierarchicalprune", *settings, "--save",
                    str(saved), "--cache-dir", str(dirs["cache"]), "--no-progress")
    assert result.returncode == 0, result.stderr
    reloaded = invoke(*run_args(dirs, "--model", str(saved), *fast))
    assert reloaded.returncode == 0, reloaded.stderr
    assert read_results(reloaded.stdout)["metrics"] == read_results(direct.stdout)["metrics"]


def test_distillation_rate_defaults_to_the_models_training_rate():
    from compressors.distill import RELEASE_DISTILL_LR, distill_lr
    from harness.commands.reference_train import TrainConfig

    assert distill_lr(PruningParams(), PRESETS["reference"]) == TrainConfig().lr
    assert distill_lr(PruningParams(), PRESETS["sd3.5-medium"]) == RELEASE_DISTILL_LR  # no training rate declared
    assert distill_lr(PruningParams(distill_lr=5e-4), PRESETS["reference"]) == 5e-4


def test_the_distillation_checkpoint_outlives_a_kill_before_the_model_is_stored(tmp_path, monkeypatch):
    """Store first, then delete: killed after training but before the distilled model is in the cache, the next
    run resumes from the finished checkpoint (no step trained again) instead of training from scratch."""
    import compressors.distill as distill
    import harness.models.saving as saving
    from harness.commands.run import apply_chain, chain_identity
    from harness.models.loading import load_model

    params = PruningParams(blocks=(1,), distill_steps=3, distill_batch_size=2, distill_lr=1e-3,
                           distill_data=_caption_folder(tmp_path / "data", count=4))
    compressor = DepthLast(params, Context(cache_dir=tmp_path / "cache", progress=False))
    model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
    chain = chain_identity([compressor], [compressor.inputs(model)])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(saving, "save_compressed", killed)
        with pytest.raises(KeyboardInterrupt):
            apply_chain(model, [compressor], chain, tmp_path / "cache", True)
    trained = model.pipeline.transformer.state_dict()
    (checkpoint,) = (tmp_path / "cache" / "distill").glob("*/checkpoint.pt")
    assert torch.load(checkpoint, weights_only=True)["step"] == 3

    batches = []
    real_next = distill._Pairs.next
    monkeypatch.setattr(distill._Pairs, "next", lambda self, size: batches.append(size) or real_next(self, size))
    again = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
    steps = apply_chain(again, [compressor], chain, tmp_path / "cache", True)
    assert batches == [] and steps[0]["cost"]["distillation"]["steps"] == 3
    assert all(torch.equal(trained[k], again.pipeline.transformer.state_dict()[k]) for k in trained)
    assert not checkpoint.exists()  # stored now: the checkpoint goes
    assert list((tmp_path / "cache" / "models").glob("*/*.json"))


def test_blocks_measured_alike_are_ordered_by_the_positional_prior_not_their_index():
    """A ranking whose blocks tie (or `harness estimate`'s stand-in for a model never analysed) leaves the order to
    the positional prior: the latest blocks go first, not the earliest by index."""
    from compressors.pruning import equal_importance, importance_order
    from harness.models.presets import PRESETS
    from harness.models.surgery import removable_blocks

    transformer = PRESETS["tiny-flux"].build().transformer
    latest_first = sorted((b.index for b in removable_blocks(transformer)), reverse=True)
    assert importance_order(equal_importance(transformer), transformer, 0.5) == latest_first
    assert importance_order(equal_importance(transformer), transformer, 0.0) == latest_first
