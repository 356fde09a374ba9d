"""`lmforge report RUN_DIR`: one self-contained HTML page (plots embedded) plus the PNGs.

    lmforge report runs/demo [--out DIR] [--samples 3]

Writes `RUN_DIR/report/report.html` and one PNG per plot beside it; the HTML carries the
PNGs as data: URIs, so it opens anywhere with no network and no other file.

Sections appear for what the run directory holds, so a run of only some stages still
renders (stages are found by their `manifest.json`, listed in `run.json`'s order):
- **Funnel**: every stage's documents and bytes in and kept, drops and errors by reason
  (from the manifests, so a partial stage shows what it has committed).
- **Document lengths** (characters, log bins) before filtering (the documents entering the
  first filtering stage: its kept plus rejected shards) and after (the last doc stage's
  kept shards). A doc stage is one whose manifest lists `shards/*.parquet`; a filtering
  stage is one whose kind is a `FilterStage` (manifest: `filters`).
- **Languages**: the `lang` column of the stage that added it, seen vs kept.
- **Duplicates**: cluster sizes from `dup_cluster_size` (MinHash) and `exact_dup_count`
  (exact), one count per cluster (its kept member).
- **Tokenizer**: the `tokenizer_report` file a stage declares (held-out bytes per token,
  vocabulary profile) and the token counts of stages whose task `info` has per-split
  `{"train": {"tokens": N}, "val": {...}}`.
- **Training**: the `training_log` file a stage declares (while it runs, its scratch
  copy), or a trainer output folder's log (`lmforge report runs/tiny`; the caller names
  the file, `trainer_log`): training and validation loss with the learning rate,
  tokens/s and MFU, the held-out scores the trainer logged (`bpb/NAME`, `acc/NAME`,
  `acc_norm/NAME`: model/eval.py's text sets and tasks) at each step it measured them, and
  the stage's declared `sample` text. A resumed run logs some steps twice; the later record
  wins. A run on a data mixture (records with `mixture`: per source tokens, share, epochs,
  target, exhausted_at_tokens) adds a **Data mixture** table of the realised proportions
  and a plot of each source's share as training went.

The report knows no stage kind by name: what a stage is and which files it offers come
from the declarations its kind recorded in the manifest (pipeline/stage.py: `filters`,
`report_files`).
- **Samples**: a few kept documents of the final stage and a few rejected ones per stage and
  reason, chosen by a hash of the id (the same every time), cut to 600 characters.

Every string from the data (texts, URLs, reasons, stage names) goes through Jinja2's
autoescaping, so a document holding `<script>` shows as text. A short inline script marks a
plot that fails to decode (`data-plots="loaded/total"` on <body>, a visible error box).
Text columns are read one record batch at a time; memory is bounded by the batch and the
samples, not the corpus.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from pipeline import storage
from pipeline.artifacts import open_parquet
from pipeline.status import RUN_FILE, StageView, load_stages

TEMPLATE = "report_template.html"
SAMPLE_CHARS = 600
TOP_LANGUAGES = 15
BATCH = 1024


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    plots: list[dict[str, str]] = field(default_factory=list)  # name, alt, png (base64)
    tables: list[dict[str, Any]] = field(default_factory=list)  # caption, header, rows
    samples: list[dict[str, Any]] = field(default_factory=list)  # heading, docs
    text: str = ""  # preformatted (a generated sample)


# ---------------------------------------------------------------- reading doc shards

def text_lengths(paths: list[Path]) -> np.ndarray:
    parts = []
    for path in paths:
        with open_parquet(path) as parquet:
            parts += [pc.utf8_length(batch.column("text")).to_numpy(zero_copy_only=False)
                      for batch in parquet.iter_batches(BATCH, columns=["text"])]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def column_values(paths: list[Path], column: str) -> list[Any]:
    values = []
    for path in paths:
        with open_parquet(path) as parquet:
            values += parquet.read(columns=[column]).column(column).to_pylist()
    return values


def _rows(paths: list[Path], columns: list[str]) -> Iterator[dict[str, Any]]:
    for path in paths:
        with open_parquet(path) as parquet:
            for batch in parquet.iter_batches(BATCH, columns=columns):
                yield from batch.to_pylist()


def _rank(doc_id: str) -> bytes:
    return hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def sample_docs(paths: list[Path], k: int, by_reason: bool) -> dict[str, list[dict[str, Any]]]:
    """Up to k documents per reason (or under "kept"), the k with the smallest id hash."""
    columns = ["id", "text", "url"] + (["reason", "error"] if by_reason else [])
    heaps: dict[str, list[tuple[bytes, int, dict[str, Any]]]] = {}
    seen = 0
    for row in _rows(paths, columns):
        reason = row["reason"] if by_reason else "kept"
        heap = heaps.setdefault(reason, [])
        text = row["text"]
        doc = {"id": row["id"], "url": row["url"], "chars": len(text),
               "text": text[:SAMPLE_CHARS], "cut": len(text) > SAMPLE_CHARS,
               "error": row.get("error")}
        # Max-heap on the rank (negated bytes), so the k smallest ranks stay.
        item = (bytes(255 - b for b in _rank(row["id"])), seen, doc)
        seen += 1
        if len(heap) < k:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)
    return {reason: [d for _, _, d in sorted(heap, key=lambda t: t[0], reverse=True)]
            for reason, heap in sorted(heaps.items())}


# ---------------------------------------------------------------- plots

def _plots():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class PlotWriter:
    """Saves each figure as a PNG under the report folder and keeps it for embedding."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.plt = _plots()

    def figure(self, *args: Any, **kwargs: Any):
        return self.plt.subplots(*args, **kwargs)

    def save(self, fig: Any, name: str, alt: str) -> dict[str, str]:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        self.plt.close(fig)
        data = buffer.getvalue()
        storage.write_bytes(self.out_dir / f"{name}.png", data)
        return {"name": name, "alt": alt, "png": base64.b64encode(data).decode("ascii")}


