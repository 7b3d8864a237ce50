"""Rendering of reference-world scenes: flat palette colours on grey, no anti-aliasing.

Exact palette pixels make the judge exact on clean renders; the trainer renders on the fly, so this is a few array
assignments per object (shape masks are cached per size).
"""

from __future__ import annotations

import numpy as np

from harness.reference.world import BACKGROUND, IMAGE_SIZE, PALETTE, Scene, shape_mask


def render(scene: Scene) -> np.ndarray:
    """The scene as an IMAGE_SIZE x IMAGE_SIZE x 3 uint8 RGB array; deterministic."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    for obj in scene.objects:
        window = image[obj.top:obj.top + obj.size, obj.left:obj.left + obj.size]
        window[shape_mask(obj.shape, obj.size, obj.size)] = PALETTE[obj.color]
    return image
