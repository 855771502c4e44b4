"""Where a trial runs: the device, host-to-device copies, and the CPU's float mode."""

from __future__ import annotations

import os

import torch

FLUSH_SWITCH = "WARMUP_SWEEP_FLUSH_DENORMAL"
"""Set to 0 to keep subnormal floats on the CPU (IEEE gradual underflow) instead of flushing them."""


def flush_denormals() -> bool:
    """Flush subnormal float32 values to zero on the CPU (x86 FTZ/DAZ, ARM FZ), unless
    ``WARMUP_SWEEP_FLUSH_DENORMAL`` is 0/false/no/off. Returns whether flushing is now on.

    Gradients through long sequences, and the differences between states converging to one
    attractor, decay geometrically into the subnormal range (below 1.2e-38), where many x86 cores
    run each operation on them through a microcode assist, tens of times slower than on normal
    floats. Flushing changes no value above 1.2e-38 (GPUs flush such values in most kernels
    anyway). It is the calling thread's mode, which the native kernels
    (:mod:`pipeline.core.scans.native`) give their lanes on every thread; threads that torch starts
    later inherit it. Every trial records whether it was on (``flush_denormal``).
    """
    on = os.environ.get(FLUSH_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")
    return bool(torch.set_flush_denormal(on)) and on


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU.

    Raises:
        ValueError: ``cuda`` asked for on a machine without CUDA.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA device on this machine")
    return torch.device(name)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor (a draw from a CPU generator) on ``device``. To CUDA it goes through pinned
    memory without blocking, so the host does not wait for the GPU's queued work (a plain copy from
    pageable memory synchronises with the stream)."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    try:
        pinned = t.pin_memory()
    except RuntimeError:  # no page-locked memory to be had (some containers): a plain copy
        return t.to(device)
    return pinned.to(device, non_blocking=True)
