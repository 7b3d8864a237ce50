"""Train the reference model from scratch: `harness reference train --out DIR`.

Two stages on an endless stream of rendered scenes (no data set on disk):
1. the autoencoder (reconstruction loss), after which its latents' mean and spread set the VAE's shift and scale;
2. the transformer and both CLIP text towers together on the rectified-flow objective SD3 uses (x_t = s*eps +
   (1-s)*x0, target eps - x0, s logit-normal), with caption dropout for classifier-free guidance, a learning rate
   that warms up and then decays to zero on a cosine, and an EMA of the weights, which is what gets saved.

Each stage seeds its own random streams, so the transformer stage does not depend on how many draws the autoencoder
stage made.

Training draws captions only from the world's train split; the periodic evaluation scores its validation split, so
no decision about training is taken on the benchmark (the test split). The saved model records its world
(`world.json`) and its card lists the prompts held out from training.

Everything is seeded; a
checkpoint (atomic, loaded with weights_only=True) is written every `checkpoint_every` steps, and a rerun with the
same work folder resumes from it. The log (losses, periodic geneval-shapes scores on a
stratified subset of the validation prompts, device, wall time) is JSONL beside the saved model, with a model card.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import math
import os
import platform
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.models.reference import TEXT_TOKENS_T5, TRAINING_LR, build_untrained_pipeline
from harness.reference.render import training_batch
from harness.reference.world import SPLITS, TAGS, TRAINING_WORLD, WORLD_FILE, world_named
from harness.results import write_atomic

STAGES = ("vae", "transformer")
CHECKPOINT = "checkpoint.pt"
LOG = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    world: str = TRAINING_WORLD.name  # the world whose train split the captions come from
    vae_steps: int = 1200
    vae_batch_size: int = 32
    vae_lr: float = 2e-3
    steps: int = 6500  # at the 1.0 s per compiled step of the shapes-v2 runs, about 110 min, 125 with the autoencoder;
    # a 2-core CPU without AVX-512 (seen 2026-12-07) took 1.37 s per autoencoder step against 0.54 and ~1.7 s per
    # transformer step, too slow for this within 150 min
    batch_size: int = 64  # batch 32 x 8000 steps (1.6x the updates, 0.8x the samples, 112 min) scored worse on the
    # full suite: overall 0.299 against 0.385, colours 0.41 against 0.86
    lr: float = TRAINING_LR  # peak; linear warm-up, then a cosine to zero at `steps` (a constant rate left the last
    # trained weights noisy and the EMA of them far behind)
    warmup_steps: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # reached after warm-up: the decay at step t is min(ema_decay, (1 + t) / (10 + t))
    caption_dropout: float = 0.1
    # position and colour attribution were never learned in the earlier trials: show them three times as often; with
    # two_object doubled, two-shape scenes are 8 in 11 of the data (at 1, 1, 1, 1, 2, 2 the model drew both objects as
    # the same shape in 116 of its 121 failed two-object prompts, and scored 0.23 on position and 0.21 on color_attr)
    # the shapes-v2 attempt at 3 still bound colours at random (0.22 on training prompts): color_attr gets 4
    task_weights: tuple[tuple[str, float], ...] = (("single_object", 1.0), ("two_object", 2.0), ("counting", 1.0),
                                                  ("colors", 1.0), ("position", 3.0), ("color_attr", 4.0))
    # torch.compile the transformer's training forward and backward: on a 2-core CPU a whole step took 1.16 s against
    # 1.33 s eager (the model is small enough for op overhead to matter). Needs a C++ compiler (Triton on CUDA):
    # `--set compile=false` trains eagerly where none exists
    compile: bool = True
    eval_every: int = 1000
    eval_prompts: int = 60  # of the validation split, stratified
    eval_steps: int = 20
    eval_guidance: float = 2.5
    checkpoint_every: int = 250
    log_every: int = 25


def transformer_lr(config: TrainConfig, step: int) -> float:
    """Linear warm-up over `warmup_steps`, then a cosine from `lr` down to zero at `steps`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def _edges(x: Any) -> Any:
    """1 where a pixel's 3x3 neighbourhood spans more than one colour (outlines), else 0; shape (N, 1, H, W)."""
    import torch.nn.functional as F

    spread = F.max_pool2d(x, 3, 1, 1) + F.max_pool2d(-x, 3, 1, 1)
    return (spread.amax(1, keepdim=True) > 0.05).float()


