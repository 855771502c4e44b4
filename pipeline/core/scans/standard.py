"""Scans of the standard GRU and LSTM, in torch's parameter layout (docs/method.md, "Cells").

The library kernels (cuDNN, oneDNN) give no access to the LSTM cell state of every step, which
hidden-state sampling needs, and on CPU torch runs the GRU step by step through autograd (two
matmuls a step forward, more backward). These scans run the recurrent part of a whole sequence
through :func:`.engine.run`, with a hand-written backward, for G independent cells of the same
width at once ("groups": the layers of a network during the warm-up's stabilisation, or stacked
seed replicas), one batched matmul a step:

- GRU, 5 kernels a step forward, 3 backward;
- LSTM, 7 kernels a step forward, 5 backward, and every step's cell state as a second output;
- on a CPU in float32, forward and backward are one native call each (``kernels.c``).

Everything that does not have to be sequential (gate derivatives, weight and bias gradients) is
computed for all steps at once outside the loops. Shapes: inputs ``(T, G, B, kH)`` (input
projections of all steps, computed by the caller in one matmul; may be expanded over time and
batch), recurrent weights ``(G, H, kH)`` applied as ``h @ W``, states ``(G, B, H)``. The gate order
is torch's for the GRU (r, z, n); for the LSTM it is ``(o, i, f, g)`` in the torch code (one
sigmoid over three adjacent blocks; callers permute torch's i, f, g, o rows, see
:func:`lstm_gate_order`) and torch's own in the native kernels (``lstm_scan(order=...)``).
:mod:`.reference` defines what each scan must compute.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from pipeline.core.scans import native
from pipeline.core.scans.engine import (
    Scan,
    const_in_time,
    grad_buffer,
    gram,
    last_slot,
    one_minus_square_,
    one_thread,
    prev_states,
    row_major,
    run,
    state_slots,
    steps,
    tanh_scale,
    tanh_scaled_,
    times_one_minus_,
)

__all__ = ["gru_scan", "linear_scan", "lstm_gate_order", "lstm_scan"]


def lstm_gate_order(hidden: int, device: torch.device) -> Tensor:
    """Row indices that put torch's LSTM gate blocks (i, f, g, o) in the torch code's order (o, i, f, g)."""
    return torch.cat([torch.arange(k * hidden, (k + 1) * hidden, device=device) for k in (3, 0, 1, 2)])


def _check(name: str, x: Tensor, w: Tensor, states: tuple[Tensor, ...], k: int) -> None:
    """Validate shapes, dtypes and devices of a scan's arguments."""
    s = states[0]
    if s.dim() != 3:
        raise ValueError(f"{name}: states must be (G, B, H) but got shape {tuple(s.shape)}.")
    G, B, H = s.shape
    if x.dim() != 4 or x.size(0) < 1 or tuple(x.shape[1:]) != (G, B, k * H):
        raise ValueError(f"{name}: x must be (T, {G}, {B}, {k * H}) with T >= 1 but got {tuple(x.shape)}.")
    if tuple(w.shape) != (G, H, k * H):
        raise ValueError(f"{name}: w must be ({G}, {H}, {k * H}) but got {tuple(w.shape)}.")
    for t in (x, w, *states):
        if t.dtype != s.dtype or t.device != s.device:
            raise ValueError(f"{name}: arguments must share dtype and device; got {t.dtype} on {t.device} "
                             f"and {s.dtype} on {s.device}.")
    for t in states[1:]:
        if t.shape != s.shape:
            raise ValueError(f"{name}: states disagree in shape: {tuple(t.shape)} vs {tuple(s.shape)}.")


def _weight_grad(hp: Tensor, d: Tensor) -> Tensor:
    """hp^T d summed over steps and batch, per group: (T, G, B, H), (T, G, B, K) -> (G, H, K)."""
    return gram(hp.flatten(1, 2), d.flatten(1, 2), hp.size(1))


# --------------------------------------------------------------------------------------------
# GRU. Saved for the backward: w, h0, hs and, per step, A (its n block a_n = h @ w_n + b_n; its r,
# z blocks hold the whole pre-activations), RZ = [r, z], N = n.
# --------------------------------------------------------------------------------------------


def _gru_buffers(x: Tensor, h0: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor]:
    """A, RZ, N: every step's when ``keep``, else one step of scratch."""
    G, B, H = h0.shape
    n = x.size(0) if keep else 1
    return (x.new_empty((n, G, B, 3 * H)), x.new_empty((n, G, B, 2 * H)), x.new_empty((n, G, B, H)))


