"""Scans of the paper's own cells: BRC, nBRC and MGU (docs/method.md, "Cells").

The caller computes the input projections of ALL time steps with one matmul (biases added) and
passes them here as (T, B, H) tensors, one per gate; these functions run only the recurrent part,
through :func:`.engine.run`, with a hand-written backward:

- the torch forward writes every step into preallocated buffers, in place or through ``out=``:
  5-6 kernels a step for BRC/nBRC, 6-7 for MGU (both gates of BRC/nBRC share one sigmoid, using
  1 + tanh(z) = 2 sig(2z));
- the torch backward loop does only what the recurrence forces per step: one ``addcmul`` for BRC
  (its state gradient obeys a linear element-wise recurrence), three kernels for nBRC, seven for
  MGU. Everything that can be computed for all steps at once (gate derivatives, weight
  gradients: one matmul or reduction each) is, outside the loop, in place over the forward's
  own buffers;
- on a CPU in float32, forward and backward are one native call each (``kernels.c``).

Several cells of one class run side by side in one batch: G groups of B/G consecutive rows, each
with its own recurrent matrices ((G, H, H) weights), or for BRC one vector weight per row
((B, H) weights). Inputs expanded (stride 0) over time, as in the warm-up's constant input, are
read without being materialised. :mod:`.reference` defines what each scan must compute.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.core.scans import native
from pipeline.core.scans.engine import (
    Scan,
    addmm,
    addmm_,
    check_sequences,
    check_weight,
    gather,
    grad_buffer,
    gram,
    gram_prev,
    last_slot,
    matrix_shape,
    mul_prev,
    n_groups,
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
    transposed,
)

__all__ = ["brc_scan", "mgu_scan", "nbrc_scan"]


# --------------------------------------------------------------------------------------------
# BRC: c = sig(xc + wc*h); a = 1 + tanh(xa + wa*h); h' = c*h + (1-c)*tanh(xh + a*h)
# Computed with 1 + tanh(z) = 2 sig(2z), so both gates are one sigmoid over a (2, B, H) block.
# Saved for the backward: wc, wa, h0, hs (T, B, H) and S (T, 3, B, H) = [c, a/2, n] of every step.
# --------------------------------------------------------------------------------------------


def _brc_torch_forward(xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor, *,
                       keep: bool, all_states: bool) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Without ``keep``, one step of S is scratch unless the inputs already had to be copied."""
    T, B, H = xh.shape
    k = tanh_scale(xh)
    X, owned = gather([xc, xa, xh], [1.0, 2.0, k], dim=1)  # (T, 3, B, H) [xc, 2 xa, k xh]
    w2 = torch.stack([wc, wa * 2.0])  # (2, H) or, per row, (2, B, H)
    w2 = w2.unsqueeze(1) if wc.dim() == 1 else w2
    # gates are written over the gathered inputs when they are ours: no extra buffer
    S = X if owned else xh.new_empty((T if keep else 1, 3, B, H))
    minus_one = xh.new_full((), -1.0)
    hs = xh.new_empty((T if all_states else 1, B, H))  # else: the state is updated in place
    h = h0
    s2_v, c_v, a_v, n_v = (steps(v, T) for v in (S[:, :2], S[:, 0], S[:, 1], S[:, 2]))
    x2_v, xk_v = (s2_v, n_v) if owned else (steps(X[:, :2], T), steps(X[:, 2], T))  # in place
    for x2, xk, s2, c, a, n, h_t in zip(x2_v, xk_v, s2_v, c_v, a_v, n_v, steps(hs, T), strict=True):
        torch.addcmul(x2, w2, h, out=s2)  # (2, B, H) pre-activations [zc, 2 za]
        s2.sigmoid_()  # [c, a/2]: 1 + tanh(za) = 2 sig(2 za)
        torch.addcmul(xk, a, h, value=2.0 * k, out=n)  # k zh = k (xh + a h)
        tanh_scaled_(n, k, minus_one)
        torch.lerp(n, h, c, out=h_t)  # c h + (1 - c) n
        h = h_t
    return (hs,), (wc, wa, h0, hs, S)


