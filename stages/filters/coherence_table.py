"""`coherence_table`: phase 2 of `coherence_filter`, the sample's counts summed.

Input: one `coherence_counts` stage. One task, `table`, adds its shards' tables up, one at
a time, and writes `table.npz` (stages/filters/coherence.py) and `meta/counted.json`:
shard task name -> documents counted, which coherence_keep needs for its leave-one-out.

Memory: the running sum and one shard's table: about 12 bytes per distinct word or pair
of the sample, at most 24 bytes per sampled word, twice while adding.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.filters.coherence import TABLE_FILE, Table
from stages.filters.quality import commit_json, files_under

COUNTED_FILE = "meta/counted.json"


class CoherenceTableParams(Params):
    pass


class CoherenceTable(Stage):
    kind = "coherence_table"
    version = 1
    units = "counts -> table"
    Params = CoherenceTableParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        counts = self.input_of_kind(inputs, "coherence_counts")
        files = files_under(counts, "counts")
        names = sorted(files)
        return [Task("table", tuple(files[n] for n in names), (("shards", tuple(names)),))]

    def run_task(self, task: Task) -> TaskResult:
        total = Table.empty()
        counted: dict[str, int] = {}
        for name, path in zip(task.get("shards"), task.inputs):
            shard = Table.load(path)
            counted[name] = int(shard.totals[2])
            total = Table.merge([total, shard])
        documents = int(total.totals[2])
        files = [total.save(self.stage_dir, self.stage_dir / TABLE_FILE),
                 commit_json(self.stage_dir, self.stage_dir / COUNTED_FILE, counted)]
        return TaskResult(files, Counts(n_in=documents, kept=documents),
                          info={"words": int(total.totals[0]), "pairs": int(total.totals[1]),
                                "distinct_words": len(total.words),
                                "distinct_pairs": len(total.pairs), "table_bytes": total.nbytes})


def table_files(stage_input: StageInput) -> tuple[str, str]:
    """(table.npz, meta/counted.json) among a coherence_table stage's committed files."""
    found = {}
    for path in stage_input.files:
        for suffix in (TABLE_FILE, COUNTED_FILE):
            if Path(path).as_posix().endswith(suffix):
                found[suffix] = path
    if len(found) != 2:
        raise ValueError(f"stage '{stage_input.name}' has no committed {TABLE_FILE} and "
                         f"{COUNTED_FILE} (files: {', '.join(stage_input.files) or 'none'})")
    return found[TABLE_FILE], found[COUNTED_FILE]
