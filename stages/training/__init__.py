"""Training adapters: thin DAG stages (`pretrain`, `sft`) that call model/ on the shards
and tokenizer upstream stages produced."""
