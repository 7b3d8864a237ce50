"""What a model is to the harness: where its weights come from, how it samples, and its transformer's architecture."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_STEPS = 1000  # flow-matching schedulers are trained on 1000 timesteps: more steps repeat them
MAX_SIDE = 8192  # pixels; beyond it one image's latents alone exhaust a GPU's memory


def dtype_name(dtype: Any) -> str:
    """A torch dtype as the harness writes it: "bfloat16", not "torch.bfloat16"."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class SamplingSettings:
    """How images are drawn. Presets carry the official settings; `--set sampling.<field>=...` overrides them."""

    num_inference_steps: int
    guidance_scale: float
    height: int = 1024
    width: int = 1024
    max_sequence_length: int | None = None  # T5 tokens; None = the pipeline's default
    negative_prompt: str | None = ""  # for families that take one (Family.takes_negative_prompt); FLUX takes none

    def __post_init__(self) -> None:
        if not 1 <= self.num_inference_steps <= MAX_STEPS:
            raise ValueError(f"num_inference_steps must be between 1 and {MAX_STEPS} (the schedulers' training "
                             f"timesteps), got {self.num_inference_steps}")
        if not (16 <= self.height <= MAX_SIDE and 16 <= self.width <= MAX_SIDE):
            raise ValueError(f"height and width must be between 16 and {MAX_SIDE} pixels, got "
                             f"{self.height}x{self.width}")
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ValueError(f"guidance_scale must be a finite number of at least 0, got {self.guidance_scale}")
        if self.max_sequence_length is not None and self.max_sequence_length < 1:
            raise ValueError("max_sequence_length must be at least 1")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Real models load from `repo_id` (a Hub repo id) or from a local diffusers folder given with `--weights`.
    Models with `build` are constructed from config in code (the tiny test models); they need no weights at all.
    `transformer_config` is enough to build the transformer's architecture on the meta device.
    """

    name: str
    description: str
    family: str  # a registered family's name (harness.models.families.family_of)
    sampling: SamplingSettings
    transformer_config: dict[str, Any]
    dtype: str = "bfloat16"
    repo_id: str | None = None
    revision: str | None = None
    build: Callable[[], Any] | None = field(default=None, compare=False)
    # what `harness analyze` scores removals with unless --metric says otherwise (<suite>/<metric>)
    contribution_metric: str = "hpsv2/overall"
    # the peak learning rate the model was trained at: distillation's default rate (the release distils SD3.5 at
    # 1e-4, the rate SD3 was trained at); None: the release's 1e-4
    training_lr: float | None = None
    # what `--suite quality` means for this model
    quality_suites: tuple[str, ...] = ("geneval", "hpsv2")
    # images per pipeline call unless --batch-size says otherwise
    batch_size: int = 4
    # for weight-free estimates: the other components' "module:Class" and config, or a builder of the whole
    # (untrained) pipeline for models small enough to build
    component_configs: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict, compare=False)
    architecture: Callable[[], Any] | None = field(default=None, compare=False)
    # the released scheduler ("module:Class", config), for a pipeline built without files (`--weights random`)
    scheduler: tuple[str, dict[str, Any]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.repo_id is None) == (self.build is None):
            raise ValueError(f"model '{self.name}' needs exactly one of repo_id or build")

    @property
    def argument(self) -> str:
        """What to pass as --model to get this model again: a registered name, else the folder or Hub repo id it
        was resolved from (a folder's `name` is only its basename)."""
        return self.name if (self.transformer_config or self.build is not None) else (self.repo_id or self.name)
