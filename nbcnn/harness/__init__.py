"""The experiments harness: grid file -> cells -> runs -> rows in ``results/<study>/``.

    from nbcnn import harness
    grid = harness.load_grid("experiments/quickstart.toml")
    runs = harness.run_grid(grid)                # resumable: finished cells are skipped
    runs, epochs = nbcnn.results.load("results/quickstart")

See ``spec`` (grid files, validation, keys), ``runner`` (one run and what it measures),
``executors`` (local, Dask) and ``nbcnn.results`` (atomic, resumable tables).
"""

from __future__ import annotations

import os
import sys

import pandas as pd
from tqdm.auto import tqdm

from .runner import run_cell
from .spec import (Cell, Grid, GridError, cell_key, filter_cells, known_keys, load_grid,
                   parse_grid)

__all__ = ["Cell", "Grid", "GridError", "cell_key", "load_grid", "parse_grid", "filter_cells",
           "known_keys", "run_cell", "run_grid", "plan", "progress_line", "study_dir"]


def study_dir(grid: Grid, results=None) -> str:
    """``<results>/<study name>``: ``results`` argument, else the grid's, else ``results``."""
    return os.path.join(results or grid.results or "results", grid.name)


def plan(grid: Grid, results=None, only=None) -> pd.DataFrame:
    """The cells (after ``only``) as a table: index, key, status so far, varying settings.

    Cells not yet finished that have a checkpoint say how far they got: status
    ``"checkpointed"`` (or ``"failed"`` when that was their last end), ``epochs_done`` of
    ``epochs``, their training time so far (``hours``) and their last validation accuracy
    (``val_accuracy``; NaN without validation); those columns are left out when no cell has a
    checkpoint. An unreadable checkpoint is status ``"checkpoint unreadable"``."""
    from ..checkpoint import CheckpointError, progress
    from ..results import checkpoint_file, dedupe, read_records
    cells = filter_cells(grid.cells, only, grid.path)
    folder = study_dir(grid, results)
    done = {r["key"]: r["status"] for r in dedupe(read_records(folder))} \
        if os.path.isdir(folder) else {}
    shown = grid.varying() or ["arch"]
    nan = float("nan")
    rows = []
    for c in cells:
        row = {"cell": c.index, "key": c.key, "status": done.get(c.key, "todo"),
               **{k: c.settings.get(k) for k in shown},
               "epochs_done": nan, "epochs": nan, "hours": nan, "val_accuracy": nan}
        point = checkpoint_file(folder, c.key)
        if row["status"] != "ok" and os.path.exists(point):
            try:
                got = progress(point)
            except CheckpointError:
                row["status"] = "checkpoint unreadable"
            else:
                row["status"] = "failed" if row["status"] == "failed" else "checkpointed"
                row.update(epochs_done=got["epochs_done"], epochs=got["epochs"] or nan,
                           hours=got["seconds"] / 3600,
                           val_accuracy=got["last"].get("val_accuracy", nan))
        rows.append(row)
    table = pd.DataFrame(rows, columns=["cell", "key", "status", *shown, "epochs_done",
                                        "epochs", "hours", "val_accuracy"])
    if table["epochs_done"].isna().all():
        return table.drop(columns=["epochs_done", "epochs", "hours", "val_accuracy"])
    return table.astype({"epochs_done": "Int64", "epochs": "Int64"})


def progress_line(table: pd.DataFrame) -> str:
    """One line for ``plan``'s table: the checkpointed cells' epochs and training hours so far,
    and the hours their remaining epochs take at the pace each cell has had ('' when none)."""
    if "epochs_done" not in table:
        return ""
    part = table.dropna(subset=["epochs_done"])
    done, total = int(part["epochs_done"].sum()), part["epochs"].sum()
    pace = part["hours"] / part["epochs_done"].where(part["epochs_done"] > 0)
    left = ((part["epochs"] - part["epochs_done"]).astype(float) * pace).sum()
    return (f"{len(part)} cell(s) checkpointed: {done}/{total} epochs, {part['hours'].sum():.2f} "
            f"h of training so far, ~{left:.2f} h of training left at their pace (the hours of "
            "cells that run at once overlap)")


