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
for that; `DaskExecutor` checks it once when it connects. A worker thread keeps the stage
it last unpickled and reuses it for the next task with the same pickled bytes, so a stage's
lazily loaded resources (a language-ID model, a tokenizer, an extraction sandbox process)
are loaded once per worker and stage, as the local executor loads them once per stage, not
once per task; the driver drops them when the stage's tasks are done.

The LocalCluster lmforge starts (`local_cluster`; `python -m bench.scale` measures the
same one) runs worker processes of one thread, with two of dask's defaults changed
(`LOCAL_CLUSTER_CONFIG`), both measured on the default recipe (issue 13):
- `MALLOC_TRIM_THRESHOLD_`, which dask's nanny sets to 64 kB in each worker's environment
  (and so in its children's: extraction sandboxes), is left unset. Setting it turns off
  glibc's adaptive mmap threshold, so every allocation over 128 kB (a decompressed WARC
  record, an Arrow buffer) is an mmap, page faults and a munmap: ingest_warc took 2.8x the
  CPU seconds of the same task in the local process. Without it the allocator behaves as
  in the local executor (peak RSS per worker: see docs/benchmarks.md).
- the worker's statistical profiler (a stack sample every 10 ms, taken under the GIL from
  a thread beside the task's) is off: nothing in lmforge reads dask's profiles.
"""

from __future__ import annotations

import logging
import pickle
import threading
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

# dask settings for the LocalCluster lmforge starts (module docstring; None unsets a
# variable of the nanny's pre-spawn environment).
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}


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
        from dask.distributed import Client

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
            self._cluster = local_cluster(workers)
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
        """`progress` receives running tasks' counts, sent by workers as events on TOPIC.

        At most one task per worker thread is on the cluster at a time, in the order given,
        the next submitted as one finishes (before its result is recorded). Submitted all at
        once, dask hands each single-threaded worker two tasks, one waiting behind the other
        (`worker-saturation` 1.1, and the first tasks of a stage go straight to workers), so
        a stage could end with one worker idle while the other still runs two."""
        from dask.distributed import as_completed

        if not tasks:
            return
        if progress is not None:
            self.client.subscribe_topic(TOPIC, lambda event: progress(event[1]))
        pickled_stage = _dumps(stage)
        slots = max(1, sum(self.client.nthreads().values()))
        waiting = list(reversed(tasks))  # popped from the end: in the order given
        futures = {}
        finished = as_completed()

        def submit_next() -> None:
            task = waiting.pop()
            future = self.client.submit(
                _execute_pickled,
                pickled_stage,
                _dumps(task),
                key=f"{stage.name}/{task.name}/{id(tasks)}",
                pure=False,
                retries=self.task_retries,
            )
            futures[future] = task
            finished.add(future)

        try:
            while waiting and len(futures) < slots:
                submit_next()
            for future in finished:
                task = futures.pop(future)
                if waiting:
                    submit_next()
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
        # The stage's resources on the workers (models, sandbox processes); after a failure
        # they stay until the next stage replaces them or the worker ends.
        self.client.run(_forget_stages, on_error="ignore")

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def local_cluster(workers: int) -> Any:
    """A dask LocalCluster of `workers` single-threaded worker processes, with
    `LOCAL_CLUSTER_CONFIG` (module docstring); the scheduler runs in this process."""
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set(LOCAL_CLUSTER_CONFIG):  # the nannies copy the config as they start
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never clash with a running dashboard
            silence_logs=logging.ERROR,
            preload=[WORKERS_IGNORE_CTRL_C],
        )


def _dumps(obj: Any) -> bytes:
    import cloudpickle  # what dask itself pickles with: by reference where importable

    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _execute_pickled(pickled_stage: bytes, pickled_task: bytes) -> TaskResult:
    """The dask task: unpickling here makes an import error on a worker a task error."""
    return execute_task(_stage_from(pickled_stage), pickle.loads(pickled_task), worker_sender())


# Worker thread id -> (pickled bytes, the stage unpickled from them): the last stage each
# thread ran. Per thread, because a stage object serves one task at a time (as locally).
_STAGES: dict[int, tuple[bytes, Stage]] = {}


def _stage_from(pickled_stage: bytes) -> Stage:
    """The stage of `pickled_stage`: the one this thread last unpickled from the same bytes,
    else a new one, which replaces it (the old one's resources go before the new load)."""
    thread = threading.get_ident()
    cached = _STAGES.pop(thread, None)
    if cached is not None and cached[0] == pickled_stage:
        stage = cached[1]
    else:
        del cached
        stage = pickle.loads(pickled_stage)
    _STAGES[thread] = (pickled_stage, stage)
    return stage


def _forget_stages() -> None:
    """Drop every stage kept on this worker (run by the driver when a stage's tasks are done)."""
    _STAGES.clear()


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
