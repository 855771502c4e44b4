"""The Slurm route: ``cluster/slurm/sweep.sbatch`` run as a job against stand-ins for ``srun`` and
``scontrol`` on this machine (a head and a worker node on localhost, each a real ``ray start``),
through a sweep to its last row; then resubmitted, as after a time limit."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "cluster" / "slurm" / "sweep.sbatch"
FAKE = Path(__file__).resolve().parent / "fake_slurm"


def test_the_job_scripts_pass_bash_n() -> None:
    for script in (SBATCH, REPO / "cluster" / "slurm" / "ray_node.sh", FAKE / "srun",
                   FAKE / "scontrol"):
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)
        assert os.access(script, os.X_OK), script
    text = SBATCH.read_text()
    assert "#SBATCH --nodes=" in text and "--if-exists resume" in text
    assert "ray stop" not in text.replace("never `ray stop`", "")  # only the job's own nodes


def test_the_job_refuses_without_shared_storage(tmp_path: Path) -> None:
    env = {**os.environ, "SLURM_JOB_ID": "1", "PATH": f"{FAKE}:{os.environ['PATH']}"}
    env.pop("SWEEP_SHARED", None)
    done = subprocess.run(["bash", str(SBATCH), "--space", "copy_task"], env=env, cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "SWEEP_SHARED" in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ours(job: str) -> list[int]:
    """Live processes of this job's Ray nodes (their session folders carry the job id)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"/r{job}-".encode() in cmd and state not in ("Z", "X"):
            found.append(int(entry))
    return found


@pytest.mark.cluster
@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("hostname") is None,
                    reason="Ray nodes on one Linux machine")
def test_a_sweep_as_a_slurm_job_on_two_nodes_then_resubmitted(tmp_path: Path) -> None:
    job = str(40000 + os.getpid() % 10000)
    env = {**os.environ, "PATH": f"{FAKE}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SLURM_JOB_ID": job, "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_CPUS_PER_TASK": "1",
           "FAKE_SLURM_NODES": "2", "SWEEP_SHARED": str(tmp_path / "shared"),
           "RAY_NODE_IP": "127.0.0.1", "RAY_PORT": str(_free_port()), "RAY_TMP_ROOT": "/tmp",
           "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    argv = ["bash", str(SBATCH), "--space", "tests.analytic:SPACE", "--experiment", "slurm",
            "--max-concurrent", "2"]
    try:
        first = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True,
                               timeout=600)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "Ray cluster of 2 node(s)" in first.stdout
        rows = pd.read_parquet(tmp_path / "shared" / "results" / "analytic" / "trials")
        assert len(rows) == rows["trial_id"].nunique() == 12
        assert rows["git_sha"].notna().all()
        again = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True,
                               timeout=600)  # resubmitted after the "time limit"
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "resuming slurm: 12/12 runs recorded, 0 to run" in again.stdout
        deadline = time.monotonic() + 30
        while _ours(job) and time.monotonic() < deadline:
            time.sleep(1)
        assert _ours(job) == []  # the job stopped its own nodes
    finally:
        for pid in _ours(job):
            os.kill(pid, 9)
