"""Crash safety and sharding of whole `harness run` processes (slow: each case starts real processes)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, harness_env, read_results, run_args, run_harness
from PIL import Image

pytestmark = pytest.mark.slow

# 12 originals + 12 compressed images in 2-image batches, through a method that changes the model
JOB = ("--method", "attenuate-output", "--limit", "12", "--batch-size", "2")
IMAGES_PER_RUN = 24


def cached_pngs(cache: Path) -> list[Path]:
    return sorted(cache.glob("images/*/*.png"))


def assert_nothing_partial(dirs: dict[str, Path]) -> None:
    """Every run folder holds complete, parseable files; every cached PNG decodes."""
    out = dirs["out"]
    for run_dir in (p for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []:
        names = sorted(f.name for f in run_dir.iterdir())
        assert [n for n in names if not n.startswith("thumb-")] == ["results.json", "samples.jsonl"]
        for thumbnail in run_dir.glob("thumb-*.png"):  # the leaderboard's small images
            with Image.open(thumbnail) as image:
                image.load()
        json.loads((run_dir / "results.json").read_text())
        for line in (run_dir / "samples.jsonl").read_text().splitlines():
            json.loads(line)
    for png in cached_pngs(dirs["cache"]):
        with Image.open(png) as image:
            image.load()


def test_sigkill_at_random_points_then_rerun_completes_with_same_metrics(tmp_path, plugin_site):
    env = harness_env(PYTHONPATH=str(plugin_site))
    reference_dirs = {"cache": tmp_path / "ref-cache", "out": tmp_path / "ref-runs"}
    started = time.perf_counter()
    reference = run_harness(*run_args(reference_dirs, *JOB), env=env)
    full_seconds = time.perf_counter() - started
    assert reference.returncode == 0, reference.stderr
    expected = read_results(reference.stdout)["metrics"]
    assert 0 < expected["fidelity/psnr"] < 100

    # Kill points spread over the whole run: while starting up (0 images cached), at random moments during both
    # generation phases (after k images), and at random moments after the last image (scoring, writing results).
    rng = random.Random(20261126)
    thresholds = [0, 0, *sorted(rng.sample(range(1, IMAGES_PER_RUN), 7)), *[IMAGES_PER_RUN] * 3]
    kills = 0
    for point, threshold in enumerate(thresholds):
        dirs = {"cache": tmp_path / f"cache-{point}", "out": tmp_path / f"runs-{point}"}
        process = subprocess.Popen([sys.executable, "-m", "harness", *run_args(dirs, *JOB)], env=env, cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10 * full_seconds
        while len(cached_pngs(dirs["cache"])) < threshold and process.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.005)
        if threshold == 0:
            time.sleep(rng.uniform(0.1, 0.5) * full_seconds)  # start-up: imports, model build
        elif threshold == IMAGES_PER_RUN:
            time.sleep(rng.uniform(0.0, 0.2))  # scoring and writing the run folder
        if process.poll() is not None:  # finished before the kill point
            continue
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        assert_nothing_partial(dirs)
        present = len(cached_pngs(dirs["cache"]))

        rerun = run_harness(*run_args(dirs, *JOB), env=env)
        assert rerun.returncode == 0, rerun.stderr
        results = read_results(rerun.stdout)
        assert results["generation"]["images_generated_main_process"] == IMAGES_PER_RUN - present, point
        assert results["metrics"] == expected, point
        assert_nothing_partial(dirs)
        assert not list(dirs["out"].glob(".staging-*"))
        shutil.rmtree(dirs["cache"])
    assert kills >= 10


def test_two_process_accelerate_run_equals_one_process(tmp_path, plugin_site):
    # one thread per process in both runs, as `accelerate launch` sets for its workers: on some CPUs a matmul's result
    # depends on the thread count in the last bits, which is not what this test is about
    env = harness_env(PYTHONPATH=str(plugin_site), OMP_NUM_THREADS="1")
    one = {"cache": tmp_path / "one-cache", "out": tmp_path / "one-runs"}
    two = {"cache": tmp_path / "two-cache", "out": tmp_path / "two-runs"}
    job = ("--method", "attenuate-output", "--limit", "6", "--batch-size", "2", "--device", "cpu")
    single = run_harness(*run_args(one, *job), env=env)
    assert single.returncode == 0, single.stderr
    launcher = Path(sys.executable).with_name("accelerate")
    sharded = subprocess.run(
        [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "harness", *run_args(two, *job)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert sharded.returncode == 0, sharded.stderr
    single_results, sharded_results = read_results(single.stdout), read_results(sharded.stdout)
    assert sharded_results["generation"]["num_processes"] == 2
    assert sharded_results["metrics"] == single_results["metrics"]
    assert len(list(two["out"].iterdir())) == 1  # one merged result
    # rank 0 generated only its share: batches 0 and 2 of each phase
    assert sharded_results["generation"]["images_generated_main_process"] == 8
    one_images = {p.relative_to(one["cache"]): p.read_bytes() for p in cached_pngs(one["cache"])}
    two_images = {p.relative_to(two["cache"]): p.read_bytes() for p in cached_pngs(two["cache"])}
    assert len(one_images) == 12 and one_images == two_images