def _brc_native_forward(xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor, *,
                        keep: bool, all_states: bool) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """One ``brc_fwd_scan`` call; the inputs are read in place, expanded or not. Without ``keep``
    nothing per step is stored."""
    T, B, H = xh.shape
    S = xh.new_empty((T, 3, B, H)) if keep else None
    slots = state_slots(T, all_states)
    hs = xh.new_empty((slots, B, H))
    wc, wa = wc.contiguous(), wa.contiguous()
    native.call("brc_fwd_scan", T=T, B=B, H=H, xc=row_major(xc), xa=row_major(xa), xh=row_major(xh),
                wc=wc, wa=wa, wb=0 if wc.dim() == 1 else H, h0=h0.contiguous(), S=S, keep=int(keep),
                hs=hs, slots=slots)
    return (last_slot(hs, T, all_states),), (wc, wa, h0, hs, S)


def _brc_torch_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                        need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    # With g = dL/dh' (total, per step) and hp the state entering the step:
    #   dL/dzh = g k1, k1 = (1-c)(1-n^2)        dL/dzc = g k2, k2 = (hp-n) c(1-c)
    #   dL/dza = g k3, k3 = k1 hp 4 s(1-s)      dL/dhp = g k4, k4 = c + 2 s k1 + wc k2 + wa k3
    # (s = a/2 = sig(2 za)). The state gradient is a linear element-wise recurrence.
    # Every k is computed in place over the saved buffers: c -> k4, s -> k3, n -> k1.
    wc, wa, h0, hs, S = saved
    c, s, N = S[:, 0], S[:, 1], S[:, 2]  # (T, B, H) each
    k1 = N
    k2 = prev_states(h0, hs).sub_(N)  # (T, B, H)
    times_one_minus_(k2.mul_(c), c)  # (hp - n) c (1 - c)
    times_one_minus_(one_minus_square_(k1), c)  # n -> (1 - n^2)(1 - c)
    k4 = c.addcmul_(s, k1, value=2.0).addcmul_(k2, wc)  # c -> c + 2 s k1 + wc k2
    k3 = mul_prev(times_one_minus_(s, s).mul_(k1).mul_(4.0), h0, hs, out=s)  # 4 s(1-s) k1 hp
    k4.addcmul_(k3, wa)
    G = grad_buffer(grads[0], hs)  # (T+1, B, H); G[t+1] = total dL/dhs[t], G[0] = dL/dh0
    g_v, k4_v = G.unbind(0), k4.unbind(0)
    for t in range(hs.size(0) - 1, -1, -1):  # g_t += k4_t * g_{t+1}
        g_v[t].addcmul_(k4_v[t], g_v[t + 1])
    g = G[1:]
    dzc, dza, dzh = k2.mul_(g), k3.mul_(g), k1.mul_(g)
    # g is spent: it holds the products summed for the vector weights' gradients
    dims = (0, 1) if wc.dim() == 1 else 0  # per-row weights: one gradient per row
    gwc = mul_prev(dzc, h0, hs, out=g).sum(dims) if need[3] else None
    gwa = mul_prev(dza, h0, hs, out=g).sum(dims) if need[4] else None
    return dzc, dza, dzh, gwc, gwa, G[0]


def _brc_native_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                         need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    """One ``brc_bwd_scan`` call; S becomes the three inputs' gradients."""
    wc, wa, h0, hs, S = saved
    T, B, H = hs.shape
    G = grad_buffer(grads[0], hs)
    gwc, gwa = wc.new_zeros(wc.shape), wa.new_zeros(wa.shape)
    native.call("brc_bwd_scan", T=T, B=B, H=H, S=S, hs=hs, h0=h0.contiguous(), wc=wc, wa=wa,
                wb=0 if wc.dim() == 1 else H, G=G, gwc=gwc, gwa=gwa)
    return S[:, 0], S[:, 1], S[:, 2], gwc if need[3] else None, gwa if need[4] else None, G[0]


BRC = Scan("brc_scan", _brc_torch_forward, _brc_torch_backward, _brc_native_forward,
           _brc_native_backward, overwrites=(4,))


