"""Executors: run cells and hand each finished result to a callback, in the calling process.

``local`` runs the cells on this machine: ``plan_local`` chooses how many at once and with how
many threads each (as many at once as there are cores, one thread each); one at a time runs
here, several at once in as many worker processes.
``dask`` submits one task per cell to a ``dask.distributed`` cluster (a ``LocalCluster`` started
here, or a running scheduler) and collects them with ``as_completed``. Only this process writes
files.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid

from ..threads import available_cores
from .runner import run_cell


def plan_local(cells, workers=None, threads=None, cores=None) -> list[tuple[list, int, int]]:
    """How the local executor runs ``cells`` on ``cores`` cores: groups run one after another,
    each as (its cells, how many run at once, threads per cell).

    ``workers`` and ``threads`` (``--workers``, ``--threads``) override the choice for every
    cell; given one, the other fills the cores. Otherwise cells that set ``threads`` get it,
    with as many at once as fit; else min(cores, cells) run at once, sharing the cores out
    (one thread each when there are at least as many cells as cores; a lone cell gets every
    core). Independent cells side by side beat one cell on every core for every preset and
    batch size measured (``nbcnn bench --contention``: two trainings on one thread each gave
    1.03-2.30x the images per second of one on both threads, on 2 cores), because a cell's
    parallel loops wait at every barrier for their slowest thread and its serial parts leave
    the other cores idle. Each cell holds its own activations: where memory is short, limit
    ``--workers``."""
    cores = cores or available_cores()
    cells = list(cells)
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"--{name} must be an int >= 1, got {value!r}")
    if not cells:
        return []
    n = len(cells)
    if workers is not None and threads is not None:
        return [(cells, min(workers, n), threads)]
    if threads is not None:
        return [(cells, min(max(1, cores // threads), n), threads)]
    declared = [c.settings.get("threads") for c in cells if c.settings.get("threads")]
    if workers is None and declared:
        wanted = max(declared)
        return [(cells, min(max(1, cores // wanted), n), wanted)]
    at_once = min(workers or cores, n)
    return [(cells, at_once, max(1, cores // at_once))]


def run_local(cells, on_result, *, study="", data_root=None, verbose=True, save_model=None,
              save_predictions=True, workers=None, threads=None, log=print, checkpoint=None):
    """Run ``cells`` as ``plan_local`` chooses: a group of one at a time in this process, a
    group of several at once in as many worker processes (started fresh: Numba's threads do
    not survive a fork). ``checkpoint``: cell key -> the path that cell checkpoints to (or
    None)."""
    common = dict(study=study, data_root=data_root, save_model=save_model,
                  save_predictions=save_predictions)
    where = checkpoint or (lambda key: None)
    # the planned thread counts are ceilings that core sharing lowers when other nbcnn
    # processes run beside the grid; the user's --threads is kept exactly
    common["threads_explicit"] = threads is not None
    for group, at_once, per_cell in plan_local(cells, workers, threads):
        if at_once == 1:
            for cell in group:
                on_result(cell, run_cell(cell.settings, cell.key, verbose=verbose,
                                         threads_hint=per_cell, checkpoint=where(cell.key),
                                         **common))
        else:
            log(f"running {len(group)} cells, {at_once} at once, {per_cell} thread(s) each "
                f"({available_cores()} cores)")
            _run_at_once(group, on_result, at_once, per_cell, common, where)


def _run_at_once(cells, on_result, workers, threads, common, where):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_task, c.settings, c.key, common["study"], common["data_root"],
                               threads, common["save_model"], common["save_predictions"],
                               where(c.key), common["threads_explicit"]): c
                   for c in cells}
        for fut in as_completed(futures):
            cell = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:                   # the worker process died
                result = _failed(cell, common["study"], exc)
            on_result(cell, result)


def _failed(cell, study, exc) -> dict:
    return {"key": cell.key, "study": study, "settings": cell.settings, "status": "failed",
            "error": f"{type(exc).__name__}: {exc}"[:500], "traceback": "", "metrics": {},
            "epochs": [], "model": None, "predictions": None}


def plan_local_cluster(cells, workers=None, cores=None) -> tuple[int, int]:
    """(workers, threads per task) so that workers x Numba threads <= cores."""
    cores = cores or available_cores()
    wanted = max([c.settings.get("threads") or 1 for c in cells] or [1])
    fit = max(1, cores // wanted)
    if workers is None:
        workers = min(fit, max(len(cells), 1))
    elif workers > fit:
        print(f"nbcnn grid: {workers} workers x {wanted} threads would exceed {cores} cores; "
              f"using {fit} workers", file=sys.stderr)
        workers = fit
    return workers, max(1, cores // workers)


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """In a worker process: exit as soon as ``parent`` (the grid) is gone. A grid killed with
    SIGKILL cannot stop its workers; without this they would train on, orphaned, for nobody
    (the next grid continues their cells from the checkpoints)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)
    threading.Thread(target=watch, name="nbcnn-exit-with-parent", daemon=True).start()


def _task(settings, key, study, data_root, threads_hint, save_model, save_predictions,
          checkpoint, threads_explicit=False):
    # runs in a worker process; set the threads before any kernel runs
    return run_cell(settings, key, study=study, data_root=data_root, verbose=False,
                    threads_hint=threads_hint, save_model=save_model,
                    save_predictions=save_predictions, checkpoint=checkpoint,
                    threads_explicit=threads_explicit)


def run_dask(cells, on_result, *, study="", data_root=None, scheduler=None, workers=None,
             save_model=None, save_predictions=True, host="127.0.0.1", log=print,
             checkpoint=None):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise RuntimeError("the dask executor needs dask.distributed: "
                           "pip install 'nbcnn[dask]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
        info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) \
            else client.scheduler_info()
        nthreads = [w.get("nthreads", 1) for w in info.get("workers", {}).values()]
        threads_hint = min(nthreads) if nthreads else 1
        log(f"connected to {scheduler}: {len(nthreads)} workers")
    else:
        n, threads_hint = plan_local_cluster(cells, workers)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host=host,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
        log(f"started a local Dask cluster: {n} workers x {threads_hint} threads "
            f"({available_cores()} cores)")
    futures = {}
    try:
        for cell in cells:
            fut = client.submit(_task, cell.settings, cell.key, study, data_root, threads_hint,
                                save_model, save_predictions,
                                checkpoint(cell.key) if checkpoint else None, pure=False,
                                key=f"nbcnn-{cell.key}-{uuid.uuid4().hex[:8]}")
            futures[fut] = cell
        for fut in as_completed(list(futures)):
            cell = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:      # the worker died (KilledWorker), or could not unpickle
                result = _failed(cell, study, exc)
            on_result(cell, result)
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
        client.close()
        if cluster is not None:
            cluster.close()


def _takes_n_workers(client) -> bool:
    import inspect
    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False
