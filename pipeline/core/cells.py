"""Recurrent cells behind one interface (docs/method.md, "Cells").

Every cell maps a time-major input ``x`` of shape ``(T, B, I)`` and an optional state (a tuple of
``(B, H)`` tensors: ``(h,)`` or ``(h, c)``) to the output sequence ``(T, B, H)`` and the final state.
``forward_states`` returns every step's state instead (one ``(T, B, H)`` tensor per state component),
which hidden-state sampling needs; ``final_state`` the final state alone, which the warm-up's
stabilisation runs need (its backward then starts from the final state's gradients only). The
input projections of all time steps are one matmul; BRC, nBRC and MGU then run their recurrence
through :mod:`pipeline.core.scans.custom`, GRU and LSTM through :mod:`pipeline.core.scans.standard`
where it runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pipeline.core.scans import custom, native, standard

State = tuple[Tensor, ...]


class Cell(nn.Module):
    """Common interface. Subclasses implement :meth:`_states`."""

    n_state: int = 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size

    def zero_state(self, batch: int, like: Tensor) -> State:
        z = like.new_zeros(batch, self.hidden_size)
        return tuple(z for _ in range(self.n_state))

    def forward_states(self, x: Tensor, state: State | None = None) -> State:
        """Every step's state: a tuple of ``(T, B, H)`` tensors (the first one is the output)."""
        return self._states(x, state, final_only=False)

    def final_state(self, x: Tensor, state: State | None = None) -> State:
        """The final state alone, a tuple of ``(B, H)`` tensors, with gradients. The scans return
        just those, so the backward builds no ``(T, B, H)`` gradients of zeros for the other steps."""
        return self._states(x, state, final_only=True)

    def _states(self, x: Tensor, state: State | None, final_only: bool) -> State:
        """:meth:`forward_states`, or with ``final_only`` its last step."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Output sequence ``(T, B, H)`` and final state (tuple of ``(B, H)``)."""
        seqs = self.forward_states(x, state)
        return seqs[0], tuple(s[-1] for s in seqs)

    group_on_cpu: bool = False
    """Whether grouping pays on a CPU running the torch code (no native kernels); on GPUs, where a
    step is launch-bound, it always does. Measured on 2 cores (BENCHMARKS.md): yes for the GRU; no
    for the LSTM (oneDNN one cell at a time beats a grouped per-step loop) nor the BRC family (a
    G-times-taller batch is no faster). With the native kernels (:mod:`pipeline.core.scans.native`) one cell
    at a time is faster for every cell: each scan is one C call either way, and grouping only adds
    the stacking of inputs, weights and outputs."""

    @classmethod
    def groups_well(cls, device: torch.device) -> bool:
        """Whether several cells of this class run faster as one grouped scan on ``device``."""
        has_scan = cls.group_states.__func__ is not Cell.group_states.__func__  # type: ignore[attr-defined]
        if device.type == "cpu":
            return has_scan and cls.group_on_cpu and native.kernels() is None
        return has_scan

    @classmethod
    def group_states(cls, cells: Sequence[Cell], xs: Sequence[Tensor], states: Sequence[State]
                     ) -> list[State]:
        """Every step's state of each cell on its own input, as one grouped scan."""
        raise NotImplementedError


def _block_init(weight: Tensor, blocks: int, init) -> None:
    """Apply ``init`` to each of ``blocks`` row blocks of ``weight`` (one gate each)."""
    with torch.no_grad():
        for chunk in weight.chunk(blocks, dim=0):
            init(chunk)