def _gru_torch_forward(x: Tensor, w: Tensor, b: Tensor, h0: Tensor, *, keep: bool, all_states: bool
                       ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    T = x.size(0)
    G, B, H = h0.shape
    A, RZ, N = _gru_buffers(x, h0, keep)
    w_saved = w
    hs = x.new_empty((T if all_states else 1, G, B, H))
    bias = b.unsqueeze(1).expand(G, B, 3 * H).contiguous()
    k = tanh_scale(x)
    minus_one = x.new_full((), -1.0)
    if k != 1.0:  # tanh(z) = 2 sig(2z) - 1: pre-activations of n built doubled
        one = x[:1] if const_in_time(x) else x  # a constant input: one step, expanded again
        x = torch.cat([one[..., :2 * H], one[..., 2 * H:] * k], dim=-1).expand(T, -1, -1, -1)
        w = torch.cat([w[..., :2 * H], w[..., 2 * H:] * k], dim=-1)
        bias[..., 2 * H:] *= k
    h = h0
    if keep:  # every step's a starts as [x_rz + b_rz, b_n], built for all steps at once; the
        # backward reads only a_n, so a_rz may hold the whole pre-activation of r and z
        torch.add(x[..., :2 * H], bias[..., :2 * H], out=A[..., :2 * H])
        A[..., 2 * H:].copy_(bias[..., 2 * H:].expand_as(A[..., 2 * H:]))
    views = [steps(v, T) for v in (x[..., :2 * H], x[..., 2 * H:], A, A[..., :2 * H], A[..., 2 * H:],
                                    RZ, RZ[..., :H], RZ[..., H:], N, hs)]
    with one_thread(x, G * B * H * 3 * H):
        for x_rz, x_n, a, a_rz, a_n, rz, r, z, n, h_t in zip(*views, strict=True):
            if keep:
                torch.sigmoid(a.baddbmm_(h, w)[..., :2 * H], out=rz)
            else:
                torch.baddbmm(bias, h, w, out=a)
                torch.add(x_rz, a_rz, out=rz).sigmoid_()
            tanh_scaled_(torch.addcmul(x_n, r, a_n, out=n), k, minus_one)
            torch.lerp(n, h, z, out=h_t)  # (1 - z) n + z h
            h = h_t
    if k != 1.0 and keep:
        A[..., 2 * H:] /= k
    return (hs,), (w_saved, h0, hs, A, RZ, N)


def _gru_native_forward(x: Tensor, w: Tensor, b: Tensor, h0: Tensor, *, keep: bool, all_states: bool
                        ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """One ``gru_fwd_scan`` call (the whole time loop, matmuls included, the rows cut into lanes
    over torch's CPU threads); x is read in place, expanded or not."""
    T = x.size(0)
    G, B, H = h0.shape
    A, RZ, N = _gru_buffers(x, h0, keep)
    slots = state_slots(T, all_states)
    hs = x.new_empty((slots, G, B, H))
    native.call("gru_fwd_scan", T=T, G=G, B=B, H=H, x=row_major(x), w=w.contiguous(), bias=b.contiguous(),
                h0=h0.contiguous(), A=A, RZ=RZ, N=N, keep=int(keep), hs=hs, slots=slots)
    return (last_slot(hs, T, all_states),), (w, h0, hs, A, RZ, N)


def _gru_torch_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                        need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    # With g = dL/dh' (total) and hp the state entering the step:
    #   dL/dx_n = g kn, kn = (1 - z)(1 - n^2)     dL/da_n = g kn r
    #   dL/dx_r = dL/da_r = g kn a_n r (1 - r)     dL/dx_z = dL/da_z = g (hp - n) z (1 - z)
    #   dL/dhp = g z + dL/da @ w^T
    # so one step is: dA_t = K_t * g (K = [k_r, k_z, kn r]), then the two state terms.
    w, h0, hs, A, RZ, N = saved
    T, G, B, H = hs.shape
    r, z = RZ[..., :H], RZ[..., H:]
    hp = prev_states(h0, hs)
    kn = times_one_minus_(one_minus_square_(N.clone()), z)  # (1 - z)(1 - n^2)
    K = A  # (T, G, B, 3H), overwritten block by block: [k_r, k_z, kn r]
    times_one_minus_(K[..., :H].copy_(A[..., 2 * H:]).mul_(kn).mul_(r), r)
    times_one_minus_(torch.sub(hp, N, out=K[..., H:2 * H]).mul_(z), z)
    torch.mul(kn, r, out=K[..., 2 * H:])
    GH = grad_buffer(grads[0], hs)
    g_v, z_v = GH.unbind(0), z.unbind(0)
    k_v = K.view(T, G, B, 3, H).unbind(0)
    d_v = K.unbind(0)
    wT = w.transpose(1, 2).contiguous()
    with one_thread(hs, G * B * H * 3 * H):
        for t in range(T - 1, -1, -1):
            g = g_v[t + 1]
            k_v[t].mul_(g.unsqueeze(2))  # K_t -> dA_t
            g_v[t].addcmul_(g, z_v[t]).baddbmm_(d_v[t], wT)
    dA = K
    dw = _weight_grad(hp, dA) if need[1] else None
    db = dA.sum((0, 2)) if need[2] else None
    # dA is spent: its buffer becomes x's gradient, whose n block is kn g (not gated by r)
    torch.mul(kn, GH[1:], out=dA[..., 2 * H:])
    return dA, dw, db, GH[0]


def _gru_native_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                         need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    """One ``gru_bwd_scan`` call; A becomes dL/da and then x's gradient, whose n block the kernel
    leaves in N."""
    w, h0, hs, A, RZ, N = saved
    T, G, B, H = hs.shape
    GH = grad_buffer(grads[0], hs)
    dw = w.new_zeros(w.shape) if need[1] else None
    native.call("gru_bwd_scan", T=T, G=G, B=B, H=H, A=A, RZ=RZ, N=N, hs=hs, h0=h0.contiguous(),
                wT=w.transpose(1, 2).contiguous(), GH=GH, dw=dw)
    db = A.sum((0, 2)) if need[2] else None
    A[..., 2 * H:].copy_(N)  # dL/da is spent: x's gradient differs in its n block
    return A, dw, db, GH[0]


GRU = Scan("gru_scan", _gru_torch_forward, _gru_torch_backward, _gru_native_forward,
           _gru_native_backward, overwrites=(3, 5))


def gru_scan(x: Tensor, w: Tensor, b: Tensor, h0: Tensor, *, final_only: bool = False) -> Tensor:
    """GRU recurrence of G cells over a whole sequence, with a hand-written backward.

    Args:
        x: input projections with the input bias, (T, G, B, 3H), gate order r, z, n; may be
            expanded (e.g. a constant input).
        w: recurrent weights, (G, H, 3H), applied as ``h @ w`` (torch's ``weight_hh.T``).
        b: recurrent bias, (G, 3H) (torch's ``bias_hh``; its n block is gated by r).
        h0: initial state, (G, B, H).
        final_only: return only the last state, (G, B, H); without a graph this keeps no
            per-step buffers.

    Returns:
        Every step's state, (T, G, B, H), or the last one. Gradients flow to all four inputs.
    """
    _check("gru_scan", x, w, (h0,), 3)
    return run(GRU, (x, w, b, h0), final_only=final_only)


# --------------------------------------------------------------------------------------------
# LSTM. Saved: w, h0, c0, hs, cs and, per step, the activated gates P and tanh(c) TC.
# --------------------------------------------------------------------------------------------


def _lstm_buffers(x: Tensor, h0: Tensor, keep: bool, slots: int) -> tuple[Tensor, ...]:
    """P, TC (every step's when ``keep``, else one step of scratch), hs, cs (``slots`` steps)."""
    G, B, H = h0.shape
    n = x.size(0) if keep else 1
    return (x.new_empty((n, G, B, 4 * H)), x.new_empty((n, G, B, H)),
            x.new_empty((slots, G, B, H)), x.new_empty((slots, G, B, H)))


def _lstm_torch_forward(x: Tensor, w: Tensor, h0: Tensor, c0: Tensor, *, keep: bool, all_states: bool
                        ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    T = x.size(0)
    H = h0.size(-1)
    P, TC, hs, cs = _lstm_buffers(x, h0, keep, T if all_states else 1)
    h, c = h0, c0
    if keep:  # every step's input term in one copy, then the recurrent products added in place
        P.copy_(x)
    with one_thread(x, h0.numel() * 4 * H):
        for x_t, p, tc, h_t, c_t in zip(steps(x, T), steps(P, T), steps(TC, T), steps(hs, T),
                                        steps(cs, T), strict=True):
            if keep:
                p.baddbmm_(h, w)
            else:
                torch.baddbmm(x_t, h, w, out=p)
            p[..., :3 * H].sigmoid_()
            p[..., 3 * H:].tanh_()
            torch.mul(p[..., 2 * H:3 * H], c, out=c_t).addcmul_(p[..., H:2 * H], p[..., 3 * H:])
            torch.mul(p[..., :H], torch.tanh(c_t, out=tc), out=h_t)
            h, c = h_t, c_t
    return (hs, cs), (w, h0, c0, hs, cs, P, TC)


def _lstm_native_forward(x: Tensor, w: Tensor, h0: Tensor, c0: Tensor, *, keep: bool, all_states: bool
                         ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """One ``lstm_fwd_scan`` call; x is read in place, expanded or not. Without ``all_states`` the
    states alternate between two buffers and the last is returned."""
    T = x.size(0)
    G, B, H = h0.shape
    slots = state_slots(T, all_states)
    P, TC, hs, cs = _lstm_buffers(x, h0, keep, slots)
    h0, c0 = h0.contiguous(), c0.contiguous()
    native.call("lstm_fwd_scan", T=T, G=G, B=B, H=H, x=row_major(x), w=w.contiguous(), h0=h0, c0=c0,
                P=P, TC=TC, keep=int(keep), hs=hs, cs=cs, slots=slots)
    return (last_slot(hs, T, all_states), last_slot(cs, T, all_states)), (w, h0, c0, hs, cs, P, TC)


def _lstm_torch_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                         need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    # With gh = dL/dh' and dc = dL/dc' (totals) and cp the cell state entering the step:
    #   dc += gh ko,     ko = o (1 - tanh(c')^2)
    #   dL/dp_o = gh k_o,  k_o = tanh(c') o (1 - o)
    #   dL/dp_{i,f,g} = dc [g i (1 - i), cp f (1 - f), i (1 - g^2)]
    #   dL/dcp = dc f,   dL/dhp = dL/dp @ w^T
    w, h0, c0, hs, cs, P, TC = saved
    T, G, B, H = hs.shape
    o, i, f, g = P[..., :H], P[..., H:2 * H], P[..., 2 * H:3 * H], P[..., 3 * H:]
    F = f.clone()
    i_copy = i.clone()
    kc = one_minus_square_(TC.clone()).mul_(o)  # o (1 - tanh(c)^2)
    times_one_minus_(o, o).mul_(TC)  # k_o
    times_one_minus_(i, i).mul_(g)  # k_i
    times_one_minus_(f, f).mul_(prev_states(c0, cs))  # k_f
    one_minus_square_(g).mul_(i_copy)  # k_g
    del i_copy
    GH, GC = grad_buffer(grads[0], hs), grad_buffer(grads[1], hs)
    gh_v, gc_v, kc_v, f_v = GH.unbind(0), GC.unbind(0), kc.unbind(0), F.unbind(0)
    ko_v = P[..., :H].unbind(0)
    kifg_v = P.view(T, G, B, 4, H)[:, :, :, 1:].unbind(0)
    d_v = P.unbind(0)
    wT = w.transpose(1, 2).contiguous()
    with one_thread(hs, G * B * H * 4 * H):
        for t in range(T - 1, -1, -1):
            gh = gh_v[t + 1]
            dc = gc_v[t + 1].addcmul_(gh, kc_v[t])
            ko_v[t].mul_(gh)
            kifg_v[t].mul_(dc.unsqueeze(2))  # P_t -> dL/dp_t
            gc_v[t].addcmul_(dc, f_v[t])
            gh_v[t].baddbmm_(d_v[t], wT)
    dP = P
    dw = _weight_grad(prev_states(h0, hs), dP) if need[1] else None
    return dP, dw, GH[0], GC[0]


def _lstm_native_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                          need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    """One ``lstm_bwd_scan`` call; P becomes dL/dp, x's gradient."""
    w, h0, c0, hs, cs, P, TC = saved
    T, G, B, H = hs.shape
    GH, GC = grad_buffer(grads[0], hs), grad_buffer(grads[1], hs)
    dw = w.new_zeros(w.shape) if need[1] else None
    native.call("lstm_bwd_scan", T=T, G=G, B=B, H=H, P=P, TC=TC, hs=hs, cs=cs, h0=h0, c0=c0,
                wT=w.transpose(1, 2).contiguous(), GH=GH, GC=GC, dw=dw)
    return P, dw, GH[0], GC[0]


LSTM = Scan("lstm_scan", _lstm_torch_forward, _lstm_torch_backward, _lstm_native_forward,
            _lstm_native_backward, overwrites=(5, 6))

_GATE_SOURCES = {"oifg": (1, 2, 3, 0), "ifgo": (3, 0, 1, 2)}
"""For a given order, where each block of the other order lies in it (o, i, f, g from i, f, g, o;
i, f, g, o from o, i, f, g)."""


def lstm_scan(x: Tensor, w: Tensor, h0: Tensor, c0: Tensor, *, final_only: bool = False,
              order: str = "oifg") -> tuple[Tensor, Tensor]:
    """LSTM recurrence of G cells over a whole sequence, with a hand-written backward.

    Args:
        x: input projections with both biases, (T, G, B, 4H), gates in ``order``; may be expanded
            (e.g. a constant input).
        w: recurrent weights, (G, H, 4H), applied as ``h @ w``, same gate order.
        h0: initial hidden state, (G, B, H).
        c0: initial cell state, (G, B, H).
        final_only: return only the last states, (G, B, H) each; without a graph this keeps no
            per-step buffers.
        order: the gate blocks' order, ``"oifg"`` (the torch code's own, see
            :func:`lstm_gate_order`) or ``"ifgo"`` (torch's parameters', the native kernels' own).
            Either is accepted everywhere; the other one costs a reordering of x and w.

    Returns:
        Every step's hidden and cell states, (T, G, B, H) each, or the last ones. Gradients flow
        to all four inputs, from both outputs.
    """
    if order not in _GATE_SOURCES:
        raise ValueError(f"lstm_scan: order must be 'oifg' or 'ifgo' but got {order!r}.")
    _check("lstm_scan", x, w, (h0, c0), 4)
    own = "ifgo" if native.usable(x, w, h0, c0) else "oifg"
    if order != own:  # block k of the own order is block _GATE_SOURCES[order][k] of the given one
        H = h0.size(-1)
        perm = torch.cat([torch.arange(k * H, (k + 1) * H, device=x.device) for k in _GATE_SOURCES[order]])
        x, w = x[..., perm], w[..., perm]
    return run(LSTM, (x, w, h0, c0), final_only=final_only)


# --------------------------------------------------------------------------------------------
# Linear scan c_t = f_t c_{t-1} + v_t (the LSTM cell state, given the gates)
# --------------------------------------------------------------------------------------------


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, f: Tensor, v: Tensor, c0: Tensor) -> Tensor:
        cs = torch.empty_like(v)
        c = c0
        for f_t, v_t, c_t in zip(f.unbind(0), v.unbind(0), cs.unbind(0), strict=True):
            torch.addcmul(v_t, f_t, c, out=c_t)
            c = c_t
        ctx.save_for_backward(f, c0, cs)
        return cs

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, go: Tensor) -> tuple[Tensor | None, ...]:
        # dc_t = go_t + f_{t+1} dc_{t+1}; dv_t = dc_t; df_t = dc_t c_{t-1}; dc0 = f_0 dc_0
        f, c0, cs = ctx.saved_tensors
        dc = go.clone()
        d_v, f_v = dc.unbind(0), f.unbind(0)
        for t in range(f.size(0) - 2, -1, -1):
            d_v[t].addcmul_(f_v[t + 1], d_v[t + 1])
        df = dc * torch.cat([c0.unsqueeze(0), cs[:-1]]) if ctx.needs_input_grad[0] else None
        return df, dc, f[0] * dc[0]


def linear_scan(f: Tensor, v: Tensor, c0: Tensor) -> Tensor:
    """``c_t = f_t * c_{t-1} + v_t`` for all t, with a one-kernel-a-step backward (the LSTM's cell
    states recovered from a library forward, see ``cells.LSTM``).

    Args:
        f: multipliers, (T, ...).
        v: addends, (T, ...), same shape as f.
        c0: initial value, the shape of one step.

    Returns:
        Every step's value, (T, ...).
    """
    if f.shape != v.shape or f.shape[1:] != c0.shape:
        raise ValueError(f"linear_scan: shapes disagree: f {tuple(f.shape)}, v {tuple(v.shape)}, "
                         f"c0 {tuple(c0.shape)}.")
    return _LinearScan.apply(f, v, c0)
