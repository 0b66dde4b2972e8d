"""Spread an ensemble's batches over Dask workers, keeping each result as it arrives.

By default a ``LocalCluster`` on this machine (one single-threaded worker process
per core: a batch is CPU-bound Python, so threads would only take turns); with
``scheduler`` any Dask cluster (``tcp://HOST:PORT``), whose workers must have
poc-twin installed and the recipe and bench files at the same paths. Each batch
is one task; a batch that raises is kept as an ``error`` outcome, not retried
(the same plan would fail the same way), and the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from twin.ensemble.member import MemberPlan, run_member

__all__ = ["run_ensemble", "run_member_safely"]


def run_member_safely(plan: MemberPlan) -> dict[str, Any]:
    """One batch's result; an exception becomes its outcome (state ``error``)."""
    try:
        return run_member(plan)
    except Exception as exc:  # a bug or a bad draw must not end the ensemble
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{last.filename}:{last.lineno}"
        return {
            "plan": plan.as_record(),
            "outcome": {"state": "error", "error": f"{type(exc).__name__}: {exc} ({where})"},
        }


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int) -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="20s") as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,  # the ensemble's own progress is what a user reads
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_ensemble(
    plans: list[MemberPlan],
    keep: Callable[[dict[str, Any]], None],
    *,
    scheduler: str | None = None,
    workers: int = 1,
) -> int:
    """Run every plan on the cluster; ``keep`` each result in the order they finish.
    Returns how many batches ran."""
    if not plans:
        return 0
    from dask.distributed import as_completed

    with _client(scheduler, workers) as client:
        futures = client.map(run_member_safely, plans, pure=False)
        for future in as_completed(futures):
            keep(future.result())
            future.release()
    return len(plans)
