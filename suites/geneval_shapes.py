"""GenEval on the synthetic shapes world: GenEval's prompts and rules, with the world's exact judge as detector.

The prompts are GenEval metadata lines (default: the world's 553-prompt benchmark, `benchmark_metadata(0)`, with
GenEval's tag counts); each image is judged by `harness.reference.judge` (shapes as classes, palette colours) and
scored by `harness.geneval_rules`, the official evaluator's rules. The figures are the official summary's: the
GenEval score (`overall`, the unweighted mean over tags), the per-tag fractions, and the fractions of correct
images and of prompts with at least one correct image (`suites.geneval_base`).

`--limit N` takes the first N prompts of a stratified order (tags interleaved in their proportions, each tag's prompts
in file order), not a file prefix, which would hold only single_object prompts. A prompt's `prompt_index` is its
position in the metadata, whatever the limit, and the request list of a limit is a prefix of the full one.

The world is the one the model under test was trained on (the `world.json` of its weights folder, else the committed
reference model's) unless `world` names another. In a world with held-out prompts (shapes-v2, shapes-v3) the
benchmark is its test split, which training never drew, and the suite also scores the same model on a matched sample
of training prompts (`train_share` of the benchmark prompts scored, the same tag proportions and image seeds, prompt
indices after the benchmark's): `train_overall`, and `generalisation_gap`, what the model loses once a prompt is new.
A compression that hurts composition widens the gap.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from harness.generation import Sample
from harness.geneval_rules import PromptSpec, evaluate, filter_detections, parse_metadata
from harness.metrics import Metric, MetricValue
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
    metrics = (
        *GenevalStyleSuite.metrics,
        Metric("train_overall", "fraction", True, "GenEval score on a matched sample of training prompts (worlds "
               "with held-out prompts only): what the model does on prompts it was trained on"),
        Metric("generalisation_gap", "fraction", False, "train_overall minus overall: what the model loses on "
               "prompts training never showed"),
    )

    @dataclass(frozen=True)
    class Params(GenevalStyleSuite.Params):
        world: str | None = None  # shapes-v1, shapes-v2 or shapes-v3; default (resolved when the suite is built, so
        # runs record the name): the world of the run's weights folder, else of the committed reference model
        split: Literal["test", "validation"] = "test"  # whose prompts make the benchmark (validation: training's own
        # periodic evaluation)
        train_share: float = 0.25  # training prompts scored per benchmark prompt (held-out worlds); 0: none

        def __post_init__(self) -> None:
            super().__post_init__()
            from harness.reference.world import world_named

            if self.world is not None:
                world_named(self.world)  # an unknown name is a ValueError naming the worlds
            if not 0 <= self.train_share <= 1:
                raise ValueError("train_share must be between 0 and 1")

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        if self.params.world is None:
            from harness.models.reference import WEIGHTS_DIR
            from harness.reference.world import WORLD_FILE, trained_world

            folder = self.context.weights_folder
            source = folder if folder is not None and (folder / WORLD_FILE).is_file() else WEIGHTS_DIR
            self.params = dataclasses.replace(self.params, world=trained_world(source).name)

    def world(self) -> Any:
        from harness.reference.world import world_named

        return world_named(self.params.world)

    def load_specs(self) -> list[PromptSpec]:
        from harness.reference.world import COLORS

        world = self.world()
        if self.params.metadata is None:
            return [parse_metadata(raw) for raw in world.split_metadata(self.params.split)]
        return read_metadata_file(self.params.metadata, self.name, world.shapes, COLORS,
                                  where=f"the {world.name} world")

    def _training_sample(self) -> list[GenevalPrompt]:
        """The training prompts scored beside the benchmark, in stratified order: none for a metadata file or a
        world without held-out prompts."""
        world = self.world()
        if self.params.metadata is not None or not world.held_out or self.params.train_share == 0:
            return []
        benchmark = super().prompts()
        lines = world.split_metadata("train")
        order = stratified_order([m["tag"] for m in lines])
        return [GenevalPrompt(len(benchmark) + position, parse_metadata(lines[i]), benchmark=False)
                for position, i in enumerate(order)]

    def prompts(self) -> list[GenevalPrompt]:
        """The benchmark's prompts in file order, then the training sample's (`GenevalPrompt.benchmark` False)."""
        if self._prompts is None:
            benchmark = super().prompts()
            self._prompts = benchmark + self._training_sample()
        return self._prompts

    def ordered_prompts(self, limit: int | None = None) -> list[GenevalPrompt]:
        """The first `limit` benchmark prompts of the stratified order, then `train_share` as many training
        prompts (rounded up), also stratified, so their tags come in the same proportions."""
        prompts = self.prompts()
        benchmark = [p for p in prompts if p.benchmark]
        chosen = [benchmark[i] for i in stratified_order([p.spec.tag for p in benchmark])][:limit]
        training = [p for p in prompts if not p.benchmark]
        return chosen + training[:math.ceil(len(chosen) * self.params.train_share)]

    def judge(self, samples: list[Sample], prompts: list[GenevalPrompt]) -> tuple[list[dict[str, Any]], list[str]]:
        from harness.reference.judge import classify_colors, detect

        shapes = self.world().shapes
        records: list[dict[str, Any]] = []
        for sample in samples:
            prompt = prompts[sample.request.prompt_index]
            spec = prompt.spec
            image = np.asarray(sample.image)[..., :3]
            detections = detect(image, shapes)
            kept = [d for objects in filter_detections(detections, spec.tag).values() for d in objects]
            # the judge's colours do not depend on the class: one pass over the image colours every kept object,
            # for the record and for the rules (which only ask about kept objects)
            colors = dict(zip(map(id, kept), classify_colors(image, kept, ""), strict=True))

            def known_colors(image: np.ndarray, objects: Any, class_name: str, colors: dict = colors) -> list[str]:
                return [colors[id(d)] for d in objects]

            judgement = evaluate(image, detections, spec, known_colors)
            records.append({"tag": spec.tag, "correct": judgement.correct, "reason": judgement.reason,
                            **({} if prompt.benchmark else {"training_prompt": True}),
                            "detections": [{"label": d.label, "score": round(d.score, 3),
                                            "box": [int(v) for v in d.box], "color": colors[id(d)]} for d in kept]})
        return records, []

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, MetricValue]:
        """The benchmark's figures from its records alone; with training-prompt records, their GenEval score and
        the gap to the benchmark's (standard errors: independent samples)."""
        benchmark = [r for r in records if not r.get("training_prompt")]
        training = [r for r in records if r.get("training_prompt")]
        out = super().aggregate(benchmark) if benchmark else {}
        if training:
            train = super().aggregate(training)["overall"]
            out["train_overall"] = train
            if "overall" in out:
                test = out["overall"]
                stderr = None if train.stderr is None or test.stderr is None else math.hypot(train.stderr,
                                                                                             test.stderr)
                out["generalisation_gap"] = MetricValue(train.value - test.value, train.n + test.n, stderr)
        return out
