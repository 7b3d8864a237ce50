"""`fid`: FID and KID of the compressed model's images against the uncompressed model's (`suites.distribution_base`).

Features: the 2048-d pool features of torch-fidelity's port of the TF Inception-v3 (2015-12-05) through torchmetrics'
`NoTrainInceptionV3`, as torchmetrics' FrechetInceptionDistance computes them (uint8 images resized to 299 px,
bilinear with antialiasing); distances: `harness.metrics.frechet_distance` and `kernel_inception_distance`
(torchmetrics' formulas; tested equal to torchmetrics' own metrics and to clean-fid's formulas). The weights file is
torch-fidelity's release asset, read from torch's hub cache, where torch-fidelity itself would download it, or from
`inception_weights=FILE`; without it the run stops before generating anything.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.metrics import Metric, frechet_distance, kernel_inception_distance
from suites.distribution_base import DistributionSuite

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
FEATURES = "2048"


def default_inception_weights() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]


class FIDSuite(DistributionSuite):
    name = "fid"
    metrics = (
        Metric("fid", "", False, "Frechet Inception distance to the uncompressed model's images (same prompts and "
               "seeds); biased upward for few images"),
        Metric("kid", "", False, "kernel Inception distance (unbiased MMD^2, cubic polynomial kernel) to the "
               "uncompressed model's images"),
    )
    few_samples = 2048
    few_samples_reason = ("FID's 2048 x 2048 covariance is rank-deficient below 2048 images and its bias grows as "
                          "the count falls; published FIDs use 10k-50k")

    @dataclass(frozen=True)
    class Params(DistributionSuite.Params):
        inception_weights: Path | None = None  # torch-fidelity's Inception weights; default: torch's hub cache

    def weights_path(self) -> Path:
        return Path(self.params.inception_weights).expanduser() if self.params.inception_weights else \
            default_inception_weights()

    def load_extractor(self) -> Any:
        import torch
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = self.weights_path()
        if not path.is_file():
            raise UsageError(f"fid: the Inception weights are not at {path}. Download {INCEPTION_URL} there where "
                             "GitHub is reachable, or pass a local copy with --set fid.inception_weights=<file>")
        try:
            # torch-fidelity unpickles the file with weights_only=False: refuse anything but tensors first
            torch.load(path, map_location="cpu", weights_only=True)
            network = NoTrainInceptionV3(name="inception-v3-compat", features_list=[FEATURES],
                                         feature_extractor_weights_path=str(path))
        except (RuntimeError, OSError, KeyError, EOFError, pickle.UnpicklingError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"fid: '{path}' is not torch-fidelity's Inception weights ({first})") from None
        return network.to("cuda" if torch.cuda.is_available() else "cpu")

    def features(self, extractor: Any, images: list[np.ndarray]) -> np.ndarray:
        import torch

        device = next(extractor.parameters()).device
        out = []
        for start in range(0, len(images), self.params.batch_size):
            batch = np.stack([np.asarray(i)[..., :3] for i in images[start:start + self.params.batch_size]])
            pixels = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(device)
            with torch.inference_mode():
                out.append(extractor(pixels).double().cpu().numpy())
        return np.concatenate(out)

    def distances(self, generated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        kid, _ = kernel_inception_distance(generated, reference)
        return {"fid": frechet_distance(generated, reference), "kid": kid}

    def describe(self) -> str:
        return f"Inception-v3 (torch-fidelity, {self.weights_path().name}) pool features"