def run_grid(grid: Grid | str, results=None, *, only=None, executor: str = "local",
             scheduler=None, workers=None, threads=None, data_root=None, verbose: bool = True,
             log=None, force: bool = False) -> pd.DataFrame:
    """Run the grid's cells not yet finished (status ok) and record each as it finishes.

    Returns the runs table (one row per selected cell, done before or now). ``executor``:
    ``"local"`` (this machine: ``executors.plan_local`` picks how many cells run at once and
    with how many threads each; ``workers`` and ``threads`` override it) or ``"dask"`` (a
    LocalCluster of ``workers``, or the scheduler at ``scheduler``). Failed cells are recorded
    and retried on the next call.

    The study folder may already hold runs of another grid file with the same name: its cells
    join them (a study extended with new axis values), unless one of the grid's fixed settings
    differs from the value every run there has (``results.conflicts``): then ``GridError``,
    or with ``force`` the runs are mixed all the same. The folder's tables are rebuilt from the
    records when the grid starts and when it ends.    """
    from ..results import ResultStore, conflicts, tables
    if isinstance(grid, (str, os.PathLike)):
        grid = load_grid(grid)
    if executor not in ("local", "dask"):
        raise ValueError(f"unknown executor {executor!r}; expected local or dask")
    if scheduler and executor != "dask":
        executor = "dask"
    log = log or (lambda msg: tqdm.write(str(msg), file=sys.stderr))
    cells = filter_cells(grid.cells, only, grid.path)
    if not cells:
        raise GridError(f"{grid.path}: no cell matches --only {' '.join(only or [])}")
    folder = study_dir(grid, results)
    store = ResultStore(folder, grid.name)
    with store:
        clash = conflicts(store.records.values(), grid.cells)
        if clash and not force:
            shown = "; ".join(f"{k} = {new!r} here, {old!r} in every run there"
                              for k, new, old in clash)
            raise GridError(f"{grid.path}: {folder} already holds {len(store.records)} runs "
                            f"that this grid's fixed settings conflict with ({shown}); make the "
                            "setting an axis of [grid] that includes the old value, use another "
                            "name or --results folder, or --force to mix them")
        store.check_writable()
        store.copy_grid(grid.text)
        store.write_tables()
        done = store.done()
        todo = [c for c in cells if c.key not in done]
        retry = sum(1 for c in todo if store.status(c.key) == "failed")
        resume = sum(1 for c in todo if os.path.exists(store.checkpoint_path(c.key)))
        log(f"{grid.name}: {len(cells)} cells, {len(cells) - len(todo)} already done, "
            f"{len(todo)} to run" + (f" ({retry} failed before, retried)" if retry else "")
            + (f" ({resume} continued from their checkpoints)" if resume else "")
            + f"; results in {folder}")
        bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc=grid.name, unit="run",
                   disable=not verbose, dynamic_ncols=True, position=0)

        def on_result(cell, result):
            store.add(result)
            acc = result["metrics"].get("test_accuracy")
            note = (f"test acc {acc:.4f}" if result["status"] == "ok" and acc is not None
                    else f"FAILED: {result['error']}")
            if result["metrics"].get("resumed_epochs"):
                note += f", continued after epoch {result['metrics']['resumed_epochs']}"
            if result["metrics"].get("stopped_epoch"):
                note += f", stopped early after epoch {result['metrics']['stopped_epoch']}"
            if result["metrics"].get("warning"):
                note += f", WARNING: {result['metrics']['warning']}"
            bar.update(1)
            log(f"[{cell.key}] {cell.label(grid.varying() or ['arch'])}: {note} "
                f"({result['metrics'].get('wall_seconds', 0):.1f}s)")

        common = dict(study=grid.name, data_root=data_root, save_model=grid.save_models,
                      save_predictions=grid.save_predictions, checkpoint=store.checkpoint_path)
        try:
            if todo and executor == "local":
                from .executors import run_local
                run_local(todo, on_result, verbose=verbose, workers=workers, threads=threads,
                          log=log, **common)
            elif todo:
                from .executors import run_dask
                run_dask(todo, on_result, scheduler=scheduler, workers=workers, log=log, **common)
        finally:
            bar.close()
            store.write_tables()
        keys = {c.key for c in cells}
        runs, _ = tables([r for k, r in store.records.items() if k in keys])
    order = {c.key: c.index for c in cells}
    return runs.sort_values("key", key=lambda s: s.map(order)).reset_index(drop=True)


def summary(runs: pd.DataFrame, grid: Grid | None = None) -> str:
    """The grid's runs summarised over seeds (``results.summarize`` by the settings that vary,
    as ``nbcnn report`` does by its own), then one line per failed run: its key and error."""
    from ..results import formatted, summarize
    if runs.empty:
        return "(no runs)"
    by = [k for k in (grid.varying() if grid else []) if k != "seed"] or ["arch"]
    table = summarize(runs, by)
    text = formatted(table).to_string(index=False) if len(table) else "(no run finished)"
    for _, r in runs[runs["status"] != "ok"].iterrows():
        text += f"\n{r['key']}: FAILED: {r['error']}"
    return text
