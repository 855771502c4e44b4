"""``python -m pipeline.status`` on a running, a killed and a finished sweep: its counts are the
Parquet rows', and it writes nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.analysis.results import Store
from pipeline.status import main as status
from pipeline.sweep import main as sweep

ROOT = Path(__file__).resolve().parents[1]


def _status(capsys: pytest.CaptureFixture[str], results: Path, *extra: str) -> str:
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    assert status(["--space", "tests.analytic:SLOW", "--results", str(results), *extra]) == 0
    after = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    assert after == before  # read only
    return capsys.readouterr().out


def _recorded(results: Path) -> dict[str, int]:
    rows = pd.read_parquet(results / "analytic" / "trials")
    return rows["status"].value_counts().to_dict()


def test_status_of_a_running_a_killed_and_a_finished_sweep(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--space", "tests.analytic:SLOW", "--results", str(tmp_path), "--address",
            ray_session, "--max-concurrent", "2"]
    driver = subprocess.Popen([sys.executable, "-m", "pipeline.sweep", *argv, "--experiment",
                               "w"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    store = Store(str(tmp_path), "analytic", "w")
    deadline = time.monotonic() + 120
    try:
        while not store.exists(store.experiment_json) or len(store.trial_ids()) < 2:
            assert driver.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        low = len(store.trial_ids())
        out = _status(capsys, tmp_path)
        high = len(store.trial_ids())
        assert f"running: pid {driver.pid}" in out
        m = re.search(r"runs: (\d+)/6 recorded \(([^)]*)\); (\d+) running; (\d+) pending", out)
        assert m, out
        recorded, running, pending = int(m.group(1)), int(m.group(3)), int(m.group(4))
        assert low <= recorded <= high  # the rows as they stood
        assert sum(int(c.split()[0]) for c in m.group(2).split(", ")) == recorded
        assert recorded + running + pending == 6 and running <= 2
        assert "ETA about" in out
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    out = _status(capsys, tmp_path, "--experiment", "w")
    counts = _recorded(tmp_path)
    n = sum(counts.values())
    assert "stopped (no sweep holds its lock)" in out  # the kernel dropped the killed one's
    shown = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    assert f"runs: {n}/6 recorded ({shown})" in out
    if n < 6:
        assert "--resume w" in out
    assert sweep([*argv, "--resume", "w"]) == 0
    capsys.readouterr()
    out = _status(capsys, tmp_path)
    shown = ", ".join(f"{v} {k}" for k, v in sorted(_recorded(tmp_path).items()))
    assert "finished at" in out and f"runs: 6/6 recorded ({shown}); 0 running; 0 pending" in out
    assert "ETA" not in out and "best so far per point" in out


def test_status_refuses_what_is_not_there(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert status(["--space", "copy_task", "--results", str(tmp_path)]) == 2
    assert "no experiment of space 'copy_task'" in capsys.readouterr().err
    assert status(["--space", "../etc", "--results", str(tmp_path)]) == 2
    assert status(["--space", "copy_task", "--experiment", "../x"]) == 2
    assert not list(tmp_path.iterdir())


def test_status_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "analytic" / "experiments").mkdir(parents=True)
    (tmp_path / "analytic" / "experiments" / "x.json").write_text("[1]")
    assert status(["--space", "tests.analytic:SPACE", "--results", str(tmp_path)]) == 2
    assert "not a JSON object" in capsys.readouterr().err
    assert status(["--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pipeline.status: error:")
