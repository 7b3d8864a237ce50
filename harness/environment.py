"""Where a run ran: device, package versions and the harness's git commit, recorded in every result."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RECORDED_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "torchmetrics", "open_clip_torch",
                     "bitsandbytes", "safetensors", "numpy", "dit-compression-harness")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the harness source tree, with '+dirty' when it has uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: Any) -> str:
    """'cpu' or the accelerator's product name: images made on different kinds of device differ in their bits."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: Any) -> dict[str, Any]:
    import psutil
    import torch

    device = torch.device(device)
    info: dict[str, Any] = {
        "type": device.type,
        "name": device_name(device),
        "cpu": _cpu_model(),
        "cpu_count": psutil.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host_memory_gib": round(psutil.virtual_memory().total / 2**30, 2),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["memory_gib"] = round(properties.total_memory / 2**30, 2)
        info["cuda"] = torch.version.cuda
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
            pynvml.nvmlShutdown()
        except Exception as exc:  # NVML missing or unusable: record why instead of failing the run
            info["driver"] = f"unavailable ({type(exc).__name__})"
    return info
