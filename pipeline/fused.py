"""Fused sequence recurrences for the BRC, nBRC and MGU cells (ALGORITHM.md, "Cells").

The caller computes the input projections of ALL time steps with one matmul (biases added) and
passes them here as (T, B, H) tensors; these functions run only the recurrent part. Each scan is a
``torch.autograd.Function`` with a hand-written backward:

- the forward runs without an autograd graph and writes every step into preallocated buffers,
  in place or through ``out=``: 5-6 kernels a step for BRC/nBRC, 6-7 for MGU (both gates of
  BRC/nBRC share one sigmoid, using 1 + tanh(z) = 2 sig(2z));
- the backward loop does only what the recurrence forces per step: one ``addcmul`` for BRC (its
  state gradient obeys a linear element-wise recurrence), three kernels for nBRC, seven for MGU.
  Everything that can be computed for all steps at once (gate derivatives, weight gradients:
  one matmul or reduction each) is, outside the loop, in place over the forward's own buffers.

On CPU, where a torch kernel on a (B, H) tile costs a few microseconds, what matters is the
number of kernels a step and how much fresh memory is touched; both are kept low. No host
synchronisation happens in any loop, so the same code runs on CUDA (there, tanh is used as is).
Inputs expanded (stride 0) over time, as in the warm-up's constant input, are read without being
materialised. Double backward is not supported.

Plain autograd loops (``*_scan_reference``) define what each fused scan must compute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from pipeline import native

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


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _const_in_time(x: Tensor) -> bool:
    """True when a (T, ...) tensor is expanded (stride 0) over time, or T = 1."""
    return x.size(0) == 1 or x.stride(0) == 0


def _gather(xs: list[Tensor], scales: list[float], dim: int) -> tuple[Tensor, bool]:
    """[scale_i * x_i] stacked at ``dim`` (1 or 2) of k (T, B, H) tensors: (T, k, B, H) or (T, B, k, H).

    Returns the stack and whether it is a fresh buffer this module owns (and may overwrite).
    When every x is expanded over time, stacks one step and expands it over time instead of
    materialising T copies (not owned).
    """
    T, B, H = xs[0].shape
    if all(_const_in_time(x) for x in xs):
        one = torch.stack([x[0] * s for x, s in zip(xs, scales, strict=True)], dim=dim - 1)
        return one.unsqueeze(0).expand(T, *one.shape), False
    out = xs[0].new_empty((T, len(xs), B, H) if dim == 1 else (T, B, len(xs), H))
    for i, (x, s) in enumerate(zip(xs, scales, strict=True)):
        if s == 1.0:
            out.select(dim, i).copy_(x)
        else:
            torch.mul(x, s, out=out.select(dim, i))
    return out, True


def _tanh_scale(x: Tensor) -> float:
    """Scale of the pre-activation handed to ``_tanh_scaled_`` on x's device.

    On CPU, tanh(z) = 2 sig(2z) - 1 runs about twice as fast as torch's tanh, so pre-activations
    are built doubled (folded into existing ops); elsewhere tanh itself is one kernel fewer.
    """
    return 2.0 if x.device.type == "cpu" else 1.0


def _tanh_scaled_(z: Tensor, scale: float, minus_one: Tensor) -> Tensor:
    """z <- tanh(z / scale) in place, for ``scale`` from ``_tanh_scale``; minus_one: -1, 0-dim."""
    if scale == 1.0:
        return z.tanh_()
    return torch.add(minus_one, z.sigmoid_(), alpha=2.0, out=z)


def _row_major(x: Tensor) -> Tensor:
    """x itself when its rows are contiguous (any strides over the other dims), else a copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _state_slots(T: int, all_states: bool) -> int:
    """State buffers a native forward keeps: every step's, or two alternating (one for T = 1)."""
    return T if all_states else min(T, 2)


def _last_slot(hs: Tensor, T: int, all_states: bool) -> Tensor:
    """The states a forward returns from its ``_state_slots`` buffers: all, or the last, (1, ...)."""
    if all_states:
        return hs
    last = (T - 1) % hs.size(0)
    return hs[last:last + 1]


def _steps(x: Tensor, T: int) -> list[Tensor]:
    """Per-step views of a (T, ...) buffer, or T times the one step of a (1, ...) buffer."""
    views = list(x.unbind(0))
    return views if len(views) == T else views * T


