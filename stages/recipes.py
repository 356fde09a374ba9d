"""`lmforge init DIR --from SOURCE`: a commented starter config with the default recipe.

    lmforge init DIR --from warc:PATH | jsonl:PATH | parquet:PATH | crawl:URL
                 [--gpu-hours H [--gpu h100]] [--contact-url URL] [--name NAME]

writes `DIR/lmforge.yaml` (never over an existing one) and prints the command that runs it.
The recipe is the demo's (configs/demo.yaml), the same stages in the same order, from the
source on: a crawl starts with `crawl -> ingest_warc -> extract`, WARC files with
`ingest_warc -> extract`, JSONL and Parquet (already text) with `ingest`; then language ID,
heuristic filters, PII masking, exact and MinHash dedup, the word-salad filter, a BPE
tokenizer, token shards and pretraining. The file is text written here, not a dumped dict, so that its comments (what
a parameter does, its default, where the recipe departs from it) reach the user.

PATH may be a file, a glob or a folder; a folder becomes one recursive glob per file type
found in it (`DIR/**/*.jsonl.gz`), since a stage's `paths` take files and globs. Local
paths are written absolute and `run_dir` is `DIR/run`, absolute too, so the config runs
unchanged from any working directory.

The model. Without a budget it is the demo's: a 2-layer model and a 2,048-token vocabulary
that pretrain in a minute or two on a CPU, to see the whole pipeline work on your data.
With `--gpu-hours` it is what `lmforge plan` (model/plan.py) sizes for that budget on one
GPU: shape, vocabulary, sequence length, batch, schedule. The plan assumes MFU 0.40 and the
Chinchilla 20 tokens per parameter; the config says how many tokens that is, since a
corpus with fewer makes the run repeat it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fsspec

from pipeline.config import ConfigError
from pipeline.inputs import expand_paths

CONFIG_NAME = "lmforge.yaml"
SOURCES = ("warc", "jsonl", "parquet", "crawl")
COMPRESSIONS = ("", ".gz", ".zst", ".bz2", ".xz")
# File types a folder is searched for, per source (what the first stage reads).
SUFFIXES = {
    "warc": (".warc", ".warc.gz", ".arc", ".arc.gz", ".wet", ".wet.gz"),
    "jsonl": tuple(s + c for s in (".jsonl", ".json", ".ndjson") for c in COMPRESSIONS),
    "parquet": (".parquet",),
}


class InitError(ConfigError):
    """`lmforge init` cannot write the config asked for (bad input: exit 2)."""


# --- the source ----------------------------------------------------------------------------

def parse_source(source: str) -> tuple[str, str]:
    """`warc:PATH` -> ("warc", "PATH"); InitError for an unknown type or an empty target."""
    kind, sep, target = source.partition(":")
    if not sep or kind not in SOURCES or not target:
        raise InitError(f"--from {source!r}: give one of " + ", ".join(
            f"{s}:{'URL' if s == 'crawl' else 'PATH'}" for s in SOURCES))
    return kind, target


def input_paths(kind: str, target: str) -> list[str]:
    """The `paths` to write for a file, glob or folder: checked to match at least one file."""
    fs, path = fsspec.core.url_to_fs(target)
    local = "://" not in target
    if local:
        target = path = os.path.abspath(os.path.expanduser(target))
    if fs.isdir(path):
        found = sorted({suffix for f in fs.find(path) for suffix in _suffix(kind, f)})
        if not found:
            raise InitError(f"{target}: no {', '.join(SUFFIXES[kind])} file in this folder")
        root = target.rstrip("/")
        return [f"{root}/**/*{suffix}" for suffix in found]
    try:
        expand_paths([target], f"--from {kind}")
    except FileNotFoundError as exc:
        raise InitError(str(exc)) from None
    return [target]


def _suffix(kind: str, name: str) -> list[str]:
    """The longest of the source's suffixes that `name` ends with, if any."""
    matching = [s for s in SUFFIXES[kind] if name.lower().endswith(s)]
    return [max(matching, key=len)] if matching else []


def seed_url(url: str) -> str:
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise InitError(f"--from crawl:{url}: the seed must be an http:// or https:// URL")
    return url


