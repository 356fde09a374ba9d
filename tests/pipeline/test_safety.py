"""lmforge deletes only what it wrote, one run per run directory, damaged files found.

Issue 17, items 1-3 and 7: stage names that leave their folder, a user's folder at a
stage's path, a second run on the same run directory, a flipped byte or a deleted shard.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import pipeline
from pipeline.artifacts import DamagedInput
from pipeline.cli import load, main
from pipeline.config import ConfigError
from pipeline.lock import LOCK_FILE, RunLock, RunLocked
from pipeline.manifest import ManifestError
from pipeline.storage import StorageError, run_location
from pipeline.verify import verify_run
from tests.pipeline.conftest import committed, write_corpus
from tests.pipeline.test_runner import two_stage


def checksums(run: Path) -> dict[str, str]:
    return committed(run)


@pytest.mark.parametrize("name", ["/tmp/victim", ".", "..", "../../x", "a/b", "-x", "report",
                                  "run.json", ""])
def test_stage_names_that_leave_their_folder_are_refused(tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    config = two_stage(tmp_path)
    config["stages"][name] = config["stages"].pop("clean")
    with pytest.raises(ConfigError, match="stage name|may not contain"):
        pipeline.run(config)
    assert (victim / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "run").exists()


def test_run_name_dot_dot_is_refused(tmp_path):
    config = two_stage(tmp_path)
    config["name"] = ".."
    del config["run_dir"]
    with pytest.raises(ConfigError, match="name"):
        load(config)


def test_a_users_folder_at_a_stage_path_is_never_deleted(tmp_path):
    """`run_dir: .` with a stage named `data` beside the user's data/*.jsonl."""
    config = two_stage(tmp_path)
    config["run_dir"] = str(tmp_path)
    data = tmp_path / "clean"
    data.mkdir()
    (data / "part-0.jsonl").write_text('{"text": "precious"}\n')
    (data / "notes").mkdir()
    (data / "notes" / "n.txt").write_text("also precious")
    with pytest.raises(StorageError, match=r"clean: exists and holds files lmforge did not write "
                                           r"\((notes/n.txt, part-0.jsonl|part-0.jsonl, notes/n.txt)"):
        pipeline.run(config)
    assert (data / "part-0.jsonl").read_text() == '{"text": "precious"}\n'
    assert (data / "notes" / "n.txt").read_text() == "also precious"
    assert (tmp_path / "ingest" / "manifest.json").exists()  # the stage before it ran
    assert not (tmp_path / LOCK_FILE).exists()  # released on the error


def test_an_empty_folder_or_a_killed_first_commit_is_the_runs(tmp_path):
    config = two_stage(tmp_path)
    (tmp_path / "run" / "ingest").mkdir(parents=True)
    (tmp_path / "run" / "clean").mkdir()
    (tmp_path / "run" / "clean" / "manifest.json.tmp-99-abcd1234").write_text("{")
    outcomes = pipeline.run(config)
    assert [o.status for o in outcomes] == ["ran", "ran"]
    assert not list((tmp_path / "run" / "clean").glob("*.tmp-*"))


def test_a_foreign_run_json_is_not_overwritten(tmp_path):
    config = two_stage(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text('{"my": "settings"}')
    with pytest.raises(StorageError, match="run.json: exists and is not lmforge's"):
        pipeline.run(config)
    assert (tmp_path / "run" / "run.json").read_text() == '{"my": "settings"}'


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "the top level is not a mapping"),
    ('{"manifest_version": 1, "stage": "clean", "kind": "filter", "cache_key": "k", '
     '"complete": true, "tasks": {"a": {"files": [{"path": "../../etc/x"}], "counts": {}}}}',
     "task 'a'"),
])
def test_a_manifest_of_the_wrong_shape_is_one_message_and_nothing_is_deleted(tmp_path, text, problem):
    config = two_stage(tmp_path)
    pipeline.run(config)
    clean = tmp_path / "run" / "clean"
    (clean / "manifest.json").write_text(text)
    shards = sorted(p.name for p in (clean / "shards").iterdir())
    with pytest.raises(ManifestError, match=problem):
        pipeline.run(config)
    assert sorted(p.name for p in (clean / "shards").iterdir()) == shards