def brc_scan(
    xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor, *, final_only: bool = False
) -> Tensor:
    """BRC recurrence over a whole sequence, with a hand-written backward.

    ``c = sig(xc_t + wc*h); a = 1 + tanh(xa_t + wa*h); h' = c*h + (1-c)*tanh(xh_t + a*h)``.

    Args:
        xc: input projection of the update gate, (T, B, H), bias added; may be expanded.
        xa: input projection of the bistability gate, (T, B, H), bias added; may be expanded.
        xh: input projection of the candidate, (T, B, H), bias added; may be expanded.
        wc: recurrent weight of the update gate, (H,), or one per batch row, (B, H) (several
            cells side by side in one batch, see ``cells.BRC.group_states``).
        wa: recurrent weight of the bistability gate, same shape as wc.
        h0: initial state, (B, H).
        final_only: return only the last state, (B, H); without a graph, this keeps no (T, B, H)
            buffer of states (e.g. for long no-grad runs to measure attractors).

    Returns:
        Every step's state, (T, B, H), or the last one, (B, H). Gradients flow to all six inputs.
    """
    check_sequences("brc_scan", {"xc": xc, "xa": xa, "xh": xh}, h0)
    shape = (h0.size(1),) if wc.dim() == 1 else tuple(h0.shape)
    check_weight("brc_scan", "wc", wc, shape, h0)
    check_weight("brc_scan", "wa", wa, shape, h0)
    return run(BRC, (xc, xa, xh, wc, wa, h0), final_only=final_only)


# --------------------------------------------------------------------------------------------
# nBRC: as BRC with wc*h -> h @ Wc.T and wa*h -> h @ Wa.T; both in one matmul per step.
# Saved: Wc, Wa, h0, hs (T, B, H) and S (T, B, 3, H) = [c, a/2, n] of every step.
# --------------------------------------------------------------------------------------------


def _nbrc_torch_forward(xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor, *,
                        keep: bool, all_states: bool) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    T, B, H = xh.shape
    k = tanh_scale(xh)
    X, owned = gather([xc, xa, xh], [1.0, 2.0, k], dim=2)  # (T, B, 3, H) [xc, 2 xa, k xh]
    if keep and not owned:  # a constant input kept for a graph: one copy, then gates in place
        X, owned = X.contiguous(), True
    W2t = transposed(torch.cat([Wc, Wa * 2.0], dim=-2))  # (H, 2H), or (G, H, 2H)
    S = X if owned else xh.new_empty((T if keep else 1, B, 3, H))
    minus_one = xh.new_full((), -1.0)
    hs = xh.new_empty((T if all_states else 1, B, H))  # else: the state is updated in place
    h = h0
    S2, X2 = S[:, :, :2].flatten(2), X[:, :, :2].flatten(2)  # (T, B, 2H), rows 3H apart
    s2_v, c_v, a_v, n_v = (steps(v, T) for v in (S2, S[:, :, 0], S[:, :, 1], S[:, :, 2]))
    x2_v, xk_v = (s2_v, n_v) if owned else (steps(X2, T), steps(X[:, :, 2], T))  # in place
    with one_thread(hs, B * H * 2 * H):
        for x2, xk, s2, c, a, n, h_t in zip(x2_v, xk_v, s2_v, c_v, a_v, n_v, steps(hs, T), strict=True):
            addmm(s2, x2, h, W2t)  # (B, 2H) pre-activations [zc, 2 za]
            s2.sigmoid_()
            torch.addcmul(xk, a, h, value=2.0 * k, out=n)
            tanh_scaled_(n, k, minus_one)
            torch.lerp(n, h, c, out=h_t)
            h = h_t
    return (hs,), (Wc, Wa, h0, hs, S)


def _nbrc_native_forward(xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor, *,
                         keep: bool, all_states: bool) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """One ``nbrc_fwd_scan`` call (see :func:`_brc_native_forward`)."""
    T, B, H = xh.shape
    S = xh.new_empty((T if keep else 1, B, 3, H))
    slots = state_slots(T, all_states)
    hs = xh.new_empty((slots, B, H))
    W2t = torch.cat([Wc, Wa], dim=-2).transpose(-1, -2).contiguous()  # (H, 2H), or (G, H, 2H)
    G = max(n_groups(Wc), 1)
    native.call("nbrc_fwd_scan", T=T, B=B, H=H, G=G, xc=row_major(xc), xa=row_major(xa),
                xh=row_major(xh), W2t=W2t.reshape(G, H, 2 * H), h0=h0.contiguous(), S=S,
                keep=int(keep), hs=hs, slots=slots)
    return (last_slot(hs, T, all_states),), (Wc, Wa, h0, hs, S)