def is_private_host(url: str) -> bool:
    """A seed on loopback or a private network, which the crawler's SSRF guard refuses
    unless `allow_private` is set (the demo site, a test server, an intranet)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False


# --- the text ------------------------------------------------------------------------------

def _value(value: Any) -> str:
    """A value as YAML flow text that yaml.safe_load reads back as the same type: JSON,
    except floats in exponent form get a '.', which YAML 1.1 needs to read a float."""
    if isinstance(value, float):
        text = repr(value)
        return re.sub(r"^(-?\d+)e", r"\1.0e", text)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(value)


def _wrapped(key: str, mapping: dict[str, Any], indent: int = 6, width: int = 96) -> str:
    """`key: {a: 1, b: 2, ...}` as a YAML flow mapping, broken across lines to fit `width`."""
    lines, line = [], " " * indent + f"{key}: {{"
    items = [f"{k}: {_value(v)}" for k, v in mapping.items()]
    for i, item in enumerate(items):
        item += "}" if i == len(items) - 1 else ","
        if len(line) + 1 + len(item) > width and not line.endswith("{"):
            lines.append(line)
            line = " " * (indent + len(key) + 3) + item
        else:
            line += ("" if line.endswith("{") else " ") + item
    return "\n".join(lines + [line if items else line + "}"]) + "\n"


def _source_stages(kind: str, paths: list[str], contact_url: str | None) -> tuple[str, str]:
    """The stages that turn the source into documents holding text, and the last one's name."""
    if kind in ("jsonl", "parquet"):
        return f"""\
  ingest:
    kind: ingest
    params:
      paths: {_value(paths)}  # files, globs or fsspec URLs (s3://... with lmforge[s3])
      format: {kind}
      text_field: text          # the record field holding the document's text
      id_field: null            # a field holding a stable id; null: <file>#<record number>
      url_field: null           # a field holding the page URL (url_blocklist reads it)
      shard_size: 10000         # documents per output shard, the unit of parallel work
""", "ingest"
    html = """\
  text:
    kind: extract                 # HTML -> main text
    inputs: [pages]
    params:
      engine: resiliparse       # as the demo (DCLM's, fast); kind default: trafilatura (FineWeb's)
      timeout_seconds: 5.0      # per page; a slower page is counted as an error, not waited for
"""
    if kind == "warc":
        return f"""\
  pages:
    kind: ingest_warc             # WARC/ARC/WET records -> documents holding the page HTML
    params:
      paths: {_value(paths)}  # files, globs or fsspec URLs
      shard_size: 10000         # documents per output shard, the unit of parallel work
""" + html, "text"
    seed = paths[0]
    private = ("      allow_private: true       # the seed is on loopback or a private network; "
               "never set this for the web\n") if is_private_host(seed) else ""
    return f"""\
  crawl:
    kind: crawl                   # seeds -> WARC files; obeys robots.txt
    params:
      seeds: {_value([seed])}
      contact_url: {_value(contact_url)}  # who site owners can reach about your crawler
      allowed_domains: []       # hosts in scope (and their subdomains); empty: the seeds' hosts
      max_depth: 3              # links followed away from a seed
      max_pages: 1000           # page requests in all
      delay_seconds: 1.0        # between two requests to one host (robots.txt Crawl-delay wins)
      workers: 4
{private}  pages:
    kind: ingest_warc             # WARC records -> documents holding the page HTML
    inputs: [crawl]
""" + html, "text"


