"""Executors: run cells and hand each finished result to a callback, in the calling process.

``local`` runs the cells one after another in this process. ``dask`` submits one task per cell to
a ``dask.distributed`` cluster (a ``LocalCluster`` started here, or a running scheduler) and
collects them with ``as_completed``; only this process (the client) writes files.
"""

from __future__ import annotations

import sys
import uuid

from ..threads import available_cores
from .runner import run_cell


def run_local(cells, on_result, *, study="", data_root=None, verbose=True, save_model=None,
              save_predictions=True, checkpoint=None):
    """``checkpoint``: cell key -> the path that cell checkpoints to (or None)."""
    for cell in cells:
        result = run_cell(cell.settings, cell.key, study=study, data_root=data_root,
                          verbose=verbose, save_model=save_model,
                          save_predictions=save_predictions,
                          checkpoint=checkpoint(cell.key) if checkpoint else None)
        on_result(cell, result)


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


def _task(settings, key, study, data_root, threads_hint, save_model, save_predictions,
          checkpoint):
    # runs in a worker process; set the threads before any kernel runs
    return run_cell(settings, key, study=study, data_root=data_root, verbose=False,
                    threads_hint=threads_hint, save_model=save_model,
                    save_predictions=save_predictions, checkpoint=checkpoint)


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
                result = {"key": cell.key, "study": study, "settings": cell.settings,
                          "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500],
                          "traceback": "", "metrics": {}, "epochs": [], "model": None,
                          "predictions": None}
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