class _Trainer:
    def __init__(self, out: Path, work: Path, config: TrainConfig, device: str, progress: bool) -> None:
        import torch

        self.out, self.work, self.config, self.progress = out, work, config, progress
        self.device = torch.device(device)
        self.pipe = build_untrained_pipeline(config.seed).to(self.device)
        self.rng = random.Random(config.seed)
        torch.manual_seed(config.seed)
        self.weights = dict(config.task_weights)
        self.world = world_named(config.world)
        self.stage, self.step, self.elapsed = "vae", 0, 0.0
        self.log: list[dict[str, Any]] = []
        self.trainable = [self.pipe.transformer, self.pipe.text_encoder, self.pipe.text_encoder_2]
        self.vae_optimizer = torch.optim.AdamW(self.pipe.vae.parameters(), lr=config.vae_lr)
        params = [p for module in self.trainable for p in module.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.ema = [p.detach().clone() for p in params]

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        import torch

        return {
            "config": dataclasses.asdict(self.config),
            "stage": self.stage, "step": self.step, "elapsed": self.elapsed,
            "vae": self.pipe.vae.state_dict(),
            "vae_config": {"scaling_factor": self.pipe.vae.config.scaling_factor,
                           "shift_factor": self.pipe.vae.config.shift_factor},
            "models": [m.state_dict() for m in self.trainable],
            "ema": self.ema,
            "vae_optimizer": self.vae_optimizer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "world_rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            # the noise and timesteps are drawn on the training device: without its generator a CUDA resume would
            # not continue the same run
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def resume(self) -> bool:
        import torch

        path = self.work / CHECKPOINT
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=True, map_location=self.device)
        if state["config"] != dataclasses.asdict(self.config):
            raise ValueError(f"{path} was written with another training configuration; use another --work-dir")
        self.stage, self.step, self.elapsed = state["stage"], state["step"], state["elapsed"]
        self.pipe.vae.load_state_dict(state["vae"])
        self.pipe.vae.register_to_config(**state["vae_config"])
        for module, module_state in zip(self.trainable, state["models"], strict=True):
            module.load_state_dict(module_state)
        self.ema = [t.to(self.device) for t in state["ema"]]
        self.vae_optimizer.load_state_dict(state["vae_optimizer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.setstate(_as_tuple(state["world_rng"]))
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        log_path = self.out / LOG
        if log_path.is_file():  # drop what was logged after the checkpoint: it will be redone identically
            lines = [json.loads(line) for line in log_path.read_text().splitlines()]
            now = (STAGES.index(self.stage), self.step)
            self.log = [e for e in lines if (STAGES.index(e["stage"]), e["step"]) <= now]
        return True

    def checkpoint(self) -> None:
        _atomic_save(self.state(), self.work / CHECKPOINT)
        write_atomic(self.out / LOG, "".join(json.dumps(entry) + "\n" for entry in self.log).encode())

    def record(self, **entry: Any) -> None:
        entry = {"stage": self.stage, "step": self.step, "elapsed_s": round(self.elapsed, 1), **entry}
        self.log.append(entry)
        if self.progress:
            print(json.dumps(entry), flush=True)

    # -- stage 1: the autoencoder ---------------------------------------------------------------------------------
    def train_vae(self) -> None:
        import torch

        from harness.models.vae import to_model_range

        vae, config = self.pipe.vae, self.config
        vae.train()
        while self.step < config.vae_steps:
            started = time.perf_counter()
            _, images = training_batch(self.world, self.rng, config.vae_batch_size, self.weights)
            x = to_model_range(images, self.device)
            posterior = vae.encode(x).latent_dist
            reconstruction = vae.decode(posterior.sample()).sample
            # object outlines weigh 5x: a blurred triangle tip is what makes the judge miss a shape
            weight = 1 + 4 * _edges(x)
            error = (reconstruction - x).square() + 0.5 * (reconstruction - x).abs()
            loss = (weight * error).mean() / weight.mean() + 1e-6 * posterior.kl().mean()
            lr = config.vae_lr * 0.5 * (1 + math.cos(math.pi * self.step / config.vae_steps))  # cosine to zero
            for group in self.vae_optimizer.param_groups:
                group["lr"] = lr
            self.vae_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            self.vae_optimizer.step()
            self.step += 1
            self.elapsed += time.perf_counter() - started
            if self.step % config.log_every == 0:
                self.record(loss=round(loss.item(), 5), lr=lr)
            if self.step % config.checkpoint_every == 0:
                self.checkpoint()
        vae.eval()
        self._set_latent_statistics()
        self.record(judge_agreement=autoencoder_agreement(self.pipe.vae, self.world, self.config.seed + 2))
        self.start_transformer_stage()
        self.checkpoint()

    def start_transformer_stage(self) -> None:
        import torch

        self.stage, self.step = "transformer", 0
        self.rng = random.Random(self.config.seed + 3)
        torch.manual_seed(self.config.seed + 3)

    def _set_latent_statistics(self) -> None:
        import torch

        from harness.models.vae import to_model_range

        with torch.no_grad():
            rng = random.Random(self.config.seed + 1)
            latents = torch.cat([self.pipe.vae.encode(to_model_range(training_batch(self.world, rng, 64,
                                                                                    self.weights)[1],
                                                                       self.device)).latent_dist.mode()
                                 for _ in range(16)])
        shift, std = latents.mean().item(), latents.std().item()
        self.pipe.vae.register_to_config(shift_factor=shift, scaling_factor=1.0 / std)

    # -- stage 2: transformer and text encoders --------------------------------------------------------------------
    def train_transformer(self) -> None:
        import torch
        import torch.nn.functional as F

        from harness.models.vae import encode_images

        config, pipe = self.config, self.pipe
        params = [p for module in self.trainable for p in module.parameters()]
        for module in self.trainable:
            module.train()
        pipe.vae.eval()  # frozen; also after a resume, whose fresh VAE starts in train mode
        # a compiled wrapper, not `Module.compile()`: the EMA copy (deepcopy) must not carry the compiled callable,
        # which stays bound to the trained module
        transformer = torch.compile(pipe.transformer) if config.compile else pipe.transformer
        while self.step < config.steps:
            started = time.perf_counter()
            prompts, images = training_batch(self.world, self.rng, config.batch_size, self.weights)
            prompts = [p if self.rng.random() >= config.caption_dropout else "" for p in prompts]
            x0 = encode_images(pipe, images)
            prompt_embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompts, prompt_2=prompts, prompt_3=prompts, device=self.device,
                do_classifier_free_guidance=False, max_sequence_length=TEXT_TOKENS_T5,
            )
            noise = torch.randn_like(x0)
            sigma = torch.sigmoid(torch.randn(x0.shape[0], device=self.device))  # logit-normal(0, 1)
            s = sigma.view(-1, 1, 1, 1)
            x_t = s * noise + (1 - s) * x0
            velocity = transformer(hidden_states=x_t, timestep=sigma * 1000, encoder_hidden_states=prompt_embeds,
                                   pooled_projections=pooled).sample
            loss = F.mse_loss(velocity, noise - x0)
            lr = transformer_lr(config, self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.optimizer.step()
            decay = min(config.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in params], 1 - decay)
            self.step += 1
            self.elapsed += time.perf_counter() - started
            if self.step % config.log_every == 0:
                self.record(loss=round(loss.item(), 5), grad_norm=round(grad_norm.item(), 4), lr=lr)
            if self.step % config.eval_every == 0 or self.step == config.steps:
                eval_started = time.perf_counter()
                self.record(eval=self.evaluate())
                self.elapsed += time.perf_counter() - eval_started
            if self.step % config.checkpoint_every == 0:
                self.checkpoint()
        self.checkpoint()

    def ema_pipeline(self) -> Any:
        """A copy of the pipeline carrying the EMA weights, in eval mode."""
        import copy

        import torch

        pipe = copy.deepcopy(self.pipe)
        modules = [pipe.transformer, pipe.text_encoder, pipe.text_encoder_2]
        with torch.no_grad():
            for target, value in zip([p for m in modules for p in m.parameters()], self.ema, strict=True):
                target.copy_(value)
        for component in pipe.components.values():
            if hasattr(component, "eval"):
                component.eval()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def evaluate(self) -> dict[str, float]:
        """geneval-shapes on a stratified subset of the validation prompts, one image each, with the EMA
        weights."""
        import torch

        from harness.generation import Sample, image_seed, to_uint8
        from suites.geneval_shapes import GenevalShapesSuite

        pipe = self.ema_pipeline()
        suite = GenevalShapesSuite(GenevalShapesSuite.Params(samples_per_prompt=1, world=self.world.name,
                                                             split="validation", train_share=0))
        requests = suite.requests(self.config.eval_prompts)
        samples = []
        for start in range(0, len(requests), 30):
            chunk = requests[start:start + 30]
            generators = [torch.Generator("cpu").manual_seed(image_seed(0, r.prompt_index, 0)) for r in chunk]
            with torch.no_grad():
                images = pipe(prompt=[r.prompt for r in chunk], negative_prompt=[""] * len(chunk),
                              num_inference_steps=self.config.eval_steps, guidance_scale=self.config.eval_guidance,
                              max_sequence_length=TEXT_TOKENS_T5, generator=generators, output_type="np").images
            samples += [Sample(r, 0, image, Path("-")) for r, image in zip(chunk, to_uint8(images), strict=True)]
        result = suite.evaluate(samples, None)
        return {name: round(value.value, 4) for name, value in result.metrics.items()}

    # -- the saved model --------------------------------------------------------------------------------------------
    def save(self) -> None:
        import torch

        pipe = self.ema_pipeline().to(torch.float16)  # half-precision storage; loads back as float32 for the CPU
        pipe.save_pretrained(self.out, safe_serialization=True)
        write_atomic(self.out / WORLD_FILE, json.dumps({"world": self.world.name}).encode())
        self.checkpoint()
        _write_card(self.out, self.config, self.log, self.device)


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _write_card(out: Path, config: TrainConfig, log: list[dict[str, Any]], device: Any) -> None:
    import torch

    evals = [e for e in log if "eval" in e]
    final = evals[-1]["eval"] if evals else {}
    vae = next((e["judge_agreement"] for e in log if "judge_agreement" in e), {})
    vae_minutes = max((e["elapsed_s"] for e in log if e["stage"] == "vae"), default=0) / 60
    # elapsed_s runs on across stages
    wall_minutes = max((e["elapsed_s"] for e in log), default=0) / 60 - vae_minutes
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()}, " \
        f"{torch.get_num_threads()} threads)"
    rows = "\n".join(f"| {tag} | {final.get(tag, float('nan')):.3f} | {vae.get(tag, float('nan')):.3f} |"
                     for tag in TAGS)
    card = f"""# The reference model

A 12-block SD3 MMDiT trained from scratch on the synthetic shapes world (`harness/reference/world.py`) by
`harness reference train` (configuration at the end). Training device: {where}.
Training time: {vae_minutes:.1f} min for the autoencoder and {wall_minutes:.1f} min for the transformer and text
encoders (evaluations included).
Weights are stored in float16; the harness loads them as float32 on the CPU.

World: {config.world}. Captions came only from its train split; the periodic evaluation used {config.eval_prompts}
stratified validation prompts; the benchmark (geneval-shapes) is the test split.
{_split_table(world_named(config.world))}
Last periodic evaluation ({config.eval_prompts} stratified validation prompts, one image each,
{config.eval_steps} steps, guidance {config.eval_guidance}); overall {final.get('overall', float('nan')):.3f}.
The ceiling column is the judge's accuracy on autoencoded renders.

| task | score | ceiling |
|---|---|---|
{rows}

Training configuration: `{json.dumps(dataclasses.asdict(config))}`. The full log is `{LOG}`.
"""
    (out / "README.md").write_text(card)


