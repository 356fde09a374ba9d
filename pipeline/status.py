"""`lmforge status`: the funnel of a run directory, as a table or as JSON.

JSON schema (stable; `schema_version` changes if it does):

    {"schema_version": 3, "run_dir": str, "stages": [
        {"stage": str, "kind": str, "units": str, "state": "complete" | "partial",
         "tasks_done": int, "in": int, "kept": int,
         "dropped": {reason: int}, "set_aside": {reason: int}, "errors": {reason: int},
         "wall_seconds": float | null, "docs_per_second": float | null,
         "damaged": [str]}, ...]}

`units` says what `in`, `kept`, the drops and `docs_per_second` count, as the stage
class declares it: "documents" by default; "A -> B" when `in` counts A and `kept` counts
B (`crawl`: "URLs -> pages"; `minhash_buckets`: "band rows -> pairs"; `minhash_clusters`:
"pairs -> documents").
Version 2 added `units`; in version 1 such rows mixed units silently. Version 3 added
`set_aside`: what a sampling stage (`train_tokenizer`: its held-out text and the documents
it did not sample) did not use, which flows on downstream; it was counted as dropped
before. `in == kept + dropped + set_aside + errors`. Phases of a composite stage are rows of their own,
named `<stage>.<phase>`.

`damaged` lists committed files that are missing or not of their recorded size (one
listing per stage, no file read; `lmforge verify` hashes them); a stage with any is
"partial", and the next `lmforge run` redoes the tasks that wrote them.

Stages are listed in the order of the last run's DAG (`run.json`), else by name.
Counts come from the manifests, so a partial stage shows what its committed shards hold.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from pipeline.artifacts import MANIFEST, STATS, shard_schema
from pipeline.manifest import Manifest
from pipeline.stage import Counts
from pipeline.storage import run_location

RUN_FILE = "run.json"


@dataclass
class StageView:
    """One stage directory as the report sees it."""

    name: str
    kind: str
    units: str
    directory: Path
    complete: bool
    counts: Counts
    files: list[str]
    infos: list[dict[str, Any]]
    wall_seconds: float | None = None
    docs_per_second: float | None = None
    filters: bool = False  # the kind's declarations (pipeline/stage.py, Stage.declared)
    report_files: dict[str, list[str]] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)  # committed files missing or resized
    samples: bool = False  # its `dropped` reasons are set aside, not filtered (Stage.samples)

    @property
    def dropped(self) -> Counter:
        """Documents removed from the corpus, by reason (none for a sampling stage)."""
        return Counter() if self.samples else self.counts.dropped

    @property
    def set_aside(self) -> Counter:
        """Documents a sampling stage did not use (they flow on downstream), by reason."""
        return self.counts.dropped if self.samples else Counter()

    def paths(self, sub: str, suffix: str = ".parquet") -> list[Path]:
        return [self.directory / f for f in self.files
                if f.startswith(f"{sub}/") and f.endswith(suffix)]

    @property
    def is_doc_stage(self) -> bool:
        return bool(self.paths("shards"))

    def schema_names(self) -> set[str]:
        shards = self.paths("shards")
        return set(shard_schema(shards[0]).names) if shards else set()

    def report_file(self, what: str) -> Path | None:
        """The file the stage declares for report section `what`: the first candidate the
        manifest lists, else the first that exists (a running stage's scratch copy)."""
        candidates = self.report_files.get(what, [])
        listed = [c for c in candidates if c in self.files]
        existing = [c for c in candidates if (self.directory / c).exists()]
        found = (listed or existing)[:1]
        return self.directory / found[0] if found else None


def load_stages(run_dir: Path | str, check_files: bool = False) -> list[StageView]:
    """Every stage directory of `run_dir` with a manifest; `check_files` also lists each
    stage's files to fill `damaged` (what `lmforge status` shows; the report does not)."""
    run_dir = run_location(run_dir)
    order_file = run_dir / RUN_FILE
    names = json.loads(order_file.read_text())["stages"] if order_file.exists() else []
    names += sorted(p.parent.name for p in run_dir.glob(f"*/{MANIFEST}") if p.parent.name not in names)
    stages = []
    for name in names:
        manifest = Manifest.load(run_dir / name)
        if manifest is None:
            continue
        total = Counts()
        for task in manifest.tasks.values():
            total.add(Counts.from_dict(task["counts"]))
        stats_path = run_dir / name / STATS
        stats = json.loads(stats_path.read_text()) if manifest.complete and stats_path.exists() else {}
        stages.append(StageView(name, manifest.data["kind"], manifest.data.get("units", "documents"),
                                run_dir / name, manifest.complete, total,
                                manifest.files(), [t.get("info") or {} for t in manifest.tasks.values()],
                                stats.get("wall_seconds"), stats.get("docs_per_second"),
                                manifest.data.get("filters", False),
                                manifest.data.get("report_files", {}),
                                [f"{p}: {why}" for p, why in sorted(manifest.damaged().items())]
                                if check_files else [],
                                manifest.data.get("samples", False)))
    return stages


def run_status(run_dir: Path | str) -> dict[str, Any]:
    run_dir = run_location(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    stages = []
    for view in load_stages(run_dir, check_files=True):
        counts = view.counts.to_dict()
        stages.append({
            "stage": view.name,
            "kind": view.kind,
            "units": view.units,
            "state": "complete" if view.complete and not view.damaged else "partial",
            "tasks_done": len(view.infos),
            "in": counts["in"],
            "kept": counts["kept"],
            "dropped": dict(sorted(view.dropped.items())),
            "set_aside": dict(sorted(view.set_aside.items())),
            "errors": counts["errors"],
            "wall_seconds": view.wall_seconds,
            "docs_per_second": view.docs_per_second,
            "damaged": view.damaged,
        })
    return {"schema_version": 3, "run_dir": str(run_dir), "stages": stages}


def format_status(status: dict[str, Any]) -> str:
    w = max([18, *(len(s["stage"]) + 1 for s in status["stages"])])  # phases: `<stage>.<phase>`
    k = max([18, *(len(s["kind"]) for s in status["stages"])])
    u = max([20, *(len(s["units"]) for s in status["stages"])])
    header = (f"{'stage':<{w}} {'kind':<{k}} {'units':<{u}} {'state':<9} {'in':>10} {'kept':>10} "
              f"{'dropped':>9} {'errors':>7} {'wall s':>8} {'in/s':>10}")
    lines = [f"run: {status['run_dir']}", header, "-" * len(header)]
    for s in status["stages"]:
        wall = f"{s['wall_seconds']:.2f}" if s["wall_seconds"] is not None else "-"
        rate = f"{s['docs_per_second']:,.0f}" if s["docs_per_second"] is not None else "-"
        lines.append(
            f"{s['stage']:<{w}} {s['kind']:<{k}} {s['units']:<{u}} {s['state']:<9} {s['in']:>10,} "
            f"{s['kept']:>10,} {sum(s['dropped'].values()):>9,} {sum(s['errors'].values()):>7,} "
            f"{wall:>8} {rate:>10}"
        )
        for problem in s.get("damaged", [])[:10]:
            lines.append(f"{'':<{w}} damaged: {problem}")
        for outcome, label in (("dropped", "drop"), ("set_aside", "set aside"), ("errors", "error")):
            for reason, n in sorted(s.get(outcome, {}).items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"{'':<{w}} {label}: {reason:<40} {n:>10,}")
    return "\n".join(lines)
