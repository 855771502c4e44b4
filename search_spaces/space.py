"""A named sweep as data: scientific, nuisance and fixed parameters, a metric and budgets.

Roles follow the deep-learning tuning playbook:

- **scientific** parameters are what the sweep measures the effect of. They are crossed into a grid;
  every combination is one *scientific point* (after :class:`Inactive` rules drop combinations that
  differ only in an irrelevant parameter).
- **nuisance** parameters must be tuned afresh at each point for the comparison to be fair. The sweep
  keeps one Optuna study per point, and only that study's trials are compared when pruning.
- **fixed** parameters hold for every trial (the reference protocol).

Every key is a canonical flat config key (:meth:`pipeline.core.config.TrialConfig.keys`). Nothing here
imports Ray, Optuna or torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.config import TrialConfig, coerce

__all__ = ["Choice", "Distribution", "Inactive", "LogUniform", "SearchSpace", "Smoke", "Uniform",
           "estimate_core_hours", "point_key"]


@dataclass(frozen=True)
class LogUniform:
    """A float drawn log-uniformly from ``[low, high]``."""

    low: float
    high: float


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from ``[low, high]``."""

    low: float
    high: float


@dataclass(frozen=True)
class Choice:
    """One of a few discrete values."""

    values: tuple[Any, ...]


Distribution = LogUniform | Uniform | Choice


@dataclass(frozen=True)
class Inactive:
    """``key`` is irrelevant when ``when_key == when_value``: it is pinned to ``value`` there.

    Example: ``Inactive("warmup.fraction", "warmup.steps", 0, 0.0)``: without warm-up steps the
    warm-up fraction changes nothing, so those points are not multiplied out by it; they become the
    plain cold network (fraction 0).
    """

    key: str
    when_key: str
    when_value: Any
    value: Any


@dataclass(frozen=True)
class Smoke:
    """Overrides of ``--smoke``: a tiny version of the sweep that runs in minutes on 2 CPU cores.

    Attributes:
        scientific: replaces the values of these scientific parameters (others keep theirs).
        fixed: added to (and overriding) the fixed parameters.
        samples_per_point: nuisance samples (trials) per scientific point.
        seeds: seeds trained per trial.
    """

    scientific: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    samples_per_point: int = 3
    seeds: int = 1


