"""Trackers of what a measurement costs and what else ran while it was taken, as context managers that fill a
typed report when the phase ends (the memory trackers live in `harness.memory`).

- `EnergyMeter`: joules spent by the device over the phase: NVML's energy counter on a GPU (the whole board, since
  Volta); on the CPU the RAPL package counters (`/sys/class/powercap/intel-rapl:*/energy_uj`, every package:
  the whole socket, other processes included) where readable; else None with the reason, never an error.
- `OtherLoad`: how much of the machine other processes used over the phase: on the CPU, the system's busy CPU time
  less this process's (children included), in cores; on a GPU, the other processes NVML lists on it. A figure
  taken with more than `LOADED_CORES` cores of other work, or beside another GPU process, is flagged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

LOADED_CORES = 0.25  # other processes' CPU use above which a timing is flagged (a quarter of a core)
_RAPL = Path("/sys/class/powercap")


def _nvml_handle(device: Any) -> tuple[Any, str | None]:
    from harness.memory import cuda_index

    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(cuda_index(device)), None
    except Exception as exc:  # NVMLError: LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML unavailable ({type(exc).__name__}: {exc})"


def _rapl_packages() -> list[Path]:
    """The top-level RAPL domains (packages), whose counters are readable by this process."""
    found = []
    for domain in sorted(_RAPL.glob("intel-rapl:*")):
        if domain.name.count(":") == 1 and os.access(domain / "energy_uj", os.R_OK):
            found.append(domain)
    return found


class EnergyMeter:
    """Joules over the phase (`joules`), or None with the reason (`unavailable`)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.joules: float | None = None
        self.source = ""
        self.unavailable: str | None = None

    def _read(self) -> float | None:
        if self.device.type == "cuda":
            import pynvml

            return pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0  # mJ
        return sum(int((d / "energy_uj").read_text()) for d in self._packages) / 1e6

    def __enter__(self) -> EnergyMeter:
        self._handle, self._packages = None, []
        try:
            if self.device.type == "cuda":
                self._handle, reason = _nvml_handle(self.device)
                if self._handle is None:
                    raise RuntimeError(reason)
                self.source = "NVML total energy counter (the whole board)"
            elif self.device.type == "cpu":
                self._packages = _rapl_packages()
                if not self._packages:
                    raise RuntimeError("no readable RAPL counter (/sys/class/powercap/intel-rapl:*/energy_uj: "
                                       "absent in this VM or container, or readable by root only)")
                self.source = f"RAPL package counters ({len(self._packages)} package(s), the whole socket)"
            else:
                raise RuntimeError(f"no energy counter for {self.device.type} devices")
            self._start = self._read()
        except Exception as exc:  # a counter that cannot be read leaves the figure out, never the run
            self.unavailable = str(exc)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.unavailable is not None:
            return
        try:
            spent = self._read() - self._start
            if spent < 0 and self._packages:  # a RAPL counter wrapped around
                spent += sum(int((d / "max_energy_range_uj").read_text()) for d in self._packages) / 1e6
            self.joules = spent
        except Exception as exc:
            self.unavailable = str(exc)


@dataclass
class LoadReport:
    other_cores: float | None = None  # other processes' CPU use over the phase, in cores
    other_gpu_processes: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def other_share(self) -> float | None:
        """Other processes' CPU use as a share of the machine's CPUs (1: all of them)."""
        return None if self.other_cores is None else self.other_cores / (os.cpu_count() or 1)

    @property
    def loaded(self) -> bool:
        return (self.other_cores or 0.0) > LOADED_CORES or bool(self.other_gpu_processes)

    def describe(self) -> str:
        parts = []
        if self.other_cores is not None:
            parts.append(f"other processes used {self.other_cores:.2f} CPU cores")
        if self.other_gpu_processes:
            parts.append(f"{len(self.other_gpu_processes)} other process(es) on the GPU "
                         f"(pid {', '.join(map(str, self.other_gpu_processes))})")
        verdict = "measured under load" if self.loaded else "measured on a quiet machine"
        return f"{verdict}: " + ("; ".join(parts) or "no load figure") + (
            f" (flagged above {LOADED_CORES} cores or beside another GPU process)")


class OtherLoad:
    """What other processes used of the machine over the phase (`report`, a LoadReport)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.report = LoadReport()

    @staticmethod
    def _busy_and_own() -> tuple[float, float]:
        import psutil

        system = psutil.cpu_times()
        busy = sum(system) - system.idle - getattr(system, "iowait", 0.0)
        own = psutil.Process().cpu_times()
        return busy, own.user + own.system + own.children_user + own.children_system

    def __enter__(self) -> OtherLoad:
        self._wall = time.perf_counter()
        self._busy, self._own = self._busy_and_own()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        wall = time.perf_counter() - self._wall
        busy, own = self._busy_and_own()
        if wall > 0:
            self.report.other_cores = max(0.0, (busy - self._busy) - (own - self._own)) / wall
        if self.device.type == "cuda":
            handle, reason = _nvml_handle(self.device)
            if handle is None:
                self.report.notes.append(f"other GPU processes: unknown: {reason}")
                return
            import pynvml

            pid = os.getpid()
            try:
                running = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception as exc:
                self.report.notes.append(f"other GPU processes: unknown: {type(exc).__name__}: {exc}")
                return
            self.report.other_gpu_processes = sorted(p.pid for p in running if p.pid != pid)