def _nbrc_torch_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                         need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    # As BRC (see _brc_torch_backward), with k4 = c + 2 s k1 and the matrix terms
    # dL/dhp += [dzc, dza] @ [Wc; Wa], one matmul a step.
    Wc, Wa, h0, hs, S = saved
    T, B, H = hs.shape
    c, s, k1 = S[:, :, 0], S[:, :, 1], S[:, :, 2]  # (T, B, H) each
    hp = prev_states(h0, hs)  # (T, B, H)
    X = hp - k1
    times_one_minus_(one_minus_square_(k1), c)  # n -> k1 = (1 - n^2)(1 - c)
    times_one_minus_(X.mul_(c), c)  # X = k2 = (hp - n) c (1 - c)
    c.addcmul_(s, k1, value=2.0)  # c -> k4 = c + 2 s k1
    times_one_minus_(s, s).mul_(k1).mul_(hp).mul_(4.0)  # s -> k3 = 4 s (1 - s) k1 hp
    k4 = hp.copy_(c)  # hp is spent
    c.copy_(X)  # S[:, :, :2] = K = [k2, k3]: (T, B, 2, H)
    K = S[:, :, :2]
    W2 = torch.cat([Wc, Wa], dim=-2)  # (2H, H), or (G, 2H, H)
    G = grad_buffer(grads[0], hs)  # (T+1, B, H)
    g_v, gu_v = G.unbind(0), G.unsqueeze(2).unbind(0)  # (B, H), (B, 1, H)
    k_v, dz_v, k4_v = K.unbind(0), K.flatten(2).unbind(0), k4.unbind(0)
    with one_thread(hs, B * 2 * H * H):
        for t in range(T - 1, -1, -1):
            k_v[t].mul_(gu_v[t + 1])  # K_t -> [dzc, dza]_t, (B, 2, H)
            addmm_(g_v[t].addcmul_(k4_v[t], g_v[t + 1]), dz_v[t], W2)
    gWc = gWa = None
    if need[3] or need[4]:
        gW = gram_prev(K.flatten(2), h0, hs, n_groups(Wc))  # (2H, H), or (G, 2H, H)
        gWc, gWa = gW[..., :H, :], gW[..., H:, :]
    return S[:, :, 0], S[:, :, 1], k1.mul_(G[1:]), gWc, gWa, G[0]


def _nbrc_native_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                          need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    """One ``nbrc_bwd_scan`` call; S becomes the three inputs' gradients."""
    Wc, Wa, h0, hs, S = saved
    T, B, H = hs.shape
    G = max(n_groups(Wc), 1)
    Gr, W2 = grad_buffer(grads[0], hs), torch.cat([Wc, Wa], dim=-2).contiguous()  # (2H, H), or (G, 2H, H)
    gW = W2.new_zeros(W2.shape) if need[3] or need[4] else None
    native.call("nbrc_bwd_scan", T=T, B=B, H=H, G=G, S=S, hs=hs, h0=h0.contiguous(),
                W2=W2.reshape(G, 2 * H, H), Gr=Gr, gw=None if gW is None else gW.view(G, 2 * H, H))
    gWc, gWa = (None, None) if gW is None else (gW[..., :H, :], gW[..., H:, :])
    return (S[:, :, 0], S[:, :, 1], S[:, :, 2], gWc if need[3] else None, gWa if need[4] else None,
            Gr[0])


NBRC = Scan("nbrc_scan", _nbrc_torch_forward, _nbrc_torch_backward, _nbrc_native_forward,
            _nbrc_native_backward, overwrites=(4,))


