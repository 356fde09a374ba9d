"""`minhash_dedup`: MinHash-LSH near-duplicate removal as one stage kind, one params block.

A composite stage (pipeline/stage.py): when the config loads, stage NAME of this kind
becomes four stages joined by files on disk, each resumable and shown in `lmforge status`:

    NAME.signatures  minhash_signatures  inputs: [the doc stage]
    NAME.buckets     minhash_buckets     inputs: [NAME.signatures]
    NAME.clusters    minhash_clusters    inputs: [NAME.buckets]
    NAME             minhash_filter      inputs: [the doc stage, NAME.clusters]

so `inputs: [NAME]` downstream reads the deduplicated documents. Its params are the
phases' params in one block, same keys and defaults (`threshold`, `num_perm`, `ngram`,
`partitions`, `verify`, ...; see minhash_signatures and minhash_buckets); each phase
gets the keys it declares, so its cache key is the one the same phase written by hand
would have. The four phase kinds stay usable alone.

Memory: each phase states its own bound (signatures: one shard's signatures; buckets:
one band partition; clusters: the documents that have a near-duplicate, not the pairs;
filter: one shard and its cluster rows).
"""

from __future__ import annotations

from pipeline.stage import CompositeStage, Params, Phase, params_for, phase_name
from stages.dedup.minhash_buckets import MinhashBucketsParams
from stages.dedup.minhash_clusters import MinhashClustersParams
from stages.dedup.minhash_filter import MinhashFilterParams
from stages.dedup.minhash_signatures import MinhashSignaturesParams


class MinhashDedup(CompositeStage):
    kind = "minhash_dedup"

    class Params(MinhashSignaturesParams, MinhashBucketsParams, MinhashClustersParams,
                 MinhashFilterParams):
        """Every phase's keys in one block, with the phases' defaults and checks."""

    @classmethod
    def expand(cls, name: str, params: Params, inputs: list[str]) -> list[Phase]:
        signatures, buckets, clusters = (phase_name(name, part)
                                         for part in ("signatures", "buckets", "clusters"))
        if len(inputs) != 1:
            raise ValueError(f"inputs: needs exactly one doc stage to deduplicate; got {inputs}")
        return [
            Phase(signatures, "minhash_signatures", (inputs[0],),
                  params_for(MinhashSignaturesParams, params)),
            Phase(buckets, "minhash_buckets", (signatures,), params_for(MinhashBucketsParams, params)),
            Phase(clusters, "minhash_clusters", (buckets,), params_for(MinhashClustersParams, params)),
            Phase(name, "minhash_filter", (inputs[0], clusters), params_for(MinhashFilterParams, params)),
        ]
