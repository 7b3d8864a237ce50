"""Weight quantisation on the CPU: every Linear of the transformer is swapped or quantised, the images stay close to
the original's, and the stored bytes (statistics included) shrink as the format says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import invoke, read_results, run_args

from compressors.pruning import DepthLast, PruningParams
from compressors.quantize import (
    BitsAndBytes4Bit,
    BitsAndBytes8Bit,
    TorchAOFloat8Dynamic,
    TorchAOInt4,
    TorchAOInt8,
    TorchAOInt8Dynamic,
)
from harness.models.footprint import parameter_count, weight_bytes
from harness.models.loading import load_model, resolve_model
from harness.models.presets import PRESETS
from harness.models.saving import save_compressed
from harness.models.topology import block_topology


def _image(model) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return model.pipeline(prompt="a photo of a red circle", num_inference_steps=2, height=64, width=64,
                              generator=generator, output_type="np").images[0]


@pytest.mark.parametrize(("method", "bits", "max_error"), [
    (BitsAndBytes4Bit, 4, 0.25), (BitsAndBytes8Bit, 8, 0.05), (TorchAOInt8, 8, 0.05), (TorchAOInt4, 8, 0.25),
    (TorchAOInt8Dynamic, 8, 0.05)])
def test_quantisers_swap_every_linear_and_shrink_storage(method, bits, max_error):
    model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
    linear_parameters = sum(m.weight.numel() for m in model.transformer.modules() if type(m) is torch.nn.Linear)
    parameters = parameter_count(model.transformer)
    original = _image(model)
    cost = method().apply(model)
    assert parameter_count(model.transformer) == parameters  # quantising stores the weights smaller, keeps them all
    assert cost["quantised_linear_layers"] > 0
    assert not any(type(m) is torch.nn.Linear for m in model.transformer.modules()) or method in (
        TorchAOInt8, TorchAOInt4, TorchAOInt8Dynamic)
    assert cost["weight_bytes_after"] == weight_bytes(model.transformer)
    # float32 Linear weights (4 bytes) become `bits` bits plus statistics; the rest is unchanged
    saved = cost["weight_bytes_before"] - cost["weight_bytes_after"]
    assert saved > linear_parameters * (4 - bits / 8) * 0.85
    assert saved < linear_parameters * (4 - bits / 8)
    error = np.abs(_image(model) - original).mean()
    assert 0 < error < max_error


@pytest.mark.parametrize("method", [BitsAndBytes4Bit, BitsAndBytes8Bit, TorchAOInt8, TorchAOInt4,
                                    TorchAOInt8Dynamic])
def test_a_quantised_transformer_counts_the_parameters_of_the_unquantised_one(method):
    model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
    parameters = parameter_count(model.transformer)
    block_parameters = [b.num_parameters for b in block_topology(model.transformer)]
    method().apply(model)
    assert [b.num_parameters for b in block_topology(model.transformer)] == block_parameters
    cost = DepthLast(PruningParams(budget=0.3)).apply_structure(model)  # a budget counts them so too
    assert cost["parameters_before"] == parameters and cost["removed_blocks"] == [1, 2]  # as unquantised


def _denoised(transformer) -> torch.Tensor:
    """One transformer forward on fixed inputs (the pipeline around it is not what a saved quantiser restores)."""
    config = transformer.config
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return transformer(hidden_states=torch.randn(1, config.in_channels, 8, 8, generator=generator),
                           encoder_hidden_states=torch.randn(1, 5, config.joint_attention_dim, generator=generator),
                           pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=generator),
                           timestep=torch.tensor([500.0])).sample


@pytest.mark.parametrize(("method", "params"), [
    (BitsAndBytes4Bit, BitsAndBytes4Bit.Params()), (BitsAndBytes4Bit, BitsAndBytes4Bit.Params(quant_type="fp4")),
    (BitsAndBytes8Bit, BitsAndBytes8Bit.Params()), (BitsAndBytes8Bit, BitsAndBytes8Bit.Params(threshold=0.5))])
def test_a_saved_quantised_model_loads_back_computing_what_it_did(method, params, tmp_path):
    model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
    quantiser = method(params)
    cost = quantiser.apply(model)
    step = {"name": quantiser.name, "params": quantiser.resolved_params()}
    save_compressed(model, tmp_path / "saved", [step], [{**step, "cost": cost}])
    reloaded = load_model(resolve_model(str(tmp_path / "saved")), weights=None, device="cpu")
    layer_types = [(name, type(m)) for name, m in model.transformer.named_modules()]
    assert [(name, type(m)) for name, m in reloaded.transformer.named_modules()] == layer_types
    # threshold 0.5 sends outlier input features through 16 bit: the reloaded layers must do so too
    assert torch.equal(_denoised(reloaded.transformer), _denoised(model.transformer))


def test_prune_then_quantise_chain(dirs):
    result = invoke(*run_args(dirs, "--model", "tiny-sd3", "--method", "depth-last+nf4", "--suite", "fidelity",
                              "--limit", "2", "--set", "sampling.num_inference_steps=2"))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    assert [s["name"] for s in results["method"]["chain"]] == ["depth-last", "nf4"]
    nf4 = results["compression"]["steps"][1]["cost"]
    # Linear weights hold most of the tiny transformer's bytes (the rest: its positional table, convolution, norms)
    assert nf4["weight_bytes_after"] < 0.5 * nf4["weight_bytes_before"]


@pytest.mark.parametrize("method", ["torchao-int8", "torchao-int4", "int8dq"])
def test_compress_refuses_a_quantiser_that_cannot_be_saved_before_loading(dirs, method, monkeypatch):
    import harness.commands.run as run_command

    def never(*args, **kwargs):
        raise AssertionError("the model was opened before the chain was refused")

    monkeypatch.setattr(run_command, "open_model", never)
    save = dirs["out"] / "saved"
    result = invoke("compress", "--model", "tiny-sd3", "--method", f"depth-last+{method}", "--save", str(save),
                    "--cache-dir", str(dirs["cache"]), "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{method} cannot be saved" in result.stderr and "harness run --method" in result.stderr
    assert not save.exists()


def test_int8_dynamic_activations_quantise_what_weight_only_int8_leaves_in_float():
    """Weight-only int8 computes in float from dequantised weights; dynamic int8 also quantises each input, so its
    forward differs from both the float and the weight-only one."""
    outputs = {}
    for method in (None, TorchAOInt8, TorchAOInt8Dynamic):
        model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
        if method is not None:
            method().apply(model)
        outputs[method] = _denoised(model.transformer)
    weight_only = (outputs[TorchAOInt8] - outputs[None]).abs().mean()
    dynamic = (outputs[TorchAOInt8Dynamic] - outputs[None]).abs().mean()
    assert 0 < weight_only < dynamic < 0.05 * outputs[None].abs().mean()


@pytest.mark.parametrize("method", ["fp8dq", "fp8wo"])
def test_fp8_on_a_cpu_is_refused_naming_what_it_needs(dirs, method):
    proc = invoke(*run_args(dirs, "--method", method, "--device", "cpu"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "CUDA GPU with FP8 support" in proc.stderr and "compute capability 8.9" in proc.stderr
    assert "int8dq" in proc.stderr


def test_fp8_estimate_stores_a_byte_per_weight_and_a_scale_per_row():
    from types import SimpleNamespace

    from harness.models.architecture import build_architecture

    architecture = build_architecture(PRESETS["sd3.5-medium"])
    model = SimpleNamespace(transformer=architecture["transformer"])
    linears = [m for m in model.transformer.modules() if type(m) is torch.nn.Linear]
    weights = sum(m.weight.numel() for m in linears)
    before = weight_bytes(model.transformer)
    TorchAOFloat8Dynamic().apply_structure(model)
    after = weight_bytes(model.transformer)
    assert before - after == pytest.approx(weights * (2 - 1) - 4 * sum(m.out_features for m in linears), rel=1e-6)
