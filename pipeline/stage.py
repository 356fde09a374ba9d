"""What a stage is: params, a list of tasks, and the work of one task.

A stage kind is one class. The engine asks it for `tasks(inputs)` (deterministic names, one
manifest entry each) and ships `run_task(task)` to an executor; the stage never knows which
executor runs it. Most stages are `DocStage`s: they stream documents with
`process(docs) -> docs`, and the base class reads the input shards, writes kept documents
to `shards/` and rejected ones to `rejected/`, times the work and keeps the funnel counts
that the engine checks (`in == kept + sum(dropped) + sum(errors)`, per shard). A stage
that counts something other than documents says so in `units` ("band rows -> pairs");
the manifest and `lmforge status` carry it. A `FilterStage` is a DocStage that drops
documents by a rule; that, and the files a stage offers the report (`report_files`), are
what `lmforge report` knows of a stage, never its kind's name.

Composite stages. A `CompositeStage` is a kind the user writes once and the config loader
replaces, before any cache key is computed, by the stages it is made of (its phases):

    class MinhashDedup(CompositeStage):
        kind = "minhash_dedup"
        Params = ...                         # one params block, validated like any stage's

        @classmethod
        def expand(cls, name, params, inputs):
            clusters = phase_name(name, "clusters")
            return [...,
                    Phase(clusters, "minhash_clusters", (phase_name(name, "buckets"),),
                          params_for(MinhashClustersParams, params)),
                    Phase(name, "minhash_filter", (*inputs, clusters), {})]

`expand(name, params, inputs)` gets the composite's stage name, its validated params and
its `inputs` (stage names) and returns the phases in order. Rules, checked at load:
the last phase carries the composite's own `name`, so stages downstream keep writing
`inputs: [name]`; every other phase is named `phase_name(name, part)` = `<name>.<part>`
(a '.' never appears in a stage name the user writes, so phases cannot collide with
user stages); phases name their inputs by stage name (the composite's inputs or earlier
phases). Each phase's `kind` must be a plain stage kind, its params are validated against
that kind's `Params` and it inherits the composite's `max_error_fraction`. An
`expand` that rejects its inputs raises ValueError("inputs: ...") and the loader prefixes
file and stage. The phase kinds stay usable on their own.
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from pipeline.artifacts import (
    DocShardWriter,
    FileEntry,
    read_doc_shard,
    shard_schema,
    verified_inputs,
)
from pipeline.documents import Document, Rejected, score_columns_of
from pipeline.progress import Send, documents_done, reporting

PHASE_SEPARATOR = "."

FIRST_ERRORS_KEPT = 5


class Params(BaseModel):
    """Base for every stage's params: strict types, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class Task:
    """One unit of work: `name` is unique in its stage and names its manifest entry."""

    name: str
    inputs: tuple[str, ...] = ()
    payload: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.payload).get(key, default)


@dataclass(frozen=True)
class StageInput:
    """The committed outputs of an upstream stage, as its manifest lists them."""

    name: str
    kind: str
    directory: Path
    files: tuple[str, ...]  # absolute paths or URLs, sorted
    sha256: tuple[str, ...] = ()  # the manifest's checksum of each file, in the same order
    kept: int = 0  # what the stage kept (documents, for a document stage)
    docs: tuple[int, ...] = ()  # documents in each of `files`, in the same order

    @property
    def shards(self) -> list[str]:
        """The doc (or token) shards under `shards/`."""
        return [f for f in self.files if Path(f).parent.name == "shards"]

    def checksum(self, path: str) -> str | None:
        """The manifest's sha256 of one of `files` (to verify a local copy)."""
        return dict(zip(self.files, self.sha256)).get(path)


