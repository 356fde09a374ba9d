"""pipeline/storage.py on local disk, memory:// and a real S3 server (moto, over HTTP)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from pipeline import storage


def roundtrip(root) -> None:
    final = root / "stage" / "shards" / "a.bin"
    tmp = storage.local_tmp_for(final)
    assert storage.TMP_MARK in tmp.name and tmp.parent.exists()
    tmp.write_bytes(b"x" * 1000)
    storage.commit(tmp, final)
    assert not tmp.exists()
    assert storage.read_text(str(final)) == "x" * 1000
    storage.write_bytes(root / "stage" / "manifest.json", b"{}")
    found = sorted(str(p) for p in storage.files_under(root / "stage"))
    assert found == [str(root / "stage" / "manifest.json"), str(final)]
    assert storage.sha256_file(str(final)) == hashlib.sha256(b"x" * 1000).hexdigest()
    storage.remove(final)
    assert [str(p) for p in storage.files_under(root / "stage")] == [str(root / "stage" / "manifest.json")]
    storage.remove_tree(root / "stage")
    assert storage.files_under(root / "stage") == []


def test_local_roundtrip(tmp_path):
    root = storage.run_location(str(tmp_path / "run"))
    assert isinstance(root, Path)
    roundtrip(root)


def test_file_url_is_local(tmp_path):
    assert storage.run_location(f"file://{tmp_path}") == tmp_path


def test_memory_roundtrip():
    roundtrip(storage.run_location("memory://lmforge-test/run"))


def test_s3_roundtrip_and_local_copy(s3_bucket, tmp_path):
    root = storage.run_location(f"{s3_bucket}/runs/x")
    assert not isinstance(root, Path)
    roundtrip(root)

    final = root / "t" / "shard.bin"
    storage.write_bytes(final, b"payload")
    sha = hashlib.sha256(b"payload").hexdigest()
    local = storage.local_copy(str(final), sha, cache=tmp_path / "cache")
    assert local.read_bytes() == b"payload"
    assert storage.local_copy(str(final), sha, cache=tmp_path / "cache") == local  # cached
    with pytest.raises(storage.StorageError, match="does not match"):
        storage.local_copy(str(final), "0" * 64, cache=tmp_path / "other")
    # The object was written over real HTTP: a fresh client (no shared cache) sees it.
    fresh = fsspec.filesystem("s3", skip_instance_cache=True)
    assert fresh.cat(final.path) == b"payload"


def test_unknown_protocol_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(storage.StorageError, match="unknown protocol 'nosuchfs://'"):
        storage.run_location("nosuchfs://bucket/run")
    assert list(tmp_path.iterdir()) == []


def test_missing_filesystem_names_the_extra(tmp_path):
    # A fresh interpreter where s3fs cannot be imported: s3:// must not become a folder.
    code = (
        "import sys; sys.modules['s3fs'] = None\n"
        "from pipeline import storage\n"
        "try:\n"
        "    storage.run_location('s3://bucket/runs/x')\n"
        "except storage.StorageError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert "pip install 'lmforge[s3]'" in out
    assert list(tmp_path.iterdir()) == []


def test_list_files_is_one_level(s3_bucket, tmp_path):
    for root in (storage.run_location(str(tmp_path / "r")),
                 storage.run_location(f"{s3_bucket}/r")):
        storage.write_bytes(root / "a.json", b"1")
        storage.write_bytes(root / "sub" / "b.json", b"2")
        assert [p.name for p in storage.list_files(root)] == ["a.json"]
        assert storage.list_files(root / "missing") == []
