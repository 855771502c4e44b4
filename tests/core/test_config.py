"""The flat dotted config: round trip, typed coercion, clear errors."""

from __future__ import annotations

import pytest

from pipeline.core.config import TrialConfig, parse_sets


def test_round_trip_and_coercion() -> None:
    flat = parse_sets(["model.cell=lstm", "warmup.fraction=0.25", "train.epochs=3",
                       "warmup.detach_prefix=true", "task.pad=none", "seed=7"])
    cfg = TrialConfig.from_dict(flat)
    assert cfg.model.cell == "lstm" and cfg.warmup.fraction == 0.25 and cfg.seed == 7
    assert cfg.warmup.detach_prefix is True and cfg.task.pad is None
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert list(cfg.to_dict()) == TrialConfig.keys()
    assert cfg.replace(**{"model.hidden_size": 10}).model.hidden_size == 10


@pytest.mark.parametrize("flat, match", [
    ({"model.cel": "gru"}, "unknown config key 'model.cel'"),
    ({"model.cell": "rnn"}, "model.cell='rnn' is not one of gru, lstm"),
    ({"warmup.fraction": -0.1}, "warmup.fraction must be in"),
    ({"train.epochs": 2.5}, "train.epochs needs a int"),
    ({"train.lr": 0}, "train.lr must be a finite number > 0"),
    ({"warmup.update": "cold"}, "warmup.update='cold' is not one of all, warm"),
    ({"task.name": "denoising", "task.seq_len": 8}, "too short for denoising"),
    ({"warmup.detach_prefix": "maybe"}, "warmup.detach_prefix needs a bool"),
])
def test_bad_values_name_the_key(flat: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrialConfig.from_dict(flat)


def test_warm_width_rounds() -> None:
    cfg = TrialConfig.from_dict({"model.hidden_size": 10, "warmup.fraction": 0.25})
    assert cfg.warm_width == 2  # round(2.5) = 2 (banker's rounding, as Python's round)
    assert TrialConfig.from_dict({"warmup.steps": 0}).warms_up is False
