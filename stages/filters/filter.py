"""`filter`: keep documents by length, regular expressions and field values.

The generic filter for what needs no model: character and word bounds, patterns that must
or must not appear, and conditions on any column (`lang`, `quality_score`), base field
(`url`, `source`) or metadata key (`metadata.warc_type`). Rules run in the order listed
below and the first that fails names the drop: `filter:min_chars`, `filter:exclude_regex`,
`filter:field:lang`, ... Word counts split on whitespace.

Memory: the engine streams one record batch at a time (at most 1,024 documents or 32 MiB of
text, `pipeline/artifacts.py`) in and out; the rules hold one document and the compiled
patterns.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, model_validator

from pipeline.documents import Document, Rejected
from pipeline.stage import FilterStage, Params

_MISSING = object()


class FieldRule(Params):
    field: str
    equals: str | int | float | bool | None = None
    one_of: list[str | int | float | bool] | None = None
    min: float | None = None
    max: float | None = None
    keep_missing: bool = False

    @model_validator(mode="after")
    def _has_condition(self) -> FieldRule:
        if self.equals is None and self.one_of is None and self.min is None and self.max is None:
            raise ValueError("a field rule needs one of equals, one_of, min, max")
        return self

    def accepts(self, value: Any) -> bool:
        if value is _MISSING or value is None:
            return self.keep_missing
        if self.equals is not None and value != self.equals:
            return False
        if self.one_of is not None and value not in self.one_of:
            return False
        if self.min is not None and not value >= self.min:
            return False
        return self.max is None or value <= self.max


class FilterParams(Params):
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=0)
    min_words: int | None = Field(default=None, ge=0)
    max_words: int | None = Field(default=None, ge=0)
    include_regex: str | None = None  # keep only documents where this matches
    exclude_regex: list[str] = []  # drop documents where any of these matches
    fields: list[FieldRule] = []

    @model_validator(mode="after")
    def _regexes_compile(self) -> FilterParams:
        for pattern in [self.include_regex, *self.exclude_regex]:
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
        return self


class Filter(FilterStage):
    kind = "filter"
    version = 1
    Params = FilterParams

    def apply(self, doc: Document) -> Document | Rejected:
        p = self.params
        chars = len(doc.text)
        if p.min_chars is not None and chars < p.min_chars:
            return Rejected(doc, "filter:min_chars")
        if p.max_chars is not None and chars > p.max_chars:
            return Rejected(doc, "filter:max_chars")
        if p.min_words is not None or p.max_words is not None:
            words = len(doc.text.split())
            if p.min_words is not None and words < p.min_words:
                return Rejected(doc, "filter:min_words")
            if p.max_words is not None and words > p.max_words:
                return Rejected(doc, "filter:max_words")
        if p.include_regex is not None and not self._include().search(doc.text):
            return Rejected(doc, "filter:include_regex")
        if any(pattern.search(doc.text) for pattern in self._exclude()):
            return Rejected(doc, "filter:exclude_regex")
        for rule in p.fields:
            if not rule.accepts(_lookup(doc, rule.field)):
                return Rejected(doc, f"filter:field:{rule.field}")
        return doc

    def _include(self) -> re.Pattern:
        if getattr(self, "_include_re", None) is None:
            self._include_re = re.compile(self.params.include_regex, re.MULTILINE)
        return self._include_re

    def _exclude(self) -> list[re.Pattern]:
        if getattr(self, "_exclude_re", None) is None:
            self._exclude_re = [re.compile(p, re.MULTILINE) for p in self.params.exclude_regex]
        return self._exclude_re


def _lookup(doc: Document, name: str) -> Any:
    if name.startswith("metadata."):
        return doc.metadata.get(name.removeprefix("metadata."), _MISSING)
    if name in ("id", "url", "source", "text"):
        return getattr(doc, name)
    return doc.columns.get(name, _MISSING)