@dataclass
class Counts:
    """The funnel of one task: documents in, kept, dropped and failed by reason."""

    n_in: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0

    def balanced(self) -> bool:
        return self.n_in == self.kept + sum(self.dropped.values()) + sum(self.errors.values())

    def add(self, other: Counts) -> None:
        self.n_in += other.n_in
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.errors.update(other.errors)
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out

    def to_dict(self) -> dict[str, Any]:
        return {
            "in": self.n_in,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "errors": dict(sorted(self.errors.items())),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counts:
        return cls(
            n_in=d["in"],
            kept=d["kept"],
            dropped=Counter(d["dropped"]),
            errors=Counter(d["errors"]),
            bytes_in=d.get("bytes_in", 0),
            bytes_out=d.get("bytes_out", 0),
        )


@dataclass
class TaskResult:
    """What a finished task reports to the driver, which records it in the manifest."""

    files: list[FileEntry]
    counts: Counts
    seconds: float = 0.0  # the task's wall time, measured by execute_task around run_task
    first_errors: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Stage:
    """Base of every stage kind. Subclasses set `kind`, `version`, `Params`."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]] = Params
    doc_stage: ClassVar[bool] = False  # True when the funnel invariant applies
    # What `in` and `kept` count, shown by `lmforge status`; "A -> B" when `in` counts A
    # and `kept` counts B (minhash_buckets: "band rows -> pairs").
    units: ClassVar[str] = "documents"
    filters: ClassVar[bool] = False  # True for a FilterStage
    # True when what the stage does not keep is set aside, not dropped from the corpus (a
    # tokenizer's training sample: the rest flows on downstream untouched). Its `dropped`
    # reasons are shown as "set aside" by status and report, apart from filtering.
    samples: ClassVar[bool] = False
    # Files `lmforge report` can show, by the format the report knows them as, each a list
    # of paths in the stage directory (the first the manifest lists wins, else the first
    # that exists, e.g. a running stage's scratch copy): "tokenizer_report" (JSON: heldout,
    # vocab, sample), "training_log" (JSONL: step, loss, lr, val_loss, tokens_per_s, mfu),
    # "sample" (text).
    report_files: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Subfolders of the stage directory holding working state that must survive a killed
    # run (training checkpoints, a crawl frontier): never in the manifest, never cleaned.
    scratch_dirs: ClassVar[tuple[str, ...]] = ()
    # True for kinds that train on their inputs (a tokenizer, a classifier, a model): an
    # input stage that kept nothing fails the stage, naming that input, before any task.
    needs_documents: ClassVar[bool] = False

    def __init__(self, name: str, params: Params, stage_dir: Path):
        self.name = name
        self.params = params
        self.stage_dir = stage_dir
        # The manifest sha256 of every upstream file, set by the runner: tasks check the
        # files they open against it (pipeline/artifacts.py, `verified_inputs`).
        self.input_checksums: dict[str, str] = {}

    @classmethod
    def declared(cls) -> dict[str, Any]:
        """What the manifest records of this kind, for `lmforge status` and `report`."""
        return {"units": cls.units, "filters": cls.filters, "samples": cls.samples,
                "report_files": {k: list(v) for k, v in cls.report_files.items()}}

    def fingerprint(self) -> Any:
        """Anything beyond params that decides the output (e.g. input file sizes)."""
        return None

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        raise NotImplementedError

    def run_task(self, task: Task) -> TaskResult:
        raise NotImplementedError

    def input_of_kind(self, inputs: list[StageInput], kind: str) -> StageInput:
        """The one input of a given kind (a phase finding its upstream phase); a clear error
        naming this stage otherwise."""
        found = [i for i in inputs if i.kind == kind]
        if len(found) != 1:
            got = ", ".join(f"{i.name} ({i.kind})" for i in inputs) or "none"
            raise ValueError(f"stage '{self.name}': needs exactly one input of kind '{kind}'; got {got}")
        return found[0]

    def __getstate__(self) -> dict[str, Any]:
        # Heavy resources (models, tokenizers) are loaded lazily into `_`-prefixed
        # attributes; they are never pickled to workers, each worker loads its own once.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class Phase:
    """One stage a composite expands into: params as YAML would give them."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)


class CompositeStage:
    """A stage kind made of several: `expand` returns its phases (module docstring)."""

    kind: ClassVar[str]
    Params: ClassVar[type[Params]] = Params

    @classmethod
    def expand(cls, name: str, params: Params, inputs: list[str]) -> list[Phase]:
        raise NotImplementedError


def phase_name(composite: str, part: str) -> str:
    """The stage name of one phase of a composite: `<composite>.<part>`."""
    return f"{composite}{PHASE_SEPARATOR}{part}"


def params_for(phase_params: type[Params], params: Params) -> dict[str, Any]:
    """The keys of a composite's params that one phase's `Params` declares."""
    return {k: v for k, v in params.model_dump().items() if k in phase_params.model_fields}


Item = Document | Rejected


class DocStage(Stage):
    """A stage that streams documents: one task per input shard, same shard name out.

    Subclasses implement `apply(doc)` (one document -> a Document or a Rejected) or, for
    batch-wise work, override `process(docs)`. An exception raised by `apply` is caught:
    the document goes to rejected/ as `error:<ExceptionType>` and the stage goes on.
    Source stages (ingest) override `read(task)` and may yield `Rejected` records for
    input they cannot parse; those count in `in` like any document.
    """

    doc_stage = True
    # Score columns this stage adds: name -> Arrow type.
    score_columns: ClassVar[dict[str, pa.DataType]] = {}
    # Rotate output shards every N documents (source stages); None keeps one shard per task.
    max_docs_per_shard: int | None = None

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        shards = [s for inp in inputs for s in inp.shards]
        names = [Path(s).stem for s in shards]
        if len(set(names)) != len(names):
            # Two upstream stages feeding one stage may reuse shard names: prefix with the stage.
            return [
                Task(name=f"{inp.name}-{Path(s).stem}", inputs=(s,))
                for inp in inputs
                for s in inp.shards
            ]
        return [Task(name=n, inputs=(s,)) for n, s in zip(names, shards)]

    def read(self, task: Task) -> Iterator[Item]:
        for path in task.inputs:
            yield from read_doc_shard(path)

    def input_score_columns(self, task: Task) -> dict[str, pa.DataType]:
        columns: dict[str, pa.DataType] = {}
        for path in task.inputs:
            columns.update(score_columns_of(shard_schema(path)))
        return columns

    def shard_name(self, task: Task, index: int) -> str:
        if self.max_docs_per_shard is None:
            return f"{task.name}.parquet"
        return f"{task.name}-{index:05d}.parquet"

    def apply(self, doc: Document) -> Item:
        raise NotImplementedError

    def process(self, docs: Iterable[Document]) -> Iterator[Item]:
        for doc in docs:
            try:
                yield self.apply(doc)
            except Exception as exc:  # one bad document must not stop the shard
                yield Rejected(doc, f"error:{type(exc).__name__}", error=_describe(exc))

    def run_task(self, task: Task) -> TaskResult:
        counts = Counts()
        first_errors: list[str] = []
        columns = {**self.input_score_columns(task), **self.score_columns}
        writer = DocShardWriter(
            self.stage_dir,
            self.name,
            lambda i: self.shard_name(task, i),
            columns,
            self.max_docs_per_shard,
        )

        def record(rejected: Rejected) -> None:
            if rejected.error is None:
                counts.dropped[rejected.reason] += 1
                return
            counts.errors[rejected.reason] += 1
            if len(first_errors) < FIRST_ERRORS_KEPT:
                first_errors.append(f"{rejected.doc.id}: {rejected.reason}: {rejected.error}")

        def documents_in() -> Iterator[Document]:
            for item in self.read(task):
                counts.n_in += 1
                documents_done()
                if isinstance(item, Rejected):
                    counts.bytes_in += len(item.doc.text.encode("utf-8", "replace"))
                    record(item)
                    writer.reject(item)
                    continue
                counts.bytes_in += len(item.text.encode("utf-8", "surrogatepass"))
                yield item

        try:
            for item in self.process(documents_in()):
                if isinstance(item, Rejected):
                    record(item)
                    writer.reject(item)
                else:
                    counts.kept += 1
                    counts.bytes_out += len(item.text.encode("utf-8", "surrogatepass"))
                    writer.keep(item)
            files = writer.close()
        except BaseException:
            writer.abort()
            raise
        return TaskResult(files, counts, first_errors=first_errors)


class FilterStage(DocStage):
    """A doc stage that drops documents by a rule (filters, language ID, dedup's last
    phase): `lmforge report` measures the lengths "before filtering" on what enters the
    first one."""

    filters = True


def _describe(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({Path(frame[0].filename).name}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def execute_task(stage: Stage, task: Task, progress: Send | None = None) -> TaskResult:
    """The function executors run: module level, so it pickles by reference. It times the
    task, so that no stage has to: `seconds` is the wall time of `run_task`. `progress`
    receives the running task's document counts (pipeline/progress.py)."""
    start = time.perf_counter()
    with verified_inputs(stage.input_checksums), reporting(progress, stage.name, task.name):
        result = stage.run_task(task)
    result.seconds = time.perf_counter() - start
    return result
