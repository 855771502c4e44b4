"""run_trial and the one-trial CLI: records, determinism, divergence, pruning, bad input."""

from __future__ import annotations

import math

import pytest

from pipeline.core.outcomes import StopTrial
from pipeline.core.trial import CURVE_FIELDS, RECORD_FIELDS, run_trial
from tests.helpers import tiny

TIMING = {"warmup_s", "train_s", "curves"}


def comparable(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in TIMING}
    out["curves"] = [{k: v for k, v in c.items() if k != "elapsed_s"} for c in rec["curves"]]
    return out


def test_record_has_every_field_and_curves() -> None:
    rec = run_trial(tiny())
    assert rec["status"] == "completed", rec["error"]
    assert set(RECORD_FIELDS) <= rec.keys()
    assert rec["model.cell"] == "gru" and rec["task.seq_len"] == 10  # config keys as columns
    assert rec["epochs_run"] == 2 and rec["warmup_steps_run"] == 3
    assert rec["n_params"] > 0 and rec["best_epoch"] in (1, 2)
    assert math.isfinite(rec["test_loss"]) and rec["test_accuracy"] is None
    for key in ("vaa_init", "vaa_warm", "vaa_star_init", "vaa_star_warm"):
        assert 0 < rec[key] <= 1.0 + 1e-6, key
    phases = [c["phase"] for c in rec["curves"]]
    assert phases == ["warmup"] * 3 + ["train"] * 2
    assert all(set(c) == set(CURVE_FIELDS) for c in rec["curves"])
    assert all(c["vaa"] is not None for c in rec["curves"] if c["phase"] == "train")


def test_same_seed_same_record_other_seed_different() -> None:
    a, b = run_trial(tiny(seed=3)), run_trial(tiny(seed=3))
    c = run_trial(tiny(seed=4))
    assert comparable(a) == comparable(b)
    assert a["test_loss"] != c["test_loss"]
    assert a["curves"][0]["train_loss"] != c["curves"][0]["train_loss"]


def test_parallel_network_parameter_count() -> None:
    full = run_trial(tiny(**{"train.epochs": 0, "warmup.steps": 0}))
    half = run_trial(tiny(**{"train.epochs": 0, "warmup.steps": 0, "warmup.fraction": 0.5}))
    # GRU: 3 gates x (in*h + h*h + 2h) per part; two half-width parts have fewer recurrent weights
    def gru(i: int, h: int) -> int:
        return 3 * (i * h + h * h + 2 * h)
    assert full["n_params"] == gru(1, 8) + gru(8, 8) + 9
    assert half["n_params"] == 2 * gru(1, 4) + 2 * gru(8, 4) + 9


def test_warmed_gru_learns_the_copy_task() -> None:
    rec = run_trial({"model.hidden_size": 32, "task.seq_len": 10, "task.train_samples": 2000,
                     "task.test_samples": 500, "train.epochs": 6, "warmup.steps": 30,
                     "train.lr": 3e-3, "vaa.every": 0, "vaa.steps": 100, "vaa.estimates": 1,
                     "device": "cpu", "seed": 0})
    assert rec["status"] == "completed"
    assert rec["test_loss"] < 0.1


def test_blow_up_ends_as_diverged_with_full_record() -> None:
    rec = run_trial(tiny(**{"train.lr": 1e6, "train.epochs": 3}))
    assert rec["status"] == "diverged"
    assert rec["diverged_phase"] == "train" and rec["diverged_step"] >= 0
    assert set(RECORD_FIELDS) <= rec.keys() and rec["n_params"] > 0
    assert rec["vaa_init"] is not None and "loss in train" in rec["error"]


