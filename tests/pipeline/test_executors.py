"""Executors give byte-identical outputs; a dead dask worker or a killed run loses nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest
import yaml

import pipeline
from stages import STAGE_KINDS
from tests.conftest import shard_bytes
from tests.pipeline.conftest import write_corpus, write_malformed


def config_for(tmp_path, run_dir, corpus, shard_size=40):
    return {
        "name": "x",
        "run_dir": str(run_dir),
        "stages": {
            "ingest": {"kind": "ingest", "max_error_fraction": 1.0,
                       "params": {"paths": [str(corpus / "*")], "shard_size": shard_size}},
            "clean": {"kind": "filter", "inputs": ["ingest"], "params": {"min_words": 12}},
        },
    }


def outputs(run_dir, stages=("ingest", "clean")):
    return {s: shard_bytes(run_dir / s) for s in stages}


def test_local_and_dask_outputs_are_byte_identical(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", files=6, docs_per_file=70)
    write_malformed(corpus)
    pipeline.run(config_for(tmp_path, tmp_path / "local", corpus), executor="local")
    pipeline.run(config_for(tmp_path, tmp_path / "dask", corpus), executor="dask", workers=2)
    local, dask = outputs(tmp_path / "local"), outputs(tmp_path / "dask")
    assert local["ingest"] and local["clean"]
    assert local == dask
    stats = json.loads((tmp_path / "dask" / "clean" / "stats.json").read_text())
    assert stats["executor"] == "dask" and stats["workers"] == 2


def test_dask_worker_killed_mid_stage(tmp_path, monkeypatch):
    monkeypatch.setitem(STAGE_KINDS, "die_once", "tests.pipeline.conftest:DieOnce")
    corpus = write_corpus(tmp_path / "corpus", files=4, docs_per_file=60)

    def config(run_dir):
        c = config_for(tmp_path, run_dir, corpus)
        c["stages"]["mark"] = {"kind": "die_once", "inputs": ["clean"], "params": {
            "marker": str(tmp_path / f"marker-{run_dir.name}"), "victim_id": "part-002.jsonl#31"}}
        return c

    # Reference: the marker already exists, so nothing dies.
    (tmp_path / "marker-ref").write_text("")
    pipeline.run(config(tmp_path / "ref"), executor="local")
    pipeline.run(config(tmp_path / "dask"), executor="dask", workers=2)
    died = (tmp_path / "marker-dask").read_text()
    assert died and int(died) != os.getpid()  # a worker process died, not this one
    assert outputs(tmp_path / "ref", ("mark",)) == outputs(tmp_path / "dask", ("mark",))
    assert not [p for p in (tmp_path / "dask").rglob("*.tmp-*")]
    schema = pa.parquet.read_schema(next((tmp_path / "dask" / "mark" / "shards").glob("*")))
    assert schema.field("length").type == pa.int64()


def test_kill9_mid_stage_then_rerun_is_byte_identical(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", files=60, docs_per_file=800)
    ref = tmp_path / "ref"
    pipeline.run(config_for(tmp_path, ref, corpus, shard_size=1000))

    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(config_for(tmp_path, tmp_path / "killed", corpus, 1000)))
    stage_dir = tmp_path / "killed" / "ingest"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_at_kill = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        done = len(list(stage_dir.glob("journal.*.json")))  # one committed entry per task
        if done >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            done_at_kill = done
            break
        time.sleep(0.005)
    proc.wait()
    assert done_at_kill is not None and done_at_kill < 60, "the run ended before it could be killed"
    manifest = json.loads((tmp_path / "killed" / "ingest" / "manifest.json").read_text())
    assert not manifest["complete"]

    [ingest, clean] = pipeline.run(path)
    assert ingest.status == "resumed" and clean.status == "ran"
    assert outputs(ref) == outputs(tmp_path / "killed")
    assert not [p for p in (tmp_path / "killed").rglob("*") if ".tmp-" in p.name]


def test_existing_scheduler_by_address(tmp_path):
    from dask.distributed import LocalCluster

    corpus = write_corpus(tmp_path / "corpus", files=3, docs_per_file=20)
    pipeline.run(config_for(tmp_path, tmp_path / "local", corpus))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        pipeline.run(config_for(tmp_path, tmp_path / "remote", corpus),
                     executor="dask", scheduler=cluster.scheduler_address)
    assert outputs(tmp_path / "local") == outputs(tmp_path / "remote")


UNIMPORTABLE_ON_WORKERS = '''
import os
import re

from pipeline.stage import DocStage, Params

if os.getpid() != int(os.environ["LMFORGE_TEST_DRIVER_PID"]):
    raise ImportError("lmforge_test_unimportable: only the driver can import this")


class KeepParams(Params):
    pass


class Keep(DocStage):
    kind = "keep"
    Params = KeepParams

    def apply(self, doc):
        return doc
'''


def test_stage_module_a_worker_cannot_import_fails_the_stage_in_seconds(tmp_path, monkeypatch):
    # Before, unpickling the task failed in the worker's connection handler: no error ever
    # reached the scheduler and the run hung (issue 13).
    (tmp_path / "lmforge_test_unimportable.py").write_text(UNIMPORTABLE_ON_WORKERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LMFORGE_TEST_DRIVER_PID", str(os.getpid()))
    monkeypatch.setitem(STAGE_KINDS, "keep", "lmforge_test_unimportable:Keep")
    corpus = write_corpus(tmp_path / "corpus", files=2, docs_per_file=5)
    config = config_for(tmp_path, tmp_path / "run", corpus)
    config["stages"]["keep"] = {"kind": "keep", "inputs": ["clean"]}
    start = time.monotonic()
    with pytest.raises(ImportError, match="only the driver can import this") as info:
        pipeline.run(config, executor="dask", workers=1)
    assert time.monotonic() - start < 60
    [note] = info.value.__notes__
    assert re.fullmatch(r"stage 'keep', task '\S+' \(on a dask worker, 3 tries\)", note), note
    manifest = json.loads((tmp_path / "run" / "clean" / "manifest.json").read_text())
    assert manifest["complete"]  # the stages before it ran on the same workers
