"""Tokens: train a byte-level BPE tokenizer on the corpus (`train_tokenizer`) and write
versioned token shards with it (`tokenize`)."""
