"""A model's components without weights: built on the meta device from the preset's configs (seconds, little RAM),
or for real when the model is small enough (tiny and reference models)."""

from __future__ import annotations

import importlib
from typing import Any

from harness.errors import UsageError
from harness.models.families import family_of


def component_from_config(path: str, config: dict[str, Any]) -> Any:
    """A component ("module:Class", config): a transformers model from its config class, else Class(**config)."""
    module_name, class_name = path.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if module_name == "transformers":
        config_class = cls.config_class
        return cls(config_class(**config))
    return cls(**config)


def build_architecture(spec: Any) -> dict[str, Any]:
    """The model's components (transformer, text encoders, VAE) without weights, in the model's dtype."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # casting a weightless model to bf16 needs no "keep in float32" advice
    try:
        builder = spec.architecture or spec.build
        if builder is not None:
            pipeline = builder()
            return {name: module.to(getattr(torch, spec.dtype)) for name, module in pipeline.components.items()
                    if isinstance(module, torch.nn.Module)}
        if not spec.transformer_config:
            raise UsageError(f"'{spec.name}' has no architecture config to estimate from: use a registered preset")
        model_class = family_of(spec.family).transformer_class()
        with torch.device("meta"):
            components = {"transformer": model_class(**spec.transformer_config)}
            components.update({name: component_from_config(path, config)
                               for name, (path, config) in spec.component_configs.items()})
        return {name: module.to(getattr(torch, spec.dtype)) for name, module in components.items()}
    finally:
        diffusers_logging.set_verbosity(verbosity)


def text_tokens_of(spec: Any, sampling: Any, components: dict[str, Any]) -> int:
    """How many text tokens the transformer sees (SD3: CLIP's and T5's; FLUX: T5's)."""
    return family_of(spec.family).text_tokens(sampling, components)
