"""The exact judge of the reference world: a stand-in for GenEval's detector and CLIP colour classifier.

Pixels take the nearest palette colour (or background, or nothing when too far from all); each colour's connected
components become candidate objects; each is labelled with the shape whose template, drawn at the component's box
size, overlaps it best. The score behaves like a detector's confidence: 1 for a clean shape, lower for a malformed
or ambiguous blob, so GenEval's thresholds (0.3, and 0.9 for counting) mean something on generated images.
"""

from __future__ import annotations

import numpy as np

from harness.geneval_rules import Detection
from harness.reference.world import BACKGROUND, COLORS, PALETTE, shape_mask

_REFERENCE = np.array([PALETTE[c] for c in COLORS] + [BACKGROUND], np.float32)  # index len(COLORS) = background
MAX_COLOR_DISTANCE = 100.0  # RGB distance beyond which a pixel is no colour at all (mixtures, artefacts)
MIN_AREA = 40  # pixels; the smallest world object (a 20 px triangle) has 220
# Template IoU from which a shape scores 1, and at which it scores 0. Renders blurred with sigma 1 px keep IoU
# >= 0.83 (triangles, whose apex erodes, are the lowest; other shapes >= 0.93); distinct clean shapes overlap <= 0.8.
FULL_SCORE_IOU = 0.85
ZERO_SCORE_IOU = 0.55
# The best template must beat the runner-up by this much for full score: an in-between blob (a rounded square
# halfway to a circle) is ambiguous. Clean shapes lead by >= 0.2, blurred ones (sigma <= 1.6 px) by >= 0.13.
FULL_SCORE_LEAD = 0.1
MAX_ASPECT = 1.25  # world shapes are square; longer boxes lose score linearly, to 0 at twice this


def _distances(image: np.ndarray) -> np.ndarray:
    """H x W x (len(COLORS) + 1): each pixel's RGB distance to each palette colour, then to the background."""
    rgb = np.asarray(image, np.float32)[..., :3]
    return np.linalg.norm(rgb[:, :, None, :] - _REFERENCE, axis=-1)


def pixel_colors(image: np.ndarray) -> np.ndarray:
    """Per pixel, the index of the nearest palette colour in COLORS, or -1 for background or no colour."""
    distance = _distances(image)
    nearest = distance.argmin(-1)
    nearest[(nearest == len(COLORS)) | (distance.min(-1) > MAX_COLOR_DISTANCE)] = -1
    return nearest


def _components(labels: np.ndarray) -> list[np.ndarray]:
    """4-connected components of equal non-negative labels, as boolean masks (union-find over row runs)."""
    height, width = labels.shape
    parent: list[int] = []

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    runs: list[tuple[int, int, int, int]] = []  # row, start, end, run id
    previous: list[tuple[int, int, int, int]] = []  # start, end, label, run id
    for y in range(height):
        row = labels[y]
        cuts = np.flatnonzero(np.diff(row)) + 1
        current = []
        for start, end in zip(np.r_[0, cuts].tolist(), np.r_[cuts, width].tolist(), strict=True):
            label = int(row[start])
            if label < 0:
                continue
            run = len(parent)
            parent.append(run)
            for p_start, p_end, p_label, p_run in previous:
                if p_label == label and p_start < end and start < p_end:
                    parent[root(p_run)] = root(run)
            current.append((start, end, label, run))
            runs.append((y, start, end, run))
        previous = current
    masks: dict[int, np.ndarray] = {}
    for y, start, end, run in runs:
        mask = masks.setdefault(root(run), np.zeros((height, width), bool))
        mask[y, start:end] = True
    return list(masks.values())


def _classify(mask: np.ndarray, shapes: tuple[str, ...]) -> tuple[str, float, tuple[int, int, int, int]]:
    """The best-fitting of `shapes`, its confidence (template fit x lead over the runner-up x squareness of the box)
    and the mask's box."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = mask[y0:y1, x0:x1]
    ious = []
    for shape in shapes:
        template = shape_mask(shape, y1 - y0, x1 - x0)
        ious.append((crop & template).sum() / (crop | template).sum())
    second, best = np.argsort(ious)[-2:]
    fit = np.clip((ious[best] - ZERO_SCORE_IOU) / (FULL_SCORE_IOU - ZERO_SCORE_IOU), 0, 1)
    unambiguous = np.clip((ious[best] - ious[second]) / FULL_SCORE_LEAD, 0, 1)
    aspect = max(y1 - y0, x1 - x0) / min(y1 - y0, x1 - x0)
    square_box = np.clip((2 * MAX_ASPECT - aspect) / MAX_ASPECT, 0, 1)
    return shapes[best], float(fit * unambiguous * square_box), (int(x0), int(y0), int(x1), int(y1))


def detect(image: np.ndarray, shapes: tuple[str, ...]) -> list[Detection]:
    """GenEval-style detections in an H x W x 3 RGB image (uint8 array or PIL image), highest score first, each
    labelled with one of the world's `shapes`.

    Every component of MIN_AREA pixels or more is returned with its score; thresholding is the rules engine's job.
    """
    detections = []
    for mask in _components(pixel_colors(image)):
        if mask.sum() < MIN_AREA:
            continue
        label, score, box = _classify(mask, shapes)
        detections.append(Detection(label=label, score=score, box=box, mask=mask))
    return sorted(detections, key=lambda d: -d.score)


def classify_colors(image: np.ndarray, detections: list[Detection], class_name: str) -> list[str]:
    """The rules engine's colour classifier: the palette colour most pixels under each detection's mask (its box
    when it has none) are nearest to, background not being a candidate, so any mask gets a colour.
    `class_name` is unused: palette colours do not depend on the shape."""
    nearest = _distances(image)[..., :len(COLORS)].argmin(-1)
    names = []
    for detection in detections:
        if detection.mask is not None:
            under = nearest[detection.mask]
        else:
            x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
            under = nearest[y0:y1, x0:x1].ravel()
        names.append(COLORS[int(np.bincount(under, minlength=len(COLORS)).argmax())])
    return names
