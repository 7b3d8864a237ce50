"""The geneval-shapes suite: a perfect generator scores 1, chosen corruptions fail with GenEval's reasons, --limit is
stratified, metadata files fail clearly, the grid shows what was judged, and a whole run writes the grid."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import invoke, read_results, run_args, write_metadata_jsonl
from PIL import Image

from harness.errors import UsageError
from harness.generation import ImageRequest, Sample
from harness.geneval_rules import TAGS
from harness.metrics import lookup
from harness.models.reference import WEIGHTS_DIR
from harness.params import build_params
from harness.reference.render import render
from harness.reference.world import (
    BENCHMARK_TAG_COUNTS,
    COLORS,
    IMAGE_SIZE,
    SHAPES_V1,
    SHAPES_V2,
    Scene,
    make_metadata,
    scene_for,
    trained_world,
)
from suites.geneval_shapes import (
    GRID_BORDER,
    GRID_LABEL_WIDTH,
    GRID_PAD,
    GRID_SCALE,
    GenevalShapesSuite,
    stratified_order,
)

WORLD = SHAPES_V1  # what these tests score; the held-out world's own tests come at the end
PARAMS = {"world": WORLD.name, "train_share": 0}
META = WORLD.benchmark_metadata(0)
TOTAL = len(META)
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
GREEN, RED = (40, 170, 40), (220, 30, 30)


def scene_of(request: ImageRequest, metadata: list[dict[str, Any]] = META) -> Scene:
    """The perfect generator's scene for a request: deterministic per prompt and sample."""
    return scene_for(metadata[request.prompt_index], random.Random(f"{request.prompt_index}:{request.sample_index}"))


def as_sample(request: ImageRequest, image: np.ndarray) -> Sample:
    return Sample(request, 0, image, Path(f"{request.prompt_index}-{request.sample_index}.png"))


def perfect(requests: list[ImageRequest], metadata: list[dict[str, Any]] = META) -> list[Sample]:
    return [as_sample(r, render(scene_of(r, metadata))) for r in requests]


def binary_stderr(correct: int, n: int) -> float:
    """Standard error of the mean of `correct` ones and `n - correct` zeros."""
    return math.sqrt(correct * (n - correct) / (n * (n - 1))) / math.sqrt(n)


# --- a perfect generator ----------------------------------------------------------------------------------------


def test_perfect_generator_scores_one_everywhere():
    suite = GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS))
    requests = suite.requests(60)
    assert len(requests) == 120
    result = suite.evaluate(perfect(requests), None)
    # all six tags occur in 60 prompts; a world without held-out prompts has no training sample
    assert set(result.metrics) == {m.name for m in GenevalShapesSuite.metrics} - {"train_overall",
                                                                                  "generalisation_gap"}
    for name, value in result.metrics.items():
        assert value.value == 1.0, (name, [r for r in result.records if not r["correct"]][:3])
    assert result.metrics["overall"].n == 120 and result.metrics["overall"].stderr == 0.0
    assert result.metrics["correct_prompts"].n == 60
    assert result.notes == [f"geneval-shapes: 60 of {TOTAL} prompts scored (a stratified subset)"]
    assert all(r["reason"] == "" and r["detections"] for r in result.records)
    first = result.records[0]  # compact: no masks, rounded scores, integer boxes
    assert set(first) == {"tag", "correct", "reason", "detections"}
    scene = scene_of(requests[0])
    assert sorted(map(json.dumps, first["detections"])) == sorted(
        json.dumps({"label": o.shape, "score": 1.0, "box": list(o.box), "color": o.color}) for o in scene.objects)


def test_every_metric_is_declared_as_a_fraction_and_registered():
    for metric in GenevalShapesSuite.metrics:
        assert metric.unit == "fraction" and metric.description
        assert metric.higher_is_better == (metric.name != "generalisation_gap")
        assert lookup(f"geneval-shapes/{metric.name}") == metric
    assert [m.name for m in GenevalShapesSuite.metrics] == ["overall", *TAGS, "correct_images", "correct_prompts",
                                                            "train_overall", "generalisation_gap"]


# --- corrupted images -------------------------------------------------------------------------------------------


