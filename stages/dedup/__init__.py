"""Deduplication: exact (`exact_dedup`) and MinHash near-duplicates, whose four phases
(signatures -> buckets -> clusters -> filter) share the math in `minhash`."""
