"""The native element-wise step kernels (``pipeline/kernels.c``): built on first use, loaded with ctypes.

On a CPU a fused scan step is one matmul plus a handful of element-wise torch kernels on a small
(B, H) tile, each costing several microseconds of dispatch for well under a microsecond of
arithmetic. ``kernels.c`` does a step's element-wise work in one call. It is plain C (no torch
headers), compiled in about a second with the system's C compiler (``$CC``, else ``cc``) for this
machine (``-march=native``) into a per-user cache, keyed by the source, the flags and the CPU.

Everything degrades: with no compiler, a failed build, ``WARMUP_SWEEP_NATIVE=0``, or tensors that
are not float32 on the CPU, the scans run their torch code instead (same results to float
rounding; the tests compare both). :func:`kernels` returns the loaded library or None.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-pthread"]
"""Compiler flags; ``-march=native`` and ``-fopenmp`` are added where the compiler takes them."""

ENV_SWITCH = "WARMUP_SWEEP_NATIVE"
"""Set to 0 to run the torch code instead of the native kernels."""

_L, _P = ctypes.c_long, ctypes.c_void_p
_SIGNATURES: dict[str, tuple[list[type], type | None]] = {
    # sizes (T, G, B, H), then buffers (addresses) and strides, as in kernels.c; the backward
    # scans return 0, or -1 when scratch memory is short
    "lstm_fwd_scan": ([_L] * 4 + [_P, _L, _L, _L] + [_P] * 5 + [_L, _P, _P, _L, _L], None),
    "lstm_bwd_scan": ([_L] * 4 + [_P] * 10 + [_L], _L),
    "gru_fwd_scan": ([_L] * 4 + [_P, _L, _L, _L] + [_P] * 6 + [_L, _P, _L, _L], None),
    "gru_bwd_scan": ([_L] * 4 + [_P] * 8 + [_L], _L),
    "brc_fwd_scan": ([_L] * 3 + [_P, _L, _L] * 3 + [_P, _P, _L, _P, _P, _L, _P, _L, _L], None),
    "brc_bwd_scan": ([_L] * 3 + [_P] * 5 + [_L] + [_P] * 3 + [_L], _L),
    "nbrc_fwd_scan": ([_L] * 4 + [_P, _L, _L] * 3 + [_P, _P, _P, _L, _P, _L, _L], None),
    "nbrc_bwd_scan": ([_L] * 4 + [_P] * 6 + [_L], _L),
    "mgu_fwd_scan": ([_L] * 4 + [_P, _L, _L] * 2 + [_P] * 6 + [_L, _P, _L, _L], None),
    "mgu_bwd_scan": ([_L] * 4 + [_P] * 11 + [_L], _L),
}

_lib: ctypes.CDLL | None = None
_tried = False


def enabled() -> bool:
    """Whether the native kernels are wanted (``WARMUP_SWEEP_NATIVE`` is not 0/false/no/off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags (Linux), else the
    platform's description. A cache shared by machines of different CPUs keeps one build each."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def cache_dir() -> Path:
    """``$WARMUP_SWEEP_CACHE``, else ``$XDG_CACHE_HOME/warmup-sweep``, else ``~/.cache/warmup-sweep``;
    if that cannot be written (a read-only home, say), a per-user directory under the system's
    temporary directory."""
    env = os.environ.get("WARMUP_SWEEP_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    path = Path(base) / "warmup-sweep"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"warmup-sweep-{uid}"


def _compile(out: Path) -> None:
    """Build the shared library at ``out`` (written to a temporary name, then renamed, so that
    concurrent builders, say the Ray workers of one node, never load a half-written file)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        errors = ""
        for arch in (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []):
            r = subprocess.run([cc, *FLAGS, *arch, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                               timeout=120)
            if r.returncode == 0:
                os.replace(tmp, out)
                return
            errors = r.stderr.strip()
        raise RuntimeError(f"{cc} failed: {errors[-500:]}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def library_path() -> Path:
    """Where this source, these flags and this CPU's build lives in the cache."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), _cpu_id().encode(), sys.platform.encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"


def _load() -> ctypes.CDLL:
    path = library_path()
    if not path.exists():
        _compile(path)
    lib = ctypes.CDLL(str(path))
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    return lib


def kernels() -> ctypes.CDLL | None:
    """The loaded kernels, building them on first use; None when disabled or unavailable (the
    reason is logged once, as a warning, and the torch code runs instead)."""
    global _lib, _tried
    if not enabled():
        return None
    if not _tried:
        _tried = True
        try:
            _lib = _load()
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            log.warning("native scan kernels unavailable (%s); using the torch code", e)
            _lib = None
    return _lib


def usable(*xs: Tensor) -> ctypes.CDLL | None:
    """The kernels, if they can run on these tensors (float32, CPU) and are available."""
    if any(x.device.type != "cpu" or x.dtype != torch.float32 for x in xs):
        return None
    return kernels()


def call(lib: ctypes.CDLL, name: str, *args: Tensor | int | None) -> None:
    """Call kernel ``name`` with tensors passed as their addresses and torch's CPU thread count
    appended (the kernels spread their lanes over that many OpenMP threads).

    Raises:
        MemoryError: the kernel returned -1 (its scratch memory could not be allocated).
    """
    conv = [a.data_ptr() if isinstance(a, Tensor) else a for a in args]
    if getattr(lib, name)(*conv, torch.get_num_threads()):
        raise MemoryError(f"{name}: out of memory for the weight gradient's scratch")
