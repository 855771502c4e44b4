"""One typed, frozen trial configuration with flat dotted keys.

The flat keys (``model.cell``, ``warmup.fraction``, ``task.seq_len``, ``seed``, ...) are the canonical
names used by search spaces, ``--set key=value``, Parquet columns and scripts. Build a
:class:`TrialConfig` once at the boundary with :meth:`TrialConfig.from_dict` (which validates every
value) and pass it down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CELLS = ("gru", "lstm", "chrono", "mgu", "brc", "nbrc")
TASKS = ("copy", "denoising", "seq_mnist", "perm_mnist", "row_mnist")
MNIST_TASKS = ("seq_mnist", "perm_mnist", "row_mnist")
DEVICES = ("auto", "cpu", "cuda")
WARMUP_UPDATES = ("all", "warm")

_CHOICES: dict[str, tuple[str, ...]] = {
    "task.name": TASKS,
    "model.cell": CELLS,
    "warmup.update": WARMUP_UPDATES,
    "warmup.pool": ("all", "train"),
    "warmup.sampling": ("passes", "replacement"),
    "task.permutation": ("reference", "seeded"),
    "task.rows": ("permuted", "image"),
    "model.chrono_draws": ("independent", "shared"),
    "device": DEVICES,
}


@dataclass(frozen=True)
class TaskConfig:
    name: str = "copy"
    """Task: copy | denoising | seq_mnist | perm_mnist | row_mnist."""
    seq_len: int = 100
    """Sequence length T of the synthetic tasks (ignored by the MNIST family, whose length is fixed)."""
    pad: int | None = None
    """Padding: denoising's final quiet stretch (default 5); MNIST's trailing zero steps (default 5,
    the reference's)."""
    train_samples: int = 60_000
    """Generated/loaded training samples, split 80/20 into train and validation."""
    test_samples: int = 10_000
    """Size of the fresh test set."""
    data_dir: str | None = None
    """Folder with the MNIST files (IDX, gzipped or not, or mnist.npz). Never downloaded."""
    permutation: str = "reference"
    """The pixel permutation of perm_mnist and row_mnist: reference (the reference code's fixed
    permutation, shipped as ``pipeline/core/data/mnist_permutation.txt``) | seeded (one drawn from
    ``perm_seed``)."""
    perm_seed: int = 0
    """Seed of the permutation when ``permutation = seeded``."""
    rows: str = "permuted"
    """The 28 inputs of each row_mnist step: permuted (28 consecutive pixels of the permuted
    sequence, as the reference builds them) | image (the image's own rows)."""


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "gru"
    """Recurrent cell: gru | lstm | chrono | mgu | brc | nbrc."""
    hidden_size: int = 256
    """Width H of each layer (warm part plus cold part)."""
    num_layers: int = 2
    """Number of stacked layers."""
    chrono_t_max: float = 600.0
    """T_max of the chrono initialisation (chrono cell only)."""
    chrono_double: bool = True
    """Set the chrono bias on both torch bias vectors, as the reference code does."""
    chrono_draws: str = "independent"
    """With ``chrono_double``: independent (a fresh u for each of the two vectors, so the effective
    forget bias is log u1 + log u2, as the reference) | shared (one u written into both: 2 log u)."""


@dataclass(frozen=True)
class WarmupConfig:
    steps: int = 100
    """Warm-up steps; 0 means no warm-up."""
    fraction: float = 1.0
    """Warm-up fraction f in [0, 1]: each layer's warm part has width round(f * H); 0 = cold network."""
    lr: float = 1e-2
    """Adam learning rate of the warm-up."""
    batch_size: int = 32
    """Training inputs per warm-up step from which hidden states are sampled."""
    target: float = 0.95
    """Regression target of VAA* per layer."""
    eps: float = 1e-4
    """Distance tolerance of VAA*."""
    increment: int = 10
    """The stabilisation-length bound grows by this much per step: S ~ U{1..min(1 + increment*k, cap)}."""
    max_stabilization: int = 200
    """Cap on the stabilisation length S."""
    update: str = "all"
    """Parameters the warm-up may change: all (reference) | warm (warm parts only)."""
    detach_prefix: bool = False
    """Detach the sampled hidden states (no gradient through the prefix pass)."""
    pool: str = "all"
    """The inputs warm-up minibatches are drawn from: all (every generated training input, before
    the 80/20 split, as the reference) | train (the training part only)."""
    sampling: str = "passes"
    """How: passes (without replacement: each pass a fresh permutation of the pool cut into
    consecutive batches, the last one of a pass smaller, as the reference) | replacement."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    """Training epochs."""
    batch_size: int = 32
    """Minibatch size."""
    lr: float = 1e-3
    """Adam learning rate (a fresh optimiser; the warm-up's state is discarded)."""
    clip: float = 0.0
    """Gradient-norm clipping threshold; 0 disables clipping (the reference default)."""
    divergence_threshold: float = 1e6
    """A training or validation loss above this (or NaN/Inf) ends the trial as diverged. Chance
    level is ~1 (MSE) or ~2.3 (cross-entropy), so 1e6 only catches a blown-up optimisation."""


@dataclass(frozen=True)
class VaaConfig:
    steps: int = 10_000
    """Stabilisation steps S of the exact VAA measurement."""
    samples: int = 32
    """Sampled hidden states n per estimate of the exact VAA (the reference: one batch of 32)."""
    estimates: int = 10
    """Independent estimates averaged per exact-VAA measurement (the reference: 10)."""
    eps: float = 1e-4
    """Distance tolerance of the exact VAA."""
    every: int = 1
    """Measure the exact VAA every this many epochs (0: only before and after warm-up)."""


@dataclass(frozen=True)
class TrialConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vaa: VaaConfig = field(default_factory=VaaConfig)
    seed: int = 0
    """Seed of everything random in the trial (weights, data, warm-up draws)."""
    replicas: int = 1
    """Seeds trained at once in one trial: seed, seed + 1, ..., seed + replicas - 1."""
    device: str = "auto"
    """auto (CUDA when available) | cpu | cuda."""

    # ----------------------------------------------------------------------------- flat keys
    @classmethod
    def keys(cls) -> list[str]:
        """All canonical flat keys, in declaration order."""
        return list(_FIELDS)

    @classmethod
    def from_dict(cls, flat: Mapping[str, Any] | None = None) -> TrialConfig:
        """Build and validate a config from flat dotted keys; missing keys take their defaults.

        Raises:
            ValueError: on an unknown key or a bad value, naming the key and what is accepted.
        """
        flat = dict(flat or {})
        unknown = sorted(k for k in flat if k not in _FIELDS)
        if unknown:
            raise ValueError(unknown_key(unknown[0]))
        sections: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in flat.items():
            value = coerce(key, value)
            if "." in key:
                sec, name = key.split(".", 1)
                sections.setdefault(sec, {})[name] = value
            else:
                top[key] = value
        kwargs = {sec: _SECTIONS[sec](**vals) for sec, vals in sections.items()}
        cfg = cls(**kwargs, **top)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The flat dotted-key form (inverse of :meth:`from_dict`)."""
        out: dict[str, Any] = {}
        for key in _FIELDS:
            obj: Any = self
            for part in key.split("."):
                obj = getattr(obj, part)
            out[key] = obj
        return out

    def replace(self, **flat: Any) -> TrialConfig:
        """A copy with some flat keys changed (use ``**{"model.cell": "lstm"}``)."""
        return TrialConfig.from_dict({**self.to_dict(), **flat})

    # ----------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ValueError naming the first bad value."""
        d = self.to_dict()
        for key, choices in _CHOICES.items():
            if d[key] not in choices:
                raise ValueError(f"{key}={d[key]!r} is not one of {', '.join(choices)}")
        positive = ["task.seq_len", "task.train_samples", "task.test_samples", "model.hidden_size",
                    "model.num_layers", "warmup.batch_size", "warmup.max_stabilization",
                    "train.batch_size", "vaa.steps", "vaa.samples", "vaa.estimates", "replicas"]
        for key in positive:
            if d[key] < 1:
                raise ValueError(f"{key} must be >= 1 but got {d[key]!r}")
        for key in ["warmup.steps", "warmup.increment", "train.epochs", "vaa.every", "seed"]:
            if d[key] < 0:
                raise ValueError(f"{key} must be >= 0 but got {d[key]!r}")
        for key in ["warmup.lr", "warmup.eps", "train.lr", "vaa.eps", "train.divergence_threshold"]:
            if not (d[key] > 0 and math.isfinite(d[key])):
                raise ValueError(f"{key} must be a finite number > 0 but got {d[key]!r}")
        if not 0.0 <= d["warmup.fraction"] <= 1.0:
            raise ValueError(f"warmup.fraction must be in [0, 1] but got {d['warmup.fraction']!r}")
        if not (d["train.clip"] >= 0 and math.isfinite(d["train.clip"])):
            raise ValueError(f"train.clip must be >= 0 (0 = off) but got {d['train.clip']!r}")
        if not math.isfinite(d["warmup.target"]):
            raise ValueError(f"warmup.target must be finite but got {d['warmup.target']!r}")
        if d["task.pad"] is not None and d["task.pad"] < 0:
            raise ValueError(f"task.pad must be >= 0 but got {d['task.pad']!r}")
        if self.task.name == "denoising" and self.pad < 5:
            raise ValueError(f"task.pad={self.pad} is too short for denoising: its 5 marks must lie "
                             f"before the -1 marker at T-5, so pad must be >= 5")
        if self.task.name == "denoising" and self.task.seq_len < self.pad + 5 + 1:
            raise ValueError(
                f"task.seq_len={self.task.seq_len} is too short for denoising with pad={self.pad}: "
                f"needs at least pad + 6")
        if self.task.train_samples < 5:
            raise ValueError(f"task.train_samples must be >= 5 (80/20 split) but got "
                             f"{self.task.train_samples}")
        if not (self.model.chrono_t_max > 2 and math.isfinite(self.model.chrono_t_max)):
            raise ValueError(f"model.chrono_t_max must be a finite number > 2 but got "
                             f"{self.model.chrono_t_max!r}")

    # ----------------------------------------------------------------------------- derived
    @property
    def pad(self) -> int:
        """Padding length with the task's default filled in."""
        if self.task.pad is not None:
            return self.task.pad
        if self.task.name == "denoising" or self.task.name in MNIST_TASKS:
            return 5  # denoising's quiet stretch; MNIST's trailing zeros (the reference's P = 5)
        return 0

    @property
    def warm_width(self) -> int:
        """Width round(f * H) of each layer's warm part."""
        return int(round(self.warmup.fraction * self.model.hidden_size))

    @property
    def warms_up(self) -> bool:
        """Whether a warm-up runs at all (steps > 0 and a non-empty warm part)."""
        return self.warmup.steps > 0 and self.warm_width > 0


_SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else eval(f.type)  # noqa: S307 - own annotations
    for f in dataclasses.fields(TrialConfig)
    if f.name in ("task", "model", "warmup", "train", "vaa")
}


def _field_types() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TrialConfig):
        if f.name in _SECTIONS:
            hints = typing.get_type_hints(_SECTIONS[f.name])
            for sub in dataclasses.fields(_SECTIONS[f.name]):
                out[f"{f.name}.{sub.name}"] = hints[sub.name]
        else:
            out[f.name] = typing.get_type_hints(TrialConfig)[f.name]
    return out


