"""Step caching: diffusers' own cache hooks on the transformer's blocks, reusing what earlier denoising steps computed.

Each method is a diffusers config applied with its `apply_*` function to the blocks the family lets a cache hook
(`Family.step_cache_blocks`: SD3's final context_pre_only block always computes). The hooks' state is scoped to one
pipeline call by the harness (`harness.models.denoising.denoising_scope`), which also sets the cache context that
SD3's pipeline does not set. Nothing is stored: the hooks change how the pipeline runs, so a cached chain's stored
part is saved or loaded without them and they are applied again each run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from compressors.base import Compressor


class StepCache(Compressor):
    """Base of the step caches: `install(blocks, model)` applies the diffusers hooks to `blocks`."""

    stage: ClassVar[str] = "step-cache"
    saves = False

    def install(self, blocks: Any, model: Any) -> None:
        raise NotImplementedError

    def apply(self, model: Any) -> dict[str, Any]:
        blocks = model.family.step_cache_blocks(model.transformer)
        hooked = sum(len(group) for group in blocks.children())
        if hooked < 2:
            from harness.errors import UsageError

            raise UsageError(f"{self.name} needs at least two blocks a step cache may hook; this transformer has "
                             f"{hooked} (pruned too far?)")
        self.install(blocks, model)
        # the transformer's registry caches its list of child registries on the first cache context set (FLUX's
        # pipeline sets one each call): rebuilt, so that contexts reach the hooks just installed, as
        # CacheMixin.enable_cache does
        from diffusers.hooks import HookRegistry

        HookRegistry.check_if_exists_or_initialize(model.transformer).invalidate_child_registries_cache()
        return {"hooked_blocks": hooked}

    def apply_structure(self, model: Any) -> dict[str, Any]:
        # no weight or block changes: what it saves depends on the images (a run records the transformer calls)
        return {"hooked_blocks": sum(len(group) for group in model.family.step_cache_blocks(model.transformer)
                                     .children())}


class FirstBlockCache(StepCache):
    """First-Block Cache: when the first block's output residual changed by less than `threshold` (relative mean
    absolute difference) since the last computed step, the other blocks' residual is reused."""

    name = "fbcache"
    label_params: ClassVar[tuple[str, ...]] = ("threshold",)

    @dataclass(frozen=True)
    class Params:
        threshold: float = 0.05  # diffusers' default; 0: every step computes (bit-identical to no cache)

        def __post_init__(self) -> None:
            if not 0 <= self.threshold <= 10:
                raise ValueError(f"threshold must be between 0 (never reuse) and 10, got {self.threshold}")

    def install(self, blocks: Any, model: Any) -> None:
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

        apply_first_block_cache(blocks, FirstBlockCacheConfig(threshold=self.params.threshold))


class TaylorSeer(StepCache):
    """TaylorSeer: the blocks' attention outputs are computed every `cache_interval` steps (and in the first
    `warmup_steps`) and predicted in between by a Taylor expansion of order `max_order` over the steps."""

    name = "taylorseer"
    label_params: ClassVar[tuple[str, ...]] = ("cache_interval",)

    @dataclass(frozen=True)
    class Params:
        cache_interval: int = 5  # diffusers' defaults
        warmup_steps: int = 3  # diffusers' disable_cache_before_step
        max_order: int = 1

        def __post_init__(self) -> None:
            if self.cache_interval < 1 or self.warmup_steps < 1 or not 0 <= self.max_order <= 4:
                raise ValueError("cache_interval and warmup_steps must be at least 1, max_order between 0 and 4; "
                                 f"got {self.cache_interval}, {self.warmup_steps}, {self.max_order}")

    def install(self, blocks: Any, model: Any) -> None:
        import torch
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

        # the Taylor factors in float32: diffusers' bfloat16 default would round a float32 model's features
        identifiers = model.family.taylorseer_identifiers
        apply_taylorseer_cache(blocks, TaylorSeerCacheConfig(
            cache_interval=self.params.cache_interval, disable_cache_before_step=self.params.warmup_steps,
            max_order=self.params.max_order, taylor_factors_dtype=torch.float32,
            cache_identifiers=list(identifiers) if identifiers else None))


class PyramidAttentionBroadcast(StepCache):
    """Pyramid Attention Broadcast: between scheduler timesteps `skip_from` and `skip_to` (of 1000, counted down),
    each block's attention output is recomputed every `skip_range` steps and broadcast to the steps in between."""

    name = "pab"
    label_params: ClassVar[tuple[str, ...]] = ("skip_range",)

    @dataclass(frozen=True)
    class Params:
        skip_range: int = 2
        skip_from: int = 800  # diffusers' default timestep range
        skip_to: int = 100

        def __post_init__(self) -> None:
            if self.skip_range < 1 or not 0 <= self.skip_to < self.skip_from <= 1000:
                raise ValueError("skip_range must be at least 1 and 0 <= skip_to < skip_from <= 1000; got "
                                 f"{self.skip_range}, {self.skip_to}, {self.skip_from}")

    def install(self, blocks: Any, model: Any) -> None:
        from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

        apply_pyramid_attention_broadcast(blocks, PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=self.params.skip_range,
            spatial_attention_timestep_skip_range=(self.params.skip_to, self.params.skip_from),
            current_timestep_callback=_CurrentTimestep(model.pipeline.scheduler)))


class _CurrentTimestep:
    """The timestep (of 1000) of the step the pipeline is at, which PAB asks for and SD3's pipeline does not expose:
    the flow-matching scheduler's noise level of that step times its training timesteps. The schedule is read to
    the CPU once per new schedule (each pipeline call sets one), so asking never waits for the GPU. Before its first
    step a scheduler has no step index yet: step 0."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.schedule: Any = None
        self.sigmas: list[float] = []

    def __call__(self) -> float:
        scheduler = self.scheduler
        if scheduler.sigmas is not self.schedule:
            self.schedule, self.sigmas = scheduler.sigmas, scheduler.sigmas.tolist()
        return self.sigmas[scheduler.step_index or 0] * scheduler.config.num_train_timesteps
