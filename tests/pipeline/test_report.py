"""`lmforge report`: sections follow what a run holds, numbers match the run, text is escaped,
the page is self-contained, and headless Chromium renders every plot."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import pipeline
from pipeline.cli import TRAINER_LOG, main
from pipeline.report import build_report, read_train_log

HAMLET = Path(__file__).resolve().parents[1] / "data" / "hamlet_excerpt.txt"
GERMAN = Path(__file__).resolve().parents[1] / "data" / "multilingual" / "tutor.de.txt"
EVIL = ("Lorem ipsum <script>document.title='pwned'</script> <img src=x onerror=\"document.title='pwned'\"> "
        "and a closing </pre></div> tag, with enough ordinary words after it to pass the word "
        "filter of the pipeline that runs in this test")
TINY = {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 64, "max_seq_len": 32}


def write_corpus(directory: Path) -> int:
    """English paragraphs, 4 exact copies, German paragraphs, 5 short and 1 evil document;
    returns the number of German documents."""
    paragraphs = [p.strip() for p in HAMLET.read_text().split("\n\n") if len(p.split()) >= 25]
    german = [p.strip() for p in GERMAN.read_text().split("\n\n") if len(p.split()) >= 25][:6]
    docs = [{"id": f"en-{i}", "text": p} for i, p in enumerate(paragraphs[:40])]
    docs += [{"id": f"copy-{i}", "text": paragraphs[i]} for i in range(4)]  # exact duplicates
    docs += [{"id": f"de-{i}", "text": p} for i, p in enumerate(german)]
    docs += [{"id": f"short-{i}", "text": "click here now"} for i in range(5)]
    docs += [{"id": "evil", "text": EVIL, "url": "https://example.org/<b>x</b>"}]
    directory.mkdir(parents=True)
    (directory / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return len(german)


def ingest_and_filter(corpus: Path) -> dict:
    return {
        "ingest": {"kind": "ingest", "params": {"paths": [str(corpus / "*.jsonl")], "id_field": "id",
                                                 "url_field": "url", "shard_size": 30}},
        "clean": {"kind": "filter", "inputs": ["ingest"],
                  "params": {"min_words": 10, "exclude_regex": ["(?i)lorem ipsum"]}},
    }


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("full")
    german = write_corpus(tmp / "corpus")
    run_dir = tmp / "run"
    pipeline.run({"name": "full", "run_dir": str(run_dir), "stages": {
        **ingest_and_filter(tmp / "corpus"),
        "lang": {"kind": "langid", "inputs": ["clean"], "params": {"keep": ["en"]}},
        "exact": {"kind": "exact_dedup", "inputs": ["lang"]},
        "signatures": {"kind": "minhash_signatures", "inputs": ["exact"]},
        "buckets": {"kind": "minhash_buckets", "inputs": ["signatures"]},
        "clusters": {"kind": "minhash_clusters", "inputs": ["buckets"]},
        "dedup": {"kind": "minhash_filter", "inputs": ["clusters", "exact"]},
        "bpe": {"kind": "train_tokenizer", "inputs": ["dedup"],
                "params": {"vocab_size": 300, "heldout_bytes": 2000}},
        "tok": {"kind": "tokenize", "inputs": ["dedup", "bpe"], "params": {"val_fraction": 0.1}},
        "lm": {"kind": "pretrain", "inputs": ["tok"], "params": {
            "model": TINY, "data": {"seq_len": 32},
            "train": {"batch_size": 4, "max_steps": 6, "warmup_steps": 2, "lr": 3e-3, "min_lr": 3e-4,
                      "eval_every": 3, "eval_batches": 1, "log_every": 3, "checkpoint_every": 0,
                      "device": "cpu", "seed": 0},
            "sample_tokens": 8}},
    }})
    build_report(run_dir)
    (run_dir / "german.txt").write_text(str(german))
    return run_dir


class Page(HTMLParser):
    """The tags, image sources, section ids and table cells of a report."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[str] = []
        self.images: list[dict[str, str]] = []
        self.sections: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        self._in_cell = tag == "td"

    def handle_data(self, data):
        if self._in_cell:
            self.cells.append(data)
            self._in_cell = False


def report_of(run_dir: Path) -> tuple[str, Page]:
    html = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    return html, Page(html)