def first_request(requests: list[ImageRequest], tag: str, sample: int) -> ImageRequest:
    return next(r for r in requests if META[r.prompt_index]["tag"] == tag and r.sample_index == sample)


def corrupt(requests: list[ImageRequest]) -> tuple[list[Sample], dict[ImageRequest, str]]:
    """Perfect images except for six chosen corruptions, on the first prompt of each tag; the expected reasons."""
    images = {r: render(scene_of(r)) for r in requests}
    expected: dict[ImageRequest, str] = {}

    def redo(request: ImageRequest, objects: list, reason: str) -> None:
        images[request] = render(Scene(tuple(objects)))
        expected[request] = reason

    # single_object: both samples empty, so the prompt has no correct image
    for sample in (0, 1):
        request = first_request(requests, "single_object", sample)
        redo(request, [], f"expected {META[request.prompt_index]['include'][0]['class']}>=1, found 0")
    # two_object, sample 1: the second object removed
    request = first_request(requests, "two_object", 1)
    objects = list(scene_of(request).objects)
    redo(request, objects[:1], f"expected {objects[1].shape}>=1, found 0")
    # counting, sample 0: one object too few
    request = first_request(requests, "counting", 0)
    objects = list(scene_of(request).objects)
    redo(request, objects[1:], f"expected {objects[0].shape}>={len(objects)}, found {len(objects) - 1}")
    # colors, sample 0: the object repainted
    request = first_request(requests, "colors", 0)
    (obj,) = scene_of(request).objects
    other = next(c for c in COLORS if c != obj.color)
    redo(request, [dataclasses.replace(obj, color=other)],
         f"expected {obj.color} {obj.shape}>=1, found 0 {obj.color}; and 1 {other}")
    # position, sample 0: the scene mirrored on the relation's axis, which turns the relation round
    request = first_request(requests, "position", 0)
    reference, subject = scene_of(request).objects
    relation = META[request.prompt_index]["include"][1]["position"][0]
    if relation in ("left of", "right of"):
        moved = [dataclasses.replace(o, left=IMAGE_SIZE - o.left - o.size) for o in (reference, subject)]
    else:
        moved = [dataclasses.replace(o, top=IMAGE_SIZE - o.top - o.size) for o in (reference, subject)]
    redo(request, moved, f"expected {subject.shape} {relation} target, found {OPPOSITE[relation]} target")
    # color_attr, sample 1: the two colours swapped, so both clauses fail
    request = first_request(requests, "color_attr", 1)
    a, b = scene_of(request).objects
    redo(request, [dataclasses.replace(a, color=b.color), dataclasses.replace(b, color=a.color)],
         f"expected {a.color} {a.shape}>=1, found 0 {a.color}; and 1 {b.color}\n"
         f"expected {b.color} {b.shape}>=1, found 0 {b.color}; and 1 {a.color}")
    return [as_sample(r, images[r]) for r in requests], expected


def test_corrupted_images_fail_with_geneval_reasons_and_the_fractions_follow():
    suite = GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS))
    requests = suite.requests(24)  # 4 prompts of each tag, 8 images each
    assert Counter(META[r.prompt_index]["tag"] for r in requests) == dict.fromkeys(TAGS, 8)
    samples, expected = corrupt(requests)
    result = suite.evaluate(samples, None)
    wrong = {s.request: r["reason"] for s, r in zip(samples, result.records, strict=True) if not r["correct"]}
    assert wrong == expected
    metrics = {name: value.value for name, value in result.metrics.items()}
    assert metrics == {
        "single_object": 6 / 8, "two_object": 7 / 8, "counting": 7 / 8, "colors": 7 / 8, "position": 7 / 8,
        "color_attr": 7 / 8,
        "overall": pytest.approx((6 / 8 + 5 * 7 / 8) / 6),
        "correct_images": 41 / 48,
        "correct_prompts": 23 / 24,  # one wrong of two still makes a correct prompt; the single_object one has none
    }
    assert result.metrics["single_object"].stderr == pytest.approx(binary_stderr(6, 8))
    assert result.metrics["overall"].stderr == pytest.approx(
        math.sqrt(binary_stderr(6, 8) ** 2 + 5 * binary_stderr(7, 8) ** 2) / 6)
    assert result.metrics["overall"].n == 48 and result.metrics["correct_prompts"].n == 24
    colors = next(r for s, r in zip(samples, result.records, strict=True)
                  if s.request == first_request(requests, "colors", 0))
    (detection,) = colors["detections"]
    assert detection["color"] != META[first_request(requests, "colors", 0).prompt_index]["include"][0]["color"]


