"""The one-trial command line, ``python -m pipeline.trial``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.trial import main
from tests.helpers import tiny


def test_cli_json_record(capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"--set={k}={v}" for k, v in tiny().items()]
    assert main([*args, "--device", "cpu", "--json"]) == 0
    out, err = capsys.readouterr()
    rec = json.loads(out.strip().splitlines()[-1])
    assert rec["status"] == "completed" and "curves" not in rec
    assert err.count("epoch ") == 2  # one progress line per epoch on stderr


@pytest.mark.parametrize("bad", ["model.cel=gru", "model.cell=rnn", "warmup.fraction=1.5",
                                 "train.lr=fast", "nokeyvalue", "task.name=seq_mnist"])
def test_cli_bad_input_exits_2_with_one_line(bad: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.trial", "--set", bad],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert bad.split("=")[0] in lines[0] or "data_dir" in lines[0]
    assert proc.stdout == ""
