"""Result tables of a study: written one finished run at a time, read back as DataFrames.

A study folder ``results/<study>/`` holds::

    grid.toml            the grid file run there last (copied at every ``nbcnn grid``)
    grids/<sha1>.toml    every grid file version that ran there (12 hex digits of its text's
                         sha1); each record names its own in ``grid_file``
    records/<key>.json   one file per cell: its settings, metrics and epochs (the source of truth)
    runs.csv             one row per run (merged from the records)
    epochs.csv           one row per run and epoch (tidy, long format)
    models/<key>.npz     trained models (``Sequential.load``), when the grid saves them
    predictions/<key>.npz  test labels and predictions, and a few test images
    logs/<key>.txt       the traceback of a failed run
    checkpoints/<key>.ckpt.npz  a running cell's state after its last epoch (deleted once the
                         cell's ok record is written; a killed grid continues the cell from it)
    figures/*.png        from ``nbcnn plot``

Safety: every file is written to a temporary name in the same folder, flushed, fsync'ed and
renamed over the target (``os.replace``, atomic on POSIX), the record last: a run is recorded
exactly when its record file exists, whole. A process killed at any moment (Ctrl-C, kill -9) loses
at most the epoch in flight of each running cell (the next ``nbcnn grid`` continues the cell from
its checkpoint); there is never a torn or duplicated row, since a key names one record
file and the tables are rebuilt from the records. ``runs.csv`` and ``epochs.csv`` are rewritten
(atomically) after each run, and again when a grid starts and ends, so a grid killed between a
record and its tables leaves them right at its next start (even with nothing left to run);
``load`` rebuilds the tables from the records when they are there, so it never sees stale CSVs.
A lock file keeps two ``nbcnn grid`` processes out of one folder.

A study may grow: a second grid file with the same ``name`` (new axis values, more seeds) adds its
runs to the folder, and every view (``load``, ``runs.csv``, ``nbcnn report``, ``nbcnn plot``)
shows all of the folder's runs. ``harness.run_grid`` refuses a grid whose fixed settings conflict
with the runs already there (see ``conflicts``) unless forced.
A failed record is replaced by the next attempt; an ok record is never replaced by a failed one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .files import atomic_write

RECORD_FORMAT = "nbcnn.run"

#: runs.csv: identity, then the settings (in ``nbcnn.settings`` order, data.<option> included),
#: then these measurements, in this order
METRIC_COLUMNS = [
    "arch_spec", "params", "n_train", "n_val", "n_test", "classes",
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "best_val_accuracy", "best_epoch",
    "stopped_epoch", "kept_epoch", "resumed_epochs", "warning",
    "test_loss", "test_accuracy",
    "wall_seconds", "data_seconds", "compile_seconds", "warmup_seconds",
    "fit_seconds", "seconds_per_epoch", "images_per_second", "test_seconds",
    "device", "num_threads", "hostname", "pid", "python", "nbcnn_version", "numpy_version",
    "numba_version", "pyopencl_version", "git_commit", "started", "finished", "model_file",
]
EPOCH_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
                 "elapsed_seconds", "images_per_second", "learning_rate", "warning", "kept"]
#: settings always in epochs.csv (besides those that vary), for plots' hue and facets
EPOCH_SETTINGS = ["dataset", "arch", "backend", "batch_size", "seed"]


def _npz_bytes(arrays: dict) -> bytes:
    import io
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _clean(value):
    """JSON-safe: numpy scalars to Python, NaN stays NaN (json writes it as NaN)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# ---- tables from records -------------------------------------------------------------------
def _setting_columns(records) -> list:
    from .settings import SETTINGS
    extra = sorted({k for r in records for k in r["settings"]} - set(SETTINGS))
    return list(SETTINGS) + extra


def _run_row(record: dict) -> dict:
    row = {"key": record["key"], "study": record.get("study", ""), "status": record["status"],
           "error": record.get("error", ""), "grid_file": record.get("grid_file", "")}
    for k, v in record["settings"].items():
        row[k] = ",".join(v) if isinstance(v, list) else v
    row.update(record.get("metrics", {}))
    return row