def _model_stages(plan: dict[str, Any] | None) -> str:
    """train_tokenizer, tokenize, pretrain: the demo's sizes, or the plan's."""
    if plan is None:
        vocab, val_fraction = 2048, 0.05
        about = """\
      # The demo's model: 2 layers, width 64, 60 steps; it pretrains in a minute or two on a CPU
      # to show the whole pipeline working on your data. For a real model, size one for your
      # budget: `lmforge init DIR --from ... --gpu-hours H` writes what `lmforge plan` gives.
"""
        model = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 160,
                 "max_seq_len": 128}
        data = {"seq_len": 128}
        train = {"batch_size": 8, "max_steps": 60, "lr": 3.0e-3, "min_lr": 3.0e-4,
                 "warmup_steps": 5, "eval_every": 30, "eval_batches": 4, "log_every": 10,
                 "checkpoint_every": 30, "seed": 0}
    else:
        from model.plan import training_preset

        vocab, val_fraction = plan["model"]["vocab_size"], 0.005
        preset = training_preset(plan, data_dir="", out_dir="")
        model, data, train = preset["model"], preset["data"], preset["train"]
        data.pop("dir")
        train.pop("out_dir")  # the stage sets both: its token shards, its train/ folder
        about = f"""\
      # Sized by `lmforge plan --gpu-hours {plan['gpu_hours_budget']:g} --gpu {plan['gpu']}` (one GPU, MFU {plan['mfu']:.0%}):
      # {plan['params'] / 1e6:,.1f}M parameters, {plan['tokens']:,} tokens (about 20 per parameter,
      # Chinchilla): {plan['steps']:,} steps of {plan['batch_tokens']:,} tokens, about {plan['wall_hours']:,.1f} h.
      # The plan needs that many tokens: `lmforge status` shows what your corpus gives after
      # filtering (the `tokens` stage); with fewer, training repeats the data, so gather more
      # or plan a smaller budget. `lmforge plan --help` for other GPUs and MFU.
"""
    return f"""\
  tokenizer:
    kind: train_tokenizer         # byte-level BPE trained on a sample of the corpus
    inputs: [coherence]
    params:
      {f"vocab_size: {vocab}":<26}# specials included; kind default 32768
      sample_bytes: 100000000   # UTF-8 bytes of text it is trained on
      heldout_bytes: 50000      # held out for the bytes-per-token figure in the report
  tokens:
    kind: tokenize                # documents -> train/val token shards
    inputs: [coherence, tokenizer]
    params:
      {f"val_fraction: {val_fraction}":<26}# of documents, for validation loss
      shuffle: true             # documents shuffled across shards
  pretrain:
    kind: pretrain                # a Llama-style model trained on the token shards
    inputs: [tokens]
    params:
{about}{_wrapped("model", model)}{_wrapped("data", data)}{_wrapped("train", train)}\
      sample_prompt: "The"      # a continuation of it is written to pretrain/sample.txt
      sample_tokens: 40
"""


def render(kind: str, paths: list[str], name: str, run_dir: str, config_path: str,
           plan: dict[str, Any] | None = None, contact_url: str | None = None) -> str:
    """The config text for a source: `paths` are the input paths (or the crawl's seed URL),
    `config_path` where it will be, for the commands it shows."""
    source_stages, last = _source_stages(kind, paths, contact_url)
    flow = {"crawl": "crawl -> WARC -> documents -> text", "warc": "WARC -> documents -> text",
            "jsonl": "JSONL documents", "parquet": "Parquet documents"}[kind]
    return f"""\
# An lmforge pipeline config, written by `lmforge init`. The demo's recipe (configs/demo.yaml):
# {flow} -> language ID -> heuristic filters -> PII masking ->
# exact and MinHash dedup -> word-salad filter -> BPE tokenizer -> token shards -> a
# pretrained Llama-style model.
#
#   lmforge validate {config_path}
#       checks it and prints the stages; runs nothing
#   lmforge run {config_path}
#       runs it; a second run skips what is done, and an edited stage re-runs with what reads it
#   lmforge status {run_dir}
#       per stage: documents in, kept, dropped by reason (`lmforge report` for plots)
#
# Shown are the parameters most worth changing, at their defaults unless a comment says
# otherwise; `lmforge stages KIND` lists every parameter of a kind. Editor completion:
# README.md, "Editor support".
name: {name}
run_dir: {_value(run_dir)}  # absolute, so this runs from any folder
executor:
  kind: local                     # or dask: workers processes on this machine, or --scheduler
  workers: 2
stages:
{source_stages}\
  langid:
    kind: langid                  # fastText language ID: adds lang, lang_score
    inputs: [{last}]
    params:
      keep: [en]                # languages kept (lid.176 codes); []: keep all, only label
      min_score: 0.65           # as the demo; kind default 0.0
  heuristics:
    kind: heuristic_filter        # published quality rules; drops carry the rule's name
    inputs: [langid]
    params:
      # A recipe: lmforge (chosen by ablation), fineweb, gopher or c4
      # (stages/filters/presets/); keys given beside it override the preset's, e.g.
      # gopher_quality: {{min_doc_words: 50}}.
      preset: lmforge
  pii:
    kind: pii                     # masks e-mail addresses, IP addresses, phone numbers
    inputs: [heuristics]
    params: {{emails: true, ip_addresses: true, phone_numbers: true}}
  exact_dedup:
    kind: exact_dedup             # composite: exact_dedup.fingerprints, .duplicates, exact_dedup
    inputs: [pii]
    params:
      include_url: false        # true: only the same text at the same URL is a duplicate
  dedup:
    kind: minhash_dedup           # composite: dedup.signatures, .buckets, .clusters, dedup
    inputs: [exact_dedup]
    params:
      threshold: 0.8            # Jaccard similarity of word 5-grams above which docs are duplicates
      num_perm: 128
      ngram: 5
      partitions: 4             # as the demo; kind default 16 (more for more documents)
      verify: exact             # candidate pairs checked on their shingles
  coherence:
    kind: coherence_filter        # composite: coherence.counts, .table, coherence
    inputs: [dedup]               # word salad out: the mean PMI of adjacent words, under
    params:                       # the corpus's own word-pair counts (a sample of shards)
      min_pmi: 0.05             # nats; salad scores about 0 or below, prose 0.3-3
      sample_words: 10000000    # words counted for the word-pair table
{_model_stages(plan)}"""


