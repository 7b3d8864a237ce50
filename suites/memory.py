"""`memory`: what the pipeline occupies, stored and while it runs, and on which cards it fits.

- Static weight bytes per component (transformer, text encoders, VAE), quantised storage counted exactly
  (`harness.models.footprint`).
- Loading (measured by the runner while it loaded the model, before any compressor) and inference peaks, each named:
  torch allocated, torch reserved, NVML per-process (GPU), peak RSS (host). See `harness.memory`.
- The release's protocol: one no-grad transformer forward with random inputs at the sampling resolution (batch 2
  with CFG), its allocated peak.
- Per device profile (`harness.devices`): whether the whole pipeline's inference fits, judged by the NVML peak when
  there is one, else the reserved peak plus a context allowance, with the headroom.
`offload=model` measures with diffusers' model CPU offload. `emulate_device=<profile>` caps the allocator at that
card's memory; running out of memory there is a result ("does not fit"), not a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.devices import CONTEXT_ALLOWANCE_GIB, GIB, PROFILES, fits
from harness.errors import UsageError
from harness.memory import PeakMemory, cuda_index
from harness.metrics import Metric, MetricValue
from harness.models.denoising import denoising_scope
from harness.monitors import OtherLoad
from suites.base import MeasurementSuite, SuiteResult

_TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


class MemorySuite(MeasurementSuite):
    name = "memory"
    metrics = (
        Metric("weights_transformer_gib", "GiB", False, "transformer parameters + persistent buffers as stored"),
        Metric("weights_text_encoders_gib", "GiB", False, "all text encoders' weights as stored"),
        Metric("weights_vae_gib", "GiB", False, "the VAE's weights as stored"),
        Metric("weights_total_gib", "GiB", False, "every component's weights as stored"),
        Metric("load_allocated_peak_gib", "GiB", False, "torch allocated peak while loading (GPU)"),
        Metric("load_reserved_peak_gib", "GiB", False, "torch reserved peak while loading (GPU)"),
        Metric("inference_allocated_peak_gib", "GiB", False, "torch allocated peak of one pipeline call (GPU)"),
        Metric("inference_reserved_peak_gib", "GiB", False, "torch reserved peak of one pipeline call (GPU)"),
        Metric("inference_nvml_peak_gib", "GiB", False, "NVML per-process peak of one pipeline call, CUDA context "
               "included (GPU)"),
        Metric("transformer_forward_peak_gib", "GiB", False, "allocated peak of one no-grad transformer forward with "
               "random inputs at the sampling resolution: the HierarchicalPrune release's protocol (GPU)"),
        Metric("inference_peak_rss_gib", "GiB", False, "peak resident memory of the process during one pipeline "
               "call (host)"),
        Metric("load_peak_rss_gib", "GiB", False, "peak resident memory of the process while loading (host)"),
        Metric("other_load", "cores", False, "CPU cores other processes used during the measured pipeline call"),
    )

    @dataclass(frozen=True)
    class Params:
        batch_size: int = 1
        offload: Literal["none", "model"] = "none"
        emulate_device: str | None = None
        prompt: str = "a photo of a red circle left of a blue square"

        def __post_init__(self) -> None:
            if self.emulate_device is not None and self.emulate_device not in PROFILES:
                raise ValueError(f"emulate_device '{self.emulate_device}' is not a profile; profiles: "
                                 f"{', '.join(PROFILES)}")

    def measure(self, model: Any, sampling: Any) -> SuiteResult:
        import torch

        from harness.models.footprint import weight_bytes

        pipeline, params, notes = model.pipeline, self.params, []
        family = model.family
        metrics: dict[str, MetricValue] = {}

        def put(name: str, value: int | None) -> None:
            if value is not None:
                metrics[name] = MetricValue(value / GIB, 1)

        components = {name: c for name, c in pipeline.components.items() if isinstance(c, torch.nn.Module)}
        sizes = {name: weight_bytes(module) for name, module in components.items()}
        put("weights_transformer_gib", sizes.get("transformer"))
        put("weights_text_encoders_gib", sum(sizes.get(n, 0) for n in _TEXT_ENCODERS))
        put("weights_vae_gib", sizes.get("vae"))
        put("weights_total_gib", sum(sizes.values()))
        load = getattr(model, "load_memory", None)
        if load is not None:
            put("load_allocated_peak_gib", load.allocated)
            put("load_reserved_peak_gib", load.reserved)
            put("load_peak_rss_gib", load.rss)

        cuda = model.device.type == "cuda"
        if params.offload == "model":
            if not cuda:
                raise UsageError("memory.offload=model needs a CUDA device (it offloads to the CPU)")
            pipeline.enable_model_cpu_offload(device=model.device)
        cap = PROFILES.get(params.emulate_device) if params.emulate_device else None
        if cap is not None:
            if not cuda:
                raise UsageError("memory.emulate_device needs a CUDA device (it caps the CUDA allocator)")
            index = cuda_index(model.device)
            total = torch.cuda.get_device_properties(index).total_memory
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap.memory_gib * GIB / total), index)
        out_of_memory = False
        try:
            with OtherLoad(model.device) as load, PeakMemory(model.device) as inference, torch.inference_mode(), \
                    denoising_scope(model.transformer):
                pipeline(prompt=[params.prompt] * params.batch_size, output_type="np",
                         generator=torch.Generator("cpu").manual_seed(0),
                         **family.call_kwargs(sampling, params.batch_size))
            with torch.inference_mode():
                embeds, _ = family.encode_prompts(pipeline, [params.prompt], sampling.max_sequence_length,
                                                  model.device)
                forward_batch = family.forward_batch_size(sampling, params.batch_size)
                inputs = family.transformer_inputs(model.transformer, forward_batch, sampling.height, sampling.width,
                                                   embeds.shape[1], model.device, model.dtype,
                                                   torch.Generator().manual_seed(0))
                del embeds
                with PeakMemory(model.device) as forward, denoising_scope(model.transformer):
                    model.transformer(**inputs)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True
            notes.append(f"out of memory with the allocator capped at {cap.label if cap else 'the card'}: "
                         "the pipeline does not fit")
        finally:
            if cap is not None:
                torch.cuda.set_per_process_memory_fraction(1.0, index)
            if params.offload == "model":
                pipeline.remove_all_hooks()
                pipeline.to(model.device)

        records: list[dict[str, Any]] = [{"kind": "weights", "component": n, "bytes": b} for n, b in sizes.items()]
        if not out_of_memory:
            put("inference_allocated_peak_gib", inference.allocated)
            put("inference_reserved_peak_gib", inference.reserved)
            put("inference_nvml_peak_gib", inference.nvml)
            put("inference_peak_rss_gib", inference.rss)
            put("transformer_forward_peak_gib", forward.allocated)
            for figure, reason in inference.unavailable.items():
                notes.append(f"inference {figure} peak: unavailable: {reason}")
            need, basis = _need(inference)
            if need is None:
                notes.append("device profiles: unavailable: the fit is judged from GPU peaks, and this ran on "
                             f"{model.device.type}")
            else:
                records += [{"kind": "profile", **row} for row in fits(need / GIB, basis)]
        if cap is not None:
            records.append({"kind": "emulated_profile", "profile": cap.name, "fits": not out_of_memory})
        if not out_of_memory:
            if load.report.other_cores is not None:
                metrics["other_load"] = MetricValue(load.report.other_cores, 1)
            notes.append(load.report.describe())
            notes += load.report.notes
        notes.append(f"batch {params.batch_size}, {sampling.height}x{sampling.width}, "
                     f"{sampling.num_inference_steps} steps, offload {params.offload}")
        return SuiteResult(records, notes, metrics=metrics)


def _need(peak: Any) -> tuple[int | None, str]:
    if peak.nvml is not None:
        return peak.nvml, "NVML per-process peak (CUDA context included)"
    if peak.reserved is not None:
        return int(peak.reserved + CONTEXT_ALLOWANCE_GIB * GIB), \
            f"torch reserved peak + {CONTEXT_ALLOWANCE_GIB} GiB context allowance"
    return None, ""
