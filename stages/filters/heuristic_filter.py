"""`heuristic_filter`: named, versioned quality rule sets; every drop says which rule.

    clean:
      kind: heuristic_filter
      inputs: [extract]
      params:
        rule_sets: [gopher_repetition, gopher_quality, c4, fineweb_quality]   # the order
        gopher_quality: {min_doc_words: 50}      # thresholds; omitted keys keep the default
        c4: {badwords: false}
        url_blocklist: {domains_files: [blocklists/domains.txt]}

Presets. `preset: NAME` starts from a shipped recipe, stages/filters/presets/NAME.yaml:
`fineweb` (as FineWeb ran it: URL filter, Gopher repetition and quality, C4 without its
bad-words filter and keeping lines without terminal punctuation, FineWeb quality), `gopher`
(Gopher's quality and repetition rules, alphabetic words counted on whitespace as the paper
states), `c4` (C4's rules with its bad words) and `lmforge` (the default of configs/demo.yaml and
`lmforge init`: FineWeb's rules with Gopher's alphabetic words counted on whitespace, C4
keeping lines under three words and FineWeb's duplicated-line-characters rule off, the
settings `lmforge ablate configs/ablations/web.yaml` found best on held-out text). Keys
written beside `preset` override the preset's: a rule set's block merges key by key
(`preset: fineweb` with `c4: {min_num_sentences: 3}` keeps FineWeb's `badwords: false`), any
other key (`rule_sets`) replaces the preset's value. An unknown name is a config error that
lists the known ones. The preset is resolved when the config loads, so the params the stage
runs with and its cache key hashes are the resolved ones: editing a preset file re-runs the
stages whose resolved params it changes, and `preset: lmforge` gives the same key as the
same params written out (the name itself is not hashed).

    heuristics:
      kind: heuristic_filter
      inputs: [langid]
      params: {preset: fineweb, gopher_quality: {min_doc_words: 30}}

The rule sets (stages/filters/heuristic_rules.py) run in the order `rule_sets` gives; the default
is FineWeb's order (Gopher repetition, Gopher quality, C4, FineWeb quality). Each one's
params default to its own published thresholds; a threshold set to null switches that rule
off. FineWeb itself ran C4 with `c4: {badwords: false, filter_no_terminal_punct: false}`.
Gopher's alphabetic-words ratio counts word-tokenizer tokens, punctuation marks included, as
datatrove does, which drops much well-punctuated verse and dialogue (docs/benchmarks.md,
Ablation); `gopher_quality: {alpha_words: whitespace}` counts whitespace-separated words, as
the Gopher paper states the rule.
The first failing rule drops the document as `<rule_set>:<rule>` (`c4:too_few_sentences`);
rule sets and rules after it are not evaluated (as in datatrove, this is what keeps the
stage fast). Every score is a column named `<rule_set>_<score>`: a kept document has them
all, a rejected one those computed up to its failing rule, so thresholds can be studied and
re-chosen from the output.

Shared statistics (words, word counts, lines, n-gram ids) are computed once per document
and reused by every rule set (heuristic_rules.py, "Speed"). Memory: one document at a time,
about 200 bytes per word at peak, plus the word splitter's cache (~50 MB per worker).

`c4` cleans lines (C4 drops lines without terminal punctuation, with "javascript", ...), so
it changes the text of documents it keeps. `stop_words` and `c4`'s bad words use the
document's `lang` column when an upstream `langid` stage set one.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import pyarrow as pa
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from pipeline.documents import Document, Rejected
from pipeline.stage import FilterStage, Params
from stages.filters.heuristic_rules import (
    RULE_SETS,
    C4Params,
    FineWebQualityParams,
    GopherQualityParams,
    GopherRepetitionParams,
    RuleSet,
    StopWordsParams,
    TextView,
    TokenCharRatioParams,
    UrlBlocklistParams,
)

FINEWEB_ORDER = ["gopher_repetition", "gopher_quality", "c4", "fineweb_quality"]
PRESETS = files("stages.filters") / "presets"


def preset_names() -> list[str]:
    """The shipped presets: stages/filters/presets/<name>.yaml."""
    if not PRESETS.is_dir():  # an install without the package data: none is known
        return []
    return sorted(p.name.removesuffix(".yaml") for p in PRESETS.iterdir()
                  if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """A preset's params as its file gives them, checked alone (errors name the file)."""
    path = PRESETS / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "preset" in data:
        raise ValueError(f"preset {name!r} ({path}): must be a mapping of heuristic_filter "
                         "params without a `preset` key")
    try:
        HeuristicFilterParams.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}"
                             for e in err.errors())
        raise ValueError(f"preset {name!r} ({path}): {problems}") from None
    return data


