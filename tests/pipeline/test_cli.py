"""The console script's error policy: exit 2 for bad input, 1 for a failure while running,
one line on stderr, the traceback only with --debug."""

from __future__ import annotations

import pytest

from pipeline.cli import main


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def ingest_config(tmp_path, write_config, pattern: str):
    return write_config({"name": "t", "run_dir": str(tmp_path / "run"), "stages": {
        "ingest": {"kind": "ingest", "params": {"paths": [str(tmp_path / pattern)]}}}})


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as info:
        main(["run"])  # CONFIG missing
    assert info.value.code == 2


@pytest.mark.parametrize("command", [
    ["validate", "{tmp}/missing.yaml"],
    ["run", "{tmp}/missing.yaml"],
    ["status", "{tmp}/no-run"],
    ["report", "{tmp}/no-run"],
    ["train", "{tmp}/missing.yaml"],
])
def test_missing_files_exit_2_in_one_line(tmp_path, capsys, command):
    assert main([part.format(tmp=tmp_path) for part in command]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("lmforge: bad input: ") and str(tmp_path) in line


def test_config_mistakes_exit_2_naming_file_stage_and_key(tmp_path, write_config, capsys):
    path = write_config({"name": "t", "stages": {
        "a": {"kind": "filter", "params": {"min_wrds": 3}},
        "b": {"kind": "nope"}}})
    assert main(["validate", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{path}: stage 'a': params.min_wrds: unknown key" in line


def test_unknown_stage_in_until_is_bad_input(tmp_path, write_config, capsys):
    (tmp_path / "docs.jsonl").write_text('{"text": "one document"}\n')
    path = ingest_config(tmp_path, write_config, "docs.jsonl")
    assert main(["run", str(path), "--until", "nope"]) == 2
    assert "no stage named 'nope'" in one_line(capsys.readouterr().err)


def test_failure_while_running_exits_1_traceback_only_with_debug(tmp_path, write_config, capsys):
    (tmp_path / "bad.jsonl").write_text("not json\n" * 3)  # every record fails: over budget
    path = ingest_config(tmp_path, write_config, "bad.jsonl")
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err  # log lines may come first; the error is the last line
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        "lmforge: error: stage 'ingest': 3 of 3 documents failed")
    assert main(["--debug", "run", str(path), "--force", "ingest"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "StageFailed" in err