def _prev_states(h0: Tensor, hs: Tensor, out: Tensor | None = None) -> Tensor:
    """States entering each step: [h0, hs[0], ..., hs[T-2]], (T, B, H)."""
    return torch.cat([h0.unsqueeze(0).expand(1, *hs.shape[1:]), hs[:-1]], out=out)


def _mul_prev(x: Tensor, h0: Tensor, hs: Tensor, out: Tensor) -> Tensor:
    """out = x * [h0, hs[:-1]] for (T, B, H) x, without materialising the previous states."""
    torch.mul(x[0], h0, out=out[0])
    torch.mul(x[1:], hs[:-1], out=out[1:])
    return out


def _addmm(out: Tensor, x: Tensor, h: Tensor, w: Tensor, beta: float = 1.0, alpha: float = 1.0) -> Tensor:
    """out = beta x + alpha h @ w for (B, K) x; w (H, K), or (G, H, K) for G groups of B/G
    consecutive rows, each with its own weight."""
    if w.dim() == 2:
        return torch.addmm(x, h, w, beta=beta, alpha=alpha, out=out)
    G = w.size(0)
    torch.baddbmm(x.unflatten(0, (G, -1)), h.unflatten(0, (G, -1)), w, beta=beta, alpha=alpha,
                  out=out.unflatten(0, (G, -1)))
    return out


def _addmm_(g: Tensor, d: Tensor, w: Tensor, alpha: float = 1.0) -> Tensor:
    """g += alpha d @ w in place, for w (K, H) or grouped (G, K, H)."""
    if w.dim() == 2:
        return g.addmm_(d, w, alpha=alpha)
    g.unflatten(0, (w.size(0), -1)).baddbmm_(d.unflatten(0, (w.size(0), -1)), w, alpha=alpha)
    return g


def _t(w: Tensor) -> Tensor:
    """Transpose of a weight or of each of a group of weights."""
    return w.transpose(-1, -2)


def _gram(x: Tensor, y: Tensor, groups: int) -> Tensor:
    """x^T @ y summed over time and batch: (T, B, K), (T, B, H) -> (K, H), or (G, K, H) per group
    of B/G consecutive rows when ``groups`` > 0."""
    K, H = x.size(-1), y.size(-1)
    if not groups:
        return x.reshape(-1, K).T @ y.reshape(-1, H)
    xg = x.unflatten(1, (groups, -1)).transpose(0, 1).reshape(groups, -1, K)
    yg = y.unflatten(1, (groups, -1)).transpose(0, 1).reshape(groups, -1, H)
    return torch.bmm(xg.transpose(1, 2), yg)


def _gram_prev(x: Tensor, h0: Tensor, hs: Tensor, groups: int = 0) -> Tensor:
    """x^T @ [h0, hs[:-1]] summed over time and batch: (T, B, K) x -> (K, H)."""
    if groups:
        return _gram(x[:1], h0.unsqueeze(0), groups) + _gram(x[1:], hs[:-1], groups)
    K, H = x.size(-1), hs.size(-1)
    return torch.addmm(x[0].T @ h0, x[1:].reshape(-1, K).T, hs[:-1].reshape(-1, H))


def _grad_buffer(go: Tensor | None, hs: Tensor) -> Tensor:
    """(T+1, ...) buffer for the states hs, (T, ...): index 0 (for h0) zero, indices 1.. the
    incoming gradients of hs. ``go`` is every step's gradient, (T, ...), or the last step's only,
    (...), when the scan returned its final state alone (the others are zero), or None (zeros)."""
    G = hs.new_empty((hs.size(0) + 1, *hs.shape[1:]))
    if go is None:
        G.zero_()
    elif go.dim() < hs.dim():  # final-only scan
        G[:-1].zero_()
        G[-1].copy_(go)
    else:
        G[0].zero_()
        G[1:].copy_(go)
    return G


def _outputs(final: bool, *seqs: Tensor) -> Tensor | tuple[Tensor, ...]:
    """A scan Function's outputs: every step's states, or (``final``) copies of the last ones, so
    that only those enter the graph and the backward gets no (T, ...) gradients of zeros."""
    outs = tuple(s[-1].clone() if final else s for s in seqs)
    return outs[0] if len(outs) == 1 else outs


def _groups(w: Tensor) -> int:
    """Number of weight groups of a grouped (G, ., .) matrix weight; 0 for a plain (., .) one."""
    return w.size(0) if w.dim() == 3 else 0