def with_preset(params: dict[str, Any]) -> dict[str, Any]:
    """`params` over the preset they name: rule-set blocks merge key by key, any other key
    replaces the preset's."""
    resolved = load_preset(params["preset"])
    for key, value in params.items():
        if key in RULE_SETS and isinstance(value, dict) and isinstance(resolved.get(key), dict):
            resolved[key] = {**resolved[key], **value}
        else:
            resolved[key] = value
    return resolved


class HeuristicFilterParams(Params):
    # Resolved when the config loads; the cache key hashes the resolved params, not the name.
    preset: str | None = Field(default=None, exclude=True)  # a recipe: fineweb, gopher, c4, lmforge; keys beside it override it
    rule_sets: list[str] = FINEWEB_ORDER
    gopher_quality: GopherQualityParams = GopherQualityParams()
    gopher_repetition: GopherRepetitionParams = GopherRepetitionParams()
    c4: C4Params = C4Params()
    fineweb_quality: FineWebQualityParams = FineWebQualityParams()
    url_blocklist: UrlBlocklistParams = UrlBlocklistParams()
    token_char_ratio: TokenCharRatioParams = TokenCharRatioParams()
    stop_words: StopWordsParams = StopWordsParams()

    @model_validator(mode="before")
    @classmethod
    def _resolve_preset(cls, data: Any) -> Any:
        # An unknown name (or not a string) is left for the field's own check below.
        if isinstance(data, dict) and data.get("preset") is not None \
                and data["preset"] in preset_names():
            return with_preset(data)
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str | None) -> str | None:
        if name is not None and name not in preset_names():
            raise ValueError(f"unknown preset {name!r} (known: {', '.join(preset_names())})")
        return name

    @model_validator(mode="after")
    def _known_rule_sets(self) -> HeuristicFilterParams:
        unknown = [r for r in self.rule_sets if r not in RULE_SETS]
        if unknown:
            raise ValueError(
                f"rule_sets: unknown rule set(s) {unknown} (known: {', '.join(RULE_SETS)})"
            )
        if len(set(self.rule_sets)) != len(self.rule_sets):
            raise ValueError(f"rule_sets: a rule set is listed twice: {self.rule_sets}")
        return self


class HeuristicFilter(FilterStage):
    kind = "heuristic_filter"
    version = 1
    Params = HeuristicFilterParams

    def fingerprint(self) -> Any:
        # A rule set's version is part of the cache key: changed rules re-run the stage.
        return {name: RULE_SETS[name].version for name in self.params.rule_sets}

    @property
    def score_columns(self) -> dict[str, pa.DataType]:  # type: ignore[override]
        columns: dict[str, pa.DataType] = {}
        for rule_set in self.rule_set_objects():
            columns.update(rule_set.columns)
        return columns

    def rule_set_objects(self) -> list[RuleSet]:
        if getattr(self, "_rule_sets", None) is None:
            self._rule_sets = [
                RULE_SETS[name](getattr(self.params, name)) for name in self.params.rule_sets
            ]
        return self._rule_sets

    def apply(self, doc: Document) -> Document | Rejected:
        lang = doc.columns.get("lang")
        view = TextView(doc.text, doc.url, lang if isinstance(lang, str) else None)
        failed = None
        for rule_set in self.rule_set_objects():
            rule = rule_set.check(view)
            if rule is not None:
                failed = f"{rule_set.name}:{rule}"
                break
        doc.columns.update(view.scores)
        if failed is not None:
            return Rejected(doc, failed)
        doc.text = view.text
        return doc