def test_warmup_nan_ends_as_diverged_at_its_step(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.core.warmup as warmup

    real, calls = warmup.layer_vaa_star_group, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        vs = real(*args, **kwargs)
        return [v * float("nan") for v in vs] if len(calls) == 5 else vs  # NaN at warm-up step 4

    monkeypatch.setattr(warmup, "layer_vaa_star_group", poisoned)
    rec = run_trial(tiny(**{"warmup.steps": 20}))
    assert rec["status"] == "diverged"
    assert (rec["diverged_phase"], rec["diverged_step"]) == ("warmup", 4)
    assert rec["warmup_steps_run"] == 4 and rec["epochs_run"] == 0
    assert len(calls) == 10  # stopped at the first device read (every 10 steps), not at step 20


def test_report_can_prune() -> None:
    seen: list[dict] = []

    def report(m: dict) -> None:
        seen.append(m)
        if m["phase"] == "train" and m["step"] == 1:
            raise StopTrial

    rec = run_trial(tiny(**{"train.epochs": 5}), report)
    assert rec["status"] == "pruned" and rec["epochs_run"] == 1
    assert rec["test_loss"] is None
    assert [m["phase"] for m in seen] == ["setup"] + ["warmup"] * 3 + ["warmed", "train"]
    assert seen[0]["vaa_init"] == rec["vaa_init"] and seen[4]["vaa_warm"] == rec["vaa_warm"]


def assert_same_up_to_rounding(a: object, b: object) -> None:
    """Equal, except floats within float32 rounding of grouped vs one-at-a-time kernels."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_same_up_to_rounding(a[k], b[k])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_up_to_rounding(x, y)
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-7)
    else:
        assert a == b


@pytest.mark.parametrize("cell", ["gru", "lstm", "brc"])
def test_replicas_train_each_seed_as_alone_and_report_the_mean(cell: str) -> None:
    """Seed replicas run grouped (stacked into one scan where the cell groups well) and still
    draw, train and record each seed as a one-seed trial does, up to float rounding."""
    seen: list[dict] = []
    rec = run_trial(tiny(seed=5, replicas=2, **{"model.cell": cell}), seen.append)
    alone = [run_trial(tiny(seed=s, **{"model.cell": cell})) for s in (5, 6)]
    assert rec["status"] == "completed" and len(rec["per_seed"]) == 2
    for own, single in zip(rec["per_seed"], alone, strict=True):
        assert_same_up_to_rounding(comparable(own), comparable(single))
    assert rec["test_loss"] == pytest.approx((alone[0]["test_loss"] + alone[1]["test_loss"]) / 2)
    epochs = [m for m in seen if m["phase"] == "train"]
    assert len(epochs) == 2 and all(m["replicas_reporting"] == 2 for m in epochs)
    assert epochs[0]["valid_loss"] == pytest.approx(
        sum(c["valid_loss"] for a in alone for c in a["curves"][3:4]) / 2)


def test_one_diverging_replica_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.core.train as train

    real = train.Trainer.end_epoch

    def end_epoch(self, e, losses):
        if self.cfg.seed == 1:
            raise train.Diverged("train", 0)
        return real(self, e, losses)

    monkeypatch.setattr(train.Trainer, "end_epoch", end_epoch)
    rec = run_trial(tiny(seed=0, replicas=2))
    assert [r["status"] for r in rec["per_seed"]] == ["completed", "diverged"]
    assert rec["status"] == "diverged" and rec["per_seed"][0]["test_loss"] is not None


@pytest.mark.parametrize("switch", ["1", "0"])
def test_trial_flushes_subnormals_unless_switched_off(switch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial computes with subnormal floats flushed to zero on the CPU (their arithmetic can be
    many times slower), unless ``WARMUP_SWEEP_FLUSH_DENORMAL=0`` keeps IEEE gradual underflow."""
    import torch

    from pipeline.core.device import FLUSH_SWITCH, flush_denormals

    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    monkeypatch.setenv(FLUSH_SWITCH, switch)
    torch.set_flush_denormal(switch == "0")  # the other mode before the trial
    try:
        rec = run_trial(tiny())
        kept = torch.tensor([1e-39]).item()
    finally:
        monkeypatch.delenv(FLUSH_SWITCH)
        flush_denormals()
    assert rec["status"] == "completed" and (kept == 0.0) == (switch == "1")
    assert rec["flush_denormal"] is (switch == "1")  # recorded in the trial's row


@pytest.mark.parametrize("switch", ["1", "0"])
def test_the_record_says_whether_the_native_kernels_ran(switch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.core.scans import native

    monkeypatch.setenv(native.ENV_SWITCH, switch)
    rec = run_trial(tiny(replicas=2))
    assert rec["native_kernels"] is (switch == "1" and native.kernels() is not None)
    assert [r["native_kernels"] for r in rec["per_seed"]] == [rec["native_kernels"]] * 2
