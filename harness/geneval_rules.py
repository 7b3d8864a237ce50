"""GenEval's rules: from one image's scored detections and one prompt's metadata to correct/incorrect plus a reason.

This module is the scoring logic of the official GenEval evaluator (djghosh13/geneval, `evaluate_images.py` and
`summary_scores.py`), reimplemented without its detector and CLIP. It knows nothing about where detections come
from or how colours are judged: the real GenEval suite feeds it Mask2Former detections and a CLIP colour
classifier, the synthetic-shapes suite feeds it exact shapes and their drawn colours, and both are then judged by
the same rules. Reason strings follow the official wording so that per-image reasons can be compared with the
official tool's output.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SCORE_THRESHOLD = 0.3  # a detection is kept when its score is strictly above this ...
COUNTING_SCORE_THRESHOLD = 0.9  # ... or strictly above this, for every class, when the prompt's tag is "counting"
COUNTING_TAG = "counting"
MAX_OBJECTS_PER_CLASS = 16  # highest-scoring detections kept per class; there is no NMS
POSITION_MARGIN = 0.1  # each axis of a centre offset is shrunk by this times the sum of the two boxes' sizes
NO_RELATION_EPS = 1e-3  # below this on both shrunk axes, two boxes stand in no relation at all

TAGS = ("single_object", "two_object", COUNTING_TAG, "colors", "position", "color_attr")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels; y grows downwards


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected object. Compared by identity: two detections with equal fields are still two objects."""

    label: str
    score: float
    box: Box
    mask: np.ndarray | None = None  # H x W bool, for colour classifiers that need the object's pixels

    def __post_init__(self) -> None:
        if len(self.box) != 4:
            raise ValueError(f"Detection.box must be (x0, y0, x1, y1), got {self.box!r}")


ColorClassifier = Callable[[np.ndarray, Sequence[Detection], str], Sequence[str]]
"""(image, objects of one class, class name) -> one name from COLORS per object, in the objects' order."""


@dataclass(frozen=True)
class IncludeClause:
    """At least `count` objects of `class_name`, optionally of `color` and/or in `relation` to include clause
    `target` (an earlier one)."""

    class_name: str
    count: int
    color: str | None = None
    relation: str | None = None
    target: int | None = None


@dataclass(frozen=True)
class ExcludeClause:
    """Fewer than `count` objects of `class_name`."""

    class_name: str
    count: int


@dataclass(frozen=True)
class PromptSpec:
    """One line of GenEval's `evaluation_metadata.jsonl`, validated."""

    tag: str
    include: tuple[IncludeClause, ...]
    exclude: tuple[ExcludeClause, ...] = ()
    prompt: str = ""


@dataclass(frozen=True)
class Judgement:
    """The verdict on one image: the failed checks, in the order they were made; none means correct."""

    failures: tuple[str, ...] = ()

    @property
    def correct(self) -> bool:
        return not self.failures

    @property
    def reason(self) -> str:
        """The failures one per line, as the official tool writes them; empty when correct."""
        return "\n".join(self.failures)


@dataclass(frozen=True)
class Summary:
    """The figures the official `summary_scores.py` prints."""

    per_tag: dict[str, float]  # fraction of correct images per tag, tags in first-seen order
    tag_counts: dict[str, tuple[int, int]]  # per tag: (correct images, images)
    overall: float  # unweighted mean of per_tag: the GenEval score
    images: int
    prompts: int
    correct_images: float  # fraction of all images that are correct
    correct_prompts: float  # fraction of prompts with at least one correct image


# --- metadata -------------------------------------------------------------------------------------------------------


