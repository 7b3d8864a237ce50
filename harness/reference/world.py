"""The reference world: 64x64 scenes of 1-4 flat-coloured shapes on grey, described in GenEval's prompt grammar.

Worlds are kept friendly on purpose (few shapes, 6 well-separated colours, large shapes with gaps between them):
a second CPU training trial learned such a world best, and it lets the judge in `judge.py` be exact on clean renders.
A cross was dropped: its arms (a third of an 18 px side) span about 1.5 latent pixels, and malformed crosses were
most of the first committed model's failures (22 of 36 on single_object, 20 of 26 on colors).
shapes-v1 (circle, square, triangle) has 240 prompts and no held-out ones: its benchmark repeats the prompts
training drew. shapes-v2 adds the diamond, enough for each task but single_object to keep a quarter of its
combinations for the benchmark and an eighth for validation, never drawn in training (`World`). shapes-v3 is
shapes-v2's grammar split with mirrored layouts held out together (`World.mirrors_together`).
Metadata dicts are byte-for-byte in the format of GenEval's `evaluation_metadata.jsonl`, so GenEval's scoring rules
apply unchanged with the world's shape names as classes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.geneval_rules import POSITION_MARGIN as POSITION_SHRINK

IMAGE_SIZE = 64
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds"}
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
    elif shape == "diamond":  # a square on its corner; the 1 / (2 x side) widens odd sides' tips to 3 pixels, as
        # even sides' are 2: a 1-pixel tip erodes in one blur and the box shrinks under it
        mask = np.abs(u) / width + np.abs(v) / height <= 0.5 + 0.5 / max(height, width)
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


INVERSE_RELATIONS: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SPLITS: tuple[str, ...] = ("train", "validation", "test")
# Of each held-out task's combinations: a quarter (rounded up) are test, an eighth (at least one) validation
TEST_SHARE, VALIDATION_SHARE = 4, 8

PromptArgs = tuple[Any, ...]  # the `make_metadata` arguments after the tag


@dataclass(frozen=True)
class World:
    """A world's grammar, GenEval's over `shapes` and the palette's colours, and how its prompts split.

    Without `held_out`, every prompt is in every split (the first committed worlds). With it, each task's
    combinations (single_object's excepted: there are too few) are split by `split_seed` into train (the only
    captions training draws), validation (the periodic evaluation during training) and test (the benchmark). A
    combination is a prompt together with every prompt that describes the same scenes, so none of them leaks across
    splits: "a circle and a square" goes with "a square and a circle", "a circle left of a square" with "a square
    right of a circle", "a red circle and a blue square" with "a blue square and a red circle".

    With `mirrors_together`, a position or color_attr combination also takes its mirror along: a pair of shapes on
    one axis in both orders ("a circle left of a square" with "a square left of a circle"), a pair of shapes with a
    pair of colours in both bindings ("a red circle and a blue square" with "a blue circle and a red square").
    Split by scene alone (shapes-v2), training showed the mirror of most held-out layouts, and a model trained
    on it drew the memorised mirror: 0.115 on held-out position against 0.46 on training prompts.
    """

    name: str
    shapes: tuple[str, ...]
    held_out: bool
    split_seed: int = 0
    mirrors_together: bool = False

    def prompt_args(self, tag: str, split: str | None = None) -> tuple[PromptArgs, ...]:
        """The `make_metadata` arguments of every distinct prompt of a tag (of one split when given), in a fixed
        order."""
        if split is None:
            return _all_prompt_args(self.shapes, tag)
        return _split_prompt_args(self, tag, split)

    def held_out_tags(self) -> tuple[str, ...]:
        """The tags whose combinations are split (none without `held_out`)."""
        return tuple(t for t in TAGS if t != "single_object") if self.held_out else ()

    def random_metadata(self, rng: random.Random, tag: str, split: str = "train") -> dict[str, Any]:
        """A uniformly random prompt of the tag, from the split."""
        return make_metadata(tag, *rng.choice(self.prompt_args(tag, split)))

    def split_metadata(self, split: str, seed: int = 0) -> list[dict[str, Any]]:
        """553 prompts of the split with GenEval's tag counts and order of tags.

        Where a tag has fewer distinct prompts than GenEval asks for, every prompt is repeated the same number of
        times and a seeded selection of them once more (the only duplicates); where it has more, a seeded selection
        of distinct ones. The shapes-v1 benchmark: single_object 3 prompts (80 = 26 x 3 + 2), two_object 6
        (99 = 16 x 6 + 3), counting 9, colors 18, position 24, color_attr 100 of 180.
        """
        rng = random.Random(seed)
        out: list[dict[str, Any]] = []
        for tag, total in BENCHMARK_TAG_COUNTS.items():
            pool = list(self.prompt_args(tag, split))
            rng.shuffle(pool)
            repeats, rest = divmod(total, len(pool))
            out += [make_metadata(tag, *args) for args in pool * repeats + pool[:rest]]
        return out

    def benchmark_metadata(self, seed: int = 0) -> list[dict[str, Any]]:
        """The world's fixed GenEval prompt set: the test split's 553 lines (`split_metadata`)."""
        return self.split_metadata("test", seed)

    def sample_training_pair(self, rng: random.Random,
                             weights: dict[str, float] | None = None) -> tuple[dict[str, Any], Scene]:
        """A random (metadata, scene) pair: a task drawn by `weights` (uniform over TAGS when None), a uniformly
        random training prompt of it, and a scene satisfying it. The caption is `metadata["prompt"]`."""
        tags = list(weights) if weights else list(TAGS)
        tag = rng.choices(tags, weights=[weights[t] for t in tags] if weights else None)[0]
        metadata = self.random_metadata(rng, tag)
        return metadata, scene_for(metadata, rng)


@cache
def _all_prompt_args(shapes: tuple[str, ...], tag: str) -> tuple[PromptArgs, ...]:
    """Every distinct prompt of a tag over `shapes`. Two-class tasks use distinct classes (and color_attr distinct
    colours), as every official line does."""
    pairs = [(a, b) for a in shapes for b in shapes if a != b]
    args: dict[str, list[PromptArgs]] = {
        "single_object": [((s,),) for s in shapes],
        "two_object": [(p,) for p in pairs],
        "counting": [((s,), (), n) for s in shapes for n in COUNT_WORDS],
        "colors": [((s,), (c,)) for s in shapes for c in COLORS],
        "position": [(p, (), 1, r) for p in pairs for r in RELATIONS],
        "color_attr": [(p, (c, d)) for p in pairs for c in COLORS for d in COLORS if c != d],
    }
    if tag not in args:
        raise ValueError(f"unknown tag {tag!r}")
    return tuple(args[tag])


def _same_scenes(tag: str, args: PromptArgs) -> PromptArgs:
    """The prompt that describes the same scenes with its two objects named the other way round (itself for
    single-object tasks)."""
    if tag == "two_object":
        return ((args[0][1], args[0][0]),)
    if tag == "position":
        return ((args[0][1], args[0][0]), (), 1, INVERSE_RELATIONS[args[3]])
    if tag == "color_attr":
        return ((args[0][1], args[0][0]), (args[1][1], args[1][0]))
    return args


def _mirror(tag: str, args: PromptArgs) -> PromptArgs:
    """The prompt of the mirrored layout (`World.mirrors_together`): the same relation with the shapes swapped,
    the same colours with the bindings swapped (itself for the other tasks)."""
    if tag == "position":
        return ((args[0][1], args[0][0]), *args[1:])
    if tag == "color_attr":
        return (args[0], (args[1][1], args[1][0]))
    return args


def _combination(world: World, tag: str, args: PromptArgs) -> frozenset[PromptArgs]:
    """The prompts that go to one split with `args`: its same-scene twin, and with `mirrors_together` the mirror
    and the mirror's twin."""
    together = {args, _same_scenes(tag, args)}
    if world.mirrors_together:
        together |= {_mirror(tag, a) for a in together}
        together |= {_same_scenes(tag, a) for a in together}
    return frozenset(together)


