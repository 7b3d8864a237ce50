"""Recovery distillation of a pruned transformer against its unpruned teacher (SGDistill's losses, FACTS section 1).

    L = out_weight * MSE(v_student, v_teacher)
      + feature_weight * sum over trained kept blocks j of MSE(student block j output, teacher block o(j) output)
        (image and text streams; o(j) is block j's index before pruning)
      + task_weight * MSE(x0_hat, x0),  x0_hat = x_t - sigma * v_student

with x_t = sigma * eps + (1 - sigma) * x0 and sigma drawn logit-normal(0, 1) through the scheduler's training sigmas.
Each kept block trains at learning rate lr * intensity[j] (0 freezes it); the method decides the intensities.

Training pairs: the reference world's renderer for the reference model; for real models `distill_data`, either a
folder of images with same-named .txt captions, or a .txt prompt list whose images the teacher draws (cached).
Runs under `accelerate` (one process per GPU with `accelerate launch`; one CPU process otherwise), with a checkpoint
every `CHECKPOINT_EVERY` steps in the cache that a rerun resumes from. One process resumes exactly where it stopped
(weights, optimiser, and its random streams: torch's CPU and CUDA generators and the pairs' stream), so an interrupted
distillation ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.generation import IMAGE_SUFFIXES, load_image_file

CHECKPOINT_EVERY = 50
CHECKPOINT_FORMAT = 2  # part of the work folder's name: a checkpoint of another format is never read
LOG_EVERY = 10
OUT_WEIGHT = 1.0
DISTILL_SEED = 0


def _is_reference(model: Any) -> bool:
    from harness.models.reference import WEIGHTS_DIR

    return model.spec.name == "reference" or Path(model.source).resolve() == WEIGHTS_DIR.resolve()


def needs_training_data(spec: Any) -> bool:
    """Whether distilling the model `spec` describes needs `distill_data`: every model but the reference one, whose
    world renders its own training pairs."""
    from harness.models.reference import WEIGHTS_DIR

    return not (spec.name == "reference" or (spec.repo_id and Path(spec.repo_id).resolve() == WEIGHTS_DIR.resolve()))


class _Pairs:
    """An endless, seeded stream of (captions, uint8 images) batches at the model's sampling size."""

    def __init__(self, model: Any, teacher: Any, data: Path | None, seed: int, context: Any) -> None:
        self.model, self.rng = model, random.Random(seed)
        size = (model.spec.sampling.height, model.spec.sampling.width)
        if data is None:
            if not _is_reference(model):
                raise UsageError(f"distilling '{model.spec.name}' needs training data: pass --set <method>."
                                 "distill_data=<folder of images with .txt captions, or a .txt prompt list>")
            self.kind = "reference world"
            return
        data = Path(data).expanduser()
        if data.is_dir():
            images = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            pairs = [(p, p.with_suffix(".txt")) for p in images if p.with_suffix(".txt").is_file()]
            if not pairs:
                raise UsageError(f"distill_data '{data}' holds no image with a same-named .txt caption")
            self.kind, self.items = f"{len(pairs)} captioned images", [
                (caption.read_text().strip(), load_image_file(path, size)) for path, caption in pairs]
        elif data.is_file():
            from harness.prompts import read_prompt_file

            prompts = read_prompt_file(data)
            self.kind = f"{len(prompts)} prompts drawn by the teacher"
            self.items = list(zip(prompts, _teacher_images(model, teacher, prompts, context), strict=True))
        else:
            raise UsageError(f"distill_data '{data}' does not exist")

    def next(self, size: int) -> tuple[list[str], np.ndarray]:
        if self.kind == "reference world":
            from harness.models.reference import WEIGHTS_DIR
            from harness.reference.render import training_batch
            from harness.reference.world import trained_world

            return training_batch(trained_world(WEIGHTS_DIR), self.rng, size)
        chosen = [self.rng.choice(self.items) for _ in range(size)]
        return [c for c, _ in chosen], np.stack([i for _, i in chosen])


def data_digest(data: Path) -> str:
    """A digest of what distillation reads from `distill_data`: a prompt file's bytes, or each captioned image's name,
    image bytes and caption bytes (what `_Pairs` uses, in its order). A missing path is a UsageError."""
    data = Path(data).expanduser()
    digest = hashlib.sha256()
    if data.is_dir():
        for path in sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            caption = path.with_suffix(".txt")
            if caption.is_file():
                for part in (path.name.encode(), path.read_bytes(), caption.read_bytes()):
                    digest.update(hashlib.sha256(part).digest())
    elif data.is_file():
        digest.update(data.read_bytes())
    else:
        raise UsageError(f"distill_data '{data}' does not exist")
    return "sha256:" + digest.hexdigest()


