"""Fused, grouped GRU/LSTM scans and the linear scan agree with plain autograd loops and with
torch's own GRU/LSTM (values and all gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pipeline.core.cells import GRU, LSTM
from pipeline.core.scans import reference, standard


def leaves(*shapes: tuple[int, ...], seed: int = 0, scale: float = 0.7,
           dtype: torch.dtype = torch.float64) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(*s, generator=gen, dtype=dtype)).requires_grad_() for s in shapes]


def grads(outs: tuple[Tensor, ...], args: list[Tensor], gos: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return torch.autograd.grad(outs, args, gos)


@pytest.mark.parametrize("G", [1, 3])
def test_gru_scan_matches_reference_loop(G: int) -> None:
    T, B, H = 9, 4, 5
    args = leaves((T, G, B, 3 * H), (G, H, 3 * H), (G, 3 * H), (G, B, H))
    go = torch.randn(T, G, B, H, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hs_f, hs_r = standard.gru_scan(*args), reference.gru_scan_reference(*args)
    torch.testing.assert_close(hs_f, hs_r, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads((hs_f,), args, (go,)), grads((hs_r,), args, (go,)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("G", [1, 3])
def test_lstm_scan_matches_reference_loop(G: int) -> None:
    T, B, H = 9, 4, 5
    args = leaves((T, G, B, 4 * H), (G, H, 4 * H), (G, B, H), (G, B, H))
    gen = torch.Generator().manual_seed(1)
    gos = tuple(torch.randn(T, G, B, H, dtype=torch.float64, generator=gen) for _ in range(2))
    out_f, out_r = standard.lstm_scan(*args), reference.lstm_scan_reference(*args)
    for a, b in zip(out_f, out_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads(out_f, args, gos), grads(out_r, args, gos), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # only the cell state used (the hidden output gets no gradient)
    ga = torch.autograd.grad(standard.lstm_scan(*args)[1][-1].sum(), args)
    gb = torch.autograd.grad(reference.lstm_scan_reference(*args)[1][-1].sum(), args)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck_and_expanded_inputs() -> None:
    T, G, B, H = 5, 2, 3, 3
    gru = leaves((T, G, B, 3 * H), (G, H, 3 * H), (G, 3 * H), (G, B, H), seed=2)
    assert torch.autograd.gradcheck(standard.gru_scan, gru)
    lstm = leaves((T, G, B, 4 * H), (G, H, 4 * H), (G, B, H), (G, B, H), seed=3)
    assert torch.autograd.gradcheck(standard.lstm_scan, lstm)
    # a constant input (stride 0 over time and batch), as in the warm-up's stabilisation
    (u,) = leaves((1, G, 1, 4 * H), seed=4)
    w, h0, c0 = lstm[1:]
    fast = standard.lstm_scan(u.expand(T, G, B, 4 * H), w, h0, c0, final_only=True)
    ref = reference.lstm_scan_reference(u.expand(T, G, B, 4 * H), w, h0, c0)
    torch.testing.assert_close(fast[1], ref[1][-1])
    ga = torch.autograd.grad(sum(s.sum() for s in fast), (u, w))
    gb = torch.autograd.grad(ref[0][-1].sum() + ref[1][-1].sum(), (u, w))
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # no graph: only the last state is kept
        h_last = standard.gru_scan(gru[0], *gru[1:], final_only=True)
    torch.testing.assert_close(h_last, reference.gru_scan_reference(*gru)[-1])


def test_gru_cell_matches_torch_gru_in_float32() -> None:
    """The CPU cell runs the fused scan; it must equal torch's own GRU, values and gradients."""
    torch.manual_seed(0)
    cell = GRU(3, 16)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases too
    x = torch.randn(30, 8, 3)
    h0 = torch.randn(8, 16)
    go = torch.randn(30, 8, 16)
    y, (h,) = cell(x, (h0,))
    g_ours = torch.autograd.grad((y * go).sum(), list(cell.parameters()))
    y_ref, h_ref = cell.rnn(x, h0.unsqueeze(0))
    g_ref = torch.autograd.grad((y_ref * go).sum(), list(cell.parameters()))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h, h_ref[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_lstm_scan_matches_torch_lstm_in_float32() -> None:
    """The grouped LSTM scan (torch's gates permuted to o, i, f, g) equals torch's LSTM."""
    torch.manual_seed(0)
    cell = LSTM(3, 16)
    r = cell.rnn
    x = torch.randn(30, 8, 3)
    h0, c0 = torch.randn(8, 16), torch.randn(8, 16)
    perm = standard.lstm_gate_order(16, x.device)
    xp = torch.nn.functional.linear(x, r.weight_ih_l0[perm], (r.bias_ih_l0 + r.bias_hh_l0)[perm])
    hs, cs = standard.lstm_scan(xp.unsqueeze(1), r.weight_hh_l0[perm].T.unsqueeze(0), h0[None], c0[None])
    y, (h, c) = r(x, (h0[None], c0[None]))
    torch.testing.assert_close(hs[:, 0], y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cs[-1, 0], c[0], rtol=1e-5, atol=1e-6)
    g_ours = torch.autograd.grad(hs.sum() + cs[-1].sum(), list(r.parameters()))
    g_ref = torch.autograd.grad(y.sum() + c.sum(), list(r.parameters()))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_linear_scan_matches_a_loop() -> None:
    f, v, c0 = leaves((12, 3, 4), (12, 3, 4), (3, 4), seed=5)
    go = torch.randn(12, 3, 4, dtype=torch.float64)
    cs = standard.linear_scan(f, v, c0)
    c, ref = c0, []
    for t in range(12):
        c = f[t] * c + v[t]
        ref.append(c)
    ref_t = torch.stack(ref)
    torch.testing.assert_close(cs, ref_t)
    for a, b in zip(grads((cs,), [f, v, c0], (go,)), grads((ref_t,), [f, v, c0], (go,)), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(standard.linear_scan, (f, v, c0))


def test_bad_shapes_raise() -> None:
    x, w, b, h0 = leaves((4, 1, 2, 9), (1, 3, 9), (1, 9), (1, 2, 3))
    with pytest.raises(ValueError, match="w must be"):
        standard.gru_scan(x, w[:, :2], b, h0)
    with pytest.raises(ValueError, match="x must be"):
        standard.lstm_scan(x, w, h0, h0)
    with pytest.raises(ValueError, match="shapes disagree"):
        standard.linear_scan(x, x[:, :, :1], h0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_grouped_scans_match_cpu_reference() -> None:
    T, G, B, H = 40, 4, 8, 16
    gru = leaves((T, G, B, 3 * H), (G, H, 3 * H), (G, 3 * H), (G, B, H), seed=21)
    go = torch.randn(T, G, B, H, dtype=torch.float64, generator=torch.Generator().manual_seed(22))
    ref = reference.gru_scan_reference(*gru)
    ref_g = grads((ref,), gru, (go,))
    cuda = [a.detach().cuda().requires_grad_() for a in gru]
    out = standard.gru_scan(*cuda)
    torch.testing.assert_close(out.cpu(), ref.detach(), rtol=1e-10, atol=1e-10)
    for a, b in zip(grads((out,), cuda, (go.cuda(),)), ref_g, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-10)
    lstm = leaves((T, G, B, 4 * H), (G, H, 4 * H), (G, B, H), (G, B, H), seed=23)
    ref2 = reference.lstm_scan_reference(*lstm)
    ref2_g = grads(ref2, lstm, (go, go))
    cuda = [a.detach().cuda().requires_grad_() for a in lstm]
    out2 = standard.lstm_scan(*cuda)
    for a, b in zip(out2, ref2, strict=True):
        torch.testing.assert_close(a.cpu(), b.detach(), rtol=1e-10, atol=1e-10)
    for a, b in zip(grads(out2, cuda, (go.cuda(), go.cuda())), ref2_g, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-10)
