"""The run config: one YAML file, loaded with `yaml.safe_load` into strict typed models.

    name: demo                    # run name
    run_dir: runs/demo            # optional, default runs/<name>
    executor: {kind: local}       # or {kind: dask, workers: 2, scheduler: tcp://host:8786}
    stages:
      ingest:                     # the stage's name: its directory in the run dir
        kind: ingest              # which stage class (the registry the caller hands in)
        params: {paths: [data/*.jsonl]}
      clean:
        kind: filter
        inputs: [ingest]          # names of upstream stages
        max_error_fraction: 0.05  # fail the stage above this share of failed documents
        params: {min_chars: 200}

Every mistake is reported before anything runs, as `FILE: stage 'NAME': KEY: problem`:
unknown keys, wrong types, an unknown stage kind, an input that names no stage, a cycle,
a stage name given twice. Relative paths are relative to the working directory.

A composite kind (e.g. `minhash_dedup`) is replaced here, at load and before cache keys,
by its phases: stage `dedup` of kind minhash_dedup becomes `dedup.signatures`,
`dedup.buckets`, `dedup.clusters` and `dedup` (the last phase keeps the name, so
`inputs: [dedup]` downstream reads the deduplicated documents). pipeline/stage.py
describes the rules; '.' in a stage name is reserved for phases.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.stage import PHASE_SEPARATOR, CompositeStage, Params, Phase, phase_name
from pipeline.storage import StorageError, run_location


class ConfigError(ValueError):
    """A config mistake; the message names the file, the stage and the key."""


# A stage name is one folder directly in the run directory: letters, digits, '_' and '-'
# (no '/', no '..', no '.', which marks phases), not starting with '-'. Names the run
# directory uses for itself are reserved.
STAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")
RESERVED_NAMES = {"report"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ExecutorConfig(Strict):
    kind: Literal["local", "dask"] = "local"
    workers: int = Field(default=2, ge=1)
    scheduler: str | None = None  # tcp://host:port of an existing dask scheduler


class StageConfig(Strict):
    kind: str
    inputs: list[str] = []
    params: dict[str, Any] = {}
    max_error_fraction: float = Field(default=0.05, ge=0.0, le=1.0)


class RunConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # never '.' or '..'
    run_dir: str | None = None
    executor: ExecutorConfig = ExecutorConfig()
    stages: dict[str, StageConfig]


class LoadedStage:
    """A stage config with its params validated against its kind's `Params` model."""

    def __init__(self, name: str, config: StageConfig, stage_class: type, params: Params,
                 part_of: str | None = None):
        self.name = name
        self.config = config
        self.stage_class = stage_class
        self.params = params
        self.part_of = part_of  # the composite stage this is a phase of, if any

    @property
    def inputs(self) -> list[str]:
        return self.config.inputs


class Config:
    """A validated run: the top-level settings and the stages in DAG order."""

    def __init__(self, path: Path, run: RunConfig, stages: dict[str, LoadedStage]):
        self.path = path
        self.run = run
        self.stages = stages  # in topological order

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def run_dir(self) -> Path:
        """A local `Path`, or a `UPath` when run_dir is a URL (pipeline/storage.py)."""
        return run_location(self.run.run_dir or f"runs/{self.run.name}")