def tables(records) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, epochs) DataFrames from record dicts, one per key (the best: latest ok)."""
    records = dedupe(records)
    settings = _setting_columns(records)
    run_cols = ["key", "study", "status", "error", "grid_file"] + settings + METRIC_COLUMNS
    rows = [_run_row(r) for r in records]
    runs = pd.DataFrame(rows)
    extra = [c for c in runs.columns if c not in run_cols]
    runs = runs.reindex(columns=run_cols + extra)
    # settings no cell uses (e.g. beta1 in an all-SGD study) are left out
    unused = [c for c in settings if c != "arch" and runs[c].isna().all()]
    runs = runs.drop(columns=unused)
    runs["error"] = runs["error"].fillna("")
    runs["grid_file"] = runs["grid_file"].fillna("")

    from .settings import varying
    vary = varying([r["settings"] for r in records], settings)
    keep = [k for k in settings if k in EPOCH_SETTINGS or k in vary]
    erows = []
    for r in records:
        if r["status"] != "ok":
            continue
        base = {"key": r["key"]}
        for k in keep:
            v = r["settings"].get(k)
            base[k] = ",".join(v) if isinstance(v, list) else v
        for e in r.get("epochs", []):
            erows.append({**base, **{c: e.get(c) for c in EPOCH_COLUMNS}})
    epochs = pd.DataFrame(erows, columns=["key"] + keep + EPOCH_COLUMNS)
    return runs, epochs


def _stamp(record, name: str) -> str:
    """A record's ``started`` / ``finished`` time (in its metrics; a runs.csv row has it at the
    top level), '' when absent."""
    v = record.get("metrics", record).get(name)
    return "" if v is None or v != v else str(v)


def dedupe(records) -> list:
    """One record per key: the latest ok one if any, else the latest; ordered by start time,
    then key. ``records`` are run records or runs.csv rows (dicts)."""
    best: dict = {}
    for r in records:
        k = r["key"]
        old = best.get(k)
        if old is None:
            best[k] = r
            continue
        rank_new = (r["status"] == "ok", _stamp(r, "finished"))
        rank_old = (old["status"] == "ok", _stamp(old, "finished"))
        if rank_new >= rank_old:
            best[k] = r
    return sorted(best.values(), key=lambda r: (_stamp(r, "started"), r["key"]))


def read_records(study_dir) -> list:
    folder = os.path.join(os.fspath(study_dir), "records")
    out = []
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable run record ({exc})") from None
        if record.get("format") != RECORD_FORMAT:
            raise ValueError(f"{path}: not an nbcnn run record")
        out.append(record)
    return out


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format=None)


# ---- writing -------------------------------------------------------------------------------
#: the sub-folders of a study folder that a grid writes into
SUBFOLDERS = ("records", "models", "predictions", "logs", "grids", "checkpoints")


class ResultsFolderError(RuntimeError):
    """A results folder that cannot be created or written (the message names the path)."""


def _folder_error(folder, exc: OSError) -> ResultsFolderError:
    what = exc.strerror or str(exc)
    path = exc.filename or folder
    return ResultsFolderError(f"cannot use {folder} as a results folder: {path}: {what}")


def checkpoint_file(study_dir, key: str) -> str:
    """The checkpoint of the study's cell ``key`` while it runs (absolute)."""
    return os.path.abspath(os.path.join(study_dir, "checkpoints", f"{key}.ckpt.npz"))


