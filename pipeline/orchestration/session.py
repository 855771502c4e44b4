"""The Ray session of a sweep: join a cluster or start a local Ray, check what it can run, route
its logs to a file. Imported only by :mod:`pipeline.sweep`."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from typing import Any

__all__ = ["BadInput", "check_resources", "connect", "quiet_logs", "reap_orphan_agents"]


class BadInput(Exception):
    """Input the sweep refuses: reported as one line on stderr, exit status 2."""


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
"""HTTP/2's client connection preface followed by an empty SETTINGS frame."""


def _check_reachable(address: str) -> None:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise BadInput(f"--address must be HOST:PORT (or auto) but got {address!r}")
    try:
        conn = socket.create_connection((host, int(port)), timeout=5)
    except OSError as exc:
        raise BadInput(f"cannot reach a Ray cluster at {address}: {exc}") from None
    # Ray's GCS speaks gRPC, i.e. HTTP/2: it answers the client's connection preface with a
    # SETTINGS frame (RFC 9113, 3.4). Anything else listening there would make ray.init retry
    # for minutes, printing a line every few seconds.
    try:
        with conn:
            conn.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError:
        head = b""
    if len(head) < 9 or head[3] != 0x04:
        raise BadInput(f"{address} accepts connections but is not a Ray cluster (no gRPC "
                       f"answer); pass the head's GCS address, HOST:6379") from None


_SESSION_LOG = re.compile(r"/session_[^/]*_(\d+)/logs/")
_RAY_PROCESS = re.compile(rb"^ray::|/ray/_private/|/ray/core/src/|/ray/dashboard/")
"""A process of Ray's own: an agent or worker (titled ``ray::...``) or one of its programs."""


def _orphaned_agent(pid: int, uid: int) -> bool:
    """Whether ``pid`` is a Ray agent or worker whose local Ray is gone: a process of Ray's own
    run by ``uid``, adopted by init (a live one's parent is its raylet), with the logs of a session
    whose raylet (``RAY_RAYLET_PID``, when its environment still says) or starting process
    (the pid ending the session folder's name) is dead."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if not _RAY_PROCESS.search(f.read(4096)):
                return False
        with open(f"/proc/{pid}/stat") as f:
            if int(f.read().rsplit(")", 1)[1].split()[1]) != 1:
                return False
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        owners = [int(env[b"RAY_RAYLET_PID"])] if env.get(b"RAY_RAYLET_PID", b"").isdigit() \
            else []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            m = _SESSION_LOG.search(os.readlink(f"/proc/{pid}/fd/{fd}"))
            if m:
                owners.append(int(m.group(1)))
                break
    except (OSError, ValueError, IndexError):
        return False
    return bool(owners) and not all(os.path.exists(f"/proc/{o}") for o in owners)


def reap_orphan_agents() -> list[int]:
    """Stop the agents a killed local Ray left behind; returns their pids.

    When the driver of a local Ray is killed (kill -9), its GCS and raylet go, but Ray 2.60's
    dashboard and runtime-env agents stay, adopted by init, for good. Such an agent is known
    for sure (see :func:`_orphaned_agent`); agents of a live Ray are never touched. Linux only
    (``/proc``); elsewhere nothing is done.
    """
    reaped: list[int] = []
    if not os.path.isdir("/proc"):
        return reaped
    uid = os.getuid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _orphaned_agent(int(entry), uid):
            try:
                os.kill(int(entry), signal.SIGTERM)
                reaped.append(int(entry))
            except OSError:
                pass
    deadline = time.monotonic() + 2.0
    while reaped and time.monotonic() < deadline and \
            any(os.path.exists(f"/proc/{p}") for p in reaped):
        time.sleep(0.1)
    for pid in reaped:  # they log that their raylet died, then hang in their shutdown
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return reaped


def connect(address: str | None, *, verbose: bool) -> bool:
    """Join the cluster at ``address``, or start a local Ray sized to this machine.

    Returns True when this call started (and so must stop) Ray. An already initialised Ray (a
    test session, a notebook) is used as it is.
    """
    import ray  # here, not at the top: the sweep's --help and bad input stay fast

    if address and address not in ("auto", "local"):
        _check_reachable(address)
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": verbose,
                              "logging_level": logging.INFO if verbose else logging.ERROR}
    try:
        if address and address != "local":
            ray.init(address=address, **kwargs)  # a cluster: it owns its resources
        else:
            reaped = reap_orphan_agents()
            if reaped:
                print(f"sweep: note: stopped {len(reaped)} Ray agent(s) left by a killed local "
                      f"Ray (pids {', '.join(map(str, reaped))})", file=sys.stderr, flush=True)
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"cannot connect to Ray at {address or 'a new local instance'}: {first}"
                       ) from None
    return True


def check_resources(cpus: float, gpus: float) -> tuple[float, float]:
    """Refuse requests no node can satisfy (Tune would wait for them forever); drop a GPU request
    on a cluster without GPUs, with a warning. Returns the (cpus, gpus) to request."""
    import ray  # here, not at the top: the sweep's --help and bad input stay fast

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
    max_gpu = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
    if not (math.isfinite(cpus) and math.isfinite(gpus)):
        raise BadInput(f"--cpus-per-trial and --gpus-per-trial must be finite numbers but got "
                       f"{cpus:g} and {gpus:g}")
    if cpus <= 0 or cpus > max_cpu:
        raise BadInput(f"--cpus-per-trial {cpus:g} must be > 0 and at most the largest node's "
                       f"{max_cpu:g} CPUs")
    if gpus < 0:
        raise BadInput(f"--gpus-per-trial must be >= 0 but got {gpus:g}")
    if gpus > 0 and max_gpu == 0:
        print(f"sweep: warning: --gpus-per-trial {gpus:g} but the cluster has no GPUs; the "
              f"trials run on CPUs", file=sys.stderr, flush=True)
        return cpus, 0.0
    if gpus > max_gpu:
        raise BadInput(f"--gpus-per-trial {gpus:g} exceeds the largest node's {max_gpu:g} GPUs")
    return cpus, gpus


_NOISE = ("Failed to fetch metrics for", "Could not fetch metrics for")
"""Tune's complaints that trials have no result.json/progress.csv: the sweep turns Tune's own
loggers off on purpose (Parquet is the record), so they say nothing."""


class _LogFile(logging.FileHandler):
    """The experiment's log file. A record it cannot write (a full disk) is dropped, silently:
    the sweep reports the failure that matters (its record) in one line of its own. Tune's
    "could not fetch metrics" noise (see :data:`_NOISE`) is left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(_NOISE):
            return False
        return bool(super().filter(record))

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            pass


def quiet_logs(path: str | None) -> logging.Handler | None:
    """Ray's and Tune's log records go to ``path`` (when given), and none reach the terminal,
    where the sweep prints its own lines (every failure that matters among them, pointing at
    the log); without a path, only errors reach the terminal. Returns the file handler, to be
    removed at the end."""
    logger = logging.getLogger("ray")
    for handler in logger.handlers:
        handler.setLevel(logging.CRITICAL if path else logging.ERROR)
    if not path:
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = _LogFile(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
