"""The native scan kernels (pipeline/core/scans/kernels.c via its declared interface, native.py): built
here, equal to the
plain autograd loops in float32 (values and every gradient, over the shapes that take each code
path: register tiles and their tails, rows split into lanes over threads, groups, expanded
inputs), equal to the torch code they replace, NaN-propagating, and replaced by the torch code
when they cannot be built."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from pipeline.core.cells import LSTM
from pipeline.core.device import flush_denormals
from pipeline.core.scans import custom, native, reference, standard

HAVE_CC = any(shutil.which(c) for c in ("cc", "gcc", "clang")) or bool(os.environ.get("CC"))

# (T, G, B, H): small tails (B, H not multiples of the 4 x 16 tile), one full tile, lanes split
# over threads (B >= 8, G < threads), several groups, one step
SHAPES = [(9, 1, 5, 3), (12, 1, 32, 16), (7, 1, 13, 19), (6, 3, 12, 8), (1, 2, 3, 4), (5, 1, 32, 64)]
CELLS = {"gru": (3, standard.gru_scan, reference.gru_scan_reference),
         "lstm": (4, standard.lstm_scan, reference.lstm_scan_reference)}


@pytest.fixture(autouse=True)
def native_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the kernels: on, even where the suite runs with them off (.ci/run)."""
    monkeypatch.setenv(native.ENV_SWITCH, "1")


@pytest.fixture
def fresh_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty kernel cache and a module that has not tried to build yet."""
    monkeypatch.setenv("WARMUP_SWEEP_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    return tmp_path


def _args(cell: str, shape: tuple[int, ...], const: bool, seed: int = 0) -> list[Tensor]:
    """float64 leaves of a scan: x (T, G, B, kH), possibly expanded over time, w, [b,] states."""
    T, G, B, H = shape
    k = CELLS[cell][0]
    gen = torch.Generator().manual_seed(seed)

    def r(*s: int, scale: float = 0.7) -> Tensor:
        return scale * torch.randn(*s, generator=gen, dtype=torch.float64)

    x = r(1, G, B, k * H, scale=1.5).expand(T, -1, -1, -1) if const else r(T, G, B, k * H, scale=1.5)
    rest = [r(G, H, k * H)] + ([r(G, k * H)] if cell == "gru" else []) + [r(G, B, H) for _ in range(k - 2)]
    return [t.requires_grad_() for t in [x, *rest]]


def _run(cell: str, args: list[Tensor], gos: tuple[Tensor, ...]) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    scan = CELLS[cell][1]
    out = scan(*args)
    outs = list(out) if isinstance(out, tuple) else [out]
    return outs, torch.autograd.grad(outs, args, gos)


def _float(args: list[Tensor]) -> list[Tensor]:
    return [a.detach().float().requires_grad_() for a in args]


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_kernels_build_and_load_here(fresh_build: Path) -> None:
    assert native.kernels() is not None
    built = list(fresh_build.glob("kernels-*.so"))
    assert built == [native.library_path()]
    # a second module state finds the cached build instead of compiling again
    mtime = built[0].stat().st_mtime_ns
    native._tried, native._lib = False, None
    assert native.kernels() is not None and built[0].stat().st_mtime_ns == mtime


def _run_ref(cell: str, args: list[Tensor], gos: tuple[Tensor, ...]
             ) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    out = CELLS[cell][2](*args)
    outs = list(out) if isinstance(out, tuple) else [out]
    return outs, torch.autograd.grad(outs, args, gos)


def _errors(ours: list[Tensor] | tuple[Tensor, ...], ref: list[Tensor] | tuple[Tensor, ...]) -> list[float]:
    """Largest absolute error of each tensor, relative to the reference's largest magnitude (>= 1)."""
    return [e for e, _ in _error_stats(ours, ref)]


def _error_stats(ours: list[Tensor] | tuple[Tensor, ...], ref: list[Tensor] | tuple[Tensor, ...]
                 ) -> list[tuple[float, float]]:
    """(largest, root-mean-square) absolute error of each tensor, relative to the reference's
    largest magnitude (>= 1)."""
    stats = []
    for a, b in zip(ours, ref, strict=True):
        a, b = a.detach().double(), b.detach().double()
        scale = max(float(b.abs().max()), 1.0)
        stats.append((float((a - b).abs().max()) / scale, float((a - b).square().mean().sqrt()) / scale))
    return stats


