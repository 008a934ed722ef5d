"""Pick precision and threads for the machine at hand, and say what was picked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    # Without native bf16 instructions torch emulates bf16 matmuls, hundreds of times slower than fp32.
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def physical_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Hardware:
    device: str
    precision: str  # "bf16" | "fp32"
    threads: int
    reason: str

    def describe(self) -> str:
        return f"device={self.device} precision={self.precision} threads={self.threads} ({self.reason})"


def pick_device() -> str:
    """Where torch runs train and predict: the GPU when there is one. The one place that decides it."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast(precision: str):
    """bf16 autocast on the device torch runs on when `precision` is bf16; a no-op context otherwise."""
    import torch

    return torch.autocast(pick_device(), dtype=torch.bfloat16, enabled=precision == "bf16")


def device_of(model) -> "torch.device":
    """The device a module's weights are on (where its inputs must go)."""
    return next(model.parameters()).device


def unwrapped(model):
    """The transformers model under a peft wrapper; the model itself when it has none."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def to_device(obj, device):
    """Tensors anywhere in nested tuples / lists / dicts (a batch, an optimizer's state) moved to `device`; other
    values as they are. A no-op for tensors already there."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def auto_precision(device: str) -> tuple[str, str]:
    """The precision `precision: auto` trains in on `device` ("cuda" or "cpu"), and why."""
    import torch

    if device == "cuda":
        return ("bf16", "GPU supports bf16") if torch.cuda.is_bf16_supported() else ("fp32", "GPU lacks bf16")
    if cpu_has_fast_bf16():
        return "bf16", "CPU has native bf16 (AVX512-BF16/AMX): bf16 autocast"
    return "fp32", "CPU lacks native bf16 instructions: bf16 would be emulated and slow"


def choose(precision: str = "auto", threads: int | None = None) -> Hardware:
    import torch

    device = pick_device()
    cuda = device == "cuda"
    chosen, reason = auto_precision(device) if precision == "auto" else (precision, "as configured")
    # A user's OMP_NUM_THREADS wins over the default, as it does for torch itself; data-parallel processes on this
    # machine (torchrun's LOCAL_WORLD_SIZE) share its cores.
    omp = os.environ.get("OMP_NUM_THREADS", "")
    default = (
        int(omp) if omp.isdigit() and int(omp) > 0 else physical_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    )
    n = threads or max(1, default)
    if not cuda:
        torch.set_num_threads(n)
    return Hardware(device, chosen, n, reason)


def mmap_large_allocations(threshold: int = 128 * 1024) -> bool:
    """glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so activation-sized tensors
    soon come from the heap, whose freed pages stay resident: the peak memory then counts every step's transient
    tensors too. A fixed threshold keeps each large tensor in its own mapping, unmapped when freed. False where the
    C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD; setting it turns off the dynamic threshold
    except (OSError, AttributeError, TypeError):
        return False
