"""Fused BRC/nBRC/MGU scans agree with their plain autograd loops (values and all gradients)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from pipeline.core.scans import custom, reference

CELLS = ("brc", "nbrc", "mgu")
N_X = {"brc": 3, "nbrc": 3, "mgu": 2}  # number of (T, B, H) input projections per cell

Scan = Callable[..., Tensor]


def scans(cell: str) -> tuple[Scan, Scan]:
    """(custom, reference) scan functions of a cell."""
    return getattr(custom, f"{cell}_scan"), getattr(reference, f"{cell}_scan_reference")


def make_weights(cell: str, H: int, gen: torch.Generator, dtype: torch.dtype) -> list[Tensor]:
    """Recurrent weights: BRC vectors near 1 (its init), full matrices at xavier-like scale."""
    if cell == "brc":
        return [1.0 + 0.5 * torch.randn(H, generator=gen, dtype=dtype) for _ in range(2)]
    return [torch.randn(H, H, generator=gen, dtype=dtype) * H**-0.5 for _ in range(2)]


def make_args(
    cell: str,
    T: int,
    B: int,
    H: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> list[Tensor]:
    """Leaf tensors (all requiring grad) in the scan's argument order."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(T, B, H, generator=gen, dtype=dtype) for _ in range(N_X[cell])]
    ws = make_weights(cell, H, gen, dtype)
    h0 = torch.randn(B, H, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (*xs, *ws, h0)]


def values_and_grads(scan: Scan, args: list[Tensor], go: Tensor) -> tuple[Tensor, tuple[Tensor | None, ...]]:
    """hs and the gradients of <hs, go> w.r.t. every argument."""
    hs = scan(*args)
    grads = torch.autograd.grad(hs, args, go, allow_unused=True)
    return hs.detach(), grads


def assert_match(cell: str, args: list[Tensor], go: Tensor, atol: float, rtol: float) -> None:
    fast, ref = scans(cell)
    hs_f, g_f = values_and_grads(fast, args, go)
    hs_r, g_r = values_and_grads(ref, args, go)
    torch.testing.assert_close(hs_f, hs_r, atol=atol, rtol=rtol)
    for i, (a, b) in enumerate(zip(g_f, g_r, strict=True)):
        assert a is not None and b is not None, f"argument {i} got no gradient"
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=f"{cell} grad of arg {i}")


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_float64(cell: str) -> None:
    fast, _ = scans(cell)
    args = make_args(cell, T=4, B=3, H=5)
    assert torch.autograd.gradcheck(fast, args)


