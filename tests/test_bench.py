"""The micro-benchmark CLI: one JSON line of medians, replicas, and bad input."""

from __future__ import annotations

import json

import pytest

from pipeline.bench import main


@pytest.mark.parametrize("cell", ["gru", "lstm", "brc"])
def test_bench_prints_one_json_line(cell: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--cell", cell, "--hidden", "8", "--seq-len", "6", "--batch", "4", "--layers", "2",
               "--replicas", "2", "--reps", "1", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1
    rec = json.loads(out[0])
    assert rec["cell"] == cell and rec["replicas"] == 2 and rec["device"] == "cpu"
    assert rec["warmup_step_ms"] > 0 and rec["train_step_ms"] > 0
    assert rec["samples_per_s"] == pytest.approx(2 * 4 / (rec["train_step_ms"] / 1e3), rel=1e-2)


def test_bench_bad_input_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--replicas", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --replicas must be >= 1 but got 0"]