class GRU(Cell):
    """Standard GRU (cuDNN/oneDNN): xavier input weights and orthogonal recurrent weights per gate
    block, zero biases (the reference initialisation, not torch's)."""

    group_on_cpu = True

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.rnn = nn.GRU(input_size, hidden_size)
        _block_init(self.rnn.weight_ih_l0, 3, nn.init.xavier_uniform_)
        _block_init(self.rnn.weight_hh_l0, 3, nn.init.orthogonal_)
        nn.init.zeros_(self.rnn.bias_ih_l0)
        nn.init.zeros_(self.rnn.bias_hh_l0)

    def _scan(self, x: Tensor, state: State | None, final_only: bool = False) -> Tensor:
        """The fused scan (CPU): input projections in one matmul, then :func:`standard.gru_scan`."""
        r = self.rnn
        h0 = self.zero_state(x.size(1), x)[0] if state is None else state[0]
        xp = _project(x, r.weight_ih_l0, r.bias_ih_l0).unsqueeze(1)  # (T, 1, B, 3H)
        return standard.gru_scan(xp, r.weight_hh_l0.T.unsqueeze(0), r.bias_hh_l0.unsqueeze(0),
                                    h0.unsqueeze(0), final_only=final_only).squeeze(-3)

    def _states(self, x: Tensor, state: State | None, final_only: bool) -> State:
        if x.device.type == "cpu":
            return (self._scan(x, state, final_only),)
        h0 = None if state is None else state[0].unsqueeze(0).contiguous()
        y, h = self.rnn(x, h0)  # (T, B, H), (1, B, H)
        return (h[0],) if final_only else (y,)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if x.device.type == "cpu":
            y = self._scan(x, state)
            return y, (y[-1],)
        h0 = None if state is None else state[0].unsqueeze(0).contiguous()
        y, h = self.rnn(x, h0)
        return y, (h[0],)

    @classmethod
    def group_states(cls, cells: Sequence[Cell], xs: Sequence[Tensor], states: Sequence[State]
                     ) -> list[State]:
        rs = [c.rnn for c in cells]  # type: ignore[union-attr]
        X = _stack_projections([(x, r.weight_ih_l0, r.bias_ih_l0) for x, r in zip(xs, rs, strict=True)])
        hs = standard.gru_scan(X, torch.stack([r.weight_hh_l0.T for r in rs]),
                                  torch.stack([r.bias_hh_l0 for r in rs]),
                                  torch.stack([s[0] for s in states]))
        return [(h,) for h in hs.unbind(1)]  # (its backward stacks, with no zero-filled buffers)


