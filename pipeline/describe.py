"""`lmforge stages [KIND]` and `lmforge schema`: what a registry of stage kinds accepts.

    lmforge stages            one line per kind (the class docstring, else the module's)
    lmforge stages KIND       every parameter: its type, default and description
    lmforge schema [--out F]  a JSON Schema (draft 2020-12) of the whole run config

The engine knows no stage kind, so every function takes the registry as arguments, as
`config.load_config` does: `kinds` (the names) and `stage_class_for(kind)` (the class, or a
KeyError). pipeline/cli.py hands in `stages.STAGE_KINDS` and `stages.stage_class_for`.

Descriptions. A field's pydantic `description` if it has one, else the comment in its
class's source: the trailing `# comment` of the field's line, or else the comment lines
just above it. The source is read with `inspect` and `tokenize` (never executed), in the
class that defines the field, so inherited fields (the composite kinds' params) keep theirs.
A Params field that is itself a model (or a list of models) is shown as nested keys.

The schema. `RunConfig`'s own schema, with `StageConfig.kind` an enum of the kinds and one
`if kind == K then params: <K's schema>` per kind (an `allOf`), so a YAML language server
completes and checks each stage's params by its kind. Each kind's Params schema and the
models it uses live in `$defs` under `<kind>.params` and `<kind>.<Model>`: two kinds that
share a model name never collide. What only validators check (a regex that must compile,
a rule set's name, a training config's keys) is left to `lmforge validate`.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.errors import PydanticInvalidForJsonSchema
from pydantic_core import PydanticUndefined

from pipeline.config import STAGE_NAME, ConfigError, RunConfig
from pipeline.stage import CompositeStage

JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
StageClassFor = Callable[[str], type]


# --- one line per kind ---------------------------------------------------------------------

def summary(stage_class: type) -> str:
    """The first sentence of the class's own docstring, else of its module's, without the
    "`kind`: " the module docstrings open with."""
    doc = stage_class.__dict__.get("__doc__") or sys.modules[stage_class.__module__].__doc__ or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    paragraph = re.sub(r"^`[^`]+`:\s*", "", paragraph)
    sentence = re.split(r"(?<=[.;])\s", paragraph, maxsplit=1)[0]
    return sentence.rstrip(".;") if sentence else "(no description)"


def list_kinds(kinds: Iterable[str], stage_class_for: StageClassFor) -> str:
    """`lmforge stages`: one line per kind, composites marked."""
    rows = []
    for kind in kinds:
        try:
            stage_class = stage_class_for(kind)
        except ImportError as exc:  # a kind whose optional dependency is missing
            rows.append((kind, f"(cannot import: {exc})"))
            continue
        mark = "[composite] " if issubclass(stage_class, CompositeStage) else ""
        rows.append((kind, mark + summary(stage_class)))
    width = max(len(kind) for kind, _ in rows) + 2
    lines = [f"{kind:<{width}}{text}" for kind, text in rows]
    lines.append("\n`lmforge stages KIND` lists a kind's parameters.")
    return "\n".join(lines)


# --- one kind's parameters -----------------------------------------------------------------

@dataclass(frozen=True)
class ParamDoc:
    """One parameter as `lmforge stages KIND` shows it; `depth` > 0 for nested keys."""

    key: str
    type: str
    default: str | None  # None: required
    description: str
    depth: int = 0


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> its source comment, over the model's bases (the defining class wins)."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            comments.update(_class_comments(cls))
    return comments


@lru_cache(maxsize=None)
def _class_comments(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # built at run time, or no source shipped
        return {}
    found: dict[str, str] = {}
    body_indent = None
    above: list[str] = []  # comment-only lines right above the current line
    line: list[tokenize.TokenInfo] = []  # the significant tokens of the logical line
    trailing: list[str] = []
    blank_row = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                (trailing if line else above).append(tok.string.lstrip("#").strip())
            elif tok.type == tokenize.NL:
                if not line and tok.start[0] != blank_row and not tok.line.strip():
                    above = []  # a blank line parts a comment from what follows
            elif tok.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING):
                continue
            elif tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                if line:
                    if body_indent is None and line[0].start[0] > 1:
                        body_indent = line[0].start[1]
                    name = _field_name(line, body_indent)
                    if name:
                        text = trailing or above
                        found[name] = " ".join(t for t in text if not t.startswith("type:"))
                line, trailing, above = [], [], []
            else:
                line.append(tok)
    except (tokenize.TokenError, SyntaxError):
        pass
    return found


def _field_name(line: list[tokenize.TokenInfo], body_indent: int | None) -> str | None:
    """The name of an annotated class attribute (`name: type ...`) at the body's indent."""
    if (len(line) >= 2 and line[0].type == tokenize.NAME and line[0].start[1] == body_indent
            and line[1].string == ":"):
        return line[0].string
    return None