class ResultStore:
    """The writer of one study folder (the client, in a Dask run: workers write nothing)."""

    def __init__(self, study_dir, study: str = ""):
        self.dir = os.fspath(study_dir)
        self.study = study or os.path.basename(os.path.normpath(self.dir))
        if os.path.exists(self.dir) and not os.path.isdir(self.dir):
            raise ResultsFolderError(f"cannot use {self.dir} as a results folder: it is a file")
        try:
            for sub in SUBFOLDERS:
                os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        except OSError as exc:
            raise _folder_error(self.dir, exc) from None
        self._lock_file = None
        self.grid_file = ""                 # grids/<sha1>.toml of the grid writing now
        self.records = {r["key"]: r for r in dedupe(read_records(self.dir))}

    # -- lock: one writer per folder; the OS drops it when the process dies (even kill -9)
    def lock(self) -> None:
        import fcntl
        path = os.path.join(self.dir, ".lock")
        try:
            f = open(path, "a+")
        except OSError as exc:
            raise _folder_error(self.dir, exc) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip()
            f.close()
            raise RuntimeError(f"{self.dir} is in use by another nbcnn grid ({who or 'unknown'}); "
                               "wait for it or use another --results folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        self._lock_file = f
        self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        """Temporary files of a writer that was killed mid-write (only safe under the lock)."""
        for folder in (self.dir, *(os.path.join(self.dir, s) for s in SUBFOLDERS)):
            with contextlib.suppress(OSError):
                for name in os.listdir(folder):
                    if name.startswith(".tmp-"):
                        with contextlib.suppress(OSError):
                            os.unlink(os.path.join(folder, name))

    def check_writable(self) -> None:
        """Create and remove a file in the folder and each sub-folder: a grid finds out that it
        cannot record its runs before it trains any (not after, with orphan model files)."""
        for folder in (self.dir, *(os.path.join(self.dir, s) for s in SUBFOLDERS)):
            try:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-probe-")
                os.close(fd)
                os.unlink(tmp)
            except OSError as exc:
                raise _folder_error(self.dir, exc) from None

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self):
        self.lock()
        return self

    def __exit__(self, *exc):
        self.unlock()

    # -- state
    def status(self, key: str) -> str | None:
        r = self.records.get(key)
        return r["status"] if r else None

    def done(self) -> set:
        """Keys of the runs finished with status ok."""
        return {k for k, r in self.records.items() if r["status"] == "ok"}

    def copy_grid(self, text: str) -> str:
        """Keep the grid file's ``text`` as ``grid.toml`` (the latest) and as
        ``grids/<sha1>.toml`` (one per version, never overwritten by another); the runs recorded
        from now on name the latter (returned, relative to the folder) in ``grid_file``."""
        import hashlib
        rel = os.path.join("grids", hashlib.sha1(text.encode("utf-8")).hexdigest()[:12] + ".toml")
        if not os.path.isfile(os.path.join(self.dir, rel)):
            atomic_write(os.path.join(self.dir, rel), text)
        atomic_write(os.path.join(self.dir, "grid.toml"), text)
        self.grid_file = rel
        return rel

    # -- one finished run
    def add(self, result: dict) -> dict:
        """Record a ``run_cell`` result: artifacts first, the record last, then the tables."""
        key = result["key"]
        old = self.records.get(key)
        if old is not None and old["status"] == "ok" and result["status"] != "ok":
            return old                          # never lose a good run to a later failure
        metrics = dict(result.get("metrics", {}))
        if result.get("model") is not None:
            rel = os.path.join("models", f"{key}.npz")
            atomic_write(os.path.join(self.dir, rel), result["model"])
            metrics["model_file"] = rel
        if result.get("predictions") is not None:
            atomic_write(os.path.join(self.dir, "predictions", f"{key}.npz"),
                         _npz_bytes(result["predictions"]))
        if result.get("traceback"):
            atomic_write(os.path.join(self.dir, "logs", f"{key}.txt"), result["traceback"])
        record = {"format": RECORD_FORMAT, "version": 1, "key": key,
                  "study": result.get("study") or self.study, "status": result["status"],
                  "error": result.get("error", ""), "grid_file": self.grid_file,
                  "settings": _clean(result["settings"]),
                  "metrics": _clean(metrics), "epochs": _clean(result.get("epochs", []))}
        atomic_write(os.path.join(self.dir, "records", f"{key}.json"),
                     json.dumps(record, indent=1, allow_nan=True))
        self.records[key] = record
        if record["status"] == "ok":          # a failed run keeps its checkpoint for the retry
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.checkpoint_path(key))
        self.write_tables()
        return record

    def checkpoint_path(self, key: str) -> str:
        """Where the running cell ``key`` checkpoints after every epoch (absolute, so a worker
        with another working folder writes the same file)."""
        return checkpoint_file(self.dir, key)

    def write_tables(self) -> None:
        """runs.csv and epochs.csv from the records (all of them), atomically."""
        runs, epochs = tables(list(self.records.values()))
        atomic_write(os.path.join(self.dir, "runs.csv"), _csv(runs))
        atomic_write(os.path.join(self.dir, "epochs.csv"), _csv(epochs))


