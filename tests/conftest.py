"""Shared fixtures. Ray: one session-scoped local instance (never one per test, never under xdist)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_session() -> Iterator[str]:
    """A 2-CPU local Ray for the whole session; yields its address (for subprocess drivers).

    Token authentication is disabled (as in CI), and the workers get the repository on their
    ``PYTHONPATH`` so they can import the tests' analytic objectives (``tests.analytic``).
    """
    ray = pytest.importorskip("ray")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                   configure_logging=False)
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _trial_float_mode() -> None:
    """Every test computes in the CPU float mode trials run in (subnormals flushed, see
    :func:`pipeline.core.device.flush_denormals`), whichever test runs a trial first."""
    from pipeline.core.device import flush_denormals

    flush_denormals()
