"""Rendering of reference-world scenes: flat palette colours on grey, no anti-aliasing.

Exact palette pixels make the judge exact on clean renders; the trainer renders on the fly, so this is a few array
assignments per object (shape masks are cached per size).
"""

from __future__ import annotations

import random

import numpy as np

from harness.reference.world import BACKGROUND, IMAGE_SIZE, PALETTE, Scene, World, shape_mask


def render(scene: Scene) -> np.ndarray:
    """The scene as an IMAGE_SIZE x IMAGE_SIZE x 3 uint8 RGB array; deterministic."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    for obj in scene.objects:
        window = image[obj.top:obj.top + obj.size, obj.left:obj.left + obj.size]
        window[shape_mask(obj.shape, obj.size, obj.size)] = PALETTE[obj.color]
    return image


def training_batch(world: World, rng: random.Random, size: int,
                   weights: dict[str, float] | None = None) -> tuple[list[str], np.ndarray]:
    """`size` random (caption, rendered image) pairs of the world's training split, tasks drawn by `weights`
    (uniform when None)."""
    pairs = [world.sample_training_pair(rng, weights) for _ in range(size)]
    return [metadata["prompt"] for metadata, _ in pairs], np.stack([render(scene) for _, scene in pairs])