def conflicts(records, cells) -> list:
    """The settings on which a grid's ``cells`` (``harness.Cell``) cannot join ``records``:
    ``(setting, value in every cell, values in the records)`` for each setting that has one
    value across all the cells and one other value across all the records (a fixed setting
    changed, e.g. epochs 2 -> 5, which would mix runs that are not comparable). A setting the
    grid varies, or one the records already vary, extends the study and is no conflict."""
    def values(settings_list, k):
        return {json.dumps(s[k], sort_keys=True) for s in settings_list if k in s}

    old = [r["settings"] for r in records]
    new = [c.settings for c in cells]
    if not old or not new:
        return []
    found = []
    for k in sorted({k for s in new for k in s} & {k for s in old for k in s}):
        if not all(k in s for s in new) or not all(k in s for s in old):
            continue                        # e.g. momentum: only some cells' optimizer has it
        a, b = values(new, k), values(old, k)
        if len(a) == 1 and len(b) == 1 and a != b:
            found.append((k, new[0][k], old[0][k]))
    return found


# ---- reading -------------------------------------------------------------------------------
@dataclass
class Results:
    """A study's tables. Unpacks as ``runs, epochs = nbcnn.results.load(dir)``."""

    dir: str
    runs: pd.DataFrame
    epochs: pd.DataFrame

    def __iter__(self):
        return iter((self.runs, self.epochs))

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.dir))

    def ok(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"]

    def best(self, metric: str = "test_accuracy") -> str | None:
        """Key of the ok run with the highest ``metric`` (None if none)."""
        ok = self.ok()
        if ok.empty or metric not in ok or ok[metric].isna().all():
            return None
        return str(ok.loc[ok[metric].idxmax(), "key"])

    def find(self, key: str) -> str:
        """The full key of a run from a unique prefix."""
        keys = [k for k in self.runs["key"] if str(k).startswith(key)]
        if len(keys) != 1:
            raise ValueError(f"{self.dir}: {'no' if not keys else 'more than one'} run with key "
                             f"{key!r}")
        return keys[0]

    def model_path(self, key: str) -> str | None:
        path = os.path.join(self.dir, "models", f"{self.find(key)}.npz")
        return path if os.path.isfile(path) else None

    def load_model(self, key: str, backend=None):
        from .model import Sequential
        path = self.model_path(key)
        if path is None:
            raise FileNotFoundError(f"{self.dir}: no saved model for run {key} (the grid did not "
                                    "save models: set save_models = true)")
        try:
            return Sequential.load(path, backend=backend)
        except ValueError as exc:
            raise ValueError(str(exc) if path in str(exc) else f"{path}: {exc}") from None
        except (OSError, EOFError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
            # a truncated or damaged file (the model file is left as it is)
            raise ValueError(f"{path}: not a readable model file "
                             f"({type(exc).__name__}: {exc})") from None

    def predictions(self, key: str) -> dict | None:
        """{'y_true', 'y_pred', 'classes', 'sample_x', 'sample_y'} of a run, or None."""
        path = os.path.join(self.dir, "predictions", f"{self.find(key)}.npz")
        if not os.path.isfile(path):
            return None
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}


def grid_keys(study_dir) -> set | None:
    """Keys of the cells of the folder's ``grid.toml`` (None if absent or no longer valid)."""
    path = os.path.join(os.fspath(study_dir), "grid.toml")
    if not os.path.isfile(path):
        return None
    from .harness.spec import load_grid
    try:
        return {c.key for c in load_grid(path).cells}
    except (ValueError, TypeError):
        return None


def load(study_dir, grid_only: bool = False) -> Results:
    """The tables of a study folder (from its records if present, else its CSV files), one row
    per key: the latest ok run, else the latest failed one; every run of the folder, whichever
    grid file version made it (as ``runs.csv``, ``nbcnn report`` and ``nbcnn plot`` show them).
    ``grid_only``: only the runs of the cells of the folder's ``grid.toml`` (the grid file run
    there last)."""
    study_dir = os.fspath(study_dir)
    if not os.path.isdir(study_dir):
        raise FileNotFoundError(f"no results folder {study_dir}")
    records = read_records(study_dir)
    keys = grid_keys(study_dir) if grid_only else None
    if records or os.path.isdir(os.path.join(study_dir, "records")):
        if keys is not None:
            records = [r for r in records if r["key"] in keys]
        runs, epochs = tables(records)
        return Results(study_dir, runs, epochs)
    runs_csv = os.path.join(study_dir, "runs.csv")
    if not os.path.isfile(runs_csv):
        raise FileNotFoundError(f"{study_dir}: no runs.csv and no records/ (not a results folder?)")
    runs = pd.read_csv(runs_csv)
    epochs_csv = os.path.join(study_dir, "epochs.csv")
    epochs = pd.read_csv(epochs_csv) if os.path.isfile(epochs_csv) else pd.DataFrame()
    if not runs.empty:
        runs = pd.DataFrame(dedupe(runs.to_dict("records")), columns=runs.columns)
        if not epochs.empty and "key" in epochs:
            epochs = epochs[epochs["key"].isin(runs.loc[runs["status"] == "ok", "key"])]
            epochs = epochs.drop_duplicates(["key", "epoch"], keep="last")
    runs["error"] = runs.get("error", pd.Series("", index=runs.index)).fillna("")
    if keys is not None:
        runs = runs[runs["key"].isin(keys)]
        if "key" in epochs:
            epochs = epochs[epochs["key"].isin(keys)]
    return Results(study_dir, runs.reset_index(drop=True), epochs.reset_index(drop=True))


def fmt_seconds(s) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return ""
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}min"