@dataclass(frozen=True)
class SearchSpace:
    """A named sweep.

    Attributes:
        name: registry name (``--space``).
        description: one line for ``--list-spaces``.
        scientific: key -> values, crossed into the grid of scientific points.
        nuisance: key -> distribution, tuned by one Optuna study per scientific point.
        fixed: key -> value for every trial (the protocol).
        metric: the per-epoch metric the pruner sees (a key of the trial's epoch reports).
        mode: ``min`` or ``max``.
        seeds: seeds per trial (the config's ``replicas``); the study's objective is their mean.
        samples_per_point: nuisance samples (Optuna trials) per scientific point.
        inactive: rules that collapse irrelevant scientific parameters.
        smoke: the ``--smoke`` overrides.
        requires: key -> message for keys the user must set (``--set``), e.g. a data folder.
        objective: ``module:function`` run in each trial, ``run_trial``-compatible.
    """

    name: str
    description: str
    scientific: Mapping[str, Sequence[Any]]
    nuisance: Mapping[str, Distribution]
    fixed: Mapping[str, Any]
    metric: str = "valid_loss"
    mode: str = "min"
    seeds: int = 1
    samples_per_point: int = 4
    inactive: tuple[Inactive, ...] = ()
    smoke: Smoke = field(default_factory=Smoke)
    requires: Mapping[str, str] = field(default_factory=dict)
    objective: str = "pipeline.core.trial:run_trial"

    # ----------------------------------------------------------------------------- checks
    def check(self) -> None:
        """Raise ValueError naming the first key that is unknown, duplicated or badly typed."""
        keys = set(TrialConfig.keys())
        seen: dict[str, str] = {}
        for role, group in (("scientific", self.scientific), ("nuisance", self.nuisance),
                            ("fixed", self.fixed)):
            for key in group:
                if key not in keys:
                    raise ValueError(f"space {self.name!r}: unknown {role} key {key!r}; valid "
                                     f"keys: {', '.join(sorted(keys))}")
                if key in seen and role != "fixed":
                    raise ValueError(f"space {self.name!r}: {key!r} is both {seen[key]} and {role}")
                seen.setdefault(key, role)
        for key, values in self.scientific.items():
            if not values:
                raise ValueError(f"space {self.name!r}: scientific {key!r} has no values")
            for v in values:
                coerce(key, v)
        for key, dist in self.nuisance.items():
            if isinstance(dist, (LogUniform, Uniform)):
                if not (dist.low < dist.high and math.isfinite(dist.low + dist.high)):
                    raise ValueError(f"space {self.name!r}: nuisance {key!r} needs low < high")
                if isinstance(dist, LogUniform) and dist.low <= 0:
                    raise ValueError(f"space {self.name!r}: log-uniform {key!r} needs low > 0")
        for rule in self.inactive:
            for k in (rule.key, rule.when_key):
                if k not in self.scientific:
                    raise ValueError(f"space {self.name!r}: inactive rule names {k!r}, which is "
                                     f"not scientific")
        if self.mode not in ("min", "max"):
            raise ValueError(f"space {self.name!r}: mode must be min or max, not {self.mode!r}")
        if self.seeds < 1 or self.samples_per_point < 1:
            raise ValueError(f"space {self.name!r}: seeds and samples_per_point must be >= 1")

    # ----------------------------------------------------------------------------- variants
    def smoke_version(self) -> SearchSpace:
        """The ``--smoke`` variant: tiny fixed protocol, a small grid, few samples."""
        sci = {k: self._smoke_values(k) for k in self.scientific}
        return dataclasses.replace(self, scientific=sci, fixed={**self.fixed, **self.smoke.fixed},
                                   samples_per_point=self.smoke.samples_per_point,
                                   seeds=self.smoke.seeds)

    def _smoke_values(self, key: str) -> tuple[Any, ...]:
        """The smoke run's values of a scientific key. Numbers may be replaced (a shorter T);
        a categorical key (a cell, a task) keeps the space's own values: a smoke block copied
        from another space never runs cells this space does not study."""
        own = tuple(self.scientific[key])
        smoke = tuple(self.smoke.scientific.get(key, own))
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in own + smoke):
            return smoke
        kept = tuple(v for v in smoke if v in own)
        return kept or own[:max(1, len(smoke))]

    def with_sets(self, sets: Mapping[str, Any]) -> SearchSpace:
        """Apply ``--set key=value``: a scientific key is pinned to that one value, a nuisance key
        stops being tuned, any other key becomes fixed. ``replicas`` overrides ``seeds``.

        Raises:
            ValueError: on an unknown key or a badly typed value.
        """
        sci, nui, fixed = dict(self.scientific), dict(self.nuisance), dict(self.fixed)
        seeds = self.seeds
        for key, value in sets.items():
            value = coerce(key, value)
            if key in sci:
                sci[key] = (value,)
            elif key == "replicas":
                seeds = value
                continue
            else:
                nui.pop(key, None)
            fixed[key] = value
        for key in sci:
            fixed.pop(key, None)
        return dataclasses.replace(self, scientific=sci, nuisance=nui, fixed=fixed, seeds=seeds)

    # ----------------------------------------------------------------------------- the grid
    def points(self) -> list[dict[str, Any]]:
        """The scientific points, in grid order, with inactive parameters collapsed (no duplicates)."""
        keys = list(self.scientific)
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for combo in itertools.product(*(self.scientific[k] for k in keys)):
            point = {k: coerce(k, v) for k, v in zip(keys, combo, strict=True)}
            for rule in self.inactive:
                if point[rule.when_key] == coerce(rule.when_key, rule.when_value):
                    point[rule.key] = coerce(rule.key, rule.value)
            key = point_key(point)
            if key not in seen:
                seen.add(key)
                out.append(point)
        return out

    def trial_config(self, point: Mapping[str, Any], nuisance: Mapping[str, Any], *,
                     seed: int) -> dict[str, Any]:
        """The flat config of one trial: fixed, then the point, then the nuisance values."""
        return {"seed": seed, **self.fixed, **point, **nuisance, "replicas": self.seeds}

    def example_configs(self, *, seed: int = 0) -> list[dict[str, Any]]:
        """One validated-able config per point, nuisance parameters at a representative value."""
        mid: dict[str, Any] = {}
        for key, dist in self.nuisance.items():
            if isinstance(dist, LogUniform):
                mid[key] = math.sqrt(dist.low * dist.high)
            elif isinstance(dist, Uniform):
                mid[key] = (dist.low + dist.high) / 2
            else:
                mid[key] = dist.values[0]
        return [self.trial_config(p, mid, seed=seed) for p in self.points()]

    def missing(self) -> dict[str, str]:
        """The required keys (``requires``) not set yet, with what each needs."""
        return {k: m for k, m in self.requires.items() if self.fixed.get(k) in (None, "")}

    def validate(self, *, seed: int = 0, required: bool = True) -> None:
        """Check the space and build every point's config; raise ValueError naming the key.
        With ``required=False`` (a dry run) keys the space requires may still be unset."""
        self.check()
        for key, message in (self.missing() if required else {}).items():
            raise ValueError(f"space {self.name!r} needs --set {key}=...: {message}")
        for flat in self.example_configs(seed=seed):
            TrialConfig.from_dict(flat)

    def protocol(self, *, smoke: bool) -> str:
        """The protocol's identity: a short hash of everything a run holds fixed (every config
        key that is neither scientific nor nuisance, defaults filled in, placement (device, data
        folder) aside; the seeds per trial; the
        objective and its metric; the smoke flag). Rows with the same protocol can be compared;
        rows with different ones must never be pooled (a hidden size of 8 and of 256)."""
        import hashlib
        import json

        varied = set(self.scientific) | set(self.nuisance) | {"seed", "device", "task.data_dir"}
        fixed = {k: v for k, v in TrialConfig().to_dict().items() if k not in varied}
        fixed.update({k: coerce(k, v) for k, v in self.fixed.items() if k not in varied})
        fixed.pop("replicas", None)
        body = {"fixed": fixed, "seeds": self.seeds, "objective": self.objective,
                "metric": self.metric, "mode": self.mode, "smoke": bool(smoke),
                "revision": PROTOCOL_REVISION}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:10]

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (for experiment.json and --dry-run)."""
        def dist(d: Distribution) -> dict[str, Any]:
            return {"kind": type(d).__name__, **dataclasses.asdict(d)}
        return {"name": self.name, "description": self.description,
                "scientific": {k: list(v) for k, v in self.scientific.items()},
                "nuisance": {k: dist(d) for k, d in self.nuisance.items()},
                "fixed": dict(self.fixed), "metric": self.metric, "mode": self.mode,
                "seeds": self.seeds, "samples_per_point": self.samples_per_point,
                "inactive": [dataclasses.asdict(r) for r in self.inactive],
                "objective": self.objective}


PROTOCOL_REVISION = 2
"""Bumped whenever the code changes what a config means (a default resolved in code, a sampling
rule): 2 = the reference's fidelity defaults (chrono's two draws, warm-up passes over all inputs,
the fixed MNIST permutation and its rows, MNIST padding 5). Part of every protocol's hash."""


