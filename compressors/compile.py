"""`compile`: torch.compile of the transformer, regionally (each block, the repeated unit, as diffusers recommends:
one compilation serves every block of a class) or whole.

torch.compile compiles on the first call of each new input shape. `apply` makes that first call itself, at the
shapes of a one-image batch at the run's sampling, and reports the time it took beyond a second, compiled call as
the method's cost (`compile_seconds`); so the latency suite's figures are steady-state ones, and its `first_call`
stays apart. Generation at another batch size compiles once more (the batch dimension then becomes dynamic).
A compiled transformer's calls are not counted (`harness.models.denoising`: hooks added inside compiled code would
make it recompile).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from compressors.base import Compressor
from harness.errors import UsageError

_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class Compile(Compressor):
    """torch.compile of the transformer's blocks (`scope` regional) or of the whole transformer."""

    name = "compile"
    stage: ClassVar[str] = "compile"
    label_params: ClassVar[tuple[str, ...]] = ("scope",)
    saves = False

    @dataclass(frozen=True)
    class Params:
        scope: Literal["regional", "whole"] = "regional"
        backend: str = "inductor"
        mode: str | None = None  # torch.compile's mode, e.g. max-autotune-no-cudagraphs
        fullgraph: bool = False

        def __post_init__(self) -> None:
            if self.mode not in _MODES:
                raise ValueError(f"mode must be one of torch.compile's {', '.join(map(str, _MODES))}, got {self.mode}")

    def check_plan(self, spec: Any) -> None:
        import importlib.util

        import torch
        import torch._dynamo

        backends = torch._dynamo.list_backends(exclude_tags=())
        if self.params.backend not in backends:
            raise UsageError(f"--set compile.backend={self.params.backend}: torch {torch.__version__} has no such "
                             f"backend. Valid choices: {', '.join(sorted(backends))}")
        if self.params.backend != "inductor":
            return
        if torch.device(self.context.device).type == "cuda":
            if importlib.util.find_spec("triton") is None:
                raise UsageError("compile with the inductor backend on CUDA needs Triton: pip install triton "
                                 "(or --set compile.backend=aot_eager, which compiles nothing to kernels)")
            return
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except Exception as exc:  # inductor's own error for a missing or unusable C++ compiler
            raise UsageError(f"compile with the inductor backend on the CPU needs a C++ compiler ({exc}): install "
                             "gcc or g++ (Debian: apt-get install g++), or --set compile.backend=aot_eager") from None

    def modules(self, model: Any) -> list[Any]:
        """What is compiled: every block of the family's block lists, or the transformer."""
        if self.params.scope == "whole":
            return [model.transformer]
        from harness.models.topology import block_modules

        return block_modules(model.transformer)

    def apply(self, model: Any) -> dict[str, Any]:
        import torch

        from harness.models.denoising import denoising_scope, has_step_cache

        if self.params.fullgraph and has_step_cache(model.transformer):
            raise UsageError("compile.fullgraph=true cannot trace a step cache's hooks (they break the graph on "
                             "purpose, to decide what to reuse): drop compile.fullgraph or the step cache")
        modules = self.modules(model)
        options = {"backend": self.params.backend, "fullgraph": self.params.fullgraph}
        if self.params.mode is not None:
            options["mode"] = self.params.mode
        for module in modules:
            module.compile(**options)
        family, sampling, pipeline = model.family, model.spec.sampling, model.pipeline
        with torch.inference_mode():
            embeds, _ = family.encode_prompts(pipeline, ["a photo"], sampling.max_sequence_length, model.device)
            inputs = family.transformer_inputs(model.transformer, family.forward_batch_size(sampling, 1),
                                               sampling.height, sampling.width, embeds.shape[1], model.device,
                                               model.dtype, torch.Generator().manual_seed(0))
            seconds = []
            for _ in range(2):
                started = time.perf_counter()
                with denoising_scope(model.transformer):
                    model.transformer(**inputs)
                if model.device.type == "cuda":
                    torch.cuda.synchronize(model.device)
                seconds.append(time.perf_counter() - started)
        # 0 where this process had compiled the same code before (dynamo reuses it across instances of a block
        # class): the two calls then differ by noise only, of either sign
        return {"compiled_modules": len(modules), "compile_seconds": max(0.0, seconds[0] - seconds[1]),
                "first_forward_seconds": seconds[0], "compiled_forward_seconds": seconds[1]}

    def apply_structure(self, model: Any) -> dict[str, Any]:
        return {"compiled_modules": len(self.modules(model))}  # no weights change
