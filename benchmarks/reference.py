"""The speed yardstick: the warm-up method run the way the method's published code runs it.

    python benchmarks/reference.py --cell brc --hidden 64 --seq-len 100 --batch 32 --layers 2 --threads 2

It stands for "what a researcher runs today", so it keeps that code's structure, slow parts
included (the method itself is ``docs/method.md``; the sections named below are its sections):

- hidden states are sampled with one forward pass of the stacked network per sample, each over a
  random prefix of one sequence of the batch ("Sampling reachable hidden states");
- VAA* loops over the samples in Python, one row of distances at a time ("VAA*");
- BRC, nBRC and MGU run one time step at a time, each step a dozen small torch operations
  ("Cells"); GRU and LSTM (and chrono) run through ``nn.GRU`` / ``nn.LSTM``.

Prints one JSON line: the median time of a warm-up step drawn at schedule step 20 ("One warm-up
step": S ~ U{1..200}) over ``--reps`` steps after one untimed, and of a copy-task train step (MSE
at the last step, Adam lr 1e-3) over 2 x ``--reps`` steps after two untimed, as ``warmup_step_ms``
and ``train_step_ms``. ``benchmarks/compare.py`` runs it beside ``benchmarks/bench.py``.

It is written apart from the project on purpose: it imports nothing of ``pipeline`` (only the
sibling :mod:`flags`, for the command line), so that the project's speed is measured against code
that shares none of its tricks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flags import add_run_flags, add_shape_flags, not_positive  # noqa: E402  (a sibling script)

CELLS = ("gru", "lstm", "chrono", "mgu", "brc", "nbrc")
State = tuple[Tensor, ...]


def _xavier(rows: int, cols: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_uniform_(torch.empty(rows, cols)))


class StepwiseCell(nn.Module):
    """A BRC, nBRC or MGU layer ("Cells") that runs one time step at a time, as the published code
    does: per step, every gate's input and recurrent products and its element-wise update are
    separate small torch operations. The state is ``(h,)``.

    Parameters per gate g: ``in_<g>`` (H, I) the input weights, ``rec_<g>`` the recurrent weights
    (a vector for the BRC's element-wise recurrence, an (H, H) matrix otherwise), ``bias_<g>`` (H,).
    BRC/nBRC gates are c, a, h (h has no recurrent weights: its recurrence is a*h); MGU gates are
    f, n. Initialisation as in "Cells": xavier matrices, BRC recurrent vectors 1, biases 0.
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if kind not in ("brc", "nbrc", "mgu"):
            raise ValueError(f"StepwiseCell runs brc, nbrc or mgu but got {kind!r}")
        self.kind, self.input_size, self.hidden_size = kind, input_size, hidden_size
        H = hidden_size
        gates = ("f", "n") if kind == "mgu" else ("c", "a", "h")
        for g in gates:
            setattr(self, f"in_{g}", _xavier(H, input_size))
            setattr(self, f"bias_{g}", nn.Parameter(torch.zeros(H)))
        for g in gates[:2]:
            rec = nn.Parameter(torch.ones(H)) if kind == "brc" else _xavier(H, H)
            setattr(self, f"rec_{g}", rec)

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:
        """One time step: input ``(B, I)``, state ``(B, H)`` -> the next state ``(B, H)``."""
        if self.kind == "mgu":
            # f = sig(Wf x + Uf h + bf); n = tanh(Wh x + Uh (f*h) + bh); h' = (1-f)*h + f*n
            f = torch.sigmoid(x_t @ self.in_f.T + h @ self.rec_f.T + self.bias_f)
            n = torch.tanh(x_t @ self.in_n.T + (f * h) @ self.rec_n.T + self.bias_n)
            return (1.0 - f) * h + f * n
        if self.kind == "brc":  # element-wise recurrence: wc*h, wa*h
            rec_c, rec_a = self.rec_c * h, self.rec_a * h
        else:  # nbrc: full matrices Wc h, Wa h
            rec_c, rec_a = h @ self.rec_c.T, h @ self.rec_a.T
        # c = sig(Uc x + rec_c + bc); a = 1 + tanh(Ua x + rec_a + ba)
        c = torch.sigmoid(x_t @ self.in_c.T + rec_c + self.bias_c)
        a = 1.0 + torch.tanh(x_t @ self.in_a.T + rec_a + self.bias_a)
        # h' = c*h + (1-c)*tanh(Uh x + a*h + bh)
        return c * h + (1.0 - c) * torch.tanh(x_t @ self.in_h.T + a * h + self.bias_h)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Inputs ``(T, B, I)`` from ``state`` (zeros when None) -> every step's ``h`` ``(T, B, H)``
        and the final state ``(h,)``."""
        h = x.new_zeros(x.size(1), self.hidden_size) if state is None else state[0]
        outputs = x.new_empty(x.size(0), x.size(1), self.hidden_size)
        for t in range(x.size(0)):
            h = self.step(x[t], h)
            outputs[t] = h
        return outputs, (h,)


class LibraryCell(nn.Module):
    """A GRU or LSTM layer through ``nn.GRU`` / ``nn.LSTM``, with the state as a tuple of ``(B, H)``
    tensors: ``(h,)`` or ``(h, c)``. Initialisation as in "Cells": the GRU's input weights
    xavier-uniform and its recurrent weights orthogonal per gate block, biases 0; the LSTM torch's
    default; chrono an LSTM whose two bias vectors each get their own chrono draw."""

    def __init__(self, kind: str, input_size: int, hidden_size: int, t_max: float = 600.0) -> None:
        super().__init__()
        if kind not in ("gru", "lstm", "chrono"):
            raise ValueError(f"LibraryCell runs gru, lstm or chrono but got {kind!r}")
        self.kind, self.input_size, self.hidden_size = kind, input_size, hidden_size
        self.rnn = nn.GRU(input_size, hidden_size) if kind == "gru" else nn.LSTM(input_size, hidden_size)
        H = hidden_size
        with torch.no_grad():
            if kind == "gru":
                for blocks in self.rnn.weight_ih_l0.split(H):
                    nn.init.xavier_uniform_(blocks)
                for blocks in self.rnn.weight_hh_l0.split(H):
                    nn.init.orthogonal_(blocks)
                self.rnn.bias_ih_l0.zero_()
                self.rnn.bias_hh_l0.zero_()
            elif kind == "chrono":  # gate order i, f, g, o; one draw of u per bias vector
                for bias in (self.rnn.bias_ih_l0, self.rnn.bias_hh_l0):
                    log_u = torch.log(torch.empty(H).uniform_(1.0, t_max - 1.0))
                    bias.zero_()
                    bias[:H] = -log_u
                    bias[H:2 * H] = log_u

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Inputs ``(T, B, I)`` from ``state`` (zeros when None) -> outputs ``(T, B, H)`` and the
        final state."""
        if state is not None:
            state = tuple(s.unsqueeze(0) for s in state)  # (1, B, H): torch's layer axis
        if self.kind == "gru":
            out, h = self.rnn(x, None if state is None else state[0])
            return out, (h[0],)
        out, (h, c) = self.rnn(x, state)
        return out, (h[0], c[0])


def make_layer(kind: str, input_size: int, hidden_size: int) -> nn.Module:
    """One layer of ``kind`` (see :data:`CELLS`)."""
    if kind in ("brc", "nbrc", "mgu"):
        return StepwiseCell(kind, input_size, hidden_size)
    if kind in ("gru", "lstm", "chrono"):
        return LibraryCell(kind, input_size, hidden_size)
    raise ValueError(f"unknown cell {kind!r}; valid: {', '.join(CELLS)}")


class StackedRNN(nn.Module):
    """``num_layers`` layers of one cell kind and a linear readout of the top layer's outputs."""

    def __init__(self, kind: str, input_size: int, hidden_size: int, num_layers: int,
                 output_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            make_layer(kind, input_size if i == 0 else hidden_size, hidden_size)
            for i in range(num_layers))
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, states: Sequence[State] | None = None
                ) -> tuple[Tensor, list[State]]:
        """Inputs ``(T, B, I)`` -> readout ``(T, B, O)`` and every layer's final state."""
        finals = []
        for i, layer in enumerate(self.layers):
            x, final = layer(x, None if states is None else states[i])
            finals.append(final)
        return self.readout(x), finals


