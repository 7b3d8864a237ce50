"""GenEval on the synthetic shapes world: GenEval's prompts and rules, with the world's exact judge as detector.

The prompts are GenEval metadata lines (default: the world's 553-prompt benchmark, `benchmark_metadata(0)`, with
GenEval's tag counts); each image is judged by `harness.reference.judge` (shapes as classes, palette colours) and
scored by `suites.geneval_rules`, the official evaluator's rules. The figures are the official summary's: the
GenEval score (`overall`, the unweighted mean over tags), the per-tag fractions, and the fractions of correct
images and of prompts with at least one correct image.

`--limit N` takes the first N prompts of a stratified order (tags interleaved in their proportions, each tag's prompts
in file order), not a file prefix, which would hold only single_object prompts. A prompt's `prompt_index` is its
position in the metadata, whatever the limit, and the request list of a limit is a prefix of the full one.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.generation import ImageRequest
from harness.metrics import Metric, MetricValue, summarize
from harness.prompts import read_text_file
from suites.base import Sample, Suite, SuiteResult
from suites.geneval_rules import TAGS, PromptSpec, evaluate, filter_detections, parse_metadata
from suites.geneval_rules import summarize as geneval_summary

TAG_DESCRIPTIONS = {
    "single_object": "one object of the asked class",
    "two_object": "two objects of different asked classes",
    "counting": "exactly the asked number of objects of a class (detections above 0.9)",
    "colors": "one object of the asked class in the asked colour",
    "position": "two objects, one in the asked relation (left of, right of, above, below) to the other",
    "color_attr": "two objects of different classes, each in its asked colour",
}
GRID_SCALE = 2  # cells show the world's images upscaled x2 (nearest)
GRID_BORDER = 2  # pixels of the correct (green) / incorrect (red) frame around each cell
GRID_PAD = 4
GRID_LABEL_WIDTH = 200  # pixels for the wrapped prompt text at the left of each row


@dataclass(frozen=True)
class ShapesPrompt:
    """One metadata line: its position in the metadata (the stable prompt_index) and its parsed form."""

    index: int
    spec: PromptSpec


def read_metadata_file(path: Path) -> list[PromptSpec]:
    """A GenEval metadata JSONL (one object a line, blank lines skipped) whose classes and colours the shapes world
    has. Every problem is a UsageError naming the file and, for a bad line, its line number."""
    from harness.reference.world import COLORS, SHAPES

    path = Path(path)
    text = read_text_file(path, "geneval-shapes metadata file")
    specs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        try:
            spec = parse_metadata(raw)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: not a GenEval metadata line: {exc}") from None
        if not spec.prompt.strip():
            raise UsageError(f'{path}:{number}: metadata lacks a non-empty "prompt" string, the text to generate from')
        for clause in (*spec.include, *spec.exclude):
            if clause.class_name not in SHAPES:
                raise UsageError(f"{path}:{number}: class '{clause.class_name}' does not exist in the shapes world "
                                 f"(its classes: {', '.join(SHAPES)})")
        for clause in spec.include:
            if clause.color is not None and clause.color not in COLORS:
                raise UsageError(f"{path}:{number}: colour '{clause.color}' does not exist in the shapes world "
                                 f"(its colours: {', '.join(COLORS)})")
        specs.append(spec)
    if not specs:
        raise UsageError(f"geneval-shapes metadata file '{path}' holds no metadata lines")
    return specs


def stratified_order(tags: list[str]) -> list[int]:
    """Indices into `tags` in an interleaved order whose every prefix holds each tag in its overall proportion
    (within one item): repeatedly take the next item, in file order, of the tag furthest below its target count
    (ties: the tag seen first in the file). Deterministic and exact (integer arithmetic)."""
    total = len(tags)
    by_tag: dict[str, list[int]] = {}
    for index, tag in enumerate(tags):
        by_tag.setdefault(tag, []).append(index)
    taken = dict.fromkeys(by_tag, 0)
    order = []
    for step in range(1, total + 1):
        # total x (step x share - taken): the tag's shortfall against its target count after this step
        tag = max((t for t in by_tag if taken[t] < len(by_tag[t])),
                  key=lambda t: len(by_tag[t]) * step - taken[t] * total)
        order.append(by_tag[tag][taken[tag]])
        taken[tag] += 1
    return order


class GenevalShapesSuite(Suite):
    name = "geneval-shapes"
    description = "GenEval's rules on the synthetic shapes world, judged exactly (no detector, no CLIP)."
    metrics = (
        Metric("overall", "fraction", True,
               "GenEval score: unweighted mean of the per-tag fractions of correct images, over the tags present"),
        *(Metric(tag, "fraction", True, f"fraction of correct images among {tag} prompts: {text}")
          for tag, text in TAG_DESCRIPTIONS.items()),
        Metric("correct_images", "fraction", True, "fraction of all images judged correct, tags pooled"),
        Metric("correct_prompts", "fraction", True, "fraction of prompts with at least one correct image"),
    )

    @dataclass(frozen=True)
    class Params:
        metadata: Path | None = None  # GenEval metadata JSONL; default: the world's benchmark_metadata(0), 553 prompts
        samples_per_prompt: int = 2
        grid_prompts_per_tag: int = 2  # rows per tag in the grid.png artifact; 0: no grid

        def __post_init__(self) -> None:
            if self.samples_per_prompt < 1:
                raise ValueError("samples_per_prompt must be at least 1")
            if self.grid_prompts_per_tag < 0:
                raise ValueError("grid_prompts_per_tag must be 0 or more")

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._prompts: list[ShapesPrompt] | None = None

    def prompts(self) -> list[ShapesPrompt]:
        """The metadata lines in file order, read (and validated) once."""
        if self._prompts is None:
            if self.params.metadata is None:
                from harness.reference.world import benchmark_metadata

                specs = [parse_metadata(raw) for raw in benchmark_metadata(0)]
            else:
                specs = read_metadata_file(self.params.metadata)
            self._prompts = [ShapesPrompt(index, spec) for index, spec in enumerate(specs)]
        return self._prompts

    def ordered_prompts(self, limit: int | None = None) -> list[ShapesPrompt]:
        """The first `limit` prompts of the stratified order (all when None)."""
        prompts = self.prompts()
        return [prompts[i] for i in stratified_order([p.spec.tag for p in prompts])][:limit]

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return [
            ImageRequest(prompt.spec.prompt, prompt.index, sample)
            for prompt in self.ordered_prompts(limit)
            for sample in range(self.params.samples_per_prompt)
        ]

    def score(self, samples: list[Sample], references: list[Sample] | None) -> SuiteResult:
        from harness.reference.judge import classify_colors, detect

        prompts = self.prompts()
        records: list[dict[str, Any]] = []
        for sample in samples:
            index = sample.request.prompt_index
            if not 0 <= index < len(prompts):
                raise ValueError(f"sample of prompt {index}, but the metadata has {len(prompts)} prompts")
            spec = prompts[index].spec
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
        if not records:
            return SuiteResult({}, [], ["geneval-shapes: no images to score"])
        metrics, notes = _metrics(records, [s.request.prompt_index for s in samples], len(prompts))
        artifacts = {}
        if self.params.grid_prompts_per_tag > 0:
            artifacts["grid.png"] = grid_png(samples, records, prompts, self.params.grid_prompts_per_tag)
        return SuiteResult(metrics, records, notes, artifacts)


    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, float]:
        summary = geneval_summary((r["tag"], r["prompt_index"], r["correct"]) for r in records)
        return {"overall": summary.overall, **summary.per_tag, "correct_images": summary.correct_images,
                "correct_prompts": summary.correct_prompts}


def _metrics(records: list[dict[str, Any]], prompt_indices: list[int],
             total_prompts: int) -> tuple[dict[str, MetricValue], list[str]]:
    summary = geneval_summary((r["tag"], i, r["correct"]) for r, i in zip(records, prompt_indices, strict=True))
    per_tag = {tag: summarize([float(r["correct"]) for r in records if r["tag"] == tag])
               for tag in TAGS if tag in summary.per_tag}
    errors = [m.stderr for m in per_tag.values() if m.stderr is not None]
    # the tags are independent samples: the mean's variance is the sum of theirs over the number of tags squared;
    # unknown (a tag with a single image) makes it unknown
    overall_stderr = math.sqrt(sum(e * e for e in errors)) / len(per_tag) if len(errors) == len(per_tag) else None
    by_prompt: dict[int, bool] = {}
    for record, index in zip(records, prompt_indices, strict=True):
        by_prompt[index] = by_prompt.get(index, False) or record["correct"]
    metrics = {
        "overall": MetricValue(summary.overall, summary.images, overall_stderr),
        **per_tag,
        "correct_images": summarize([float(r["correct"]) for r in records]),
        "correct_prompts": summarize([float(v) for v in by_prompt.values()]),
    }
    notes = []
    if summary.prompts < total_prompts:
        notes.append(f"geneval-shapes: {summary.prompts} of {total_prompts} prompts scored (a stratified subset)")
    if missing := [tag for tag in TAGS if tag not in per_tag]:
        notes.append(f"geneval-shapes: no {', '.join(missing)} prompts among those scored; overall is the mean "
                     f"over the {len(per_tag)} tag(s) present")
    return metrics, notes


def grid_png(samples: list[Sample], records: list[dict[str, Any]], prompts: list[ShapesPrompt],
             per_tag: int) -> bytes:
    """Rows of the first `per_tag` prompts (in metadata order) of each tag present: the prompt text, then its
    samples upscaled, framed green when correct and red when not."""
    from PIL import Image, ImageDraw, ImageFont

    from harness.reference.world import IMAGE_SIZE

    by_prompt: dict[int, list[tuple[Sample, bool]]] = {}
    for sample, record in zip(samples, records, strict=True):
        by_prompt.setdefault(sample.request.prompt_index, []).append((sample, record["correct"]))
    rows = []
    for tag in TAGS:
        rows += [index for index in sorted(by_prompt) if prompts[index].spec.tag == tag][:per_tag]
    cell = IMAGE_SIZE * GRID_SCALE
    step = cell + 2 * GRID_BORDER + GRID_PAD
    columns = max(len(by_prompt[index]) for index in rows)
    width = GRID_PAD + GRID_LABEL_WIDTH + columns * step
    canvas = Image.new("RGB", (width, GRID_PAD + len(rows) * step), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row, index in enumerate(rows):
        top = GRID_PAD + row * step
        spec = prompts[index].spec
        text_lines = _wrap(draw, font, f"[{spec.tag}] {spec.prompt}", GRID_LABEL_WIDTH - GRID_PAD)
        draw.multiline_text((GRID_PAD, top + GRID_BORDER), "\n".join(text_lines), fill="black", font=font)
        for column, (sample, correct) in enumerate(sorted(by_prompt[index], key=lambda p: p[0].request.sample_index)):
            left = GRID_PAD + GRID_LABEL_WIDTH + column * step
            frame = (40, 170, 40) if correct else (220, 30, 30)
            draw.rectangle((left, top, left + cell + 2 * GRID_BORDER - 1, top + cell + 2 * GRID_BORDER - 1),
                           fill=frame)
            image = Image.fromarray(np.ascontiguousarray(np.asarray(sample.image)[..., :3]))
            canvas.paste(image.resize((cell, cell), Image.Resampling.NEAREST), (left + GRID_BORDER, top + GRID_BORDER))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def _wrap(draw: Any, font: Any, text: str, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines

