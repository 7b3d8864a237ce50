"""Block surgery: physical removal round-trips through save/from_pretrained, and reversible in-place skips follow
HierarchicalPrune's semantics: on the reference model's architecture, and the family-specific facts of SD3, SD3.5
Medium and FLUX (the same tests on every family's tiny pipeline are in test_families.py)."""

from __future__ import annotations

import pytest
import torch

from harness.models.families import family_of_transformer
from harness.models.presets import PRESETS
from harness.models.reference import build_untrained_pipeline
from harness.models.surgery import Ablation, removable_blocks, remove_blocks, skip
from harness.models.topology import block_topology

# the generic removal and skip tests on the reference model's architecture; every family's tiny pipeline has them in
# test_families.py
MODELS = ("reference",)


def _transformer(name: str) -> torch.nn.Module:
    pipe = build_untrained_pipeline(0) if name == "reference" else PRESETS[name].build()
    transformer = pipe.transformer.eval()
    if name == "reference":  # the untrained model zero-initialises its modulations and output: randomise them
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            for parameter in transformer.parameters():
                if not parameter.any():
                    parameter.normal_(0, 0.05)
    return transformer


@pytest.fixture(scope="module", params=MODELS)
def model(request) -> tuple[str, torch.nn.Module]:
    return request.param, _transformer(request.param)


def _forward(transformer: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        inputs = family_of_transformer(transformer).transformer_inputs(transformer, 2, 64, 64, 5, generator=generator)
        return transformer(**inputs)[0]


def test_removal_round_trips_with_no_missing_keys(model, tmp_path):
    name, original = model
    transformer = _transformer(name)  # a fresh copy: removal is destructive
    blocks = block_topology(transformer)
    victims = [b.index for b in removable_blocks(transformer)][1::2]  # every other removable block
    removed = remove_blocks(transformer, victims)
    assert [b.index for b in removed] == victims
    assert len(block_topology(transformer)) == len(blocks) - len(victims)
    expected = _forward(transformer)
    transformer.save_pretrained(tmp_path)
    reloaded, info = type(transformer).from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert [b.kind for b in block_topology(reloaded)] == [b.kind for b in block_topology(transformer)]
    torch.testing.assert_close(_forward(reloaded.eval()), expected, rtol=0, atol=0)


def test_dual_attention_positions_follow_the_removal():
    transformer = _transformer("tiny-sd3.5-medium")  # blocks 0 and 1 are dual-attention
    remove_blocks(transformer, [0])
    assert tuple(transformer.config.dual_attention_layers) == (0,)
    assert [b.kind for b in block_topology(transformer)] == ["joint-dual", "joint", "joint-last"]


def test_the_sd3_last_block_cannot_be_removed():
    transformer = _transformer("tiny-sd3")
    with pytest.raises(ValueError, match="block 3 is SD3's final context_pre_only block"):
        remove_blocks(transformer, [1, 3])
    assert len(block_topology(transformer)) == 4  # nothing was removed
    with pytest.raises(ValueError, match="block 9 does not exist: the transformer has 4 blocks"):
        remove_blocks(transformer, [9])


def test_skipping_a_block_equals_removing_it(model):
    name, transformer = model
    index = removable_blocks(transformer)[1].index
    with skip(transformer, Ablation(index)):
        skipped = _forward(transformer)
    pruned = _transformer(name)
    remove_blocks(pruned, [index])
    torch.testing.assert_close(skipped, _forward(pruned), rtol=0, atol=0)


def test_every_skip_changes_the_output_and_restores_exactly(model):
    _, transformer = model
    original = _forward(transformer)
    parameters = dict(transformer.named_parameters())
    for block in block_topology(transformer):
        for component in (None, *block.components):
            with skip(transformer, Ablation(block.index, component)) as handle:
                changed = _forward(transformer)
                assert handle.transformer is transformer
            assert not torch.equal(changed, original), f"skipping {block.index}.{component} changed nothing"
    torch.testing.assert_close(_forward(transformer), original, rtol=0, atol=0)
    assert dict(transformer.named_parameters()).keys() == parameters.keys()
    assert all(parameters[k] is p for k, p in transformer.named_parameters())


def _set_modulation(linear: torch.nn.Linear, gates: list[int]) -> None:
    """Make an AdaLN linear emit constants: chunk i is 1 where i is in `gates`, else 0 (shift and scale)."""
    with torch.no_grad():
        linear.weight.zero_()
        chunks = linear.bias.view(-1, linear.in_features)
        chunks.zero_()
        chunks[gates] = 1.0


@pytest.mark.parametrize(("name", "path", "chunks", "component"), [
    ("tiny-sd3", "transformer_blocks.1.norm1", [2, 5], "w_norm1"),  # shift, scale, gate (msa, then mlp)
    ("tiny-sd3", "transformer_blocks.1.norm1_context", [2, 5], "w_norm1_context"),
    ("tiny-sd3.5-medium", "transformer_blocks.0.norm1", [2, 5, 8], "w_norm1"),  # plus shift2, scale2, gate2
    ("tiny-flux", "single_transformer_blocks.0.norm", [2], "w_norm"),
])
def test_a_skipped_modulation_is_shift_0_scale_0_gate_1(name, path, chunks, component):
    transformer = _transformer(name)
    block = next(b for b in block_topology(transformer) if path.startswith(b.path + "."))
    with skip(transformer, Ablation(block.index, component)):
        skipped = _forward(transformer)
    _set_modulation(transformer.get_submodule(path).linear, chunks)
    torch.testing.assert_close(_forward(transformer), skipped, rtol=1e-6, atol=1e-6)


def test_a_skipped_flux_mlp_branch_is_a_zero_branch():
    transformer = _transformer("tiny-flux")
    with skip(transformer, Ablation(2, "proj_mlp_out")):
        skipped = _forward(transformer)
    with torch.no_grad():
        transformer.single_transformer_blocks[0].proj_mlp.weight.zero_()
        transformer.single_transformer_blocks[0].proj_mlp.bias.zero_()
    torch.testing.assert_close(_forward(transformer), skipped, rtol=0, atol=0)


def test_skips_combine_and_reject_bad_targets():
    transformer = _transformer("tiny-sd3")
    original = _forward(transformer)
    with skip(transformer, [Ablation(0, "ff"), Ablation(1, "attn"), Ablation(2)]):
        assert not torch.equal(_forward(transformer), original)
    with pytest.raises(ValueError, match="already skipped"):
        skip(transformer, [Ablation(0, "ff"), Ablation(0, "ff")])
    with pytest.raises(ValueError, match="unknown component 'ff_context'"):
        skip(transformer, [Ablation(0, "ff"), Ablation(3, "ff_context")])
    torch.testing.assert_close(_forward(transformer), original, rtol=0, atol=0)  # failed skips left nothing behind


def test_ablation_keys_round_trip():
    assert Ablation.parse("7.attn") == Ablation(7, "attn") and Ablation(7, "attn").key == "7.attn"
    assert Ablation.parse("12") == Ablation(12) and Ablation(12).key == "12"
    with pytest.raises(ValueError, match="not an ablation key"):
        Ablation.parse("attn.7")
