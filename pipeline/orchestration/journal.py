"""The Optuna journal of a space's studies: written so that it never corrupts, checked, mended,
and read without writing (for :mod:`pipeline.status`). Optuna only, no Ray."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

__all__ = ["MendingJournalBackend", "check_journal", "journal_lock", "read_studies",
           "repair_journal", "study_states"]


def read_studies(path: str, names: Sequence[str]) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """The trials of the named studies that exist, read without writing anything (a missing
    journal reads as empty). For watchers, on any machine that sees the file."""
    if not os.path.isfile(path):
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(path))  # the file exists: nothing is created
    existing = set(optuna.get_all_study_names(storage))
    return {n: optuna.load_study(study_name=n, storage=storage).get_trials(deepcopy=False)
            for n in names if n in existing}


@contextlib.contextmanager
def journal_lock(path: str) -> Iterator[None]:
    """Hold Optuna's own lock of the journal file (the one its writers take for each append), so
    no other process is mid-append while the journal is checked or repaired."""
    if not os.path.exists(path):  # nothing to guard; create nothing
        yield
        return
    lock = JournalFileSymlinkLock(path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def check_journal(path: str) -> None:
    """Raise ValueError when the journal file exists but is not a clean journal.

    Optuna skips a malformed *last* line (it may be mid-write by another process), but once a new
    line is appended after it the whole journal becomes unreadable; so every line is checked here.
    A last line cut by a kill is the one defect :func:`repair_journal` mends.
    """
    if not os.path.exists(path):
        return
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    raise ValueError(f"line {number} is incomplete")
                json.loads(line)
        JournalStorage(JournalFileBackend(path)).get_all_studies()
    except (OSError, ValueError) as exc:
        raise ValueError(f"corrupt results file {path}: {exc}") from None


def repair_journal(path: str) -> int:
    """Cut an incomplete last line (a write interrupted by a kill or a full disk) off the journal,
    under Optuna's own lock of it. Returns the bytes removed.

    Such a line was never acknowledged to the sweep, so dropping it loses nothing the record
    relies on: the reconciliation of a resume re-tells what it held. Only the last line, and only
    when it lacks its newline; anything else stays for :func:`check_journal` to refuse.
    """
    if not os.path.isfile(path):
        return 0
    with journal_lock(path):
        return _cut_tail(path)


def _cut_tail(path: str) -> int:
    """Truncate ``path`` after its last newline (the caller holds the journal's lock)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        back = min(size, 1 << 20)
        f.seek(size - back)
        tail = f.read(back)
        if tail.rfind(b"\n") < 0 and back < size:
            raise ValueError(f"corrupt results file {path}: its last line is over 1 MiB long")
        keep = size - back + tail.rfind(b"\n") + 1  # 0 when the whole file is one cut line
        f.truncate(keep)
        os.fsync(f.fileno())
    return size - keep


class MendingJournalBackend(JournalFileBackend):
    """Optuna's journal file, written so that no writer ever appends after a cut line.

    Several experiments of a space share one journal. A line cut by a kill or a full disk would
    become corrupt the moment another writer appended after it, and then every experiment of the
    space would be unreadable. So each append, under Optuna's lock of the file, first cuts a
    cut last line (never acknowledged to anyone), and a write that fails is truncated back.
    Reading is Optuna's own.
    """

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._path = file_path
        self._guard = JournalFileSymlinkLock(file_path)  # the same lock file Optuna's use

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        self._guard.acquire()
        try:
            _cut_tail(self._path)
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
            try:
                start = os.lseek(fd, 0, os.SEEK_END)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except BaseException:
                    os.ftruncate(fd, start)
                    raise
            finally:
                os.close(fd)
        finally:
            self._guard.release()


def study_states(journal: str, names: Sequence[str]) -> dict[str, int]:
    """Trial states of the named studies in a journal: ``{"COMPLETE": n, "PRUNED": m, ...}``."""
    storage = JournalStorage(JournalFileBackend(journal))
    counts: dict[str, int] = {}
    for name in names:
        for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts
