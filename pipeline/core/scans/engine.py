"""What every scan shares: one autograd path, the native-or-torch choice, and the buffer helpers.

A scan (:class:`Scan`) is declared once per cell by four functions: its torch forward and backward
(the definitions that run anywhere, GPUs included) and its native forward and backward (one call of
:mod:`.native` each). :func:`run` is the one entry point: without a graph it runs the forward
alone; with one, a single ``torch.autograd.Function`` (:class:`_ScanFunction`) saves what the
forward returns for its backward, runs the backward of the implementation that ran the forward,
and lets it overwrite its saved buffers unless the graph is kept for another backward.

Forwards write every step into preallocated buffers; backwards do only what the recurrence forces
per step and everything else for all steps at once. No host synchronisation happens in any loop.
Double backward is not supported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from pipeline.core.scans import native

Outs = tuple[Tensor, ...]
Forward = Callable[..., tuple[Outs, Outs]]
"""``forward(*inputs, keep=..., all_states=...) -> (outputs, saved)``: the state sequences (every
step's, or with ``all_states`` False buffers whose last step is the final state), and what the
backward needs (only when ``keep``)."""
Backward = Callable[[Outs, Sequence[Tensor | None], Sequence[bool]], tuple[Tensor | None, ...]]
"""``backward(saved, output_grads, needs_input_grad) -> one gradient (or None) per input``."""


@dataclass(frozen=True)
class Scan:
    """One recurrence, as its torch and native implementations.

    Args:
        name: for error messages.
        torch_forward, torch_backward: the torch code (every device, every dtype).
        native_forward, native_backward: the native kernels (float32 on a CPU).
        overwrites: indices of the saved tensors the backward writes over (copied first when the
            graph is kept).
    """

    name: str
    torch_forward: Forward
    torch_backward: Backward
    native_forward: Forward
    native_backward: Backward
    overwrites: tuple[int, ...] = ()

    def forward(self, inputs: Sequence[Tensor], keep: bool, all_states: bool) -> tuple[bool, Outs, Outs]:
        """Run the native forward where the kernels take these inputs, else the torch one.
        Returns whether the native one ran, the outputs and the saved tensors."""
        use_native = native.usable(*inputs)
        fwd = self.native_forward if use_native else self.torch_forward
        outs, saved = fwd(*inputs, keep=keep, all_states=all_states)
        return use_native, outs, saved


class _ScanFunction(torch.autograd.Function):
    """The autograd node of every scan: ``apply(scan, final_only, *inputs)``."""

    @staticmethod
    def forward(ctx: FunctionCtx, scan: Scan, final: bool, *inputs: Tensor) -> Tensor | Outs:
        ctx.scan = scan
        ctx.native, outs, saved = scan.forward(inputs, keep=True, all_states=True)
        ctx.save_for_backward(*saved)
        # every step's states, or (final) copies of the last ones, so that only those enter the
        # graph and the backward gets no (T, ...) gradients of zeros
        outs = tuple(s[-1].clone() if final else s for s in outs)
        return outs[0] if len(outs) == 1 else outs

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        scan: Scan = ctx.scan
        saved = list(ctx.saved_tensors)
        for i, t in zip(scan.overwrites, _own(*(saved[i] for i in scan.overwrites)), strict=True):
            saved[i] = t
        bwd = scan.native_backward if ctx.native else scan.torch_backward
        return (None, None, *bwd(tuple(saved), grads, ctx.needs_input_grad[2:]))


def _own(*saved: Tensor) -> Outs:
    """Saved buffers the backward may overwrite: themselves, or copies if the graph is kept.

    Overwriting saves memory traffic (fresh CPU memory is slow to touch), but a graph kept
    for another backward (``retain_graph=True``, ``gradcheck``) must find them intact. If this
    torch cannot tell, copies are made.
    """
    keep = getattr(getattr(torch._C, "_autograd", None), "_get_current_graph_task_keep_graph", None)
    if keep is not None and not keep():
        return saved
    return tuple(t.clone() for t in saved)


def run(scan: Scan, inputs: Sequence[Tensor], *, final_only: bool = False) -> Tensor | Outs:
    """Run ``scan`` over whole sequences: every step's states (one tensor, or a tuple for cells
    with several state components), or with ``final_only`` the last step's. With a graph (any
    input requires grad, grad mode on) gradients flow to every input through the hand-written
    backward; without one nothing is saved, and with ``final_only`` no per-step buffer is kept."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in inputs):
        return _ScanFunction.apply(scan, final_only, *inputs)
    with torch.no_grad():
        _, outs, _ = scan.forward(inputs, keep=False, all_states=not final_only)
    outs = tuple(s[-1] if final_only else s for s in outs)
    return outs[0] if len(outs) == 1 else outs