def point_key(point: Mapping[str, Any]) -> str:
    """A stable, readable name of a scientific point: ``model.cell=gru,task.seq_len=100,...``."""
    return ",".join(f"{k}={v}" for k, v in point.items())


_GATES = {"gru": 3, "lstm": 4, "chrono": 4, "mgu": 2, "brc": 3, "nbrc": 3}
STEP_OVERHEAD_S = 200e-6
"""CPU cost of one recurrent step of one layer in a Python loop (kernel launches)."""
FLOPS_PER_CORE = 5e10
"""Sustained float32 throughput of one CPU core on these matrix products."""
TRIAL_OVERHEAD_S = 0.5
"""Start-up of one trial under Tune (actor reuse, data generation)."""
# Calibrated on one core of a 2-core AMD EPYC VM (torch 2.13 CPU): a GRU trial at T=50, 1,000
# samples, 2 epochs took 8 s at H=64 and 14 s at H=256; the model says 6 s and 18 s.
CPU_MODEL_SOURCE = "search_spaces.space.trial_core_seconds, fitted to trials timed on one core " \
                   "of a 2-core AMD EPYC VM, torch 2.13"
"""Where the CPU cost model comes from (said with every estimate)."""


def trial_core_seconds(flat: Mapping[str, Any]) -> float:
    """A rough model of one trial's CPU core-seconds, without pruning (for ``--dry-run``).

    Two terms: per-step overhead of the sequential loops (training, validation, test, the exact
    VAA and the warm-up) and the matrix work (2 * gates * H * (H + input) flops per sample-step,
    x3 with the backward pass). Good to a factor of a few; real timings come from a smoke run.
    """
    c = TrialConfig.from_dict(flat)
    T = _length(c)
    H, L, B = c.model.hidden_size, c.model.num_layers, c.train.batch_size
    n_train = int(c.task.train_samples * 0.8)
    n_valid = c.task.train_samples - n_train
    vaa_runs = 2 + (c.train.epochs // c.vaa.every if c.vaa.every else 0)
    s_mean = min(c.warmup.max_stabilization, 1 + c.warmup.increment * c.warmup.steps) / 2
    loops = L * (c.train.epochs * (3 * math.ceil(n_train / B) + math.ceil(n_valid / B)) * T
                 + math.ceil(c.task.test_samples / B) * T + vaa_runs * (T + c.vaa.steps)
                 + 3 * c.warmup.steps * (T + s_mean))
    sample_steps = (c.train.epochs * (3 * n_train + n_valid) * T + c.task.test_samples * T
                    + vaa_runs * c.vaa.samples * (T + c.vaa.steps)
                    + 3 * c.warmup.steps * c.warmup.batch_size * (T + s_mean))
    flops = 2 * _GATES[c.model.cell] * H * (2 * H) * L * sample_steps
    return TRIAL_OVERHEAD_S + c.replicas * (loops * STEP_OVERHEAD_S + flops / FLOPS_PER_CORE)


def _length(c: TrialConfig) -> int:
    if c.task.name in ("seq_mnist", "perm_mnist", "row_mnist"):
        return (28 if c.task.name == "row_mnist" else 784) + c.pad
    return c.task.seq_len + c.pad


def trial_memory_bytes(flat: Mapping[str, Any]) -> int:
    """A lower bound of one trial's peak memory in bytes (float32): the generated data (inputs
    and targets of every sample, at least one value per step each), the parameters with Adam's
    two moments and their gradient, and the states one training batch keeps for the backward
    pass (every gate of every layer at every step). Used to refuse sizes no machine can hold
    before anything runs; the real peak is higher."""
    c = TrialConfig.from_dict(flat)
    T, H, L = _length(c), c.model.hidden_size, c.model.num_layers
    gates = _GATES[c.model.cell]
    data = (c.task.train_samples + c.task.test_samples) * T * 2
    params = L * gates * H * (2 * H + 2) * 4  # weights and biases, gradient, two Adam moments
    states = max(c.train.batch_size, c.warmup.batch_size, c.vaa.samples) * T * L * H * (gates + 2)
    return 4 * c.replicas * (data + params + states)


def estimate_core_hours(space: SearchSpace) -> float:
    """CPU core-hours of the whole sweep without pruning (a rough model, see above)."""
    per_point = sum(trial_core_seconds(cfg) for cfg in space.example_configs())
    return per_point * space.samples_per_point / 3600