def _duplicate_keys(node: yaml.Node, path: str = "") -> list[str]:
    """Keys given twice anywhere in the document (plain YAML silently keeps the last one)."""
    found = []
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            where = f"{path}.{key}" if path else str(key)
            if key in seen:
                what = f"stage '{key}' is defined twice" if path == "stages" else f"{where}: key given twice"
                found.append(f"line {key_node.start_mark.line + 1}: {what}")
            seen.add(key)
            found += _duplicate_keys(value_node, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{path}[{i}]")
    return found


def _format_pydantic(prefix: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        got = e.get("input")
        shown = "" if e["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{prefix}{key}: {msg}{shown}")
    return "\n".join(lines)


def _stage_class(where: str, kind: str, stage_class_for) -> type:
    try:
        return stage_class_for(kind)
    except KeyError as exc:
        raise ConfigError(f"{where}: kind: {exc.args[0]}") from None


def _params(where: str, stage_class: type, params: dict[str, Any]) -> Params:
    try:
        return stage_class.Params.model_validate(params)
    except ValidationError as err:
        raise ConfigError(_format_pydantic(f"{where}: params.", err)) from None


def _expand(where: str, name: str, composite: type[CompositeStage], params: Params,
            inputs: list[str]) -> list[Phase]:
    """The phases of one composite stage, checked against the naming rules (stage.py)."""
    try:
        phases = composite.expand(name, params, list(inputs))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    names = [p.name for p in phases]
    if not phases or names[-1] != name:
        raise ConfigError(f"{where}: kind '{composite.kind}': its last phase must be named '{name}'")
    for phase in phases[:-1]:
        part = phase.name.removeprefix(phase_name(name, ""))
        if part == phase.name or not part or PHASE_SEPARATOR in part or names.count(phase.name) > 1:
            raise ConfigError(f"{where}: kind '{composite.kind}': phase name '{phase.name}' "
                              f"is not a unique '{phase_name(name, 'PART')}'")
    known = set(inputs)
    for phase in phases:
        for inp in phase.inputs:
            if inp not in known:
                raise ConfigError(f"{where}: phase '{phase.name}': inputs: '{inp}' is neither "
                                  "an input of the composite nor an earlier phase")
        known.add(phase.name)
    return phases


def load_config(path: str | Path, stage_class_for: Callable[[str], type]) -> Config:
    """Read, validate and order a run config; raise ConfigError on any mistake.
    `stage_class_for(kind)` gives the class of a stage kind, or raises KeyError with a
    message (the program's registry, `stages.stage_class_for`, handed in by pipeline/cli.py)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        duplicates = _duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if duplicates:
        raise ConfigError(f"{path}: " + f"\n{path}: ".join(duplicates))
    return config_from_dict(raw, stage_class_for, path)


def config_from_dict(raw: Any, stage_class_for: Callable[[str], type],
                     path: str | Path = "<config>") -> Config:
    """Validate and order a config given as a plain dict (as YAML would load it)."""

    path = Path(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with 'name' and 'stages'")

    raw_stages = raw.get("stages")
    if isinstance(raw_stages, dict):
        for name, stage in raw_stages.items():
            if not isinstance(name, str):
                raise ConfigError(f"{path}: stage name {name!r} must be a string")
            try:
                StageConfig.model_validate(stage)
            except ValidationError as err:
                raise ConfigError(_format_pydantic(f"{path}: stage '{name}': ", err)) from None
    try:
        run = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_pydantic(f"{path}: ", err)) from None
    if not run.stages:
        raise ConfigError(f"{path}: stages: at least one stage is needed")
    if run.run_dir is not None:
        try:
            run_location(run.run_dir)
        except StorageError as exc:
            raise ConfigError(f"{path}: run_dir: {exc}") from None

    loaded: dict[str, LoadedStage] = {}
    for name, stage in run.stages.items():
        where = f"{path}: stage '{name}'"
        if PHASE_SEPARATOR in name:
            raise ConfigError(f"{where}: a stage name may not contain '{PHASE_SEPARATOR}' "
                              "(it marks the phases of composite stages)")
        if not STAGE_NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise ConfigError(f"{where}: a stage name is the name of its folder in the run "
                              "directory: letters, digits, '_' and '-', not starting with '-'"
                              + (f"; '{name}' is reserved" if name in RESERVED_NAMES else ""))
        stage_class = _stage_class(where, stage.kind, stage_class_for)
        params = _params(where, stage_class, stage.params)
        for inp in stage.inputs:
            if inp not in run.stages:
                raise ConfigError(f"{where}: inputs: '{inp}' is not a stage in this config")
            if inp == name:
                raise ConfigError(f"{where}: inputs: a stage cannot read its own output")
        if not issubclass(stage_class, CompositeStage):
            loaded[name] = LoadedStage(name, stage, stage_class, params)
            continue
        for phase in _expand(where, name, stage_class, params, stage.inputs):
            phase_where = f"{where}: phase '{phase.name}'"
            phase_class = _stage_class(phase_where, phase.kind, stage_class_for)
            if issubclass(phase_class, CompositeStage):
                raise ConfigError(f"{phase_where}: kind: '{phase.kind}' is itself composite")
            phase_config = StageConfig(kind=phase.kind, inputs=list(phase.inputs),
                                       params=phase.params,
                                       max_error_fraction=stage.max_error_fraction)
            loaded[phase.name] = LoadedStage(phase.name, phase_config, phase_class,
                                             _params(phase_where, phase_class, phase.params),
                                             part_of=name)

    from pipeline.dag import CycleError, topological_order

    try:
        order = topological_order({n: s.inputs for n, s in loaded.items()}, where=str(path))
    except CycleError as exc:
        raise ConfigError(str(exc)) from None
    return Config(path, run, {n: loaded[n] for n in order})