def _mb(n: int) -> str:
    return f"{n / 1e6:,.3f}"


def funnel_section(stages: list[StageView], plots: PlotWriter) -> Section:
    section = Section("funnel", "Funnel", "Documents and bytes through each stage; drops and "
                      "errors by reason; what a sampling stage (a tokenizer's training sample) did not use is "
                      "set aside, not dropped: it flows on downstream. Where `units` is not documents, `in` and `kept` count "
                      "what the stage declares (URLs, band rows, pairs).")
    rows = []
    for s in stages:
        c = s.counts
        rows.append([s.name, s.kind, s.units, "complete" if s.complete else "partial", f"{c.n_in:,}",
                     f"{c.kept:,}", f"{sum(s.dropped.values()):,}", f"{sum(s.set_aside.values()):,}",
                     f"{sum(c.errors.values()):,}",
                     _mb(c.bytes_in), _mb(c.bytes_out),
                     f"{s.wall_seconds:.2f}" if s.wall_seconds is not None else "-"])
    section.tables.append({"caption": "Stages", "header": [
        "stage", "kind", "units", "state", "in", "kept", "dropped", "set aside", "errors", "MB in",
        "MB kept", "wall s"],
        "rows": rows})
    reasons = [[s.name, outcome, reason, f"{n:,}", f"{n / s.counts.n_in:.1%}" if s.counts.n_in else "-"]
               for s in stages for outcome, counter in (("dropped", s.dropped), ("set aside", s.set_aside),
                                                        ("error", s.counts.errors))
               for reason, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]
    if reasons:
        section.tables.append({"caption": "Drops and errors by reason",
                               "header": ["stage", "outcome", "reason", "documents", "share of in"],
                               "rows": reasons})

    doc_stages = [s for s in stages if s.is_doc_stage]
    if doc_stages:
        fig, (docs_ax, bytes_ax) = plots.figure(1, 2, figsize=(11, 0.5 * len(doc_stages) + 2))
        y = np.arange(len(doc_stages))
        for ax, key, unit in ((docs_ax, "docs", "documents"), (bytes_ax, "bytes", "MB")):
            scale = 1 if key == "docs" else 1e6
            ins = [(s.counts.n_in if key == "docs" else s.counts.bytes_in) / scale for s in doc_stages]
            kept = [(s.counts.kept if key == "docs" else s.counts.bytes_out) / scale for s in doc_stages]
            ax.barh(y - 0.2, ins, height=0.4, label="in", color="#9ecae1")
            ax.barh(y + 0.2, kept, height=0.4, label="kept", color="#3182bd")
            ax.set_yticks(y, [s.name for s in doc_stages])
            ax.invert_yaxis()
            ax.set_xlabel(unit)
            ax.legend(loc="lower right")
        docs_ax.set_title("documents per stage")
        bytes_ax.set_title("bytes per stage")
        section.plots.append(plots.save(fig, "funnel", "documents and bytes in and kept per stage"))
    drops = [(f"{s.name}: {reason}", n) for s in stages
             for reason, n in (s.dropped + s.counts.errors).items()]  # filtering, not sampling
    if drops:
        drops.sort(key=lambda d: -d[1])
        drops = drops[:30]
        fig, ax = plots.figure(figsize=(11, 0.3 * len(drops) + 1.5))
        ax.barh(range(len(drops)), [n for _, n in drops], color="#e6550d")
        ax.set_yticks(range(len(drops)), [label for label, _ in drops], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("documents (log)")
        ax.set_title("drops and errors by reason")
        section.plots.append(plots.save(fig, "drops", "documents dropped or failed, by stage and reason"))
    return section


def lengths_section(stages: list[StageView], plots: PlotWriter) -> Section | None:
    doc_stages = [s for s in stages if s.is_doc_stage]
    if not doc_stages:
        return None
    first_filter = next((s for s in doc_stages if s.filters), None)
    after_stage = doc_stages[-1]
    series = []
    if first_filter is not None:
        series.append((f"before filtering (into {first_filter.name})",
                       text_lengths(first_filter.paths("shards") + first_filter.paths("rejected"))))
    elif after_stage is not doc_stages[0]:
        series.append((f"{doc_stages[0].name} output", text_lengths(doc_stages[0].paths("shards"))))
    series.append((f"after ({after_stage.name} output)", text_lengths(after_stage.paths("shards"))))
    series = [(label, values) for label, values in series if len(values)]
    if not series:
        return None
    section = Section("lengths", "Document lengths", "Characters per document, log-spaced bins.")
    low = max(1, min(int(v.min()) for _, v in series))
    top = max(int(v.max()) for _, v in series)
    bins = np.logspace(np.log10(low), np.log10(max(top, 10 * low)) + 0.01, 40)
    fig, ax = plots.figure(figsize=(10, 4))
    for (label, values), color in zip(series, ("#fdae6b", "#3182bd")):
        ax.hist(np.maximum(values, 1), bins=bins, alpha=0.6, label=f"{label}: {len(values):,} docs", color=color)
    ax.set_xscale("log")
    ax.set_xlabel("characters")
    ax.set_ylabel("documents")
    ax.legend()
    section.plots.append(plots.save(fig, "lengths", "histogram of document lengths before and after filtering"))
    section.tables.append({"caption": "Length percentiles (characters)",
                           "header": ["documents", "count", "p10", "median", "p90", "max"],
                           "rows": [[label, f"{len(v):,}", *(f"{int(np.percentile(v, q)):,}" for q in (10, 50, 90)),
                                     f"{int(v.max()):,}"] for label, v in series]})
    return section


def languages_section(stages: list[StageView], plots: PlotWriter) -> Section | None:
    stage = next((s for s in stages if s.is_doc_stage and "lang" in s.schema_names()), None)
    if stage is None:
        return None
    kept = Counter(column_values(stage.paths("shards"), "lang"))
    seen = kept + Counter(v for v in column_values(stage.paths("rejected"), "lang") if v is not None)
    top = [lang for lang, _ in seen.most_common(TOP_LANGUAGES)]
    other_seen = sum(n for lang, n in seen.items() if lang not in top)
    other_kept = sum(n for lang, n in kept.items() if lang not in top)
    labels = top + (["other"] if other_seen else [])
    seen_counts = [seen[lang] for lang in top] + ([other_seen] if other_seen else [])
    kept_counts = [kept[lang] for lang in top] + ([other_kept] if other_seen else [])
    section = Section("languages", "Languages", f"The `lang` column of stage {stage.name} "
                      f"({stage.kind}): every document it labelled, and those it kept.")
    fig, ax = plots.figure(figsize=(10, 3.5))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, seen_counts, width=0.4, label="labelled", color="#9ecae1")
    ax.bar(x + 0.2, kept_counts, width=0.4, label="kept", color="#3182bd")
    ax.set_xticks(x, labels)
    ax.set_ylabel("documents")
    ax.legend()
    section.plots.append(plots.save(fig, "languages", "documents per language, labelled and kept"))
    section.tables.append({"caption": "Documents per language", "header": ["language", "labelled", "kept"],
                           "rows": [[lang, f"{s:,}", f"{k:,}"] for lang, s, k in zip(labels, seen_counts, kept_counts)]})
    return section


