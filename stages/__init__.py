"""Stage kinds: one module and one class each. Config `kind:` names map to them here.

Modules are imported only when a config uses their kind, so a stage's optional
dependencies (fastText, trafilatura, ...) are needed only by runs that use it.
"""

from __future__ import annotations

import importlib

STAGE_KINDS: dict[str, str] = {
    "ingest": "stages.ingest:Ingest",
    "filter": "stages.filter:Filter",
    "exact_dedup": "stages.exact_dedup:ExactDedup",
    "minhash_signatures": "stages.minhash_signatures:MinhashSignatures",
    "minhash_buckets": "stages.minhash_buckets:MinhashBuckets",
    "minhash_clusters": "stages.minhash_clusters:MinhashClusters",
    "minhash_filter": "stages.minhash_filter:MinhashFilter",
    "crawl": "stages.crawl:Crawl",
    "ingest_warc": "stages.ingest_warc:IngestWarc",
    "extract": "stages.extract:Extract",
    "heuristic_filter": "stages.heuristic_filter:HeuristicFilter",
    "langid": "stages.langid:LangId",
    "train_quality_classifier": "stages.train_quality_classifier:TrainQualityClassifier",
    "quality_filter": "stages.quality_filter:QualityFilter",
    "pii": "stages.pii:Pii",
    "train_tokenizer": "stages.train_tokenizer:TrainTokenizer",
    "tokenize": "stages.tokenize:Tokenize",
    "pretrain": "stages.pretrain:Pretrain",
    "sft": "stages.sft:SFT",
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