def test_full_run_has_every_section_with_the_runs_numbers(full_run):
    html, page = report_of(full_run)
    assert page.sections == ["funnel", "lengths", "languages", "duplicates", "tokenizer", "training", "samples"]
    stats = {s: json.loads((full_run / s / "stats.json").read_text())
             for s in ("ingest", "clean", "lang", "exact", "dedup")}
    assert stats["clean"]["dropped"] == {"filter:exclude_regex": 1, "filter:min_words": 5}
    german = int((full_run / "german.txt").read_text())
    assert stats["exact"]["dropped"] == {"exact_dedup:duplicate": 4}
    # The funnel table row of every doc stage: in and kept as the stats say.
    text = " ".join(page.cells)
    for name, s in stats.items():
        assert re.search(rf"{name} \S+ documents complete {s['in']:,} {s['kept']:,} ", text), name
    assert "filter:exclude_regex" in html and "langid:language" in html
    # Languages: every label counted as labelled and as kept, as the lang stage's files say.
    kept = Counter(v for f in (full_run / "lang" / "shards").glob("*.parquet")
                   for v in pq.read_table(f).column("lang").to_pylist())
    labelled = kept + Counter(v for f in (full_run / "lang" / "rejected").glob("*.parquet")
                              for v in pq.read_table(f).column("lang").to_pylist())
    assert german - 1 <= labelled["de"] <= german and kept["de"] == 0
    assert sum(labelled.values()) == stats["lang"]["in"]
    for lang in labelled:
        assert f"{lang} {labelled[lang]:,} {kept[lang]:,}" in text, lang
    # Exact duplicates: four texts appear twice, so four groups of 2 among the kept documents.
    assert re.search(r"exact exact_dup_count \d+ 4 4 2", text)
    # Tokenizer and training numbers come from their files.
    report = json.loads((full_run / "bpe" / "tokenizer" / "train_report.json").read_text())
    assert f"{report['heldout']['bytes_per_token']:.3f}" in text
    log = read_train_log(full_run / "lm" / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 7))
    assert f"{log[-1]['loss']:.4f}" in text
    assert "Generated sample" in html


def test_plots_are_embedded_pngs_and_files(full_run):
    html, page = report_of(full_run)
    pngs = {p.stem: p.read_bytes() for p in (full_run / "report").glob("*.png")}
    assert set(pngs) == {"funnel", "drops", "lengths", "languages", "duplicates", "tokenizer", "training-lm"}
    assert len(page.images) == len(pngs)
    for img in page.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        data = base64.b64decode(img["src"][len(prefix):])
        assert data == pngs[img["id"].removeprefix("plot-")]
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    # Self-contained: nothing is fetched (no src/href to another resource).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)


def test_document_text_is_escaped(full_run):
    html, page = report_of(full_run)
    assert page.tags.count("script") == 1  # the report's own; none from the documents
    assert "<script>document.title" not in html and "<img src=x" not in html
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    assert "https://example.org/&lt;b&gt;x&lt;/b&gt;" in html
    assert "rejected by clean: filter:exclude_regex" in html


def test_partial_run_renders_what_it_has(tmp_path):
    write_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    pipeline.run({"name": "partial", "run_dir": str(run_dir), "stages": ingest_and_filter(tmp_path / "corpus")})
    path = build_report(run_dir, samples=2)
    html, page = report_of(run_dir)
    assert path == run_dir / "report" / "report.html"
    assert page.sections == ["funnel", "lengths", "samples"]
    kept = sum(pq.read_metadata(p).num_rows for p in (run_dir / "clean" / "shards").glob("*.parquet"))
    assert f"after (clean output) {kept:,} " in " ".join(page.cells)
    assert f"before filtering (into clean) {kept + 6:,} " in " ".join(page.cells)
    # Two kept documents, the one lorem-ipsum document, two of the five short ones.
    assert html.count('class="doc"') == 2 + 1 + 2


def test_trainer_output_folder_with_a_resumed_log(tmp_path):
    records = [{"step": s, "loss": 5.0 - s * 0.1, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 1000.0,
                "mfu": 0.3, "tokens": 512 * s} for s in range(1, 9)]
    resumed = [dict(r, loss=r["loss"] - 1.0) for r in records[4:]]  # killed at 8, resumed from 4
    lines = [json.dumps(r) for r in records + resumed] + ['{"step": 9, "lo']  # torn last line
    (tmp_path / "log.jsonl").write_text("\n".join(lines))
    build_report(tmp_path, trainer_log="log.jsonl")
    html, page = report_of(tmp_path)
    assert page.sections == ["training"]
    text = " ".join(page.cells)
    assert f"{records[-1]['loss'] - 1.0:.4f}" in text and " 8 " in f" {text} "
    assert "30.0%" in text  # median MFU


def test_cli_exit_codes_and_the_trainer_log_wired_in(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "nothing to report" in capsys.readouterr().err
    record = {"step": 1, "loss": 4.0, "lr": 1e-3, "tokens_per_s": 10.0, "tokens": 64}
    (tmp_path / "empty" / TRAINER_LOG).write_text(json.dumps(record) + "\n")
    assert main(["report", str(tmp_path / "empty")]) == 0
    assert "report.html" in capsys.readouterr().out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed "
                    "(`apt-get install -y chromium`; `make test` installs it where apt-get is available)")
def test_headless_chromium_renders_plots_and_tables(full_run, tmp_path):
    report = full_run / "report" / "report.html"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", report.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    images = Page((full_run / "report" / "report.html").read_text()).images
    # The page's load handler counts images that decoded: all of them.
    assert f'data-plots="{len(images)}/{len(images)}"' in dom, dom[:500]
    assert 'class="plot-error"' not in dom
    assert "<title>lmforge report: full</title>" in dom  # the document's script never ran
    assert dom.count("<table") >= 8
    assert "Uncaught" not in result.stderr
