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
    """A card: its memory as marketed, and its speed of light where a datasheet gives it. Peaks are dense tensor-core
    TFLOP/s (no 2:4 sparsity: half the headline figure where the sheet quotes sparse numbers), bf16/fp16 with fp32
    accumulation (what PyTorch's matmuls use; GeForce cards run fp16 accumulation at twice that), and fp8 where the
    card has it; bandwidth in GB/s (10^9 bytes). None where no sheet at hand gives the figure."""

    name: str
    label: str
    memory_gb: float  # as marketed (10^9 bytes)
    kind: str  # "server" | "consumer"
    names: tuple[str, ...] = ()  # lower-case fragments all found in torch.cuda.get_device_name() of this card
    bf16_tflops: float | None = None
    fp8_tflops: float | None = None
    bandwidth_gbs: float | None = None
    source: str = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_gb * 1e9 / GIB

    def peak_tflops(self, dtype: str) -> float | None:
        """The dense peak for arithmetic in `dtype` ("bfloat16", "float16", "float8"); None where not known."""
        return self.fp8_tflops if dtype.startswith("float8") else (
            self.bf16_tflops if dtype in ("bfloat16", "float16") else None)


_HOPPER = "NVIDIA H100/H200 datasheets (SXM; dense = half the sparse figure)"
_ADA = "NVIDIA Ada Lovelace architecture whitepaper / product page"
_AMPERE = "NVIDIA Ampere GA100/GA102 whitepapers, A100 and RTX A6000 datasheets"
PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (
    DeviceProfile("a100-40gb", "NVIDIA A100 40GB", 40, "server", ("a100", "40gb"), 312.0, None, 1555.0, _AMPERE),
    DeviceProfile("a100-80gb", "NVIDIA A100 80GB", 80, "server", ("a100", "80gb"), 312.0, None, 2039.0, _AMPERE),
    DeviceProfile("a6000", "NVIDIA RTX A6000 48GB", 48, "server", ("rtx a6000",), 154.8, None, 768.0, _AMPERE),
    DeviceProfile("l40s", "NVIDIA L40S 48GB", 48, "server", ("l40s",), 362.05, 733.0, 864.0,
                  "NVIDIA L40S datasheet (dense)"),
    DeviceProfile("h100", "NVIDIA H100 80GB", 80, "server", ("h100", "hbm3"), 989.4, 1978.9, 3350.0, _HOPPER),
    DeviceProfile("h200", "NVIDIA H200 141GB", 141, "server", ("h200",), 989.4, 1978.9, 4800.0, _HOPPER),
    DeviceProfile("rtx4060", "GeForce RTX 4060 8GB", 8, "consumer", ("rtx 4060",), None, None, 272.0, _ADA),
    DeviceProfile("rtx3060", "GeForce RTX 3060 12GB", 12, "consumer", ("rtx 3060",), None, None, 360.0, _AMPERE),
    DeviceProfile("rtx4070", "GeForce RTX 4070 12GB", 12, "consumer", ("rtx 4070",), None, None, 504.0, _ADA),
    DeviceProfile("rtx4060ti-16gb", "GeForce RTX 4060 Ti 16GB", 16, "consumer", ("rtx 4060 ti",), None, None, 288.0,
                  _ADA),
    DeviceProfile("rtx3090", "GeForce RTX 3090 24GB", 24, "consumer", ("rtx 3090",), 71.0, None, 936.0, _AMPERE),
    DeviceProfile("rtx4090", "GeForce RTX 4090 24GB", 24, "consumer", ("rtx 4090",), 165.2, 330.3, 1008.0, _ADA),
    DeviceProfile("rtx5090", "GeForce RTX 5090 32GB", 32, "consumer", ("rtx 5090",), None, None, 1792.0,
                  "NVIDIA GeForce RTX 5090 product page"),
)}


def profile_of(device_name: str) -> DeviceProfile | None:
    """The profile of the card torch names `device_name` (the most specific match), or None."""
    name = device_name.lower()
    matches = [p for p in PROFILES.values() if p.names and all(fragment in name for fragment in p.names)]
    return max(matches, key=lambda p: sum(len(f) for f in p.names)) if matches else None


@dataclass(frozen=True)
class Peak:
    """The speed of light a measurement is held against: dense TFLOP/s in the model's dtype and memory bandwidth,
    each with where it comes from (a datasheet, or a micro-benchmark of this machine in the same run)."""

    tflops: float | None
    bandwidth_gbs: float | None
    source: str


def measured_cpu_peak(dtype: Any, seconds: float = 0.3) -> Peak:
    """This CPU's peak as PyTorch reaches it now: the best of square GEMMs in `dtype` at the current thread count,
    and the best of large tensor copies (bytes read + written per second). A peak measured here, not a datasheet's."""
    import time

    import torch

    def best(run: Any, work: float) -> float:
        run()  # warm-up: first-touch of the pages, library dispatch
        rates, started = [], time.perf_counter()
        while time.perf_counter() - started < seconds or len(rates) < 3:
            start = time.perf_counter()
            run()
            rates.append(work / (time.perf_counter() - start))
        return max(rates)

    size = 1024
    a, b = (torch.randn(size, size, dtype=torch.float32).to(dtype) for _ in range(2))
    flops = best(lambda: torch.mm(a, b), 2.0 * size**3)
    source = torch.empty(64 * 2**20 // 4, dtype=torch.float32)  # 64 MiB: past every cache
    target = torch.empty_like(source)
    bandwidth = best(lambda: target.copy_(source), 2.0 * source.numel() * source.element_size())
    return Peak(flops / 1e12, bandwidth / 1e9, f"measured on this CPU in this run: best {size}x{size} "
                f"{str(dtype).removeprefix('torch.')} GEMM and 64 MiB copy on {torch.get_num_threads()} threads")


def device_peak(device: Any, dtype: Any) -> Peak:
    """The peak of `device` for arithmetic in `dtype`: a GPU's from its profile's datasheet figures, the CPU's
    measured now (`measured_cpu_peak`)."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return measured_cpu_peak(dtype)
    if device.type != "cuda":
        return Peak(None, None, f"no peak known for {device.type} devices")
    name = torch.cuda.get_device_name(device)
    profile = profile_of(name)
    if profile is None:
        return Peak(None, None, f"no profile for '{name}' (harness.devices.PROFILES)")
    dtype_text = str(dtype).removeprefix("torch.")
    return Peak(profile.peak_tflops(dtype_text), profile.bandwidth_gbs, f"{profile.label}: {profile.source}")


def fits(need_gib: float, basis: str) -> list[dict[str, Any]]:
    """One row per profile: whether `need_gib` (named by `basis`) fits, and the headroom left."""
    return [{"profile": p.name, "label": p.label, "kind": p.kind, "capacity_gib": round(p.memory_gib, 3),
             "need_gib": round(need_gib, 3), "basis": basis, "fits": need_gib <= p.memory_gib,
             "headroom_gib": round(p.memory_gib - need_gib, 3)} for p in PROFILES.values()]
