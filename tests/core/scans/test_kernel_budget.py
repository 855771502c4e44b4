"""Kernels per time step of every fused scan, as a GPU would launch them.

On a GPU a step of a recurrent scan is launch-bound: its time is about the number of kernels it
launches. Every ATen operation a scan dispatches per time step (forward and backward, counted below
the autograd layer with a dispatch mode; views launch nothing and are not counted) is one launch
there. The budgets are what the scans do now, on the GPU code path (tanh as one kernel, not the CPU's
sigmoid form): a change that adds a kernel to a step fails here and has to say why. (A product
written to a buffer other than its addend, ``addmm(x, ..., out=y)``, also copies x on the GPU inside
the one operation; the scans avoid that form in their loops except the MGU backward's one addmm.)

These pin the implementation, not its behaviour, so they are marked ``perf`` and left out of the
default suite: ``python -m pytest -m perf``.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.core.scans import custom, native, standard

VIEWS = {"slice", "select", "unsqueeze", "squeeze", "view", "_unsafe_view", "expand", "unbind",
         "as_strided", "t", "transpose", "permute", "alias", "detach", "split", "chunk", "narrow"}

pytestmark = pytest.mark.perf

# (forward, backward) kernels per time step
BUDGET = {"gru": (5, 3), "lstm": (7, 5), "brc": (5, 1), "nbrc": (5, 3), "mgu": (6, 7)}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.n[name] += 1
        return func(*args, **(kwargs or {}))


def _scan_and_inputs(cell: str, T: int):
    gen = torch.Generator().manual_seed(0)
    G, B, H = 2, 4, 5

    def p(*shape: int) -> torch.Tensor:
        return (0.3 * torch.randn(*shape, generator=gen)).requires_grad_()

    if cell == "gru":
        return standard.gru_scan, (p(T, G, B, 3 * H), p(G, H, 3 * H), p(G, 3 * H), p(G, B, H))
    if cell == "lstm":
        return (lambda *a: standard.lstm_scan(*a)[0],
                (p(T, G, B, 4 * H), p(G, H, 4 * H), p(G, B, H), p(G, B, H)))
    if cell == "brc":
        return custom.brc_scan, (p(T, B, H), p(T, B, H), p(T, B, H), p(H), p(H), p(B, H))
    if cell == "nbrc":
        return custom.nbrc_scan, (p(T, B, H), p(T, B, H), p(T, B, H), p(H, H), p(H, H), p(B, H))
    return custom.mgu_scan, (p(T, B, H), p(T, B, H), p(H, H), p(H, H), p(B, H))


def _kernels(cell: str, T: int) -> tuple[int, int]:
    scan, args = _scan_and_inputs(cell, T)
    with _Count() as fwd:
        out = scan(*args)
    with _Count() as bwd:
        out.sum().backward()
    return sum(fwd.n.values()), sum(bwd.n.values())


@pytest.mark.parametrize("cell", sorted(BUDGET))
def test_kernels_per_time_step_within_budget(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in (custom, standard):
        monkeypatch.setattr(mod, "tanh_scale", lambda x: 1.0)  # the GPU code path
    monkeypatch.setenv(native.ENV_SWITCH, "0")  # the torch code (on CPU the native kernels: no ATen ops)
    short, long = _kernels(cell, 10), _kernels(cell, 30)
    per_step = tuple((b - a) / 20 for a, b in zip(short, long, strict=True))
    fwd, bwd = BUDGET[cell]
    assert per_step[0] <= fwd and per_step[1] <= bwd, f"{cell}: (forward, backward) a step {per_step}"
