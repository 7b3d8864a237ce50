"""Post-training weight quantisation of the transformer's Linear layers (not the text encoders, not the VAE), as
HierarchicalPrune's release does after pruning.

bitsandbytes layers are swapped in by hand rather than through diffusers' `BitsAndBytesConfig`, which refuses to run
without a GPU (FACTS section 4); the same swap works on CPU and CUDA. torchao uses its CPU-capable configs on the CPU
(int4 values are then held unpacked, one per int8 byte: the byte count says so) and its packed int4 kernel on CUDA.
Each bitsandbytes quantiser builds its layers in one place, for `apply` from a float Linear and for `restore` from
the tensors a saved model stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from compressors.base import Compressor


def _linear_layers(module: Any) -> list[tuple[str, Any]]:
    import torch

    return [(name, child) for name, child in module.named_modules() if type(child) is torch.nn.Linear]


_STORAGE: dict[tuple[Any, ...], int] = {}


def _estimate_linears(model: Any, quantiser: Compressor) -> dict[str, Any]:
    """Weight-free estimate: each plain Linear gets the bytes the quantiser's real output stores for a layer of the
    same shape, bias and dtype (measured once per shape on a random CPU layer; exact but for a few bytes of
    serialised statistics per layer)."""
    import copy
    from types import SimpleNamespace

    import torch

    from harness.models.footprint import weight_bytes

    layers = _linear_layers(model.transformer)
    for _, linear in layers:
        dtype = linear.weight.dtype
        key = (quantiser.cache_identity(), linear.in_features, linear.out_features, linear.bias is not None, dtype)
        if key not in _STORAGE:
            probe = torch.nn.Sequential(torch.nn.Linear(linear.in_features, linear.out_features,
                                                        bias=linear.bias is not None, dtype=dtype))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                torch.nn.init.normal_(probe[0].weight, std=0.02)  # real-looking statistics: their text has a length
            stand_in = SimpleNamespace(transformer=probe, device=torch.device("cpu"), dtype=dtype)
            copy.copy(quantiser).apply(stand_in)
            _STORAGE[key] = weight_bytes(stand_in.transformer)
        linear.estimated_storage_bytes = _STORAGE[key]
    return {"quantised_linear_layers": len(layers)}


def _quantise_linears(model: Any, build: Any = None, torchao_config: Any = None) -> dict[str, Any]:
    """Replace each plain Linear of the transformer by `build(linear)`, or quantise them all with a torchao config;
    returns the cost record."""
    from harness.models.footprint import weight_bytes

    transformer = model.transformer
    before = weight_bytes(transformer)
    layers = _linear_layers(transformer)
    if torchao_config is not None:
        from torchao.quantization import quantize_

        quantize_(transformer, torchao_config)
    else:
        for name, linear in layers:
            transformer.set_submodule(name, build(linear).train(linear.training))
    transformer.requires_grad_(False)
    return {"quantised_linear_layers": len(layers), "weight_bytes_before": before,
            "weight_bytes_after": weight_bytes(transformer)}


def _stored_bias(name: str, state: dict[str, Any], device: str) -> Any:
    bias = state.pop(f"{name}.bias", None)
    return None if bias is None else bias.to(device)


def disable_cpu_repacking(layer: Any) -> None:
    """bitsandbytes repacks 4-bit weights for its AVX512-bf16 CPU kernel on the first eval-mode forward; that
    repacking fails for layers narrower than the block size (tiny models) and gives other numbers than the layer
    had before saving, so it is turned off: a saved and reloaded layer computes exactly what the original did."""
    layer.support_avx512bf16_for_cpu = False


BLOCKSIZES = (64, 128, 256, 512, 1024, 2048, 4096)  # bitsandbytes' 4-bit block sizes


class WeightQuantiser(Compressor):
    """Base of the quantisers: their weight-free estimate measures real quantised layers of each shape; a saved
    model's quantised layers are rebuilt by `restore_linear`."""

    stage = "weights"
    stores_own_layers = True

    def apply_structure(self, model: Any) -> dict[str, Any]:
        return _estimate_linears(model, self)

    def restore(self, transformer: Any, state: dict[str, Any], device: str, dtype: Any) -> None:
        for name, linear in _linear_layers(transformer):
            layer = self.restore_linear(name, linear, state, device, dtype)
            if layer is not None:
                transformer.set_submodule(name, layer)

    def restore_linear(self, name: str, linear: Any, state: dict[str, Any], device: str, dtype: Any) -> Any | None:
        """The quantised layer standing for the meta-device `linear` at `name`, built from its stored tensors (popped
        from `state`), or None when `state` holds none of this quantiser's format for it. Default: None (torchao
        models are not saved)."""
        return None


