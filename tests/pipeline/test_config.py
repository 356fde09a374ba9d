"""Config errors: each mistake is caught before anything runs, naming file, stage and key."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.config import ConfigError, load_config
from stages import stage_class_for

GOOD = """\
name: t
stages:
  ingest:
    kind: ingest
    params: {paths: [data/*.jsonl]}
  clean:
    kind: filter
    inputs: [ingest]
    params: {min_chars: 10}
"""


def error_for(tmp_path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, stage_class_for)
    message = str(info.value)
    assert str(path) in message
    return message


def test_good_config_orders_stages(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.replace("  ingest:\n", "  zeta:\n  ingest:\n", 0))
    config = load_config(path, stage_class_for)
    assert list(config.stages) == ["ingest", "clean"]
    assert config.stages["clean"].params.min_chars == 10
    assert str(config.run_dir) == "runs/t"


def test_inputs_come_first_whatever_the_written_order(tmp_path):
    path = tmp_path / "order.yaml"
    path.write_text(
        "name: t\nstages:\n"
        "  c: {kind: filter, inputs: [b]}\n"
        "  b: {kind: filter, inputs: [a]}\n"
        "  a: {kind: ingest, params: {paths: [x.txt]}}\n"
    )
    assert list(load_config(path, stage_class_for).stages) == ["a", "b", "c"]


def test_unknown_top_level_key(tmp_path):
    msg = error_for(tmp_path, GOOD + "executr: {kind: local}\n")
    assert "executr: unknown key" in msg


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("    inputs: [ingest]", "    input: [ingest]", ["input: unknown key"]),
    ("min_chars: 10", "min_char: 10", ["params.min_char: unknown key"]),
    ("min_chars: 10", "min_chars: ten", ["params.min_chars", "'ten'"]),
    ("inputs: [ingest]", "inputs: ingest", ["inputs"]),
])
def test_stage_mistakes_name_the_stage_and_key(tmp_path, old, new, expected):
    msg = error_for(tmp_path, GOOD.replace(old, new))
    assert "stage 'clean'" in msg
    assert all(part in msg for part in expected), msg


def test_unknown_stage_kind(tmp_path):
    msg = error_for(tmp_path, GOOD.replace("kind: filter", "kind: filtre"))
    assert "stage 'clean'" in msg and "kind: unknown stage kind 'filtre'" in msg
    assert "filter" in msg  # the known kinds are listed


def test_missing_input(tmp_path):
    msg = error_for(tmp_path, GOOD.replace("inputs: [ingest]", "inputs: [ingset]"))
    assert "stage 'clean'" in msg and "inputs: 'ingset' is not a stage" in msg


def test_cycle(tmp_path):
    msg = error_for(
        tmp_path,
        "name: t\nstages:\n"
        "  a: {kind: filter, inputs: [c]}\n"
        "  b: {kind: filter, inputs: [a]}\n"
        "  c: {kind: filter, inputs: [b]}\n",
    )
    assert "cycle" in msg
    for name in "abc":
        assert name in msg.split("cycle:")[1]


def test_duplicate_stage_name(tmp_path):
    msg = error_for(tmp_path, GOOD + "  clean:\n    kind: filter\n    inputs: [ingest]\n")
    assert "stage 'clean' is defined twice" in msg and "line 10" in msg


def test_invalid_yaml(tmp_path):
    msg = error_for(tmp_path, "name: t\nstages: [\n")
    assert "not valid YAML" in msg


def test_yaml_tags_are_not_executed(tmp_path):
    msg = error_for(tmp_path, "name: !!python/object/apply:os.system ['true']\nstages: {}\n")
    assert "not valid YAML" in msg


def test_validate_prints_the_dag(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1. ingest (ingest)" in out and "2. clean (filter) <- ingest" in out


def test_validate_reports_error_with_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("kind: filter", "kind: nope"))
    assert main(["validate", str(path)]) == 2
    assert "unknown stage kind 'nope'" in capsys.readouterr().err
