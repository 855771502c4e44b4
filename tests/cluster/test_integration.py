"""The sweep on a real multi-node Ray cluster on this one machine (``-m cluster``; minutes).

Each test starts its own cluster with the ``ray`` CLI, as a user would on separate machines: a head
(``--num-cpus=0``: the Tune driver and the dashboard, no trials) and two worker nodes
(``--num-cpus=1`` each), every node a separate ``ray start --block`` process tree with its own temp
dir and its own session (``start_new_session``), on ports picked free for the test. The smoke
sweep is submitted through ``cluster/submit.sh`` (``ray job submit`` with
``cluster/runtime_env.yaml``), and the assertions read the Parquet tables with plain pandas.

- ``test_sweep_runs_as_a_job_across_nodes``: every trial recorded once, on more than one node.
- ``test_sweep_survives_losing_a_worker_node``: one worker node is killed (SIGKILL to its whole
  process tree) while a trial runs on it; the sweep still completes, every trial is in Parquet
  exactly once, and the trials that were running on the lost node are marked ``retries >= 1``.
- ``test_token_authentication_guards_job_submission``: a head started with token authentication
  refuses a job without the token or with a wrong one, and runs it with the right one.

Only processes these tests started are signalled: each node's ``ray start`` process and its
descendants or session members, found through /proc. Nothing else (no ``ray stop``).
Ray maps ``--node-ip-address=127.0.0.1`` to this host's own address; all traffic stays on this host.
Token authentication is disabled (``RAY_AUTH_MODE=disabled``) as everywhere in the test suite,
except in the test of token authentication.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="multi-node Ray on one machine: Linux only (/proc)")]

REPO = Path(__file__).resolve().parents[2]
SUBMIT = REPO / "cluster" / "submit.sh"
RAY_CLI = Path(sys.executable).with_name("ray")
JOB_TIMEOUT_S = 900
SPACE = "copy_task"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------- processes via /proc
def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session id, command line) of every live process."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if fields[0] in ("Z", "X"):  # exited, waiting to be reaped: nothing left to stop
            continue
        table[int(entry)] = (int(fields[1]), int(fields[3]), cmd)
    return table


def tree(root: int) -> dict[int, str]:
    """``root`` and every process descending from it or in its session (``root`` leads the
    session it was started in): a node's raylet, agents and workers (workers set their own process
    group, but keep the session), and the job driver the head's job supervisor starts."""
    table = _proc_table()
    found = {root} if root in table else set()
    grew = True
    while grew:
        grew = False
        for pid, (ppid, sid, _) in table.items():
            if pid not in found and (ppid in found or sid == root):
                found.add(pid)
                grew = True
    return {pid: table[pid][2] for pid in found}


def exited(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie not yet reaped counts as ended). Unlike
    ``Popen.poll``, this does not reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def signal_tree(root: int, sig: signal.Signals) -> None:
    for pid in tree(root):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_tree(root: int, timeout_s: float = 30) -> None:
    """SIGKILL ``root``'s tree until none of it is left (a process forked during a pass is
    caught by the next)."""
    deadline = time.monotonic() + timeout_s
    while tree(root):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes of {root} survive SIGKILL: {tree(root)}")
        signal_tree(root, signal.SIGKILL)
        time.sleep(0.1)


