"""Messages, not tracebacks: the ways `lmforge run` stops that a user meets (Ctrl-C, a full
disk, a run_dir that is a file, a dask scheduler that does not answer, a bad worker count,
an error raised in a task) each end in one line with the right exit code, and a run that
stopped keeps its finished tasks for the next one."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.cli import main
from pipeline.documents import Document
from pipeline.stage import DocStage, Params, Task, TaskResult
from stages import STAGE_KINDS
from tests.pipeline.conftest import REPO, write_corpus

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d [A-Z]+ ")  # pipeline/cli.py's logging format


def last_line(err: str) -> str:
    """The message: stderr's last line, after log lines only (no traceback, nothing else)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert all(LOG_LINE.match(line) for line in lines[:-1]), err
    return lines[-1]


class SlowParams(Params):
    seconds_per_doc: float
    ran_log: str  # each task that finishes appends its name here


class Slow(DocStage):
    """Keeps every document, slowly; logs the tasks it finished."""

    kind = "slow"
    Params = SlowParams

    def apply(self, doc: Document) -> Document:
        time.sleep(self.params.seconds_per_doc)
        return doc

    def run_task(self, task: Task) -> TaskResult:
        result = super().run_task(task)
        with open(self.params.ran_log, "a") as log:
            log.write(task.name + "\n")
        return result


class RaisesParams(Params):
    pass


class Raises(DocStage):
    kind = "raises"
    Params = RaisesParams

    def process(self, docs):
        raise KeyError("no_such_column")


# The console script with the test stage kinds registered (monkeypatch cannot reach a child).
LAUNCH = ("import sys, stages; stages.STAGE_KINDS['slow'] = 'tests.pipeline.test_cli_messages:Slow'; "
          "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture
def test_kinds(monkeypatch):
    monkeypatch.setitem(STAGE_KINDS, "slow", "tests.pipeline.test_cli_messages:Slow")
    monkeypatch.setitem(STAGE_KINDS, "raises", "tests.pipeline.test_cli_messages:Raises")


def two_stage_config(tmp_path, write_config, files=8, docs_per_file=10, seconds_per_doc=0.0):
    """ingest (one task per file) -> slow (one task per shard)."""
    corpus = write_corpus(tmp_path / "corpus", files=files, docs_per_file=docs_per_file)
    return write_config({"name": "t", "run_dir": str(tmp_path / "run"), "stages": {
        "ingest": {"kind": "ingest", "params": {"paths": [str(corpus / "*.jsonl")]}},
        "slow": {"kind": "slow", "inputs": ["ingest"], "params": {
            "seconds_per_doc": seconds_per_doc, "ran_log": str(tmp_path / "ran.log")}},
    }})


def finished_tasks(stage_dir: Path) -> set[str]:
    """The tasks a stage's journal and manifest hold: what a resumed run will not redo."""
    tasks = json.loads((stage_dir / "manifest.json").read_text())["tasks"]
    journal = [json.loads(p.read_text())["task"] for p in stage_dir.glob("journal.*.json")]
    return set(tasks) | set(journal)


def ran(tmp_path) -> list[str]:
    log = tmp_path / "ran.log"
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_ctrl_c_exits_130_in_one_line_and_the_same_command_resumes(tmp_path, write_config,
                                                                   executor):
    path = two_stage_config(tmp_path, write_config, seconds_per_doc=0.05)  # 0.5 s a task
    stage_dir = tmp_path / "run" / "slow"
    command = [sys.executable, "-c", LAUNCH, "run", str(path), "--executor", executor]
    # A session of its own: Ctrl-C in a terminal signals the whole process group, dask's
    # worker processes included, and so does this test.
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(stage_dir.glob("journal.*.json"))) >= 2:
            os.killpg(proc.pid, signal.SIGINT)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err

    kept = finished_tasks(stage_dir)
    assert 2 <= len(kept) < 8
    assert last_line(err) == (
        f"lmforge: interrupted: kept in {tmp_path / 'run'}: 1 complete stage (ingest), "
        f"{len(kept)} finished tasks of 'slow'; run the same command again to resume")
    assert not (tmp_path / "run" / "lmforge.lock").exists()  # released on the way out
    ran(tmp_path)

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^slow +resumed ", done.stdout, re.M), done.stdout
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["tasks"]) == 8
    assert sorted(ran(tmp_path)) == sorted(set(manifest["tasks"]) - kept)
    assert sum(t["counts"]["kept"] for t in manifest["tasks"].values()) == 80


def test_ctrl_c_after_force_says_to_run_without_force(tmp_path, write_config, test_kinds,
                                                      monkeypatch, capsys):
    path = two_stage_config(tmp_path, write_config, files=2)
    assert main(["run", str(path)]) == 0

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Slow, "run_task", interrupt)
    capsys.readouterr()
    assert main(["run", str(path), "--force", "slow"]) == 130
    assert last_line(capsys.readouterr().err) == (
        f"lmforge: interrupted: kept in {tmp_path / 'run'}: 1 complete stage (ingest); "
        "run it again without --force to resume")


