"""Deduplication: exact copies (`exact_dedup`: fingerprints -> duplicates -> filter) and
MinHash near-duplicates (`minhash_dedup`: signatures -> buckets -> clusters -> filter), each
a composite of phases joined by files on disk; the phases share the math in `minhash`."""
