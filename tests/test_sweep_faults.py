"""Faults injected for real (kill -9 of the driver, of a compaction, a full disk), then exact
assertions on the record: one row per planned run, no duplicates, and each study's trials one to
one with the rows (COMPLETE/PRUNED with completed/pruned rows, FAIL with error/diverged rows or
with an orphan the resume closed and marked)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from pipeline.analysis.results import Store
from pipeline.sweep import main

ROOT = Path(__file__).resolve().parents[1]
SPACE = "tests.analytic:FAULTS"
_STATE = {"completed": "COMPLETE", "pruned": "PRUNED", "diverged": "FAIL", "error": "FAIL"}


def audit(results: Path, space: str, exp: str) -> dict[str, int]:
    """Assert the experiment's record is exact; return its status counts."""
    settings = json.loads((results / space / "experiments" / f"{exp}.json").read_text())
    trials = pd.read_parquet(results / space / "trials")
    trials = trials[trials["experiment"] == exp]
    curves = pd.read_parquet(results / space / "curves")
    curves = curves[curves["experiment"] == exp]
    planned = {f"p{i}-s{s}" for i in range(settings["points"])
               for s in range(settings["definition"]["samples_per_point"])}
    assert len(trials) == trials["trial_id"].nunique() == len(planned), trials["trial_id"]
    assert set(trials["trial_id"]) == planned
    assert not curves.duplicated(["trial_id", "replica", "phase", "step"]).any()
    assert set(curves["trial_id"]) <= planned
    storage = JournalStorage(JournalFileBackend(settings["journal"]))
    by_study: dict[tuple[str, int], Any] = {}
    for name in settings["studies"]:
        for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            by_study[(name, t.number)] = t
    for row in trials.itertuples():
        t = by_study.pop((row.study, int(row.optuna_trial)))
        assert t.state.name == _STATE[row.status], (row.trial_id, row.status, t.state)
        assert t.user_attrs["run_id"] == row.trial_id
        if row.status == "completed":
            assert t.value == pytest.approx(row.objective)
    # what is left in the studies: only orphans a resume closed, and said so
    for t in by_study.values():
        assert t.state.name == "FAIL" and t.user_attrs.get("closed") == "orphan", t
    counts = trials["status"].value_counts().to_dict()
    counts["orphans"] = len(by_study)
    return counts