def fail_commits(monkeypatch, should_fail, error):
    """storage.commit raises `error(final)` for the files `should_fail(final)` picks."""
    commit = storage.commit

    def failing(tmp, final):
        if should_fail(Path(final)):
            raise error(final)
        commit(tmp, final)

    monkeypatch.setattr(storage, "commit", failing)


@pytest.mark.parametrize("where", ["task", "driver"])
def test_disk_full_names_the_path_and_what_was_kept(tmp_path, write_config, test_kinds,
                                                    monkeypatch, capsys, where):
    path = two_stage_config(tmp_path, write_config, files=5)
    shards = tmp_path / "run" / "slow" / "shards"
    if where == "task":  # the third shard a task writes: ENOSPC, with the file's name
        fail_commits(monkeypatch,
                     lambda final: final.parent == shards and len(list(shards.glob("*.parquet"))) == 2,
                     lambda final: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final)))
    else:  # the driver's third journal entry: over quota, and no file name to give
        fail_commits(monkeypatch,
                     lambda final: final.name.startswith("journal.") and final.parent.name == "slow"
                     and len(list(final.parent.glob("journal.*.json"))) == 2,
                     lambda final: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    assert main(["run", str(path)]) == 1
    line = last_line(capsys.readouterr().err)
    run_dir = tmp_path / "run"
    kept = f"kept in {run_dir}: 1 complete stage (ingest), 2 finished tasks of 'slow'"
    again = "free space, then run the same command again to resume"
    if where == "task":
        assert re.fullmatch(
            rf"lmforge: error: stage 'slow', task '00002-00000': OSError: No space left on device "
            rf"writing {re.escape(str(shards))}/00002-00000\.parquet; {re.escape(kept)}; {again}",
            line), line
    else:
        assert line == f"lmforge: error: Disk quota exceeded writing under {run_dir}; {kept}; {again}"
    assert finished_tasks(run_dir / "slow") == {"00000-00000", "00001-00000"}
    ran(tmp_path)

    monkeypatch.undo()
    monkeypatch.setitem(STAGE_KINDS, "slow", "tests.pipeline.test_cli_messages:Slow")
    assert main(["run", str(path)]) == 0
    assert re.search(r"^slow +resumed ", capsys.readouterr().out, re.M)
    assert sorted(ran(tmp_path)) == ["00002-00000", "00003-00000", "00004-00000"]


@pytest.mark.parametrize("inside", [False, True])
def test_run_dir_that_is_a_file_is_bad_input_before_anything_runs(tmp_path, write_config,
                                                                 test_kinds, monkeypatch,
                                                                 capsys, inside):
    path = two_stage_config(tmp_path, write_config, files=1)
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me\n")
    run_dir = blocker / "run" if inside else blocker

    def no_executor(*args, **kwargs):
        raise AssertionError("an executor was started")

    monkeypatch.setattr("pipeline.cli.make_executor", no_executor)
    assert main(["run", str(path), "--run-dir", str(run_dir), "--executor", "dask"]) == 2
    line = last_line(capsys.readouterr().err)
    assert line == (f"lmforge: bad input: run directory {run_dir}: exists and is not a folder"
                    + (f" ({blocker})" if inside else ""))
    assert blocker.read_text() == "keep me\n"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_bad_input_within_the_connect_timeout(tmp_path, write_config,
                                                                       test_kinds, capsys):
    path = two_stage_config(tmp_path, write_config, files=1)
    address = f"tcp://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    assert main(["run", str(path), "--executor", "dask", "--scheduler", address,
                 "--connect-timeout", "1"]) == 2
    assert time.monotonic() - start < 10
    line = last_line(capsys.readouterr().err)
    assert line.startswith(f"lmforge: bad input: dask scheduler {address}: cannot connect ("), line
    assert "after 1 s" in line


@pytest.mark.parametrize("argument", [["--workers", "-1"], ["--workers", "0"],
                                      ["--workers", "two"], ["--connect-timeout", "0"]])
def test_worker_count_and_timeout_below_1_are_usage_errors(tmp_path, capsys, argument):
    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "config.yaml"), *argument])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argument[0]}: " in err.strip().splitlines()[-1]


def test_an_error_in_a_task_names_stage_task_and_type(tmp_path, write_config, test_kinds, capsys):
    corpus = write_corpus(tmp_path / "corpus", files=1, docs_per_file=3)
    path = write_config({"name": "t", "run_dir": str(tmp_path / "run"), "stages": {
        "ingest": {"kind": "ingest", "params": {"paths": [str(corpus / "*.jsonl")]}},
        "bad": {"kind": "raises", "inputs": ["ingest"]}}})
    assert main(["run", str(path)]) == 1
    assert last_line(capsys.readouterr().err) == (
        "lmforge: error: stage 'bad', task '00000-00000': KeyError: 'no_such_column'")
