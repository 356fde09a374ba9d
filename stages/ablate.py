"""`lmforge ablate ABLATION.yaml`: compare corpus recipes by the model each one trains.

A recipe can hurt: the only honest test of a cleaning step is to train the same model on
the same number of tokens with and without it and measure held-out text. An ablation file
names a base pipeline config, the arms and how they differ from it, held-out text sets, a
proxy model and a token budget:

    name: heuristics
    base: ../demo.yaml              # a pipeline config (paths relative to this file)
    run_dir: runs/ablation          # default runs/ablation-<name>
    heldout:                        # name -> files or globs: .txt (one document per file),
      plays: [texts/plays/*.txt]    #   .jsonl(.gz) (one per line, "text")
      verse:                        # or {files, whitespace}: `collapse` scores the text as a
        files: [texts/verse/*.txt]  #   crawl's extraction gives a page of it (lines stripped,
        whitespace: collapse        #   runs of spaces/tabs one space, one blank line between
                                    #   paragraphs); `keep` (the default) as the file has it
    proxy:                          # `pretrain` stage params every arm trains with
      model: {dim: 64, n_layers: 2, n_heads: 4, max_seq_len: 128}
      train: {batch_size: 8, lr: 3.0e-3}
    tokens: 500000                  # training tokens per arm and seed (sets max_steps)
    seeds: [0, 1]
    arms:
      default: {}                               # the base pipeline as it is
      raw: {raw: text}                          # train on `text`'s output: no cleaning after it
      no_pii: {remove: [pii]}                   # leave stages out (consumers read their inputs)
      strict: {params: {heuristics: {rule_sets: [gopher_quality]}}}  # override stage params
      extra: {add: {short: {kind: filter, inputs: [pii], params: {min_words: 50}}},
              corpus: short}                    # add stages; `corpus`: what training reads

How it runs. The base's training tail (train_tokenizer, tokenize, pretrain and what follows
them) is cut off; its corpus is the train_tokenizer's input, unless `corpus:` says
otherwise. Each arm is the base with its changes, pruned to the ancestors of its corpus,
then (with `decontaminate: true`, the default) a `decontaminate` stage against every
held-out file, so that no arm trains on what it is measured on; then its own tokenizer
(the base's train_tokenizer params), token shards (the base's tokenize params) and one
`pretrain` stage per seed with the proxy params and `max_steps = tokens / (batch_size x
seq_len)`. All arms go into ONE run: a stage whose definition (kind, params and, recursively,
inputs) is the same in several arms is one stage that runs once; it keeps its base name
when it is the base's stage unchanged, and any other (a stage an arm changes, and every
arm's training tail) is named `<stage>__<arm>` after the first arm that has it. So arms sharing a crawl and an
extraction pay for them once, and a re-run is a no-op (evaluations are cached by the
trained model's manifest checksum). `--arms a,b` runs and reports those arms only; names
still come from the whole file, so an arm added later and run alone reuses every stage
the others committed.

Strings in the ablation file expand `$NAME` environment variables and `~` (a data folder a
driver script prepares, as bench/ablation.py does); the base config is read as it is.

Evaluation: held-out bits per byte per arm and seed (model/eval.py: tokenizer-independent,
so arms with different vocabularies compare), the mean and the spread (max - min) over
seeds, the passes each arm's training made over its corpus, and each arm's composition:
documents kept and dropped by reason along its pipeline. Printed as a table, written as an
HTML page in the report's style (`RUN_DIR/ablation/ablation.html`), and as JSON
(`--json`, and `RUN_DIR/ablation/results.json`).

Memory: the pipeline's stages state their own; the evaluation holds one held-out set's
token windows and the proxy model.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import re
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.config import ConfigError
from pipeline.dag import ancestors, descendants, topological_order

TRAIN_KINDS = ("train_tokenizer", "tokenize", "pretrain", "sft", "dpo")
SEPARATOR = "__"


class AblationError(ConfigError):
    """A mistake in an ablation file; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Arm(_Strict):
    raw: str | None = None  # train on this stage's documents: no cleaning after it
    params: dict[str, dict[str, Any]] = {}  # stage -> params merged over the base's
    remove: list[str] = []  # base stages left out; their consumers read their inputs
    add: dict[str, dict[str, Any]] = {}  # stages added: {kind, inputs, params}
    corpus: str | None = None  # the stage whose documents train (default: the base's)


