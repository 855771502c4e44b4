"""The sweep's results as two Parquet tables, ``trials`` and ``curves``, with declared schemas.

Layout under a results root (a local folder or a URI such as ``s3://bucket/results``)::

    <root>/<space>/trials/<experiment>/trial-<trial_id>.parquet   one file per run, then
    <root>/<space>/trials/<experiment>/compacted.parquet           compacted at the end
    <root>/<space>/curves/<experiment>/...                         same for the curves
    <root>/<space>/experiments/<experiment>.json                   command, settings, versions
    <root>/<space>/experiments/<experiment>.lock                   its one writer, while it runs
    <root>/<space>/optuna.journal                                  the Optuna studies

so that one call loads a table across every experiment of a space::

    pd.read_parquet("results/copy_task/trials")

Every write is cast to the declared schema (otherwise pandas drops columns that only later files
have) and goes to a hidden temporary name first, then is renamed: readers never see half a file,
and rewriting a trial replaces its file (idempotent by trial id). Config keys are columns named
exactly as the canonical keys (``model.cell``, ``warmup.fraction``, ...). With ``replicas > 1`` a
trial has one ``trials`` row per seed (``replica`` 0, 1, ...). :func:`load` reads a table and drops
the duplicates a crash during compaction can leave.

Only pandas and pyarrow here: no torch, no ray.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.core.config import TrialConfig, field_type

__all__ = ["CURVES_SCHEMA", "TABLES", "TRIALS_SCHEMA", "NAME", "ExperimentLock", "LockHeld",
           "ResultsError",
           "Store", "duration", "load", "lock_holder", "lock_path", "provenance", "record_rows",
           "writable_folder"]

_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}
_UTC = pa.timestamp("us", tz="UTC")

TRIALS_SCHEMA = pa.schema(
    [("space", pa.string()), ("experiment", pa.string()), ("trial_id", pa.string()),
     ("replica", pa.int64()), ("point", pa.string()), ("sample", pa.int64()),
     ("study", pa.string()), ("optuna_trial", pa.int64()), ("tune_trial_id", pa.string()),
     ("protocol", pa.string()), ("smoke", pa.bool_()), ("status", pa.string()), ("error", pa.string()),
     ("diverged_phase", pa.string()), ("diverged_step", pa.int64()), ("objective", pa.float64())]
    + [(key, _ARROW[field_type(key)]) for key in TrialConfig.keys()]
    + [(k, pa.float64()) for k in ("vaa_init", "vaa_star_init", "vaa_warm", "vaa_star_warm",
                                   "best_valid_loss")]
    + [("best_epoch", pa.int64()), ("test_loss", pa.float64()), ("test_accuracy", pa.float64()),
       ("epochs_run", pa.int64()), ("warmup_steps_run", pa.int64()), ("n_params", pa.int64()),
       ("warmup_s", pa.float64()), ("train_s", pa.float64()),
       ("retries", pa.int64()), ("host", pa.string()), ("node_id", pa.string()),
       ("threads", pa.int64()), ("cpu_model", pa.string()), ("gpu_name", pa.string()),
       ("cuda_version", pa.string()), ("cudnn_version", pa.string()),
       ("native_kernels", pa.bool_()), ("flush_denormal", pa.bool_()), ("git_sha", pa.string()),
       ("python_version", pa.string()), ("torch_version", pa.string()),
       ("numpy_version", pa.string()), ("pyarrow_version", pa.string()),
       ("ray_version", pa.string()), ("optuna_version", pa.string()),
       ("started_at", _UTC), ("finished_at", _UTC)])
"""One row per run (per seed when ``replicas > 1``). ``trial_id`` is the run's stable identity,
``p<point>-s<sample>`` (the point's index in grid order, the sample's index at that point): a
rerun after a crash replaces, never adds; ``tune_trial_id`` names the Tune trial that ran it last.
``protocol`` identifies what the run held fixed (:meth:`search_spaces.space.SearchSpace.protocol`)
and ``smoke`` whether it was a ``--smoke`` run: rows of different protocols are never pooled.
``objective`` is the value told to the
trial's Optuna study (the best validation loss of a completed trial; null otherwise); ``device``
holds the device the trial actually ran on (the record's value, e.g. ``cpu``), not ``auto``;
``native_kernels`` whether the recurrent scans ran through the native CPU kernels
(:mod:`pipeline.core.scans.native`), ``flush_denormal`` whether subnormal floats were flushed to
zero on the CPU (null on a GPU; both null in tables written before they were recorded)."""

CURVES_SCHEMA = pa.schema(
    [("space", pa.string()), ("experiment", pa.string()), ("trial_id", pa.string()),
     ("replica", pa.int64()), ("phase", pa.string()), ("step", pa.int64()),
     ("train_loss", pa.float64()), ("valid_loss", pa.float64()), ("valid_accuracy", pa.float64()),
     ("vaa", pa.float64()), ("vaa_star", pa.float64()), ("elapsed_s", pa.float64())])
"""One row per trial x replica x phase x step. In the warm-up phase ``train_loss`` is the warm-up
loss (VAA* regression) and ``vaa_star`` the mean VAA* over layers."""

TABLES: dict[str, pa.Schema] = {"trials": TRIALS_SCHEMA, "curves": CURVES_SCHEMA}
_KEYS = {"trials": ["experiment", "trial_id", "replica"],
         "curves": ["experiment", "trial_id", "replica", "phase", "step"]}
_COMPACTED = "compacted.parquet"
T = TypeVar("T")


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""What a space or experiment name may be (a folder name, never a path): ``fullmatch`` it."""


class ResultsError(Exception):
    """A results folder that cannot be written, or a results file that cannot be read."""


def _cell(value: Any, typ: pa.DataType) -> Any:
    """Coerce one Python value to what pyarrow accepts for ``typ`` (None for missing)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if pa.types.is_floating(typ):
        return float(value)
    if isinstance(value, float) and value != value:  # NaN from a pandas frame: a missing value
        return None
    if pa.types.is_integer(typ):
        return int(value)
    if pa.types.is_boolean(typ):
        return bool(value)
    if pa.types.is_string(typ):
        return value if isinstance(value, str) else str(value)
    return value  # timestamps: datetime objects


def to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) as a table of exactly ``schema``: missing keys are null, extra keys dropped."""
    rows = list(rows)
    cols = {f.name: pa.array([_cell(r.get(f.name), f.type) for r in rows], type=f.type)
            for f in schema}
    return pa.table(cols, schema=schema)


def _tables_of(fs: pafs.FileSystem, folder: str) -> list[str]:
    """Visible Parquet files directly in ``folder`` (hidden temporaries excluded), sorted."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except OSError as exc:
        raise ResultsError(f"cannot list {folder}: {exc}") from None
    return sorted(i.path for i in infos if i.type == pafs.FileType.File
                  and i.base_name.endswith(".parquet") and i.base_name[0] not in "._")


def scan(read: Callable[[], T], attempts: int = 8) -> T:
    """Run ``read`` (which lists a table's files, then opens them) again when a listed file
    vanished before it was opened: a live sweep's compaction swaps the per-run files for one
    merged file between the two steps, and the next listing sees the merged file. Any other
    error, or a file that keeps vanishing, is raised."""
    for attempt in range(attempts):
        try:
            return read()
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * 2 ** attempt)
    raise AssertionError("unreachable")


def writable_folder(path: str, what: str = "folder") -> None:
    """Raise ResultsError unless the local folder ``path`` exists or can be created, and is
    writable. Nothing is created: the probe goes into the nearest existing folder."""
    near = path
    while not os.path.exists(near):
        near = os.path.dirname(near)
    if not os.path.isdir(near):
        raise ResultsError(f"{what} {path} cannot be created: {near} is a file")
    try:
        with tempfile.TemporaryFile(dir=near):
            pass
    except OSError as exc:
        raise ResultsError(f"{what} {path} is not writable: {exc}") from None


class Store:
    """One experiment's tables under a results root (a local path or a URI).

    Args:
        root: the results root (``--results``), e.g. ``results`` or ``s3://bucket/results``.
        space: the search-space name.
        experiment: the experiment name (a folder name: letters, digits, ``-``, ``_``, ``.``).
    """

    def __init__(self, root: str, space: str, experiment: str) -> None:
        try:
            self.fs, base = pafs.FileSystem.from_uri(root) if "://" in root else (
                pafs.LocalFileSystem(), _abspath(root))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ResultsError(f"cannot open the results root {root}: {exc}") from None
        self.root = root if "://" in root else _abspath(root)
        self.base = f"{base.rstrip('/')}/{space}"
        self.space, self.experiment = space, experiment

    # ----------------------------------------------------------------------------- paths
    def folder(self, table: str) -> str:
        """This experiment's folder of ``table``."""
        return f"{self.base}/{table}/{self.experiment}"

    @property
    def experiment_json(self) -> str:
        """Where the experiment's settings live (``experiments/<experiment>.json``)."""
        return f"{self.base}/experiments/{self.experiment}.json"

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def check_writable(self) -> None:
        """Raise ResultsError unless this space's folder exists or can be created, and is
        writable. Nothing is created: the probe file goes into the nearest existing folder."""
        if not self.is_local:
            try:
                self.fs.get_file_info(self.base)
            except OSError as exc:
                raise ResultsError(f"cannot reach the results root {self.base}: {exc}") from None
            return
        writable_folder(self.base, "results folder")

    # ----------------------------------------------------------------------------- writing
    def _write_bytes_atomic(self, path: str, write: Any) -> None:
        """Write to a hidden temporary name, then rename; on a local disk the file is flushed
        before the rename and the folder after it, so a power loss leaves the old state or the
        new one, never an empty file (the journal, which Optuna flushes, never runs ahead)."""
        folder, _, name = path.rpartition("/")
        tmp = f"{folder}/.{name}.tmp-{uuid.uuid4().hex}"
        self.fs.create_dir(folder, recursive=True)
        try:
            write(tmp)
            if self.is_local:
                _fsync(tmp)
            self.fs.move(tmp, path)
            if self.is_local:
                _fsync(folder)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise

    def write_table(self, table: str, name: str, rows: Sequence[Mapping[str, Any]]) -> str:
        """Write ``rows`` as ``<table>/<experiment>/<name>.parquet`` atomically; return the path."""
        arrow = to_table(rows, TABLES[table])
        path = f"{self.folder(table)}/{name}.parquet"
        self._write_bytes_atomic(path, lambda tmp: pq.write_table(arrow, tmp, filesystem=self.fs))
        return path

    def write_trial(self, trial_id: str, rows: Sequence[Mapping[str, Any]],
                    curves: Sequence[Mapping[str, Any]]) -> None:
        """Write one run's rows to both tables: curves first, so a trial row implies its curves;
        when the trial row cannot be written its curves are removed again (best effort; a
        resume removes any left)."""
        ident = {"space": self.space, "experiment": self.experiment, "trial_id": trial_id}
        curve_path = self.write_table("curves", f"trial-{trial_id}",
                                      [{**c, **ident} for c in curves])
        try:
            self.write_table("trials", f"trial-{trial_id}", [{**r, **ident} for r in rows])
        except BaseException:
            try:
                self.fs.delete_file(curve_path)
            except OSError:
                pass
            raise

    def write_json(self, path: str, obj: Mapping[str, Any]) -> None:
        data = json.dumps(obj, indent=2, default=str).encode()

        def write(tmp: str) -> None:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
        self._write_bytes_atomic(path, write)

    def read_json(self, path: str) -> dict[str, Any]:
        """Read a JSON file. Raises FileNotFoundError, or ResultsError when it is corrupt."""
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            raise FileNotFoundError(path)
        try:
            with self.fs.open_input_stream(path) as f:
                return json.loads(f.read().decode())
        except (ValueError, OSError) as exc:
            raise ResultsError(f"corrupt results file {path}: {exc}") from None

    # ----------------------------------------------------------------------------- reading
    def read(self, table: str) -> pd.DataFrame:
        """This experiment's rows of ``table``, duplicates dropped."""
        return self._read_arrow(table).to_pandas()

    def _read_arrow(self, table: str) -> pa.Table:
        def read() -> pa.Table:
            files = _tables_of(self.fs, self.folder(table))
            if not files:
                return to_table([], TABLES[table])
            data = ds.dataset(files, schema=TABLES[table], format="parquet", filesystem=self.fs)
            return _dedupe_arrow(data.to_table(), table)
        return scan(read)

    def trial_ids(self) -> set[str]:
        """Run ids (``trial_id``) of the runs already written (and so never run again)."""
        return set(self.read("trials")["trial_id"].astype(str))

    def recorded(self) -> dict[str, dict[str, Any]]:
        """Run id -> ``{"status", "objective", "optuna_trial"}`` of each run with a trials row."""
        rows = self.read("trials")
        rows = rows[rows["replica"].fillna(0) == 0]
        return {str(r.trial_id): {"status": r.status,
                                  "objective": None if pd.isna(r.objective) else
                                  float(r.objective),
                                  "optuna_trial": None if pd.isna(r.optuna_trial) else
                                  int(r.optuna_trial)}
                for r in rows.itertuples()}

    def drop_orphan_curves(self) -> int:
        """Delete curve files of runs without a trials row (a write cut between the two
        tables). Returns how many."""
        have = {f"trial-{t}.parquet" for t in self.trial_ids()}
        gone = 0
        for path in _tables_of(self.fs, self.folder("curves")):
            name = path.rpartition("/")[2]
            if name.startswith("trial-") and name not in have:
                self.fs.delete_file(path)
                gone += 1
        return gone

    def traces(self) -> list[str]:
        """What already exists of this experiment (its table folders, its settings file), so a
        new experiment never reuses an old one's name."""
        paths = [self.folder(t) for t in TABLES] + [self.experiment_json]
        return [p for p in paths if self.exists(p)]

    def check_readable(self) -> None:
        """Raise ResultsError naming the first Parquet file of this space that cannot be read in
        full or does not fit the declared schema (so a sweep never appends to a table that
        ``pd.read_parquet`` cannot load): every file's data is decoded, not only its footer."""
        for table, schema in TABLES.items():
            try:
                exps = self.fs.get_file_info(pafs.FileSelector(f"{self.base}/{table}",
                                                               allow_not_found=True))
            except OSError as exc:
                raise ResultsError(f"cannot list {self.base}/{table}: {exc}") from None
            for folder in sorted(i.path for i in exps if i.type == pafs.FileType.Directory
                                 and i.base_name[0] not in "._"):
                for path in _tables_of(self.fs, folder):
                    _check_file(self.fs, path, schema)

    def clean_stale(self) -> int:
        """Delete this experiment's hidden leftovers: temporary files of interrupted writes and
        the folders of an interrupted compaction. Call it only while holding the experiment's
        lock (a live writer's temporaries are not stale). Returns how many were removed."""
        removed = 0
        for table in TABLES:
            for path in self._hidden(self.folder(table), ".trial-", ".compacted"):
                self.fs.delete_file(path)
                removed += 1
            for path in self._hidden(f"{self.base}/{table}", f".{self.experiment}.compact-",
                                     kind=pafs.FileType.Directory):
                self.fs.delete_dir(path)
                removed += 1
        exp_dir = f"{self.base}/experiments"
        for path in self._hidden(exp_dir, f".{self.experiment}.json.tmp-"):
            self.fs.delete_file(path)
            removed += 1
        return removed

    def _hidden(self, folder: str, *prefixes: str, kind: Any = pafs.FileType.File) -> list[str]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except OSError:
            return []
        return [i.path for i in infos if i.type == kind
                and any(i.base_name.startswith(p) for p in prefixes)]

    def compact(self) -> bool:
        """Merge this experiment's per-run files of each table into ``compacted.parquet``.

        The merged table is written into a hidden sibling folder, which then takes the
        experiment folder's place in one atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``);
        the old folder, hidden, is deleted after. A reader or a crash sees either every per-run
        file or the one merged file, never both and never neither; :meth:`clean_stale` removes
        the hidden leftovers of a crash. Where no atomic exchange exists (a URI, another OS, a
        file system without it) the per-run files stay as they are. Returns True if compacted.
        """
        if not self.is_local or _exchange is None:
            return False
        for table in TABLES:
            folder = self.folder(table)
            files = _tables_of(self.fs, folder)
            if not files or files == [f"{folder}/{_COMPACTED}"]:
                continue
            arrow = self._read_arrow(table)  # in Arrow: int64 values never pass through float
            staging = f"{self.base}/{table}/.{self.experiment}.compact-{uuid.uuid4().hex}"
            os.makedirs(staging)
            pq.write_table(arrow, f"{staging}/{_COMPACTED}")
            _fsync(f"{staging}/{_COMPACTED}")
            _fsync(staging)
            try:
                _exchange(staging, folder)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                return False
            _fsync(os.path.dirname(folder))
            shutil.rmtree(staging)  # now the old per-run files
        return True


def duration(seconds: float) -> str:
    """``4m05s``, or ``1h07m`` from an hour on (the sweep's live view and its status)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def lock_path(store: Store, journal: str | None) -> str:
    """Where an experiment's lock lives: beside its settings for local results, else beside its
    journal (always a local file of the driver; a URI has no atomic create)."""
    if store.is_local:
        return f"{store.base}/experiments/{store.experiment}.lock"
    return f"{os.path.abspath(journal or '.')}.{store.experiment}.lock"


def lock_holder(path: str) -> dict[str, Any] | None:
    """The live holder of the lock at ``path`` (its recorded host, pid, start), or None when no
    process holds it. Reads only: a shared lock is tried and dropped at once."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
            except ValueError:
                info = {}
            return info if isinstance(info, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class LockHeld(Exception):
    """Another live process writes this experiment."""


class ExperimentLock:
    """One writer per experiment: an exclusive ``flock`` on a lock file that also names the
    holder (host, pid, start date, command).

    The kernel holds the lock for the holder's open file and drops it when the process ends,
    however it ends (kill -9 included): there is no stale state to judge. A lock file whose lock
    nobody holds is simply taken (its old content, the process that died, is reported). After
    locking, the path is checked to still be the locked file (a releasing holder unlinks it), so
    two processes never both hold it. Local file systems (and NFSv4, which maps ``flock`` to its
    byte-range locks).

    Args:
        path: the lock file (a local path).
        command: what the holder runs (shown to whoever is refused).
    """

    def __init__(self, path: str, command: str = "") -> None:
        self.path, self.command = path, command
        self._fd: int | None = None
        self._made: list[str] = []

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict[str, Any] | None:
        """The lock file's content, ``{}`` when unreadable, None when there is no lock file."""
        try:
            with open(self.path) as f:
                info = json.load(f)
            return dict(info) if isinstance(info, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            return {}

    def acquire(self) -> str | None:
        """Take the lock; returns a note when it was left by a process that is gone.

        Raises:
            LockHeld: naming the live holder.
            OSError: when the lock file cannot be created (a full disk, permissions).
        """
        folder = os.path.dirname(self.path)
        missing = []
        while folder and not os.path.exists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._made = missing
        try:
            for _ in range(10):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise LockHeld(_describe_holder(self.holder() or {})) from None
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # unlinked by a releasing holder meanwhile: lock the new file
                    os.close(fd)
                    continue
                old = os.read(fd, 1 << 16)
                mine = {"host": socket.gethostname(), "pid": os.getpid(),
                        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "command": self.command}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(mine).encode(), 0)
                os.fsync(fd)
                self._fd = fd
                return _left_by(old)
            raise LockHeld(f"could not take the lock {self.path}: it keeps changing hands")
        except BaseException:
            self._remove_made()
            raise

    def release(self) -> None:
        """Remove the lock file and release the lock (if held), then any folder made only for
        it that is still empty."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # while still locked: the next taker makes a new file
            os.close(self._fd)
            self._fd = None
        self._remove_made()

    def _remove_made(self) -> None:
        for folder in self._made:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty
        self._made = []


def _left_by(old: bytes) -> str | None:
    """The note for a lock file left (unlocked) by a process that died."""
    if not old.strip():
        return None
    try:
        info = json.loads(old)
    except ValueError:
        info = {}
    info = info if isinstance(info, dict) else {}
    return (f"took over the lock left by pid {info.get('pid', '?')} on {info.get('host', '?')} "
            f"(started {info.get('started_at', '?')}): that process is gone")


def _describe_holder(info: Mapping[str, Any]) -> str:
    where = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
    return (f"experiment is locked by {where} since {info.get('started_at', '?')} "
            f"({info.get('command') or 'a sweep'}); wait for it, or stop it")


def _first_line(exc: BaseException) -> str:
    line = next((x for x in str(exc).splitlines() if x.strip()), type(exc).__name__)
    return "".join(ch for ch in line if ch.isprintable()).strip()


def _check_file(fs: pafs.FileSystem, path: str, schema: pa.Schema) -> None:
    try:
        found = pq.read_schema(path, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"corrupt results file {path}: {_first_line(exc)}") from None
    extra = set(found.names) - set(schema.names)
    if extra:
        raise ResultsError(f"results file {path} has unknown column(s) "
                           f"{', '.join(sorted(extra))}")
    for f in found:
        want = schema.field(f.name).type
        same = f.type == want or pa.types.is_null(f.type) or (
            pa.types.is_large_string(f.type) and pa.types.is_string(want))
        if not same:
            raise ResultsError(f"results file {path}: column {f.name!r} is {f.type}, "
                               f"expected {want}")
    try:
        pq.read_table(path, filesystem=fs)  # decodes every page: corrupt data is caught here
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"corrupt results file {path}: {_first_line(exc)}") from None


def _fsync(path: str) -> None:
    """Flush a file or a folder to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _renameat2() -> Any:
    """``exchange(a, b)``: swap two paths atomically (Linux renameat2 RENAME_EXCHANGE), or None
    where the C library lacks it."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2

    def exchange(a: str, b: str) -> None:
        if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), a)
    return exchange


_exchange = _renameat2()


def provenance() -> dict[str, Any]:
    """Columns that say what produced a row: the git SHA (``-dirty`` when tracked files changed
    or untracked files exist; ``$WARMUP_SWEEP_GIT_SHA`` where there is no ``.git``, as in a
    cluster job or an image) and the versions of Python, torch, numpy, pyarrow, Ray and Optuna
    (read from package metadata; nothing imported)."""
    import platform
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {"git_sha": git_sha(repo), "python_version": platform.python_version(),
            **{f"{pkg}_version": version(pkg) for pkg in ("torch", "numpy", "pyarrow", "ray",
                                                            "optuna")}}


def git_sha(repo: str) -> str | None:
    """The commit of the checkout at ``repo``, ``-dirty`` when a tracked file changed or an
    untracked (not ignored) file exists; ``$WARMUP_SWEEP_GIT_SHA`` where ``repo`` is no git
    checkout (a cluster job's working dir, an image); None when neither says."""
    import subprocess

    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=repo,
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        if os.path.realpath(top) != os.path.realpath(repo):
            raise OSError("inside another repository")
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal"],
                               cwd=repo, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("WARMUP_SWEEP_GIT_SHA") or None


def _abspath(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def record_rows(record: Mapping[str, Any], **meta: Any
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``trials`` rows and ``curves`` rows of one ``run_trial`` record.

    Args:
        record: the flat record; with ``per_seed`` (a list of per-seed records) it gives one row
            per seed, ``replica`` = the seed's index, else one row with ``replica`` 0.
        **meta: columns added to every trials row (experiment bookkeeping, provenance).
    """
    seeds = record.get("per_seed") or [record]
    top = {k: v for k, v in record.items() if k not in ("curves", "per_seed")}
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for i, rec in enumerate(seeds):
        own = {k: v for k, v in rec.items() if k not in ("curves", "per_seed")}
        rows.append({**top, **own, **meta, "replica": i})
        for c in rec.get("curves") or ():
            loss = c.get("train_loss") if c.get("train_loss") is not None else c.get("loss")
            curves.append({**c, "train_loss": loss, "replica": i})
    return rows, curves


def _dedupe_arrow(data: pa.Table, table: str) -> pa.Table:
    """The last row of each key (run, replica[, phase, step]), in Arrow (no value is cast)."""
    keys = data.select(_KEYS[table]).to_pandas()
    keep = ~keys.duplicated(keep="last")
    if bool(keep.all()):
        return data
    return data.take(pa.array(keep.to_numpy().nonzero()[0]))


def load(space: str, table: str = "trials", *, results: str = "results",
         experiments: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Load one table of a space across all (or some) experiments, with the declared column types.

    Args:
        space: the search-space name, e.g. ``copy_task``.
        table: ``trials`` or ``curves``.
        results: the results root (a folder or a URI).
        experiments: keep only these experiments (a name or a list); all when None.

    Returns:
        A DataFrame with every column of the declared schema (older files' missing columns are
        null) and without the duplicate rows an interrupted compaction can leave.

    Raises:
        ValueError: for an unknown table.
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; valid tables: {', '.join(TABLES)}")
    store = Store(results, space, "_")
    root = f"{store.base}/{table}"
    if store.fs.get_file_info(root).type != pafs.FileType.Directory:
        return to_table([], TABLES[table]).to_pandas()
    flt = None
    if experiments is not None:
        names = [experiments] if isinstance(experiments, str) else list(experiments)
        flt = ds.field("experiment").isin(names)

    def read() -> pa.Table:
        data = ds.dataset(root, schema=TABLES[table], format="parquet", filesystem=store.fs,
                          partitioning=None)
        return _dedupe_arrow(data.to_table(filter=flt), table)
    return scan(read).to_pandas()
