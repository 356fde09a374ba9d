"""Stage kinds, grouped by family: ingest/, crawl/, filters/, dedup/, tokens/, training/.

Each kind is one class in one module of its family, with the family's helpers beside it;
a family imports pipeline/ and its own modules, never another family. `STAGE_KINDS` maps
config `kind:` names to classes; pipeline/cli.py hands `stage_class_for` to the config
loader (the engine itself never imports this package). Modules are imported only when a
config uses their kind, so a stage's optional dependencies (fastText, trafilatura, ...)
are needed only by runs that use it.
"""

from __future__ import annotations

import importlib

STAGE_KINDS: dict[str, str] = {
    "ingest": "stages.ingest.files:Ingest",
    "filter": "stages.filters.filter:Filter",
    "exact_dedup": "stages.dedup.exact_dedup:ExactDedup",  # composite of the three below
    "exact_fingerprints": "stages.dedup.exact_fingerprints:ExactFingerprints",
    "exact_duplicates": "stages.dedup.exact_duplicates:ExactDuplicates",
    "exact_filter": "stages.dedup.exact_filter:ExactFilter",
    "minhash_signatures": "stages.dedup.minhash_signatures:MinhashSignatures",
    "minhash_buckets": "stages.dedup.minhash_buckets:MinhashBuckets",
    "minhash_clusters": "stages.dedup.minhash_clusters:MinhashClusters",
    "minhash_filter": "stages.dedup.minhash_filter:MinhashFilter",
    "minhash_dedup": "stages.dedup.minhash_dedup:MinhashDedup",  # composite of the four above
    "crawl": "stages.crawl.crawl:Crawl",
    "ingest_warc": "stages.ingest.warc:IngestWarc",
    "extract": "stages.ingest.extract:Extract",
    "heuristic_filter": "stages.filters.heuristic_filter:HeuristicFilter",
    "langid": "stages.filters.langid:LangId",
    "train_quality_classifier": "stages.filters.train_quality_classifier:TrainQualityClassifier",
    "quality_filter": "stages.filters.quality_filter:QualityFilter",  # composite of the four below
    "quality_threshold": "stages.filters.quality_threshold:QualityThreshold",
    "quality_scores": "stages.filters.quality_scores:QualityScores",
    "quality_cut": "stages.filters.quality_cut:QualityCut",
    "quality_top": "stages.filters.quality_top:QualityTop",
    "pii": "stages.filters.pii:Pii",
    "decontaminate": "stages.filters.decontaminate:Decontaminate",
    "coherence_filter": "stages.filters.coherence_filter:CoherenceFilter",  # composite of the three below
    "coherence_counts": "stages.filters.coherence_counts:CoherenceCounts",
    "coherence_table": "stages.filters.coherence_table:CoherenceTable",
    "coherence_keep": "stages.filters.coherence_keep:CoherenceKeep",
    "train_tokenizer": "stages.tokens.train_tokenizer:TrainTokenizer",
    "tokenize": "stages.tokens.tokenize:Tokenize",
    "pretrain": "stages.training.pretrain:Pretrain",
    "sft": "stages.training.sft:SFT",
    "dpo": "stages.training.dpo:DPO",
}


def stage_class_for(kind: str) -> type:
    """The class behind a config `kind`; KeyError with the known kinds if there is none."""
    try:
        target = STAGE_KINDS[kind]
    except KeyError:
        raise KeyError(
            f"unknown stage kind {kind!r} (known: {', '.join(sorted(STAGE_KINDS))})"
        ) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)
