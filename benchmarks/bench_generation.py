#!/usr/bin/env python
"""Throughput of image generation through the harness against a bare diffusers loop doing the same images.

Both paths use the same pipeline object, the same batches (batch size, prompts, order), the same per-image seeds,
`output_type="np"`, the same uint8 conversion and one PNG file per image:

* harness: `harness.generation.generate` into a fresh `ImageCache` in a new temporary folder, so every image is
  generated and written; its plan (key hashing), cache lookups, noise drawing and atomic writes are all timed.
* bare: `pipeline(prompt=..., generator=[torch.Generator().manual_seed(seed) ...], output_type="np")` batch after
  batch, `(images * 255).round().astype(uint8)` and `PIL.Image.save` into a new temporary folder.

After one untimed warm-up round of each (which also checks that both paths made bit-identical pixels: if not, they did
not do the same work and the verdict is FAIL), the two are alternated for `--repeats` rounds; each round's ratio is
harness images/s over bare images/s, and the requirement is median ratio >= 0.97 (exit status 1 when it is not met).

On a shared machine another process's burst can slow a round tens of times (torch's threads wait for each other), so
each round also reports the share of the CPUs that other processes used meanwhile (Linux); a round above
`--max-other-load` is marked noisy, left out of the median and redone, at most `--repeats` times in all.

Usage: python benchmarks/bench_generation.py [--images 64] [--batch-size 4] [--repeats 5] [--model tiny-sd3]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.monitors import OtherLoad

REQUIRED_RATIO = 0.97
BASE_SEED = 0
PROMPTS = Path(__file__).resolve().parent.parent / "suites" / "data" / "fidelity_prompts.txt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images per round (default: 64)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per pipeline call (default: 4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of each path (default: 5)")
    parser.add_argument("--model", default="tiny-sd3", help="registered model name (default: tiny-sd3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="override the model's num_inference_steps (default: the model's own sampling settings)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice, printed)")
    parser.add_argument("--max-other-load", type=float, default=0.05,
                        help="a round during which other processes used more than this share of the CPUs is noisy: "
                        "it is shown, left out of the median and redone (at most --repeats redos; Linux only; "
                        "1 disables; default: 0.05)")
    parser.add_argument("--bare-inference-mode", action="store_true",
                        help="run the bare loop under torch.inference_mode(), as the harness does, instead of the "
                        "pipeline's own torch.no_grad() (default: off, the plain diffusers call)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)
    for name in ("images", "batch_size", "repeats", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from harness.environment import device_name
    from harness.generation import GenerationSetup, ImageCache, ImageRequest, generate, image_seed, plan_batches
    from harness.models.loading import load_model, resolve_model
    from harness.prompts import read_prompt_file

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    spec = resolve_model(args.model)
    sampling = spec.sampling
    if args.steps is not None:
        sampling = dataclasses.replace(sampling, num_inference_steps=args.steps)
    model = load_model(spec, weights=None, device=device)  # also disables the pipeline's progress bar
    pipeline = model.pipeline
    pipeline.set_progress_bar_config(disable=True)

    prompts = read_prompt_file(PROMPTS)
    requests = [ImageRequest(prompts[i % len(prompts)], i % len(prompts), i // len(prompts))
                for i in range(args.images)]
    setup = GenerationSetup.for_model(model, sampling, "per-image", BASE_SEED)
    # The bare loop's input: the same batches (consecutive chunks of the request list) and the same per-image seeds.
    bare_batches = [
        ([r.prompt for r in chunk], [image_seed(BASE_SEED, r.prompt_index, r.sample_index) for r in chunk])
        for chunk in (requests[i : i + args.batch_size] for i in range(0, len(requests), args.batch_size))
    ]
    extra: dict = {}
    if sampling.max_sequence_length is not None:
        extra["max_sequence_length"] = sampling.max_sequence_length

    def run_harness(folder: Path) -> float:
        started = time.perf_counter()
        stats = generate(model, setup, requests, ImageCache(folder), batch_size=args.batch_size,
                         sampling=sampling, progress=False)
        seconds = time.perf_counter() - started
        assert stats.generated == len(requests) and stats.cached == 0, stats
        return seconds

    def run_bare(folder: Path) -> float:
        started = time.perf_counter()
        count = 0
        for batch_prompts, seeds in bare_batches:
            negative = {}
            if model.family.takes_negative_prompt and sampling.negative_prompt is not None:
                negative["negative_prompt"] = [sampling.negative_prompt] * len(batch_prompts)
            with torch.inference_mode() if args.bare_inference_mode else contextlib.nullcontext():
                images = pipeline(
                    prompt=batch_prompts,
                    generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
                    num_inference_steps=sampling.num_inference_steps,
                    guidance_scale=sampling.guidance_scale,
                    height=sampling.height,
                    width=sampling.width,
                    output_type="np",
                    **negative,
                    **extra,
                ).images
            for image in (images * 255).round().astype(np.uint8):  # as diffusers' numpy_to_pil
                Image.fromarray(image).save(folder / f"{count:06d}.png", format="PNG")
                count += 1
        seconds = time.perf_counter() - started
        assert count == len(requests)
        return seconds

    def timed(run) -> tuple[float, float | None]:
        """One round in a fresh temporary folder (creating and deleting it is not timed), and the others' CPU load."""
        with tempfile.TemporaryDirectory(prefix="bench_generation_") as tmp:
            gc.collect()
            with OtherLoad("cpu") as meter:
                seconds = run(Path(tmp))
        return seconds, meter.report.other_share

    n = len(requests)
    print(f"model: {spec.name} ({spec.family}, {model.source}, {str(model.dtype).removeprefix('torch.')}) on "
          f"{device_name(device)}")
    print(f"sampling: {sampling.num_inference_steps} steps, {sampling.width}x{sampling.height}, "
          f"guidance {sampling.guidance_scale}, max_sequence_length {sampling.max_sequence_length}")
    load_average = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
          f"cpu count: {os.cpu_count()}, load average: {load_average}, torch {torch.__version__}")
    bare_grad_mode = "torch.inference_mode()" if args.bare_inference_mode else "the pipeline's own torch.no_grad()"
    print(f"images per round: {n}, batch size: {args.batch_size}, repeats: {args.repeats} (+1 warm-up each); "
          f"bare loop under {bare_grad_mode}")

    # Warm-up round of each path, untimed; it also checks that both paths made the same pixels.
    with tempfile.TemporaryDirectory(prefix="bench_generation_warmup_") as tmp:
        harness_dir, bare_dir = Path(tmp) / "harness", Path(tmp) / "bare"
        bare_dir.mkdir()
        warm_harness = run_harness(harness_dir)
        warm_bare = run_bare(bare_dir)
        cache = ImageCache(harness_dir)
        keys = [k for b in plan_batches(setup, requests, args.batch_size) for k in b.keys]
        identical = all(
            np.array_equal(cache.read(key)[0], np.array(Image.open(bare_dir / f"{i:06d}.png").convert("RGB")))
            for i, key in enumerate(keys)
        )
    print(f"warm-up: harness {n / warm_harness:.2f} img/s, bare {n / warm_bare:.2f} img/s; "
          f"identical pixels: {'yes' if identical else 'NO'}")

    print()
    print(f"{'round':>5}  {'harness img/s':>13}  {'bare img/s':>10}  {'ratio':>6}  {'other load (harness/bare)':>25}")
    rounds: list[tuple[float, float, bool]] = []  # (harness img/s, bare img/s, quiet)
    redos_left = args.repeats
    while sum(quiet for *_, quiet in rounds) < args.repeats:
        harness_seconds, harness_load = timed(run_harness)
        bare_seconds, bare_load = timed(run_bare)
        harness_rate, bare_rate = n / harness_seconds, n / bare_seconds
        quiet = all(load is None or load <= args.max_other_load for load in (harness_load, bare_load))
        rounds.append((harness_rate, bare_rate, quiet))
        load_text = "n/a" if harness_load is None or bare_load is None else f"{harness_load:.0%} / {bare_load:.0%}"
        mark = "" if quiet else ("  noisy, redone" if redos_left else "  noisy")
        print(f"{len(rounds):>5}  {harness_rate:>13.3f}  {bare_rate:>10.3f}  {harness_rate / bare_rate:>6.3f}  "
              f"{load_text:>25}{mark}", flush=True)
        if not quiet:
            if not redos_left:
                break
            redos_left -= 1
    counted = [r for r in rounds if r[2]]
    noisy = len(counted) < args.repeats
    if noisy:  # out of redos: the quiet rounds count (all of them if none was), and the verdict is flagged
        counted = counted or rounds
    median_ratio = statistics.median(h / b for h, b, _ in counted)
    median_harness = statistics.median(h for h, _, _ in counted)
    median_bare = statistics.median(b for _, b, _ in counted)
    print(f"{'median':>5}  {median_harness:>13.3f}  {median_bare:>10.3f}  {median_ratio:>6.3f}  "
          f"{f'over {len(counted)} round(s)':>25}")
    print()
    print(f"per image: harness {1000 / median_harness:.1f} ms, bare {1000 / median_bare:.1f} ms (medians)")
    print(f"median ratio harness/bare: {median_ratio:.4f}")
    if noisy:
        print(f"WARNING: other processes used more than {args.max_other_load:.0%} of the CPUs during "
              f"{sum(not q for *_, q in rounds)} of {len(rounds)} rounds (column 'other load'), more than could be "
              "redone: this run measured contention as much as the harness; rerun it on a quiet machine.")
    passed = median_ratio >= REQUIRED_RATIO and identical
    verdict = "PASS" if passed else "FAIL"
    reason = f"median ratio {median_ratio:.4f} {'>=' if median_ratio >= REQUIRED_RATIO else '<'} {REQUIRED_RATIO}"
    if not identical:
        reason += "; the two paths made different pixels, so they did not do the same work"
    if noisy:
        reason += " (noisy machine: not trustworthy)"
    print(f"{verdict}: {reason}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