def test_correct_prompts_counts_a_prompt_with_one_good_image_of_two():
    suite = GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS))
    requests = suite.requests(2)
    assert [r.sample_index for r in requests] == [0, 1, 0, 1]
    samples = perfect(requests)
    blank = render(Scene(()))
    one_wrong = [samples[0], as_sample(requests[1], blank), *samples[2:]]
    result = suite.evaluate(one_wrong, None)
    assert result.metrics["correct_prompts"].value == 1.0
    assert result.metrics["correct_images"].value == 3 / 4
    both_wrong = [as_sample(requests[0], blank), as_sample(requests[1], blank), *samples[2:]]
    result = suite.evaluate(both_wrong, None)
    assert result.metrics["correct_prompts"].value == 1 / 2
    # only the two tags of these prompts are reported, and the notes say so
    assert set(result.metrics) - {"overall", "correct_images", "correct_prompts"} == \
        {META[requests[0].prompt_index]["tag"], META[requests[2].prompt_index]["tag"]}
    assert any("overall is the mean over the 2 tag(s) present" in note for note in result.notes)


# --- stratified --limit -----------------------------------------------------------------------------------------


def test_limit_holds_the_tags_in_genevals_proportions_for_every_prefix():
    suite = GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS))
    everything = suite.requests(None)
    assert len(everything) == 2 * TOTAL
    assert sorted({r.prompt_index for r in everything}) == list(range(TOTAL))
    seen: Counter[str] = Counter()
    order = [r.prompt_index for r in everything if r.sample_index == 0]
    for n, index in enumerate(order, start=1):
        seen[META[index]["tag"]] += 1
        for tag, count in BENCHMARK_TAG_COUNTS.items():
            assert abs(seen[tag] - n * count / TOTAL) <= 1, (n, tag, seen)
    for tag in TAGS:  # each tag's prompts in file order
        indices = [i for i in order if META[i]["tag"] == tag]
        assert indices == sorted(indices)
    for n in (1, 5, 6, 7, 13, 100, 552):
        limited = suite.requests(n)
        assert limited == everything[:2 * n]  # same first prompts whatever the limit: a prefix of the full list
        assert all(r.prompt == META[r.prompt_index]["prompt"] for r in limited)  # prompt_index: the file's index
        tags = Counter(META[r.prompt_index]["tag"] for r in limited if r.sample_index == 0)
        assert all(abs(tags[t] - n * c / TOTAL) <= 1 for t, c in BENCHMARK_TAG_COUNTS.items()), (n, tags)
    assert {META[r.prompt_index]["tag"] for r in suite.requests(6)} == set(TAGS)


def test_stratified_order_on_unbalanced_tags():
    rng = random.Random(7)
    for _ in range(50):
        counts = {f"t{i}": rng.randint(1, 40) for i in range(rng.randint(1, 6))}
        tags = [t for t, c in counts.items() for _ in range(c)]
        rng.shuffle(tags)
        order = stratified_order(tags)
        assert sorted(order) == list(range(len(tags)))
        seen: Counter[str] = Counter()
        for n, index in enumerate(order, start=1):
            seen[tags[index]] += 1
            assert all(abs(seen[t] - n * c / len(tags)) <= 1 for t, c in counts.items())


def test_samples_per_prompt_and_params_from_the_command_line(tmp_path):
    suite = GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS, samples_per_prompt=3))
    assert [r.sample_index for r in suite.requests(2)] == [0, 1, 2, 0, 1, 2]
    params = build_params(GenevalShapesSuite.Params, {"metadata": str(tmp_path / "m.jsonl"), "samples_per_prompt":
                                                      "4", "grid_prompts_per_tag": "1"}, "geneval-shapes")
    assert params == GenevalShapesSuite.Params(tmp_path / "m.jsonl", 4, 1)
    with pytest.raises(UsageError, match="samples_per_prompt must be at least 1"):
        build_params(GenevalShapesSuite.Params, {"samples_per_prompt": "0"}, "geneval-shapes")