_FIELDS: dict[str, Any] = _field_types()


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(key: str) -> str:
    """The message for an unknown config key: the closest key, else where they are listed."""
    hint = did_you_mean(key, list(_FIELDS))
    return (f"unknown config key {key!r}{hint}" if hint else
            f"unknown config key {key!r}; the keys are listed in pipeline/core/config.py")


def field_type(key: str) -> type:
    """The scalar Python type of a flat key (int, float, bool or str), Optional stripped."""
    t = _FIELDS[key]
    if isinstance(t, types.UnionType):
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def is_optional(key: str) -> bool:
    t = _FIELDS[key]
    return isinstance(t, types.UnionType) and type(None) in typing.get_args(t)


def coerce(key: str, value: Any) -> Any:
    """Convert ``value`` (possibly a string from the command line) to the type of ``key``.

    Raises:
        ValueError: naming the key, the value and the expected type.
    """
    if key not in _FIELDS:
        raise ValueError(unknown_key(key))
    t = field_type(key)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if is_optional(key):
            return None
        raise ValueError(f"{key} needs a {t.__name__} value but got {value!r}")
    try:
        if t is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError
        if t is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return _bounded(key, int(value))
            if isinstance(value, str):
                text = value.strip()
                with contextlib.suppress(ValueError):
                    return _bounded(key, int(text))  # exact, however long (a range error raises)
                f = float(text)
                if not f.is_integer():
                    raise ValueError
                return _bounded(key, int(f))
            return _bounded(key, int(value))
        if t is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if t is str:
            if not isinstance(value, str):
                raise ValueError
            return value.strip()
    except _OutOfRange:
        raise
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        raise AssertionError(f"unhandled type {t} of {key}")
    raise ValueError(f"{key} needs a {t.__name__} value but got {value!r}")


INT_MAX = 2**63 - 1
"""Every integer key fits the int64 columns of the results tables."""
SEED_MAX = 2**62
"""Seeds stay below this, so that a seed plus its offsets (replicas, measurements) still fits the
64-bit seeds of torch and numpy."""


class _OutOfRange(ValueError):
    pass


def _bounded(key: str, value: int) -> int:
    limit = SEED_MAX if key == "seed" else INT_MAX
    if not -INT_MAX - 1 <= value <= limit:
        shown = f"{value:.3g}" if abs(value) >= 10**15 else str(value)
        raise _OutOfRange(f"{key}={shown} is out of range (at most {limit})")
    return value


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings (``--set``) into a flat dict of typed values.

    Raises:
        ValueError: on a malformed item, an unknown key or a value of the wrong type.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value but got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        out[key] = coerce(key, value)
    return out
