"""`exact_dedup`: remove documents whose normalized text (optionally with URL) repeats.

Two documents are exact duplicates when they have the same normalized word sequence
(lowercase, punctuation and whitespace folded: the words MinHash sees, see
stages/dedup/minhash.py), and, with `include_url`, the same URL. The key is a 128-bit
fingerprint of that sequence. The first copy in corpus order is kept: inputs in config
order, shards in manifest order, rows in file order. Later copies go to rejected/ as
`exact_dedup:duplicate`. Columns: `exact_dup_of` (the kept twin's id on rejected copies,
null on kept documents) and `exact_dup_count` (copies of this text in the corpus, 1 when
unique).

A composite stage (pipeline/stage.py): when the config loads, stage NAME of this kind
becomes three stages joined by files on disk, each spread over workers:

    NAME.fingerprints  exact_fingerprints  one task per shard; fingerprints split by
                                           hash into `partitions` files
    NAME.duplicates    exact_duplicates    one task per partition: groups of copies,
                                           written split by source shard
    NAME               exact_filter        one task per shard: drops the listed copies

so `inputs: [NAME]` downstream reads the deduplicated documents, with the same shard
names as the inputs. Params: `include_url` (default false) and `partitions` (default 16:
a duplicates task holds docs / partitions fingerprints, about 160 bytes each with short
ids; the other phases hold one shard). The output does not depend on `partitions`, the
executor or the worker count.
"""

from __future__ import annotations

from pipeline.stage import CompositeStage, Params, Phase, params_for, phase_name
from stages.dedup.exact_fingerprints import ExactFingerprintsParams


class ExactDedupParams(ExactFingerprintsParams):
    pass


class ExactDedup(CompositeStage):
    kind = "exact_dedup"
    Params = ExactDedupParams

    @classmethod
    def expand(cls, name: str, params: Params, inputs: list[str]) -> list[Phase]:
        if not inputs:
            raise ValueError("inputs: needs at least one doc stage to deduplicate")
        fingerprints, duplicates = (phase_name(name, part) for part in ("fingerprints", "duplicates"))
        return [
            Phase(fingerprints, "exact_fingerprints", tuple(inputs),
                  params_for(ExactFingerprintsParams, params)),
            Phase(duplicates, "exact_duplicates", (fingerprints,)),
            Phase(name, "exact_filter", (*inputs, duplicates)),
        ]