class LSTM(Cell):
    """Standard LSTM with torch's default initialisation; state ``(h, c)``.

    Where the native kernels run (float32 on a CPU, :mod:`pipeline.core.scans.native`), everything
    goes through the scan (:func:`pipeline.core.scans.standard.lstm_scan`), which gives every step's
    cell state as well. Otherwise the output sequence comes from the library kernel (cuDNN, oneDNN)
    and the cell state of every step (needed to sample LSTM states) is recomputed from it: with
    ``h_{t-1}`` known for all t, the gates of all steps are one matmul and
    ``c_t = f_t * c_{t-1} + i_t * g_t`` is an element-wise scan. This is the same function of the
    parameters, so its gradients are exact.
    """

    n_state = 2

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.rnn = nn.LSTM(input_size, hidden_size)

    @staticmethod
    def _native(x: Tensor) -> bool:
        """Whether the fused scan with native step kernels runs this input (float32 on a CPU with
        the kernels built): then it replaces oneDNN, being faster and giving every cell state."""
        return native.usable(x)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if self._native(x):
            hs, cs = self.forward_states(x, state)
            return hs, (hs[-1], cs[-1])
        hc = None if state is None else tuple(s.unsqueeze(0).contiguous() for s in state)
        y, (h, c) = self.rnn(x, hc)
        return y, (h[0], c[0])

    def _states(self, x: Tensor, state: State | None, final_only: bool) -> State:
        state = self.zero_state(x.size(1), x) if state is None else state
        if self._native(x):  # one scan in torch's gate order, the native kernels' own
            r = self.rnn
            X = _project(x, r.weight_ih_l0, r.bias_ih_l0 + r.bias_hh_l0).unsqueeze(1)  # (T, 1, B, 4H)
            hc = standard.lstm_scan(X, r.weight_hh_l0.T.unsqueeze(0), state[0].unsqueeze(0),
                                       state[1].unsqueeze(0), order="ifgo", final_only=final_only)
            return tuple(s.squeeze(-3) for s in hc)
        if final_only:
            return self.forward(x, state)[1]
        y, _ = self.forward(x, state)  # (T, B, H)
        r, H = self.rnn, self.hidden_size
        T, B, I = x.shape
        h_prev = torch.cat([state[0].unsqueeze(0), y[:-1]], dim=0)  # (T, B, H)
        # gates i, f, g (torch order; o is not needed) of all steps in one matmul over [x, h_prev]
        w = torch.cat([r.weight_ih_l0[:3 * H], r.weight_hh_l0[:3 * H]], dim=1)  # (3H, I + H)
        gates = torch.addmm(r.bias_ih_l0[:3 * H] + r.bias_hh_l0[:3 * H],
                            torch.cat([x, h_prev], dim=-1).view(T * B, I + H), w.T).view(T, B, 3 * H)
        i_f = gates[..., :2 * H].sigmoid()
        cs = standard.linear_scan(i_f[..., H:], i_f[..., :H] * gates[..., 2 * H:].tanh(), state[1])
        return (y, cs)

    @classmethod
    def group_states(cls, cells: Sequence[Cell], xs: Sequence[Tensor], states: Sequence[State]
                     ) -> list[State]:
        rs = [c.rnn for c in cells]  # type: ignore[union-attr]
        if native.usable(xs[0]):  # the native kernels take torch's gate order
            order, perm = "ifgo", slice(None)
        else:
            order, perm = "oifg", standard.lstm_gate_order(cells[0].hidden_size, xs[0].device)
        X = _stack_projections([(x, r.weight_ih_l0[perm], (r.bias_ih_l0 + r.bias_hh_l0)[perm])
                                for x, r in zip(xs, rs, strict=True)])
        hs, cs = standard.lstm_scan(X, torch.stack([r.weight_hh_l0[perm].T for r in rs]),
                                       torch.stack([s[0] for s in states]),
                                       torch.stack([s[1] for s in states]), order=order)
        return list(zip(hs.unbind(1), cs.unbind(1), strict=True))


class Chrono(LSTM):
    """LSTM with the chrono initialisation: forget bias log(u), input bias -log(u),
    u ~ U[1, T_max - 1]; by default set on both torch bias vectors with an independent u for each
    (an effective forget bias log u1 + log u2), as the reference code does; ``draws = "shared"``
    writes one u into both (2 log u)."""

    def __init__(self, input_size: int, hidden_size: int, *, t_max: float = 600.0,
                 double: bool = True, draws: str = "independent") -> None:
        super().__init__(input_size, hidden_size)
        H = hidden_size
        with torch.no_grad():
            u = torch.empty(H).uniform_(1.0, t_max - 1.0)
            for k, bias in enumerate((self.rnn.bias_ih_l0, self.rnn.bias_hh_l0)):
                bias.zero_()
                if k == 1 and not double:
                    continue
                if k == 1 and draws == "independent":  # the reference draws u again
                    u = torch.empty(H).uniform_(1.0, t_max - 1.0)
                bias[H:2 * H] = torch.log(u)  # forget gate
                bias[0:H] = -torch.log(u)  # input gate