@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference_float32(cell: str) -> None:
    T, B, H = 60, 16, 32
    args = make_args(cell, T, B, H, seed=1, dtype=torch.float32)
    go = torch.randn(T, B, H, generator=torch.Generator().manual_seed(2))
    assert_match(cell, args, go, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference_float64_all_inputs(cell: str) -> None:
    T, B, H = 20, 4, 6
    args = make_args(cell, T, B, H, seed=3)
    go = torch.randn(T, B, H, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert_match(cell, args, go, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_final_state_loss_and_broadcast_grad(cell: str) -> None:
    """Losses on the last state only (zero grads elsewhere) and on hs.sum() (expanded grad)."""
    fast, ref = scans(cell)
    args = make_args(cell, T=15, B=3, H=4, seed=5)
    for loss_of in (lambda hs: hs[-1].pow(2).sum(), lambda hs: hs.sum()):
        g_f = torch.autograd.grad(loss_of(fast(*args)), args)
        g_r = torch.autograd.grad(loss_of(ref(*args)), args)
        for a, b in zip(g_f, g_r, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_expanded_inputs(cell: str) -> None:
    """Warm-up style: one constant input expanded over time (and over the batch)."""
    T, B, H = 25, 5, 6
    gen = torch.Generator().manual_seed(6)
    n = N_X[cell]
    # x[0]: constant over time; others: constant over time and batch
    bases = [torch.randn(1, B if i == 0 else 1, H, generator=gen, dtype=torch.float64) for i in range(n)]
    ws = make_weights(cell, H, gen, torch.float64)
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (*bases, *ws, h0)]
    fast, ref = scans(cell)

    def run(scan: Scan) -> tuple[Tensor, tuple[Tensor, ...]]:
        xs = [b.expand(T, B, H) for b in leaves[:n]]
        assert all(x.stride(0) == 0 for x in xs)
        hs = scan(*xs, *leaves[n:])
        return hs.detach(), torch.autograd.grad(hs[-1].sum(), leaves)

    (hs_f, g_f), (hs_r, g_r) = run(fast), run(ref)
    torch.testing.assert_close(hs_f, hs_r, atol=1e-12, rtol=1e-12)
    for a, b in zip(g_f, g_r, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_single_step(cell: str) -> None:
    args = make_args(cell, T=1, B=2, H=3, seed=15)
    go = torch.randn(1, 2, 3, dtype=torch.float64)
    assert_match(cell, args, go, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_retain_graph_and_outputs_untouched(cell: str) -> None:
    """The backward reuses its saved buffers, but never when the graph is kept, nor hs."""
    fast, ref = scans(cell)
    args = make_args(cell, T=12, B=3, H=4, seed=13)
    hs = fast(*args)
    hs_before = hs.detach().clone()
    go = torch.randn_like(hs)
    first = torch.autograd.grad(hs, args, go, retain_graph=True)
    second = torch.autograd.grad(hs, args, go)
    expected = torch.autograd.grad(ref(*args), args, go)
    torch.testing.assert_close(hs.detach(), hs_before, atol=0, rtol=0)
    for a, b, c in zip(first, second, expected, strict=True):
        torch.testing.assert_close(a, c, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(b, c, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_grads_accumulate_on_leaves(cell: str) -> None:
    """Two forward/backward passes accumulate twice the gradient in .grad (no aliasing)."""
    fast, ref = scans(cell)
    args = make_args(cell, T=10, B=2, H=3, seed=14)
    for _ in range(2):
        fast(*args).square().sum().backward()
    expected = torch.autograd.grad(ref(*args).square().sum(), args)
    for a, e in zip(args, expected, strict=True):
        assert a.grad is not None
        torch.testing.assert_close(a.grad, 2.0 * e, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_h0_gradient_only(cell: str) -> None:
    """Only h0 requires grad (e.g. sampled states fed to a frozen layer)."""
    fast, ref = scans(cell)
    args = [a.detach() for a in make_args(cell, T=12, B=3, H=4, seed=7)]
    args[-1].requires_grad_()
    (g_f,) = torch.autograd.grad(fast(*args)[-1].sum(), args[-1])
    (g_r,) = torch.autograd.grad(ref(*args)[-1].sum(), args[-1])
    torch.testing.assert_close(g_f, g_r, atol=1e-12, rtol=1e-12)
    assert g_f.abs().sum() > 0


@pytest.mark.parametrize("cell", CELLS)
def test_chunked_projection_inputs(cell: str) -> None:
    """The caller's pattern: one matmul for all steps, split into non-contiguous gate views."""
    T, B, H, n_in = 30, 4, 8, 3
    gen = torch.Generator().manual_seed(8)
    n = N_X[cell]
    u = torch.randn(T, B, n_in, generator=gen, dtype=torch.float64)
    W = torch.randn(n * H, n_in, generator=gen, dtype=torch.float64).requires_grad_()
    b = torch.zeros(n * H, dtype=torch.float64, requires_grad=True)
    ws = [w.requires_grad_() for w in make_weights(cell, H, gen, torch.float64)]
    h0 = torch.zeros(B, H, dtype=torch.float64)
    fast, ref = scans(cell)

    def run(scan: Scan) -> tuple[Tensor, ...]:
        xs = torch.addmm(b, u.view(T * B, n_in), W.T).view(T, B, n * H).chunk(n, dim=-1)
        hs = scan(*xs, *ws, h0)
        return (hs.detach(), *torch.autograd.grad(hs[-1].square().sum(), [W, b, *ws]))

    for a, r in zip(run(fast), run(ref), strict=True):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_path_matches(cell: str) -> None:
    """Without a graph the scan reuses one step of scratch; values are unchanged."""
    fast, ref = scans(cell)
    args = make_args(cell, T=20, B=3, H=5, seed=9)
    with torch.no_grad():
        hs_lean = fast(*args)
        hs_ref = ref(*args)
    hs_graph = fast(*args)
    assert hs_graph.requires_grad and not hs_lean.requires_grad
    torch.testing.assert_close(hs_lean, hs_graph.detach(), atol=1e-14, rtol=1e-14)
    torch.testing.assert_close(hs_lean, hs_ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_final_only(cell: str) -> None:
    """final_only returns hs[-1]: with a graph (and its gradients) and without one."""
    fast, ref = scans(cell)
    args = make_args(cell, T=30, B=3, H=4, seed=16)
    n = N_X[cell]
    expanded = [a[:1].expand_as(a) for a in args[:n]] + args[n:]  # the warm-up's constant input
    for inputs in (args, expanded):
        expected = ref(*inputs)[-1]
        last = fast(*inputs, final_only=True)
        assert last.shape == expected.shape
        torch.testing.assert_close(last, expected, atol=1e-12, rtol=1e-12)
        g_f = torch.autograd.grad(last.sum(), args)
        g_r = torch.autograd.grad(expected.sum(), args)
        for a, b in zip(g_f, g_r, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
        with torch.no_grad():
            torch.testing.assert_close(fast(*inputs, final_only=True), expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_partial_requires_grad(cell: str) -> None:
    """Weights frozen, inputs trainable (a warm-up restricted to some parameters)."""
    fast, ref = scans(cell)
    args = make_args(cell, T=10, B=2, H=3, seed=10)
    n = N_X[cell]
    args = [a if i < n else a.detach() for i, a in enumerate(args)]
    g_f = torch.autograd.grad(fast(*args).sum(), args[:n])
    g_r = torch.autograd.grad(ref(*args).sum(), args[:n])
    for a, b in zip(g_f, g_r, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_thread_count_restored(cell: str) -> None:
    """Per-step loops may run on one thread; the caller's setting is restored afterwards."""
    fast, _ = scans(cell)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fast(*make_args(cell, T=5, B=2, H=3, seed=17)).sum().backward()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_errors_name_the_problem() -> None:
    x = torch.randn(5, 2, 3)
    w = torch.ones(3)
    with pytest.raises(ValueError, match="xa must be"):
        custom.brc_scan(x, torch.randn(5, 2, 4), x, w, w, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="Wc must have shape"):
        custom.nbrc_scan(x, x, x, torch.ones(3), torch.ones(3, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="sequence length"):
        custom.mgu_scan(x, torch.randn(4, 2, 3), torch.eye(3), torch.eye(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="float64"):
        custom.mgu_scan(x, x, torch.eye(3), torch.eye(3), torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_matches_cpu_reference(cell: str) -> None:
    T, B, H = 50, 8, 16
    args = make_args(cell, T, B, H, seed=11)
    go = torch.randn(T, B, H, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    fast, ref = scans(cell)
    hs_r, g_r = values_and_grads(ref, args, go)
    cuda_args = [a.detach().cuda().requires_grad_() for a in args]
    hs_f, g_f = values_and_grads(fast, cuda_args, go.cuda())
    torch.testing.assert_close(hs_f.cpu(), hs_r, atol=1e-10, rtol=1e-10)
    for a, b in zip(g_f, g_r, strict=True):
        assert a is not None
        torch.testing.assert_close(a.cpu(), b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_grouped_weights_equal_each_group_alone(cell: str) -> None:
    """G cells side by side in one batch (B/G rows each, own recurrent weights; BRC: per-row
    vectors) give each group's reference result, values and gradients (float64)."""
    T, G, Bg, H = 7, 3, 2, 4
    groups = [make_args(cell, T, Bg, H, seed=30 + g) for g in range(G)]
    n_x = N_X[cell]
    go = torch.randn(T, G * Bg, H, generator=torch.Generator().manual_seed(40), dtype=torch.float64)
    xs = [torch.cat([a[i] for a in groups], dim=1) for i in range(n_x)]
    if cell == "brc":
        ws = [torch.cat([a[n_x + i].expand(Bg, H) for a in groups]) for i in range(2)]
    else:
        ws = [torch.stack([a[n_x + i] for a in groups]) for i in range(2)]
    h0 = torch.cat([a[-1] for a in groups])
    fast, ref = scans(cell)
    hs = fast(*xs, *ws, h0)
    leaves = [p for a in groups for p in a]
    got = torch.autograd.grad(hs, leaves, go)
    want_hs = [ref(*a) for a in groups]
    want = torch.autograd.grad(want_hs, leaves, list(go.split(Bg, dim=1)))
    torch.testing.assert_close(hs, torch.cat(want_hs, dim=1), rtol=1e-10, atol=1e-12)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