def check_can_compile(config: TrainConfig, device: str) -> None:
    """torch.compile fails deep inside the first compiled step when its compiler is missing: say so before any work."""
    if not config.compile:
        return
    if device.startswith("cuda"):
        needed, found = "Triton", importlib.util.find_spec("triton") is not None
    else:
        compilers = (os.environ.get("CXX") or "c++", "g++", "clang++")
        needed, found = "a C++ compiler (c++, g++ or clang++)", any(shutil.which(c) for c in compilers)
    if not found:
        raise UsageError(f"compile=true needs {needed} on {device}, and none was found: install one, or train "
                         "eagerly with --set compile=false")


def train(out: Path, work: Path, config: TrainConfig = TrainConfig(), device: str = "cpu",
          progress: bool = True) -> Path:
    """Train (or resume) and save the reference pipeline into `out`; returns `out`."""
    from harness.results import check_output_folder

    check_output_folder(out, "--out", "the trained model")
    check_output_folder(work, "--work-dir", "checkpoints")
    check_can_compile(config, device)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(out, work, config, device, progress)
    trainer.resume()
    if trainer.stage == "vae":
        trainer.train_vae()
    trainer.train_transformer()
    trainer.save()
    return out


def _split_table(world: Any) -> str:
    """Per task, how many distinct prompts each split holds and the prompts training never saw."""
    if not world.held_out_tags():
        return "Every prompt of this world is in every split: none is held out.\n"
    from harness.reference.world import make_metadata

    rows = []
    for tag in TAGS:
        counts = " | ".join(str(len(world.prompt_args(tag, split))) for split in SPLITS)
        held = "; ".join(make_metadata(tag, *a)["prompt"].removeprefix("a photo of ")
                         for a in world.prompt_args(tag, "test")) if tag in world.held_out_tags() else "(none held out)"
        rows.append(f"| {tag} | {counts} | {held} |")
    return ("\n| task | train | validation | test | test prompts |\n|---|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nSplits fixed by the world's seed ({world.split_seed}): `harness/reference/world.py`.\n")


def autoencoder_agreement(vae: Any, world: Any, seed: int, per_task: int = 50) -> dict[str, float]:
    """Per task, the fraction of renders the judge still scores correct after the VAE's encode and decode: the
    ceiling of every score the reference model can reach."""
    import numpy as np
    import torch

    from harness.geneval_rules import evaluate
    from harness.models.vae import to_model_range
    from harness.reference.judge import classify_colors, detect
    from harness.reference.render import render
    from harness.reference.world import scene_for

    rng = random.Random(seed)
    agreement = {}
    for tag in TAGS:
        metadata = [world.random_metadata(rng, tag) for _ in range(per_task)]
        images = np.stack([render(scene_for(m, rng)) for m in metadata])
        with torch.no_grad():
            x = to_model_range(images, vae.device).to(vae.dtype)
            decoded = vae.decode(vae.encode(x).latent_dist.mode()).sample.float()
        decoded = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        agreement[tag] = float(np.mean([evaluate(image, detect(image, world.shapes), m, classify_colors).correct
                                        for image, m in zip(decoded, metadata, strict=True)]))
    return agreement