class HeldoutSet(_Strict):
    files: list[str]  # files or globs
    whitespace: Literal["keep", "collapse"] = "keep"


class Ablation(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    base: str  # the pipeline config the arms change
    run_dir: str | None = None
    corpus: str | None = None  # the base's stage that training reads (default: the tokenizer's input)
    heldout: dict[str, HeldoutSet]  # name -> files or globs (a list), or {files, whitespace}
    proxy: dict[str, Any]  # `pretrain` params: model, data, train
    tokens: int = Field(gt=0)  # training tokens per arm and seed
    seeds: list[int] = [0]
    decontaminate: bool = True  # remove documents sharing `ngram` words with a held-out file
    ngram: int = Field(default=13, ge=1)
    arms: dict[str, Arm]

    @field_validator("heldout", mode="before")
    @classmethod
    def _lists_are_files(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"files": v} if isinstance(v, list) else v for k, v in value.items()}
        return value


# --- the ablation file and its arms as one pipeline config ----------------------------------


def load_ablation(path: str | Path) -> tuple[Ablation, dict[str, Any], Path]:
    """The validated ablation file, its base pipeline config (a dict) and its folder."""
    path = Path(path)
    try:
        raw = _expand_vars(yaml.safe_load(path.read_text()))
    except OSError as exc:
        raise AblationError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise AblationError(f"{path}: not valid YAML: {exc}") from None
    try:
        ablation = Ablation.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise AblationError(f"{path}: {key}: {msg}") from None
    if not ablation.arms:
        raise AblationError(f"{path}: arms: at least one arm is needed")
    for name in ablation.arms:
        if SEPARATOR in name or not name.replace("_", "").replace("-", "").isalnum():
            raise AblationError(f"{path}: arms: '{name}': letters, digits, '-' and single '_' only")
    base_path = (path.parent / ablation.base).resolve()
    try:
        base = yaml.safe_load(base_path.read_text())
    except OSError as exc:
        raise AblationError(f"{path}: base: cannot read {base_path}: {exc.strerror}") from None
    if not isinstance(base, dict) or not isinstance(base.get("stages"), dict):
        raise AblationError(f"{path}: base: {base_path} is not a pipeline config with stages")
    return ablation, base, path.parent


def _expand_vars(value: Any) -> Any:
    """$NAME and ~ in every string of the ablation file (not the base config)."""
    if isinstance(value, str):
        return os.path.expanduser(os.path.expandvars(value))
    if isinstance(value, dict):
        return {k: _expand_vars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_vars(v) for v in value]
    return value


def heldout_files(ablation: Ablation, root: Path, where: str) -> dict[str, list[Path]]:
    sets = {}
    for name, spec in ablation.heldout.items():
        files: list[Path] = []
        for pattern in spec.files:
            expanded = pattern  # $VARS expanded when the file was read
            full = expanded if Path(expanded).is_absolute() else str(root / expanded)
            matched = sorted(glob.glob(full, recursive=True))
            if not matched:
                unset = " (an environment variable in it is not set)" if "$" in expanded else ""
                raise AblationError(f"{where}: heldout.{name}: '{pattern}' matches no file{unset}")
            files += [Path(m).resolve() for m in matched]
        sets[name] = files
    return sets


def heldout_documents(files: list[Path], whitespace: str = "keep") -> list[str]:
    """The documents of held-out files: a .txt file is one; a .jsonl(.gz) line is one
    (model/eval.py's text sets, as `lmforge eval --text` reads them); `collapse`: each as
    `collapse_whitespace` gives it."""
    from model.eval import read_text_set

    docs = [doc for path in files for doc in read_text_set(path)]
    return [collapse_whitespace(d) for d in docs] if whitespace == "collapse" else docs


_BLANK_LINES = re.compile(r"\n{3,}")
_SPACES = re.compile(r"[ \t\f\v\r]+")


