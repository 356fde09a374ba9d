"""`coherence_filter`: drop word salad, documents whose adjacent words do not belong together.

    coherent:
      kind: coherence_filter
      inputs: [dedup]
      params: {min_pmi: 0.05}     # nats; the defaults are below

Every document gets a `coherence` column: the mean pointwise mutual information of its
adjacent words under the corpus's own word and word-pair counts (stages/filters/
coherence.py says how, and why word salad scores about 0 or below while natural text,
verse and dialogue included, scores 0.3-3). A document of at least `min_words` words
(default 50) scoring below `min_pmi` (default 0.05) goes to rejected/ as
`coherence:low_pmi`; shorter documents are scored and kept.

The counts come from a sample of the corpus, so no task holds the corpus: stage NAME
becomes three stages joined by files on disk (a composite, pipeline/stage.py):

    NAME.counts  coherence_counts  one task per sampled shard (at most `sample_shards`,
                                   default 64, spread evenly over the shards in corpus
                                   order): exact counts of the words and word pairs of its
                                   first documents, up to sample_words / shards words.
                                   Memory: one batch and the shard's table
    NAME.table   coherence_table   one task: the sum of those tables. Memory: the summed
                                   table, about 12 bytes per distinct word or pair, at most
                                   24 bytes per sampled word (`sample_words`, default 10M:
                                   at most 240 MB, about 60 MB on English text)
    NAME         coherence_keep    one task per shard, same shard names out: scores and
                                   keeps. Memory: one batch and the table

so `inputs: [NAME]` downstream reads the kept documents. The output does not depend on
the executor or the worker count (the sample is a function of the shards).
"""

from __future__ import annotations

from pydantic import Field

from pipeline.stage import CompositeStage, Params, Phase, phase_name


class CoherenceFilterParams(Params):
    min_pmi: float = 0.05
    min_words: int = Field(default=50, ge=2)
    sample_shards: int = Field(default=64, ge=1)
    sample_words: int = Field(default=10_000_000, ge=1)


class CoherenceFilter(CompositeStage):
    kind = "coherence_filter"
    Params = CoherenceFilterParams

    @classmethod
    def expand(cls, name: str, params: Params, inputs: list[str]) -> list[Phase]:
        if not inputs:
            raise ValueError("inputs: needs at least one doc stage to filter")
        counts, table = phase_name(name, "counts"), phase_name(name, "table")
        return [
            Phase(counts, "coherence_counts", tuple(inputs),
                  {"sample_shards": params.sample_shards, "sample_words": params.sample_words}),
            Phase(table, "coherence_table", (counts,)),
            Phase(name, "coherence_keep", (*inputs, table),
                  {"min_pmi": params.min_pmi, "min_words": params.min_words}),
        ]