class MGU(Cell):
    """Minimal gated unit: f = sig(Wf x + Uf h + bf); n = tanh(Wh x + Uh (f*h) + bh);
    h' = (1-f)*h + f*n. Xavier weights, zero biases."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        H = hidden_size
        self.weight_x = nn.Parameter(torch.empty(2 * H, input_size))
        self.bias = nn.Parameter(torch.zeros(2 * H))
        self.weight_f = nn.Parameter(torch.empty(H, H))
        self.weight_n = nn.Parameter(torch.empty(H, H))
        _block_init(self.weight_x, 2, nn.init.xavier_uniform_)
        nn.init.xavier_uniform_(self.weight_f)
        nn.init.xavier_uniform_(self.weight_n)

    def _states(self, x: Tensor, state: State | None, final_only: bool) -> State:
        h0 = self.zero_state(x.size(1), x)[0] if state is None else state[0]
        xf, xn = _project(x, self.weight_x, self.bias).chunk(2, dim=-1)  # (T, B, H) each
        return (custom.mgu_scan(xf, xn, self.weight_f, self.weight_n, h0, final_only=final_only),)

    @classmethod
    def group_states(cls, cells: Sequence[Cell], xs: Sequence[Tensor], states: Sequence[State]
                     ) -> list[State]:
        return _side_by_side(cells, xs, states, custom.mgu_scan, 2, ("weight_f", "weight_n"))


class BRC(Cell):
    """Bistable recurrent cell: c = sig(Uc x + wc*h + bc); a = 1 + tanh(Ua x + wa*h + ba);
    h' = c*h + (1-c)*tanh(Uh x + a*h + bh). U xavier, wc = wa = 1, zero biases."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        H = hidden_size
        self.weight_x = nn.Parameter(torch.empty(3 * H, input_size))
        self.bias = nn.Parameter(torch.zeros(3 * H))
        self.w_c = nn.Parameter(torch.ones(H))
        self.w_a = nn.Parameter(torch.ones(H))
        _block_init(self.weight_x, 3, nn.init.xavier_uniform_)

    def _states(self, x: Tensor, state: State | None, final_only: bool) -> State:
        h0 = self.zero_state(x.size(1), x)[0] if state is None else state[0]
        xc, xa, xh = _project(x, self.weight_x, self.bias).chunk(3, dim=-1)
        return (custom.brc_scan(xc, xa, xh, self.w_c, self.w_a, h0, final_only=final_only),)

    @classmethod
    def group_states(cls, cells: Sequence[Cell], xs: Sequence[Tensor], states: Sequence[State]
                     ) -> list[State]:
        return _side_by_side(cells, xs, states, custom.brc_scan, 3, ("w_c", "w_a"), per_row=True)


class NBRC(Cell):
    """Neuromodulated BRC: as BRC with wc*h -> Wc h and wa*h -> Wa h (full matrices). Xavier
    weights, zero biases."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        H = hidden_size
        self.weight_x = nn.Parameter(torch.empty(3 * H, input_size))
        self.bias = nn.Parameter(torch.zeros(3 * H))
        self.weight_c = nn.Parameter(torch.empty(H, H))
        self.weight_a = nn.Parameter(torch.empty(H, H))
        _block_init(self.weight_x, 3, nn.init.xavier_uniform_)
        nn.init.xavier_uniform_(self.weight_c)
        nn.init.xavier_uniform_(self.weight_a)

    def _states(self, x: Tensor, state: State | None, final_only: bool) -> State:
        h0 = self.zero_state(x.size(1), x)[0] if state is None else state[0]
        xc, xa, xh = _project(x, self.weight_x, self.bias).chunk(3, dim=-1)
        return (custom.nbrc_scan(xc, xa, xh, self.weight_c, self.weight_a, h0, final_only=final_only),)

    @classmethod
    def group_states(cls, cells: Sequence[Cell], xs: Sequence[Tensor], states: Sequence[State]
                     ) -> list[State]:
        return _side_by_side(cells, xs, states, custom.nbrc_scan, 3, ("weight_c", "weight_a"))


def _project(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Input projections of all time steps in one matmul: ``(T, B, I) -> (T, B, kH)``.

    A time-constant input (stride 0 along T, as in the warm-up's stabilisation) is projected once
    and expanded back, so it costs one step instead of T.
    """
    if x.size(0) > 1 and x.stride(0) == 0:
        return torch.nn.functional.linear(x[:1], weight, bias).expand(x.size(0), -1, -1)
    return torch.nn.functional.linear(x, weight, bias)