# --- metadata files ---------------------------------------------------------------------------------------------


def test_a_metadata_file_replaces_the_benchmark(tmp_path):
    metadata = [make_metadata("counting", ("triangle",), count=3), make_metadata("single_object", ("circle",)),
                make_metadata("colors", ("square",), ("blue",)), make_metadata("counting", ("circle",), count=2)]
    path = tmp_path / "mine.jsonl"
    write_metadata_jsonl(metadata, path)
    suite = GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS, metadata=path, samples_per_prompt=1))
    requests = suite.requests(None)
    assert [r.prompt_index for r in requests] == [0, 1, 2, 3]  # counting is half the file: it leads
    assert [r.prompt_index for r in suite.requests(2)] == [0, 1]
    result = suite.evaluate(perfect(requests, metadata), None)
    assert result.metrics["overall"].value == 1.0
    assert set(result.metrics) == {"overall", "single_object", "counting", "colors", "correct_images",
                                   "correct_prompts"}


def good_line(**change: Any) -> str:
    return json.dumps({**make_metadata("colors", ("circle",), ("red",)), **change})


@pytest.mark.parametrize(("content", "message"), [
    (b"", "holds no metadata lines"),
    (b"\n  \n", "holds no metadata lines"),
    (b'{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "caf\xe9"}\n',
     "is not UTF-8 text"),
    (f"{good_line()}\n{{not json\n".encode(), ":2: not a JSON object"),
    (f"{good_line(tag='count')}\n".encode(), ":1: not a GenEval metadata line: metadata.tag must be one of"),
    (f"{good_line()}\n{good_line(extra=1)}\n".encode(), ":2: not a GenEval metadata line: metadata has unknown key"),
    (f"{good_line(prompt='')}\n".encode(), ':1: metadata lacks a non-empty "prompt" string'),
    (f"{good_line(include=[{'class': 'dog', 'count': 1}])}\n".encode(),
     ":1: class 'dog' does not exist in the shapes-v1 world (its classes: circle, square, triangle)"),
    (f"{good_line()}\n{good_line(include=[{'class': 'circle', 'count': 1, 'color': 'purple'}])}\n".encode(),
     ":2: colour 'purple' does not exist in the shapes-v1 world (its colours: red, green, blue, yellow, white, black)"),
])
def test_bad_metadata_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "meta.jsonl"
    path.write_bytes(content)
    with pytest.raises(UsageError) as info:
        GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS, metadata=path)).requests(None)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_metadata_file_or_folder(tmp_path):
    for path, message in ((tmp_path / "absent.jsonl", "does not exist"), (tmp_path, "is a folder")):
        with pytest.raises(UsageError, match=message):
            GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS, metadata=path)).requests(3)


def test_cli_reports_a_bad_metadata_file_before_loading_the_model(dirs, tmp_path):
    result = invoke(*run_args(dirs, "--suite", "geneval-shapes", "--set",
                              f"geneval-shapes.metadata={tmp_path / 'absent.jsonl'}"))
    assert result.returncode == 2 and "absent.jsonl' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


# --- grid -------------------------------------------------------------------------------------------------------


def test_grid_shows_the_first_prompts_of_each_tag_framed_by_verdict():
    suite = GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS, grid_prompts_per_tag=1))
    requests = suite.requests(24)
    samples, expected = corrupt(requests)
    grid = np.asarray(Image.open(io.BytesIO(suite.evaluate(samples, None).artifacts["grid.png"])).convert("RGB"))
    cell = IMAGE_SIZE * GRID_SCALE
    step = cell + 2 * GRID_BORDER + GRID_PAD
    assert grid.shape == (GRID_PAD + 6 * step, GRID_PAD + GRID_LABEL_WIDTH + 2 * step, 3)
    for row, tag in enumerate(TAGS):  # the corruptions are on the first prompt of each tag
        for column in (0, 1):
            request = first_request(requests, tag, column)
            top, left = GRID_PAD + row * step, GRID_PAD + GRID_LABEL_WIDTH + column * step
            frame = RED if request in expected else GREEN
            assert tuple(grid[top, left]) == frame and tuple(grid[top + step - GRID_PAD - 1, left]) == frame
            image = next(s.image for s in samples if s.request == request)
            inside = grid[top + GRID_BORDER:top + GRID_BORDER + cell, left + GRID_BORDER:left + GRID_BORDER + cell]
            assert np.array_equal(inside, image.repeat(GRID_SCALE, 0).repeat(GRID_SCALE, 1))
        label = grid[GRID_PAD + row * step:GRID_PAD + row * step + 20, GRID_PAD:GRID_LABEL_WIDTH]
        assert (label < 128).any()  # the prompt text is drawn
    assert "grid.png" not in GenevalShapesSuite(GenevalShapesSuite.Params(**PARAMS, grid_prompts_per_tag=0)).evaluate(
        samples, None).artifacts


