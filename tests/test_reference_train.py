"""`harness reference train`: a few real steps of both stages, kill and resume, save and load as a real model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, harness_env

from harness.reference.world import TRAINING_WORLD, make_metadata

pytestmark = pytest.mark.slow

# every stage and every periodic action in a few seconds: tiny batches, a checkpoint and a log line every step
SETTINGS = ["vae_steps=4", "vae_batch_size=4", "steps=6", "batch_size=4", "warmup_steps=2", "eval_every=3",
            "eval_prompts=6", "eval_steps=2", "checkpoint_every=1", "log_every=1", "compile=false"]


def train_command(out: Path, work: Path) -> list[str]:
    args = [a for s in SETTINGS for a in ("--set", s)]
    return [sys.executable, "-m", "harness", "reference", "train", "--out", str(out), "--work-dir", str(work),
            "--device", "cpu", *args]


def logged(out: Path) -> list[dict]:
    path = out / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_train_resume_after_sigkill_matches_uninterrupted_run_and_loads(tmp_path):
    env = harness_env()
    whole = subprocess.run(train_command(tmp_path / "whole", tmp_path / "whole-work"), capture_output=True,
                           text=True, env=env, cwd=REPO, timeout=600)
    assert whole.returncode == 0, whole.stderr
    log = logged(tmp_path / "whole")
    assert [e["step"] for e in log if e["stage"] == "vae" and "loss" in e] == [1, 2, 3, 4]
    assert [e["step"] for e in log if e["stage"] == "transformer" and "loss" in e] == [1, 2, 3, 4, 5, 6]
    agreement = next(e["judge_agreement"] for e in log if "judge_agreement" in e)
    assert set(agreement) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    evals = [e for e in log if "eval" in e]
    assert [e["step"] for e in evals] == [3, 6] and "overall" in evals[-1]["eval"]
    assert log[-1]["step"] == 6
    card = (tmp_path / "whole" / "README.md").read_text()
    assert "Training device: CPU" in card and "| counting |" in card
    # the model records its world, and the card the prompts training never drew
    assert json.loads((tmp_path / "whole" / "world.json").read_text()) == {"world": "shapes-v3"}
    assert "World: shapes-v3" in card and "| task | train | validation | test | test prompts |" in card
    held_out = TRAINING_WORLD.prompt_args("counting", "test")
    assert all(make_metadata("counting", *a)["prompt"].removeprefix("a photo of ") in card for a in held_out)

    # the same command, killed once its transformer stage has checkpointed a few steps, then run again
    out, work = tmp_path / "resumed", tmp_path / "resumed-work"
    process = subprocess.Popen(train_command(out, work), env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not any(e["stage"] == "transformer" and e["step"] >= 2 for e in logged(out)):
        assert process.poll() is None and time.monotonic() < deadline, "training ended or stalled before the kill"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run(train_command(out, work), capture_output=True, text=True, env=env, cwd=REPO,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert logged(out) == [{**e, "elapsed_s": logged(out)[i]["elapsed_s"]} for i, e in enumerate(log)]
    for weights in sorted((tmp_path / "whole").glob("*/*.safetensors")):
        twin = out / weights.relative_to(tmp_path / "whole")
        assert twin.read_bytes() == weights.read_bytes(), weights.relative_to(tmp_path / "whole")

    from harness.models.loading import load_model
    from harness.models.presets import PRESETS

    model = load_model(PRESETS["reference"], weights=str(out), device="cpu")
    assert len(model.transformer.transformer_blocks) == 12
    assert model.transformer.transformer_blocks[-1].context_pre_only
    assert model.transformer.dtype.is_floating_point and str(model.transformer.dtype) == "torch.float32"
    assert model.pipeline.vae.config.scaling_factor != 1.0  # set from the trained latents' spread


@pytest.mark.parametrize("steps", [50, 5000])
def test_transformer_learning_rate_warms_up_then_decays_to_zero_on_a_cosine(steps):
    from harness.commands.reference_train import TrainConfig, transformer_lr

    config = TrainConfig(steps=steps, warmup_steps=10, lr=1e-3)
    rates = [transformer_lr(config, step) for step in range(steps + 1)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:10], rates[1:10], strict=False))  # warm-up rises
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))  # then never rises again
    halfway = 10 + (steps - 10) // 2
    assert rates[10] == pytest.approx(1e-3) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert rates[halfway] == pytest.approx(5e-4, rel=0.01)


def test_compiled_training_takes_the_same_steps_as_eager(tmp_path):
    """`compile=true` (torch.compile of the transformer's training forward and backward) is a speed option only:
    three optimiser steps land on the same weights as eager execution, and the saved EMA copy is unaffected."""
    import torch

    from harness.commands.reference_train import TrainConfig, _Trainer

    def trained(compile_: bool) -> list[torch.Tensor]:
        config = TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=100, eval_prompts=6, eval_steps=1,
                             checkpoint_every=100, compile=compile_)
        trainer = _Trainer(tmp_path / f"out-{compile_}", tmp_path / f"work-{compile_}", config, "cpu", False)
        trainer.start_transformer_stage()  # the autoencoder stays at its seeded initialisation in both runs
        trainer.train_transformer()
        ema = [p.detach().clone() for p in trainer.ema_pipeline().transformer.parameters()]
        return [p.detach().clone() for p in trainer.pipe.transformer.parameters()] + ema

    eager, compiled = trained(False), trained(True)
    start = [p.detach() for p in _Trainer(tmp_path / "o", tmp_path / "w", TrainConfig(), "cpu", False)
             .pipe.transformer.parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(eager, start, strict=False)) > 1e-3  # it did train
    assert max((a - b).abs().max().item() for a, b in zip(eager, compiled, strict=True)) < 1e-4
