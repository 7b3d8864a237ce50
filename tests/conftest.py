from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.models import tiny as _tiny

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def shared_data(relative: str) -> Path:
    """A file of ../shared/data: skipped where the folder is absent (a user's fresh clone), a failure under CI."""
    path = SHARED / "data" / relative
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must have ../shared beside the repository")
        pytest.skip(f"{path} is not here (../shared/data comes with CI; a fresh clone lacks it)")
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    """A fresh image cache and results folder for one test."""
    return {"cache": tmp_path / "cache", "out": tmp_path / "runs"}


def harness_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "ACCELERATE_"))}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def run_harness(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=env or harness_env(), timeout=timeout, cwd=REPO)


def invoke(*args: str) -> subprocess.CompletedProcess:
    """`harness ARGS` in this process (no interpreter start-up): exit code, stdout and stderr."""
    import contextlib
    import io

    from harness.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own errors
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["harness", *args], code, out.getvalue(), err.getvalue())


def write_metadata_jsonl(metadata: list[dict], path: Path) -> None:
    """Metadata one JSON object a line, formatted as GenEval's `evaluation_metadata.jsonl`."""
    Path(path).write_text("".join(json.dumps(m) + "\n" for m in metadata))


def run_args(dirs: dict[str, Path], *extra: str) -> list[str]:
    """`harness run` into the test's folders; on the fast tiny-sd3 unless `extra` names a model."""
    model = [] if "--model" in extra else ["--model", "tiny-sd3"]
    return ["run", "--output-dir", str(dirs["out"]), "--cache-dir", str(dirs["cache"]), "--no-progress", *model,
            *extra]


def read_results(stdout: str) -> dict:
    path = Path(stdout.strip().splitlines()[-1])
    assert path.name == "results.json", stdout
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def tiny_sd3_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD3 pipeline saved in diffusers format, as a user's local model folder."""
    from harness.models.tiny import build_tiny_sd3

    folder = tmp_path_factory.mktemp("tiny-sd3-folder")
    build_tiny_sd3().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/plugin_example installed as its own distribution into a folder to put on PYTHONPATH."""
    import shutil

    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(REPO / "tests" / "plugin_example", root / "source")  # builds write there
    target = root / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    return target


# Diffusers folders of configurations no preset has, as a new user brings them (tests/test_folder_models.py,
# tests/test_bad_input_commands.py)
FOLDER_CONFIGS = {
    # 6 blocks, 4 heads of 8, sample size 4 (32 px images), a positional table for up to 128 px
    "sd3-6-blocks": ("sd3", {**_tiny.TINY_SD3_TRANSFORMER, "num_layers": 6, "num_attention_heads": 4,
                             "attention_head_dim": 8, "sample_size": 4, "pos_embed_max_size": 8}),
    # SD3.5-Medium-like: 8 blocks, the first four dual-attention
    "sd35m-8-blocks": ("sd3", {**_tiny.TINY_SD3_TRANSFORMER, "num_layers": 8, "dual_attention_layers": (0, 1, 2, 3)}),
    # FLUX-dev-like with guidance embeddings: 3 double + 1 single blocks, 4 heads
    "flux-guidance": ("flux", {**_tiny.TINY_FLUX_TRANSFORMER, "num_layers": 3, "num_single_layers": 1,
                               "num_attention_heads": 4}),
}


@pytest.fixture(scope="session")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import diffusers
    import torch

    root = tmp_path_factory.mktemp("folder-models")
    built = {}
    for name, (family, config) in FOLDER_CONFIGS.items():
        pipeline = (_tiny.build_tiny_sd3 if family == "sd3" else _tiny.build_tiny_flux)(config)
        assert isinstance(pipeline, (diffusers.StableDiffusion3Pipeline, diffusers.FluxPipeline))
        with torch.no_grad():
            pipeline.save_pretrained(root / name)
        built[name] = root / name
    return built