def _teacher_images(model: Any, teacher: Any, prompts: list[str], context: Any) -> list[np.ndarray]:
    """The unpruned model's images of `prompts`, through the run's image cache (as the uncompressed model's)."""
    from harness.generation import GenerationSetup, ImageCache, ImageRequest, generate, load_samples

    student = model.pipeline.transformer
    model.pipeline.transformer = teacher
    try:
        setup = GenerationSetup.for_model(model, model.spec.sampling)
        requests = [ImageRequest(p, i, 0) for i, p in enumerate(prompts)]
        cache = ImageCache(context.cache_dir)
        generate(model, setup, requests, cache, batch_size=4, sampling=model.spec.sampling,
                 description="teacher images", progress=context.progress)
        return [s.image for s in load_samples(cache, setup, requests, 4)]
    finally:
        model.pipeline.transformer = student


def _block_outputs(transformer: Any) -> tuple[dict[int, Any], list[Any]]:
    """Forward hooks that record each block's outputs (its streams, as a tuple) by execution index; returns (store,
    handles)."""
    from harness.models.topology import block_topology

    store: dict[int, Any] = {}
    handles = []
    for block in block_topology(transformer):
        def hook(_module: Any, _inputs: Any, output: Any, index: int = block.index) -> None:
            store[index] = output if isinstance(output, tuple) else (output,)  # single-stream blocks: one tensor
        handles.append(transformer.get_submodule(block.path).register_forward_hook(hook))
    return store, handles


RELEASE_DISTILL_LR = 1e-4  # AdamW, constant (FACTS section 1)


def distill_lr(params: Any, spec: Any) -> float:
    """The peak rate: `distill_lr` when set, else the rate the model was trained at, else the release's. A model
    trained at 1e-3 barely moves in a few hundred steps at the release's 1e-4 (the reference model recovered 9% of
    its pruning drop in 300 steps at 1e-4)."""
    return params.distill_lr or spec.training_lr or RELEASE_DISTILL_LR


