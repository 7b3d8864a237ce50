"""What every GenEval-style suite shares: metadata lines as prompts, GenEval's stratified subsets, requests,
the official summary's figures, bootstrap aggregation, and the grid of prompts and samples.

A subclass says where its metadata comes from (`load_specs`) and how an image becomes a judgement (`judge`):
`geneval-shapes` with the reference world's exact judge, `geneval` with a real detector and CLIP (or the official
evaluator). Both score with `harness.geneval_rules`, the official evaluator's rules.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.generation import ImageRequest, Sample, check_samples_per_prompt
from harness.geneval_rules import TAGS, PromptSpec, parse_metadata
from harness.geneval_rules import summarize as geneval_summary
from harness.metrics import Metric, MetricValue, stderr_of_mean_of_means, summarize
from harness.prompts import read_text_file
from suites.base import ImageSuite, Scores

TAG_DESCRIPTIONS = {
    "single_object": "one object of the asked class",
    "two_object": "two objects of different asked classes",
    "counting": "exactly the asked number of objects of a class (detections above 0.9)",
    "colors": "one object of the asked class in the asked colour",
    "position": "two objects, one in the asked relation (left of, right of, above, below) to the other",
    "color_attr": "two objects of different classes, each in its asked colour",
}
GRID_CELL = 128  # pixels per sample in the grid (the reference world's 64 px images upscaled x2, nearest)
GRID_BORDER = 2  # pixels of the correct (green) / incorrect (red) frame around each cell
GRID_PAD = 4
GRID_LABEL_WIDTH = 200  # pixels for the wrapped prompt text at the left of each row


@dataclass(frozen=True)
class GenevalPrompt:
    """One metadata line: its position in the metadata (the stable prompt_index) and its parsed form."""

    index: int
    spec: PromptSpec
    benchmark: bool = True  # False: scored beside the benchmark, not part of its figures (geneval-shapes' sample of
    # training prompts)


def read_metadata_file(path: Path, suite: str, classes: Any = None, colors: Any = None,
                       where: str = "") -> list[PromptSpec]:
    """A GenEval metadata JSONL (one object a line, blank lines skipped); with `classes` / `colors`, every class and
    colour must be one of them (those of `where`). Every problem is a UsageError naming the file and, for a bad
    line, its number."""
    path = Path(path)
    text = read_text_file(path, f"{suite} metadata file")
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
            if classes is not None and clause.class_name not in classes:
                raise UsageError(f"{path}:{number}: class '{clause.class_name}' does not exist in {where} "
                                 f"(its classes: {', '.join(classes)})")
        for clause in spec.include:
            if colors is not None and clause.color is not None and clause.color not in colors:
                raise UsageError(f"{path}:{number}: colour '{clause.color}' does not exist in {where} "
                                 f"(its colours: {', '.join(colors)})")
        specs.append(spec)
    if not specs:
        raise UsageError(f"{suite} metadata file '{path}' holds no metadata lines")
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


class GenevalStyleSuite(ImageSuite):
    """Base of the GenEval-style suites; subclasses give `load_specs` and `judge`."""

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
        metadata: Path | None = None  # GenEval metadata JSONL; default: the suite's own
        samples_per_prompt: int = 2
        grid_prompts_per_tag: int = 2  # rows per tag in the grid.png artifact; 0: no grid

        def __post_init__(self) -> None:
            check_samples_per_prompt(self.samples_per_prompt)
            if self.grid_prompts_per_tag < 0:
                raise ValueError("grid_prompts_per_tag must be 0 or more")

    def load_specs(self) -> list[PromptSpec]:
        """The metadata lines, in file order."""
        raise NotImplementedError

    def judge(self, samples: list[Sample], prompts: list[GenevalPrompt]) -> tuple[list[dict[str, Any]], list[str]]:
        """One record per sample ({"tag", "correct", "reason", ...}) and notes."""
        raise NotImplementedError

    def __init__(self, params: Any = None, context: Any = None) -> None:
        super().__init__(params, context)
        self._prompts: list[GenevalPrompt] | None = None

    def prompts(self) -> list[GenevalPrompt]:
        """The metadata lines in file order, read (and validated) once."""
        if self._prompts is None:
            self._prompts = [GenevalPrompt(index, spec) for index, spec in enumerate(self.load_specs())]
        return self._prompts

    def ordered_prompts(self, limit: int | None = None) -> list[GenevalPrompt]:
        """The first `limit` prompts of the stratified order (all when None)."""
        prompts = self.prompts()
        return [prompts[i] for i in stratified_order([p.spec.tag for p in prompts])][:limit]

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return [
            ImageRequest(prompt.spec.prompt, prompt.index, sample)
            for prompt in self.ordered_prompts(limit)
            for sample in range(self.params.samples_per_prompt)
        ]

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        prompts = self.prompts()
        for sample in samples:
            if not 0 <= sample.request.prompt_index < len(prompts):
                raise ValueError(f"sample of prompt {sample.request.prompt_index}, but the metadata has "
                                 f"{len(prompts)} prompts")
        if not samples:
            return Scores([], [f"{self.name}: no images to score"])
        records, notes = self.judge(samples, prompts)
        benchmark = [p.index for p in prompts if p.benchmark]
        scored = {s.request.prompt_index for s in samples} & set(benchmark)
        if len(scored) < len(benchmark):
            notes.append(f"{self.name}: {len(scored)} of {len(benchmark)} prompts scored (a stratified subset)")
        if missing := [tag for tag in TAGS if tag not in {r["tag"] for r in records}]:
            notes.append(f"{self.name}: no {', '.join(missing)} prompts among those scored; overall is the mean "
                         f"over the {len(TAGS) - len(missing)} tag(s) present")
        artifacts = {}
        if self.params.grid_prompts_per_tag > 0:
            artifacts["grid.png"] = grid_png(samples, records, prompts, self.params.grid_prompts_per_tag)
        return Scores(records, notes, artifacts)

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, MetricValue]:
        """The official summary's figures (`harness.geneval_rules.summarize`) with standard errors: per tag and
        over images, of the fraction; over tags, of their unweighted mean (independent samples); over prompts, of
        the fraction with at least one correct image."""
        summary = geneval_summary((r["tag"], r["prompt_index"], r["correct"]) for r in records)
        by_tag: dict[str, list[float]] = {}
        by_prompt: dict[int, bool] = {}
        for record in records:  # one pass: the paired bootstrap calls this a thousand times per comparison
            by_tag.setdefault(record["tag"], []).append(float(record["correct"]))
            by_prompt[record["prompt_index"]] = by_prompt.get(record["prompt_index"], False) or record["correct"]
        per_tag = {tag: summarize(by_tag[tag]) for tag in TAGS if tag in summary.per_tag}
        return {
            "overall": MetricValue(summary.overall, summary.images,
                                   stderr_of_mean_of_means([m.stderr for m in per_tag.values()])),
            **per_tag,
            "correct_images": summarize([float(r["correct"]) for r in records]),
            "correct_prompts": summarize([float(v) for v in by_prompt.values()]),
        }


def grid_png(samples: list[Sample], records: list[dict[str, Any]], prompts: list[GenevalPrompt],
             per_tag: int) -> bytes:
    """Rows of the first `per_tag` prompts (in metadata order) of each tag present: the prompt text, then its
    samples at GRID_CELL pixels (nearest when enlarged, Lanczos when reduced), framed green when correct and red
    when not."""
    from PIL import Image, ImageDraw, ImageFont

    by_prompt: dict[int, list[tuple[Sample, bool]]] = {}
    for sample, record in zip(samples, records, strict=True):
        by_prompt.setdefault(sample.request.prompt_index, []).append((sample, record["correct"]))
    rows = []
    for tag in TAGS:
        rows += [index for index in sorted(by_prompt) if prompts[index].spec.tag == tag][:per_tag]
    cell = GRID_CELL
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
            resample = Image.Resampling.NEAREST if image.width <= cell else Image.Resampling.LANCZOS
            canvas.paste(image.resize((cell, cell), resample), (left + GRID_BORDER, top + GRID_BORDER))
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

