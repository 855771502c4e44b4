"""Fused sequence recurrences for the BRC, nBRC and MGU cells (ALGORITHM.md, "Cells").

The caller computes the input projections of ALL time steps with one matmul (biases added) and
passes them here as (T, B, H) tensors; these functions run only the recurrent part. Each scan is a
``torch.autograd.Function`` with a hand-written backward:

- the forward runs without an autograd graph and writes every step into preallocated buffers with
  a handful of in-place/``out=`` kernels per step (5 for BRC/nBRC, 6 for MGU);
- the backward loop does only what the recurrence forces per step: one ``addcmul`` for BRC
  (its state gradient obeys a linear element-wise recurrence), three kernels for nBRC and seven
  for MGU; every gate's pre-activation gradient that can be computed for all steps at once, and
  all weight gradients (one matmul or reduction each), are computed outside the loop.

No host synchronisation happens in any loop, so the same code runs on CUDA. Inputs that are
expanded (stride 0) over time, as in the warm-up's constant input, are read without being
materialised. Double backward is not supported.

Plain autograd loops (``*_scan_reference``) give the definition each fused scan must match.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

__all__ = [
    "brc_scan",
    "brc_scan_reference",
    "mgu_scan",
    "mgu_scan_reference",
    "nbrc_scan",
    "nbrc_scan_reference",
]


# --------------------------------------------------------------------------------------------
# Reference loops (plain autograd): the definitions.
# --------------------------------------------------------------------------------------------


def brc_scan_reference(
    xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor
) -> Tensor:
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


def nbrc_scan_reference(
    xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor
) -> Tensor:
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


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _const_in_time(x: Tensor) -> bool:
    """True when a (T, ...) tensor is expanded (stride 0) over time."""
    return x.size(0) == 1 or x.stride(0) == 0


def _join(a: Tensor, b: Tensor, dim: int, scale_b: float) -> Tensor:
    """``torch.stack`` (dim=1) or ``torch.cat`` (dim=-1) of a and scale_b*b, both (T, B, H).

    When both are expanded over time, joins one step and expands the result over time
    instead of materialising T copies.
    """
    op = torch.stack if dim == 1 else torch.cat
    if _const_in_time(a) and _const_in_time(b):
        one = op([a[0], b[0] * scale_b], dim=0 if dim == 1 else -1)  # (2, B, H) or (B, 2H)
        return one.unsqueeze(0).expand(a.size(0), *one.shape)
    return op([a, b * scale_b], dim=dim)  # (T, 2, B, H) or (T, B, 2H)


def _steps(x: Tensor, T: int) -> list[Tensor]:
    """Per-step views of a (T, ...) buffer, or T times the one step of a (1, ...) buffer."""
    views = list(x.unbind(0))
    return views if len(views) == T else views * T


def _prev_states(h0: Tensor, hs: Tensor) -> Tensor:
    """States entering each step: [h0, hs[0], ..., hs[T-2]], (T, B, H)."""
    return torch.cat([h0.unsqueeze(0).expand(1, *hs.shape[1:]), hs[:-1]])


def _grad_buffer(go: Tensor, h0: Tensor) -> Tensor:
    """(T+1, B, H) buffer: index 0 (for h0) zero, indices 1.. the incoming gradients of hs."""
    G = go.new_empty((go.size(0) + 1, *go.shape[1:]))
    G[0].zero_()
    G[1:].copy_(go)
    return G


def _needs_graph(*xs: Tensor) -> bool:
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


def _check(name: str, xs: dict[str, Tensor], h0: Tensor) -> None:
    """Validate the (T, B, H) inputs against h0 (B, H): shapes, dtypes, devices."""
    if h0.dim() != 2:
        raise ValueError(f"{name}: h0 must be (B, H) but got shape {tuple(h0.shape)}.")
    B, H = h0.shape
    for k, x in xs.items():
        if x.dim() != 3 or x.size(0) < 1 or tuple(x.shape[1:]) != (B, H):
            raise ValueError(
                f"{name}: {k} must be (T, B, H) with T >= 1, B = {B}, H = {H} "
                f"but got {tuple(x.shape)}."
            )
        if x.dtype != h0.dtype or x.device != h0.device:
            raise ValueError(
                f"{name}: {k} is {x.dtype} on {x.device} but h0 is {h0.dtype} on {h0.device}."
            )
    lengths = {k: x.size(0) for k, x in xs.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{name}: inputs disagree on sequence length: {lengths}.")


def _check_weight(name: str, k: str, w: Tensor, shape: tuple[int, ...], h0: Tensor) -> None:
    """Validate a recurrent weight's shape, dtype and device."""
    if tuple(w.shape) != shape:
        raise ValueError(f"{name}: {k} must have shape {shape} but got {tuple(w.shape)}.")
    if w.dtype != h0.dtype or w.device != h0.device:
        raise ValueError(
            f"{name}: {k} is {w.dtype} on {w.device} but h0 is {h0.dtype} on {h0.device}."
        )


