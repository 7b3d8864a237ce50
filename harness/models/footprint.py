"""What a module stores: bytes of its weights as `state_dict` holds them, quantised storage counted exactly.

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


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of everything `module.state_dict()` stores."""
    return sum(tensor_bytes(t) for t in module.state_dict().values())
