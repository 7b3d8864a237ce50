"""What a module stores: bytes of its weights as `state_dict` holds them, quantised storage counted exactly; and how
many parameters it has, quantised or not.

Weights are parameters plus persistent buffers (SD3's positional-embedding table counts) plus quantisation statistics
(bitsandbytes' absmax, code books and nested statistics, torchao's scales and zero points). Tensor subclasses are
counted by their inner tensors, so an int4 value held unpacked in an int8 costs the byte it really takes.
"""

from __future__ import annotations

from typing import Any

import torch


def tensor_bytes(tensor: Any) -> int:
    if hasattr(tensor, "__tensor_flatten__"):  # torchao's quantised tensors
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    if isinstance(tensor, torch.Tensor):
        return tensor.numel() * tensor.element_size()
    return 0


def parameter_count(module: torch.nn.Module) -> int:
    """The module's parameters as the weights they stand for: quantising changes how weights are stored, never how
    many there are, so a quantised layer counts the parameters of the unquantised layer (a 4-bit Linear counts
    in * out, not its packed uint8 storage of two values per byte: the original shape is in its quantisation state;
    int8 and torchao tensors have their logical shape). The one count of the harness: pruning budgets, block sizes
    and the results' `transformer_parameters` use it."""
    total = 0
    for parameter in module.parameters():
        state = getattr(parameter, "quant_state", None)
        total += state.shape.numel() if state is not None and hasattr(state, "shape") else parameter.numel()
    return total


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of everything `module.state_dict()` stores, each tensor once. A submodule carrying
    `estimated_storage_bytes` (set by a quantiser's weight-free estimate on a meta-device model) counts that instead
    of its own tensors."""
    overridden = {name: m.estimated_storage_bytes for name, m in module.named_modules()
                  if hasattr(m, "estimated_storage_bytes")}
    prefixes = tuple(f"{name}." if name else "" for name in overridden)
    # keep_vars: the parameters themselves, so a tied weight (T5's shared embedding, listed under two keys) counts once
    stored = {id(t): t for key, t in module.state_dict(keep_vars=True).items()
              if not (prefixes and key.startswith(prefixes))}
    return sum(overridden.values()) + sum(tensor_bytes(t) for t in stored.values())