def collapse_whitespace(text: str) -> str:
    """`text` as HTML shows it and main-content extraction returns it: runs of spaces and
    tabs one space, every line stripped (no indentation), paragraphs one blank line apart.
    A web crawl's text has no indentation outside <pre>; scoring a held-out file's
    indented verse against models trained on such text measures the indentation (each
    space a token no tokenizer of the corpus merged), not the language."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")


def _graph(stages: dict[str, dict]) -> dict[str, list[str]]:
    return {name: stage.get("inputs", []) for name, stage in stages.items()}


def before_training(stages: dict[str, dict]) -> dict[str, dict]:
    """The stages before the training tail (train_tokenizer, tokenize, pretrain, sft, dpo
    and every stage downstream of them)."""
    tail = descendants(_graph(stages), [n for n, s in stages.items() if s.get("kind") in TRAIN_KINDS])
    return {name: stage for name, stage in stages.items() if name not in tail}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def arm_pipelines(ablation: Ablation, base: dict[str, Any], heldout: dict[str, list[Path]],
                  where: str) -> dict[str, dict[str, dict]]:
    """arm -> its stages (names as in the base; the training tail named `tokenizer`,
    `tokens`, `pretrain_s<seed>`)."""
    stages = base["stages"]
    tokenizer = next((s for s in stages.values() if s.get("kind") == "train_tokenizer"), {})
    tokenize = next((s for s in stages.values() if s.get("kind") == "tokenize"), {})
    corpus = ablation.corpus or (tokenizer.get("inputs") or [None])[0]
    body = copy.deepcopy(before_training(stages))
    if corpus not in body:
        raise AblationError(f"{where}: corpus: '{corpus}' is not a stage of the base before its "
                            "training tail (name it with `corpus:`)")
    seq_len = int(ablation.proxy.get("data", {}).get("seq_len")
                  or ablation.proxy.get("model", {}).get("max_seq_len", 0))
    batch = int(ablation.proxy.get("train", {}).get("batch_size", 0))
    if seq_len <= 0 or batch <= 0:
        raise AblationError(f"{where}: proxy: give train.batch_size and model.max_seq_len (or "
                            "data.seq_len): the token budget sets max_steps from them")
    steps = max(1, ablation.tokens // (batch * seq_len))

    arms = {}
    for arm_name, arm in ablation.arms.items():
        at = f"{where}: arms.{arm_name}"
        own = copy.deepcopy(body)
        for name in arm.remove:
            if name not in own:
                raise AblationError(f"{at}: remove: '{name}' is not a stage of the base")
            inputs = own.pop(name).get("inputs", [])
            for stage in own.values():
                if name in stage.get("inputs", []):
                    i = stage["inputs"].index(name)
                    stage["inputs"][i:i + 1] = inputs
        for name, override in arm.params.items():
            if name not in own:
                raise AblationError(f"{at}: params: '{name}' is not a stage of this arm")
            own[name]["params"] = _merge(own[name].get("params", {}), override)
        for name, stage in arm.add.items():
            if name in own:
                raise AblationError(f"{at}: add: '{name}' is already a stage")
            own[name] = copy.deepcopy(stage)
        arm_corpus = arm.raw or arm.corpus or corpus
        if arm_corpus not in own:
            raise AblationError(f"{at}: '{arm_corpus}' is not a stage of this arm")
        for name, stage in own.items():
            for inp in stage.get("inputs", []):
                if inp not in own:
                    raise AblationError(f"{at}: stage '{name}': inputs: '{inp}' is not a stage "
                                        "of this arm")
        kept = ancestors(_graph(own), arm_corpus)
        own = {n: s for n, s in own.items() if n in kept}
        if ablation.decontaminate:
            own["decontaminate"] = {"kind": "decontaminate", "inputs": [arm_corpus], "params": {
                # each file once: a file in two sets (kept and collapsed) is one path
                "paths": list(dict.fromkeys(str(p) for files in heldout.values() for p in files)),
                "ngram": ablation.ngram}}
            arm_corpus = "decontaminate"
        own["tokenizer"] = {"kind": "train_tokenizer", "inputs": [arm_corpus],
                            "params": copy.deepcopy(tokenizer.get("params", {}))}
        own["tokens"] = {"kind": "tokenize", "inputs": [arm_corpus, "tokenizer"],
                         "params": copy.deepcopy(tokenize.get("params", {}))}
        for seed in ablation.seeds:
            params = copy.deepcopy(ablation.proxy)
            params["train"] = {**params.get("train", {}), "max_steps": steps, "seed": seed}
            params.setdefault("sample_tokens", 0)
            own[f"pretrain_s{seed}"] = {"kind": "pretrain", "inputs": ["tokens"], "params": params}
        arms[arm_name] = own
    return arms


def merge_arms(arms: dict[str, dict[str, dict]], base: dict[str, dict]) -> tuple[
        dict[str, dict], dict[str, dict[str, str]]]:
    """One stage set for all arms, and arm -> {stage in the arm: its name in the run}.

    A stage's identity is its kind, params and (recursively) its inputs' identities; the
    same identity in several arms is one stage. A stage keeps its plain name when it is the
    base's stage of that name unchanged (same identity); any other is `<stage>__<arm>`,
    named after the first arm that has it."""
    base_identity = _identities(base)
    merged: dict[str, dict] = {}
    by_identity: dict[str, str] = {}
    names: dict[str, dict[str, str]] = {}
    for arm, stages in arms.items():
        identity = _identities(stages)
        names[arm] = {}
        for name in topological_order(_graph(stages), where=f"arms.{arm}"):
            key = identity[name]
            if key not in by_identity:
                plain = base_identity.get(name) == key
                run_name = name if plain else f"{name}{SEPARATOR}{arm}"
                stage = copy.deepcopy(stages[name])
                stage["inputs"] = [names[arm][i] for i in stage.get("inputs", [])]
                merged[run_name] = stage
                by_identity[key] = run_name
            names[arm][name] = by_identity[key]
    return merged, names


def _identities(stages: dict[str, dict]) -> dict[str, str]:
    identity: dict[str, str] = {}
    for name in topological_order(_graph(stages)):
        stage = stages[name]
        blob = json.dumps({"kind": stage.get("kind"), "params": stage.get("params", {}),
                           "inputs": [identity[i] for i in stage.get("inputs", [])],
                           "rest": {k: v for k, v in stage.items()
                                    if k not in ("kind", "params", "inputs")}},
                          sort_keys=True, default=str)
        identity[name] = hashlib.sha256(blob.encode()).hexdigest()
    return identity


def build_run(ablation_path: str | Path, only: list[str] | None = None) -> tuple[
        Ablation, dict[str, Any], dict[str, dict[str, str]], dict[str, list[Path]]]:
    """The ablation, the one pipeline config that runs every arm (or the arms in `only`),
    each arm's stage names, and the held-out files by set.

    Stage names come from all the file's arms, whichever run: an arm run alone finds the
    stages an earlier run of the whole file (or of other arms) committed under the same
    names, and the run directory keeps one folder per stage."""
    ablation, base, root = load_ablation(ablation_path)
    where = str(ablation_path)
    heldout = heldout_files(ablation, root, where)
    arms = arm_pipelines(ablation, base, heldout, where)
    stages, names = merge_arms(arms, before_training(base["stages"]))
    if only:
        unknown = [a for a in only if a not in names]
        if unknown:
            raise AblationError(f"{where}: no arm named {', '.join(map(repr, unknown))} "
                                f"(arms: {', '.join(names)})")
        names = {arm: names[arm] for arm in names if arm in only}
        used = {run_name for arm in names.values() for run_name in arm.values()}
        stages = {name: stage for name, stage in stages.items() if name in used}
    run_dir = ablation.run_dir or f"runs/ablation-{ablation.name}"
    if ablation.run_dir is not None and not Path(run_dir).is_absolute() and "://" not in run_dir:
        run_dir = str(root / run_dir)
    config = {"name": f"ablation-{ablation.name}", "run_dir": run_dir, "stages": stages}
    if "executor" in base:
        config["executor"] = base["executor"]
    return ablation, config, names, heldout


# --- evaluation and results -------------------------------------------------------------------


def evaluate(ablation: Ablation, config: dict[str, Any], names: dict[str, dict[str, str]],
             heldout: dict[str, list[Path]]) -> dict[str, Any]:
    """Per arm: corpus size, training tokens, passes, composition and bits per byte per
    held-out set and seed; evaluations cached in RUN_DIR/ablation/eval.json by the trained
    model's checksums and the held-out text's."""
    from model.eval import bits_per_byte
    from pipeline.manifest import Manifest, fetch_listed
    from pipeline.status import load_stages
    from pipeline.storage import read_text, run_location, write_bytes

    run_dir = run_location(config["run_dir"])
    views = {v.name: v for v in load_stages(run_dir)}
    cache_path = run_dir / "ablation" / "eval.json"
    cache = json.loads(read_text(cache_path)) if cache_path.exists() else {}
    documents = {name: heldout_documents(files, ablation.heldout[name].whitespace)
                 for name, files in heldout.items()}
    doc_hash = {name: hashlib.sha256("\0".join(d).encode()).hexdigest()[:16]
                for name, d in documents.items()}
    results: dict[str, Any] = {}
    for arm, stage_names in names.items():
        corpus = views[config["stages"][stage_names["tokenizer"]]["inputs"][0]]
        tokens = views[stage_names["tokens"]]
        corpus_tokens = sum(info.get("train", {}).get("tokens", 0) for info in tokens.infos)
        row: dict[str, Any] = {
            "stages": dict(stage_names), "corpus_stage": corpus.name,
            "docs": corpus.counts.kept, "bytes": corpus.counts.bytes_out,
            "corpus_tokens": corpus_tokens, "composition": _composition(views, stage_names),
            "seeds": {},
        }
        for seed in ablation.seeds:
            pretrain = run_dir / stage_names[f"pretrain_s{seed}"]
            manifest = Manifest.load(pretrain)
            model_sum = hashlib.sha256(json.dumps(manifest.checksums()).encode()).hexdigest()[:16]
            log = [json.loads(line) for line in read_text(pretrain / "train_log.jsonl").splitlines()
                   if line.strip()]
            seed_row: dict[str, Any] = {"train_tokens": log[-1].get("tokens", 0) if log else 0}
            seed_row["passes"] = (seed_row["train_tokens"] / corpus_tokens) if corpus_tokens else None
            model_dir = None
            for set_name, docs in documents.items():
                key = f"{model_sum}:{doc_hash[set_name]}"
                if key not in cache:
                    model_dir = model_dir or Path(fetch_listed(str(pretrain / "model")))
                    cache[key] = bits_per_byte(model_dir, docs)
                seed_row[set_name] = cache[key]
            row["seeds"][str(seed)] = seed_row
        for set_name in documents:
            values = [row["seeds"][str(s)][set_name] for s in ablation.seeds]
            row[set_name] = {"mean": statistics.fmean(values),
                             "spread": max(values) - min(values), "values": values}
        results[arm] = row
    write_bytes(cache_path, json.dumps(cache, indent=2, sort_keys=True).encode())
    summary = {"ablation": ablation.name, "run_dir": str(run_dir), "tokens": ablation.tokens,
               "seeds": ablation.seeds,
               "heldout": {n: {"documents": len(d), "bytes": sum(len(t.encode()) for t in d),
                               "whitespace": ablation.heldout[n].whitespace}
                           for n, d in documents.items()},
               "arms": results}
    write_bytes(run_dir / "ablation" / "results.json", json.dumps(summary, indent=2).encode())
    return summary


def _composition(views: dict[str, Any], stage_names: dict[str, str]) -> dict[str, int]:
    """Documents dropped along the arm's pipeline, by `stage: reason` (filtering only: a
    sampling stage's unused documents are not drops)."""
    drops: Counter = Counter()
    for plain, run_name in stage_names.items():
        for view in views.values():
            if view.name != run_name and not view.name.startswith(run_name + "."):
                continue
            if view.units != "documents":
                continue
            for reason, n in view.dropped.items():
                drops[f"{plain}: {reason}"] += n
    return dict(sorted(drops.items(), key=lambda kv: (-kv[1], kv[0])))


