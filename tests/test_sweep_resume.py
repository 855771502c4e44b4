"""Kill -9 of the sweep driver mid-sweep, then --resume: every trial recorded exactly once."""

from __future__ import annotations

import json
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
from pipeline.orchestration.journal import study_states
from pipeline.sweep import main

ROOT = Path(__file__).resolve().parents[1]


def test_sigkill_then_resume_records_every_trial_once(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--space", "tests.analytic:SLOW", "--results", str(tmp_path),
            "--address", ray_session]
    driver = subprocess.Popen([sys.executable, "-m", "pipeline.sweep", *argv,
                               "--experiment", "k", "--max-concurrent", "2"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    store = Store(str(tmp_path), "analytic", "k")
    deadline = time.monotonic() + 120
    try:
        while len(store.trial_ids()) < 2:  # mid-sweep: some trials written, others running
            assert driver.poll() is None, driver.stderr.read().decode()
            assert time.monotonic() < deadline, "the driver recorded no trials in time"
            time.sleep(0.2)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    before = store.trial_ids()
    assert 2 <= len(before) < 6

    rc = main([*argv, "--resume", "k"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    trials = pd.read_parquet(tmp_path / "analytic" / "trials")
    assert len(trials) == trials["trial_id"].nunique() == 6
    assert before <= set(trials["trial_id"])
    assert set(trials["status"]) <= {"completed", "pruned"}
    curves = pd.read_parquet(tmp_path / "analytic" / "curves")
    assert not curves.duplicated(["trial_id", "replica", "phase", "step"]).any()
    settings = json.loads((tmp_path / "analytic" / "experiments" / "k.json").read_text())
    states = study_states(settings["journal"], settings["studies"])
    assert "RUNNING" not in states
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 6
    assert out.startswith("resuming k:")
    # Only the trials not yet recorded ran again (a recorded one would print a line of its own).
    lines = [line for line in out.splitlines() if re.match(r"^\[\d+/6\] ", line)]
    assert len(lines) == 6 - len(before), out