# --- a whole run ------------------------------------------------------------------------------------------------


def test_run_on_the_tiny_model_writes_scores_and_the_grid(dirs):
    result = invoke(*run_args(dirs, "--suite", "geneval-shapes", "--limit", "6"))
    assert result.returncode == 0, result.stderr
    results = read_results(result.stdout)
    folder = Path(result.stdout.strip().splitlines()[-1]).parent
    suite = results["suites"]["geneval-shapes"]
    assert suite["samples_requested"] == suite["samples_scored"] == 12
    assert suite["artifacts"] == ["geneval-shapes-grid.png"]
    assert suite["params"] == {"metadata": None, "samples_per_prompt": 2, "grid_prompts_per_tag": 2,
                               "world": trained_world(WEIGHTS_DIR).name, "split": "test", "train_share": 0.25}
    with Image.open(folder / "geneval-shapes-grid.png") as grid:
        assert grid.format == "PNG" and grid.width > GRID_LABEL_WIDTH and grid.height > IMAGE_SIZE
    for name in ("overall", *TAGS, "correct_images", "correct_prompts"):  # 6 prompts: one of each tag
        assert 0.0 <= results["metrics"][f"geneval-shapes/{name}"] <= 1.0
        assert results["metric_details"][f"geneval-shapes/{name}"]["unit"] == "fraction"
    records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["tag"] for r in records} == set(TAGS)
    assert all(isinstance(r["correct"], bool) and isinstance(r["detections"], list) for r in records)


# --- a world with held-out prompts: the benchmark is its test split, a training sample is scored beside it ----------


def held_out_metadata(suite: GenevalShapesSuite) -> dict[int, dict[str, Any]]:
    """Every prompt the suite can score, benchmark and training sample, as metadata dicts by prompt index."""
    bench = SHAPES_V2.split_metadata(suite.params.split)
    train = SHAPES_V2.split_metadata("train")
    order = stratified_order([m["tag"] for m in train])
    return {**dict(enumerate(bench)), **{len(bench) + k: train[i] for k, i in enumerate(order)}}


def test_held_out_world_scores_a_matched_training_sample_beside_the_benchmark():
    suite = GenevalShapesSuite(GenevalShapesSuite.Params(world="shapes-v2"))
    requests = suite.requests(60)
    bench = [r for r in requests if r.prompt_index < TOTAL]
    train = [r for r in requests if r.prompt_index >= TOTAL]
    assert len(bench) == 120 and len(train) == 2 * 15  # a quarter as many training prompts, two images each
    # the training sample's tags come in the benchmark's proportions, and none of its prompts is a benchmark one
    # (single_object has no held-out prompts)
    tags = Counter(suite.prompts()[r.prompt_index].spec.tag for r in train if r.sample_index == 0)
    assert all(abs(tags[t] - 15 * c / TOTAL) <= 1 for t, c in BENCHMARK_TAG_COUNTS.items()), tags
    held_out = {m["prompt"] for m in SHAPES_V2.benchmark_metadata() if m["tag"] != "single_object"}
    assert not {r.prompt for r in train} & held_out
    metadata = held_out_metadata(suite)
    result = suite.evaluate(perfect(requests, metadata), None)
    assert result.metrics["train_overall"].value == 1.0 and result.metrics["generalisation_gap"].value == 0.0
    assert result.metrics["overall"].n == 120 and result.metrics["train_overall"].n == 30
    assert result.notes == [f"geneval-shapes: 60 of {TOTAL} prompts scored (a stratified subset)"]
    assert [bool(r.get("training_prompt")) for r in result.records] == [r.prompt_index >= TOTAL for r in requests]


