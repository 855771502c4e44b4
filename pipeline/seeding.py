"""Explicit seeding, device choice, and the CPU float mode and memory policy of a trial's process."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

FLUSH_SWITCH = "WARMUP_SWEEP_FLUSH_DENORMAL"
"""Set to 0 to keep subnormal floats on the CPU (IEEE gradual underflow) instead of flushing them."""

RETAIN_SWITCH = "WARMUP_SWEEP_RETAIN_MEMORY"
"""Set to 0 to leave glibc's malloc settings as they are (see :func:`retain_freed_memory`)."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20
"""Blocks up to this size come from the heap, not from fresh pages (glibc's largest setting on 64-bit)."""


def _switched_on(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def flush_denormals() -> bool:
    """Flush subnormal float32 values to zero on the CPU (x86 FTZ/DAZ, ARM FZ), unless
    ``WARMUP_SWEEP_FLUSH_DENORMAL`` is 0/false/no/off. Returns whether flushing is now on.

    Gradients through long sequences, and the differences between states converging to one
    attractor, decay geometrically into the subnormal range (below 1.2e-38), where many x86 cores
    run each operation on them through a microcode assist, tens of times slower than on normal
    floats; on others the cost is small (BENCHMARKS.md, ``benchmarks/ab.py --what flush``).
    Flushing changes no value above 1.2e-38 (GPUs flush such values in most kernels anyway). It
    is the calling thread's mode, which the native kernels (:mod:`pipeline.native`) give their
    lanes on every thread; threads that torch starts later inherit it.
    """
    on = _switched_on(FLUSH_SWITCH)
    return bool(torch.set_flush_denormal(on)) and on


def retain_freed_memory() -> bool:
    """Keep freed CPU memory in the process for reuse, unless ``WARMUP_SWEEP_RETAIN_MEMORY`` is
    0/false/no/off. Returns whether the setting took (glibc only; elsewhere nothing changes).

    Every training and warm-up step allocates and frees the same buffers (per-step states, gate
    activations and gradients, a few MB each). glibc's malloc serves blocks of this size with
    fresh pages from the kernel (``mmap``), or returns them when it trims its heap, so each step
    page-faults through all of its buffers again, a large part of a step on a small CPU trial
    (BENCHMARKS.md). This raises the mmap threshold to 32 MB and turns heap trimming off
    (``mallopt``), as jemalloc or tcmalloc would: the process then keeps its peak heap, which
    for a trial is its working set. Call it once per process, before the trial's allocations.
    """
    if not _switched_on(RETAIN_SWITCH) or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, -1) == 1


def cpu_process_mode() -> dict[str, bool]:
    """A trial's CPU settings: :func:`flush_denormals` and :func:`retain_freed_memory`. Returns
    which of them are on."""
    return {"flush_denormal": flush_denormals(), "retain_memory": retain_freed_memory()}


def seed_trial(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Seed torch's global RNG (weight initialisation) and return two CPU generators: one for data
    and warm-up draws, one for the exact-VAA measurements (so that measuring never shifts the data
    stream). Called at the start of every trial, so reused actors never leak RNG state."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    measure = torch.Generator().manual_seed(seed + 7_919_000)
    return data, measure


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
