"""Peak memory of a phase (loading, inference, one forward), each figure named for what it is.

- `allocated`: torch's peak of live tensors (`max_memory_allocated`);
- `reserved`: the caching allocator's peak holding (`max_memory_reserved`), what must fit on the card;
- `nvml`: this process's peak as the driver sees it (CUDA context and non-torch allocations included), sampled in a
  background thread through NVML (nvidia-ml-py);
- `rss`: the process's peak resident set on the host (the CPU figure). On Linux it is the kernel's own high-water
  mark (VmHWM), reset at the start of the phase through /proc/self/clear_refs, so a peak shorter than any sampling
  interval still counts (a large numpy or torch allocation can hold the GIL long enough to hide from a sampler
  thread). Elsewhere it is sampled in the background thread.
A figure that cannot be had is None, with the reason in `unavailable`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

SAMPLE_SECONDS = 0.005
_PROC_STATUS = "/proc/self/status"
_PROC_CLEAR_REFS = "/proc/self/clear_refs"
_ACTIVE: list[PeakMemory] = []  # trackers inside their phase: a reset of the kernel's mark must not lose their peak


def _kernel_peak_rss() -> int | None:
    """This process's resident-set high-water mark in bytes (VmHWM), or None where the kernel does not report it."""
    try:
        with open(_PROC_STATUS) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_kernel_peak_rss() -> bool:
    """Set VmHWM back to the current resident set (Linux >= 4.0); False where that cannot be done."""
    peak = _kernel_peak_rss()
    if peak is None:
        return False
    for tracker in _ACTIVE:  # an enclosing phase keeps the peak it has seen so far
        tracker.rss = max(tracker.rss or 0, peak)
    try:
        with open(_PROC_CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _nvml_process_memory(device_index: int) -> tuple[Any, str | None]:
    """A function returning this process's NVML-reported GPU memory in bytes, or (None, reason)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
    except Exception as exc:  # NVMLError: LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML unavailable ({type(exc).__name__}: {exc})"
    pid = os.getpid()

    def read() -> int | None:
        for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if process.pid == pid:
                return int(process.usedGpuMemory or 0)
        return None

    try:
        read()
    except Exception as exc:
        return None, f"NVML cannot list processes ({type(exc).__name__}: {exc})"
    return read, None


def cuda_index(device: Any) -> int:
    """The CUDA ordinal of `device`: "cuda" alone means the current device, which is not always 0. Several torch
    calls (the allocator cap among them) refuse a device without an index."""
    import torch

    device = torch.device(device)
    return device.index if device.index is not None else torch.cuda.current_device()


class PeakMemory:
    """Context manager measuring the peaks of the enclosed phase on `device` (a torch.device or string)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.allocated: int | None = None
        self.reserved: int | None = None
        self.nvml: int | None = None
        self.rss: int | None = None
        self.unavailable: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        import psutil
        import torch

        self._process = psutil.Process()
        self._nvml_read = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._nvml_read, reason = _nvml_process_memory(cuda_index(self.device))
            if reason:
                self.unavailable["nvml"] = reason
        else:
            reason = f"no CUDA device (ran on {self.device.type})"
            self.unavailable.update({"allocated": reason, "reserved": reason, "nvml": reason})
        self._kernel_rss = _reset_kernel_peak_rss()
        self.rss = self._process.memory_info().rss
        _ACTIVE.append(self)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._read_once()
            time.sleep(SAMPLE_SECONDS)

    def _read_once(self) -> None:
        peak = _kernel_peak_rss() if self._kernel_rss else None
        self.rss = max(self.rss or 0, peak or 0, self._process.memory_info().rss)
        if self._nvml_read is not None:
            try:
                used = self._nvml_read()
            except Exception:  # a driver hiccup must not kill the measured phase
                used = None
            if used is not None:
                self.nvml = max(self.nvml or 0, used)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.allocated = torch.cuda.max_memory_allocated(self.device)
            self.reserved = torch.cuda.max_memory_reserved(self.device)
        self._read_once()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        _ACTIVE.remove(self)
        if self._nvml_read is not None and self.nvml is None:
            self.unavailable["nvml"] = "this process is not in NVML's process list (a container PID namespace?)"

    def as_dict(self) -> dict[str, Any]:
        return {"allocated_bytes": self.allocated, "reserved_bytes": self.reserved, "nvml_bytes": self.nvml,
                "rss_bytes": self.rss, "unavailable": self.unavailable}


_CGROUP = "/sys/fs/cgroup"


def available_memory(device: Any) -> tuple[int | None, str]:
    """Bytes free for new allocations on `device` and where the figure comes from: on a CUDA device the driver's
    free memory (`torch.cuda.mem_get_info`); on the host the kernel's MemAvailable, or less where this process's
    cgroup (a container's limit) leaves less. None where nothing can be read."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(cuda_index(device))
        return int(free), "free on the GPU (torch.cuda.mem_get_info)"
    if device.type != "cpu":
        return None, f"free memory of {device.type} devices is not known"
    import psutil

    free, source = int(psutil.virtual_memory().available), "available on the host (MemAvailable)"
    try:
        limit = Path(_CGROUP, "memory.max").read_text().strip()
        used = int(Path(_CGROUP, "memory.current").read_text().strip())
    except (OSError, ValueError):
        return free, source
    if limit != "max" and int(limit) - used < free:
        return max(int(limit) - used, 0), "left under this container's memory limit (cgroup memory.max)"
    return free, source