class BitsAndBytes4Bit(WeightQuantiser):
    """bitsandbytes 4-bit (NF4 by default) weight-only quantisation, double-quantised statistics."""

    name = "nf4"

    @dataclass(frozen=True)
    class Params:
        quant_type: Literal["nf4", "fp4"] = "nf4"
        double_quant: bool = True  # quantise the absmax statistics too (bitsandbytes' compress_statistics)
        blocksize: int = 64

        def __post_init__(self) -> None:
            if self.blocksize not in BLOCKSIZES:
                raise ValueError(f"blocksize must be one of bitsandbytes' {', '.join(map(str, BLOCKSIZES))}, "
                                 f"got {self.blocksize}")

    def _layer(self, linear: Any, weight: Any, bias: Any, dtype: Any) -> Any:
        """The 4-bit layer standing for `linear`, holding `weight` (a Params4bit) and `bias`, computing in `dtype`."""
        import bitsandbytes as bnb
        import torch

        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias is not None, compute_dtype=dtype,
                                  quant_type=self.params.quant_type, compress_statistics=self.params.double_quant,
                                  device="meta")
        layer.weight = weight
        layer.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        disable_cpu_repacking(layer)
        return layer

    def apply(self, model: Any) -> dict[str, Any]:
        import bitsandbytes as bnb
        import torch

        def build(linear: torch.nn.Linear) -> torch.nn.Module:
            weight = bnb.nn.Params4bit(linear.weight.data.cpu(), requires_grad=False, quant_type=self.params.quant_type,
                                       blocksize=self.params.blocksize, compress_statistics=self.params.double_quant)
            bias = None if linear.bias is None else linear.bias.data
            return self._layer(linear, weight, bias, model.dtype).to(model.device)  # quantises on the move

        return _quantise_linears(model, build)

    def restore_linear(self, name: str, linear: Any, state: dict[str, Any], device: str, dtype: Any) -> Any | None:
        import bitsandbytes as bnb

        prefix = f"{name}.weight."
        if not any(k.startswith(prefix + "quant_state.bitsandbytes__") for k in state):
            return None
        stats = {k[len(prefix):]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        weight = bnb.nn.Params4bit.from_prequantized(data=state.pop(f"{name}.weight"), quantized_stats=stats,
                                                     requires_grad=False, device=device)
        return self._layer(linear, weight, _stored_bias(name, state, device), dtype)


class BitsAndBytes8Bit(WeightQuantiser):
    """bitsandbytes LLM.int8 weights (row-wise absmax int8); `threshold` > 0 keeps outlier features in 16 bit."""

    name = "int8"

    @dataclass(frozen=True)
    class Params:
        threshold: float = 0.0

        def __post_init__(self) -> None:
            if self.threshold < 0:
                raise ValueError(f"threshold must be at least 0 (0: no outlier features), got {self.threshold}")

    def _layer(self, linear: Any, weight: Any, bias: Any) -> Any:
        """The int8 layer standing for `linear`, holding `weight` (an Int8Params) and `bias`."""
        import bitsandbytes as bnb
        import torch

        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias is not None,
                                    has_fp16_weights=False, threshold=self.params.threshold, device="meta")
        layer.weight = weight
        layer.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        return layer

    def apply(self, model: Any) -> dict[str, Any]:
        import bitsandbytes as bnb
        import torch

        def build(linear: torch.nn.Linear) -> torch.nn.Module:
            weight = bnb.nn.Int8Params(linear.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
            bias = None if linear.bias is None else linear.bias.data
            return self._layer(linear, weight, bias).to(model.device)  # quantises on the move

        return _quantise_linears(model, build)

    def restore_linear(self, name: str, linear: Any, state: dict[str, Any], device: str, dtype: Any) -> Any | None:
        import bitsandbytes as bnb

        if f"{name}.SCB" not in state:
            return None
        data = state.pop(f"{name}.weight").to(device)
        state.pop(f"{name}.weight_format", None)  # bitsandbytes' marker of the row-major layout, the only one it has
        weight = bnb.nn.Int8Params(data, requires_grad=False, has_fp16_weights=False, CB=data,
                                   SCB=state.pop(f"{name}.SCB").to(device))
        layer = self._layer(linear, weight, _stored_bias(name, state, device))
        # the statistics go where a first forward puts them: `Linear8bitLt.to` moves those, not the parameter's
        layer.init_8bit_state()
        return layer


class TorchAOQuantiser(WeightQuantiser):
    """Base of the torchao quantisers: `config(device)` is the torchao config `quantize_` applies to every Linear."""

    saves = False  # torchao's tensor subclasses are not safetensors

    @dataclass(frozen=True)
    class Params:
        pass

    def config(self, device: Any) -> Any:
        raise NotImplementedError

    def apply(self, model: Any) -> dict[str, Any]:
        return _quantise_linears(model, torchao_config=self.config(model.device))


class TorchAOInt8(TorchAOQuantiser):
    """torchao int8 weight-only quantisation (per-channel scales)."""

    name = "torchao-int8"

    def config(self, device: Any) -> Any:
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


class TorchAOInt4(TorchAOQuantiser):
    """torchao int4 weight-only quantisation with per-group scales: packed int4 on CUDA, unpacked on the CPU."""

    name = "torchao-int4"

    @dataclass(frozen=True)
    class Params:
        group_size: int = 32

        def __post_init__(self) -> None:
            if self.group_size not in (32, 64, 128, 256):
                raise ValueError(f"group_size must be one of 32, 64, 128, 256, got {self.group_size}")

    def config(self, device: Any) -> Any:
        import torch
        from torchao.quantization import Int4WeightOnlyConfig, IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup

        if device.type == "cuda":
            return Int4WeightOnlyConfig(group_size=self.params.group_size)
        return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(self.params.group_size))