# ------------------------------------------------------------------------- the cluster
def alive_node_ids(address: str) -> list[str]:
    """Ids of the nodes alive in the cluster whose dashboard is at ``address``."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")],
                       raise_on_missing_output=False, timeout=10)
    return [n.node_id for n in nodes]


class LocalCluster:
    """A head and ``workers`` worker nodes, each a ``ray start --block`` process tree.

    Args:
        workers: worker nodes besides the head.
        cpus_per_worker: the CPUs each worker node advertises.
        token: start every node with token authentication and this token (``RAY_AUTH_MODE=token``,
            ``RAY_AUTH_TOKEN``); None: authentication disabled.
    """

    def __init__(self, workers: int = 2, cpus_per_worker: int = 1, *,
                 token: str | None = None) -> None:
        # Short: Unix socket paths under it must stay below 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="rcl", dir="/tmp"))
        self.workers, self.cpus_per_worker = workers, cpus_per_worker
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {k: v for k, v in os.environ.items() if k not in (
            "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        self.env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                        PYTHONUNBUFFERED="1",
                        PATH=f"{RAY_CLI.parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.token = token
        if token is not None:
            self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, *args: str) -> None:
        temp = self.root / name
        temp.mkdir()
        with open(self.root / f"{name}.log", "wb") as log:
            self.nodes[name] = subprocess.Popen(
                [str(RAY_CLI), "start", "--block", "--disable-usage-stats",
                 "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                 f"--dashboard-agent-listen-port={free_port()}",
                 "--min-worker-port=0", "--max-worker-port=0", *args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def start(self) -> None:
        self._start("head", "--head", f"--port={self.gcs_port}", "--num-cpus=0",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={self.dashboard_port}",
                    f"--ray-client-server-port={free_port()}")
        self.wait_for_nodes(1)
        for i in range(self.workers):
            self._start(f"worker{i}", f"--address=127.0.0.1:{self.gcs_port}",
                        f"--num-cpus={self.cpus_per_worker}", "--num-gpus=0")
        self.wait_for_nodes(1 + self.workers)

    def alive_nodes(self) -> list[str]:
        """Ids of the nodes Ray reports alive (state API, through the dashboard)."""
        if self.token is None:
            return alive_node_ids(self.address)
        # A client reads its authentication settings once per process: ask from a process that
        # holds the cluster's token.
        out = subprocess.run(
            [sys.executable, "-c", "import json, sys; from tests.cluster import test_integration as t; "
                                   "print(json.dumps(t.alive_node_ids(sys.argv[1])))",
             self.address],
            env={**self.env, "PYTHONPATH": str(REPO)}, capture_output=True,
            text=True, timeout=60, check=True)
        return list(json.loads(out.stdout.strip().splitlines()[-1]))

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name, proc in self.nodes.items():
                if exited(proc.pid):
                    raise RuntimeError(f"node {name} exited:\n" + self.log(name)[-3000:])
            try:
                if len(self.alive_nodes()) >= count:
                    return
            except Exception:  # noqa: BLE001 - the dashboard is still starting
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Ray nodes not alive after {timeout_s}s; logs in "
                                   f"{self.root}")
            time.sleep(1)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def node_id(self, name: str) -> str:
        """The Ray node id of node ``name``, from its raylet's command line."""
        for cmd in tree(self.nodes[name].pid).values():
            match = re.search(r"/raylet/raylet .*--node_id=([0-9a-f]+)", cmd)
            if match:
                return match.group(1)
        raise LookupError(f"no raylet found for node {name}")

    def running_trials(self, name: str) -> list[str]:
        """Tune trial actors executing on node ``name`` (their process title names the method)."""
        return [cmd for cmd in tree(self.nodes[name].pid).values()
                if cmd.startswith("ray::ImplicitFunc.train")]

    def kill_node(self, name: str) -> None:
        """Lose node ``name`` abruptly, as when its machine dies: SIGKILL its whole tree."""
        kill_tree(self.nodes[name].pid)
        self.nodes[name].wait(timeout=30)

    def stop(self) -> None:
        """Stop every node this cluster started (SIGTERM, then SIGKILL after a grace period).

        A node's ``ray start`` process is reaped only once its tree is gone (here or in
        :meth:`kill_node`), so its pid cannot have been reused by a stranger meanwhile.
        """
        live = [p for p in self.nodes.values() if p.returncode is None]
        for proc in live:
            signal_tree(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(tree(p.pid) for p in live):
            time.sleep(0.2)
        for proc in live:
            kill_tree(proc.pid)
            proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(workers=2, cpus_per_worker=1)
    try:
        c.start()
        yield c
    finally:
        c.stop()


# ------------------------------------------------------------------------- the sweep as a job
def sweep_args(tmp: Path, experiment: str, *extra: str) -> list[str]:
    # One cell, one length: a few tiny trials (3 scientific points x 2 samples in the smoke grid
    # as written). The storage folder stands for a shared filesystem (NFS): every node of this
    # one-machine cluster sees the same disk.
    return ["--space", SPACE, "--smoke", "--set", "model.cell=gru", "--set", "task.seq_len=10",
            "--num-samples", "2", "--experiment", experiment, "--storage", str(tmp / "storage"),
            "--results", str(tmp / "results"), *extra]


def submit(c: LocalCluster, args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(["bash", str(SUBMIT), "--address", c.address, "--", *args],
                            env=c.env, cwd=c.root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(job: subprocess.Popen[str]) -> str:
    try:
        out, _ = job.communicate(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        job.kill()
        out, _ = job.communicate()
        pytest.fail(f"the job did not finish in {JOB_TIMEOUT_S}s:\n{out[-5000:]}")
    assert job.returncode == 0, f"ray job submit exited {job.returncode}:\n{out[-8000:]}"
    return out


def recorded(tmp: Path, experiment: str) -> tuple[pd.DataFrame, dict[str, object]]:
    trials = pd.read_parquet(tmp / "results" / SPACE / "trials")
    settings = json.loads(
        (tmp / "results" / SPACE / "experiments" / f"{experiment}.json").read_text())
    return trials[trials["experiment"] == experiment], settings


def test_sweep_runs_as_a_job_across_nodes(cluster: LocalCluster, tmp_path: Path) -> None:
    workers = {cluster.node_id(f"worker{i}") for i in range(cluster.workers)}
    out = finish(submit(cluster, sweep_args(tmp_path, "across-nodes")))

    trials, settings = recorded(tmp_path, "across-nodes")
    assert 4 <= settings["trials"] <= 12
    assert len(trials) == settings["trials"] and trials["trial_id"].is_unique, out[-3000:]
    assert set(trials["status"]) <= {"completed", "pruned", "diverged"}, \
        trials[["trial_id", "status", "error"]]
    assert trials["node_id"].notna().all()
    assert set(trials["node_id"]) <= workers, "a trial ran on the head (it has no CPUs)"
    assert trials["node_id"].nunique() > 1, "all trials ran on one node"
    assert (trials["retries"] == 0).all()
    curves = pd.read_parquet(tmp_path / "results" / SPACE / "curves")
    assert set(curves["trial_id"]) == set(trials["trial_id"])


def test_sweep_survives_losing_a_worker_node(cluster: LocalCluster, tmp_path: Path) -> None:
    # Longer trials (more epochs, no pruning) so that one is surely running when the node dies.
    args = sweep_args(tmp_path, "lose-a-node", "--set", "train.epochs=8", "--pruner", "none",
                      "--max-failures", "3")
    victim, survivor = "worker1", "worker0"
    lost = cluster.node_id(victim)
    job = submit(cluster, args)

    seen_since: float | None = None
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while job.poll() is None and time.monotonic() < deadline:
        if cluster.running_trials(victim):
            seen_since = seen_since or time.monotonic()
            if time.monotonic() - seen_since >= 2.0:  # a trial is well under way there
                break
        else:
            seen_since = None
        time.sleep(0.25)
    assert job.poll() is None, "the sweep ended before a trial ran on the node to be killed"
    cluster.kill_node(victim)
    assert not tree(cluster.nodes[victim].pid), "processes of the killed node survived"

    out = finish(job)
    trials, settings = recorded(tmp_path, "lose-a-node")
    assert 4 <= settings["trials"] <= 12
    assert len(trials) == settings["trials"], out[-3000:]
    assert trials["trial_id"].is_unique, trials["trial_id"].value_counts()
    assert set(trials["status"]) <= {"completed", "diverged"}, \
        trials[["trial_id", "status", "error"]]
    retried = trials[trials["retries"] > 0]
    assert len(retried) >= 1, f"no trial was marked retried:\n{out[-5000:]}"
    # A retried trial finished somewhere else than on the lost node.
    assert lost not in set(retried["node_id"])
    assert set(retried["node_id"]) == {cluster.node_id(survivor)}
    # The lost attempt left no curve points behind: each step once, from the attempt that ended.
    curves = pd.read_parquet(tmp_path / "results" / SPACE / "curves")
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    assert not curves.duplicated(["trial_id", "replica", "phase", "step"]).any()
    # Ray declares the node dead once its health checks fail (the trials may recover sooner).
    deadline = time.monotonic() + 120
    while lost in cluster.alive_nodes():
        assert time.monotonic() < deadline, "Ray still reports the killed node alive"
        time.sleep(1)


def test_token_authentication_guards_job_submission(tmp_path: Path) -> None:
    # The path cluster/README.md describes: every node started with RAY_AUTH_MODE=token and the
    # same token; a client must present it. A head alone is enough, and a --dry-run sweep as the job.
    token = secrets.token_hex(16)
    c = LocalCluster(workers=0, token=token)
    try:
        c.start()
        args = ["--space", SPACE, "--smoke", "--dry-run"]
        no_token = {k: v for k, v in c.env.items() if k != "RAY_AUTH_TOKEN"}
        anonymous = subprocess.run(["bash", str(SUBMIT), "--address", c.address, "--", *args],
                                   env={**no_token, "RAY_AUTH_MODE": "disabled"}, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=300)
        assert anonymous.returncode != 0, "a job was accepted without the token"
        assert re.search(r"401|[Uu]nauthori[sz]ed|[Aa]uthentication",
                         anonymous.stdout + anonymous.stderr)
        wrong = subprocess.run(["bash", str(SUBMIT), "--address", c.address, "--", *args],
                               env={**c.env, "RAY_AUTH_TOKEN": secrets.token_hex(16)},
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert wrong.returncode != 0, "a job was accepted with a wrong token"
        accepted = subprocess.run(["bash", str(SUBMIT), "--address", c.address, "--", *args],
                                  env=c.env, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=300)
        assert accepted.returncode == 0, accepted.stdout[-5000:] + accepted.stderr[-3000:]
        assert "scientific points" in accepted.stdout
    finally:
        c.stop()