def test_a_journal_entry_of_the_wrong_shape_reruns_its_task(tmp_path):
    config = two_stage(tmp_path)
    pipeline.run(config)
    clean = tmp_path / "run" / "clean"
    before = checksums(tmp_path / "run")
    manifest = json.loads((clean / "manifest.json").read_text())
    task = sorted(manifest["tasks"])[0]
    del manifest["tasks"][task]
    manifest["complete"] = False
    (clean / "manifest.json").write_text(json.dumps(manifest))
    (clean / f"journal.{task}.json").write_text('{"task": "%s", "entry": [1]}' % task)
    assert [o.status for o in pipeline.run(config)] == ["skipped", "resumed"]
    assert checksums(tmp_path / "run") == before


def test_a_second_run_refuses_naming_the_first(tmp_path):
    config = two_stage(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with RunLock(tmp_path / "run"):
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in lines[0]
        assert "is in use by" in lines[0] and LOCK_FILE in lines[0]
        assert not (tmp_path / "run" / "ingest").exists()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    assert main(["run", str(path)]) == 0


def test_a_stale_lock_is_taken_over(tmp_path, caplog):
    config = two_stage(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                             "started": 1.0, "heartbeat": 9e12}))
    pipeline.run(config)
    assert "taking over a stale lock" in caplog.text and "not running" in caplog.text
    assert not (run / LOCK_FILE).exists()
    # another host's lock is stale only when its heartbeat is older than the lease
    (run / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 1.0,
                                             "heartbeat": __import__("time").time()}))
    with pytest.raises(RunLocked, match="host elsewhere"):
        pipeline.run(config)
    (run / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 1.0,
                                             "heartbeat": 1.0}))
    pipeline.run(config)


def test_the_lock_on_an_object_store_is_exclusive(s3_bucket):
    run = run_location(f"{s3_bucket}/runs/locked")
    with RunLock(run):
        with pytest.raises(RunLocked, match="is in use by"):
            RunLock(run).acquire()
    with RunLock(run):  # released, so taken again
        pass
    assert not (run / LOCK_FILE).exists()


def test_a_flipped_byte_stops_the_reader_and_verify_repairs(tmp_path, capsys):
    config = two_stage(tmp_path)
    pipeline.run(config)
    run = tmp_path / "run"
    before = checksums(run)
    shard = sorted((run / "ingest" / "shards").iterdir())[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))

    assert [o.status for o in pipeline.run(config)] == ["skipped", "skipped"]  # same size
    with pytest.raises(DamagedInput, match=f"{shard}: damaged"):
        pipeline.run(config, force=["clean"])
    [problem] = verify_run(run).problems
    assert problem.startswith(f"ingest/shards/{shard.name}: sha256 ")
    assert main(["verify", str(run)]) == 1
    assert f"damaged: ingest/shards/{shard.name}: sha256" in capsys.readouterr().out
    assert main(["verify", str(run), "--repair"]) == 0
    # ingest redoes the one task; clean, stopped by the damage, finishes what it had left
    assert [o.status for o in pipeline.run(config)] == ["resumed", "resumed"]
    assert checksums(run) == before
    assert main(["verify", str(run)]) == 0


def test_a_deleted_shard_is_partial_and_rebuilt(tmp_path):
    config = two_stage(tmp_path)
    pipeline.run(config)
    run = tmp_path / "run"
    before = checksums(run)
    shard = sorted((run / "clean" / "shards").iterdir())[0]
    shard.unlink()
    status = pipeline.cli.run_status(run)
    clean = next(s for s in status["stages"] if s["stage"] == "clean")
    assert clean["state"] == "partial"
    assert clean["damaged"] == [f"shards/{shard.name}: missing"]
    assert [o.status for o in pipeline.run(config)] == ["skipped", "resumed"]
    assert checksums(run) == before
    assert all(s["state"] == "complete" for s in pipeline.cli.run_status(run)["stages"])


def test_a_file_named_like_the_lock_that_is_not_a_lock_is_never_deleted(tmp_path):
    config = two_stage(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("my notes")
    os.utime(run / LOCK_FILE, (1.0, 1.0))  # old: a lock this old would be stale
    with pytest.raises(RunLocked, match="is not a lock lmforge wrote"):
        pipeline.run(config)
    assert (run / LOCK_FILE).read_text() == "my notes"