def default_name(directory: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.resolve().name).strip("-.")
    return name or "corpus"


def write_config(directory: str | Path, source: str, gpu_hours: float | None = None,
                 gpu: str = "h100", contact_url: str | None = None,
                 name: str | None = None) -> Path:
    """Write DIR/lmforge.yaml for `source` (`jsonl:PATH`, ...); InitError (bad input) if the
    file exists, the source matches nothing, or a crawl has no contact URL."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if path.exists():
        raise InitError(f"{path}: already exists; not overwritten (edit it, or init another folder)")
    kind, target = parse_source(source)
    if kind == "crawl":
        paths = [seed_url(target)]
        if not contact_url or not re.match(r"^https?://", contact_url):
            raise InitError("--from crawl: give --contact-url http(s)://... : a page that tells "
                            "site owners who runs the crawler and how to reach them")
    else:
        paths = input_paths(kind, target)
    plan = None
    if gpu_hours is not None:
        from model.plan import PlanError, plan as plan_for

        try:
            plan = plan_for(gpu_hours, gpu)
        except PlanError as exc:
            raise InitError(f"--gpu-hours: {exc}") from None
    name = name or default_name(directory)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise InitError(f"--name {name!r}: letters, digits, '_', '.' and '-'")
    text = render(kind, paths, name, str((directory / "run").resolve()), str(path), plan,
                  contact_url)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as f:  # 'x': never over a file made meanwhile
            f.write(text)
    except FileExistsError:
        raise InitError(f"{path}: already exists; not overwritten") from None
    return path


def register(subparsers: Any) -> None:
    """Add `init` to the lmforge subcommands."""
    from model.hardware import GPUS

    p = subparsers.add_parser("init", help="write a commented starter config for your data")
    p.add_argument("dir", help=f"folder for {CONFIG_NAME} and the run directory (run/)")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="warc:PATH, jsonl:PATH, parquet:PATH (a file, glob or folder) or crawl:URL")
    p.add_argument("--gpu-hours", type=float, metavar="H",
                   help="size the model for this GPU budget with `lmforge plan` (default: the "
                        "demo's tiny CPU model)")
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="for --gpu-hours")
    p.add_argument("--contact-url", help="for crawl: who site owners can reach about the crawler")
    p.add_argument("--name", help="run name (default: the folder's name)")
    p.set_defaults(func=_cmd_init)


def _cmd_init(args: argparse.Namespace) -> int:
    path = write_config(args.dir, args.source, args.gpu_hours, args.gpu, args.contact_url, args.name)
    print(f"wrote {path}\nrun it:  lmforge run {path}")
    return 0
