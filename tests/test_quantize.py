"""Weight quantisation on the CPU: every Linear of the transformer is swapped or quantised, the images stay close to
the original's, and the stored bytes (statistics included) shrink as the format says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import invoke, read_results, run_args

from compressors.quantize import BitsAndBytes4Bit, BitsAndBytes8Bit, TorchAOInt4, TorchAOInt8
from harness.models.footprint import parameter_count, weight_bytes
from harness.models.loading import load_model
from harness.models.presets import PRESETS


def _image(model) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return model.pipeline(prompt="a photo of a red circle", num_inference_steps=2, height=64, width=64,
                              generator=generator, output_type="np").images[0]


@pytest.mark.parametrize(("method", "bits", "max_error"), [
    (BitsAndBytes4Bit, 4, 0.25), (BitsAndBytes8Bit, 8, 0.05), (TorchAOInt8, 8, 0.05), (TorchAOInt4, 8, 0.25)])
def test_quantisers_swap_every_linear_and_shrink_storage(method, bits, max_error):
    model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
    linear_parameters = sum(m.weight.numel() for m in model.transformer.modules() if type(m) is torch.nn.Linear)
    parameters = parameter_count(model.transformer)
    original = _image(model)
    cost = method().apply(model)
    assert parameter_count(model.transformer) == parameters  # quantising stores the weights smaller, keeps them all
    assert cost["quantised_linear_layers"] > 0
    assert not any(type(m) is torch.nn.Linear for m in model.transformer.modules()) or method in (TorchAOInt8,
                                                                                                  TorchAOInt4)
    assert cost["weight_bytes_after"] == weight_bytes(model.transformer)
    # float32 Linear weights (4 bytes) become `bits` bits plus statistics; the rest is unchanged
    saved = cost["weight_bytes_before"] - cost["weight_bytes_after"]
    assert saved > linear_parameters * (4 - bits / 8) * 0.85
    assert saved < linear_parameters * (4 - bits / 8)
    error = np.abs(_image(model) - original).mean()
    assert 0 < error < max_error


def test_prune_then_quantise_chain(dirs):
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", "depth-last+nf4", "--suite", "fidelity",
                              "--limit", "2", "--set", "sampling.num_inference_steps=2"))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    assert [s["name"] for s in results["method"]["chain"]] == ["depth-last", "nf4"]
    nf4 = results["compression"]["steps"][1]["cost"]
    # Linear weights hold most of the tiny transformer's bytes (the rest: its positional table, convolution, norms)
    assert nf4["weight_bytes_after"] < 0.5 * nf4["weight_bytes_before"]