def sample_states(net: StackedRNN, x: Tensor, gen: torch.Generator | None = None) -> list[State]:
    """"Sampling reachable hidden states", one sample at a time: for each sequence i of ``x``
    ``(T, B, I)``, draw c_i ~ U{1..T} (from ``gen``, else torch's global RNG) and run the whole
    network from zeros over ``x[:c_i, i]``. Gradients flow through these passes (not detached).
    Returns every layer's states, a tuple of ``(B, H)`` tensors each."""
    per_sample = []
    for i in range(x.size(1)):
        prefix = int(torch.randint(1, x.size(0) + 1, (), generator=gen))
        _, finals = net(x[:prefix, i:i + 1])
        per_sample.append(finals)
    # per layer, per state tensor: the B samples' (1, H) states -> (B, H)
    return [tuple(torch.cat(parts) for parts in zip(*(s[layer] for s in per_sample), strict=True))
            for layer in range(len(net.layers))]


def vaa_star(h: Tensor, eps: float = 1e-4) -> Tensor:
    """"VAA*" of the ``(n, D)`` final states ``h``, one sample's row of distances at a time:
    (1/n) * sum_i 1 / sum_j (1 - relu(d_ij - eps) / (d_ij + 1e-6)), d_ij = ||tanh h_i - tanh h_j||."""
    s = torch.tanh(h)
    inverse_counts = []
    for i in range(s.size(0)):
        d = torch.linalg.vector_norm(s - s[i], dim=1)  # (n,); d_ii = 0 keeps a finite gradient
        inverse_counts.append(1.0 / (1.0 - F.relu(d - eps) / (d + 1e-6)).sum())
    return torch.stack(inverse_counts).mean()


