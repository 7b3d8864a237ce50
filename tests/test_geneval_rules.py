"""GenEval's rules engine on hand-built detections, and on every line of the official metadata."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from conftest import shared_data

from harness.geneval_rules import (
    COUNTING_SCORE_THRESHOLD,
    MAX_OBJECTS_PER_CLASS,
    SCORE_THRESHOLD,
    Detection,
    Judgement,
    evaluate,
    filter_detections,
    parse_metadata,
    relative_position,
    summarize,
)

METADATA = "geneval/evaluation_metadata.jsonl"
IMAGE = np.zeros((512, 512, 3), np.uint8)


def det(label: str, score: float = 0.95, box: tuple[float, float, float, float] = (0, 0, 10, 10)) -> Detection:
    return Detection(label, score, box)


def at(label: str, cx: float, cy: float, score: float = 0.95, size: float = 20) -> Detection:
    """A detection of a size x size box centred on (cx, cy)."""
    half = size / 2
    return Detection(label, score, (cx - half, cy - half, cx + half, cy + half))


class RecordingClassifier:
    """A colour classifier that answers from a table keyed by detection and remembers how it was called."""

    def __init__(self, colors: dict[Detection, str]) -> None:
        self.colors = colors
        self.calls: list[tuple[np.ndarray, list[Detection], str]] = []

    def __call__(self, image: np.ndarray, objects: Sequence[Detection], class_name: str) -> list[str]:
        self.calls.append((image, list(objects), class_name))
        return [self.colors[o] for o in objects]


def single(class_name: str, count: int = 1, tag: str = "single_object", **extra: Any) -> dict[str, Any]:
    return {"tag": tag, "include": [{"class": class_name, "count": count, **extra}], "prompt": "p"}


def positional(relation: str) -> dict[str, Any]:
    """'a dog <relation> a cat': clause 0 is the cat, clause 1 the dog."""
    return {
        "tag": "position",
        "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": [relation, 0]}],
    }


# --- relative_position ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 100, 20, 120), (200, 100, 220, 120), {"left of"}),
        ((200, 100, 220, 120), (0, 100, 20, 120), {"right of"}),
        ((100, 0, 120, 20), (100, 200, 120, 220), {"above"}),  # smaller y is higher in the image
        ((100, 200, 120, 220), (100, 0, 120, 20), {"below"}),
    ],
)
def test_relative_position_on_each_axis(a, b, expected):
    assert relative_position(a, b) == frozenset(expected)


def test_relative_position_diagonal_has_two_relations():
    # offset (-20, -20); each axis shrunk by 0.1 * (10 + 10) = 2 -> (-18, -18) / 28.28 = -0.64 on both axes
    assert relative_position((0, 0, 10, 10), (20, 20, 30, 30)) == {"left of", "above"}
    assert relative_position((20, 20, 30, 30), (0, 0, 10, 10)) == {"right of", "below"}


def test_relative_position_mostly_horizontal_has_one_relation():
    # offset (-20, -5), margin 0.4 per axis -> (-19.6, -4.6) / 20.62 = (-0.95, -0.22)
    assert relative_position((0, 0, 2, 2), (20, 5, 22, 7)) == {"left of"}


def test_heavily_overlapping_boxes_have_no_relation():
    # centres differ by (-1, -1) but the margin 0.1 * (10 + 10) = 2 shrinks both axes to 0
    assert relative_position((0, 0, 10, 10), (1, 1, 11, 11)) == frozenset()
    assert relative_position((0, 0, 10, 10), (0, 0, 10, 10)) == frozenset()


def test_shrink_margin_grows_with_box_size():
    # The same centre offset (-3, 0): small boxes (margin 0.4) -> -2.6 / 3 = -0.87, left of;
    # large boxes (margin 2) -> -1 / 3 = -0.33, nothing
    assert relative_position((0, 0, 2, 2), (3, 0, 5, 2)) == {"left of"}
    assert relative_position((0, 0, 10, 10), (3, 0, 13, 10)) == frozenset()


def test_relation_needs_the_shrunk_offset_beyond_half_the_distance():
    # offset (-2, 0) between 1 x 1 boxes, margin 0.2 -> -1.8 / 2 = -0.9
    assert relative_position((0, 0, 1, 1), (2, 0, 3, 1)) == {"left of"}
    # offset (-4, -4) with margin 0.1 * (14 + 14) = 2.8 -> (-1.2, -1.2) / 5.66 = -0.21 on both axes
    assert relative_position((0, 0, 14, 14), (4, 4, 18, 18)) == frozenset()
    # offset (-10, 0), margin 0.1 * (25 + 25) = 5 -> exactly -0.5: not beyond, so nothing
    assert relative_position((0, 0, 25, 1), (10, 0, 35, 1)) == frozenset()


def test_tiny_offsets_between_point_boxes_have_no_relation():
    # no margin for zero-size boxes; the 1e-3 floor alone decides
    assert relative_position((0, 0, 0, 0), (0.0009, 0, 0.0009, 0)) == frozenset()
    assert relative_position((0, 0, 0, 0), (0.002, 0, 0.002, 0)) == {"left of"}


# --- filtering ------------------------------------------------------------------------------------------------------


def test_score_threshold_is_strict():
    at_threshold, above = det("cat", SCORE_THRESHOLD), det("cat", 0.31)
    assert filter_detections([at_threshold, above], "single_object") == {"cat": [above]}


def test_counting_prompts_use_the_high_threshold_for_every_class():
    dets = [det("cat", 0.5), det("dog", COUNTING_SCORE_THRESHOLD), det("dog", 0.91), det("bird", 0.95)]
    kept = filter_detections(dets, "counting")
    assert kept == {"dog": [dets[2]], "bird": [dets[3]]}
    assert filter_detections(dets, "two_object") == {"cat": [dets[0]], "dog": [dets[2], dets[1]], "bird": [dets[3]]}


def test_kept_detections_are_sorted_and_capped_per_class():
    cats = [det("cat", 0.4 + 0.01 * i) for i in range(20)]
    dogs = [det("dog", 0.5)]
    kept = filter_detections(cats + dogs, "single_object")
    assert MAX_OBJECTS_PER_CLASS == 16
    assert kept["cat"] == cats[::-1][:16]
    assert kept["dog"] == dogs


def test_counting_threshold_applies_in_evaluate():
    cats = [det("cat", 0.95), det("cat", 0.95), det("cat", 0.85)]
    meta = {"tag": "counting", "include": [{"class": "cat", "count": 3}], "exclude": [{"class": "cat", "count": 4}]}
    assert evaluate(IMAGE, cats, meta).reason == "expected cat>=3, found 2"


# --- counts and exclusions ------------------------------------------------------------------------------------------


def test_count_met_and_too_low():
    assert evaluate(IMAGE, [det("cat"), det("cat")], single("cat", 2)) == Judgement()
    judgement = evaluate(IMAGE, [det("cat"), det("dog"), det("cat", 0.2)], single("cat", 2))
    assert not judgement.correct
    assert judgement.reason == "expected cat>=2, found 1"
    assert judgement.failures == ("expected cat>=2, found 1",)


def test_exclude_fires_at_exactly_count():
    meta = {"tag": "counting", "include": [{"class": "cat", "count": 2}], "exclude": [{"class": "cat", "count": 3}]}
    assert evaluate(IMAGE, [det("cat")] * 2, meta).correct
    judgement = evaluate(IMAGE, [det("cat")] * 3, meta)
    assert (judgement.correct, judgement.reason) == (False, "expected cat<3, found 3")
    assert evaluate(IMAGE, [det("cat")] * 20, meta).reason == "expected cat<3, found 16"  # after the cap


def test_exclude_clauses_are_ored():
    meta = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 1}],
        "exclude": [{"class": "dog", "count": 1}, {"class": "cat", "count": 2}],
    }
    assert evaluate(IMAGE, [det("cat")], meta).correct
    assert evaluate(IMAGE, [det("cat"), det("dog")], meta).reason == "expected dog<1, found 1"


def test_correct_judgement_has_empty_reason():
    judgement = evaluate(IMAGE, [det("cat")], single("cat"))
    assert judgement.correct and judgement.reason == ""


# --- colour ---------------------------------------------------------------------------------------------------------


def test_colour_classifier_sees_only_the_top_count_objects():
    low, high, mid = det("car", 0.5), det("car", 0.9), det("car", 0.7)
    other = det("dog", 0.99)
    classify = RecordingClassifier({high: "red", mid: "red", low: "blue", other: "red"})
    judgement = evaluate(IMAGE, [low, high, other, mid], single("car", 2, color="red"), classify)
    assert judgement.correct
    assert len(classify.calls) == 1
    image, objects, class_name = classify.calls[0]
    assert image is IMAGE and class_name == "car"
    assert objects == [high, mid]  # identity comparison: exactly these two, best first; not `low`, not the dog


def test_colour_failure_counts_each_colour_found():
    red, blue = det("car", 0.9), det("car", 0.8)
    classify = RecordingClassifier({red: "red", blue: "blue"})
    judgement = evaluate(IMAGE, [red, blue], single("car", 2, color="red", tag="colors"), classify)
    assert judgement.reason == "expected red car>=2, found 1 red; and 1 red, 1 blue"
    judgement = evaluate(IMAGE, [blue], single("car", 1, color="red", tag="colors"), classify)
    assert judgement.reason == "expected red car>=1, found 0 red; and 1 blue"


def test_colour_classifier_not_called_when_count_fails_or_no_colour_asked():
    classify = RecordingClassifier({})
    assert not evaluate(IMAGE, [det("car")], single("car", 2, color="red"), classify).correct
    assert evaluate(IMAGE, [det("car")], single("car"), classify).correct
    assert classify.calls == []


def test_colour_clause_without_classifier_is_an_error():
    with pytest.raises(ValueError, match="colour classifier"):
        evaluate(IMAGE, [det("car")], single("car", color="red"))


@pytest.mark.parametrize("answer", [[], ["red", "red"], ["crimson"]])
def test_colour_classifier_breaking_its_contract_is_an_error(answer):
    with pytest.raises(ValueError, match="one of"):
        evaluate(IMAGE, [det("car")], single("car", color="red"), lambda image, objects, name: answer)


# --- position -------------------------------------------------------------------------------------------------------


def test_position_pass_and_fail():
    cat, dog_left, dog_right = at("cat", 256, 256), at("dog", 56, 256), at("dog", 456, 256)
    assert evaluate(IMAGE, [cat, dog_left], positional("left of")).correct
    judgement = evaluate(IMAGE, [cat, dog_right], positional("left of"))
    assert judgement.reason == "expected dog left of target, found right of target"


def test_position_reason_for_diagonal_and_for_no_relation():
    cat = at("cat", 256, 256)
    diagonal = evaluate(IMAGE, [cat, at("dog", 56, 56)], positional("below"))
    assert diagonal.reason == "expected dog below target, found left of and above target"
    assert evaluate(IMAGE, [cat, at("dog", 56, 56)], positional("above")).correct  # either of the two relations
    overlapping = evaluate(IMAGE, [cat, at("dog", 258, 258)], positional("left of"))
    assert overlapping.reason == "expected dog left of target, found no relation to target"


def test_position_without_target_when_referenced_clause_failed():
    judgement = evaluate(IMAGE, [at("dog", 56, 256)], positional("left of"))
    assert judgement.failures == ("expected cat>=1, found 0", "no target for dog to be left of")


def test_position_holds_for_every_examined_object_against_every_target():
    meta = {
        "tag": "position",
        "include": [{"class": "cat", "count": 2}, {"class": "dog", "count": 2, "position": ["left of", 0]}],
    }
    cats = [at("cat", 300, 100), at("cat", 300, 400)]
    dogs_ok = [at("dog", 50, 100), at("dog", 50, 400)]  # dog 1 vs cat 0 is left of and below: still left of
    assert evaluate(IMAGE, cats + dogs_ok, meta).correct
    dogs_bad = [at("dog", 50, 100, 0.9), at("dog", 50, 100, 0.8), at("dog", 400, 250, 0.4)]  # third not examined
    assert evaluate(IMAGE, cats + dogs_bad, meta).correct
    dogs_bad = [at("dog", 50, 100, 0.9), at("dog", 500, 100, 0.8)]
    # the second dog is right of and above cat 1 (and right of cat 0): one reason line, the first failure only. The
    # cats' scores tie, so the official order puts the later cat, cat 1, first among the targets
    assert evaluate(IMAGE, cats + dogs_bad, meta).failures == (
        "expected dog left of target, found right of and above target",)


def test_position_not_checked_after_colour_failure_and_then_no_target():
    cat, dog, bird = at("cat", 256, 256), at("dog", 456, 256), at("bird", 56, 256)
    meta = {
        "tag": "position",
        "include": [
            {"class": "cat", "count": 1},
            {"class": "dog", "count": 1, "color": "red", "position": ["left of", 0]},
            {"class": "bird", "count": 1, "position": ["left of", 1]},
        ],
    }
    classify = RecordingClassifier({dog: "blue"})
    judgement = evaluate(IMAGE, [cat, dog, bird], meta, classify)
    assert judgement.failures == (
        "expected red dog>=1, found 0 red; and 1 blue",  # and not also "expected dog left of target"
        "no target for bird to be left of",
    )


def test_multiple_failures_are_all_listed_in_order():
    meta = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 2}, {"class": "dog", "count": 1}],
        "exclude": [{"class": "bird", "count": 1}],
    }
    judgement = evaluate(IMAGE, [det("cat"), det("bird")], meta)
    assert judgement.reason == "expected cat>=2, found 1\nexpected dog>=1, found 0\nexpected bird<1, found 1"


# --- metadata validation --------------------------------------------------------------------------------------------


def test_parse_metadata_reads_every_field():
    spec = parse_metadata(
        {
            "tag": "position",
            "prompt": "a red dog left of a cat",
            "include": [
                {"class": "cat", "count": 1},
                {"class": "dog", "count": 1, "color": "red", "position": ["left of", 0]},
            ],
            "exclude": [{"class": "cat", "count": 2}],
        }
    )
    assert spec.tag == "position" and spec.prompt == "a red dog left of a cat"
    assert [(c.class_name, c.count, c.color, c.relation, c.target) for c in spec.include] == [
        ("cat", 1, None, None, None),
        ("dog", 1, "red", "left of", 0),
    ]
    assert [(c.class_name, c.count) for c in spec.exclude] == [("cat", 2)]


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"tag": "counting", "include": [{"class": "cat", "count": 1}], "extra": 1}, "unknown key.*'extra'"),
        ({"include": [{"class": "cat", "count": 1}]}, "metadata lacks tag"),
        ({"tag": "Counting", "include": [{"class": "cat", "count": 1}]}, r"metadata\.tag"),
        ({"tag": "counting", "include": []}, r"metadata\.include"),
        ({"tag": "counting", "include": {"class": "cat", "count": 1}}, r"metadata\.include must be a list"),
        ({"tag": "counting", "include": ["cat"]}, r"metadata\.include\[0\]"),
        ({"tag": "counting", "include": [{"class": "cat"}]}, r"include\[0\] lacks count"),
        ({"tag": "counting", "include": [{"class": "cat", "count": 0}]}, r"include\[0\]\.count"),
        ({"tag": "counting", "include": [{"class": "cat", "count": True}]}, r"include\[0\]\.count"),
        ({"tag": "counting", "include": [{"class": "cat", "count": "2"}]}, r"include\[0\]\.count"),
        ({"tag": "counting", "include": [{"class": "", "count": 1}]}, r"include\[0\]\.class"),
        ({"tag": "counting", "include": [{"class": "cat", "count": 1, "colour": "red"}]}, "unknown key.*'colour'"),
        ({"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "teal"}]}, r"include\[0\]\.color"),
        (
            {"tag": "counting", "include": [{"class": "cat", "count": 1}], "exclude": [{"class": "cat", "count": 0}]},
            r"exclude\[0\]\.count",
        ),
        (
            {
                "tag": "counting",
                "include": [{"class": "cat", "count": 1}],
                "exclude": [{"class": "cat", "count": 2, "color": "red"}],
            },
            r"exclude\[0\] has unknown key",
        ),
        ({"tag": "counting", "include": [{"class": "cat", "count": 1}], "prompt": 3}, r"metadata\.prompt"),
    ],
)
def test_bad_metadata_is_rejected_naming_the_field(meta, message):
    with pytest.raises(ValueError, match=message):
        parse_metadata(meta)


@pytest.mark.parametrize(
    "position",
    [
        ["left of", 1],
        ["left of", 2],
        ["left of", -1],
        ["left of", True],
        ["left of", "0"],
        ["left of"],
        ["left of", 0, 1],
        "left of",
        ["leftwards", 0],
    ],
)
def test_position_must_name_a_relation_and_an_earlier_clause(position):
    meta = {
        "tag": "position",
        "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": position}],
    }
    with pytest.raises(ValueError, match=r"include\[1\]\.position"):
        parse_metadata(meta)


def test_position_on_the_first_clause_is_rejected():
    with pytest.raises(ValueError, match=r"include\[0\]\.position index must point to an earlier"):
        parse_metadata(single("cat", position=["left of", 0]))


def test_evaluate_validates_raw_metadata():
    with pytest.raises(ValueError, match=r"include\[0\]\.count"):
        evaluate(IMAGE, [], single("cat", 0))


# --- summary --------------------------------------------------------------------------------------------------------


def test_summary_figures():
    records = [
        ("counting", 0, True),
        ("counting", 0, False),
        ("counting", 1, False),
        ("counting", 1, False),
        ("position", 2, True),
        ("position", 2, True),
        ("position", 2, True),
        ("position", 2, False),
        ("colors", 3, False),
        ("colors", 3, False),
        ("colors", 3, False),
        ("colors", 3, False),
        ("colors", 4, True),
        ("colors", 4, False),
        ("colors", 4, False),
        ("colors", 4, False),
    ]
    summary = summarize(records)
    # counting 1/4, position 3/4, colors 1/8; overall (0.25 + 0.75 + 0.125) / 3 = 0.375 (tags weigh equally)
    assert summary.per_tag == {"counting": 0.25, "position": 0.75, "colors": 0.125}
    assert list(summary.per_tag) == ["counting", "position", "colors"]
    assert summary.tag_counts == {"counting": (1, 4), "position": (3, 4), "colors": (1, 8)}
    assert summary.overall == pytest.approx(0.375)
    assert (summary.images, summary.prompts) == (16, 5)
    assert summary.correct_images == pytest.approx(5 / 16)
    assert summary.correct_prompts == pytest.approx(3 / 5)  # prompts 0, 2 and 4


def test_summary_rejects_nothing_and_inconsistent_tags():
    with pytest.raises(ValueError, match="no images"):
        summarize([])
    with pytest.raises(ValueError, match="two tags"):
        summarize([("counting", 0, True), ("colors", 0, True)])


# --- the official metadata ------------------------------------------------------------------------------------------

DIRECTIONS = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}


def perfect_detections(raw: dict[str, Any]) -> tuple[list[list[Detection]], dict[Detection, str]]:
    """Per include clause exactly `count` confident objects, stacked on one spot 200 px from their target in the
    asked direction, coloured as asked. Returns the objects per clause and their colours."""
    spots: list[tuple[float, float]] = []
    groups, colors = [], {}
    for clause in raw["include"]:
        x, y = 256.0, 256.0
        if "position" in clause:
            relation, target = clause["position"]
            (tx, ty), (dx, dy) = spots[target], DIRECTIONS[relation]
            x, y = tx + 200 * dx, ty + 200 * dy
        spots.append((x, y))
        group = [at(clause["class"], x, y) for _ in range(clause["count"])]
        colors.update({d: clause.get("color", "white") for d in group})
        groups.append(group)
    return groups, colors


def test_official_metadata_validates_and_perfect_images_pass():
    lines = shared_data(METADATA).read_text().splitlines()
    assert len(lines) == 553
    for number, line in enumerate(lines, 1):
        raw = json.loads(line)
        spec = parse_metadata(raw)
        groups, colors = perfect_detections(raw)
        classify = RecordingClassifier(colors)
        flat = [d for group in groups for d in group]
        judgement = evaluate(IMAGE, flat, spec, classify)
        assert judgement.correct, f"line {number}: {judgement.reason}"
        for index, group in enumerate(groups):
            missing_one = [d for d in flat if d is not group[-1]]
            judgement = evaluate(IMAGE, missing_one, spec, classify)
            assert not judgement.correct, f"line {number}, one object of clause {index} removed"
            name, count = raw["include"][index]["class"], raw["include"][index]["count"]
            assert judgement.failures[0] == f"expected {name}>={count}, found {count - 1}"


# --- the official scorer's order and precision ----------------------------------------------------------------------


def test_tied_scores_put_the_last_detection_first_as_the_official_argsort_does():
    # np.argsort(scores)[::-1] in the official scorer: among equal scores the later detection ranks first
    first, second, third = det("cat", 1.0), det("cat", 1.0), det("cat", 0.5)
    assert filter_detections([first, second, third], "single_object") == {"cat": [second, first, third]}
    # which cat is examined decides a position verdict: the later of two tied cats is the one compared
    meta = {"tag": "position", "include": [{"class": "dog", "count": 1},
                                           {"class": "cat", "count": 1, "position": ["left of", 0]}]}
    dog, cat_left, cat_right = at("dog", 256, 256), at("cat", 56, 256, 1.0), at("cat", 456, 256, 1.0)
    assert not evaluate(IMAGE, [dog, cat_left, cat_right], meta).correct  # cat_right is examined
    assert evaluate(IMAGE, [dog, cat_right, cat_left], meta).correct  # cat_left is examined


def test_scores_are_compared_with_the_threshold_in_float32():
    # 0.30000001 > 0.3 in float64, but both are float32(0.3): the official scorer drops it
    assert filter_detections([det("cat", 0.30000001)], "single_object") == {}
    assert filter_detections([det("cat", 0.3000001)], "single_object") != {}


def test_positions_are_computed_in_float32():
    # offset (-10 - e, 0), margin 5: in float64 -(5 + e) / (10 + e) is just beyond -0.5 (left of); in float32 the
    # boxes round to the exact -0.5 case, which is no relation
    e = 1e-7
    assert relative_position((0, 0, 25, 1), (10 + e, 0, 35 + e, 1)) == frozenset()
    assert relative_position((0, 0, 25, 1), (10 + 3e-6, 0, 35 + 3e-6, 1)) == {"left of"}
