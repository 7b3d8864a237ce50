"""GPU profiles people choose compression for, and the one place that answers "does it fit on this card?".

Capacities are the cards' nominal memory in GB as marketed (10^9 bytes), converted to GiB: an "RTX 4070 12 GB" has
11.18 GiB. Whether a pipeline fits is judged from the NVML per-process peak when there is one (it includes the CUDA
context), else from the allocator's reserved peak plus `CONTEXT_ALLOWANCE_GIB` for the context it does not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024**3
CONTEXT_ALLOWANCE_GIB = 0.5  # a CUDA context with cuBLAS/cuDNN handles on recent GPUs: about 0.3-0.6 GiB


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    label: str
    memory_gb: float  # as marketed (10^9 bytes)
    kind: str  # "server" | "consumer"

    @property
    def memory_gib(self) -> float:
        return self.memory_gb * 1e9 / GIB


PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (
    DeviceProfile("a100-40gb", "NVIDIA A100 40GB", 40, "server"),
    DeviceProfile("a100-80gb", "NVIDIA A100 80GB", 80, "server"),
    DeviceProfile("a6000", "NVIDIA RTX A6000 48GB", 48, "server"),
    DeviceProfile("l40s", "NVIDIA L40S 48GB", 48, "server"),
    DeviceProfile("h100", "NVIDIA H100 80GB", 80, "server"),
    DeviceProfile("h200", "NVIDIA H200 141GB", 141, "server"),
    DeviceProfile("rtx4060", "GeForce RTX 4060 8GB", 8, "consumer"),
    DeviceProfile("rtx3060", "GeForce RTX 3060 12GB", 12, "consumer"),
    DeviceProfile("rtx4070", "GeForce RTX 4070 12GB", 12, "consumer"),
    DeviceProfile("rtx4060ti-16gb", "GeForce RTX 4060 Ti 16GB", 16, "consumer"),
    DeviceProfile("rtx3090", "GeForce RTX 3090 24GB", 24, "consumer"),
    DeviceProfile("rtx4090", "GeForce RTX 4090 24GB", 24, "consumer"),
    DeviceProfile("rtx5090", "GeForce RTX 5090 32GB", 32, "consumer"),
)}


def fits(need_gib: float, basis: str) -> list[dict[str, Any]]:
    """One row per profile: whether `need_gib` (named by `basis`) fits, and the headroom left."""
    return [{"profile": p.name, "label": p.label, "kind": p.kind, "capacity_gib": round(p.memory_gib, 3),
             "need_gib": round(need_gib, 3), "basis": basis, "fits": need_gib <= p.memory_gib,
             "headroom_gib": round(p.memory_gib - need_gib, 3)} for p in PROFILES.values()]