def format_table(summary: dict[str, Any]) -> str:
    sets = list(summary["heldout"])
    header = ["arm", "docs", "MB", "train tokens", "passes"] + [f"{s} bits/byte" for s in sets]
    lines = [f"ablation {summary['ablation']}: {summary['tokens']:,} tokens per arm, seeds "
             f"{summary['seeds']}; bits per byte: mean +- spread (max - min) over seeds",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, row in summary["arms"].items():
        seeds = list(row["seeds"].values())
        tokens = statistics.fmean(s["train_tokens"] for s in seeds)
        passes = [s["passes"] for s in seeds if s["passes"] is not None]
        cells = [arm, f"{row['docs']:,}", f"{row['bytes'] / 1e6:.3f}", f"{tokens:,.0f}",
                 f"{statistics.fmean(passes):.2f}" if passes else "-"]
        cells += [f"{row[s]['mean']:.4f} +- {row[s]['spread']:.4f}" for s in sets]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("composition (documents dropped along each arm's pipeline, by stage: reason):")
    for arm, row in summary["arms"].items():
        drops = ", ".join(f"{k} {v:,}" for k, v in list(row["composition"].items())[:8]) or "none"
        lines.append(f"  {arm}: {drops}")
    return "\n".join(lines)


def write_html(summary: dict[str, Any]) -> Path:
    """RUN_DIR/ablation/ablation.html: the tables and a bar chart, in the report's style."""
    from pipeline.report import PlotWriter, Section, write_page
    from pipeline.storage import run_location

    run_dir = run_location(summary["run_dir"])
    out_dir = run_dir / "ablation"
    plots = PlotWriter(out_dir)
    sets = list(summary["heldout"])
    arms = list(summary["arms"])
    section = Section("bpb", "Held-out bits per byte",
                      "The same proxy model trained on the same number of tokens of each arm's "
                      "corpus; lower is better. Mean over seeds, spread = max - min.")
    section.tables.append({"caption": "Arms", "header": ["arm", "documents", "MB", "passes"] + sets,
                           "rows": [[a, f"{r['docs']:,}", f"{r['bytes'] / 1e6:.3f}",
                                     ", ".join(f"{s['passes']:.2f}" for s in r["seeds"].values()
                                               if s["passes"] is not None)]
                                    + [f"{r[s]['mean']:.4f} +- {r[s]['spread']:.4f}" for s in sets]
                                    for a, r in summary["arms"].items()]})
    fig, ax = plots.figure(figsize=(8, 0.5 * len(arms) * len(sets) + 1.5))
    width = 0.8 / max(1, len(sets))
    for i, set_name in enumerate(sets):
        means = [summary["arms"][a][set_name]["mean"] for a in arms]
        errs = [summary["arms"][a][set_name]["spread"] / 2 for a in arms]
        ax.barh([y + i * width for y in range(len(arms))], means, height=width, xerr=errs,
                label=set_name)
    ax.set_yticks([y + width * (len(sets) - 1) / 2 for y in range(len(arms))], arms)
    ax.invert_yaxis()
    ax.set_xlabel("held-out bits per byte")
    ax.legend(loc="lower right")
    section.plots.append(plots.save(fig, "bits_per_byte", "held-out bits per byte per arm"))
    composition = Section("composition", "Composition",
                          "Documents each arm's pipeline dropped, by stage and reason.")
    composition.tables.append({"caption": "Drops", "header": ["arm", "stage: reason", "documents"],
                               "rows": [[a, k, f"{v:,}"] for a, r in summary["arms"].items()
                                        for k, v in r["composition"].items()]})
    return write_page(out_dir / "ablation.html", f"ablation {summary['ablation']}",
                      str(run_dir), None, [section, composition])


def run_ablation(path: str | Path, run: Callable[..., Any], arms: list[str] | None = None,
                 **run_args: Any) -> dict[str, Any]:
    """Run every arm, or those in `arms` (one pipeline run; shared stages once), evaluate,
    write the results."""
    ablation, config, names, heldout = build_run(path, arms)
    run(config, **run_args)
    summary = evaluate(ablation, config, names, heldout)
    summary["html"] = str(write_html(summary))
    return summary


def register(subparsers: Any, run: Callable[..., Any]) -> None:
    """Add `ablate` to the lmforge subcommands; `run` is pipeline.run (the wiring's)."""
    p = subparsers.add_parser("ablate", help="train the same proxy model on each recipe's "
                              "corpus and compare held-out bits per byte")
    p.add_argument("ablation", help="an ablation file (see stages/ablate.py)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--arms", help="run and report only these arms, comma-separated (stage "
                   "names stay those of the whole file, so cached stages are reused)")
    p.add_argument("--executor", choices=["local", "dask"])
    p.add_argument("--workers", type=int)
    p.set_defaults(func=lambda args: _cmd(args, run))


def _cmd(args: Any, run: Callable[..., Any]) -> int:
    import contextlib
    import sys

    # With --json, stdout is the JSON alone: what the stages print goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        summary = run_ablation(args.ablation, run, args.arms.split(",") if args.arms else None,
                               executor=args.executor, workers=args.workers)
    print(json.dumps(summary, indent=2) if args.json else
          format_table(summary) + f"\n\nhtml: {summary['html']}")
    return 0