def warmup_step(net: StackedRNN, opt: torch.optim.Optimizer, x: Tensor, k: int,
                gen: torch.Generator | None = None, target: float = 0.95) -> float:
    """"One warm-up step" k on the batch ``x`` ``(T, B, I)``: S ~ U{1..min(1 + 10k, 200)}; states
    sampled from ``x``; each layer run alone for S steps from its states on a constant input
    u_l ~ N(0, I) of its input size; loss = mean over layers of (VAA*_l - target)^2. Returns it.

    The draws come from ``gen`` (a CPU generator, for CPU runs) or, when None, from torch's global
    RNG, in this order: S, then c_i for each sample, then u_l for each layer."""
    stab = int(torch.randint(1, min(1 + 10 * k, 200) + 1, (), generator=gen))
    states = sample_states(net, x, gen)
    losses = []
    for layer, h0 in zip(net.layers, states, strict=True):
        u = torch.randn(layer.input_size, device=x.device, generator=gen)
        _, final = layer(u.expand(stab, x.size(1), -1), h0)  # the same u for every step and sample
        losses.append((vaa_star(torch.cat(final, dim=1)) - target) ** 2)
    loss = torch.stack(losses).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def train_step(net: StackedRNN, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
    """One copy-task train step: MSE of the readout at the last step against ``y`` ``(B, O)``."""
    out, _ = net(x)
    loss = F.mse_loss(out[-1], y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def make_steps(cell: str, hidden: int, seq_len: int, batch: int, layers: int,
               device: torch.device, seed: int = 0) -> tuple[Callable[[], float], Callable[[], float]]:
    """The warm-up step (at schedule step 20, Adam lr 1e-2) and the train step (Adam lr 1e-3) that
    :func:`main` times, as closures over one network on input size 1 and one ``(T, B, 1)`` batch.

    As in the published code, every draw comes from torch's global RNG, seeded once with ``seed``:
    the weights, then the batch, then each warm-up step's S, c_i and u_l. What a warm-up step costs
    depends on its draws (the prefix lengths c_i above all), so the same seed and draw order is
    what makes two implementations' medians comparable."""
    torch.manual_seed(seed)
    net = StackedRNN(cell, 1, hidden, layers, 1).to(device)
    x = torch.randn(seq_len, batch, 1, device=device)
    y = x[0].clone()  # copy-first-input
    warmup_opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    train_opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    return (lambda: warmup_step(net, warmup_opt, x, 20),
            lambda: train_step(net, train_opt, x, y))


def median_ms(fn: Callable[[], object], reps: int, untimed: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``fn`` in ms over ``reps`` calls, after ``untimed`` calls."""
    for _ in range(untimed):
        fn()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/reference.py",
                                description=__doc__.split("\n")[0])
    add_shape_flags(p, cell="gru", choices=CELLS)
    add_run_flags(p, device="cpu", threads=0, reps=5)
    p.add_argument("--seed", type=int, default=0, help="weights, batch and draws")
    a = p.parse_args(argv)
    error = not_positive(a, ("hidden", "seq_len", "batch", "layers", "reps"))
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warm, train = make_steps(a.cell, a.hidden, a.seq_len, a.batch, a.layers, device, a.seed)
    warmup_ms = median_ms(warm, a.reps, 1, sync)
    train_ms = median_ms(train, 2 * a.reps, 2, sync)
    print(json.dumps({"impl": "reference", "cell": a.cell, "hidden": a.hidden, "seq_len": a.seq_len,
                      "batch": a.batch, "layers": a.layers, "device": a.device,
                      "threads": torch.get_num_threads(),
                      "warmup_step_ms": round(warmup_ms, 2), "train_step_ms": round(train_ms, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