class TorchAOInt8Dynamic(TorchAOQuantiser):
    """torchao int8 dynamic-activation int8-weight: each Linear's input is quantised per token at run time and the
    matmul runs in int8 (CPU and CUDA), so it cuts arithmetic as well as weight bytes."""

    name = "int8dq"

    def config(self, device: Any) -> Any:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return Int8DynamicActivationInt8WeightConfig()


FP8_CAPABILITY = (8, 9)  # the first CUDA compute capability with FP8 tensor cores (Ada; Hopper, Blackwell after it)


class TorchAOFloat8(TorchAOQuantiser):
    """Base of torchao's FP8 quantisers (e4m3 weights, per-row scales): CUDA GPUs with FP8 support only."""

    def check_plan(self, spec: Any) -> None:
        import torch

        from harness.errors import UsageError

        device = torch.device(self.context.device)
        found = "a CPU" if device.type != "cuda" else None
        if found is None and torch.cuda.get_device_capability(device) < FP8_CAPABILITY:
            major, minor = torch.cuda.get_device_capability(device)
            found = f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
        if found is not None:
            needed = ".".join(map(str, FP8_CAPABILITY))
            raise UsageError(f"{self.name} needs a CUDA GPU with FP8 support (compute capability {needed} or newer: "
                             f"Ada, Hopper, Blackwell); this run is on {found}. Use int8dq (int8 activations and "
                             "weights) or torchao-int8 there")

    def apply_structure(self, model: Any) -> dict[str, Any]:
        # measured layers cannot be made without an FP8 GPU: one byte per weight, a float32 scale per output row
        layers = _linear_layers(model.transformer)
        for _, linear in layers:
            bias = 0 if linear.bias is None else linear.bias.numel() * linear.bias.element_size()
            linear.estimated_storage_bytes = linear.weight.numel() + 4 * linear.out_features + bias
        return {"quantised_linear_layers": len(layers)}


class TorchAOFloat8Dynamic(TorchAOFloat8):
    """torchao FP8 dynamic-activation FP8-weight: FP8 matmuls on the GPU's FP8 tensor cores."""

    name = "fp8dq"

    def config(self, device: Any) -> Any:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


class TorchAOFloat8WeightOnly(TorchAOFloat8):
    """torchao FP8 weight-only: weights stored in FP8, computed in the model's dtype."""

    name = "fp8wo"

    def config(self, device: Any) -> Any:
        from torchao.quantization import Float8WeightOnlyConfig

        return Float8WeightOnlyConfig()
