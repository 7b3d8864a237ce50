"""The reference world: GenEval-format metadata, scenes that satisfy it, and a judge that recovers them exactly."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import REPO, shared_data, write_metadata_jsonl

from harness import geneval_rules as rules
from harness.reference import world
from harness.reference.judge import classify_colors, detect
from harness.reference.render import render

OFFICIAL = "geneval/evaluation_metadata.jsonl"
A = r"an? "
GRAMMAR = {  # GenEval's prompt templates, checked against the official file below
    "single_object": rf"a photo of {A}(?P<c0>.+)",
    "two_object": rf"a photo of {A}(?P<c0>.+) and {A}(?P<c1>.+)",
    "counting": r"a photo of (?P<n>two|three|four) (?P<plural>.+)",
    "colors": rf"a photo of {A}(?P<col0>\w+) (?P<c0>.+)",
    "position": rf"a photo of {A}(?P<c1>.+) (?P<rel>left of|right of|above|below) {A}(?P<c0>.+)",
    "color_attr": rf"a photo of {A}(?P<col0>\w+) (?P<c0>.+) and {A}(?P<col1>\w+) (?P<c1>.+)",
}
PER_TASK = 200  # judged scenes per task


def signature(meta: dict) -> tuple:
    """Keys (in order) and value types of a metadata line, values left out."""
    def clauses(key: str) -> tuple:
        return tuple((tuple(c), tuple(type(v).__name__ for v in c.values())) for c in meta.get(key, []))
    return tuple(meta), clauses("include"), clauses("exclude"), type(meta["prompt"]).__name__


def check_grammar(meta: dict, plurals: dict[str, str] | None) -> None:
    """The prompt reads back, by GenEval's template for its tag, to exactly the metadata's classes and colours."""
    m = re.fullmatch(GRAMMAR[meta["tag"]], meta["prompt"])
    assert m, meta
    include, groups = meta["include"], m.groupdict()
    for i, clause in enumerate(include):
        if f"c{i}" in groups:
            assert groups[f"c{i}"] == clause["class"], meta
        if f"col{i}" in groups:
            assert groups[f"col{i}"] == clause["color"], meta
    if meta["tag"] == "counting":
        assert {"two": 2, "three": 3, "four": 4}[groups["n"]] == include[0]["count"], meta
        assert meta["exclude"] == [{"class": include[0]["class"], "count": include[0]["count"] + 1}]
        if plurals is not None:
            assert groups["plural"] == plurals[include[0]["class"]]
    if meta["tag"] == "position":
        assert include[1]["position"] == [groups["rel"], 0]
    rules.parse_metadata(meta)


WORLDS = pytest.mark.parametrize("shapes_world", list(world.WORLDS.values()), ids=list(world.WORLDS))


def all_tags_metadata(shapes_world: world.World, n: int = 60) -> list[dict]:
    rng = random.Random(0)
    return [shapes_world.random_metadata(rng, tag, split) for tag in world.TAGS for split in world.SPLITS
            for _ in range(n)]


def test_palette_and_classes_are_geneval_names() -> None:
    assert set(world.COLORS) <= set(rules.COLORS)
    assert world.BACKGROUND not in world.PALETTE.values()
    assert set(world.PLURALS) == {s for w in world.WORLDS.values() for s in w.shapes}


@WORLDS
def test_metadata_format_and_grammar_match_the_official_file(shapes_world) -> None:
    official = [json.loads(line) for line in shared_data(OFFICIAL).read_text().splitlines()]
    for meta in official:
        check_grammar(meta, None)  # the templates are GenEval's
    signatures = {(m["tag"], signature(m)) for m in official}
    for meta in all_tags_metadata(shapes_world) + shapes_world.benchmark_metadata():
        assert (meta["tag"], signature(meta)) in signatures, meta


@WORLDS
def test_metadata_grammar(shapes_world) -> None:
    for meta in all_tags_metadata(shapes_world) + shapes_world.benchmark_metadata():
        check_grammar(meta, world.PLURALS)
        words = meta["prompt"].split()
        for article, word in zip(words, words[1:], strict=False):
            if article in ("a", "an"):
                assert article == ("an" if word[0] in "aeiou" else "a")


# distinct benchmark prompts per task: shapes-v1 has them all (3 shapes, 6 colours, 3 counts, 4 relations);
# shapes-v2's are its test split's, a quarter of each task's combinations (rounded up) and their same-scene twins;
# shapes-v3's position and color_attr combinations also hold their mirrors (4 prompts each)
DISTINCT_BENCHMARK_PROMPTS = {
    "shapes-v1": {"single_object": 3, "two_object": 6, "counting": 9, "colors": 18, "position": 24,
                  "color_attr": 100},
    "shapes-v2": {"single_object": 4, "two_object": 2 * 2, "counting": 3, "colors": 6, "position": 6 * 2,
                  "color_attr": 45 * 2},
    "shapes-v3": {"single_object": 4, "two_object": 2 * 2, "counting": 3, "colors": 6, "position": 3 * 4,
                  "color_attr": 23 * 4},
}
HELD_OUT = pytest.mark.parametrize("held_out", [w for w in world.WORLDS.values() if w.held_out],
                                   ids=[n for n, w in world.WORLDS.items() if w.held_out])


@WORLDS
def test_benchmark_prompt_set(shapes_world, tmp_path) -> None:
    bench = shapes_world.benchmark_metadata()
    assert len(bench) == 553
    tags = [m["tag"] for m in bench]
    assert Counter(tags) == world.BENCHMARK_TAG_COUNTS
    assert list(dict.fromkeys(tags)) == list(world.BENCHMARK_TAG_COUNTS)  # grouped, in GenEval's order
    assert shapes_world.benchmark_metadata() == bench and shapes_world.benchmark_metadata(seed=1) != bench
    # Duplicates only where the split has too few prompts, evenly.
    distinct = DISTINCT_BENCHMARK_PROMPTS[shapes_world.name]
    for tag in world.BENCHMARK_TAG_COUNTS:
        counts = Counter(json.dumps(m) for m in bench if m["tag"] == tag)
        assert len(counts) == distinct[tag]
        assert max(counts.values()) - min(counts.values()) <= 1
    path = tmp_path / "metadata.jsonl"
    write_metadata_jsonl(bench, path)
    assert [json.loads(line) for line in path.read_text().splitlines()] == bench


def prompts_of(shapes_world: world.World, tag: str, split: str) -> set[str]:
    return {world.make_metadata(tag, *args)["prompt"] for args in shapes_world.prompt_args(tag, split)}


@HELD_OUT
def test_held_out_splits_are_disjoint_and_the_training_sampler_never_draws_a_benchmark_prompt(held_out) -> None:
    assert held_out.held_out_tags() == tuple(t for t in world.TAGS if t != "single_object")
    benchmark = {m["prompt"] for m in held_out.benchmark_metadata()}
    for tag in world.TAGS:
        train, validation, test = (prompts_of(held_out, tag, split) for split in world.SPLITS)
        everything = {world.make_metadata(tag, *args)["prompt"] for args in held_out.prompt_args(tag)}
        if tag == "single_object":  # four prompts, in every split
            assert train == validation == test == everything
            continue
        assert train | validation | test == everything
        assert not train & validation and not train & test and not validation & test, tag
        assert {m["prompt"] for m in held_out.benchmark_metadata() if m["tag"] == tag} == test
        # every shape, colour, count and relation still occurs in training: a held-out prompt is a new combination
        words = {w for p in everything for w in p.split()}
        assert {w for p in train for w in p.split()} == words, tag
    # the sampler, not only the lists: 20000 training captions, none a held-out benchmark prompt
    rng = random.Random(7)
    drawn = {held_out.sample_training_pair(rng)[0]["prompt"] for _ in range(20000)}
    single = {m["prompt"] for m in held_out.benchmark_metadata() if m["tag"] == "single_object"}
    assert not drawn & (benchmark - single) and single <= drawn
    assert len(drawn) == sum(len(prompts_of(held_out, t, "train")) for t in world.TAGS)


@HELD_OUT
def test_training_shows_every_value_of_a_factor_with_two_values_of_each_other_factor(held_out) -> None:
    """Every word in training is not enough: the first split trained triangles only as "two triangles", with
    "three" and "four triangles" both held out. Each shape is trained with at least two counts, two colours and two
    relations (as subject and as reference), and each count, colour and relation with at least two shapes."""
    pairings: dict[tuple[str, str], dict[str, set]] = {}

    def meet(kind_a: str, a, kind_b: str, b) -> None:
        pairings.setdefault((kind_a, kind_b), {}).setdefault(a, set()).add(b)
        pairings.setdefault((kind_b, kind_a), {}).setdefault(b, set()).add(a)

    for tag in held_out.held_out_tags():
        for args in held_out.prompt_args(tag, "train"):
            meta = world.make_metadata(tag, *args)
            for i, clause in enumerate(meta["include"]):
                shape = clause["class"]
                if tag == "counting":
                    meet(f"{tag} shape", shape, "count", clause["count"])
                if "color" in clause:
                    meet(f"{tag} shape {i}", shape, f"{tag} colour {i}", clause["color"])
                if tag == "position":
                    meet(f"position shape {i}", shape, "relation", meta["include"][1]["position"][0])
    assert len(pairings) == 12
    for (kind, other), met in pairings.items():
        assert all(len(values) >= 2 for values in met.values()), (kind, other, met)


@HELD_OUT
def test_a_held_out_combination_takes_its_same_scene_twins_along(held_out) -> None:
    """'a circle left of a square' is 'a square right of a circle': both sit in one split, so training never shows
    a benchmark scene under its other caption."""
    for tag, split in [(t, s) for t in held_out.held_out_tags() for s in world.SPLITS]:
        for args in held_out.prompt_args(tag, split):
            meta = world.make_metadata(tag, *args)
            if tag == "two_object":
                twin = world.make_metadata(tag, args[0][::-1])
            elif tag == "position":
                twin = world.make_metadata(tag, args[0][::-1], (), 1, world.INVERSE_RELATIONS[args[3]])
            elif tag == "color_attr":
                twin = world.make_metadata(tag, args[0][::-1], args[1][::-1])
            else:
                continue
            assert twin["prompt"] in prompts_of(held_out, tag, split), (meta["prompt"], split)


@HELD_OUT
def test_splits_are_fixed_by_the_seed_and_sized_by_share(held_out) -> None:
    # combinations per task: 6 shape pairs, 12 shape-count pairs, 24 shape-colour pairs, 24 relation pairs, 180
    # colour-shape pairs of pairs; with mirrors together, 12 (shape pair, axis) and 90 (shape pair, colour pair);
    # a quarter (rounded up) test, an eighth (at least one) validation
    combinations = {"two_object": (6, 2), "counting": (12, 1), "colors": (24, 1), "position": (24, 2),
                    "color_attr": (180, 2)}  # (count, prompts each)
    if held_out.mirrors_together:
        combinations |= {"position": (12, 4), "color_attr": (90, 4)}
    for tag, (count, per) in combinations.items():
        sizes = [len(held_out.prompt_args(tag, split)) // per for split in world.SPLITS]
        assert sizes == [count - -(-count // 4) - max(1, count // 8), max(1, count // 8), -(-count // 4)], tag
    code = (f"from harness.reference.world import world_named; w = world_named({held_out.name!r}); "
            "print(w.prompt_args('color_attr', 'test')[:3], w.prompt_args('counting', 'test'))")
    runs = {subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True,
                           text=True).stdout for _ in range(2)}
    assert len(runs) == 1  # the same split in every process (no hash randomisation)
    reseeded = dataclasses.replace(held_out, name="reseeded", split_seed=1)
    assert reseeded.prompt_args("color_attr", "test") != held_out.prompt_args("color_attr", "test")


def mirror(tag: str, meta: dict) -> str:
    """The prompt of the mirrored layout: the relation's two shapes swapped, or the two colours' bindings."""
    a, b = meta["include"]
    if tag == "position":
        return world.make_metadata(tag, (b["class"], a["class"]), (), 1, b["position"][0])["prompt"]
    return world.make_metadata(tag, (a["class"], b["class"]), (b["color"], a["color"]))["prompt"]


def test_mirrors_of_held_out_layouts_stay_out_of_training_in_shapes_v3() -> None:
    """shapes-v2 trained the mirror of every held-out position prompt ('a square left of a circle' for the
    benchmark's 'a circle left of a square'), and its model drew the mirror; shapes-v3 holds mirrors out together."""
    for tag in ("position", "color_attr"):
        for held_out, mirrored_in_training in [(world.SHAPES_V2, True), (world.SHAPES_V3, False)]:
            train = prompts_of(held_out, tag, "train")
            for split in ("validation", "test"):
                held = [world.make_metadata(tag, *args) for args in held_out.prompt_args(tag, split)]
                share = sum(mirror(tag, meta) in train for meta in held) / len(held)
                if mirrored_in_training:
                    assert share > 0.5, (tag, split, share)
                else:
                    assert share == 0, (tag, split)
    assert world.TRAINING_WORLD is world.SHAPES_V3


def test_worlds_are_named_and_a_model_folder_records_its_world(tmp_path) -> None:
    assert world.world_named("shapes-v2") is world.SHAPES_V2
    with pytest.raises(ValueError, match="shapes-v1, shapes-v2, shapes-v3"):
        world.world_named("shapes-v9")
    assert world.trained_world(tmp_path) is world.SHAPES_V1  # saved before models recorded their world
    (tmp_path / world.WORLD_FILE).write_text(json.dumps({"world": "shapes-v2"}))
    assert world.trained_world(tmp_path) is world.SHAPES_V2


@WORLDS
def test_scenes_satisfy_their_metadata(shapes_world) -> None:
    rng = random.Random(1)
    for meta in all_tags_metadata(shapes_world, 40):
        scene = world.scene_for(meta, rng)
        objects = scene.objects
        wanted = Counter((c["class"], c.get("color")) for c in meta["include"] for _ in range(c["count"]))
        assert Counter((o.shape, o.color if (o.shape, o.color) in wanted else None) for o in objects) == wanted
        low, high = world.SIZE_RANGE[len(objects)]
        for i, a in enumerate(objects):
            assert low <= a.size <= high
            assert min(a.box) >= world.BORDER and max(a.box) <= world.IMAGE_SIZE - world.BORDER
            for b in objects[i + 1:]:
                gap = max(b.left - a.left - a.size, a.left - b.left - b.size, b.top - a.top - a.size,
                          a.top - b.top - b.size)
                assert gap >= world.MIN_GAP
        if meta["tag"] == "position":
            assert rules.relative_position(objects[1].box, objects[0].box) == {meta["include"][1]["position"][0]}
        truth = [rules.Detection(o.shape, 1.0, o.box) for o in objects]
        colors = {id(d): o.color for d, o in zip(truth, objects, strict=True)}
        judgement = rules.evaluate(None, truth, meta, lambda _, dets, __, c=colors: [c[id(d)] for d in dets])
        assert judgement.correct, (meta, scene, judgement.reason)


def test_training_pairs_are_deterministic_and_follow_weights() -> None:
    def draw(seed: int) -> list:
        rng = random.Random(seed)
        return [world.SHAPES_V2.sample_training_pair(rng) for _ in range(20)]
    assert draw(3) == draw(3) != draw(4)
    rng = random.Random(0)
    tags = Counter(world.SHAPES_V2.sample_training_pair(rng, {"position": 3, "counting": 1})[0]["tag"]
                   for _ in range(400))
    assert set(tags) == {"position", "counting"} and tags["position"] > 2 * tags["counting"]


def test_render_is_exact_and_deterministic() -> None:
    rng = random.Random(2)
    palette = {tuple(c) for c in world.PALETTE.values()} | {world.BACKGROUND}
    for _ in range(50):
        _, scene = world.SHAPES_V2.sample_training_pair(rng)
        image = render(scene)
        assert image.shape == (world.IMAGE_SIZE, world.IMAGE_SIZE, 3) and image.dtype == np.uint8
        assert {tuple(p) for p in image.reshape(-1, 3)} <= palette
        assert np.array_equal(image, render(scene))
    for shape in world.SHAPES_V2.shapes:  # each shape touches its box on all four sides, so boxes are exact
        for size in range(12, 33):
            mask = world.shape_mask(shape, size, size)
            assert mask.any(0).all() and mask.any(1).all()


def blur_and_noise(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.7, noise: float = 6.0) -> np.ndarray:
    """A stand-in for an autoencoder round trip: separable Gaussian blur, then Gaussian noise (std in 0-255 units)."""
    taps = np.arange(-3, 4)
    kernel = np.exp(-taps**2 / (2 * sigma**2))
    kernel /= kernel.sum()
    size = image.shape[0]
    x = np.pad(image.astype(np.float32), ((3, 3), (3, 3), (0, 0)), mode="edge")
    x = sum(k * x[i:i + size] for i, k in enumerate(kernel))
    x = sum(k * x[:, i:i + size] for i, k in enumerate(kernel))
    return np.clip(np.round(x + rng.normal(0, noise, x.shape)), 0, 255).astype(np.uint8)


def judge_accuracy(shapes_world: world.World, degrade: bool) -> dict[str, tuple[float, float]]:
    """Per task: the fraction of scenes whose confident detections (score > 0.9) are exactly the scene's objects
    (class, colour, and box within 1 px after degradation, exact otherwise), and the fraction GenEval's rules
    score correct on the judge's detections."""
    rng, noise_rng = random.Random(4), np.random.default_rng(4)
    out = {}
    for tag in world.TAGS:
        recovered = correct = 0
        for _ in range(PER_TASK):
            meta = shapes_world.random_metadata(rng, tag)
            scene = world.scene_for(meta, rng)
            image = render(scene)
            if degrade:
                image = blur_and_noise(image, noise_rng)
            detections = detect(image, shapes_world.shapes)
            confident = [d for d in detections if d.score > 0.9]
            colors = classify_colors(image, confident, "")
            found = sorted((d.label, c, d.box) for d, c in zip(confident, colors, strict=True))
            truth = sorted((o.shape, o.color, o.box) for o in scene.objects)
            recovered += len(found) == len(truth) and all(
                f[:2] == t[:2] and np.abs(np.subtract(f[2], t[2])).max() <= (1 if degrade else 0)
                for f, t in zip(found, truth, strict=True))
            correct += rules.evaluate(image, detections, meta, classify_colors).correct
        out[tag] = (recovered / PER_TASK, correct / PER_TASK)
    kind = "blurred+noisy" if degrade else "clean"
    print(f"\njudge on {shapes_world.name}, {kind} renders (recovered, GenEval-correct):", out)
    return out


@WORLDS
def test_judge_is_exact_on_clean_renders(shapes_world) -> None:
    for tag, (recovered, correct) in judge_accuracy(shapes_world, degrade=False).items():
        assert recovered >= 0.99 and correct >= 0.99, tag


@WORLDS
def test_judge_survives_blur_and_noise(shapes_world) -> None:
    for tag, (recovered, correct) in judge_accuracy(shapes_world, degrade=True).items():
        assert recovered >= 0.98 and correct >= 0.98, tag


def test_malformed_blobs_score_low_and_specks_are_ignored() -> None:
    image = np.empty((64, 64, 3), np.uint8)
    image[:] = world.BACKGROUND
    y, x = np.mgrid[0:22, 0:22]
    u, v = (x + 0.5 - 11) / 11, (y + 0.5 - 11) / 11
    image[4:26, 4:26][np.abs(u) ** 3 + np.abs(v) ** 3 <= 1] = world.PALETTE["red"]  # halfway circle-square
    image[40:52, 4:34] = world.PALETTE["blue"]  # a bar, not a square
    image[40:44, 50:54] = world.PALETTE["green"]  # a speck
    detections = detect(image, world.SHAPES_V2.shapes)
    assert len(detections) == 2 and all(d.score < rules.SCORE_THRESHOLD for d in detections)


def test_package_import_does_not_load_torch() -> None:
    code = ("import sys, harness.reference, harness.reference.world, harness.reference.render, "
            "harness.reference.judge; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