# --------------------------------------------------------------------------------------------
# Buffer helpers and in-place element-wise steps
# --------------------------------------------------------------------------------------------

def const_in_time(x: Tensor) -> bool:
    """True when a (T, ...) tensor is expanded (stride 0) over time, or T = 1."""
    return x.size(0) == 1 or x.stride(0) == 0


def gather(xs: list[Tensor], scales: list[float], dim: int) -> tuple[Tensor, bool]:
    """[scale_i * x_i] stacked at ``dim`` (1 or 2) of k (T, B, H) tensors: (T, k, B, H) or (T, B, k, H).

    Returns the stack and whether it is a fresh buffer this module owns (and may overwrite).
    When every x is expanded over time, stacks one step and expands it over time instead of
    materialising T copies (not owned).
    """
    T, B, H = xs[0].shape
    if all(const_in_time(x) for x in xs):
        one = torch.stack([x[0] * s for x, s in zip(xs, scales, strict=True)], dim=dim - 1)
        return one.unsqueeze(0).expand(T, *one.shape), False
    out = xs[0].new_empty((T, len(xs), B, H) if dim == 1 else (T, B, len(xs), H))
    for i, (x, s) in enumerate(zip(xs, scales, strict=True)):
        if s == 1.0:
            out.select(dim, i).copy_(x)
        else:
            torch.mul(x, s, out=out.select(dim, i))
    return out, True


def tanh_scale(x: Tensor) -> float:
    """Scale of the pre-activation handed to ``tanh_scaled_`` on x's device.

    On CPU, tanh(z) = 2 sig(2z) - 1 runs about twice as fast as torch's tanh, so pre-activations
    are built doubled (folded into existing ops); elsewhere tanh itself is one kernel fewer.
    """
    return 2.0 if x.device.type == "cpu" else 1.0


def tanh_scaled_(z: Tensor, scale: float, minus_one: Tensor) -> Tensor:
    """z <- tanh(z / scale) in place, for ``scale`` from ``tanh_scale``; minus_one: -1, 0-dim."""
    if scale == 1.0:
        return z.tanh_()
    return torch.add(minus_one, z.sigmoid_(), alpha=2.0, out=z)


def row_major(x: Tensor) -> Tensor:
    """x itself when its rows are contiguous (any strides over the other dims), else a copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def state_slots(T: int, all_states: bool) -> int:
    """State buffers a native forward keeps: every step's, or two alternating (one for T = 1)."""
    return T if all_states else min(T, 2)


def last_slot(hs: Tensor, T: int, all_states: bool) -> Tensor:
    """The states a forward returns from its ``state_slots`` buffers: all, or the last, (1, ...)."""
    if all_states:
        return hs
    last = (T - 1) % hs.size(0)
    return hs[last:last + 1]


def steps(x: Tensor, T: int) -> list[Tensor]:
    """Per-step views of a (T, ...) buffer, or T times the one step of a (1, ...) buffer."""
    views = list(x.unbind(0))
    return views if len(views) == T else views * T


def prev_states(h0: Tensor, hs: Tensor, out: Tensor | None = None) -> Tensor:
    """States entering each step: [h0, hs[0], ..., hs[T-2]], (T, B, H)."""
    return torch.cat([h0.unsqueeze(0).expand(1, *hs.shape[1:]), hs[:-1]], out=out)


def mul_prev(x: Tensor, h0: Tensor, hs: Tensor, out: Tensor) -> Tensor:
    """out = x * [h0, hs[:-1]] for (T, B, H) x, without materialising the previous states."""
    torch.mul(x[0], h0, out=out[0])
    torch.mul(x[1:], hs[:-1], out=out[1:])
    return out


def addmm(out: Tensor, x: Tensor, h: Tensor, w: Tensor, beta: float = 1.0, alpha: float = 1.0) -> Tensor:
    """out = beta x + alpha h @ w for (B, K) x; w (H, K), or (G, H, K) for G groups of B/G
    consecutive rows, each with its own weight."""
    if w.dim() == 2:
        return torch.addmm(x, h, w, beta=beta, alpha=alpha, out=out)
    G = w.size(0)
    torch.baddbmm(x.unflatten(0, (G, -1)), h.unflatten(0, (G, -1)), w, beta=beta, alpha=alpha,
                  out=out.unflatten(0, (G, -1)))
    return out


