"""The native CPU scans (``kernels.c``): built on first use, loaded with ctypes, called through checks.

On a CPU a scan step is one small matmul plus a handful of element-wise operations on a (B, H)
tile, and torch spends more time dispatching each operation than computing it. ``kernels.c`` runs
a scan's whole time loop, forward or backward, as one call: its own register-tiled matmul, the gates
fused, the batch rows cut into lanes of 8 that run on torch's OpenMP threads with no
synchronisation per step (results do not depend on the thread count). It is plain C (no torch
headers), compiled in about a second with the system's C compiler (``$CC``, else ``cc``) for this
machine (``-march=native``) into a per-user cache, keyed by the source, the flags and the CPU.

Every kernel is declared once (:data:`KERNELS`): its parameters by name, in the C prototype's
order, with the shape, dtype and layout of every tensor, checked before each call (a mismatch
raises :class:`KernelArgumentError`, never touches memory). The scans in :mod:`.custom` and
:mod:`.standard` call them by name through :func:`call`.

Everything degrades: with no compiler, a failed build, ``WARMUP_SWEEP_NATIVE=0``, or tensors that
are not float32 on the CPU, the scans run their torch code instead (same results to float
rounding; the tests compare both). :func:`kernels` returns the loaded library or None. Whether a
trial ran them is recorded in its row (``native_kernels``).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-pthread"]
"""Compiler flags; ``-march=native`` and ``-fopenmp`` are added where the compiler takes them."""

ENV_SWITCH = "WARMUP_SWEEP_NATIVE"
"""Set to 0 to run the torch code instead of the native kernels."""

# ------------------------------------------------------------------------------ the interface
# One declaration per exported kernel: its parameters in the C prototype's order, by the C names
# (a test reads kernels.c and compares). Sizes are C longs; a tensor is passed as its address and
# checked before every call: float32, on the CPU, exactly the declared shape (expressions over the
# sizes), and contiguous, except ``rows`` tensors, whose rows must be contiguous and whose leading
# strides follow the address as the named parameters (0 for a dimension expanded by broadcasting).
# ``out`` tensors are written, ``opt`` ones may be None (NULL). The thread count is appended.


@dataclass(frozen=True)
class Param:
    """One kernel parameter: ``kind`` is ``size``, ``in``, ``out`` or ``rows``."""

    name: str
    kind: str
    shape: str = ""
    strides: tuple[str, ...] = ()
    opt: bool = False

    def c_names(self) -> list[str]:
        """The C parameters this one fills: itself, then its strides."""
        return [self.name, *self.strides]


def _size(*names: str) -> list[Param]:
    return [Param(n, "size") for n in names]


def _in(name: str, shape: str, *, opt: bool = False) -> Param:
    return Param(name, "in", shape, opt=opt)


def _out(name: str, shape: str, *, opt: bool = False) -> Param:
    return Param(name, "out", shape, opt=opt)


def _rows(name: str, shape: str, *strides: str) -> Param:
    return Param(name, "rows", shape, strides)


class KernelArgumentError(ValueError):
    """A kernel called with arguments that do not fit its declaration (nothing was run)."""


class Kernel:
    """A declared native kernel: checks its arguments, then calls it.

    Args:
        name: the exported C function.
        params: its parameters in prototype order (the ``threads`` count excluded).
        where: names defined from the sizes, e.g. ``steps="T if keep else 1"``.
        requires: conditions on the sizes, e.g. ``"B % G == 0"``.
        status: the kernel returns 0, or -1 when its scratch memory could not be allocated.
    """

    def __init__(self, name: str, params: list[Param], *, where: dict[str, str] | None = None,
                 requires: tuple[str, ...] = (), status: bool = False) -> None:
        self.name, self.params, self.status = name, params, status
        self.where = {k: compile(v, f"{name}:{k}", "eval") for k, v in (where or {}).items()}
        self.requires = [(r, compile(r, f"{name}:{r}", "eval")) for r in ("T >= 1", *requires)]
        self.shapes = {p.name: compile(f"({p.shape},)", f"{name}:{p.name}", "eval")
                       for p in params if p.kind != "size"}

    def c_names(self) -> list[str]:
        """The C prototype's parameter names, in order (``threads`` last)."""
        return [n for p in self.params for n in p.c_names()] + ["threads"]

    def argv(self, args: dict[str, Any]) -> list[Any]:
        """The positional C arguments for ``args`` (by parameter name), after every check.

        Raises:
            KernelArgumentError: a missing or unknown argument, a size out of range, or a tensor
                of the wrong dtype, device, shape or layout.
        """
        names = [p.name for p in self.params]
        if set(args) != set(names):
            missing, extra = sorted(set(names) - set(args)), sorted(set(args) - set(names))
            raise KernelArgumentError(f"{self.name}: missing {missing}, unexpected {extra}")
        env: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "size":
                v = args[p.name]
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise KernelArgumentError(f"{self.name}: {p.name} must be an int >= 0 but got {v!r}")
                env[p.name] = v
        for k, code in self.where.items():
            env[k] = eval(code, {"__builtins__": {}}, env)
        for text, code in self.requires:
            if not eval(code, {"__builtins__": {}}, env):
                raise KernelArgumentError(f"{self.name}: needs {text}; sizes {env}")
        out: list[Any] = []
        for p in self.params:
            v = args[p.name]
            if p.kind == "size":
                out.append(v)
                continue
            if v is None and p.opt:
                out += [None] * len(p.c_names())
                continue
            shape = eval(self.shapes[p.name], {"__builtins__": {}}, env)
            _check_tensor(self.name, p, v, shape)
            out.append(v.data_ptr())
            out += list(v.stride()[:len(p.strides)])
        return out

    def __call__(self, lib: ctypes.CDLL, **args: Any) -> None:
        argv = self.argv(args)
        if getattr(lib, self.name)(*argv, torch.get_num_threads()) and self.status:
            raise MemoryError(f"{self.name}: out of memory for the weight gradient's scratch")