def parse_metadata(raw: Mapping[str, Any]) -> PromptSpec:
    """Validate one metadata line (as parsed JSON). Raises ValueError naming the offending field, because a typo
    here (a misspelt key, a tag that is not "counting") silently changes the score rather than failing."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"metadata must be a JSON object, got {type(raw).__name__}")
    _check_keys("metadata", raw, required={"tag", "include"}, optional={"exclude", "prompt"})
    tag = raw["tag"]
    if tag not in TAGS:
        raise ValueError(f"metadata.tag must be one of {', '.join(TAGS)}; got {tag!r}")
    prompt = raw.get("prompt", "")
    if not isinstance(prompt, str):
        raise ValueError(f"metadata.prompt must be a string, got {prompt!r}")
    include_raw = _list_field("metadata.include", raw["include"])
    if not include_raw:
        raise ValueError("metadata.include must list at least one clause")
    include = tuple(_parse_include(i, clause) for i, clause in enumerate(include_raw))
    exclude = tuple(
        _parse_exclude(i, clause) for i, clause in enumerate(_list_field("metadata.exclude", raw.get("exclude", [])))
    )
    return PromptSpec(tag, include, exclude, prompt)


def _parse_include(index: int, raw: Any) -> IncludeClause:
    where = f"metadata.include[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {raw!r}")
    _check_keys(where, raw, required={"class", "count"}, optional={"color", "position"})
    class_name, count = _class_and_count(where, raw)
    color = raw.get("color")
    if color is not None and color not in COLORS:
        raise ValueError(f"{where}.color must be one of {', '.join(COLORS)}; got {color!r}")
    relation = target = None
    if "position" in raw:
        position = raw["position"]
        if not isinstance(position, (list, tuple)) or len(position) != 2:
            raise ValueError(f"{where}.position must be [relation, index of an earlier include], got {position!r}")
        relation, target = position
        if relation not in RELATIONS:
            raise ValueError(f"{where}.position relation must be one of {', '.join(RELATIONS)}; got {relation!r}")
        if not _is_int(target) or not 0 <= target < index:
            raise ValueError(
                f"{where}.position index must point to an earlier include clause (0 to {index - 1}), got {target!r}"
            )
    return IncludeClause(class_name, count, color, relation, target)


def _parse_exclude(index: int, raw: Any) -> ExcludeClause:
    where = f"metadata.exclude[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {raw!r}")
    _check_keys(where, raw, required={"class", "count"}, optional=set())
    return ExcludeClause(*_class_and_count(where, raw))


def _check_keys(where: str, raw: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
    if missing := sorted(required - raw.keys()):
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    if unknown := sorted(raw.keys() - required - optional):
        raise ValueError(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}")


def _list_field(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list, got {value!r}")
    return value


def _class_and_count(where: str, raw: Mapping[str, Any]) -> tuple[str, int]:
    class_name, count = raw["class"], raw["count"]
    if not isinstance(class_name, str) or not class_name:
        raise ValueError(f"{where}.class must be a non-empty string, got {class_name!r}")
    if not _is_int(count) or count < 1:
        raise ValueError(f"{where}.count must be an integer of at least 1, got {count!r}")
    return class_name, count


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- rules ----------------------------------------------------------------------------------------------------------


def relative_position(box_a: Box, box_b: Box) -> frozenset[str]:
    """Where box a stands relative to box b: a subset of RELATIONS (two for a diagonal, none when the centres are
    closer than the margin on both axes).

    Each axis of the centre offset is shrunk towards zero by POSITION_MARGIN times the two boxes' summed size on
    that axis, so heavily overlapping boxes relate to nothing; the shrunk offset is then divided by the unshrunk
    offset's length, so a relation needs the shrunk offset to point within about 60 degrees of its axis. In float32,
    as the official scorer computes it on mmdetection's float32 boxes: near a boundary float64 can decide otherwise.
    """
    f32 = np.float32
    boxes = np.array([box_a, box_b], dtype=f32).reshape(2, 2, 2)  # [box][corner][x, y]
    centre_a, centre_b = (boxes[:, 0] + boxes[:, 1]) / f32(2)
    size_a, size_b = np.abs(boxes[:, 1] - boxes[:, 0])
    offset = centre_a - centre_b
    shrunk = np.maximum(np.abs(offset) - f32(POSITION_MARGIN) * (size_a + size_b), f32(0)) * np.sign(offset)
    if bool(np.all(np.abs(shrunk) < f32(NO_RELATION_EPS))):
        return frozenset()
    dx, dy = shrunk / np.sqrt(np.dot(offset, offset))  # float32 throughout
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return frozenset(relations)


def filter_detections(detections: Iterable[Detection], tag: str) -> dict[str, list[Detection]]:
    """The detections the rules look at, per class, exactly as the official scorer picks them: score strictly
    above the threshold (the stricter counting one for every class of a counting prompt), compared in float32 as it
    compares mmdetection's float32 scores; highest score first in the order of `np.argsort(scores)[::-1]`, so that
    among tied scores the LAST detection comes first; at most MAX_OBJECTS_PER_CLASS. No NMS: overlapping duplicates
    all count, as in the official scorer. (A stable ascending sort reversed is what numpy's argsort does on the
    short arrays of one image's detections of a class; stated here so the order does not depend on the CPU.)"""
    threshold = np.float32(COUNTING_SCORE_THRESHOLD if tag == COUNTING_TAG else SCORE_THRESHOLD)
    by_class: dict[str, list[Detection]] = {}
    for detection in detections:
        by_class.setdefault(detection.label, []).append(detection)
    kept: dict[str, list[Detection]] = {}
    for label, candidates in by_class.items():
        scores = np.array([d.score for d in candidates], dtype=np.float32)
        order = np.argsort(scores, kind="stable")[::-1]
        order = order[scores[order] > threshold][:MAX_OBJECTS_PER_CLASS]
        if order.size:
            kept[label] = [candidates[i] for i in order]
    return kept


def evaluate(
    image: np.ndarray,
    detections: Iterable[Detection],
    metadata: PromptSpec | Mapping[str, Any],
    classify_colors: ColorClassifier | None = None,
) -> Judgement:
    """Judge one image. `image` is only handed to `classify_colors`, which is called once per colour clause whose
    count is met, on that clause's examined objects only (its class's top `count`); it may be None for prompts
    without colour clauses. Every failed check is reported, not just the first."""
    spec = metadata if isinstance(metadata, PromptSpec) else parse_metadata(metadata)
    kept = filter_detections(detections, spec.tag)
    failures: list[str] = []
    matched: list[list[Detection] | None] = []  # per include clause: its examined objects if it passed
    for clause in spec.include:
        failure = _check_include(image, kept.get(clause.class_name, []), clause, matched, classify_colors)
        matched.append(None if failure else kept[clause.class_name][: clause.count])
        if failure:
            failures.append(failure)
    for exclusion in spec.exclude:
        found = len(kept.get(exclusion.class_name, []))
        if found >= exclusion.count:
            failures.append(f"expected {exclusion.class_name}<{exclusion.count}, found {found}")
    return Judgement(tuple(failures))


def _check_include(
    image: np.ndarray,
    kept: list[Detection],
    clause: IncludeClause,
    matched: list[list[Detection] | None],
    classify_colors: ColorClassifier | None,
) -> str | None:
    """The failure of one include clause, or None if it passes. Colour is checked before position, and a clause
    that fails on colour is not checked for position (one failure per clause, as in the official scorer)."""
    name = clause.class_name
    if len(kept) < clause.count:
        return f"expected {name}>={clause.count}, found {len(kept)}"
    examined = kept[: clause.count]
    if clause.color is not None:
        if classify_colors is None:
            raise ValueError(f"the prompt asks for a {clause.color} {name} but no colour classifier was given")
        colors = list(classify_colors(image, examined, name))
        if len(colors) != len(examined) or not set(colors) <= set(COLORS):
            raise ValueError(f"the colour classifier must return one of {COLORS} per object, got {colors!r}")
        hits = colors.count(clause.color)
        if hits < clause.count:
            found = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
            return f"expected {clause.color} {name}>={clause.count}, found {hits} {clause.color}; and {found}"
    if clause.relation is not None:
        assert clause.target is not None  # parse_metadata guarantees an earlier clause
        targets = matched[clause.target]
        if targets is None:
            return f"no target for {name} to be {clause.relation}"
        for obj in examined:
            for target in targets:
                relations = relative_position(obj.box, target.box)
                if clause.relation not in relations:
                    found = " and ".join(r for r in RELATIONS if r in relations) or "no relation to"
                    return f"expected {name} {clause.relation} target, found {found} target"
    return None


# --- summary --------------------------------------------------------------------------------------------------------


def summarize(records: Iterable[tuple[str, Hashable, bool]]) -> Summary:
    """Summarize (tag, prompt id, correct) per image as the official tool does. The GenEval score (`overall`)
    weighs the tags equally however many images each has. The official tool identifies a prompt by its whole
    metadata line; pass an id that does the same (e.g. the line's index)."""
    tag_counts: dict[str, tuple[int, int]] = {}
    prompt_tags: dict[Hashable, str] = {}
    prompt_correct: dict[Hashable, bool] = {}
    for tag, prompt_id, correct in records:
        if prompt_tags.setdefault(prompt_id, tag) != tag:
            raise ValueError(f"prompt {prompt_id!r} has two tags: {prompt_tags[prompt_id]!r} and {tag!r}")
        prompt_correct[prompt_id] = prompt_correct.get(prompt_id, False) or bool(correct)
        good, total = tag_counts.get(tag, (0, 0))
        tag_counts[tag] = (good + bool(correct), total + 1)
    if not tag_counts:
        raise ValueError("cannot summarize no images")
    per_tag = {tag: good / total for tag, (good, total) in tag_counts.items()}
    images = sum(total for _, total in tag_counts.values())
    return Summary(
        per_tag=per_tag,
        tag_counts=tag_counts,
        overall=sum(per_tag.values()) / len(per_tag),
        images=images,
        prompts=len(prompt_correct),
        correct_images=sum(good for good, _ in tag_counts.values()) / images,
        correct_prompts=sum(prompt_correct.values()) / len(prompt_correct),
    )
