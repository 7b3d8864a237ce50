"""Block topology of SD3 and FLUX transformers: the tiny models, and the real presets' architectures on meta."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

from harness.models.presets import PRESETS
from harness.models.topology import BlockInfo, block_topology, component_modules


def _meta_transformer(name: str) -> torch.nn.Module:
    spec = PRESETS[name]
    model_class = SD3Transformer2DModel if spec.family == "sd3" else FluxTransformer2DModel
    with torch.device("meta"):
        return model_class(**spec.transformer_config)


@pytest.fixture(scope="module")
def transformers() -> dict[str, torch.nn.Module]:
    """Meta-device architectures of the real presets plus the tiny models' real (random-weight) transformers."""
    models = {name: _meta_transformer(name) for name in ("sd3.5-large", "sd3.5-medium", "flux.1-schnell")}
    for name in ("tiny-sd3", "tiny-sd3.5-medium", "tiny-flux"):
        models[name] = PRESETS[name].build().transformer
    return models


def test_sd35_large(transformers):
    blocks = block_topology(transformers["sd3.5-large"])
    assert len(blocks) == 38
    assert [b.kind for b in blocks] == ["joint"] * 37 + ["joint-last"]
    assert [b.path for b in blocks] == [f"transformer_blocks.{i}" for i in range(38)]
    assert [b.index for b in blocks] == list(range(38))
    assert blocks[0].num_parameters == pytest.approx(213.0e6, rel=1e-3)
    assert all(b.num_parameters == blocks[0].num_parameters for b in blocks[:-1])
    assert blocks[0].components == ("w_norm1", "w_norm1_context", "attn", "ff", "ff_context")
    assert blocks[-1].components == ("w_norm1", "w_norm1_context", "attn", "ff")


def test_sd35_medium(transformers):
    blocks = block_topology(transformers["sd3.5-medium"])
    assert len(blocks) == 24
    assert Counter(b.kind for b in blocks) == {"joint-dual": 13, "joint": 10, "joint-last": 1}
    assert [b.index for b in blocks if b.kind == "joint-dual"] == list(range(13))
    assert blocks[-1].kind == "joint-last"
    attn = component_modules(transformers["sd3.5-medium"], blocks[0], "attn")
    assert list(attn) == ["transformer_blocks.0.attn", "transformer_blocks.0.attn2"]


def test_flux_schnell(transformers):
    blocks = block_topology(transformers["flux.1-schnell"])
    assert len(blocks) == 19 + 38
    assert [b.kind for b in blocks] == ["flux-double"] * 19 + ["flux-single"] * 38
    assert [b.index for b in blocks] == list(range(57))
    assert blocks[19].path == "single_transformer_blocks.0" and blocks[-1].path == "single_transformer_blocks.37"
    assert blocks[19].components == ("w_norm", "attn", "proj_mlp_out")
    assert sum(b.num_parameters for b in blocks) / 1e9 == pytest.approx(11.8, abs=0.1)  # blocks hold almost all


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("tiny-sd3", ["joint", "joint", "joint", "joint-last"]),
        ("tiny-sd3.5-medium", ["joint-dual", "joint-dual", "joint", "joint-last"]),
        ("tiny-flux", ["flux-double", "flux-double", "flux-single", "flux-single"]),
    ],
)
def test_tiny_kinds(transformers, name, kinds):
    assert [b.kind for b in block_topology(transformers[name])] == kinds


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-sd3.5-medium", "tiny-flux", "sd3.5-medium", "flux.1-schnell"])
def test_components_partition_each_block(transformers, name):
    """The components of a block cover each of its parameters exactly once, at paths that resolve to the modules."""
    transformer = transformers[name]
    for block in block_topology(transformer):
        seen: list[int] = []
        for component in block.components:
            for path, module in component_modules(transformer, block, component).items():
                assert transformer.get_submodule(path) is module
                assert path.startswith(block.path + ".")
                seen.extend(id(p) for p in module.parameters())
        block_parameters = [id(p) for p in transformer.get_submodule(block.path).parameters()]
        assert sorted(seen) == sorted(block_parameters), block.path


def test_component_names(transformers):
    transformer = transformers["tiny-sd3"]
    first = block_topology(transformer)[0]
    assert list(component_modules(transformer, first, "w_norm1")) == ["transformer_blocks.0.norm1"]
    ff = component_modules(transformer, first, "ff")
    assert list(ff) == ["transformer_blocks.0.ff", "transformer_blocks.0.norm2"]
    flux = transformers["tiny-flux"]
    single = block_topology(flux)[2]
    assert list(component_modules(flux, single, "proj_mlp_out")) == [
        "single_transformer_blocks.0.proj_mlp",
        "single_transformer_blocks.0.proj_out",
    ]


def test_unknown_component_names_the_valid_ones(transformers):
    transformer = transformers["tiny-sd3"]
    last = block_topology(transformer)[-1]
    with pytest.raises(ValueError, match="unknown component 'ff_context'.*valid components: w_norm1, w_norm1_context"):
        component_modules(transformer, last, "ff_context")
    with pytest.raises(ValueError, match="unknown component 'mlp'"):
        component_modules(transformer, block_topology(transformer)[0], "mlp")


def test_unknown_transformer_type_is_refused():
    with pytest.raises(ValueError, match="unsupported transformer type Linear.*SD3Transformer2DModel"):
        block_topology(torch.nn.Linear(2, 2))


def test_block_info_is_immutable():
    info = BlockInfo(index=0, path="transformer_blocks.0", kind="joint", components=("attn",), num_parameters=1)
    with pytest.raises(AttributeError):
        info.index = 1  # type: ignore[misc]