def addmm_(g: Tensor, d: Tensor, w: Tensor, alpha: float = 1.0) -> Tensor:
    """g += alpha d @ w in place, for w (K, H) or grouped (G, K, H)."""
    if w.dim() == 2:
        return g.addmm_(d, w, alpha=alpha)
    g.unflatten(0, (w.size(0), -1)).baddbmm_(d.unflatten(0, (w.size(0), -1)), w, alpha=alpha)
    return g


def transposed(w: Tensor) -> Tensor:
    """Transpose of a weight or of each of a group of weights."""
    return w.transpose(-1, -2)


def gram(x: Tensor, y: Tensor, groups: int) -> Tensor:
    """x^T @ y summed over time and batch: (T, B, K), (T, B, H) -> (K, H), or (G, K, H) per group
    of B/G consecutive rows when ``groups`` > 0."""
    K, H = x.size(-1), y.size(-1)
    if not groups:
        return x.reshape(-1, K).T @ y.reshape(-1, H)
    xg = x.unflatten(1, (groups, -1)).transpose(0, 1).reshape(groups, -1, K)
    yg = y.unflatten(1, (groups, -1)).transpose(0, 1).reshape(groups, -1, H)
    return torch.bmm(xg.transpose(1, 2), yg)


def gram_prev(x: Tensor, h0: Tensor, hs: Tensor, groups: int = 0) -> Tensor:
    """x^T @ [h0, hs[:-1]] summed over time and batch: (T, B, K) x -> (K, H)."""
    if groups:
        return gram(x[:1], h0.unsqueeze(0), groups) + gram(x[1:], hs[:-1], groups)
    K, H = x.size(-1), hs.size(-1)
    return torch.addmm(x[0].T @ h0, x[1:].reshape(-1, K).T, hs[:-1].reshape(-1, H))


def grad_buffer(go: Tensor | None, hs: Tensor) -> Tensor:
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


def n_groups(w: Tensor) -> int:
    """Number of weight groups of a grouped (G, ., .) matrix weight; 0 for a plain (., .) one."""
    return w.size(0) if w.dim() == 3 else 0


def one_minus_square_(x: Tensor) -> Tensor:
    """x <- 1 - x^2 in place (tanh' from tanh)."""
    return x.mul_(x).neg_().add_(1.0)


def times_one_minus_(x: Tensor, s: Tensor) -> Tensor:
    """x <- x * (1 - s) in place."""
    return x.addcmul_(x, s, value=-1.0)


SMALL_STEP_MACS = 1 << 20  # per-step matmuls smaller than this run on one CPU thread


@contextlib.contextmanager
def one_thread(x: Tensor, step_macs: int) -> Iterator[None]:
    """Run a per-step loop with one intra-op CPU thread, restoring the caller's count after.

    Element-wise kernels on a (B, H) tile are too small to be split anyway, but BLAS splits even
    a (32 x 64) @ (64 x 64) matmul over all threads, and the synchronisation then costs several
    times the product (far more on a shared, loaded machine). Larger matmuls keep the threads.
    """
    n = torch.get_num_threads()
    if x.device.type != "cpu" or n == 1 or step_macs >= SMALL_STEP_MACS:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def check_sequences(name: str, xs: dict[str, Tensor], h0: Tensor) -> None:
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


def matrix_shape(name: str, w: Tensor, h0: Tensor) -> tuple[int, ...]:
    """Expected shape of a recurrent matrix: (H, H), or (G, H, H) for G groups of B/G rows."""
    B, H = h0.shape
    if w.dim() != 3:
        return (H, H)
    if B % w.size(0):
        raise ValueError(f"{name}: {w.size(0)} weight groups do not divide the batch of {B} rows.")
    return (w.size(0), H, H)


def check_weight(name: str, k: str, w: Tensor, shape: tuple[int, ...], h0: Tensor) -> None:
    """Validate a recurrent weight's shape, dtype and device."""
    if tuple(w.shape) != shape:
        raise ValueError(f"{name}: {k} must have shape {shape} but got {tuple(w.shape)}.")
    if w.dtype != h0.dtype or w.device != h0.device:
        raise ValueError(f"{name}: {k} is {w.dtype} on {w.device} but h0 is {h0.dtype} on {h0.device}.")