def _one_minus_square_(x: Tensor) -> Tensor:
    """x <- 1 - x^2 in place (tanh' from tanh)."""
    return x.mul_(x).neg_().add_(1.0)


def _times_one_minus_(x: Tensor, s: Tensor) -> Tensor:
    """x <- x * (1 - s) in place."""
    return x.addcmul_(x, s, value=-1.0)


def _own(*saved: Tensor) -> tuple[Tensor, ...]:
    """Saved buffers the backward may overwrite: themselves, or copies if the graph is kept.

    Overwriting saves memory traffic (fresh CPU memory is slow to touch), but a graph kept
    for another backward (``retain_graph=True``, ``gradcheck``) must find them intact. If this
    torch cannot tell, copies are made.
    """
    keep = getattr(getattr(torch._C, "_autograd", None), "_get_current_graph_task_keep_graph", None)
    if keep is not None and not keep():
        return saved
    return tuple(t.clone() for t in saved)


_SMALL_STEP_MACS = 1 << 20  # per-step matmuls smaller than this run on one CPU thread


@contextlib.contextmanager
def _one_thread(x: Tensor, step_macs: int) -> Iterator[None]:
    """Run a per-step loop with one intra-op CPU thread, restoring the caller's count after.

    Element-wise kernels on a (B, H) tile are too small to be split anyway, but BLAS splits even
    a (32 x 64) @ (64 x 64) matmul over all threads, and the synchronisation then costs several
    times the product (far more on a shared, loaded machine). Larger matmuls keep the threads.
    """
    n = torch.get_num_threads()
    if x.device.type != "cpu" or n == 1 or step_macs >= _SMALL_STEP_MACS:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


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
                f"{name}: {k} must be (T, B, H) with T >= 1, B = {B}, H = {H} but got {tuple(x.shape)}."
            )
        if x.dtype != h0.dtype or x.device != h0.device:
            raise ValueError(f"{name}: {k} is {x.dtype} on {x.device} but h0 is {h0.dtype} on {h0.device}.")
    lengths = {k: x.size(0) for k, x in xs.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{name}: inputs disagree on sequence length: {lengths}.")


def _matrix_shape(name: str, w: Tensor, h0: Tensor) -> tuple[int, ...]:
    """Expected shape of a recurrent matrix: (H, H), or (G, H, H) for G groups of B/G rows."""
    B, H = h0.shape
    if w.dim() != 3:
        return (H, H)
    if B % w.size(0):
        raise ValueError(f"{name}: {w.size(0)} weight groups do not divide the batch of {B} rows.")
    return (w.size(0), H, H)


def _check_weight(name: str, k: str, w: Tensor, shape: tuple[int, ...], h0: Tensor) -> None:
    """Validate a recurrent weight's shape, dtype and device."""
    if tuple(w.shape) != shape:
        raise ValueError(f"{name}: {k} must have shape {shape} but got {tuple(w.shape)}.")
    if w.dtype != h0.dtype or w.device != h0.device:
        raise ValueError(f"{name}: {k} is {w.dtype} on {w.device} but h0 is {h0.dtype} on {h0.device}.")


# --------------------------------------------------------------------------------------------
# BRC: c = sig(xc + wc*h); a = 1 + tanh(xa + wa*h); h' = c*h + (1-c)*tanh(xh + a*h)
# Computed with 1 + tanh(z) = 2 sig(2z), so both gates are one sigmoid over a (2, B, H) block.
# --------------------------------------------------------------------------------------------


def _brc_forward(
    xc: Tensor,
    xa: Tensor,
    xh: Tensor,
    wc: Tensor,
    wa: Tensor,
    h0: Tensor,
    keep: bool,
    all_states: bool = True,
) -> tuple[Tensor, Tensor]:
    """Forward without a graph; returns hs (T, B, H) and S (T|1, 3, B, H) = [c, a/2, n].

    S holds c = sig(zc), a/2 = sig(2 za) and n = tanh(zh) of every step when ``keep``; without a
    graph one step of scratch is reused unless the inputs already had to be copied.
    """
    lib = native.usable(xc, xa, xh, wc, wa, h0)
    if lib is not None:
        return _brc_forward_native(lib, xc, xa, xh, wc, wa, h0, keep, all_states)
    T, B, H = xh.shape
    k = _tanh_scale(xh)
    X, owned = _gather([xc, xa, xh], [1.0, 2.0, k], dim=1)  # (T, 3, B, H) [xc, 2 xa, k xh]
    w2 = torch.stack([wc, wa * 2.0])  # (2, H) or, per row, (2, B, H)
    w2 = w2.unsqueeze(1) if wc.dim() == 1 else w2
    # gates are written over the gathered inputs when they are ours: no extra buffer
    S = X if owned else xh.new_empty((T if keep else 1, 3, B, H))
    minus_one = xh.new_full((), -1.0)
    hs = xh.new_empty((T if all_states else 1, B, H))  # else: the state is updated in place
    h = h0
    s2_v, c_v, a_v, n_v = (_steps(v, T) for v in (S[:, :2], S[:, 0], S[:, 1], S[:, 2]))
    x2_v, xk_v = (s2_v, n_v) if owned else (_steps(X[:, :2], T), _steps(X[:, 2], T))  # in place
    for x2, xk, s2, c, a, n, h_t in zip(x2_v, xk_v, s2_v, c_v, a_v, n_v, _steps(hs, T), strict=True):
        torch.addcmul(x2, w2, h, out=s2)  # (2, B, H) pre-activations [zc, 2 za]
        s2.sigmoid_()  # [c, a/2]: 1 + tanh(za) = 2 sig(2 za)
        torch.addcmul(xk, a, h, value=2.0 * k, out=n)  # k zh = k (xh + a h)
        _tanh_scaled_(n, k, minus_one)
        torch.lerp(n, h, c, out=h_t)  # c h + (1 - c) n
        h = h_t
    return hs, S


def _brc_forward_native(lib, xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor,
                        keep: bool, all_states: bool) -> tuple[Tensor, Tensor]:
    """:func:`_brc_forward` as one native call (``brc_fwd_scan``: the whole time loop, rows split
    into lanes over torch's threads); the inputs are read in place, expanded or not. S is
    (T, 3, B, H) when ``keep``, else empty (nothing per step is stored)."""
    T, B, H = xh.shape
    S = xh.new_empty((T, 3, B, H) if keep else (0,))
    slots = _state_slots(T, all_states)
    hs = xh.new_empty((slots, B, H))
    xs = [_row_major(v) for v in (xc, xa, xh)]
    wc, wa = wc.contiguous(), wa.contiguous()
    native.call(lib, "brc_fwd_scan", T, B, H, *(a for v in xs for a in (v, v.stride(0), v.stride(1))),
                wc, wa, 0 if wc.dim() == 1 else H, h0.contiguous(), S if keep else None, int(keep), hs, slots)
    return _last_slot(hs, T, all_states), S


class _BRCScan(torch.autograd.Function):
    """BRC scan; the backward overwrites its saved buffers unless the graph is kept."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor,
        final: bool
    ) -> Tensor:
        hs, S = _brc_forward(xc, xa, xh, wc, wa, h0, keep=True)
        ctx.save_for_backward(wc, wa, h0, hs, S)
        return _outputs(final, hs)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, go: Tensor) -> tuple[Tensor | None, ...]:
        # With g = dL/dh' (total, per step) and hp the state entering the step:
        #   dL/dzh = g k1, k1 = (1-c)(1-n^2)        dL/dzc = g k2, k2 = (hp-n) c(1-c)
        #   dL/dza = g k3, k3 = k1 hp 4 s(1-s)      dL/dhp = g k4, k4 = c + 2 s k1 + wc k2 + wa k3
        # (s = a/2 = sig(2 za)). The state gradient is a linear element-wise recurrence.
        # Every k is computed in place over the saved buffers: c -> k4, s -> k3, n -> k1.
        wc, wa, h0, hs, S = ctx.saved_tensors
        (S,) = _own(S)
        lib = native.usable(S, hs, wc)
        if lib is not None and S.is_contiguous() and hs.is_contiguous():  # one native call
            G, T, B, H = _grad_buffer(go, hs), *hs.shape
            gwc, gwa = torch.zeros_like(wc), torch.zeros_like(wa)
            native.call(lib, "brc_bwd_scan", T, B, H, S, hs, h0.contiguous(), wc.contiguous(),
                        wa.contiguous(), 0 if wc.dim() == 1 else H, G, gwc, gwa)
            need = ctx.needs_input_grad
            return S[:, 0], S[:, 1], S[:, 2], gwc if need[3] else None, gwa if need[4] else None, G[0], None
        c, s, N = S[:, 0], S[:, 1], S[:, 2]  # (T, B, H) each
        k1 = N
        k2 = _prev_states(h0, hs).sub_(N)  # (T, B, H)
        _times_one_minus_(k2.mul_(c), c)  # (hp - n) c (1 - c)
        _times_one_minus_(_one_minus_square_(k1), c)  # n -> (1 - n^2)(1 - c)
        k4 = c.addcmul_(s, k1, value=2.0).addcmul_(k2, wc)  # c -> c + 2 s k1 + wc k2
        k3 = _mul_prev(_times_one_minus_(s, s).mul_(k1).mul_(4.0), h0, hs, out=s)  # 4 s(1-s) k1 hp
        k4.addcmul_(k3, wa)
        G = _grad_buffer(go, hs)  # (T+1, B, H); G[t+1] = total dL/dhs[t], G[0] = dL/dh0
        g_v, k4_v = G.unbind(0), k4.unbind(0)
        for t in range(hs.size(0) - 1, -1, -1):  # g_t += k4_t * g_{t+1}
            g_v[t].addcmul_(k4_v[t], g_v[t + 1])
        g = G[1:]
        dzc, dza, dzh = k2.mul_(g), k3.mul_(g), k1.mul_(g)
        need = ctx.needs_input_grad
        # g is spent: it holds the products summed for the vector weights' gradients
        dims = (0, 1) if wc.dim() == 1 else 0  # per-row weights: one gradient per row
        gwc = _mul_prev(dzc, h0, hs, out=g).sum(dims) if need[3] else None
        gwa = _mul_prev(dza, h0, hs, out=g).sum(dims) if need[4] else None
        return dzc, dza, dzh, gwc, gwa, G[0], None


def brc_scan(
    xc: Tensor, xa: Tensor, xh: Tensor, wc: Tensor, wa: Tensor, h0: Tensor, *, final_only: bool = False
) -> Tensor:
    """Fused BRC recurrence over a whole sequence, with a hand-written backward.

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
    _check("brc_scan", {"xc": xc, "xa": xa, "xh": xh}, h0)
    H = h0.size(1)
    shape = (H,) if wc.dim() == 1 else tuple(h0.shape)
    _check_weight("brc_scan", "wc", wc, shape, h0)
    _check_weight("brc_scan", "wa", wa, shape, h0)
    if _needs_graph(xc, xa, xh, wc, wa, h0):
        return _BRCScan.apply(xc, xa, xh, wc, wa, h0, final_only)
    with torch.no_grad():
        hs = _brc_forward(xc, xa, xh, wc, wa, h0, keep=False, all_states=not final_only)[0]
    return hs[-1] if final_only else hs


# --------------------------------------------------------------------------------------------
# nBRC: as BRC with wc*h -> h @ Wc.T and wa*h -> h @ Wa.T; both in one matmul per step.
# --------------------------------------------------------------------------------------------


def _nbrc_forward(
    xc: Tensor,
    xa: Tensor,
    xh: Tensor,
    Wc: Tensor,
    Wa: Tensor,
    h0: Tensor,
    keep: bool,
    all_states: bool = True,
) -> tuple[Tensor, Tensor]:
    """Forward without a graph; returns hs (T, B, H) and S (T|1, B, 3, H) = [c, a/2, n]."""
    lib = native.usable(xc, xa, xh, Wc, Wa, h0)
    if lib is not None:
        return _nbrc_forward_native(lib, xc, xa, xh, Wc, Wa, h0, keep, all_states)
    T, B, H = xh.shape
    k = _tanh_scale(xh)
    X, owned = _gather([xc, xa, xh], [1.0, 2.0, k], dim=2)  # (T, B, 3, H) [xc, 2 xa, k xh]
    if keep and not owned:  # a constant input kept for a graph: one copy, then gates in place
        X, owned = X.contiguous(), True
    W2t = _t(torch.cat([Wc, Wa * 2.0], dim=-2))  # (H, 2H), or (G, H, 2H)
    S = X if owned else xh.new_empty((T if keep else 1, B, 3, H))
    minus_one = xh.new_full((), -1.0)
    hs = xh.new_empty((T if all_states else 1, B, H))  # else: the state is updated in place
    h = h0
    S2, X2 = S[:, :, :2].flatten(2), X[:, :, :2].flatten(2)  # (T, B, 2H), rows 3H apart
    s2_v, c_v, a_v, n_v = (_steps(v, T) for v in (S2, S[:, :, 0], S[:, :, 1], S[:, :, 2]))
    x2_v, xk_v = (s2_v, n_v) if owned else (_steps(X2, T), _steps(X[:, :, 2], T))  # in place
    with _one_thread(hs, B * H * 2 * H):
        for x2, xk, s2, c, a, n, h_t in zip(x2_v, xk_v, s2_v, c_v, a_v, n_v, _steps(hs, T), strict=True):
            _addmm(s2, x2, h, W2t)  # (B, 2H) pre-activations [zc, 2 za]
            s2.sigmoid_()
            torch.addcmul(xk, a, h, value=2.0 * k, out=n)
            _tanh_scaled_(n, k, minus_one)
            torch.lerp(n, h, c, out=h_t)
            h = h_t
    return hs, S


def _nbrc_forward_native(lib, xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor,
                         keep: bool, all_states: bool) -> tuple[Tensor, Tensor]:
    """:func:`_nbrc_forward` as one native call (``nbrc_fwd_scan``; see :func:`_brc_forward_native`)."""
    T, B, H = xh.shape
    S = xh.new_empty((T if keep else 1, B, 3, H))
    slots = _state_slots(T, all_states)
    hs = xh.new_empty((slots, B, H))
    xs = [_row_major(v) for v in (xc, xa, xh)]
    W2t = torch.cat([Wc, Wa], dim=-2).transpose(-1, -2).contiguous()  # (H, 2H), or (G, H, 2H)
    strided = [a for v in xs for a in (v, v.stride(0), v.stride(1))]
    native.call(lib, "nbrc_fwd_scan", T, B, H, max(_groups(Wc), 1), *strided, W2t, h0.contiguous(), S,
                int(keep), hs, slots)
    return _last_slot(hs, T, all_states), S


class _NBRCScan(torch.autograd.Function):
    """nBRC scan; the backward overwrites its saved buffers unless the graph is kept."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor,
        final: bool
    ) -> Tensor:
        hs, S = _nbrc_forward(xc, xa, xh, Wc, Wa, h0, keep=True)
        ctx.save_for_backward(Wc, Wa, h0, hs, S)
        return _outputs(final, hs)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, go: Tensor) -> tuple[Tensor | None, ...]:
        # As BRC (see _BRCScan.backward), with k4 = c + 2 s k1 and the matrix terms
        # dL/dhp += [dzc, dza] @ [Wc; Wa], one matmul a step.
        Wc, Wa, h0, hs, S = ctx.saved_tensors
        (S,) = _own(S)
        T, B, H = hs.shape
        need = ctx.needs_input_grad
        lib = native.usable(S, hs, Wc)
        if lib is not None and S.is_contiguous() and hs.is_contiguous():  # one native call
            G, W2 = _grad_buffer(go, hs), torch.cat([Wc, Wa], dim=-2).contiguous()  # (2H, H), or (G, 2H, H)
            gW = torch.zeros_like(W2) if need[3] or need[4] else None
            native.call(lib, "nbrc_bwd_scan", T, B, H, max(_groups(Wc), 1), S, hs, h0.contiguous(), W2, G, gW)
            gWc, gWa = (None, None) if gW is None else (gW[..., :H, :], gW[..., H:, :])
            return (S[:, :, 0], S[:, :, 1], S[:, :, 2], gWc if need[3] else None, gWa if need[4] else None,
                    G[0], None)
        c, s, k1 = S[:, :, 0], S[:, :, 1], S[:, :, 2]  # (T, B, H) each
        hp = _prev_states(h0, hs)  # (T, B, H)
        X = hp - k1
        _times_one_minus_(_one_minus_square_(k1), c)  # n -> k1 = (1 - n^2)(1 - c)
        _times_one_minus_(X.mul_(c), c)  # X = k2 = (hp - n) c (1 - c)
        c.addcmul_(s, k1, value=2.0)  # c -> k4 = c + 2 s k1
        _times_one_minus_(s, s).mul_(k1).mul_(hp).mul_(4.0)  # s -> k3 = 4 s (1 - s) k1 hp
        k4 = hp.copy_(c)  # hp is spent
        c.copy_(X)  # S[:, :, :2] = K = [k2, k3]: (T, B, 2, H)
        K = S[:, :, :2]
        W2 = torch.cat([Wc, Wa], dim=-2)  # (2H, H), or (G, 2H, H)
        G = _grad_buffer(go, hs)  # (T+1, B, H)
        g_v, gu_v = G.unbind(0), G.unsqueeze(2).unbind(0)  # (B, H), (B, 1, H)
        k_v, dz_v, k4_v = K.unbind(0), K.flatten(2).unbind(0), k4.unbind(0)
        with _one_thread(hs, B * 2 * H * H):
            for t in range(T - 1, -1, -1):
                k_v[t].mul_(gu_v[t + 1])  # K_t -> [dzc, dza]_t, (B, 2, H)
                _addmm_(g_v[t].addcmul_(k4_v[t], g_v[t + 1]), dz_v[t], W2)
        gWc = gWa = None
        if need[3] or need[4]:
            gW = _gram_prev(K.flatten(2), h0, hs, _groups(Wc))  # (2H, H), or (G, 2H, H)
            gWc, gWa = gW[..., :H, :], gW[..., H:, :]
        return S[:, :, 0], S[:, :, 1], k1.mul_(G[1:]), gWc, gWa, G[0], None


def nbrc_scan(
    xc: Tensor, xa: Tensor, xh: Tensor, Wc: Tensor, Wa: Tensor, h0: Tensor, *, final_only: bool = False
) -> Tensor:
    """Fused nBRC recurrence over a whole sequence, with a hand-written backward.

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
    _check("nbrc_scan", {"xc": xc, "xa": xa, "xh": xh}, h0)
    shape = _matrix_shape("nbrc_scan", Wc, h0)
    _check_weight("nbrc_scan", "Wc", Wc, shape, h0)
    _check_weight("nbrc_scan", "Wa", Wa, shape, h0)
    if _needs_graph(xc, xa, xh, Wc, Wa, h0):
        return _NBRCScan.apply(xc, xa, xh, Wc, Wa, h0, final_only)
    with torch.no_grad():
        hs = _nbrc_forward(xc, xa, xh, Wc, Wa, h0, keep=False, all_states=not final_only)[0]
    return hs[-1] if final_only else hs


# --------------------------------------------------------------------------------------------
# MGU: f = sig(xf + h @ Uf.T); n = tanh(xn + (f*h) @ Un.T); h' = (1-f)*h + f*n
# --------------------------------------------------------------------------------------------


def _mgu_forward(
    xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor, keep: bool, all_states: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward without a graph; returns hs, forget gates F, gated states R = F*h, candidates N."""
    lib = native.usable(xf, xn, Uf, Un, h0)
    if lib is not None:
        return _mgu_forward_native(lib, xf, xn, Uf, Un, h0, keep, all_states)
    T, B, H = xf.shape
    k = _tanh_scale(xf)
    UfT, UnT = _t(Uf), _t(Un)
    F, R, N = (xf.new_empty((T if keep else 1, B, H)) for _ in range(3))  # f, f*h, tanh(zn)
    minus_one = xf.new_full((), -1.0)
    hs = xf.new_empty((T if all_states else 1, B, H))  # else: the state is updated in place
    h = h0
    if keep:  # the input terms of every step in two copies, then the products added in place
        F.copy_(xf)
        torch.mul(xn, k, out=N)
    with _one_thread(hs, B * H * H):
        for xf_t, xn_t, f, r, n, h_t in zip(*(_steps(v, T) for v in (xf, xn, F, R, N, hs)), strict=True):
            if keep:
                _addmm_(f, h, UfT)
            else:
                _addmm(f, xf_t, h, UfT)
            f.sigmoid_()
            torch.mul(f, h, out=r)
            if keep:
                _addmm_(n, r, UnT, alpha=k)  # k zn
            else:
                _addmm(n, xn_t, r, UnT, beta=k, alpha=k)
            _tanh_scaled_(n, k, minus_one)
            torch.lerp(h, n, f, out=h_t)  # (1-f)*h + f*n
            h = h_t
    return hs, F, R, N


def _mgu_forward_native(lib, xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor, keep: bool,
                        all_states: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`_mgu_forward` as one native call (``mgu_fwd_scan``; see :func:`_brc_forward_native`)."""
    T, B, H = xf.shape
    F, R, N = (xf.new_empty((T if keep else 1, B, H)) for _ in range(3))
    slots = _state_slots(T, all_states)
    hs = xf.new_empty((slots, B, H))
    xf, xn = _row_major(xf), _row_major(xn)
    UfT, UnT = (U.transpose(-1, -2).contiguous() for U in (Uf, Un))
    native.call(lib, "mgu_fwd_scan", T, B, H, max(_groups(Uf), 1), xf, xf.stride(0), xf.stride(1), xn,
                xn.stride(0), xn.stride(1), UfT, UnT, h0.contiguous(), F, R, N, int(keep), hs, slots)
    return _last_slot(hs, T, all_states), F, R, N


class _MGUScan(torch.autograd.Function):
    """MGU scan; the backward overwrites its saved buffers unless the graph is kept."""

    @staticmethod
    def forward(ctx: FunctionCtx, xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor, final: bool
                ) -> Tensor:
        hs, F, R, N = _mgu_forward(xf, xn, Uf, Un, h0, keep=True)
        ctx.save_for_backward(Uf, Un, h0, hs, F, R, N)
        return _outputs(final, hs)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, go: Tensor) -> tuple[Tensor | None, ...]:
        # With g = dL/dh' (total) and hp the state entering the step:
        #   dL/dzn = g kn, kn = f (1 - n^2)          dr = dL/d(f hp) = dL/dzn @ Un
        #   dL/dzf = g ka + dr kb, ka = (n - hp) f (1-f), kb = hp f (1-f)
        #   dL/dhp = g (1-f) + dr f + dL/dzf @ Uf
        # Per step this is written with e = dr - g (one addmm with beta = -1):
        #   dL/dzf = g (ka + kb) + e kb = g n f (1-f) + e kb,   dL/dhp = g + e f + dL/dzf @ Uf.
        Uf, Un, h0, hs, F, R, N = ctx.saved_tensors
        F, R, N = _own(F, R, N)
        T, B, H = hs.shape
        need = ctx.needs_input_grad
        lib = native.usable(F, hs, Uf)
        if lib is not None and all(t.is_contiguous() for t in (F, R, N, hs)):  # one native call
            G, dzf = _grad_buffer(go, hs), torch.empty_like(F)
            gUf, gUn = (torch.zeros_like(Uf), torch.zeros_like(Un)) if need[2] or need[3] else (None, None)
            native.call(lib, "mgu_bwd_scan", T, B, H, max(_groups(Uf), 1), F, R, N, hs, h0.contiguous(),
                        Uf.contiguous(), Un.contiguous(), dzf, G, gUf, gUn)
            return dzf, N, gUf if need[2] else None, gUn if need[3] else None, G[0], None
        X = _times_one_minus_(N * F, F)  # ka + kb = n f (1 - f)
        _one_minus_square_(N).mul_(F)  # n -> kn
        _times_one_minus_(R, F)  # f hp -> kb
        G = _grad_buffer(go, hs)  # (T+1, B, H)
        e = hs.new_empty((B, H))  # per-step scratch
        g_v, f_v = G.unbind(0), F.unbind(0)
        ka_v, kn_v, kb_v = X.unbind(0), N.unbind(0), R.unbind(0)
        with _one_thread(hs, B * H * H):
            for t in range(T - 1, -1, -1):
                g = g_v[t + 1]
                dzn = kn_v[t].mul_(g)
                _addmm(e, g, dzn, Un, beta=-1.0)  # dr - g
                dzf = ka_v[t].mul_(g).addcmul_(e, kb_v[t])
                _addmm_(g_v[t].add_(g).addcmul_(e, f_v[t]), dzf, Uf)
        gUf = _gram_prev(X, h0, hs, _groups(Uf)) if need[2] else None
        gUn = None
        if need[3]:
            R = _mul_prev(F, h0, hs, out=R)  # f hp again (kb is spent)
            gUn = _gram(N, R, _groups(Un))
        return X, N, gUf, gUn, G[0], None


def mgu_scan(
    xf: Tensor, xn: Tensor, Uf: Tensor, Un: Tensor, h0: Tensor, *, final_only: bool = False
) -> Tensor:
    """Fused MGU recurrence over a whole sequence, with a hand-written backward.

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
    _check("mgu_scan", {"xf": xf, "xn": xn}, h0)
    shape = _matrix_shape("mgu_scan", Uf, h0)
    _check_weight("mgu_scan", "Uf", Uf, shape, h0)
    _check_weight("mgu_scan", "Un", Un, shape, h0)
    if _needs_graph(xf, xn, Uf, Un, h0):
        return _MGUScan.apply(xf, xn, Uf, Un, h0, final_only)
    with torch.no_grad():
        hs = _mgu_forward(xf, xn, Uf, Un, h0, keep=False, all_states=not final_only)[0]
    return hs[-1] if final_only else hs
