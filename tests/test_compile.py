"""`compile` (compressors/compile.py): torch.compile of the blocks or the whole transformer computes what eager does,
reports its compile time as its cost, and is refused with exit 2 where it cannot run."""

from __future__ import annotations

import pytest
import torch
from conftest import invoke, read_results, run_args, run_harness

from compressors.compile import Compile
from harness.context import Context
from harness.models.denoising import denoising_scope
from harness.models.loading import load_model
from harness.models.presets import PRESETS


def _forward(model) -> torch.Tensor:
    family, transformer = model.family, model.transformer
    inputs = family.transformer_inputs(transformer, 2, 64, 64, 17, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), denoising_scope(transformer):
        return transformer(**inputs)[0]


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["regional", "whole"])
def test_compiled_transformer_computes_what_eager_does_and_reports_its_compile_time(scope):
    model = load_model(PRESETS["tiny-sd3"], weights=None, device="cpu")
    eager = _forward(model)
    cost = Compile(Compile.Params(scope=scope), Context(device="cpu")).apply(model)
    blocks = len(model.transformer.transformer_blocks)
    assert cost["compiled_modules"] == (blocks if scope == "regional" else 1)
    assert cost["compile_seconds"] > 0 and cost["first_forward_seconds"] > cost["compiled_forward_seconds"]
    torch.testing.assert_close(_forward(model), eager, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_compiled_run_is_not_counted_and_keeps_the_compile_cost(dirs):
    # a fresh process, as a user's: in this one the earlier tests' compiled blocks would be reused (no compile cost)
    proc = run_harness(*run_args(dirs, "--method", "depth-last+compile", "--suite", "fidelity", "--limit", "1"))
    assert proc.returncode == 0, proc.stderr
    result = read_results(proc.stdout)
    assert result["compression"]["steps"][1]["cost"]["compile_seconds"] > 0
    assert "transformer_calls" not in result["suites"]["fidelity"]  # hooks would recompile it


@pytest.mark.parametrize(("methods", "fix"), [("compile+nf4", "nf4+compile"),
                                              ("compile+fbcache", "fbcache+compile")])
def test_compile_goes_last(dirs, methods, fix):
    proc = invoke(*run_args(dirs, "--method", methods))
    assert proc.returncode == 2 and f"--method {fix}" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unknown_backend_and_a_missing_compiler_are_refused_naming_the_fix(dirs, monkeypatch):
    unknown = invoke(*run_args(dirs, "--method", "compile", "--set", "compile.backend=inductr"))
    assert unknown.returncode == 2 and "Valid choices:" in unknown.stderr and "inductor" in unknown.stderr
    import torch._inductor.cpp_builder as builder

    def no_compiler():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(builder, "get_cpp_compiler", no_compiler)
    missing = invoke(*run_args(dirs, "--method", "compile", "--device", "cpu"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "g++" in missing.stderr and "--set compile.backend=aot_eager" in missing.stderr
    with pytest.raises(ValueError, match="mode"):
        Compile.Params(mode="fastest")
