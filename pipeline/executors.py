"""Executors run a stage's tasks; they own scheduling, parallelism and retries.

`LocalExecutor` runs tasks one after another in this process (breakpoints work).
`DaskExecutor` submits them to dask.distributed: a LocalCluster of worker processes, or an
existing scheduler. A worker that dies mid-task has its task rescheduled by dask on another
worker; because tasks write only under unique temporary names and the driver alone records
results, a task that ran twice leaves the same bytes as one that ran once.

Both yield `(task, result)` as tasks finish; the order of completion does not matter,
because every task writes its own deterministically named files. A task that raises
stops the stage with that exception, its type kept, and a note naming the stage and task
(`add_note`: the CLI shows it, `--debug` tracebacks print it).

Why dask tasks travel as bytes. dask unpickles a task's function and arguments while
reading the scheduler's message, outside the task: if that fails on a worker (a stage
module the worker cannot import), the worker's connection handler dies, no error reaches
the scheduler, and the task stays "processing" for ever (issue 13: a run hung > 15
minutes). So the stage and task are pickled here and unpickled inside the task by
`_execute_pickled`: an unpickling error is then an ordinary task error, retried
`task_retries` times and raised here. Only this module must be importable on a worker
for that; `DaskExecutor` checks it once when it connects.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

from pipeline.progress import TOPIC, Send, worker_sender
from pipeline.stage import Stage, Task, TaskResult, execute_task

log = logging.getLogger(__name__)

# Seconds to wait for an existing dask scheduler to answer (dask's own default is 30).
CONNECT_TIMEOUT = 10.0

# Run in each LocalCluster worker process as it starts (a dask preload given as text). Ctrl-C
# in a terminal signals the whole process group: the driver alone should stop, then close
# the cluster, rather than every worker dying with a KeyboardInterrupt traceback.
WORKERS_IGNORE_CTRL_C = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)"


class ExecutorError(Exception):
    """Executor settings that cannot work: a scheduler that does not answer, a worker
    count below 1, workers without lmforge. The message names the setting."""


class LocalExecutor:
    name = "local"
    workers = 1

    def map(self, stage: Stage, tasks: Sequence[Task],
            progress: Send | None = None) -> Iterator[tuple[Task, TaskResult]]:
        for task in tasks:
            try:
                result = execute_task(stage, task, progress)
            except Exception as exc:
                _name_task(exc, stage, task)
                raise
            yield task, result

    def close(self) -> None:
        pass


class DaskExecutor:
    """Tasks on dask.distributed workers (processes, one thread each by default)."""

    name = "dask"

    def __init__(self, workers: int = 2, scheduler: str | None = None,
                 task_retries: int = 2, connect_timeout: float = CONNECT_TIMEOUT):
        from dask.distributed import Client, LocalCluster

        self.task_retries = task_retries
        self._cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout=connect_timeout)
            except (OSError, ValueError) as exc:  # refused or silent: OSError; bad address: ValueError
                raise ExecutorError(f"dask scheduler {scheduler}: cannot connect ({exc})") from exc
        else:
            if workers < 1:
                raise ExecutorError(f"dask workers: {workers}; at least 1 is needed")
            self._cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # a free port: never clash with a running dashboard
                silence_logs=logging.ERROR,
                preload=[WORKERS_IGNORE_CTRL_C],
            )
            self.client = Client(self._cluster)
        try:  # `exec`, a builtin, unpickles on any worker; `import` raises where lmforge is not
            self.client.run(exec, f"import {__name__}")
        except Exception as exc:
            self.close()
            where = f"dask scheduler {scheduler}" if scheduler else "dask LocalCluster"
            raise ExecutorError(f"{where}: a worker cannot import {__name__} "
                                f"(is lmforge installed there?): {type(exc).__name__}: {exc}") from exc
        self.workers = len(self.client.scheduler_info()["workers"]) or workers
        logging.getLogger("lmforge").info("dask: %d workers, dashboard %s", self.workers,
                                          self.client.dashboard_link)

    def map(self, stage: Stage, tasks: Sequence[Task],
            progress: Send | None = None) -> Iterator[tuple[Task, TaskResult]]:
        """`progress` receives running tasks' counts, sent by workers as events on TOPIC."""
        from dask.distributed import as_completed

        if not tasks:
            return
        if progress is not None:
            self.client.subscribe_topic(TOPIC, lambda event: progress(event[1]))
        pickled_stage = _dumps(stage)
        futures = {}
        for task in tasks:
            future = self.client.submit(
                _execute_pickled,
                pickled_stage,
                _dumps(task),
                key=f"{stage.name}/{task.name}/{id(tasks)}",
                pure=False,
                retries=self.task_retries,
            )
            futures[future] = task
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                except Exception as exc:
                    _name_task(exc, stage, task, f"on a dask worker, {self.task_retries + 1} tries")
                    raise
                yield task, result
        finally:
            self.client.cancel(list(futures))
            if progress is not None:
                self.client.unsubscribe_topic(TOPIC)

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _dumps(obj: Any) -> bytes:
    import cloudpickle  # what dask itself pickles with: by reference where importable

    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _execute_pickled(pickled_stage: bytes, pickled_task: bytes) -> TaskResult:
    """The dask task: unpickling here makes an import error on a worker a task error."""
    return execute_task(pickle.loads(pickled_stage), pickle.loads(pickled_task), worker_sender())


def _name_task(exc: BaseException, stage: Stage, task: Task, where: str = "") -> None:
    """Say which stage and task raised `exc` (a note, so its type is kept)."""
    exc.add_note(f"stage '{stage.name}', task '{task.name}'" + (f" ({where})" if where else ""))


def make_executor(kind: str, workers: int = 2, scheduler: str | None = None,
                  connect_timeout: float = CONNECT_TIMEOUT) -> Any:
    if kind == "local":
        return LocalExecutor()
    if kind == "dask":
        return DaskExecutor(workers=workers, scheduler=scheduler, connect_timeout=connect_timeout)
    raise ExecutorError(f"unknown executor {kind!r} (local or dask)")
