"""The image cache verifies what it reads: a damaged, emptied or replaced PNG is regenerated with a warning naming
it, never scored; temporaries a killed writer left behind are removed (only those of dead processes on this host)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, read_results, run_args
from PIL import Image

from harness.errors import UsageError
from harness.generation import ImageCache
from harness.results import process_tag, stale_process_tag

FAST = ("--suite", "fidelity", "--limit", "2", "--set", "sampling.num_inference_steps=2")


def _cached(cache: Path) -> list[Path]:
    return sorted((cache / "images").rglob("*.png"))


def _damage(path: Path, how: str, other: Path) -> None:
    content = path.read_bytes()
    if how == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif how == "garbled":
        path.write_bytes(content[:40] + bytes(255 - b for b in content[40:]))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "other pixels":  # a valid PNG, not the harness's
        Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(path)
    elif how == "another key's image":  # a valid harness PNG, written for another key
        shutil.copyfile(other, path)


@pytest.mark.parametrize("how", ["truncated", "garbled", "empty", "other pixels", "another key's image"])
def test_a_damaged_cached_image_is_regenerated_and_named(dirs, how):
    first = invoke(*run_args(dirs, *FAST))
    assert first.returncode == 0, first.stderr
    damaged, other = _cached(dirs["cache"])
    original = damaged.read_bytes()
    _damage(damaged, how, other)
    again = invoke(*run_args(dirs, *FAST))
    assert again.returncode == 0, again.stderr
    assert str(damaged) in again.stderr and "regenerat" in again.stderr
    results = read_results(again.stdout)
    assert results["generation"]["images_generated_main_process"] == 1
    assert results["metrics"] == read_results(first.stdout)["metrics"]
    assert damaged.read_bytes() == original  # the same pixels again, bit for bit


def test_reading_a_damaged_image_names_the_file(tmp_path):
    cache = ImageCache(tmp_path)
    cache.write("ab" * 32, np.zeros((8, 8, 3), np.uint8))
    path = cache.path("ab" * 32)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(UsageError, match=str(path)):
        cache.read("ab" * 32)


def test_temporaries_of_dead_writers_on_this_host_are_removed(dirs):
    folder = dirs["cache"] / "images" / "00"
    folder.mkdir(parents=True)
    dead = folder / f".{'0' * 64}.png.{2 ** 22 + 12345}@{socket.gethostname()}.tmp"  # no such pid
    alive = folder / f".{'1' * 64}.png.{process_tag()}.tmp"
    elsewhere = folder / f".{'2' * 64}.png.{2 ** 22 + 12345}@another-host.tmp"
    for path in (dead, alive, elsewhere):
        path.write_bytes(b"partial")
    result = invoke(*run_args(dirs, *FAST))
    assert result.returncode == 0, result.stderr
    assert not dead.exists() and alive.exists() and elsewhere.exists()


def test_a_process_tag_is_stale_only_for_a_dead_process_here():
    assert not stale_process_tag(process_tag())
    assert stale_process_tag(f"{2 ** 22 + 12345}@{socket.gethostname()}")
    assert not stale_process_tag(f"{2 ** 22 + 12345}@another-host")  # cannot tell: left alone
    assert stale_process_tag(str(2 ** 22 + 12345))  # written before hosts were recorded: this host's
    assert not stale_process_tag(str(os.getpid()))