def type_name(annotation: Any) -> str:
    """A type as a config author reads it: `list[str]`, `int | None`, `'a' | 'b'`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length"),
           ("max_length", "max length"), ("pattern", "matches"))


def _bounds(field: Any) -> str:
    found = []
    for item in field.metadata:
        for attr, word in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{word} {value}")
    return f" ({', '.join(found)})" if found else ""


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def _nested_model(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The model a field holds (`Model`, `Model | None`, `list[Model]`) and its key suffix."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], "[]"
    if origin in (typing.Union, types.UnionType):
        models = [a for a in args if a is not type(None)]
        if len(models) == 1:
            return _nested_model(models[0])
    return None


def param_docs(model: type[BaseModel], depth: int = 0) -> list[ParamDoc]:
    """Every field of a Params model, nested models expanded below their key."""
    comments = field_comments(model)
    docs = []
    for name, field in model.model_fields.items():
        if field.default is not PydanticUndefined:
            default = _shown(field.default)
        elif field.default_factory is not None:
            default = _shown(field.default_factory())
        else:
            default = None
        nested = _nested_model(field.annotation)
        key = name + (nested[1] if nested else "")
        kind = "list of mappings" if nested and nested[1] else (
            "mapping" if nested else type_name(field.annotation) + _bounds(field))
        shown_default = None if default is None else ("(below)" if nested and not nested[1] else default)
        docs.append(ParamDoc(key, kind, shown_default, field.description or comments.get(name, ""), depth))
        if nested:
            docs += param_docs(nested[0], depth + 1)
    return docs


def describe_kind(kind: str, stage_class_for: StageClassFor) -> str:
    """`lmforge stages KIND`: the kind's summary and every parameter."""
    stage_class = stage_class_for(kind)  # KeyError naming the known kinds
    lines = [f"{kind}: {summary(stage_class)}  ({stage_class.__module__})"]
    if issubclass(stage_class, CompositeStage):
        lines.append("composite: expands into phases when the config loads (`lmforge validate` "
                     "shows them)")
    docs = param_docs(stage_class.Params)
    lines.append("params:" if docs else "params: none")
    for doc in docs:
        indent = "  " * (doc.depth + 1)
        default = "required" if doc.default is None else f"default {doc.default}"
        lines.append(f"{indent}{doc.key}: {doc.type}; {default}")
        if doc.description:
            lines.append(f"{indent}    {doc.description}")
    return "\n".join(lines)


# --- the JSON Schema -----------------------------------------------------------------------

def params_schema(kind: str, params: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the schema of one kind's params, the $defs it refers to), names prefixed by kind."""
    try:
        schema = params.model_json_schema(ref_template=f"#/$defs/{kind}.{{model}}")
    except PydanticInvalidForJsonSchema as exc:  # a field type JSON Schema cannot state
        return {"type": "object", "description": f"not checked by the schema: {exc}"}, {}
    defs = {f"{kind}.{name}": value for name, value in schema.pop("$defs", {}).items()}
    _add_descriptions(schema, params, defs, kind)
    return schema, defs


def _add_descriptions(schema: dict[str, Any], model: type[BaseModel], defs: dict[str, Any],
                      kind: str) -> None:
    """The source comments as `description`s, which editors show on hover."""
    comments = field_comments(model)
    for name, prop in schema.get("properties", {}).items():
        field = model.model_fields.get(name)
        if comments.get(name) and "description" not in prop:
            prop["description"] = comments[name]
        nested = _nested_model(field.annotation) if field else None
        if nested and f"{kind}.{nested[0].__name__}" in defs:
            _add_descriptions(defs[f"{kind}.{nested[0].__name__}"], nested[0], defs, kind)


def config_schema(kinds: Iterable[str], stage_class_for: StageClassFor) -> dict[str, Any]:
    """A draft 2020-12 JSON Schema of a run config for this registry of stage kinds."""
    kinds = list(kinds)
    schema = RunConfig.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})
    stage = defs["StageConfig"]
    stage["properties"]["kind"] = {"title": "Kind", "type": "string", "enum": kinds,
                                   "description": "the stage kind: `lmforge stages` lists them"}
    stage["properties"]["params"] = {"title": "Params", "type": "object"}
    conditions = []
    for kind in kinds:
        try:
            stage_class = stage_class_for(kind)
        except ImportError:
            continue  # its params stay an unchecked mapping
        params, params_defs = params_schema(kind, stage_class.Params)
        params.setdefault("description", f"{kind}: {summary(stage_class)}")
        defs.update(params_defs)
        defs[f"{kind}.params"] = params
        conditions.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                           "then": {"properties": {"params": {"$ref": f"#/$defs/{kind}.params"}}}})
    stage["allOf"] = conditions
    stages = schema["properties"]["stages"]
    stages["propertyNames"] = {"pattern": f"^{STAGE_NAME.pattern}$"}
    stages["minProperties"] = 1
    return {"$schema": JSON_SCHEMA_DRAFT, **schema, "title": "lmforge run config"}


# --- the commands --------------------------------------------------------------------------

def register(subparsers: Any, kinds: Iterable[str], stage_class_for: StageClassFor) -> None:
    """Add `stages` and `schema` to the lmforge subcommands, for this registry of kinds."""
    kinds = list(kinds)
    p = subparsers.add_parser("stages", help="list the stage kinds, or one kind's parameters")
    p.add_argument("kind", nargs="?", help="a stage kind: print its parameters")
    p.set_defaults(func=_cmd_stages, kinds=kinds, stage_class_for=stage_class_for)

    p = subparsers.add_parser("schema", help="JSON Schema of the run config, for editors")
    p.add_argument("--out", help="write it to this file (default: print it)")
    p.set_defaults(func=_cmd_schema, kinds=kinds, stage_class_for=stage_class_for)


def _cmd_stages(args: argparse.Namespace) -> int:
    if args.kind is None:
        print(list_kinds(args.kinds, args.stage_class_for))
        return 0
    try:
        print(describe_kind(args.kind, args.stage_class_for))
    except KeyError as exc:
        raise ConfigError(f"stages: {exc.args[0]}") from None  # bad input: exit 2
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    text = json.dumps(config_schema(args.kinds, args.stage_class_for), indent=2) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0