def _stack_projections(items: Sequence[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
    """Each cell's input projection, stacked into ``(T, G, B, kH)``.

    When every input is constant in time (the stabilisation), one step is stacked and expanded.
    """
    T = items[0][0].size(0)
    if T > 1 and all(x.stride(0) == 0 for x, _, _ in items):
        # one step projected, then expanded (a slice of an expanded projection would cost its
        # backward a (T, B, kH) buffer of zeros)
        one = [torch.nn.functional.linear(x[:1], w, b) for x, w, b in items]
        return torch.stack(one, dim=1).expand(T, -1, -1, -1)
    return torch.stack([_project(x, w, b) for x, w, b in items], dim=1)


def _side_by_side(cells: Sequence[Cell], xs: Sequence[Tensor], states: Sequence[State], scan,
                  n_inputs: int, weights: tuple[str, ...], *, per_row: bool = False) -> list[State]:
    """Grouped states of BRC-family cells, side by side in one batch of G x B rows.

    Each block of B rows uses its own cell's recurrent weights: stacked ``(G, ...)`` matrices (one
    batched matmul a step), or with ``per_row`` vector weights repeated for every row of the block.

    Args:
        scan: the fused scan, ``scan(*inputs, *weights, h0)``.
        n_inputs: number of input projections (gate blocks of the cells' ``weight_x``).
        weights: names of the recurrent weights, in the scan's order.
    """
    G, (T, B, _) = len(cells), xs[0].shape
    X = _stack_projections([(x, c.weight_x, c.bias) for x, c in zip(xs, cells, strict=True)])
    parts = X.reshape(T, G * B, -1).chunk(n_inputs, dim=-1)
    ws = [torch.stack([getattr(c, name) for c in cells]) for name in weights]
    if per_row:
        ws = [w.unsqueeze(1).expand(G, B, -1).reshape(G * B, -1) for w in ws]
    hs = scan(*parts, *ws, torch.cat([s[0] for s in states]))  # (T, G B, H)
    return [(h,) for h in hs.split(B, dim=1)]


def run_group(cells: Sequence[Cell], xs: Sequence[Tensor], states: Sequence[State | None] | None = None,
              *, outputs_only: bool = False) -> list[State]:
    """``cell.forward_states(x, state)`` for every (cell, x, state), as one grouped scan when the
    cells are of one class and width, their inputs of one shape, and grouping pays on the device;
    else one cell at a time. Each cell keeps its own parameters (gradients flow to each).

    Args:
        cells: the cells (e.g. one layer's warm part of each seed replica, or of every layer).
        xs: their inputs, ``(T, B, I_g)`` each (the input sizes may differ).
        states: their initial states (None: zeros).
        outputs_only: only the output sequence is needed (a cell run alone then skips the
            per-step work for its other state components).

    Returns:
        One tuple of ``(T, B, H)`` tensors per cell, as :meth:`Cell.forward_states` returns (with
        ``outputs_only``, possibly only its first element).
    """
    states = [None] * len(cells) if states is None else list(states)
    first = cells[0]
    if (len(cells) > 1 and all(type(c) is type(first) and c.hidden_size == first.hidden_size
                               for c in cells)
            and len({(x.shape[0], x.shape[1], x.device, x.dtype) for x in xs}) == 1
            and type(first).groups_well(xs[0].device)):
        full = [c.zero_state(x.size(1), x) if s is None else s
                for c, x, s in zip(cells, xs, states, strict=True)]
        return type(first).group_states(cells, xs, full)
    if outputs_only:
        return [(c(x, s)[0],) for c, x, s in zip(cells, xs, states, strict=True)]
    return [c.forward_states(x, s) for c, x, s in zip(cells, xs, states, strict=True)]


def make_cell(name: str, input_size: int, hidden_size: int, *, chrono_t_max: float = 600.0,
              chrono_double: bool = True, chrono_draws: str = "independent") -> Cell:
    """Build a cell by name (gru | lstm | chrono | mgu | brc | nbrc)."""
    if name == "chrono":
        return Chrono(input_size, hidden_size, t_max=chrono_t_max, double=chrono_double,
                      draws=chrono_draws)
    classes = {"gru": GRU, "lstm": LSTM, "mgu": MGU, "brc": BRC, "nbrc": NBRC}
    if name not in classes:
        raise ValueError(f"unknown cell {name!r}; valid cells: gru, lstm, chrono, mgu, brc, nbrc")
    return classes[name](input_size, hidden_size)

