"""`latency`: how long the pipeline takes, per image, per denoising step, and for one transformer forward.

Warm-up calls first (not counted), then `repeats` timed calls; each figure is the median with its spread (the
bootstrap standard error of the median, and quantiles). The first call of the suite is reported on its own. On CUDA
the clock is a pair of CUDA events (per-step times are events recorded from the step callback, so nothing
synchronises inside the loop); on the CPU it is `time.perf_counter`. Batch size, resolution, steps and dtype are
recorded with the figures.

Beside the times: the speed of light of one transformer forward (its FLOPs counted on the model as compressed, the
TFLOP/s achieved and their fraction of the device's peak: a GPU's datasheet figure, the CPU's measured in the same
run; `harness.flops.roofline` says what bounds it), the energy per image over the timed calls, and the other load
on the machine while they ran (`harness.monitors`): a figure taken under load is flagged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.metrics import Metric, MetricValue, summarize_median
from harness.models.denoising import denoising_scope
from harness.monitors import EnergyMeter, OtherLoad
from suites.base import MeasurementSuite, SuiteResult


class _Clock:
    """Elapsed milliseconds between marks: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.device = device

    def mark(self) -> Any:
        import torch

        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            return float(start.elapsed_time(end))
        return (end - start) * 1000.0


class LatencySuite(MeasurementSuite):
    name = "latency"
    metrics = (
        Metric("end_to_end", "ms", False, "median wall time of one pipeline call (text encoding, all denoising steps, "
               "VAE decode) divided by the batch size"),
        Metric("per_step", "ms", False, "median time of one denoising step (transformer with CFG, scheduler), from "
               "the step callback, steps 2 to N"),
        Metric("transformer_forward", "ms", False, "median time of one transformer forward at the sampling "
               "resolution (batch doubled when CFG is on), computed in full (a step cache's first call)"),
        Metric("first_call", "ms", False, "the suite's first pipeline call per image, warm-up included"),
        Metric("forward_tflop", "TFLOP", False, "FLOPs of one transformer forward as compressed (Linear, conv and "
               "attention; batch doubled when CFG is on), in 10^12"),
        Metric("achieved_tflops", "TFLOP/s", True, "forward_tflop over the median transformer forward time"),
        Metric("peak_fraction", "fraction", True, "achieved TFLOP/s over the device's dense peak in the model's "
               "dtype (a GPU's datasheet, the CPU's measured in the same run): the speed-of-light fraction"),
        Metric("energy_per_image", "J", False, "energy over the timed pipeline calls per image (NVML on a GPU, RAPL "
               "on a CPU; the whole board or socket)"),
        Metric("other_load", "cores", False, "CPU cores other processes used while the timed calls ran"),
    )

    @dataclass(frozen=True)
    class Params:
        warmup: int = 2
        repeats: int = 5
        batch_size: int = 1
        forward_repeats: int = 10
        prompt: str = "a photo of a red circle left of a blue square"
        speed_of_light: bool = True  # count the forward's FLOPs and hold them against the peak (a CPU's: measured)

        def __post_init__(self) -> None:
            if self.repeats < 1 or self.warmup < 0 or self.batch_size < 1 or self.forward_repeats < 1:
                raise ValueError("repeats, batch_size and forward_repeats must be at least 1, warmup at least 0")

    def measure(self, model: Any, sampling: Any) -> SuiteResult:
        import torch

        clock, params = _Clock(model.device), self.params
        family = model.family
        pipeline, batch = model.pipeline, params.batch_size
        steps: list[Any] = []

        def on_step(_pipe: Any, _index: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            steps.append(clock.mark())
            return kwargs

        def call() -> tuple[float, list[float]]:
            steps.clear()
            generator = torch.Generator("cpu").manual_seed(0)
            start = clock.mark()
            with torch.inference_mode(), denoising_scope(model.transformer):
                pipeline(prompt=[params.prompt] * batch, generator=generator, output_type="np",
                         callback_on_step_end=on_step, **family.call_kwargs(sampling, batch))
            end = clock.mark()
            per_step = [clock.elapsed_ms(a, b) for a, b in zip(steps, steps[1:], strict=False)]
            return clock.elapsed_ms(start, end) / batch, per_step

        first, _ = call()
        for _ in range(params.warmup):
            call()
        end_to_end, per_step, records = [], [], []
        with OtherLoad(model.device) as load, EnergyMeter(model.device) as energy:
            for repeat in range(params.repeats):
                total, step_times = call()
                end_to_end.append(total)
                per_step += step_times
                records.append({"kind": "pipeline_call", "repeat": repeat, "ms_per_image": total,
                                "step_ms": step_times})
        forward_batch = family.forward_batch_size(sampling, batch)
        with torch.inference_mode():
            embeds, _ = family.encode_prompts(pipeline, [params.prompt], sampling.max_sequence_length, model.device)
            inputs = family.transformer_inputs(model.transformer, forward_batch, sampling.height, sampling.width,
                                               embeds.shape[1], model.device, model.dtype,
                                               torch.Generator().manual_seed(0))
            forwards = []
            for repeat in range(params.warmup + params.forward_repeats):
                start = clock.mark()
                with denoising_scope(model.transformer):  # a step cache's first call of a scope computes in full
                    model.transformer(**inputs)
                elapsed = clock.elapsed_ms(start, clock.mark())
                if repeat >= params.warmup:
                    forwards.append(elapsed)
                    records.append({"kind": "transformer_forward", "repeat": repeat - params.warmup, "ms": elapsed})
            metrics = {"end_to_end": summarize_median(end_to_end), "transformer_forward": summarize_median(forwards),
                       "first_call": MetricValue(first, 1)}
            notes = [f"batch {batch}, {sampling.height}x{sampling.width}, {sampling.num_inference_steps} steps, "
                     f"guidance {sampling.guidance_scale}, {str(model.dtype).removeprefix('torch.')} on "
                     f"{model.device}; clock: {'CUDA events' if clock.cuda else 'perf_counter'}; transformer forward "
                     f"batch {forward_batch}, {embeds.shape[1]} text tokens, "
                     f"{family.forwards_per_step(sampling)} forward(s) per step"]
            if params.speed_of_light:
                notes.append(self._speed_of_light(model, inputs, metrics["transformer_forward"].value, metrics,
                                                  records))
        images = params.repeats * batch
        if energy.joules is not None:
            metrics["energy_per_image"] = MetricValue(energy.joules / images, images)
            notes.append(f"energy: {energy.source}")
        else:
            notes.append(f"energy per image: unavailable: {energy.unavailable}")
        if load.report.other_cores is not None:
            metrics["other_load"] = MetricValue(load.report.other_cores, 1)
        notes.append(load.report.describe())
        notes += load.report.notes
        records.append({"kind": "load", "other_cores": load.report.other_cores, "loaded": load.report.loaded,
                        "other_gpu_processes": load.report.other_gpu_processes})
        if per_step:
            metrics["per_step"] = summarize_median(per_step)
        else:
            notes.append("per_step: unavailable (a single denoising step has no step-to-step interval)")
        return SuiteResult(records, notes, metrics=metrics)

    @staticmethod
    def _speed_of_light(model: Any, inputs: dict[str, Any], forward_ms: float, metrics: dict[str, MetricValue],
                        records: list[dict[str, Any]]) -> str:
        """Count one forward's FLOPs (compiled code runs eagerly for it: the same arithmetic), hold the median
        forward time against the device's peak, and say what bounds it."""
        import torch

        from harness.devices import device_peak
        from harness.flops import count_flops, roofline
        from harness.models.footprint import weight_bytes

        with torch.compiler.set_stance("force_eager"), count_flops() as counts, \
                denoising_scope(model.transformer):
            model.transformer(**inputs)
        flops = sum(counts.values())
        report = roofline(flops, forward_ms / 1000.0, weight_bytes(model.transformer),
                          device_peak(model.device, model.dtype))
        records.append({"kind": "speed_of_light", **report})
        metrics["forward_tflop"] = MetricValue(flops / 1e12, 1)
        if report["achieved_tflops"] is not None:
            metrics["achieved_tflops"] = MetricValue(report["achieved_tflops"], 1)
        if report["peak_fraction"] is None:
            return f"speed of light: unavailable: {report['peak_source']}"
        metrics["peak_fraction"] = MetricValue(report["peak_fraction"], 1)
        bound = f"; {report['bound']}-bound (intensity {report['intensity_flop_per_byte']:.0f} FLOP/B, ridge " \
                f"{report['ridge_flop_per_byte']:.0f})" if report["bound"] else ""
        return (f"speed of light: {flops / 1e9:.3g} GFLOP per forward at {report['achieved_tflops']:.3g} TFLOP/s, "
                f"{report['peak_fraction']:.1%} of {report['peak_tflops']:.3g} TFLOP/s peak ({report['peak_source']})"
                f"{bound}")