def nbrc_scan(
    xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor, *, final_only: bool = False
) -> Tensor:
    """nBRC recurrence over a whole sequence, with a hand-written backward.

    As ``brc_scan`` with ``wc*h -> h @ Wc.T`` and ``wa*h -> h @ Wa.T`` (one fused matmul a step).

    Args:
        xc: input projection of the update gate, (T, B, H), bias added; may be expanded.
        xa: input projection of the bistability gate, (T, B, H), bias added; may be expanded.
        xh: input projection of the candidate, (T, B, H), bias added; may be expanded.
        Wc: recurrent weight of the update gate, (H, H); or (G, H, H): G cells side by side
            in the batch, each owning B/G consecutive rows (see ``cells.NBRC.group_states``).
        Wa: recurrent weight of the bistability gate, (H, H).
        h0: initial state, (B, H).
        final_only: return only the last state, (B, H); without a graph, this keeps no (T, B, H)
            buffer of states (e.g. for long no-grad runs to measure attractors).

    Returns:
        Every step's state, (T, B, H), or the last one, (B, H). Gradients flow to all six inputs.
    """
    check_sequences("nbrc_scan", {"xc": xc, "xa": xa, "xh": xh}, h0)
    shape = matrix_shape("nbrc_scan", Wc, h0)
    check_weight("nbrc_scan", "Wc", Wc, shape, h0)
    check_weight("nbrc_scan", "Wa", Wa, shape, h0)
    return run(NBRC, (xc, xa, xh, Wc, Wa, h0), final_only=final_only)


# --------------------------------------------------------------------------------------------
# MGU: f = sig(xf + h @ Uf.T); n = tanh(xn + (f*h) @ Un.T); h' = (1-f)*h + f*n
# Saved: Uf, Un, h0, hs and, per step, forget gates F, gated states R = F*h, candidates N.
# --------------------------------------------------------------------------------------------


def _mgu_torch_forward(xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor, *, keep: bool,
                       all_states: bool) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    T, B, H = xf.shape
    k = tanh_scale(xf)
    UfT, UnT = transposed(Uf), transposed(Un)
    F, R, N = (xf.new_empty((T if keep else 1, B, H)) for _ in range(3))  # f, f*h, tanh(zn)
    minus_one = xf.new_full((), -1.0)
    hs = xf.new_empty((T if all_states else 1, B, H))  # else: the state is updated in place
    h = h0
    if keep:  # the input terms of every step in two copies, then the products added in place
        F.copy_(xf)
        torch.mul(xn, k, out=N)
    with one_thread(hs, B * H * H):
        for xf_t, xn_t, f, r, n, h_t in zip(*(steps(v, T) for v in (xf, xn, F, R, N, hs)), strict=True):
            if keep:
                addmm_(f, h, UfT)
            else:
                addmm(f, xf_t, h, UfT)
            f.sigmoid_()
            torch.mul(f, h, out=r)
            if keep:
                addmm_(n, r, UnT, alpha=k)  # k zn
            else:
                addmm(n, xn_t, r, UnT, beta=k, alpha=k)
            tanh_scaled_(n, k, minus_one)
            torch.lerp(h, n, f, out=h_t)  # (1-f)*h + f*n
            h = h_t
    return (hs,), (Uf, Un, h0, hs, F, R, N)


def _mgu_native_forward(xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor, *, keep: bool,
                        all_states: bool) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """One ``mgu_fwd_scan`` call (see :func:`_brc_native_forward`)."""
    T, B, H = xf.shape
    F, R, N = (xf.new_empty((T if keep else 1, B, H)) for _ in range(3))
    slots = state_slots(T, all_states)
    hs = xf.new_empty((slots, B, H))
    G = max(n_groups(Uf), 1)
    UfT, UnT = (U.transpose(-1, -2).contiguous().reshape(G, H, H) for U in (Uf, Un))
    native.call("mgu_fwd_scan", T=T, B=B, H=H, G=G, xf=row_major(xf), xn=row_major(xn), UfT=UfT,
                UnT=UnT, h0=h0.contiguous(), F=F, R=R, N=N, keep=int(keep), hs=hs, slots=slots)
    return (last_slot(hs, T, all_states),), (Uf, Un, h0, hs, F, R, N)


