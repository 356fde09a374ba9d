"""The document record and its one Parquet schema.

Every doc shard in a run directory is a Parquet file with these columns, in this order:

| column     | type   | meaning                                                          |
|------------|--------|------------------------------------------------------------------|
| `id`       | string | stable and deterministic: same input, same id, on any machine      |
| `text`     | string | the document text (UTF-8)                                         |
| `url`      | string | where it came from, if known (null otherwise)                     |
| `source`   | string | the input it was read from (file path relative to its root, WARC) |
| `metadata` | string | a JSON object: anything a stage wants to keep that is not a score |

followed by one column per score a stage adds (`lang`, `lang_score`, `quality_score`,
`dup_cluster`, ...), sorted by name so the layout does not depend on which stage ran first.
Files are plain Parquet: pandas, duckdb and `datasets` read them without lmforge.

Rejected documents (`rejected/` of a stage) use the same columns plus `stage`, `reason`
(`"ruleset:rule"`, `"invalid_json"`, `"error:KeyError"`, ...), `error` (the exception text,
null for a plain drop) and `outcome` (`"dropped"` or `"error"`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

BASE_FIELDS = (
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("source", pa.string()),
    pa.field("metadata", pa.string()),
)
BASE_COLUMNS = tuple(f.name for f in BASE_FIELDS)

REJECT_FIELDS = (
    pa.field("stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("error", pa.string()),
    pa.field("outcome", pa.string()),
)


@dataclass(slots=True)
class Document:
    """One document flowing through a stage; `columns` holds the score columns."""

    id: str
    text: str
    url: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = {
            "id": self.id,
            "text": self.text,
            "url": self.url,
            "source": self.source,
            "metadata": json.dumps(self.metadata, sort_keys=True, ensure_ascii=False),
        }
        row.update(self.columns)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Document:
        meta = row.get("metadata")
        columns = {k: v for k, v in row.items() if k not in BASE_COLUMNS}
        return cls(
            id=row["id"],
            text=row["text"],
            url=row.get("url"),
            source=row.get("source"),
            metadata=json.loads(meta) if meta else {},
            columns=columns,
        )


@dataclass(slots=True)
class Rejected:
    """A document a stage did not keep: dropped by a decision, or failed with an error."""

    doc: Document
    reason: str
    error: str | None = None

    @property
    def outcome(self) -> str:
        return "dropped" if self.error is None else "error"


def doc_schema(score_columns: dict[str, pa.DataType]) -> pa.Schema:
    """The shard schema: base columns, then score columns sorted by name."""
    extra = [pa.field(name, score_columns[name]) for name in sorted(score_columns)]
    return pa.schema([*BASE_FIELDS, *extra])


def rejected_schema(score_columns: dict[str, pa.DataType]) -> pa.Schema:
    schema = doc_schema(score_columns)
    return pa.schema([*schema, *REJECT_FIELDS])


def score_columns_of(schema: pa.Schema) -> dict[str, pa.DataType]:
    """The score columns of a doc shard schema (everything that is not a base column)."""
    reject_names = {f.name for f in REJECT_FIELDS}
    return {
        f.name: f.type
        for f in schema
        if f.name not in BASE_COLUMNS and f.name not in reject_names
    }
