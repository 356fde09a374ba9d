"""Document filters: the generic `filter`, heuristic rule sets, language ID, the fastText
quality classifier and its trainer, PII masking, and the text utilities they share
(`text`: word splitting, n-gram statistics, fastText loading). Word lists ship in `data/`."""
