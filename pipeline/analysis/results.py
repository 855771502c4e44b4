"""The sweep's results as two Parquet tables, ``trials`` and ``curves``, with declared schemas.

Layout under a results root (a local folder or a URI such as ``s3://bucket/results``)::

    <root>/<space>/trials/<experiment>/trial-<trial_id>.parquet   one file per trial, then
    <root>/<space>/trials/<experiment>/compacted.parquet           compacted at the end
    <root>/<space>/curves/<experiment>/...                         same for the curves
    <root>/<space>/experiments/<experiment>.json                   command, settings, versions
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

import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.core.config import TrialConfig, field_type

__all__ = ["CURVES_SCHEMA", "TABLES", "TRIALS_SCHEMA", "ResultsError", "Store", "load", "provenance",
           "record_rows"]

_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}
_UTC = pa.timestamp("us", tz="UTC")

TRIALS_SCHEMA = pa.schema(
    [("space", pa.string()), ("experiment", pa.string()), ("trial_id", pa.string()),
     ("replica", pa.int64()), ("point", pa.string()), ("study", pa.string()),
     ("optuna_trial", pa.int64()), ("status", pa.string()), ("error", pa.string()),
     ("diverged_phase", pa.string()), ("diverged_step", pa.int64()), ("objective", pa.float64())]
    + [(key, _ARROW[field_type(key)]) for key in TrialConfig.keys()]
    + [(k, pa.float64()) for k in ("vaa_init", "vaa_star_init", "vaa_warm", "vaa_star_warm",
                                   "best_valid_loss")]
    + [("best_epoch", pa.int64()), ("test_loss", pa.float64()), ("test_accuracy", pa.float64()),
       ("epochs_run", pa.int64()), ("warmup_steps_run", pa.int64()), ("n_params", pa.int64()),
       ("warmup_s", pa.float64()), ("train_s", pa.float64()),
       ("retries", pa.int64()), ("host", pa.string()), ("node_id", pa.string()),
       ("threads", pa.int64()), ("gpu_name", pa.string()), ("native_kernels", pa.bool_()),
       ("flush_denormal", pa.bool_()), ("git_sha", pa.string()),
       ("python_version", pa.string()), ("torch_version", pa.string()),
       ("ray_version", pa.string()), ("optuna_version", pa.string()),
       ("started_at", _UTC), ("finished_at", _UTC)])
"""One row per trial (per seed when ``replicas > 1``). ``objective`` is the value told to the
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


class ResultsError(Exception):
    """A results folder that cannot be written, or a results file that cannot be read."""


def _cell(value: Any, typ: pa.DataType) -> Any:
    """Coerce one Python value to what pyarrow accepts for ``typ`` (None for missing)."""
    if value is None:
        return None
    if pa.types.is_floating(typ):
        return float(value)
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
        path = self.base
        while not os.path.exists(path):
            path = os.path.dirname(path)
        if not os.path.isdir(path):
            raise ResultsError(f"results folder {self.base} cannot be created: {path} is a file")
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            raise ResultsError(f"results folder {self.base} is not writable: {exc}") from None

    # ----------------------------------------------------------------------------- writing
    def _write_bytes_atomic(self, path: str, write: Any) -> None:
        folder, _, name = path.rpartition("/")
        tmp = f"{folder}/.{name}.tmp-{uuid.uuid4().hex}"
        self.fs.create_dir(folder, recursive=True)
        try:
            write(tmp)
            self.fs.move(tmp, path)
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
        """Write one trial's rows to both tables (curves first, so a trial row implies its curves)."""
        ident = {"space": self.space, "experiment": self.experiment, "trial_id": trial_id}
        self.write_table("curves", f"trial-{trial_id}", [{**c, **ident} for c in curves])
        self.write_table("trials", f"trial-{trial_id}", [{**r, **ident} for r in rows])

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
        files = _tables_of(self.fs, self.folder(table))
        if not files:
            return to_table([], TABLES[table]).to_pandas()
        data = ds.dataset(files, schema=TABLES[table], format="parquet", filesystem=self.fs)
        return _dedupe(data.to_table().to_pandas(), table)

    def trial_ids(self) -> set[str]:
        """Ids of the trials already written (and so never written or run again)."""
        return set(self.read("trials")["trial_id"].astype(str))

    def check_readable(self) -> None:
        """Raise ResultsError naming the first Parquet file of this space that cannot be read or
        does not fit the declared schema (so a sweep never appends to a broken table)."""
        for table, schema in TABLES.items():
            try:
                exps = self.fs.get_file_info(pafs.FileSelector(f"{self.base}/{table}",
                                                               allow_not_found=True))
            except OSError as exc:
                raise ResultsError(f"cannot list {self.base}/{table}: {exc}") from None
            for folder in sorted(i.path for i in exps if i.type == pafs.FileType.Directory):
                for path in _tables_of(self.fs, folder):
                    try:
                        found = pq.read_schema(path, filesystem=self.fs)
                    except (OSError, pa.ArrowException) as exc:
                        raise ResultsError(f"corrupt results file {path}: {exc}") from None
                    extra = set(found.names) - set(schema.names)
                    if extra:
                        raise ResultsError(f"results file {path} has unknown column(s) "
                                           f"{', '.join(sorted(extra))}")

    def compact(self) -> None:
        """Merge this experiment's per-trial files of each table into ``compacted.parquet``.

        The merged file replaces the old one atomically before the per-trial files are deleted; a
        crash in between leaves rows twice, which :func:`load` and the next compaction drop.
        """
        for table in TABLES:
            files = _tables_of(self.fs, self.folder(table))
            parts = [f for f in files if not f.endswith("/" + _COMPACTED)]
            if not parts:
                continue
            rows = self.read(table)
            arrow = pa.Table.from_pandas(rows, schema=TABLES[table], preserve_index=False)
            path = f"{self.folder(table)}/{_COMPACTED}"
            self._write_bytes_atomic(path, lambda tmp, a=arrow: pq.write_table(
                a, tmp, filesystem=self.fs))
            for f in parts:
                self.fs.delete_file(f)


def provenance() -> dict[str, Any]:
    """Columns that say what produced a row: git SHA (``-dirty`` when uncommitted changes) and
    the versions of Python, torch, Ray and Optuna (read from package metadata; nothing imported)."""
    import platform
    import subprocess
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        sha += "-dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {"git_sha": sha, "python_version": platform.python_version(),
            "torch_version": version("torch"), "ray_version": version("ray"),
            "optuna_version": version("optuna")}


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


def _dedupe(df: pd.DataFrame, table: str) -> pd.DataFrame:
    return df.drop_duplicates(subset=_KEYS[table], keep="last").reset_index(drop=True)


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
    data = ds.dataset(root, schema=TABLES[table], format="parquet", filesystem=store.fs,
                      partitioning=None)
    flt = None
    if experiments is not None:
        names = [experiments] if isinstance(experiments, str) else list(experiments)
        flt = ds.field("experiment").isin(names)
    return _dedupe(data.to_table(filter=flt).to_pandas(), table)