def _mgu_torch_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                        need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    # With g = dL/dh' (total) and hp the state entering the step:
    #   dL/dzn = g kn, kn = f (1 - n^2)          dr = dL/d(f hp) = dL/dzn @ Un
    #   dL/dzf = g ka + dr kb, ka = (n - hp) f (1-f), kb = hp f (1-f)
    #   dL/dhp = g (1-f) + dr f + dL/dzf @ Uf
    # Per step this is written with e = dr - g (one addmm with beta = -1):
    #   dL/dzf = g (ka + kb) + e kb = g n f (1-f) + e kb,   dL/dhp = g + e f + dL/dzf @ Uf.
    Uf, Un, h0, hs, F, R, N = saved
    T, B, H = hs.shape
    X = times_one_minus_(N * F, F)  # ka + kb = n f (1 - f)
    one_minus_square_(N).mul_(F)  # n -> kn
    times_one_minus_(R, F)  # f hp -> kb
    G = grad_buffer(grads[0], hs)  # (T+1, B, H)
    e = hs.new_empty((B, H))  # per-step scratch
    g_v, f_v = G.unbind(0), F.unbind(0)
    ka_v, kn_v, kb_v = X.unbind(0), N.unbind(0), R.unbind(0)
    with one_thread(hs, B * H * H):
        for t in range(T - 1, -1, -1):
            g = g_v[t + 1]
            dzn = kn_v[t].mul_(g)
            addmm(e, g, dzn, Un, beta=-1.0)  # dr - g
            dzf = ka_v[t].mul_(g).addcmul_(e, kb_v[t])
            addmm_(g_v[t].add_(g).addcmul_(e, f_v[t]), dzf, Uf)
    gUf = gram_prev(X, h0, hs, n_groups(Uf)) if need[2] else None
    gUn = None
    if need[3]:
        R = mul_prev(F, h0, hs, out=R)  # f hp again (kb is spent)
        gUn = gram(N, R, n_groups(Un))
    return X, N, gUf, gUn, G[0]


def _mgu_native_backward(saved: tuple[Tensor, ...], grads: tuple[Tensor | None, ...],
                         need: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    """One ``mgu_bwd_scan`` call; N becomes xn's gradient."""
    Uf, Un, h0, hs, F, R, N = saved
    T, B, H = hs.shape
    G = max(n_groups(Uf), 1)
    Gr, dzf = grad_buffer(grads[0], hs), torch.empty_like(F)
    gUf, gUn = (Uf.new_zeros(Uf.shape), Un.new_zeros(Un.shape)) if need[2] or need[3] else (None, None)
    native.call("mgu_bwd_scan", T=T, B=B, H=H, G=G, F=F, R=R, N=N, hs=hs, h0=h0.contiguous(),
                Uf=Uf.contiguous().reshape(G, H, H), Un=Un.contiguous().reshape(G, H, H), DZF=dzf, Gr=Gr,
                gUf=None if gUf is None else gUf.view(G, H, H),
                gUn=None if gUn is None else gUn.view(G, H, H))
    return dzf, N, gUf if need[2] else None, gUn if need[3] else None, Gr[0]


MGU = Scan("mgu_scan", _mgu_torch_forward, _mgu_torch_backward, _mgu_native_forward,
           _mgu_native_backward, overwrites=(4, 5, 6))


def mgu_scan(
    xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor, *, final_only: bool = False
) -> Tensor:
    """MGU recurrence over a whole sequence, with a hand-written backward.

    ``f = sig(xf_t + h @ Uf.T); n = tanh(xn_t + (f*h) @ Un.T); h' = (1-f)*h + f*n``.

    Args:
        xf: input projection of the forget gate, (T, B, H), bias added; may be expanded.
        xn: input projection of the candidate, (T, B, H), bias added; may be expanded.
        Uf: recurrent weight of the forget gate, (H, H); or (G, H, H): G cells side by side
            in the batch, each owning B/G consecutive rows (see ``cells.MGU.group_states``).
        Un: recurrent weight of the candidate, (H, H).
        h0: initial state, (B, H).
        final_only: return only the last state, (B, H); without a graph, this keeps no (T, B, H)
            buffer of states (e.g. for long no-grad runs to measure attractors).

    Returns:
        Every step's state, (T, B, H), or the last one, (B, H). Gradients flow to all five inputs.
    """
    check_sequences("mgu_scan", {"xf": xf, "xn": xn}, h0)
    shape = matrix_shape("mgu_scan", Uf, h0)
    check_weight("mgu_scan", "Uf", Uf, shape, h0)
    check_weight("mgu_scan", "Un", Un, shape, h0)
    return run(MGU, (xf, xn, Uf, Un, h0), final_only=final_only)
