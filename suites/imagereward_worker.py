"""Scores images with the `image-reward` package's own model and preprocessing; run by the imagereward suite in a
subprocess whose PYTHONPATH starts with the package's overlay (tools/install_imagereward.py), because the package
does not import beside transformers 5.

Usage: python imagereward_worker.py JOB.json OUT.json, where the job names the checkpoint, the BLIP text config
(med_config), and the (prompt, image file) pairs; OUT.json receives one score per pair, in order, and the keys of
the checkpoint the model did not take or lacked. Imports only the model modules: the package's __init__ pulls in its
training code and OpenAI's clip, neither needed to score. This file imports nothing of the harness.
"""

from __future__ import annotations

import json
import os
import sys
import types


def import_model_class() -> type:
    """`ImageReward.ImageReward.ImageReward` without running the package's or its models' __init__."""
    import importlib.util

    spec = importlib.util.find_spec("ImageReward")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the image-reward package is not importable here: run `python tools/install_imagereward.py`")
    root = next(iter(spec.submodule_search_locations))
    for name, folder in (("ImageReward", root), ("ImageReward.models", os.path.join(root, "models"))):
        module = types.ModuleType(name)
        module.__path__ = [folder]
        sys.modules[name] = module
    from ImageReward.ImageReward import ImageReward

    return ImageReward


def main(job_path: str, out_path: str) -> None:
    import torch
    from PIL import Image

    job = json.loads(open(job_path).read())
    image_reward = import_model_class()
    # only tensors are read (the package's own `load` unpickles anything), memory-mapped: a job without pairs only
    # compares the checkpoint's keys with the model's
    state = torch.load(job["checkpoint"], map_location="cpu", weights_only=True, mmap=True)
    state = state.get("state_dict", state)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = image_reward(med_config=job["med_config"], device=device)
    if not job["pairs"]:
        expected = set(model.state_dict())
        write(out_path, [], sorted(expected - set(state)), sorted(set(state) - expected))
        return
    # strict=False as the package loads it; what did not match is reported, and the suite refuses missing weights
    outcome = model.load_state_dict(state, strict=False)
    model.to(device).eval()
    scores = []
    with torch.no_grad():
        for prompt, path in job["pairs"]:
            with Image.open(path) as image:
                scores.append(float(model.score(prompt, image.convert("RGB"))))
    write(out_path, scores, list(outcome.missing_keys), list(outcome.unexpected_keys))


def write(out_path: str, scores: list[float], missing: list[str], unexpected: list[str]) -> None:
    with open(out_path, "w") as handle:
        json.dump({"scores": scores, "missing_keys": missing, "unexpected_keys": unexpected}, handle)


if __name__ == "__main__":
    main(*sys.argv[1:3])
