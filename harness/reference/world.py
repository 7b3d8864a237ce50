"""The reference world: 64x64 scenes of 1-4 flat-coloured shapes on grey, described in GenEval's prompt grammar.

The world is kept friendly on purpose (3 shapes, 6 well-separated colours, large shapes with gaps between them):
a second CPU training trial learned it best, and it lets the judge in `judge.py` be exact on clean renders. A fourth
shape, the cross, was dropped: its arms (a third of an 18 px side) span about 1.5 latent pixels, and malformed crosses
were most of the first committed model's failures (22 of 36 on single_object, 20 of 26 on colors).
Metadata dicts are byte-for-byte in the format of GenEval's `evaluation_metadata.jsonl`, so GenEval's scoring rules
apply unchanged with the world's shape names as classes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from harness.geneval_rules import POSITION_MARGIN as POSITION_SHRINK

IMAGE_SIZE = 64
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles"}
# GenEval colour names; values are inset from the RGB cube's corners so an autoencoder need not saturate to reach them.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (30, 180, 40),
    "blue": (30, 60, 230),
    "yellow": (240, 220, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (128, 128, 128)  # mid grey: no palette colour, far from white and from black
# Shape side in pixels (inclusive range) by the number of objects in the scene: big when there is room,
# small enough for four to fit with gaps.
SIZE_RANGE: dict[int, tuple[int, int]] = {1: (20, 30), 2: (20, 28), 3: (20, 24), 4: (20, 24)}
MIN_GAP = 4  # pixels between any two objects' boxes, so shapes never touch even after an autoencoder's blur
BORDER = 2  # pixels between an object and the image edge
# Sampled position scenes hold the asked relation (GenEval's rule, see `relation_offsets`) with this much to spare on
# the asked axis, and stay this far inside "no relation" on the other, so a scene shows exactly one relation.
RELATION_SLACK = 0.15
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
BENCHMARK_TAG_COUNTS: dict[str, int] = {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94,
                                        "position": 100, "color_attr": 100}  # GenEval's 553 prompts
COUNT_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four"}  # GenEval counts 2 to 4

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive


@dataclass(frozen=True)
class SceneObject:
    """One shape: its class, palette colour, top-left pixel and side. Its rendered mask fills its box tightly."""

    shape: str
    color: str
    left: int
    top: int
    size: int

    @property
    def box(self) -> Box:
        return (self.left, self.top, self.left + self.size, self.top + self.size)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.left + self.size / 2, self.top + self.size / 2)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]


@cache
def shape_mask(shape: str, height: int, width: int) -> np.ndarray:
    """The shape drawn in a height x width box, touching all four sides; shared by the renderer and the judge.

    Pixel-centre tests without anti-aliasing, so clean renders hold exact palette colours. Read-only (cached).
    """
    y, x = np.mgrid[0:height, 0:width]
    u, v = x + 0.5 - width / 2, y + 0.5 - height / 2  # offsets of pixel centres from the box centre
    if shape == "circle":
        mask = (u / width) ** 2 + (v / height) ** 2 <= 0.25
    elif shape == "square":
        mask = np.ones((height, width), bool)
    elif shape == "triangle":  # apex up; (y + 1) keeps the apex row non-empty for even widths
        mask = np.abs(u) <= (y + 1) * width / (2 * height)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask.flags.writeable = False
    return mask


def relation_offsets(box_a: Box, box_b: Box) -> tuple[float, float] | None:
    """GenEval's relative position of box a to box b (as `harness.geneval_rules.relative_position` computes it):
    the centre offset with each axis shrunk towards 0 by 0.1 x (dim_a + dim_b), divided by the unshrunk offset's
    norm; "left of" is dx < -0.5, "below" dy > 0.5, etc. None when no relation holds at all."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box_a, box_b
    offset = np.array([(ax0 + ax1 - bx0 - bx1) / 2, (ay0 + ay1 - by0 - by1) / 2])
    dims = np.array([ax1 - ax0 + bx1 - bx0, ay1 - ay0 + by1 - by0])
    shrunk = np.maximum(np.abs(offset) - POSITION_SHRINK * dims, 0) * np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return None
    dx, dy = shrunk / np.linalg.norm(offset)
    return float(dx), float(dy)