def duplicates_section(stages: list[StageView], plots: PlotWriter) -> Section | None:
    found = []
    for column, label in (("dup_cluster_size", "near-duplicate (MinHash) clusters"),
                          ("exact_dup_count", "exact-duplicate groups")):
        stage = next((s for s in stages if s.is_doc_stage and column in s.schema_names()), None)
        if stage is not None:
            # Each cluster keeps exactly one member, so the kept shards hold one size per cluster.
            sizes = np.array([v for v in column_values(stage.paths("shards"), column) if v is not None])
            found.append((stage, column, label, sizes))
    if not found:
        return None
    section = Section("duplicates", "Duplicates", "Cluster sizes, one count per cluster "
                      "(its kept member); size 1 is a document with no duplicate.")
    fig, axes = plots.figure(1, len(found), figsize=(5.5 * len(found), 3.5), squeeze=False)
    rows = []
    for ax, (stage, column, label, sizes) in zip(axes[0], found):
        values, counts = np.unique(sizes, return_counts=True) if len(sizes) else ([], [])
        ax.bar(range(len(values)), counts, color="#756bb1")
        ax.set_xticks(range(len(values)), [str(v) for v in values])  # sizes as labels, evenly spaced
        ax.set_yscale("log")
        ax.set_xlabel("cluster size")
        ax.set_ylabel("clusters (log)")
        ax.set_title(f"{label}\n({stage.name}.{column})", fontsize=9)
        multi = sizes[sizes > 1] if len(sizes) else sizes
        rows.append([stage.name, column, f"{len(sizes):,}", f"{len(multi):,}",
                     f"{int((multi - 1).sum()) if len(multi) else 0:,}", f"{int(sizes.max()) if len(sizes) else 0:,}"])
    section.plots.append(plots.save(fig, "duplicates", "histogram of duplicate cluster sizes"))
    section.tables.append({"caption": "Clusters", "header": [
        "stage", "column", "kept documents", "clusters of 2+", "copies removed", "largest"], "rows": rows})
    return section