def _check_tensor(kernel: str, p: Param, v: Any, shape: tuple[int, ...]) -> None:
    what = f"{kernel}: {p.name}"
    if not isinstance(v, Tensor):
        raise KernelArgumentError(f"{what} must be a tensor but got {type(v).__name__}")
    if v.dtype != torch.float32 or v.device.type != "cpu":
        raise KernelArgumentError(f"{what} must be float32 on the CPU but is {v.dtype} on {v.device}")
    if tuple(v.shape) != shape:
        raise KernelArgumentError(f"{what} must have shape {shape} but has {tuple(v.shape)}")
    if p.kind == "rows":
        ok = v.stride(-1) == 1 and all(s >= 0 for s in v.stride())
        if not ok or v.dim() != len(p.strides) + 1:
            raise KernelArgumentError(f"{what} needs contiguous rows and non-negative strides but has "
                                      f"strides {v.stride()}")
    elif not v.is_contiguous():
        raise KernelArgumentError(f"{what} must be contiguous but has strides {v.stride()}")


_STEPS = {"steps": "T if keep else 1"}
"""A forward keeps every step's buffers for the backward (keep = 1), else one step of scratch."""
_STATE_SLOTS = ("keep in (0, 1)", "1 <= slots <= T")

KERNELS: dict[str, Kernel] = {k.name: k for k in [
    Kernel("lstm_fwd_scan", [*_size("T", "G", "B", "H"), _rows("x", "T, G, B, 4 * H", "xt", "xg", "xb"),
                             _in("w", "G, H, 4 * H"), _in("h0", "G, B, H"), _in("c0", "G, B, H"),
                             _out("P", "steps, G, B, 4 * H"), _out("TC", "steps, G, B, H"), *_size("keep"),
                             _out("hs", "slots, G, B, H"), _out("cs", "slots, G, B, H"), *_size("slots")],
           where=_STEPS, requires=_STATE_SLOTS),
    Kernel("lstm_bwd_scan", [*_size("T", "G", "B", "H"), _out("P", "T, G, B, 4 * H"), _in("TC", "T, G, B, H"),
                             _in("hs", "T, G, B, H"), _in("cs", "T, G, B, H"), _in("h0", "G, B, H"),
                             _in("c0", "G, B, H"), _in("wT", "G, 4 * H, H"), _out("GH", "T + 1, G, B, H"),
                             _out("GC", "T + 1, G, B, H"), _out("dw", "G, H, 4 * H", opt=True)], status=True),
    Kernel("gru_fwd_scan", [*_size("T", "G", "B", "H"), _rows("x", "T, G, B, 3 * H", "xt", "xg", "xb"),
                            _in("w", "G, H, 3 * H"), _in("bias", "G, 3 * H"), _in("h0", "G, B, H"),
                            _out("A", "steps, G, B, 3 * H"), _out("RZ", "steps, G, B, 2 * H"),
                            _out("N", "steps, G, B, H"), *_size("keep"), _out("hs", "slots, G, B, H"),
                            *_size("slots")], where=_STEPS, requires=_STATE_SLOTS),
    Kernel("gru_bwd_scan", [*_size("T", "G", "B", "H"), _out("A", "T, G, B, 3 * H"),
                            _in("RZ", "T, G, B, 2 * H"),
                            _out("N", "T, G, B, H"), _in("hs", "T, G, B, H"), _in("h0", "G, B, H"),
                            _in("wT", "G, 3 * H, H"), _out("GH", "T + 1, G, B, H"),
                            _out("dw", "G, H, 3 * H", opt=True)], status=True),
    Kernel("brc_fwd_scan", [*_size("T", "B", "H"), _rows("xc", "T, B, H", "xct", "xcb"),
                            _rows("xa", "T, B, H", "xat", "xab"), _rows("xh", "T, B, H", "xht", "xhb"),
                            _in("wc", "*W"), _in("wa", "*W"), *_size("wb"), _in("h0", "B, H"),
                            _out("S", "T, 3, B, H", opt=True), *_size("keep"), _out("hs", "slots, B, H"),
                            *_size("slots")],
           where={"W": "(B, H) if wb else (H,)"}, requires=("wb in (0, H)", *_STATE_SLOTS)),
    Kernel("brc_bwd_scan", [*_size("T", "B", "H"), _out("S", "T, 3, B, H"), _in("hs", "T, B, H"),
                            _in("h0", "B, H"), _in("wc", "*W"), _in("wa", "*W"), *_size("wb"),
                            _out("G", "T + 1, B, H"), _out("gwc", "*W"), _out("gwa", "*W")],
           where={"W": "(B, H) if wb else (H,)"}, requires=("wb in (0, H)",), status=True),
    Kernel("nbrc_fwd_scan", [*_size("T", "B", "H", "G"), _rows("xc", "T, B, H", "xct", "xcb"),
                             _rows("xa", "T, B, H", "xat", "xab"), _rows("xh", "T, B, H", "xht", "xhb"),
                             _in("W2t", "G, H, 2 * H"), _in("h0", "B, H"), _out("S", "steps, B, 3, H"),
                             *_size("keep"), _out("hs", "slots, B, H"), *_size("slots")],
           where=_STEPS, requires=("G >= 1", "B % G == 0", *_STATE_SLOTS)),
    Kernel("nbrc_bwd_scan", [*_size("T", "B", "H", "G"), _out("S", "T, B, 3, H"), _in("hs", "T, B, H"),
                             _in("h0", "B, H"), _in("W2", "G, 2 * H, H"), _out("Gr", "T + 1, B, H"),
                             _out("gw", "G, 2 * H, H", opt=True)],
           requires=("G >= 1", "B % G == 0"), status=True),
    Kernel("mgu_fwd_scan", [*_size("T", "B", "H", "G"), _rows("xf", "T, B, H", "xft", "xfb"),
                            _rows("xn", "T, B, H", "xnt", "xnb"), _in("UfT", "G, H, H"),
                            _in("UnT", "G, H, H"),
                            _in("h0", "B, H"), _out("F", "steps, B, H"), _out("R", "steps, B, H"),
                            _out("N", "steps, B, H"), *_size("keep"), _out("hs", "slots, B, H"),
                            *_size("slots")],
           where=_STEPS, requires=("G >= 1", "B % G == 0", *_STATE_SLOTS)),
    Kernel("mgu_bwd_scan", [*_size("T", "B", "H", "G"), _out("F", "T, B, H"), _out("R", "T, B, H"),
                            _out("N", "T, B, H"), _in("hs", "T, B, H"), _in("h0", "B, H"),
                            _in("Uf", "G, H, H"),
                            _in("Un", "G, H, H"), _out("DZF", "T, B, H"), _out("Gr", "T + 1, B, H"),
                            _out("gUf", "G, H, H", opt=True), _out("gUn", "G, H, H", opt=True)],
           requires=("G >= 1", "B % G == 0"), status=True),
]}
"""Every exported kernel of ``kernels.c``, declared (see :class:`Kernel`)."""


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
    for k in KERNELS.values():
        fn = getattr(lib, k.name)
        fn.argtypes = [ctypes.c_long if p.kind == "size" or i else ctypes.c_void_p
                       for p in k.params for i in range(len(p.c_names()))] + [ctypes.c_long]
        fn.restype = ctypes.c_long if k.status else None
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


def usable(*xs: Tensor) -> bool:
    """Whether the kernels can run on these tensors (float32, CPU) and are available."""
    if any(x.device.type != "cpu" or x.dtype != torch.float32 for x in xs):
        return False
    return kernels() is not None


def runs_on(device: torch.device) -> bool:
    """Whether a float32 trial on ``device`` runs its scans through the native kernels."""
    return device.type == "cpu" and kernels() is not None


def call(name: str, **args: Any) -> None:
    """Run kernel ``name`` (declared in :data:`KERNELS`) with its arguments by name, after
    checking every one of them; torch's CPU thread count is appended (the kernels spread their
    lanes over that many OpenMP threads).

    Raises:
        KernelArgumentError: an argument does not fit the declaration (nothing was run).
        RuntimeError: the kernels are not available.
        MemoryError: a backward kernel could not allocate its scratch memory.
    """
    lib = kernels()
    if lib is None:
        raise RuntimeError(f"{name}: the native kernels are not available")
    KERNELS[name](lib, **args)