def _a(word: str) -> str:
    """GenEval's indefinite article ("a bench", "an apple")."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _phrase(shape: str, color: str | None = None) -> str:
    return _a(f"{color} {shape}" if color else shape)


def make_metadata(tag: str, shapes: tuple[str, ...], colors: tuple[str, ...] = (), count: int = 1,
                  relation: str | None = None) -> dict[str, Any]:
    """One GenEval metadata dict (keys and order as in `evaluation_metadata.jsonl`).

    shapes: one class (single_object, counting, colors) or two (two_object, position: (reference, subject),
    color_attr); colors: one per class for colors / color_attr; count: counting's n; relation: position's.
    """
    if tag == "single_object":
        include, prompt = [{"class": shapes[0], "count": 1}], _phrase(shapes[0])
    elif tag == "two_object":
        include = [{"class": s, "count": 1} for s in shapes]
        prompt = f"{_phrase(shapes[0])} and {_phrase(shapes[1])}"
    elif tag == "counting":
        return {"tag": tag, "include": [{"class": shapes[0], "count": count}],
                "exclude": [{"class": shapes[0], "count": count + 1}],
                "prompt": f"a photo of {COUNT_WORDS[count]} {PLURALS[shapes[0]]}"}
    elif tag == "colors":
        include = [{"class": shapes[0], "count": 1, "color": colors[0]}]
        prompt = _phrase(shapes[0], colors[0])
    elif tag == "position":
        reference, subject = shapes
        include = [{"class": reference, "count": 1}, {"class": subject, "count": 1, "position": [relation, 0]}]
        prompt = f"{_phrase(subject)} {relation} {_phrase(reference)}"
    elif tag == "color_attr":
        include = [{"class": s, "count": 1, "color": c} for s, c in zip(shapes, colors, strict=True)]
        prompt = f"{_phrase(shapes[0], colors[0])} and {_phrase(shapes[1], colors[1])}"
    else:
        raise ValueError(f"unknown tag {tag!r}")
    return {"tag": tag, "include": include, "prompt": f"a photo of {prompt}"}


@cache
def _prompt_args(tag: str) -> tuple[tuple[Any, ...], ...]:
    """The `make_metadata` arguments of every distinct prompt of a tag in this world, in a fixed order.
    Two-class tasks use distinct classes (and color_attr distinct colours), as every official line does."""
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    args: dict[str, list[tuple[Any, ...]]] = {
        "single_object": [((s,),) for s in SHAPES],
        "two_object": [(p,) for p in pairs],
        "counting": [((s,), (), n) for s in SHAPES for n in COUNT_WORDS],
        "colors": [((s,), (c,)) for s in SHAPES for c in COLORS],
        "position": [(p, (), 1, r) for p in pairs for r in RELATIONS],
        "color_attr": [(p, (c, d)) for p in pairs for c in COLORS for d in COLORS if c != d],
    }
    if tag not in args:
        raise ValueError(f"unknown tag {tag!r}")
    return tuple(args[tag])


def random_metadata(rng: random.Random, tag: str) -> dict[str, Any]:
    """A uniformly random prompt of the tag."""
    return make_metadata(tag, *rng.choice(_prompt_args(tag)))


def benchmark_metadata(seed: int = 0) -> list[dict[str, Any]]:
    """The world's fixed GenEval prompt set: 553 prompts with GenEval's tag counts and order of tags.

    Where a tag has fewer distinct prompts than GenEval asks for, every prompt is repeated the same number of times
    and a seeded selection of them once more (the only duplicates): single_object has 3 prompts (80 = 26 x 3 + 2),
    two_object 6 (99 = 16 x 6 + 3), counting 9 (80 = 8 x 9 + 8), colors 18 (94 = 5 x 18 + 4), position 24
    (100 = 4 x 24 + 4). color_attr has 180 and takes 100 distinct ones.
    """
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for tag, total in BENCHMARK_TAG_COUNTS.items():
        pool = list(_prompt_args(tag))
        rng.shuffle(pool)
        repeats, rest = divmod(total, len(pool))
        out += [make_metadata(tag, *args) for args in pool * repeats + pool[:rest]]
    return out


def _place(rng: random.Random, shapes_colors: list[tuple[str, str]], relation: str | None) -> Scene | None:
    """One attempt at non-overlapping positions (and, for position prompts, the relation of object 1 to object 0)."""
    low, high = SIZE_RANGE[len(shapes_colors)]
    placed: list[SceneObject] = []
    for shape, color in shapes_colors:
        size = rng.randint(low, high)
        for _ in range(50):
            left = rng.randint(BORDER, IMAGE_SIZE - BORDER - size)
            top = rng.randint(BORDER, IMAGE_SIZE - BORDER - size)
            if all(left + size + MIN_GAP <= o.left or o.left + o.size + MIN_GAP <= left
                   or top + size + MIN_GAP <= o.top or o.top + o.size + MIN_GAP <= top for o in placed):
                placed.append(SceneObject(shape, color, left, top, size))
                break
        else:
            return None
    if relation is not None and not _shows_only(relation, placed[1].box, placed[0].box):
        return None
    return Scene(tuple(placed))


def _shows_only(relation: str, box_a: Box, box_b: Box) -> bool:
    """Box a stands in `relation` to box b with RELATION_SLACK to spare, and clearly in no other relation."""
    offsets = relation_offsets(box_a, box_b)
    if offsets is None:
        return False
    dx, dy = offsets
    along, across = (dx, dy) if relation in ("left of", "right of") else (dy, dx)
    sign = -1 if relation in ("left of", "above") else 1
    return sign * along > 0.5 + RELATION_SLACK and abs(across) < 0.5 - RELATION_SLACK


def scene_for(metadata: dict[str, Any], rng: random.Random) -> Scene:
    """A random scene that satisfies the metadata under GenEval's rules: exactly the objects the include clauses
    name (colours drawn at random where none is asked), nothing else, so exclude clauses hold too."""
    shapes_colors = [(clause["class"], clause.get("color") or rng.choice(COLORS))
                     for clause in metadata["include"] for _ in range(clause["count"])]
    relation = None
    if metadata["tag"] == "position":
        relation, index = metadata["include"][1]["position"]
        if index != 0 or len(shapes_colors) != 2:
            raise ValueError("position prompts relate include 1 to include 0, one object each")
    while True:
        scene = _place(rng, shapes_colors, relation)
        if scene is not None:
            return scene


def sample_training_pair(rng: random.Random, weights: dict[str, float] | None = None) -> tuple[dict[str, Any], Scene]:
    """A random (metadata, scene) pair: a task drawn by `weights` (uniform over TAGS when None), a uniformly random
    prompt of it, and a scene satisfying it. The caption is `metadata["prompt"]`."""
    tags = list(weights) if weights else list(TAGS)
    tag = rng.choices(tags, weights=[weights[t] for t in tags] if weights else None)[0]
    metadata = random_metadata(rng, tag)
    return metadata, scene_for(metadata, rng)