def _leaves(value: Any) -> set[Any]:
    return set().union(*map(_leaves, value)) if isinstance(value, tuple) else {value}


def _slots(args: PromptArgs) -> tuple[Any, ...]:
    """The prompt's factor values in argument order: shapes, then colours, then the count and the relation."""
    return tuple(v for a in args for v in (a if isinstance(a, tuple) else (a,)))


def _kind(value: Any) -> str:
    if isinstance(value, int):
        return "count"
    return "colour" if value in PALETTE else "relation" if value in RELATIONS else "shape"


def _every_value_meets_two(train: list[PromptArgs], every: tuple[PromptArgs, ...]) -> bool:
    """Each value of each varying factor (argument slot) occurs in `train` with at least two values of each other
    varying factor of another kind: every shape with two counts, two colours and two relations, every colour,
    count and relation with two shapes. Slots of one kind (the two shapes of a pair) are exempt: four shapes
    cannot each meet two others in the three pairs that training keeps."""
    columns = list(zip(*map(_slots, every), strict=True))
    varying = [i for i, column in enumerate(columns) if len(set(column)) > 1]
    rows = [_slots(a) for a in train]
    for i in varying:
        for j in varying:
            if _kind(columns[i][0]) == _kind(columns[j][0]):
                continue
            met: dict[Any, set[Any]] = {}
            for row in rows:
                met.setdefault(row[i], set()).add(row[j])
            if any(len(values) < 2 for values in met.values()):
                return False
    return True