# --------------------------------------------------------------------------------------------
# BRC: c = sig(xc + wc*h); a = 1 + tanh(xa + wa*h); h' = c*h + (1-c)*tanh(xh + a*h)
# Computed with 1 + tanh(z) = 2 sig(2z), so both gates are one sigmoid over a (2, B, H) block.
# --------------------------------------------------------------------------------------------


def _brc_forward(
    xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor, keep: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward without a graph; returns hs (T, B, H), gates S (T|1, 2, B, H), candidates N."""
    T, B, H = xh.shape
    x2 = _join(xc, xa, dim=1, scale_b=2.0)  # (T, 2, B, H) pre-activation inputs [xc, 2 xa]
    w2 = torch.stack([wc, wa * 2.0]).unsqueeze(1)  # (2, 1, H)
    n_buf = T if keep else 1  # without a graph, one reused step of scratch suffices
    S = xh.new_empty((n_buf, 2, B, H))  # [sig(zc), sig(2 za)] = [c, a / 2]
    N = xh.new_empty((n_buf, B, H))  # tanh(zh)
    s_v, c_v, a_v, n_v = (
        _steps(S, T),
        _steps(S[:, 0], T),
        _steps(S[:, 1], T),
        _steps(N, T),
    )
    hs = xh.new_empty((T, B, H))
    h = h0
    for x2_t, xh_t, s_t, c_t, a_t, n_t, h_t in zip(
        x2.unbind(0), xh.unbind(0), s_v, c_v, a_v, n_v, hs.unbind(0)
    ):
        torch.addcmul(x2_t, w2, h, out=s_t)  # (2, B, H) pre-activations [zc, 2 za]
        s_t.sigmoid_()
        torch.addcmul(xh_t, a_t, h, value=2.0, out=n_t)  # zh = xh + a*h, a = 2 sig(2 za)
        n_t.tanh_()
        torch.lerp(n_t, h, c_t, out=h_t)  # c*h + (1-c)*n
        h = h_t
    return hs, S, N


class _BRCScan(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        xc: Tensor,
        xa: Tensor,
        xh: Tensor,
        wc: Tensor,
        wa: Tensor,
        h0: Tensor,
    ) -> Tensor:
        hs, S, N = _brc_forward(xc, xa, xh, wc, wa, h0, keep=True)
        ctx.save_for_backward(wc, wa, h0, hs, S, N)
        return hs

    @staticmethod
    def backward(ctx: FunctionCtx, go: Tensor) -> tuple[Tensor | None, ...]:
        wc, wa, h0, hs, S, N = ctx.saved_tensors
        T = hs.size(0)
        hp = _prev_states(h0, hs)  # (T, B, H)
        c, s_a, n = S[:, 0], S[:, 1], N  # (T, B, H) each; a = 2 s_a
        omc = 1.0 - c
        k1 = omc * (1.0 - n * n)  # dL/dzh = g * k1
        k2 = (hp - n) * c * omc  # dL/dzc = g * k2
        k3 = k1 * hp * (4.0 * s_a * (1.0 - s_a))  # dL/dza = g * k3  (da/dza = 1 - tanh^2)
        k4 = c + 2.0 * s_a * k1  # dh'/dh (diagonal), completed below
        k4.addcmul_(k2, wc).addcmul_(k3, wa)
        G = _grad_buffer(go, h0)  # (T+1, B, H); G[t+1] = total dL/dhs[t], G[0] = dL/dh0
        g_v, k4_v = G.unbind(0), k4.unbind(0)
        for t in range(T - 1, -1, -1):  # linear recurrence: g_{t} += k4_t * g_{t+1}
            g_v[t].addcmul_(k4_v[t], g_v[t + 1])
        g = G[1:]
        need = ctx.needs_input_grad
        dzc = g * k2
        dza = g * k3
        dzh = g * k1
        gwc = (dzc * hp).sum((0, 1)) if need[3] else None
        gwa = (dza * hp).sum((0, 1)) if need[4] else None
        return dzc, dza, dzh, gwc, gwa, G[0]


def brc_scan(xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor) -> Tensor:
    """Fused BRC recurrence over a whole sequence, with a hand-written backward.

    ``c = sig(xc_t + wc*h); a = 1 + tanh(xa_t + wa*h); h' = c*h + (1-c)*tanh(xh_t + a*h)``.

    Args:
        xc: input projection of the update gate, (T, B, H), bias added; may be expanded.
        xa: input projection of the bistability gate, (T, B, H), bias added; may be expanded.
        xh: input projection of the candidate, (T, B, H), bias added; may be expanded.
        wc: recurrent weight of the update gate, (H,).
        wa: recurrent weight of the bistability gate, (H,).
        h0: initial state, (B, H).

    Returns:
        Every step's state, (T, B, H). Gradients flow to all six inputs.
    """
    _check("brc_scan", {"xc": xc, "xa": xa, "xh": xh}, h0)
    H = h0.size(1)
    _check_weight("brc_scan", "wc", wc, (H,), h0)
    _check_weight("brc_scan", "wa", wa, (H,), h0)
    if _needs_graph(xc, xa, xh, wc, wa, h0):
        return _BRCScan.apply(xc, xa, xh, wc, wa, h0)
    with torch.no_grad():
        return _brc_forward(xc, xa, xh, wc, wa, h0, keep=False)[0]


# --------------------------------------------------------------------------------------------
# nBRC: as BRC with wc*h -> h @ Wc.T and wa*h -> h @ Wa.T; both in one matmul per step.
# --------------------------------------------------------------------------------------------


def _nbrc_forward(
    xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor, keep: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward without a graph; returns hs (T, B, H), gates S (T|1, B, 2H), candidates N."""
    T, B, H = xh.shape
    x2 = _join(xc, xa, dim=-1, scale_b=2.0)  # (T, B, 2H) pre-activation inputs [xc, 2 xa]
    W2t = torch.cat([Wc, Wa * 2.0]).T  # (H, 2H)
    n_buf = T if keep else 1
    S = xh.new_empty((n_buf, B, 2 * H))  # [sig(zc), sig(2 za)] = [c, a / 2]
    N = xh.new_empty((n_buf, B, H))  # tanh(zh)
    s_v, c_v, a_v, n_v = (
        _steps(S, T),
        _steps(S[..., :H], T),
        _steps(S[..., H:], T),
        _steps(N, T),
    )
    hs = xh.new_empty((T, B, H))
    h = h0
    for x2_t, xh_t, s_t, c_t, a_t, n_t, h_t in zip(
        x2.unbind(0), xh.unbind(0), s_v, c_v, a_v, n_v, hs.unbind(0)
    ):
        torch.addmm(x2_t, h, W2t, out=s_t)  # (B, 2H) pre-activations [zc, 2 za]
        s_t.sigmoid_()
        torch.addcmul(xh_t, a_t, h, value=2.0, out=n_t)
        n_t.tanh_()
        torch.lerp(n_t, h, c_t, out=h_t)
        h = h_t
    return hs, S, N


class _NBRCScan(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        xc: Tensor,
        xa: Tensor,
        xh: Tensor,
        Wc: Tensor,
        Wa: Tensor,
        h0: Tensor,
    ) -> Tensor:
        hs, S, N = _nbrc_forward(xc, xa, xh, Wc, Wa, h0, keep=True)
        ctx.save_for_backward(Wc, Wa, h0, hs, S, N)
        return hs

    @staticmethod
    def backward(ctx: FunctionCtx, go: Tensor) -> tuple[Tensor | None, ...]:
        Wc, Wa, h0, hs, S, N = ctx.saved_tensors
        T, B, H = hs.shape
        hp = _prev_states(h0, hs)  # (T, B, H)
        c, s_a, n = S[..., :H], S[..., H:], N
        omc = 1.0 - c
        k1 = omc * (1.0 - n * n)  # dL/dzh = g * k1
        K = hs.new_empty((T, B, 2, H))  # [dzc, dza] / g
        torch.mul((hp - n) * c, omc, out=K[:, :, 0])
        torch.mul(k1 * hp, 4.0 * s_a * (1.0 - s_a), out=K[:, :, 1])
        k4 = c + 2.0 * s_a * k1  # element-wise part of dh'/dh
        W2 = torch.cat([Wc, Wa])  # (2H, H): dh += [dzc, dza] @ W2
        G = _grad_buffer(go, h0)  # (T+1, B, H)
        DZ = hs.new_empty((T, B, 2, H))  # [dzc, dza]
        g_v, gu_v = G.unbind(0), G.unsqueeze(2).unbind(0)  # (B, H), (B, 1, H)
        k_v, k4_v = K.unbind(0), k4.unbind(0)
        dz_v, dz2_v = DZ.unbind(0), DZ.view(T, B, 2 * H).unbind(0)  # (B, 2, H), (B, 2H)
        for t in range(T - 1, -1, -1):
            torch.mul(k_v[t], gu_v[t + 1], out=dz_v[t])
            g_v[t].addcmul_(k4_v[t], g_v[t + 1]).addmm_(dz2_v[t], W2)
        need = ctx.needs_input_grad
        gW = None
        if need[3] or need[4]:
            gW = DZ.view(T * B, 2 * H).T @ hp.reshape(T * B, H)  # (2H, H)
        return (
            DZ[:, :, 0],
            DZ[:, :, 1],
            G[1:] * k1,
            gW[:H] if need[3] and gW is not None else None,
            gW[H:] if need[4] and gW is not None else None,
            G[0],
        )


def nbrc_scan(xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor) -> Tensor:
    """Fused nBRC recurrence over a whole sequence, with a hand-written backward.

    As ``brc_scan`` with ``wc*h -> h @ Wc.T`` and ``wa*h -> h @ Wa.T`` (one fused matmul a step).

    Args:
        xc: input projection of the update gate, (T, B, H), bias added; may be expanded.
        xa: input projection of the bistability gate, (T, B, H), bias added; may be expanded.
        xh: input projection of the candidate, (T, B, H), bias added; may be expanded.
        Wc: recurrent weight of the update gate, (H, H).
        Wa: recurrent weight of the bistability gate, (H, H).
        h0: initial state, (B, H).

    Returns:
        Every step's state, (T, B, H). Gradients flow to all six inputs.
    """
    _check("nbrc_scan", {"xc": xc, "xa": xa, "xh": xh}, h0)
    H = h0.size(1)
    _check_weight("nbrc_scan", "Wc", Wc, (H, H), h0)
    _check_weight("nbrc_scan", "Wa", Wa, (H, H), h0)
    if _needs_graph(xc, xa, xh, Wc, Wa, h0):
        return _NBRCScan.apply(xc, xa, xh, Wc, Wa, h0)
    with torch.no_grad():
        return _nbrc_forward(xc, xa, xh, Wc, Wa, h0, keep=False)[0]


# --------------------------------------------------------------------------------------------
# MGU: f = sig(xf + h @ Uf.T); n = tanh(xn + (f*h) @ Un.T); h' = (1-f)*h + f*n
# --------------------------------------------------------------------------------------------


def _mgu_forward(
    xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor, keep: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward without a graph; returns hs, forget gates F, gated states R = F*h, candidates N."""
    T, B, H = xf.shape
    UfT, UnT = Uf.T, Un.T
    n_buf = T if keep else 1
    F, R, N = (xf.new_empty((n_buf, B, H)) for _ in range(3))  # f, f*h, tanh(zn)
    f_v, r_v, n_v = _steps(F, T), _steps(R, T), _steps(N, T)
    hs = xf.new_empty((T, B, H))
    h = h0
    for xf_t, xn_t, f_t, r_t, n_t, h_t in zip(
        xf.unbind(0), xn.unbind(0), f_v, r_v, n_v, hs.unbind(0)
    ):
        torch.addmm(xf_t, h, UfT, out=f_t)
        f_t.sigmoid_()
        torch.mul(f_t, h, out=r_t)
        torch.addmm(xn_t, r_t, UnT, out=n_t)
        n_t.tanh_()
        torch.lerp(h, n_t, f_t, out=h_t)  # (1-f)*h + f*n
        h = h_t
    return hs, F, R, N


class _MGUScan(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx, xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor
    ) -> Tensor:
        hs, F, R, N = _mgu_forward(xf, xn, Uf, Un, h0, keep=True)
        ctx.save_for_backward(Uf, Un, h0, hs, F, R, N)
        return hs

    @staticmethod
    def backward(ctx: FunctionCtx, go: Tensor) -> tuple[Tensor | None, ...]:
        Uf, Un, h0, hs, F, R, N = ctx.saved_tensors
        T, B, H = hs.shape
        hp = _prev_states(h0, hs)  # (T, B, H)
        f, n = F, N
        fomf = f * (1.0 - f)  # sig'
        kn = f * (1.0 - n * n)  # dL/dzn = g * kn
        ka = (n - hp) * fomf  # dL/dzf = g * ka + dr * kb, dr = dzn @ Un
        kb = hp * fomf
        omf = 1.0 - f
        G = _grad_buffer(go, h0)  # (T+1, B, H)
        DZF, DZN, DR = (hs.new_empty((T, B, H)) for _ in range(3))
        g_v, f_v, omf_v = G.unbind(0), f.unbind(0), omf.unbind(0)
        kn_v, ka_v, kb_v = kn.unbind(0), ka.unbind(0), kb.unbind(0)
        dzf_v, dzn_v, dr_v = DZF.unbind(0), DZN.unbind(0), DR.unbind(0)
        for t in range(T - 1, -1, -1):
            g = g_v[t + 1]
            torch.mul(g, kn_v[t], out=dzn_v[t])
            torch.mm(dzn_v[t], Un, out=dr_v[t])  # dL/dr, r = f*h
            torch.mul(g, ka_v[t], out=dzf_v[t]).addcmul_(dr_v[t], kb_v[t])
            g_v[t].addcmul_(g, omf_v[t]).addcmul_(dr_v[t], f_v[t]).addmm_(dzf_v[t], Uf)
        need = ctx.needs_input_grad
        gUf = DZF.view(T * B, H).T @ hp.reshape(T * B, H) if need[2] else None
        gUn = DZN.view(T * B, H).T @ R.view(T * B, H) if need[3] else None
        return DZF, DZN, gUf, gUn, G[0]


def mgu_scan(xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor) -> Tensor:
    """Fused MGU recurrence over a whole sequence, with a hand-written backward.

    ``f = sig(xf_t + h @ Uf.T); n = tanh(xn_t + (f*h) @ Un.T); h' = (1-f)*h + f*n``.

    Args:
        xf: input projection of the forget gate, (T, B, H), bias added; may be expanded.
        xn: input projection of the candidate, (T, B, H), bias added; may be expanded.
        Uf: recurrent weight of the forget gate, (H, H).
        Un: recurrent weight of the candidate, (H, H).
        h0: initial state, (B, H).

    Returns:
        Every step's state, (T, B, H). Gradients flow to all five inputs.
    """
    _check("mgu_scan", {"xf": xf, "xn": xn}, h0)
    H = h0.size(1)
    _check_weight("mgu_scan", "Uf", Uf, (H, H), h0)
    _check_weight("mgu_scan", "Un", Un, (H, H), h0)
    if _needs_graph(xf, xn, Uf, Un, h0):
        return _MGUScan.apply(xf, xn, Uf, Un, h0)
    with torch.no_grad():
        return _mgu_forward(xf, xn, Uf, Un, h0, keep=False)[0]
