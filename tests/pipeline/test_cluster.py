"""A dask cluster of separate processes that share no disk, the run directory on S3.

The scheduler and two workers are started as commands (`dask scheduler`, `dask worker`),
each worker with its own working directory, temp folder and cache, as on separate machines;
the inputs and the run directory are on the test's S3 server. The driver runs as a command
too (`lmforge run --scheduler`). One worker is killed with SIGKILL mid-stage, then the driver
is killed mid-DAG and run again: the outputs are byte-identical to a local run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
import yaml

import pipeline
from tests.pipeline.conftest import committed, dag, upload_inputs

DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture
def cluster(tmp_path, s3_server):
    """(scheduler address, {worker name: Popen}) for a scheduler and two workers."""
    from dask.distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = {}
    for name in ("w1", "w2"):
        home = tmp_path / name
        (home / "tmp").mkdir(parents=True)
        env = {**os.environ, "TMPDIR": str(home / "tmp"), "LMFORGE_CACHE": str(home / "cache"),
               "OMP_NUM_THREADS": "1"}
        workers[name] = subprocess.Popen(
            [DASK, "worker", "--scheduler-file", str(scheduler_file), "--name", name,
             "--nthreads", "1", "--no-nanny", "--no-dashboard",
             "--local-directory", str(home / "dask")],
            cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs += workers.values()
    try:
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        yield address, workers
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def journal_entries(fs, stage: str) -> int:
    fs.invalidate_cache()
    try:
        return sum(Path(p).name.startswith("journal.") for p in fs.ls(stage))
    except FileNotFoundError:
        return 0


def test_cluster_without_shared_disk_survives_a_killed_worker_and_driver(
        cluster, s3_bucket, tmp_path, one_thread):
    address, workers = cluster
    urls = upload_inputs(s3_bucket)

    def config(run_dir: str) -> dict:
        c = dag(run_dir, urls, pretrain_steps=3)
        c["stages"]["docs"]["params"]["shard_size"] = 10  # 20 shards: stages of many tasks
        return c

    pipeline.run(config(str(tmp_path / "local")))

    url = f"{s3_bucket}/runs/cluster"
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config(url)))
    driver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(path),
                               "--scheduler", address],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    root = url[len("s3://"):]
    killed = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            if not killed and journal_entries(fs, f"{root}/rules") >= 2:
                workers["w1"].send_signal(signal.SIGKILL)  # mid-stage: its tasks move to w2
                killed.append("w1")
            if killed == ["w1"] and fs.exists(f"{root}/near.buckets/manifest.json"):
                driver.send_signal(signal.SIGKILL)  # mid-DAG, a stage started, not complete
                killed.append("driver")
            time.sleep(0.02)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
    assert killed == ["w1", "driver"], f"the run ended before both kills: {killed}"
    assert workers["w1"].wait(timeout=10) == -signal.SIGKILL

    outcomes = {o.name: o.status for o in pipeline.run(path, scheduler=address, executor="dask")}
    assert outcomes["rules"] == "skipped" and outcomes["lm"] == "ran"
    assert committed(url) == committed(tmp_path / "local")
    for name in workers:  # no worker mistook its working directory for the run directory
        assert not list((tmp_path / name).glob("s3*"))