#: settings that tell runs apart in a summary (seeds are averaged over)
SUMMARY_SETTINGS = ["dataset", "arch", "backend", "optimizer", "lr", "batch_size", "epochs",
                    "n_train", "num_threads"]


def summarize(runs: pd.DataFrame, by=None) -> pd.DataFrame:
    """One row per combination of the settings ``by`` (default: the study, ``SUMMARY_SETTINGS``
    and any other setting but the seed that varies among the runs) over the ok runs, that is
    over seeds: how many seeds, test accuracy
    mean and standard deviation, best validation accuracy, seconds per epoch and images per
    second. ``nbcnn report`` and the table at the end of ``nbcnn grid`` are this."""
    from .settings import ABSENT_WHEN_DEFAULT, NAMES, default, varying
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    ok = ok.assign(**{k: ok[k].map(lambda v, k=k: _shown_default(k, v, default))
                      for k in ABSENT_WHEN_DEFAULT if k in ok})
    if by is None:
        others = varying(ok, [k for k in NAMES if k in ok and k not in SUMMARY_SETTINGS
                              and k != "seed"])
        by = ["study", *SUMMARY_SETTINGS, *others]
    by = [c for c in by if c in ok]
    if ok.empty:
        return pd.DataFrame(columns=by)
    ok = ok.reindex(columns=[*ok.columns, *(c for c in SUMMARY_METRICS if c not in ok)])
    grouped = ok.groupby(by, sort=False, dropna=False)
    return grouped.agg(seeds=("test_accuracy", "size"),
                       test_accuracy=("test_accuracy", "mean"),
                       test_accuracy_sd=("test_accuracy", "std"),
                       best_val_accuracy=("best_val_accuracy", "mean"),
                       seconds_per_epoch=("seconds_per_epoch", "mean"),
                       images_per_second=("images_per_second", "mean")).reset_index()


def _shown_default(name, value, default):
    """A run's value of an ``ABSENT_WHEN_DEFAULT`` setting, its default where it has none, as
    a summary shows it ("off" for early stopping that is off)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = default(name)
    return "off" if value is None else value


#: what a summary averages over seeds
SUMMARY_METRICS = ["test_accuracy", "best_val_accuracy", "seconds_per_epoch",
                   "images_per_second"]
#: the summary's column headers, short
HEADERS = {"test_accuracy": "test acc %", "test_accuracy_sd": "sd",
           "best_val_accuracy": "best val %", "seconds_per_epoch": "s/epoch",
           "images_per_second": "img/s", "num_threads": "threads", "batch_size": "batch",
           "n_train": "train images"}


def _cell(col, v) -> str:
    """One value of a summary as it is shown (accuracies in %, times rounded)."""
    if isinstance(v, float) and math.isnan(v):
        return ""
    if col in ("test_accuracy", "best_val_accuracy", "test_accuracy_sd"):
        return f"{100 * v:.2f}"
    if col == "seconds_per_epoch":
        return f"{v:.1f}"
    if col == "images_per_second":
        return f"{v:,.0f}"
    if col == "lr":
        return f"{v:g}"
    return str(v)


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """A summary's values as they are shown (text), under the short headers."""
    return pd.DataFrame([[_cell(c, v) for c, v in zip(table.columns, row)]
                         for row in table.itertuples(index=False)],
                        columns=[HEADERS.get(c, c) for c in table.columns])


def markdown(table: pd.DataFrame) -> str:
    """A summary table as GitHub markdown (accuracies in %, times rounded)."""
    shown = formatted(table)
    lines = ["| " + " | ".join(shown.columns) + " |",
             "| " + " | ".join("---" for _ in shown.columns) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines)
