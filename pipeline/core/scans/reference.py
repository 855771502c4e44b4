"""The recurrences as plain autograd loops: the readable definitions (docs/method.md, "Cells").

Every fast scan (:mod:`.custom`, :mod:`.standard`, and the native kernels behind them) must compute
what these loops compute, gradients included; the tests compare them. One step per loop iteration,
nothing fused, nothing in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["brc_scan_reference", "gru_scan_reference", "lstm_scan_reference", "mgu_scan_reference",
           "nbrc_scan_reference"]


def brc_scan_reference(xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor) -> Tensor:
    """BRC recurrence as a plain autograd loop (the definition ``brc_scan`` must match).

    Args:
        xc: input projection of the update gate, (T, B, H), bias added.
        xa: input projection of the bistability gate, (T, B, H), bias added.
        xh: input projection of the candidate, (T, B, H), bias added.
        wc: recurrent weight of the update gate, (H,).
        wa: recurrent weight of the bistability gate, (H,).
        h0: initial state, (B, H).

    Returns:
        Every step's state, (T, B, H).
    """
    h, hs = h0, []
    for t in range(xh.size(0)):
        c = torch.sigmoid(xc[t] + wc * h)
        a = 1.0 + torch.tanh(xa[t] + wa * h)
        h = c * h + (1.0 - c) * torch.tanh(xh[t] + a * h)
        hs.append(h)
    return torch.stack(hs)  # (T, B, H)


def nbrc_scan_reference(xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor) -> Tensor:
    """nBRC recurrence as a plain autograd loop (the definition ``nbrc_scan`` must match).

    Args:
        xc: input projection of the update gate, (T, B, H), bias added.
        xa: input projection of the bistability gate, (T, B, H), bias added.
        xh: input projection of the candidate, (T, B, H), bias added.
        Wc: recurrent weight of the update gate, (H, H), applied as ``h @ Wc.T``.
        Wa: recurrent weight of the bistability gate, (H, H), applied as ``h @ Wa.T``.
        h0: initial state, (B, H).

    Returns:
        Every step's state, (T, B, H).
    """
    h, hs = h0, []
    for t in range(xh.size(0)):
        c = torch.sigmoid(xc[t] + h @ Wc.T)
        a = 1.0 + torch.tanh(xa[t] + h @ Wa.T)
        h = c * h + (1.0 - c) * torch.tanh(xh[t] + a * h)
        hs.append(h)
    return torch.stack(hs)  # (T, B, H)


def mgu_scan_reference(xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor) -> Tensor:
    """MGU recurrence as a plain autograd loop (the definition ``mgu_scan`` must match).

    Args:
        xf: input projection of the forget gate, (T, B, H), bias added.
        xn: input projection of the candidate, (T, B, H), bias added.
        Uf: recurrent weight of the forget gate, (H, H), applied as ``h @ Uf.T``.
        Un: recurrent weight of the candidate, (H, H), applied as ``(f * h) @ Un.T``.
        h0: initial state, (B, H).

    Returns:
        Every step's state, (T, B, H).
    """
    h, hs = h0, []
    for t in range(xf.size(0)):
        f = torch.sigmoid(xf[t] + h @ Uf.T)
        n = torch.tanh(xn[t] + (f * h) @ Un.T)
        h = (1.0 - f) * h + f * n
        hs.append(h)
    return torch.stack(hs)  # (T, B, H)


def gru_scan_reference(x: Tensor, w: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """GRU recurrence as a plain autograd loop (the definition ``gru_scan`` must match).

    ``a = h @ w + b``; ``r, z = sig(x_rz + a_rz)``; ``n = tanh(x_n + r * a_n)``;
    ``h' = (1 - z) * n + z * h``.

    Args:
        x: input projections with the input bias, (T, G, B, 3H), gate order r, z, n.
        w: recurrent weights, (G, H, 3H) (torch's ``weight_hh.T``).
        b: recurrent bias, (G, 3H).
        h0: initial state, (G, B, H).

    Returns:
        Every step's state, (T, G, B, H).
    """
    H = h0.size(-1)
    h, hs = h0, []
    for t in range(x.size(0)):
        a = torch.baddbmm(b.unsqueeze(1), h, w)
        rz = torch.sigmoid(x[t, ..., :2 * H] + a[..., :2 * H])
        r, z = rz[..., :H], rz[..., H:]
        n = torch.tanh(x[t, ..., 2 * H:] + r * a[..., 2 * H:])
        h = (1.0 - z) * n + z * h
        hs.append(h)
    return torch.stack(hs)


def lstm_scan_reference(x: Tensor, w: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor]:
    """LSTM recurrence as a plain autograd loop (the definition ``lstm_scan`` must match).

    ``p = x + h @ w``; ``o, i, f = sig(p_o, p_i, p_f)``, ``g = tanh(p_g)``; ``c' = f c + i g``;
    ``h' = o tanh(c')``.

    Args:
        x: input projections with both biases, (T, G, B, 4H), gate order o, i, f, g.
        w: recurrent weights, (G, H, 4H), same gate order.
        h0: initial hidden state, (G, B, H).
        c0: initial cell state, (G, B, H).

    Returns:
        Every step's hidden and cell states, (T, G, B, H) each.
    """
    H = h0.size(-1)
    h, c, hs, cs = h0, c0, [], []
    for t in range(x.size(0)):
        p = torch.baddbmm(x[t], h, w)
        o, i, f = torch.sigmoid(p[..., :3 * H]).split(H, dim=-1)
        g = torch.tanh(p[..., 3 * H:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs), torch.stack(cs)
