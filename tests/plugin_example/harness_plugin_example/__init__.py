"""An example plugin: one compressor and one suite, registered only through entry points."""

from __future__ import annotations

from dataclasses import dataclass

from compressors.base import Compressor
from harness.generation import ImageRequest
from harness.metrics import Metric
from suites.base import ImageSuite, Scores


class AttenuateOutput(Compressor):
    """Scale the transformer's output projection (a stand-in for a real method)."""

    name = "attenuate-output"
    description = "Scale the transformer's output projection by a factor."

    @dataclass(frozen=True)
    class Params:
        factor: float = 0.5

    def apply(self, model):
        import torch

        with torch.no_grad():
            model.transformer.proj_out.weight.mul_(self.params.factor)
        return {"tensors_scaled": 1}


class BrightnessSuite(ImageSuite):
    name = "brightness"
    description = "Mean pixel brightness of each image."
    metrics = (Metric("mean", "fraction", True, "mean pixel value / 255"),)

    @dataclass(frozen=True)
    class Params:
        prompts: int = 3

    def requests(self, limit):
        count = min(self.params.prompts, limit or self.params.prompts)
        return [ImageRequest(f"a photo number {i}", i, 0) for i in range(count)]

    def score(self, samples, references):
        return Scores([{"mean": float(s.image.mean() / 255.0)} for s in samples])  # aggregate: their mean
