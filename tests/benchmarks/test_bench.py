"""The benchmark scripts (``benchmarks/``, outside the package): the micro-benchmark CLI (one JSON
line of medians, replicas, bad input), the A/B and GPU-session plumbing."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch


def _benchmarks_module(name: str):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


main = _benchmarks_module("bench").main


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


def test_most_trials_at_once_counts_overlaps() -> None:
    import pandas as pd

    most_at_once = _benchmarks_module("gpu_pack").most_at_once
    t = pd.Timestamp("2026-01-01", tz="UTC")
    s = pd.to_timedelta
    trials = pd.DataFrame({"started_at": [t, t + s("1s"), t + s("2s"), t + s("10s")],
                           "finished_at": [t + s("3s"), t + s("4s"), t + s("9s"), t + s("11s")]})
    assert most_at_once(trials) == 3
    # one ends exactly when the next starts: not at once
    back_to_back = pd.DataFrame({"started_at": [t, t + s("1s")], "finished_at": [t + s("1s"), t + s("2s")]})
    assert most_at_once(back_to_back) == 1


def test_gpu_scripts_parse() -> None:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for script in ("gpu_session.sh", "device_bundle.sh"):
        subprocess.run(["bash", "-n", str(root / "benchmarks" / script)], check=True)


@pytest.mark.slow
def test_gpu_session_dry_run_writes_every_part(tmp_path) -> None:
    """The GPU session's plumbing on the CPU (DRY=1): each part writes its file; the replicas part
    one JSON line per cell and R; the packing part a table from three real smoke sweeps; the
    profile part a table per cell and step."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DRY": "1", "OUT": str(tmp_path), "PY": sys.executable,
           "RAY_AUTH_MODE": "disabled"}
    parts = ["env", "replicas", "pack", "profile"]
    subprocess.run(["bash", str(root / "benchmarks" / "gpu_session.sh"), *parts],
                   env=env, check=True, capture_output=True, text=True, timeout=600)
    assert "torch" in (tmp_path / "env.txt").read_text()
    lines = [json.loads(x) for x in (tmp_path / "replicas.jsonl").read_text().splitlines()]
    assert [(r["cell"], r["replicas"]) for r in lines] == [("gru", 1), ("gru", 8), ("brc", 1), ("brc", 8)]
    table = (tmp_path / "pack.md").read_text().strip().splitlines()[-3:]
    assert [row.split("|")[1].strip() for row in table] == ["1.0", "0.5", "0.25"]
    assert all(row.split("|")[2].strip() == "18" for row in table)  # every trial (gru half) recorded
    profile = (tmp_path / "profile.txt").read_text()
    assert profile.count("## ") == 6 and "Self CPU time total" in profile  # 3 cells x 2 steps


def test_gpu_session_runs_every_file_with_gpu_tests() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = (root / "benchmarks" / "gpu_session.sh").read_text()
    listed = set(re.findall(r"(tests/[\w/]*test_\w+\.py)", script))
    gpu_mark = re.compile(r"^(@pytest\.mark\.gpu|pytestmark = \[pytest\.mark\.gpu)", re.M)
    marked = {str(p.relative_to(root)) for p in (root / "tests").rglob("test_*.py")
              if gpu_mark.search(p.read_text())}
    assert marked and listed == marked


@pytest.mark.parametrize("what", ["native", "group"])
def test_ab_script_runs_both_sides(what: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/ab.py alternates its two sides and leaves the process as it found it."""
    from pipeline.core import cells

    ab = _benchmarks_module("ab")
    argv = ["--what", what, "--cells", "brc", "--hidden", "6", "--seq-len", "4", "--batch", "8",
            "--replicas", "2", "--rounds", "1", "--warmups", "1", "--trains", "1",
            "--threads", str(torch.get_num_threads())]
    monkeypatch.setattr("sys.argv", ["ab.py", *argv])
    before = os.environ.get("WARMUP_SWEEP_NATIVE")
    assert ab.main() == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["side"] for r in rows] == list(ab.SIDES[what])
    assert all(r["warmup_step_ms"] > 0 and r["train_step_ms"] > 0 for r in rows)
    assert os.environ.get("WARMUP_SWEEP_NATIVE") == before and "groups_well" not in cells.BRC.__dict__
