"""The command-line flags that the benchmark scripts share: the benchmark shape and how it is run.

Every script in ``benchmarks/`` is run from the repository root as ``python benchmarks/<script>.py``
(with the project installed, ``pip install -e .``) and imports its siblings as top-level modules
(``from flags import add_shape_flags``). Python puts the script's folder first on ``sys.path`` when
it runs a script; each script also inserts that folder itself, so that loading one by its file path
(as the tests do) finds its siblings too.

The shape means the same in every script: a network of ``--layers`` layers of width ``--hidden`` on
input size 1, fed ``(--seq-len, --batch, 1)`` batches.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

DEVICES = ("auto", "cpu", "cuda")
"""Where a benchmark runs (``auto``: CUDA when available, else the CPU)."""

DEFAULT_CELLS = ("gru", "lstm", "mgu", "brc", "nbrc")
"""The cells the multi-cell scripts run unless told otherwise."""

SHAPE = ("hidden", "seq_len", "batch", "layers")
"""The shape flags' attribute names, in the order :func:`shape_argv` passes them on."""


def add_shape_flags(parser: argparse.ArgumentParser, *, cell: str | None = "gru",
                    cells: Sequence[str] | None = None, choices: Sequence[str] | None = None,
                    with_cell: bool = True) -> None:
    """Add ``--hidden --seq-len --batch --layers`` (defaults 64, 100, 32, 2) and the cell flag.

    Args:
        parser: the script's parser.
        cell: the default of ``--cell`` (one cell); ignored when ``cells`` is given.
        cells: given, the flag is ``--cells`` (one or more cells) with this default instead.
        choices: the valid cell names (any name when None).
        with_cell: False adds the shape alone (for scripts that know no cells).
    """
    if with_cell and cells is not None:
        parser.add_argument("--cells", nargs="+", choices=choices, default=list(cells))
    elif with_cell:
        parser.add_argument("--cell", choices=choices, default=cell)
    parser.add_argument("--hidden", type=int, default=64, help="width of every layer")
    parser.add_argument("--seq-len", type=int, default=100, help="time steps T of a batch")
    parser.add_argument("--batch", type=int, default=32, help="sequences B of a batch")
    parser.add_argument("--layers", type=int, default=2, help="stacked layers")


def add_run_flags(parser: argparse.ArgumentParser, *, device: str | None = "cpu",
                  devices: Sequence[str] = DEVICES, threads: int | None = 0,
                  reps: int | None = None, rounds: int | None = None) -> None:
    """Add the flags of how a benchmark runs; a default of None leaves that flag out.

    Args:
        parser: the script's parser.
        device: the default of ``--device``.
        devices: its valid values.
        threads: the default of ``--threads`` (torch CPU threads; 0 keeps torch's default).
        reps: the default of ``--reps`` (timed steps per run).
        rounds: the default of ``--rounds`` (alternations of the sides compared).
    """
    if device is not None:
        parser.add_argument("--device", choices=devices, default=device)
    if threads is not None:
        parser.add_argument("--threads", type=int, default=threads,
                            help="torch CPU threads (0: torch's default)")
    if reps is not None:
        parser.add_argument("--reps", type=int, default=reps, help="timed steps per run (median)")
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds,
                            help="rounds; each runs every side once, in turn")


def shape_argv(args: argparse.Namespace) -> list[str]:
    """The shape flags of ``args`` as a command line, to pass on to another script."""
    return [x for name in SHAPE for x in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]


def not_positive(args: argparse.Namespace, names: Sequence[str]) -> str | None:
    """The error message for the first of ``names`` (attributes of ``args``) below 1, or None."""
    for name in names:
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1 but got {getattr(args, name)}"
    return None