def _driver(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipeline.sweep", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})


@pytest.mark.slow
def test_repeated_sigkill_of_the_driver_then_resume_is_exact(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(17)
    base = ["--space", SPACE, "--results", str(tmp_path), "--address", ray_session,
            "--max-concurrent", "2"]
    store = Store(str(tmp_path), "analytic", "k")
    kills = 0
    for attempt in range(4):
        argv = [*base, "--experiment", "k"] if attempt == 0 else [*base, "--resume", "k"]
        driver = _driver(argv)
        start = len(store.trial_ids()) if store.exists(store.experiment_json) else 0
        wait = rng.uniform(0.0, 2.0)
        deadline = time.monotonic() + 120
        try:
            while driver.poll() is None and (
                    not store.exists(store.experiment_json)
                    or len(store.trial_ids()) < start + 1 + attempt):
                assert time.monotonic() < deadline, "the driver recorded nothing in time"
                time.sleep(0.1)
            time.sleep(wait)  # a random moment: mid-trial, mid-write, mid-tell
        finally:
            if driver.poll() is None:
                driver.send_signal(signal.SIGKILL)
                kills += 1
            driver.wait()
    assert kills >= 3
    rc = main([*base, "--resume", "k"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    counts = audit(tmp_path, "analytic", "k")
    assert sum(counts[s] for s in counts if s != "orphans") == 24
    assert {"completed", "pruned"} <= set(counts), counts
    assert rc == 0 and "done: 24 trials" in out


_COMPACT = textwrap.dedent("""
    import os, signal, sys
    import pipeline.analysis.results as results
    store = results.Store(sys.argv[1], "s", "e")
    where = sys.argv[2]
    if where == "before-exchange":
        real = results._exchange
        results._exchange = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)
    else:
        import shutil
        results.shutil.rmtree = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    store.compact()
""")


@pytest.mark.parametrize("where", ["before-exchange", "after-exchange"])
def test_sigkill_during_compaction_never_shows_duplicates_or_loses_rows(
        tmp_path: Path, where: str) -> None:
    store = Store(str(tmp_path), "s", "e")
    for k in range(5):
        store.write_trial(f"p{k}-s0", [{"status": "completed", "replica": 0}],
                          [{"phase": "train", "step": s, "replica": 0} for s in (1, 2)])
    child = subprocess.run([sys.executable, "-c", _COMPACT, str(tmp_path), where], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    for table, n in (("trials", 5), ("curves", 10)):
        rows = pd.read_parquet(tmp_path / "s" / table)  # what a researcher loads
        assert len(rows) == n, (table, where)
    leftovers = [p for p in (tmp_path / "s" / "trials").iterdir() if p.name.startswith(".")]
    assert leftovers  # the crash left a hidden folder...
    assert store.clean_stale() >= 1  # ...which the next session (under the lock) removes
    assert not [p for p in (tmp_path / "s").rglob(".*")]
    assert store.compact()
    assert [p.name for p in (tmp_path / "s" / "trials" / "e").iterdir()] == ["compacted.parquet"]
    assert len(pd.read_parquet(tmp_path / "s" / "trials")) == 5


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True)
    return done.returncode == 0


@pytest.mark.slow
def test_full_disk_stops_the_sweep_cleanly_and_the_resume_completes_exactly(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "8m"):
        pytest.skip("mounting a small tmpfs needs root (or CAP_SYS_ADMIN) on this machine")
    try:
        results = disk / "results"
        argv = ["--space", SPACE, "--results", str(results), "--address", ray_session,
                "--max-concurrent", "2"]
        driver = _driver([*argv, "--experiment", "full"])
        store = Store(str(results), "analytic", "full")
        ballast = disk / "ballast"
        deadline = time.monotonic() + 120
        while len(store.trial_ids()) < 4 if store.exists(store.experiment_json) else True:
            assert driver.poll() is None, driver.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with open(ballast, "wb") as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        _, err = driver.communicate(timeout=180)
        err = err.decode()
        assert driver.returncode == 1, err
        assert "Traceback" not in err, err  # one clear line, the details in the log
        (line,) = [x for x in err.splitlines() if x.startswith("sweep: ")]
        assert "No space left on device" in line and "--resume full" in line, err
        ballast.unlink()  # free the space
        rc = main([*argv, "--resume", "full"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        counts = audit(results, "analytic", "full")
        assert sum(counts[s] for s in counts if s != "orphans") == 24
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _live_orphans(session_pid: int) -> list[int]:
    """Live (not zombie) processes adopted by init that hold the log files of the local Ray
    started by ``session_pid`` (agents and workers alike)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            fds = [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        if stat[0] != "Z" and stat[1] == "1" and any(f"_{session_pid}/logs/" in f for f in fds):
            found.append(int(entry))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc")
def test_agents_left_by_a_killed_local_ray_are_reaped_and_a_live_ray_untouched(
        ray_session: str, tmp_path: Path) -> None:
    import ray

    from pipeline.orchestration.session import reap_orphan_agents
    driver = subprocess.Popen(  # its own local Ray: no --address
        [sys.executable, "-m", "pipeline.sweep", "--space", "tests.analytic:SLOW", "--results",
         str(tmp_path), "--experiment", "a"], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    store = Store(str(tmp_path), "analytic", "a")
    deadline = time.monotonic() + 120
    while not store.exists(store.experiment_json) or not store.trial_ids():
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline, left, previous = time.monotonic() + 30, [], None
    while time.monotonic() < deadline and not (left and left == previous):
        time.sleep(1.0)  # the head goes; Ray 2.60's agents stay, adopted by init, one by one
        previous, left = left, _live_orphans(driver.pid)
    if not left:
        pytest.skip("this Ray version's agents exited with their raylet")
    assert set(left) <= set(reap_orphan_agents())
    deadline = time.monotonic() + 10
    while _live_orphans(driver.pid) and time.monotonic() < deadline:
        reap_orphan_agents()  # a worker adopted later is reaped by the next start too
        time.sleep(0.5)
    assert _live_orphans(driver.pid) == []
    assert ray.get(ray.remote(lambda: 7).remote()) == 7  # the session's own Ray is untouched


def test_ctrl_c_stops_cleanly_and_the_resume_is_exact(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--space", SPACE, "--results", str(tmp_path), "--address", ray_session,
            "--max-concurrent", "2"]
    driver = subprocess.Popen([sys.executable, "-m", "pipeline.sweep", *base, "--experiment",
                               "c"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    store = Store(str(tmp_path), "analytic", "c")
    deadline = time.monotonic() + 120
    while not store.exists(store.experiment_json) or len(store.trial_ids()) < 3:
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 1, err
    assert "--resume c" in err and "Traceback" not in err, err
    assert not (tmp_path / "analytic" / "experiments" / "c.lock").exists()  # released
    assert main([*base, "--resume", "c"]) == 0
    counts = audit(tmp_path, "analytic", "c")
    assert sum(v for k, v in counts.items() if k != "orphans") == 24