def _assert_as_accurate(native_errs: tuple[list[tuple[float, float]], list[tuple[float, float]]],
                        torch_errs: tuple[list[tuple[float, float]], list[tuple[float, float]]]) -> None:
    """(value errors, gradient errors), as :func:`_error_stats` gives them: the native path's
    root-mean-square error within 4x that of the torch float32 code (or 1e-6: both at rounding
    level), and its largest error below 1e-4 (values) / 1e-3 (gradients) of the reference's
    magnitude. The mean, not the largest error, is compared: a recurrence amplifies rounding at
    a few sensitive elements, differently for two roundings of the same arithmetic."""
    for ours, theirs, bound in zip(native_errs, torch_errs, (1e-4, 1e-3), strict=True):
        for (max_n, rms_n), (_, rms_t) in zip(ours, theirs, strict=True):
            assert rms_n <= max(4 * rms_t, 1e-6) and max_n <= bound, (ours, theirs)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("const", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_native_scan_is_as_accurate_as_the_torch_code(cell: str, shape: tuple[int, ...], const: bool,
                                                       threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the float64 autograd loop, the native float32 scan (values, every gradient, the
    forward-only final state) is within a small multiple of the error of the float32 torch code
    it replaces (see :func:`_assert_as_accurate`)."""
    assert native.kernels() is not None
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        args = _args(cell, shape, const)
        T, G, B, H = shape
        gen = torch.Generator().manual_seed(5)
        gos = tuple(torch.randn(T, G, B, H, generator=gen, dtype=torch.float64)
                    for _ in range(CELLS[cell][0] - 2))
        ref_out, ref_grads = _run_ref(cell, args, gos)
        results = {}
        for switch in ("1", "0"):
            monkeypatch.setenv(native.ENV_SWITCH, switch)
            out, grads = _run(cell, _float(args), tuple(g.float() for g in gos))
            with torch.no_grad():  # the forward-only path (two alternating state buffers)
                final = CELLS[cell][1](*[a.detach().float() for a in args], final_only=True)
            final = list(final) if isinstance(final, tuple) else [final]
            results[switch] = (_error_stats(out, ref_out) + _error_stats(final, [o[-1] for o in ref_out]),
                               _error_stats(grads, ref_grads))
        _assert_as_accurate(results["1"], results["0"])
    finally:
        torch.set_num_threads(old)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_native_scans_propagate_nan_and_saturate_like_torch(cell: str) -> None:
    args = [a.detach().float() for a in _args(cell, (6, 1, 8, 16), False)]
    x = args[0].clone()
    x[0, 0, 0, :] = float("inf")  # saturated gates are finite, as in torch
    x[0, 0, 1, :] = -float("inf")
    with torch.no_grad():
        out = CELLS[cell][1](x, *args[1:])
    h = out[0] if isinstance(out, tuple) else out
    assert torch.isfinite(h).all()
    h0 = args[-1].clone()
    h0[0, 3, 2] = float("nan")  # a diverged state stays NaN (no -ffast-math)
    states = args[:-1] + [h0] if cell == "gru" else args[:-2] + [h0, args[-1]]
    with torch.no_grad():
        out = CELLS[cell][1](*states)
    h = out[0] if isinstance(out, tuple) else out
    assert torch.isnan(h[-1, 0, 3]).all() and torch.isfinite(h[:, 0, :3]).all()


def test_no_compiler_falls_back_to_torch(fresh_build: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CC", str(fresh_build / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="pipeline.core.scans.native"):
        assert native.kernels() is None
    assert "native scan kernels unavailable" in caplog.text
    assert not list(fresh_build.glob("*.so"))  # nothing half written
    args = _args("gru", (5, 1, 4, 3), False)
    ref_out, ref_grads = _run_ref("gru", args, (torch.ones(5, 1, 4, 3, dtype=torch.float64),))
    out, grads = _run("gru", _float(args), (torch.ones(5, 1, 4, 3),))
    assert max(_errors(out, ref_out)) < 1e-6 and max(_errors(grads, ref_grads)) < 1e-5


def test_switch_turns_the_kernels_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for off in ("0", "false", "OFF"):
        monkeypatch.setenv(native.ENV_SWITCH, off)
        assert not native.enabled() and native.kernels() is None
    monkeypatch.setenv(native.ENV_SWITCH, "1")
    assert native.enabled()
    assert native.usable(torch.zeros(2, dtype=torch.float64)) is False  # float32 only


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_concurrent_builds_into_one_cache(tmp_path: Path) -> None:
    """Ray workers of one node may all build at once: every one must load a whole library."""
    code = ("import torch; from pipeline.core.scans import native, standard; "
            "assert native.kernels() is not None; x = torch.randn(3, 1, 2, 12); "
            "h = standard.gru_scan(x, torch.randn(1, 4, 12), torch.zeros(1, 12), torch.zeros(1, 2, 4)); "
            "assert torch.isfinite(h).all()")
    env = {**os.environ, "WARMUP_SWEEP_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert len(list(tmp_path.glob("kernels-*.so"))) == 1
    assert not [f for f in tmp_path.iterdir() if not f.name.startswith("kernels-")]


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_lstm_cell_native_equals_onednn_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The LSTM cell's two CPU paths (native scan; oneDNN plus cell-state recovery) agree on every
    step's (h, c) and on the gradients of all parameters, from a given state."""
    torch.manual_seed(0)
    cell = LSTM(3, 24)
    x = torch.randn(30, 16, 3)
    state = (0.5 * torch.randn(16, 24), 0.5 * torch.randn(16, 24))

    def run() -> tuple[list[Tensor], tuple[Tensor, ...]]:
        h, c = cell.forward_states(x, state)
        y, (hT, cT) = cell(x, state)
        loss = (h[::3] * 1.3).sum() + c[::4].sum() + y[-1].square().sum() + cT.sum()
        return [h, c, y, hT], torch.autograd.grad(loss, list(cell.parameters()))

    ours = run()
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    theirs = run()
    assert max(_errors(ours[0], theirs[0])) < 2e-6
    assert max(_errors(ours[1], theirs[1])) < 2e-5


@pytest.mark.parametrize("switch", ["1", "0"])
def test_lstm_gate_orders_agree(switch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``lstm_scan(order=...)``: torch's (i, f, g, o) blocks and the torch code's (o, i, f, g) give
    the same states and gradients, with the native kernels (which take i, f, g, o) and without."""
    monkeypatch.setenv(native.ENV_SWITCH, switch)
    x, w, h0, c0 = _float(_args("lstm", (8, 2, 12, 16), False, seed=7))
    perm = standard.lstm_gate_order(16, x.device)  # ifgo -> oifg
    gos = (torch.randn(8, 2, 12, 16), torch.randn(8, 2, 12, 16))
    a = standard.lstm_scan(x, w, h0, c0, order="ifgo")
    b = standard.lstm_scan(x[..., perm], w[..., perm], h0, c0, order="oifg")
    assert max(_errors(a, b)) < 1e-6
    leaves = (x, w, h0, c0)
    assert max(_errors(torch.autograd.grad(a, leaves, gos), torch.autograd.grad(b, leaves, gos))) < 1e-5
    with pytest.raises(ValueError, match="order"):
        standard.lstm_scan(x, w, h0, c0, order="gifo")


def _grouped_reference(ref, xs: list[Tensor], ws: list[Tensor], h0: Tensor) -> Tensor:
    """The reference loop; for stacked (G, H, H) matrices (G cells side by side, B/G consecutive
    rows each) group by group. Per-row BRC vectors (B, H) broadcast in the loop as they are."""
    if ws[0].dim() < 3:
        return ref(*xs, *ws, h0)
    G = ws[0].size(0)
    Bg = h0.size(0) // G
    rows = [slice(g * Bg, (g + 1) * Bg) for g in range(G)]
    return torch.cat([ref(*[x[:, r] for x in xs], *[w[g] for w in ws], h0[r]) for g, r in enumerate(rows)], 1)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("const", [False, True])
@pytest.mark.parametrize("shape", [(9, 6, 3), (12, 32, 16), (1, 4, 7), (40, 300, 8)])
@pytest.mark.parametrize("cell", ["brc", "nbrc", "mgu"])
def test_native_brc_nbrc_mgu_scans_are_as_accurate_as_the_torch_code(
        cell: str, shape: tuple[int, int, int], const: bool, grouped: bool, threads: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As for the GRU and LSTM: the native BRC, nBRC and MGU scans (forward, and backward with the
    state-gradient recurrence and weight gradients) against the float64 loop, relative to the
    float32 torch code. Grouped: cells side by side in the batch (BRC: weights per row; nBRC and
    MGU: one matrix pair per block of rows). The last shape splits the rows into lanes."""
    T, B, H = shape
    gen = torch.Generator().manual_seed(11)

    def r(*s: int, scale: float = 1.0) -> Tensor:
        return scale * torch.randn(*s, generator=gen, dtype=torch.float64)

    n_in = 2 if cell == "mgu" else 3
    xs = [r(1, B, H).expand(T, -1, -1) if const else r(T, B, H) for _ in range(n_in)]
    G = 2 if grouped else 1
    if cell == "mgu":
        ws = [r(G, H, H, scale=0.5) if grouped else r(H, H, scale=0.5) for _ in range(2)]
        scan, ref_loop = custom.mgu_scan, reference.mgu_scan_reference
    elif cell == "brc":
        ws = [r(B, H) if grouped else r(H) for _ in range(2)]
        scan, ref_loop = custom.brc_scan, reference.brc_scan_reference
    else:
        ws = [r(G, H, H, scale=0.5) if grouped else r(H, H, scale=0.5) for _ in range(2)]
        scan, ref_loop = custom.nbrc_scan, reference.nbrc_scan_reference
    args = [t.requires_grad_() for t in [*xs, *ws, r(B, H, scale=0.5)]]
    go = r(T, B, H)
    ref = _grouped_reference(ref_loop, args[:n_in], args[n_in:n_in + 2], args[-1])
    ref_grads = torch.autograd.grad(ref, args, go)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        errs = {}
        for switch in ("1", "0"):
            monkeypatch.setenv(native.ENV_SWITCH, switch)
            ours = _float(args)
            out = scan(*ours)
            grads = torch.autograd.grad(out, ours, go.float())
            with torch.no_grad():
                final = scan(*[a.detach() for a in ours], final_only=True)
            errs[switch] = (_error_stats([out, final], [ref, ref[-1]]), _error_stats(grads, ref_grads))
    finally:
        torch.set_num_threads(old)
    _assert_as_accurate(errs["1"], errs["0"])


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
@pytest.mark.parametrize("flush", [True, False])
def test_native_lanes_compute_in_the_callers_float_mode(flush: bool) -> None:
    """Every lane, on whichever of torch's threads it runs, flushes subnormals exactly when the
    calling thread does (:func:`pipeline.core.device.flush_denormals`), whatever mode those threads
    were started in. A BRC with its update gate saturated at 1 keeps h' = h, so a state of 1e-39
    (subnormal) stays 1e-39 bit for bit in IEEE mode and becomes 0 when flushed."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    T, B, H = 3, 32, 16  # 4 lanes of 8 rows over 2 threads
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.set_flush_denormal(not flush)  # threads first used in the other mode
        custom.brc_scan(*[torch.zeros(T, B, H)] * 3, torch.zeros(H), torch.zeros(H), torch.ones(B, H))
        torch.set_flush_denormal(False)
        h0 = torch.full((B, H), 1e-39)  # made in IEEE mode (a flushing fill would store 0)
        assert h0.abs().min() > 0
        torch.set_flush_denormal(flush)
        zero = torch.zeros(T, B, H)
        hs = custom.brc_scan(torch.full((T, B, H), 100.0), zero, zero, torch.zeros(H), torch.zeros(H), h0)
        torch.set_flush_denormal(False)
        assert native.usable(h0)
        expected = torch.zeros(T, B, H) if flush else h0.expand(T, B, H)
        assert torch.equal(hs, expected)
    finally:
        torch.set_num_threads(old)
        flush_denormals()


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_native_results_do_not_depend_on_the_thread_count() -> None:
    """Lanes are cut by the batch, not by the threads, and their partial weight gradients added in
    a fixed order: every scan's outputs and gradients are equal bit for bit on 1, 2 and 3 threads."""
    def run() -> list[Tensor]:
        gen = torch.Generator().manual_seed(0)
        T, B, H = 20, 40, 24

        def leaf(*s: int, scale: float = 0.3) -> Tensor:
            return (scale * torch.randn(*s, generator=gen)).requires_grad_()

        results = []
        runs = [(standard.gru_scan, [leaf(T, 1, B, 3 * H), leaf(1, H, 3 * H), leaf(1, 3 * H), leaf(1, B, H)]),
                (standard.lstm_scan, [leaf(T, 1, B, 4 * H), leaf(1, H, 4 * H), leaf(1, B, H), leaf(1, B, H)]),
                (custom.brc_scan, [leaf(T, B, H) for _ in range(3)] + [leaf(H), leaf(H), leaf(B, H)]),
                (custom.nbrc_scan, [leaf(T, B, H) for _ in range(3)] + [leaf(H, H), leaf(H, H), leaf(B, H)]),
                (custom.mgu_scan, [leaf(T, B, H) for _ in range(2)] + [leaf(H, H), leaf(H, H), leaf(B, H)])]
        for scan, args in runs:
            out = scan(*args)
            out = out[0] if isinstance(out, tuple) else out
            results += [out, *torch.autograd.grad(out.square().sum(), args)]
        return results

    old = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs.append(run())
    finally:
        torch.set_num_threads(old)
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other, strict=True))


def test_cache_falls_back_to_a_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unwritable cache home does not cost the kernels: a per-user temporary directory is used."""
    monkeypatch.delenv("WARMUP_SWEEP_CACHE", raising=False)
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # mkdir under a file fails
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    assert native.cache_dir().parent == tmp_path / "tmp"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert native.cache_dir() == tmp_path / "cache" / "warmup-sweep"


def _scan_and_args(cell: str, T: int, B: int, H: int, const: bool) -> tuple:
    """A scan of each kind and float32 leaf inputs for it (the gated ones with G = 1)."""
    gen = torch.Generator().manual_seed(11)

    def r(*shape: int, scale: float = 1.0) -> Tensor:
        return (scale * torch.randn(*shape, generator=gen)).requires_grad_()

    if cell in CELLS:
        k = CELLS[cell][0]
        x = r(1, 1, B, k * H).expand(T, 1, B, k * H) if const else r(T, 1, B, k * H)
        w, h0 = r(1, H, k * H, scale=0.3), r(1, B, H, scale=0.5)
        if cell == "gru":
            return standard.gru_scan, [x, w, r(1, 3 * H), h0]
        return standard.lstm_scan, [x, w, h0, r(1, B, H, scale=0.5)]
    n_in, scan = {"brc": (3, custom.brc_scan), "nbrc": (3, custom.nbrc_scan),
                  "mgu": (2, custom.mgu_scan)}[cell]
    xs = [r(1, B, H).expand(T, B, H) if const else r(T, B, H) for _ in range(n_in)]
    ws = [r(H) for _ in range(2)] if cell == "brc" else [r(H, H, scale=0.5) for _ in range(2)]
    return scan, [*xs, *ws, r(B, H, scale=0.5)]


@pytest.mark.parametrize("switch", ["1", "0"])
@pytest.mark.parametrize("const", [False, True])
@pytest.mark.parametrize("cell", ["gru", "lstm", "brc", "nbrc", "mgu"])
def test_final_only_scans_with_a_graph_give_the_full_scans_gradients_exactly(
        cell: str, const: bool, switch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``final_only`` and a graph (the warm-up's stabilisation runs), a scan returns only its
    last states and its backward starts from their gradients alone: every input's gradient equals,
    bit for bit, that of the full scan with zero gradients at every step but the last, on the
    native kernels and on the torch code."""
    monkeypatch.setenv(native.ENV_SWITCH, switch)
    if switch == "1" and not HAVE_CC:
        pytest.skip("no C compiler")
    scan, args = _scan_and_args(cell, T=13, B=12, H=16, const=const)
    leaves = [a for a in args if a.is_leaf]
    finals = scan(*args, final_only=True)
    finals = finals if isinstance(finals, tuple) else (finals,)
    full = scan(*args)
    full = full if isinstance(full, tuple) else (full,)
    gen = torch.Generator().manual_seed(12)
    gos = [torch.randn(f.shape, generator=gen) for f in finals]
    assert all(f.shape == s[-1].shape and torch.equal(f, s[-1]) for f, s in zip(finals, full, strict=True))
    g_final = torch.autograd.grad(finals, leaves, gos)
    g_full = torch.autograd.grad([s[-1] for s in full], leaves, gos)
    for a, b in zip(g_final, g_full, strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------ the interface
def _prototypes() -> dict[str, list[tuple[str, str]]]:
    """Exported functions of kernels.c: name -> [(C type, parameter name)], read from the source."""
    import re

    src = native.SOURCE.read_text()
    out = {}
    for m in re.finditer(r"^(?:void|long) (\w+_scan)\(([^)]*)\)", src, flags=re.M):
        params = [" ".join(p.split()) for p in m.group(2).split(",")]
        out[m.group(1)] = [(p.rsplit(" ", 1)[0].replace(" *", "*").rstrip("*") + "*" * p.count("*"),
                            p.rsplit(" ", 1)[1].lstrip("*")) for p in params]
    return out


def test_every_kernel_is_declared_with_the_c_prototypes_names_types_and_constness() -> None:
    protos = _prototypes()
    assert sorted(protos) == sorted(native.KERNELS)
    for name, kernel in native.KERNELS.items():
        c = protos[name]
        assert [n for _, n in c] == kernel.c_names(), name
        kinds = {n: p.kind for p in kernel.params for n in p.c_names()}
        for ctype, pname in c:
            kind = "size" if pname == "threads" else kinds[pname]
            if kind in ("in", "rows") and pname in {p.name for p in kernel.params}:
                assert ctype == "const float*", (name, pname, ctype)
            elif kind == "out":
                assert ctype == "float*", (name, pname, ctype)
            else:  # sizes, flags, strides
                assert ctype == "long", (name, pname, ctype)
        returns = re.search(rf"^(void|long) {name}\(", native.SOURCE.read_text(), flags=re.M).group(1)
        assert (returns == "long") == kernel.status, name


def _brc_forward_args(T: int = 3, B: int = 4, H: int = 5) -> dict:
    z = torch.zeros
    return dict(T=T, B=B, H=H, xc=z(T, B, H), xa=z(T, B, H), xh=z(T, B, H), wc=z(H), wa=z(H), wb=0,
                h0=z(B, H), S=z(T, 3, B, H), keep=1, hs=z(T, B, H), slots=T)


@pytest.mark.parametrize("change, message", [
    (dict(hs=torch.zeros(2, 4, 5)), "hs must have shape (3, 4, 5)"),
    (dict(h0=torch.zeros(4, 5, dtype=torch.float64)), "h0 must be float32 on the CPU"),
    (dict(hs=torch.zeros(3, 5, 4).transpose(1, 2)), "hs must be contiguous"),
    (dict(xc=torch.zeros(3, 5, 4).transpose(1, 2)), "xc needs contiguous rows"),
    (dict(wb=5, wc=torch.zeros(5)), "wc must have shape (4, 5)"),
    (dict(wb=2), "needs wb in (0, H)"),
    (dict(slots=4), "needs 1 <= slots <= T"),
    (dict(T=-1), "T must be an int >= 0"),
    (dict(keep=True), "keep must be an int"),
    (dict(h0=None), "h0 must be a tensor"),
    (dict(extra=1), "unexpected ['extra']"),
])
def test_a_call_that_does_not_fit_the_declaration_is_refused_before_it_runs(change: dict, message: str
                                                                             ) -> None:
    args = {**_brc_forward_args(), **change}
    with pytest.raises(native.KernelArgumentError) as err:
        native.KERNELS["brc_fwd_scan"].argv(args)
    assert message in str(err.value) and str(err.value).startswith("brc_fwd_scan: ")


def test_a_missing_argument_is_named() -> None:
    args = _brc_forward_args()
    del args["S"]
    with pytest.raises(native.KernelArgumentError, match=r"missing \['S'\]"):
        native.KERNELS["brc_fwd_scan"].argv(args)


def test_expanded_inputs_pass_their_strides_and_optional_buffers_pass_null() -> None:
    args = _brc_forward_args()
    args.update(xc=torch.zeros(1, 1, 5).expand(3, 4, 5), S=None, keep=0)
    argv = native.KERNELS["brc_fwd_scan"].argv(args)
    names = native.KERNELS["brc_fwd_scan"].c_names()[:-1]
    got = dict(zip(names, argv, strict=True))
    assert (got["xct"], got["xcb"]) == (0, 0) and got["S"] is None
    assert got["xat"] == 4 * 5 and got["xab"] == 5