@cache
def _split_of(world: World, tag: str) -> dict[PromptArgs, str]:
    """Each prompt's split. Combinations are shuffled by the world's seed until the train split still holds every
    shape, colour, count and relation the task has (so a held-out combination is new, never a new word)."""
    every = _all_prompt_args(world.shapes, tag)
    if tag not in world.held_out_tags():
        return {}
    combinations = list(dict.fromkeys(_combination(world, tag, a) for a in every))
    n_test = -(-len(combinations) // TEST_SHARE)
    n_validation = max(1, len(combinations) // VALIDATION_SHARE)
    words = _leaves(every)
    rng = random.Random(f"{world.split_seed}:{tag}")
    for _ in range(1000):
        rng.shuffle(combinations)
        train = combinations[n_test + n_validation:]
        trained = [a for c in train for a in c]
        if _leaves(tuple(trained)) == words and _every_value_meets_two(trained, every):
            break
    else:  # pragma: no cover - a grammar this small always has such a split
        raise ValueError(f"no split of {tag} keeps every word, each with two of every other factor, in training")
    splits = ["test"] * n_test + ["validation"] * n_validation + ["train"] * len(train)
    return {args: split for combination, split in zip(combinations, splits, strict=True) for args in combination}


@cache
def _split_prompt_args(world: World, tag: str, split: str) -> tuple[PromptArgs, ...]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (the splits: {', '.join(SPLITS)})")
    every = _all_prompt_args(world.shapes, tag)
    splits = _split_of(world, tag)
    return tuple(a for a in every if splits.get(a, split) == split)


SHAPES_V1 = World("shapes-v1", ("circle", "square", "triangle"), held_out=False)
SHAPES_V2 = World("shapes-v2", ("circle", "square", "triangle", "diamond"), held_out=True)
SHAPES_V3 = World("shapes-v3", SHAPES_V2.shapes, held_out=True, mirrors_together=True)
WORLDS: dict[str, World] = {w.name: w for w in (SHAPES_V1, SHAPES_V2, SHAPES_V3)}
TRAINING_WORLD = SHAPES_V3  # what `harness reference train` trains on by default
WORLD_FILE = "world.json"  # in a trained model's folder: the name of the world it was trained on


def world_named(name: str) -> World:
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r} (the worlds: {', '.join(WORLDS)})")
    return WORLDS[name]


def trained_world(folder: Path) -> World:
    """The world the model in `folder` was trained on: its WORLD_FILE, or shapes-v1 for a model saved before
    models recorded it."""
    path = Path(folder) / WORLD_FILE
    if not path.is_file():
        return SHAPES_V1
    fix = f'write {{"world": NAME}} there with one of {", ".join(WORLDS)}, or name one with --set geneval-shapes.world'
    try:
        name = json.loads(path.read_text())["world"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} does not name the model's world ({exc.__class__.__name__}: {exc}): {fix}") from None
    if name not in WORLDS:
        raise UsageError(f"{path} names the world {name!r}, which does not exist: {fix}")
    return WORLDS[name]


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
