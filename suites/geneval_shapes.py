"""GenEval on the synthetic shapes world: GenEval's prompts and rules, with the world's exact judge as detector.

The prompts are GenEval metadata lines (default: the world's 553-prompt benchmark, `benchmark_metadata(0)`, with
GenEval's tag counts); each image is judged by `harness.reference.judge` (shapes as classes, palette colours) and
scored by `harness.geneval_rules`, the official evaluator's rules. The figures are the official summary's: the
GenEval score (`overall`, the unweighted mean over tags), the per-tag fractions, and the fractions of correct
images and of prompts with at least one correct image (`suites.geneval_base`).

`--limit N` takes the first N prompts of a stratified order (tags interleaved in their proportions, each tag's prompts
in file order), not a file prefix, which would hold only single_object prompts. A prompt's `prompt_index` is its
position in the metadata, whatever the limit, and the request list of a limit is a prefix of the full one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.generation import Sample
from harness.geneval_rules import PromptSpec, evaluate, filter_detections, parse_metadata
from suites.geneval_base import (  # noqa: F401  (the grid's layout constants are part of this suite's interface)
    GRID_BORDER,
    GRID_CELL,
    GRID_LABEL_WIDTH,
    GRID_PAD,
    GenevalPrompt,
    GenevalStyleSuite,
    read_metadata_file,
    stratified_order,
)

GRID_SCALE = 2  # the world's 64 px images fill a GRID_CELL of 128 px


class GenevalShapesSuite(GenevalStyleSuite):
    name = "geneval-shapes"

    def load_specs(self) -> list[PromptSpec]:
        from harness.reference.world import COLORS, SHAPES, benchmark_metadata

        if self.params.metadata is None:
            return [parse_metadata(raw) for raw in benchmark_metadata(0)]
        return read_metadata_file(self.params.metadata, self.name, SHAPES, COLORS, where="the shapes world")

    def judge(self, samples: list[Sample], prompts: list[GenevalPrompt]) -> tuple[list[dict[str, Any]], list[str]]:
        from harness.reference.judge import classify_colors, detect

        records: list[dict[str, Any]] = []
        for sample in samples:
            spec = prompts[sample.request.prompt_index].spec
            image = np.asarray(sample.image)[..., :3]
            detections = detect(image)
            kept = [d for objects in filter_detections(detections, spec.tag).values() for d in objects]
            # the judge's colours do not depend on the class: one pass over the image colours every kept object,
            # for the record and for the rules (which only ask about kept objects)
            colors = dict(zip(map(id, kept), classify_colors(image, kept, ""), strict=True))

            def known_colors(image: np.ndarray, objects: Any, class_name: str, colors: dict = colors) -> list[str]:
                return [colors[id(d)] for d in objects]

            judgement = evaluate(image, detections, spec, known_colors)
            records.append({"tag": spec.tag, "correct": judgement.correct, "reason": judgement.reason,
                            "detections": [{"label": d.label, "score": round(d.score, 3),
                                            "box": [int(v) for v in d.box], "color": colors[id(d)]} for d in kept]})
        return records, []
