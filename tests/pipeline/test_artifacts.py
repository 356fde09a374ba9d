"""Doc shard writing: row groups stay small when documents are large."""

from __future__ import annotations

import pyarrow.parquet as pq

from pipeline.artifacts import MAX_BATCH_TEXT, DocShardWriter, read_doc_shard
from pipeline.documents import Document


def test_row_groups_are_cut_by_text_size(tmp_path):
    big = "x" * (4 << 20)  # 4 MiB each: 1024 of them in one row group would be 4 GiB
    writer = DocShardWriter(tmp_path, "s", lambda i: f"part-{i}.parquet", {})
    for i in range(20):
        writer.keep(Document(id=f"d{i}", text=big + str(i), url="", source="t", metadata={}))
    [kept, _] = writer.close()
    parquet = pq.ParquetFile(tmp_path / kept.path)
    per_group = MAX_BATCH_TEXT // len(big)
    assert parquet.metadata.num_row_groups == -(-20 // per_group)
    assert all(parquet.metadata.row_group(g).num_rows <= per_group
               for g in range(parquet.metadata.num_row_groups))
    assert [d.text[-2:] for d in read_doc_shard(tmp_path / kept.path)][-3:] == ["17", "18", "19"]
