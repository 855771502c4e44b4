"""The parallel network (docs/method.md, "The parallel network and the warm-up fraction f").

Each layer of width H is two cells of the same type on the same input: a warm part of width
round(f * H) and a cold part with the rest; their outputs and states are concatenated (warm columns
first). Layers stack; one linear readout is applied at the scored (final) time steps.
f = 1 is the fully warmed network, f = 0 a plain cold network, f = 0.5 the reference "double" one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from pipeline.core.cells import Cell, State, make_cell, run_group
from pipeline.core.config import ModelConfig


class ParallelLayer(nn.Module):
    """A warm cell of width ``warm_width`` beside a cold cell of width ``H - warm_width``."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, warm_width: int,
                 **cell_kwargs: float | bool) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.warm_width = warm_width
        cold_width = hidden_size - warm_width
        self.warm: Cell | None = (make_cell(cell, input_size, warm_width, **cell_kwargs)
                                  if warm_width > 0 else None)
        self.cold: Cell | None = (make_cell(cell, input_size, cold_width, **cell_kwargs)
                                  if cold_width > 0 else None)
        self.n_state = (self.warm or self.cold).n_state

    def parts(self) -> Iterator[tuple[Cell, slice]]:
        """The non-empty parts with the columns of the layer state they own."""
        if self.warm is not None:
            yield self.warm, slice(0, self.warm_width)
        if self.cold is not None:
            yield self.cold, slice(self.warm_width, self.hidden_size)

    def forward_states(self, x: Tensor, state: State | None = None) -> State:
        """Every step's state, tuple of ``(T, B, H)`` (first component = output sequence)."""
        per_part = [cell.forward_states(x, None if state is None else
                                        tuple(s[:, cols] for s in state))
                    for cell, cols in self.parts()]
        if len(per_part) == 1:
            return per_part[0]
        return tuple(torch.cat(comps, dim=-1) for comps in zip(*per_part, strict=True))

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        outs = [cell(x, None if state is None else tuple(s[:, cols] for s in state))
                for cell, cols in self.parts()]
        if len(outs) == 1:
            return outs[0]
        y = torch.cat([o[0] for o in outs], dim=-1)
        final = tuple(torch.cat(comps, dim=-1) for comps in zip(*[o[1] for o in outs], strict=True))
        return y, final


class ParallelNet(nn.Module):
    """Stacked :class:`ParallelLayer` s and a linear readout."""

    def __init__(self, cfg: ModelConfig, input_size: int, output_size: int, warm_width: int) -> None:
        super().__init__()
        H = cfg.hidden_size
        if not 0 <= warm_width <= H:
            raise ValueError(f"warm width must be in [0, {H}] but got {warm_width}")
        kwargs = {"chrono_t_max": cfg.chrono_t_max, "chrono_double": cfg.chrono_double,
                  "chrono_draws": cfg.chrono_draws}
        self.layers = nn.ModuleList(
            ParallelLayer(cfg.cell, input_size if i == 0 else H, H, warm_width, **kwargs)
            for i in range(cfg.num_layers))
        self.readout = nn.Linear(H, output_size)
        self.input_size = input_size
        self.hidden_size = H
        self.warm_width = warm_width

    def forward(self, x: Tensor, out_steps: int = 1) -> Tensor:
        """Readout at the last ``out_steps`` steps: ``(T, B, I) -> (out_steps, B, O)``."""
        for layer in self.layers:
            x, _ = layer(x)
        return self.readout(x[-out_steps:])

    def run(self, x: Tensor, states: list[State] | None = None) -> tuple[Tensor, list[State]]:
        """Run the whole stack from ``states`` (one per layer; None = zeros): top output and finals."""
        finals = []
        for i, layer in enumerate(self.layers):
            x, s = layer(x, None if states is None else states[i])
            finals.append(s)
        return x, finals

    def warm_parameters(self) -> list[nn.Parameter]:
        """Parameters of the warm parts only (``warmup.update=warm``)."""
        return [p for layer in self.layers if layer.warm is not None
                for p in layer.warm.parameters()]

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def layer_states_group(layers: Sequence[ParallelLayer], xs: Sequence[Tensor],
                       states: Sequence[State | None] | None = None, *, outputs_only: bool = False
                       ) -> list[State]:
    """``layer.forward_states(x, state)`` for each layer (e.g. one per seed replica), with the warm
    parts of all layers run as one grouped scan and the cold parts as another (see
    :func:`pipeline.core.cells.run_group`).

    Returns:
        One tuple of ``(T, B, H)`` tensors per layer.
    """
    states = [None] * len(layers) if states is None else list(states)
    per_part: list[list[State]] = []
    for cells_cols in zip(*(list(layer.parts()) for layer in layers), strict=True):
        cols = cells_cols[0][1]
        per_part.append(run_group([c for c, _ in cells_cols], xs,
                                  [None if s is None else tuple(t[:, cols] for t in s) for s in states],
                                  outputs_only=outputs_only))
    if len(per_part) == 1:
        return per_part[0]
    return [tuple(torch.cat(comps, dim=-1) for comps in zip(*parts, strict=True))
            for parts in zip(*per_part, strict=True)]


def forward_group(nets: Sequence[ParallelNet], xs: Sequence[Tensor], out_steps: int = 1) -> list[Tensor]:
    """``net(x, out_steps)`` for each (net, x) of networks of one configuration (seed replicas),
    layer by layer with each layer's parts of all networks grouped."""
    xs = list(xs)
    for layers in zip(*(net.layers for net in nets), strict=True):
        xs = [seqs[0] for seqs in layer_states_group(layers, xs, outputs_only=True)]
    return [net.readout(x[-out_steps:]) for net, x in zip(nets, xs, strict=True)]


def build_model(cfg: ModelConfig, input_size: int, output_size: int, warm_width: int) -> ParallelNet:
    """The parallel network for a task's input/output sizes."""
    return ParallelNet(cfg, input_size, output_size, warm_width)
