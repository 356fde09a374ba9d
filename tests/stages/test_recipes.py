"""`lmforge init` (stages/recipes.py): the config it writes loads, runs unchanged on a small
corpus (JSONL, and a WARC written here), follows the demo's recipe, and is never written
over an existing one."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
import yaml

import pipeline
from pipeline.cli import load
from stages import recipes

REPO = Path(__file__).resolve().parents[2]
KJV = REPO / "demo" / "corpus" / "kjv-chapters.jsonl.gz"


def chapters(n: int) -> list[dict]:
    """The first `n` chapters of the demo corpus (English prose the filters keep)."""
    lines = gzip.decompress(KJV.read_bytes()).decode().splitlines()
    return [json.loads(line) for line in lines[:n]]


def demo_kinds() -> list[str]:
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    return [stage["kind"] for stage in demo["stages"].values()]


def kinds_of(path: Path) -> list[str]:
    return [stage["kind"] for stage in yaml.safe_load(path.read_text())["stages"].values()]


def test_jsonl_folder_init_runs_unchanged(tmp_path, monkeypatch, one_thread):
    data = tmp_path / "data" / "part"
    data.mkdir(parents=True)
    docs = chapters(60)
    (data / "a.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[:30]))
    (data.parent / "b.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(d) + "\n" for d in docs[30:]).encode()))
    (data / "notes.txt").write_text("not an input")
    monkeypatch.chdir(tmp_path)

    path = recipes.write_config("project", "jsonl:data")

    assert path == Path("project/lmforge.yaml")
    assert kinds_of(path) == ["ingest"] + demo_kinds()[3:]  # crawl, ingest_warc, extract: no
    text = path.read_text()
    assert "# " in text and "vocab_size: 2048" in text  # commented; the demo's model sizes
    ingest = yaml.safe_load(text)["stages"]["ingest"]["params"]
    root = (tmp_path / "data").as_posix()
    assert ingest["paths"] == [f"{root}/**/*.jsonl", f"{root}/**/*.jsonl.gz"]
    config = load(path)
    assert str(config.run_dir) == str(tmp_path / "project" / "run")

    monkeypatch.chdir(tmp_path / "data")  # absolute paths: any working directory will do
    outcomes = {o.name: o for o in pipeline.run(tmp_path / "project" / "lmforge.yaml")}
    assert outcomes["ingest"].counts.kept == 60
    assert 0 < outcomes["dedup"].counts.kept <= 60
    assert (tmp_path / "project" / "run" / "pretrain" / "sample.txt").read_text().startswith("The")
    with pytest.raises(recipes.InitError, match="already exists"):
        recipes.write_config(tmp_path / "project", "jsonl:elsewhere.jsonl")
    assert (tmp_path / path).read_text() == text


def write_warc(path: Path, docs: list[dict]) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for i, doc in enumerate(docs):
            paragraphs = "".join(f"<p>{p}</p>" for p in doc["text"].split("\n") if p.strip())
            html = (f"<html><head><title>Chapter {i}</title></head><body><nav>Home | About</nav>"
                    f"<article><h1>Chapter {i}</h1>{paragraphs}</article></body></html>").encode()
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")],
                                       protocol="HTTP/1.1")
            record = writer.create_warc_record(f"https://example.org/ch{i}", "response",
                                               payload=io.BytesIO(html), http_headers=headers)
            writer.write_record(record)


def test_warc_glob_init_runs_unchanged(tmp_path, one_thread):
    write_warc(tmp_path / "pages-0.warc.gz", chapters(40))

    path = recipes.write_config(tmp_path / "proj", f"warc:{tmp_path}/*.warc.gz", name="web")

    assert kinds_of(path) == demo_kinds()[1:]  # the demo's recipe without the crawl
    config = load(path)
    assert config.name == "web"
    outcomes = {o.name: o for o in pipeline.run(path)}
    assert outcomes["pages"].counts.kept == 40
    assert outcomes["text"].counts.kept == 40
    assert outcomes["dedup"].counts.kept > 0
    assert (tmp_path / "proj" / "run" / "pretrain" / "model" / "model.safetensors").exists()


def test_crawl_init_is_the_demo_recipe_and_needs_a_contact(tmp_path):
    with pytest.raises(recipes.InitError, match="--contact-url"):
        recipes.write_config(tmp_path / "c", "crawl:https://example.org/")
    assert not (tmp_path / "c" / "lmforge.yaml").exists()

    path = recipes.write_config(tmp_path / "c", "crawl:https://example.org/",
                                contact_url="https://example.org/bot")
    assert kinds_of(path) == demo_kinds()
    crawl = load(path).stages["crawl"].params
    assert crawl.seeds == ["https://example.org/"] and not crawl.allow_private

    local = recipes.write_config(tmp_path / "d", "crawl:http://127.0.0.1:8765/",
                                 contact_url="https://example.org/bot")
    assert load(local).stages["crawl"].params.allow_private  # the SSRF guard would refuse it


def test_crawl_init_runs_unchanged_on_a_served_site(tmp_path):
    """The written crawl config, run as written (polite default delay) up to its extracted
    text, against three pages served on loopback (the seed's host sets allow_private)."""
    from demo.site import serve

    site = tmp_path / "site"
    site.mkdir()
    for i, chapter in enumerate(chapters(3)):
        links = "".join(f'<a href="/p{j}.html">chapter {j}</a> ' for j in range(3) if j != i)
        (site / f"p{i}.html").write_text(
            f"<html><head><title>Chapter {i}</title></head><body><nav>{links}</nav>"
            f"<article><p>{chapter['text']}</p></article></body></html>")
    (site / "index.html").write_text('<html><body><a href="/p0.html">start</a></body></html>')
    (site / "_headers.json").write_text("{}")  # what demo.site.serve reads beside the pages
    (site / "_redirects.json").write_text("{}")
    server = serve(site, 0)
    seed = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        path = recipes.write_config(tmp_path / "c", f"crawl:{seed}",
                                    contact_url="https://example.org/bot")
        outcomes = {o.name: o for o in pipeline.run(path, until="text")}
    finally:
        server.shutdown()
        server.server_close()
    assert outcomes["crawl"].counts.kept == 4  # index and the three chapters
    assert outcomes["text"].counts.kept >= 3


def test_parquet_init_runs_unchanged(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = chapters(40)
    pq.write_table(pa.table({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs]}),
                   tmp_path / "corpus.parquet")
    path = recipes.write_config(tmp_path / "p", f"parquet:{tmp_path / 'corpus.parquet'}")
    outcomes = {o.name: o for o in pipeline.run(path, until="tokens")}
    assert outcomes["ingest"].counts.kept == 40
    assert 0 < outcomes["tokens"].counts.kept <= 40


def test_a_budget_writes_the_plans_model(tmp_path):
    from model.plan import plan

    data = tmp_path / "d.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a document"]}), data)
    path = recipes.write_config(tmp_path / "p", f"parquet:{data}", gpu_hours=4, gpu="a100")

    expected = plan(4, "a100")
    config = load(path)
    assert config.stages["ingest"].params.format == "parquet"
    pretrain = config.stages["pretrain"].params
    assert pretrain.model["dim"] == expected["model"]["dim"]
    assert pretrain.model["n_layers"] == expected["model"]["n_layers"]
    assert pretrain.train["max_steps"] == expected["steps"]
    assert pretrain.train["lr"] == expected["lr"]
    assert pretrain.data["seq_len"] == expected["seq_len"]
    assert config.stages["tokenizer"].params.vocab_size == expected["model"]["vocab_size"]
    assert f"{expected['tokens']:,} tokens" in path.read_text()


@pytest.mark.parametrize("source, message", [
    ("csv:data.csv", "give one of"),
    ("jsonl:", "give one of"),
    ("jsonl:nothing/*.jsonl", "no file matches"),
    ("crawl:ftp://example.org/", "http"),
])
def test_bad_sources_are_bad_input(tmp_path, monkeypatch, source, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(recipes.InitError, match=message):
        recipes.write_config("x", source, contact_url="https://example.org/bot")
    (tmp_path / "empty").mkdir()
    with pytest.raises(recipes.InitError, match="no .warc"):
        recipes.write_config("y", "warc:empty")


def test_init_command(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    recipes.register(parser.add_subparsers())
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    args = parser.parse_args(["init", str(tmp_path / "p"), "--from", f"jsonl:{tmp_path}/in.jsonl"])
    assert args.func(args) == 0
    assert f"lmforge run {tmp_path / 'p' / 'lmforge.yaml'}" in capsys.readouterr().out