def test_the_gap_is_what_the_model_loses_on_new_prompts():
    """A model that draws its training prompts right and nothing for new ones: benchmark 0, training 1, gap 1; the
    benchmark's figures never count a training-prompt image."""
    suite = GenevalShapesSuite(GenevalShapesSuite.Params(world="shapes-v2"))
    requests = suite.requests(40)
    metadata = held_out_metadata(suite)
    blank = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 128, np.uint8)
    samples = [as_sample(r, render(scene_of(r, metadata)) if r.prompt_index >= TOTAL else blank) for r in requests]
    metrics = suite.evaluate(samples, None).metrics
    assert metrics["overall"].value == 0.0 and metrics["correct_images"].value == 0.0
    assert metrics["train_overall"].value == 1.0
    assert metrics["generalisation_gap"].value == 1.0 and metrics["generalisation_gap"].stderr == 0.0
    # half the training images wrong: the gap follows
    halved = [as_sample(s.request, blank) if s.request.prompt_index >= TOTAL and s.request.sample_index == 1 else s
              for s in samples]
    assert suite.evaluate(halved, None).metrics["generalisation_gap"].value == pytest.approx(0.5)


def test_validation_split_and_no_training_sample_on_request():
    validation = GenevalShapesSuite(GenevalShapesSuite.Params(world="shapes-v2", split="validation",
                                                              train_share=0))
    prompts = {p.spec.prompt for p in validation.prompts()}
    assert all(p.benchmark for p in validation.prompts())
    assert prompts == {m["prompt"] for m in SHAPES_V2.split_metadata("validation")}
    test = {m["prompt"] for m in SHAPES_V2.benchmark_metadata()}
    assert prompts & test == {m["prompt"] for m in SHAPES_V2.benchmark_metadata() if m["tag"] == "single_object"}
    with pytest.raises(UsageError, match="world.*shapes-v1, shapes-v2, shapes-v3"):
        build_params(GenevalShapesSuite.Params, {"world": "shapes-v9"}, "geneval-shapes")
    with pytest.raises(UsageError, match="train_share must be between 0 and 1"):
        build_params(GenevalShapesSuite.Params, {"train_share": "1.5"}, "geneval-shapes")


def test_the_world_follows_the_weights_under_test(tmp_path, monkeypatch):
    """`--weights DIR` of a model trained on another world scores that world's benchmark, not the committed model's
    (whose training captions could be the other world's test prompts)."""
    from harness.commands.setup import ModelOptions, process_context
    from harness.context import Context
    from harness.reference.world import WORLD_FILE, trained_world

    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / WORLD_FILE).write_text(json.dumps({"world": "shapes-v2"}))
    _, context = process_context(ModelOptions(model="reference", weights=str(trained), device="cpu",
                                              cache_dir=tmp_path / "cache"))
    assert context.weights_folder == trained
    assert GenevalShapesSuite(None, context).params.world == "shapes-v2"
    assert GenevalShapesSuite(None, Context(weights_folder=tmp_path)).params.world == trained_world(WEIGHTS_DIR).name
    assert GenevalShapesSuite(None, Context()).params.world == trained_world(WEIGHTS_DIR).name
    named = GenevalShapesSuite(GenevalShapesSuite.Params(world="shapes-v3"), context)
    assert named.params.world == "shapes-v3" and named.resolved_params()["world"] == "shapes-v3"
    _, hub = process_context(ModelOptions(model="stabilityai/stable-diffusion-3.5-large", device="cpu",
                                          cache_dir=tmp_path / "cache"))
    assert hub.weights_folder is None
    # a registered name is the registered model even beside a folder of that name; random weights have no folder
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reference").mkdir()
    (tmp_path / "random").mkdir()
    for options in (ModelOptions(model="reference"), ModelOptions(model="reference", weights="random")):
        _, context = process_context(dataclasses.replace(options, device="cpu", cache_dir=tmp_path / "cache"))
        assert context.weights_folder is None
    _, folder_model = process_context(ModelOptions(model=str(trained), device="cpu", cache_dir=tmp_path / "cache"))
    assert folder_model.weights_folder == trained