def tokenizer_section(stages: list[StageView], plots: PlotWriter) -> Section | None:
    reports = [(s, json.loads(path.read_text())) for s in stages
               if (path := s.report_file("tokenizer_report")) is not None]
    token_stages = [s for s in stages
                    if any(isinstance(i.get("train"), dict) and "tokens" in i["train"] for i in s.infos)]
    if not reports and not token_stages:
        return None
    section = Section("tokenizer", "Tokenizer")
    rows = []
    for stage, report in reports:
        held, vocab = report.get("heldout", {}), report.get("vocab", {})
        rows.append([stage.name, f"{vocab.get('size', 0):,}", f"{held.get('bytes_per_token') or 0:.3f}",
                     f"{held.get('chars_per_token') or 0:.3f}", f"{held.get('vocab_used_fraction', 0):.1%}",
                     f"{held.get('docs', 0):,}", f"{report.get('sample', {}).get('bytes', 0) / 1e6:,.3f}"])
    if rows:
        section.tables.append({"caption": "Trained tokenizers (held-out documents)", "header": [
            "stage", "vocab", "bytes/token", "chars/token", "vocab used", "held-out docs",
            "trained on MB"], "rows": rows})
        stage, report = reports[0]
        histogram = report.get("vocab", {}).get("token_bytes_histogram", {})
        # Buckets ("1", "5-8", "17+") in order of their lower bound, not as the JSON sorts them.
        histogram = dict(sorted(histogram.items(), key=lambda kv: int(re.match(r"\d+", kv[0])[0])))
        if histogram:
            fig, ax = plots.figure(figsize=(7, 3))
            ax.bar(range(len(histogram)), list(histogram.values()), color="#31a354")
            ax.set_xticks(range(len(histogram)), list(histogram))
            ax.set_xlabel("bytes per vocabulary token")
            ax.set_ylabel("tokens")
            ax.set_title(f"{stage.name}: held-out {report['heldout'].get('bytes_per_token')} bytes/token")
            section.plots.append(plots.save(fig, "tokenizer", "vocabulary tokens by length in bytes"))
    token_rows = []
    for stage in token_stages:
        split_tokens = {split: sum(i.get(split, {}).get("tokens", 0) for i in stage.infos) for split in ("train", "val")}
        total = sum(split_tokens.values())
        token_rows.append([stage.name, f"{split_tokens['train']:,}", f"{split_tokens['val']:,}",
                           f"{stage.counts.bytes_in / total:.3f}" if total else "-"])
    if token_rows:
        section.tables.append({"caption": "Token shards", "header": [
            "stage", "train tokens", "val tokens", "corpus bytes/token (EOS included)"], "rows": token_rows})
    return section


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """Records by step; when a resumed run logged a step again, the later record wins."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed run
            by_step[record["step"]] = record
    return [by_step[k] for k in sorted(by_step)]


def training_logs(run_dir: Path, stages: list[StageView],
                  trainer_log: str | None) -> list[tuple[str, Path, StageView | None]]:
    logs = [(s.name, path, s) for s in stages if (path := s.report_file("training_log")) is not None]
    if trainer_log and (run_dir / trainer_log).exists():
        logs.append((run_dir.name, run_dir / trainer_log, None))
    return logs


def training_section(run_dir: Path, stages: list[StageView], plots: PlotWriter,
                     trainer_log: str | None) -> Section | None:
    logs = [(name, read_train_log(path), stage)
            for name, path, stage in training_logs(run_dir, stages, trainer_log)]
    logs = [entry for entry in logs if entry[1]]
    if not logs:
        return None
    section = Section("training", "Training")
    rows = []
    for name, records, stage in logs:
        steps = [r["step"] for r in records]
        vals = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
        fig, (loss_ax, speed_ax) = plots.figure(1, 2, figsize=(12, 4))
        loss_ax.plot(steps, [r["loss"] for r in records], color="#3182bd", lw=1, label="train loss")
        if vals:
            loss_ax.plot(*zip(*vals), "o-", color="#e6550d", label="validation loss")
        loss_ax.set_xlabel("step")
        loss_ax.set_ylabel("loss (nats/token)")
        lr_ax = loss_ax.twinx()
        lr_ax.plot(steps, [r["lr"] for r in records], color="#999999", lw=1, ls="--", label="learning rate")
        lr_ax.set_ylabel("learning rate")
        handles = loss_ax.get_legend_handles_labels()[0] + lr_ax.get_legend_handles_labels()[0]
        loss_ax.legend(handles=handles, loc="upper right")
        loss_ax.set_title(f"{name}: loss and learning rate")
        speed_ax.plot(steps, [r.get("tokens_per_s", 0) for r in records], color="#31a354", lw=1)
        speed_ax.set_xlabel("step")
        speed_ax.set_ylabel("tokens/s")
        mfu = [(r["step"], 100 * r["mfu"]) for r in records if r.get("mfu") is not None]
        if mfu:
            mfu_ax = speed_ax.twinx()
            mfu_ax.plot(*zip(*mfu), color="#756bb1", lw=1, ls="--")
            mfu_ax.set_ylabel("MFU %")
        speed_ax.set_title(f"{name}: throughput")
        section.plots.append(plots.save(fig, f"training-{name}", f"training curves of {name}"))
        speeds = [r["tokens_per_s"] for r in records[1:] or records if r.get("tokens_per_s")]
        params = next((i.get("parameters") for i in (stage.infos if stage else []) if i.get("parameters")), None)
        rows.append([name, f"{params:,}" if params else "-", f"{steps[-1]:,}",
                     f"{records[-1].get('tokens', 0):,}", f"{records[0]['loss']:.4f}",
                     f"{records[-1]['loss']:.4f}", f"{min(v for _, v in vals):.4f}" if vals else "-",
                     f"{np.median(speeds):,.0f}" if speeds else "-",
                     f"{np.median([m for _, m in mfu]):.1f}%" if mfu else "-",
                     f"{sum(1 for r in records if r.get('skipped')):,}"])
        sample = stage.report_file("sample") if stage else None
        if sample is not None:
            section.text = sample.read_text(encoding="utf-8", errors="replace")
    section.tables.append({"caption": "Runs", "header": [
        "run", "parameters", "steps", "tokens", "first loss", "last loss", "best val loss",
        "median tokens/s", "median MFU", "skipped steps"], "rows": rows})
    evals = held_out_table([(name, records) for name, records, _ in logs])
    if evals:
        section.tables.append(evals)
    mixture_table(section, logs, plots)
    return section


def mixture_table(section: Section, logs: list[tuple[str, list[dict[str, Any]], Any]],
                  plots: PlotWriter) -> None:
    """Realised proportions of the runs that trained on a data mixture: a table and a plot."""
    rows = []
    for name, records, _ in logs:
        mixed = [r for r in records if isinstance(r.get("mixture"), dict)]
        if not mixed:
            continue
        fig, ax = plots.figure(1, 1, figsize=(8, 3.5))
        for source in mixed[-1]["mixture"]:
            ax.plot([r["step"] for r in mixed], [100 * r["mixture"][source]["share"] for r in mixed],
                    lw=1.5, label=source)
        ax.set_xlabel("step")
        ax.set_ylabel("share of windows so far (%)")
        ax.legend(loc="best")
        ax.set_title(f"{name}: data mixture")
        section.plots.append(plots.save(fig, f"mixture-{name}", f"realised data mixture of {name}"))
        for source, s in mixed[-1]["mixture"].items():
            at = s.get("exhausted_at_tokens")
            rows.append([name, source, f"{100 * s.get('target', 0):.1f}%", f"{100 * s['share']:.1f}%",
                         f"{s['tokens']:,}", f"{s['epochs']:.2f}",
                         f"exhausted at {at:,} tokens" if at is not None else "active"])
        if "data_end" in mixed[-1]:
            rows.append([name, "-", "", "", "", "", mixed[-1]["data_end"]])
    if rows:
        section.tables.append({"caption": "Data mixture", "header": [
            "run", "source", "target share", "realised share", "tokens", "epochs", "status"], "rows": rows})


EVAL_PREFIXES = ("bpb/", "acc/", "acc_norm/")  # model/eval.py's scores in a trainer log


def held_out_table(logs: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any] | None:
    """One row per run and step where the trainer logged held-out scores; None without any."""
    keys = sorted({k for _, records in logs for r in records for k in r if k.startswith(EVAL_PREFIXES)},
                  key=lambda k: (k.split("/", 1)[1], EVAL_PREFIXES.index(k.split("/", 1)[0] + "/")))
    if not keys:
        return None
    rows = [[name, f"{r['step']:,}", *(f"{r[k]:.4f}" if isinstance(r.get(k), (int, float)) else "-" for k in keys)]
            for name, records in logs for r in records if any(k in r for k in keys)]
    return {"caption": "Held-out evaluation (bpb: bits per byte; acc_norm: per byte)",
            "header": ["run", "step", *keys], "rows": rows}


def samples_section(stages: list[StageView], k: int) -> Section | None:
    doc_stages = [s for s in stages if s.is_doc_stage]
    if not doc_stages or k <= 0:
        return None
    section = Section("samples", "Sampled documents", f"Up to {k} per group, chosen by a hash "
                      f"of the document id; texts cut at {SAMPLE_CHARS} characters.")
    final = doc_stages[-1]
    for docs in sample_docs(final.paths("shards"), k, by_reason=False).values():
        section.samples.append({"heading": f"kept by {final.name} (final corpus)", "docs": docs})
    for stage in doc_stages:
        rejected = stage.paths("rejected")
        for reason, docs in sample_docs(rejected, k, by_reason=True).items():
            section.samples.append({"heading": f"rejected by {stage.name}: {reason}", "docs": docs})
    return section


def build_report(run_dir: Path, out_dir: Path | None = None, samples: int = 3,
                 trainer_log: str | None = None) -> Path:
    """Write the report for `run_dir`; returns the HTML file's path. `trainer_log`: the
    file name of a training log at the top of `run_dir` (a trainer output folder)."""
    run_dir = storage.run_location(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    stages = load_stages(run_dir)
    if not stages and not (trainer_log and (run_dir / trainer_log).exists()):
        raise FileNotFoundError(f"{run_dir}: no stage manifest (*/manifest.json) and no training "
                                f"log ({trainer_log}): nothing to report")
    out_dir = storage.run_location(out_dir) if out_dir else run_dir / "report"
    for old in storage.list_files(out_dir):
        if old.name.endswith(".png"):
            storage.remove(old)
    plots = PlotWriter(out_dir)
    sections = [
        funnel_section(stages, plots) if stages else None,
        lengths_section(stages, plots),
        languages_section(stages, plots),
        duplicates_section(stages, plots),
        tokenizer_section(stages, plots),
        training_section(run_dir, stages, plots, trainer_log),
        samples_section(stages, samples),
    ]
    order = json.loads((run_dir / RUN_FILE).read_text()) if (run_dir / RUN_FILE).exists() else {}
    return write_page(out_dir / "report.html", order.get("name", run_dir.name), str(run_dir),
                      order.get("config"), [s for s in sections if s is not None])


def write_page(path: Any, name: str, run_dir: str, config: str | None,
               sections: list[Section]) -> Any:
    """Render `sections` into one self-contained HTML page at `path` (the report's template,
    also used by `lmforge ablate`)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template(TEMPLATE).render(run_dir=run_dir, name=name, config=config,
                                             sections=sections)
    storage.write_bytes(path, html.encode("utf-8"))
    return path


def cmd_report(args: argparse.Namespace) -> int:
    path = build_report(args.run_dir, args.out, args.samples,
                        args.trainer_log)
    print(f"report: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction, trainer_log: str | None = None) -> None:
    """Add `report` to the lmforge subcommands; `trainer_log` is the file name of the
    trainer's log, so that a trainer output folder can be reported on too."""
    p = subparsers.add_parser("report", help="HTML report with plots of a run directory")
    p.add_argument("run_dir", help="a pipeline run directory, or a trainer output folder")
    p.add_argument("--out", help="folder for report.html and the PNGs (default RUN_DIR/report)")
    p.add_argument("--samples", type=int, default=3, help="sampled documents per group")
    p.set_defaults(func=cmd_report, trainer_log=trainer_log)