def distill(model: Any, teacher: Any, removed: list[int], intensity: dict[int, float], params: Any,
            context: Any, train_embedders: bool = True) -> dict[str, Any]:
    """Train `model.transformer` (already pruned) towards `teacher` for `params.distill_steps` steps; returns the
    cost record (steps, seconds, losses, trained parameters)."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import FlowMatchEulerDiscreteScheduler
    from tqdm.auto import tqdm

    from harness.models.topology import block_topology
    from harness.results import write_atomic

    pipe, student, family = model.pipeline, model.transformer, model.family
    accelerator = Accelerator(cpu=model.device.type == "cpu")
    blocks = block_topology(student)
    kept_original = [i for i in range(len(blocks) + len(removed)) if i not in set(removed)]
    first_block = student.get_submodule(blocks[0].path)

    # parameter groups: each block at lr * intensity; before the blocks (embedders) per train_embedders; after, 1
    block_of: dict[int, int] = {}
    for block in blocks:
        for p in student.get_submodule(block.path).parameters():
            block_of[id(p)] = block.index
    first_block_params = {id(p) for p in first_block.parameters()}
    groups: dict[float, list[Any]] = {}
    before = True
    for name, parameter in student.named_parameters():
        if id(parameter) in first_block_params:
            before = False
        if id(parameter) in block_of:
            factor = intensity.get(block_of[id(parameter)], 1.0)
        else:
            factor = (1.0 if train_embedders else 0.0) if before and not name.startswith(("norm_out", "proj_out")) \
                else 1.0
        parameter.requires_grad_(factor > 0)
        if factor > 0:
            groups.setdefault(factor, []).append(parameter)
    trained = sum(p.numel() for group in groups.values() for p in group)
    lr = distill_lr(params, model.spec)
    optimizer = torch.optim.AdamW([{"params": ps, "lr": lr * f} for f, ps in groups.items()], lr=lr,
                                  weight_decay=1e-4)
    teacher.requires_grad_(False).eval()
    for name, module in pipe.components.items():  # text encoders and VAE stay as they are
        if isinstance(module, torch.nn.Module) and name != "transformer":
            module.requires_grad_(False)

    identity = json.dumps({"checkpoint_format": CHECKPOINT_FORMAT, "model": model.fingerprint, "removed": removed,
                           "intensity": intensity, "params": {k: str(v) for k, v in vars(params).items()},
                           "embedders": train_embedders, "sampling": model.spec.sampling.as_dict()}, sort_keys=True)
    work = context.cache_dir / "distill" / hashlib.sha256(identity.encode()).hexdigest()[:16]
    checkpoint = work / "checkpoint.pt"
    step, log, seconds, state = 0, [], 0.0, None
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True, map_location=model.device)
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        step, log, seconds = state["step"], json.loads(state["log"]), state["seconds"]
    pairs = _Pairs(model, teacher, params.distill_data, seed=DISTILL_SEED + accelerator.process_index, context=context)
    # Noise, timesteps and VAE posterior samples come from torch's global generators: seeded here, the result does
    # not depend on what the process ran before (a recipe and `harness run` distil the same model).
    if state is None:
        torch.manual_seed(DISTILL_SEED + accelerator.process_index)
    elif accelerator.is_main_process:  # the checkpoint holds this process's streams: it goes on exactly
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] is not None and model.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), model.device)
        pairs.rng.setstate(state["pairs_rng"])
    else:  # the other processes' streams are not saved: fresh ones, distinct from every process's earlier draws
        torch.manual_seed(DISTILL_SEED + 1000 * step + accelerator.process_index)
        pairs.rng.seed(DISTILL_SEED + 1000 * step + accelerator.process_index)
    student.train()
    wrapped, optimizer = accelerator.prepare(student, optimizer)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    student_features, student_hooks = _block_outputs(student)
    teacher_features, teacher_hooks = _block_outputs(teacher)
    train_blocks = [b.index for b in blocks if intensity.get(b.index, 1.0) > 0]
    bar = tqdm(total=params.distill_steps, initial=step, desc="distilling", unit="step",
               disable=not (context.progress and accelerator.is_main_process))
    try:
        while step < params.distill_steps:
            started = time.perf_counter()
            prompts, images = pairs.next(params.distill_batch_size)
            x0 = family.training_latents(pipe, images).to(model.dtype)
            u = torch.sigmoid(torch.randn(x0.shape[0]))  # logit-normal(0, 1)
            indices = (u * scheduler.config.num_train_timesteps).long().clamp(max=len(scheduler.timesteps) - 1)
            sigma = scheduler.sigmas[indices].to(model.device, model.dtype).view(-1, *[1] * (x0.dim() - 1))
            noise = torch.randn_like(x0)
            x_t = sigma * noise + (1 - sigma) * x0
            with torch.no_grad():
                inputs = family.training_inputs(pipe, x_t, sigma.flatten(), images.shape[1:3], prompts,
                                                model.spec.sampling, model.device, model.dtype)
            with torch.no_grad():
                v_teacher = family.velocity(teacher(**inputs))
            v_student = family.velocity(wrapped(**inputs))
            loss_out = F.mse_loss(v_student.float(), v_teacher.float())
            loss_feat = torch.zeros((), device=model.device)
            for j in train_blocks:
                for s_stream, t_stream in zip(student_features[j], teacher_features[kept_original[j]], strict=True):
                    if s_stream is not None and t_stream is not None:
                        loss_feat = loss_feat + F.mse_loss(s_stream.float(), t_stream.float())
            loss = OUT_WEIGHT * loss_out + params.feature_weight * loss_feat
            if params.task_weight:
                loss = loss + params.task_weight * F.mse_loss((x_t - sigma * v_student).float(), x0.float())
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_([p for ps in groups.values() for p in ps], 1.0)
            optimizer.step()
            step += 1
            seconds += time.perf_counter() - started
            bar.update(1)
            if step % LOG_EVERY == 0 or step == params.distill_steps:
                log.append({"step": step, "loss": round(loss.item(), 6), "out": round(loss_out.item(), 6),
                            "feature": round(loss_feat.item(), 6)})
                bar.set_postfix(loss=f"{loss.item():.4f}")
            # the last step too: until the caller has stored the distilled model, this is all there is of it
            if accelerator.is_main_process and (step % CHECKPOINT_EVERY == 0 or step == params.distill_steps):
                buffer = io.BytesIO()
                torch.save({"student": accelerator.unwrap_model(wrapped).state_dict(),
                            "optimizer": optimizer.state_dict(), "step": step, "log": json.dumps(log),
                            "seconds": seconds, "torch_rng": torch.get_rng_state(),
                            "cuda_rng": torch.cuda.get_rng_state(model.device) if model.device.type == "cuda" else None,
                            "pairs_rng": pairs.rng.getstate()}, buffer)
                write_atomic(checkpoint, buffer.getvalue())
    finally:
        bar.close()
        for handle in student_hooks + teacher_hooks:
            handle.remove()
    accelerator.wait_for_everyone()
    model.pipeline.transformer = accelerator.unwrap_model(wrapped).eval().requires_grad_(False)
    # the checkpoint stays until the caller stored the distilled model (`Compressor.release`): a kill in between
    # then resumes from it instead of training again
    return {"checkpoint": str(checkpoint), "steps": step, "seconds": round(seconds, 1), "lr": lr, "data": pairs.kind,
            "trained_parameters": trained,
            "intensity": {str(k): round(v, 6) for k, v in sorted(intensity.items())},
            "embedders_trained": train_embedders, "loss_log": log}
