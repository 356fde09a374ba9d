"""Executors run a stage's tasks; they own scheduling, parallelism and retries.

`LocalExecutor` runs tasks one after another in this process (breakpoints work).
`DaskExecutor` submits them to dask.distributed: a LocalCluster of worker processes, or an
existing scheduler. A worker that dies mid-task has its task rescheduled by dask on another
worker; because tasks write only under unique temporary names and the driver alone records
results, a task that ran twice leaves the same bytes as one that ran once.

Both yield `(task, result)` as tasks finish; the order of completion does not matter,
because every task writes its own deterministically named files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from pipeline.stage import Stage, Task, TaskResult, execute_task

log = logging.getLogger(__name__)


class LocalExecutor:
    name = "local"
    workers = 1

    def map(self, stage: Stage, tasks: Sequence[Task]) -> Iterator[tuple[Task, TaskResult]]:
        for task in tasks:
            yield task, execute_task(stage, task)

    def close(self) -> None:
        pass


class DaskExecutor:
    """Tasks on dask.distributed workers (processes, one thread each by default)."""

    name = "dask"

    def __init__(self, workers: int = 2, scheduler: str | None = None,
                 task_retries: int = 2):
        from dask.distributed import Client, LocalCluster

        self.task_retries = task_retries
        self._cluster = None
        if scheduler:
            self.client = Client(scheduler)
        else:
            self._cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # a free port: never clash with a running dashboard
                silence_logs=logging.ERROR,
            )
            self.client = Client(self._cluster)
        self.workers = len(self.client.scheduler_info()["workers"]) or workers

    def map(self, stage: Stage, tasks: Sequence[Task]) -> Iterator[tuple[Task, TaskResult]]:
        from dask.distributed import as_completed

        if not tasks:
            return
        futures = {}
        for task in tasks:
            future = self.client.submit(
                execute_task,
                stage,
                task,
                key=f"{stage.name}/{task.name}/{id(tasks)}",
                pure=False,
                retries=self.task_retries,
            )
            futures[future] = task
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_executor(kind: str, workers: int = 2, scheduler: str | None = None) -> Any:
    if kind == "local":
        return LocalExecutor()
    if kind == "dask":
        return DaskExecutor(workers=workers, scheduler=scheduler)
    raise ValueError(f"unknown executor {kind!r} (local or dask)")

