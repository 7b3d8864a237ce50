"""Fidelity to the uncompressed model: each image against the original's image for the same prompt, seed and batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.generation import ImageRequest, Sample, check_samples_per_prompt
from harness.metrics import Metric
from suites.base import ImageSuite, Scores, prompt_file_requests

# torchvision's AlexNet weights, the backbone of LPIPS (net 'alex'); torchmetrics ships the LPIPS heads themselves.
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"


def _lpips_weights_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS


class FidelitySuite(ImageSuite):
    name = "fidelity"
    needs_reference = True
    metrics = (
        Metric("psnr", "dB", True, "peak signal-to-noise ratio against the uncompressed model's image"),
        Metric("ssim", "", True, "structural similarity (Gaussian window 11, sigma 1.5) against the original"),
        Metric("lpips", "", False, "LPIPS (AlexNet) distance to the original; needs torchvision's AlexNet weights"),
    )

    @dataclass(frozen=True)
    class Params:
        prompts: Path | None = None  # prompt file; default: the 16 bundled prompts
        samples_per_prompt: int = 1

        def __post_init__(self) -> None:
            check_samples_per_prompt(self.samples_per_prompt)

    def requests(self, limit: int | None) -> list[ImageRequest]:
        return prompt_file_requests(self.params.prompts, limit, self.params.samples_per_prompt)

    def score(self, samples: list[Sample], references: list[Sample] | None) -> Scores:
        import torch
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        assert references is not None and len(references) == len(samples)

        def as_tensor(items: list[Sample]) -> torch.Tensor:
            return torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in items]).double() / 255.0

        preds, targets = as_tensor(samples), as_tensor(references)
        pairs = list(zip(preds, targets, strict=True))
        psnr = [float(peak_signal_noise_ratio(p[None], t[None], data_range=1.0)) for p, t in pairs]
        ssim = [float(structural_similarity_index_measure(p[None], t[None], data_range=1.0)) for p, t in pairs]
        records = [{"psnr": a, "ssim": b} for a, b in zip(psnr, ssim, strict=True)]
        notes = []
        weights = _lpips_weights_path()
        if weights.is_file():
            from torchmetrics.functional.image.lpips import learned_perceptual_image_patch_similarity

            lpips = []
            for start in range(0, len(preds), 32):  # bounded memory; the network is built once per chunk
                chunk = slice(start, start + 32)
                lpips += learned_perceptual_image_patch_similarity(
                    preds[chunk].float(), targets[chunk].float(), net_type="alex", normalize=True, reduction="none"
                ).tolist()
            for record, value in zip(records, lpips, strict=True):
                record["lpips"] = value
        else:
            notes.append(f"fidelity/lpips not computed: AlexNet weights not found at {weights} (place "
                         f"{ALEXNET_WEIGHTS} there, e.g. from torchvision's model zoo, to enable it)")
        return Scores(records, notes)
