"""The live view of a running sweep, on a real (analytic) sweep: plain periodic lines when stdout
is not a terminal, a bar redrawn in place on a terminal (a pseudo-terminal here)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.sweep import main

ROOT = Path(__file__).resolve().parents[1]
VIEW = re.compile(r"done: (.+?) \| running (\d+)(?: \((.+?)\))? \| pending (\d+) \| "
                  r"elapsed \d+m\d\ds \| ETA (\S+)")


def test_plain_periodic_lines_when_stdout_is_not_a_terminal(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--space", "tests.analytic:SLOW", "--results", str(tmp_path), "--address",
               ray_session, "--experiment", "p", "--max-concurrent", "2",
               "--progress-every", "0.5"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = [line for line in out.splitlines() if line.startswith("-- ")]
    assert len(lines) >= 3, out
    assert "\r" not in out  # no bar escapes in a log
    views = [VIEW.search(line) for line in lines]
    assert all(views), lines
    for m in views:  # each running trial with its epoch of 4; the counts add up to the runs
        running, pending = int(m.group(2)), int(m.group(4))
        assert running <= 2
        done = sum(int(x.split()[0]) for x in m.group(1).split()[::2]) if m.group(1) != \
            "none yet" else 0
        assert done + running + pending == 6
        if m.group(3):
            assert all(re.fullmatch(r"p0-s\d \d/4", r) for r in m.group(3).split(", "))
    assert any(m.group(5) != "?" for m in views)  # an ETA once an epoch was timed
    assert "best valid_loss: gru" in lines[-1]
    assert len([line for line in out.splitlines() if re.match(r"\[\d/6\] ", line)]) == 6


def test_a_bar_redrawn_in_place_on_a_terminal(ray_session: str, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.sweep", "--space", "tests.analytic:SLOW", "--results",
         str(tmp_path), "--address", ray_session, "--experiment", "t", "--max-concurrent", "2"],
        cwd=ROOT, stdout=follower, stderr=subprocess.DEVNULL, close_fds=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"})
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "\r" in screen and " runs |" in screen  # tqdm redraws its line
    frames = [VIEW.search(f) for f in screen.split("\r")]
    assert sum(1 for f in frames if f) >= 3, screen[-2000:]
    assert "6/6 runs" in screen  # the last frame: every run done
    assert len(re.findall(r"\[\d/6\] ", screen)) == 6  # the per-run lines, above the bar


def test_tensorboard_event_files_hold_the_same_curves_as_parquet(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["--space", "tests.analytic:SPACE", "--results", str(tmp_path), "--address",
                 ray_session, "--experiment", "tb", "--tensorboard"]) == 0
    curves = pd.read_parquet(tmp_path / "analytic" / "curves")
    folder = tmp_path / "analytic" / "tensorboard" / "tb"
    runs = sorted(p.name for p in folder.iterdir())
    assert runs == sorted(curves["trial_id"].unique())  # one folder per run, named by its id
    for run in runs:
        acc = EventAccumulator(str(folder / run))
        acc.Reload()
        mine = curves[curves["trial_id"] == run]
        train = mine[mine["phase"] == "train"].sort_values("step")
        events = acc.Scalars("valid/loss")
        assert [e.step for e in events] == train["step"].tolist()
        assert [e.value for e in events] == pytest.approx(train["valid_loss"].tolist(), rel=1e-6)
        warm = mine[mine["phase"] == "warmup"]
        if len(warm):
            assert [e.step for e in acc.Scalars("warmup/loss")] == warm["step"].tolist()


def test_tensorboard_is_off_by_default(ray_session: str, tmp_path: Path) -> None:
    assert main(["--space", "tests.analytic:SPACE", "--results", str(tmp_path), "--address",
                 ray_session, "--experiment", "off"]) == 0
    assert not (tmp_path / "analytic" / "tensorboard").exists()


def test_a_failing_tensorboard_view_turns_itself_off_and_the_resumed_view_counts(
        tmp_path: Path) -> None:
    import io

    from pipeline.orchestration.callbacks import Progress, TensorBoardWriter

    class T:
        trial_id, config, last_result, num_failures = "t1", {"sweep.run": "p0-s0"}, {}, 0
    (tmp_path / "afile").write_text("x")
    tb = TensorBoardWriter(str(tmp_path / "afile" / "tb"))  # cannot be created
    tb.on_trial_start(0, [], T())
    tb.on_trial_result(0, [], T(), {"phase": "train", "step": 1, "valid_loss": 1.0})
    assert tb.failed and "Error" in tb.failed  # logged once, never raised into Tune
    view = Progress(10, [], "valid_loss", epochs=4, done=4, out=io.StringIO(), live=False,
                    counts={"completed": 3, "pruned": 1}, at_once=2)
    assert view.view().startswith("done: 3 completed 1 pruned | running 0 | pending 6")
