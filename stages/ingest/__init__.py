"""Source stages: documents from files (`ingest`), records from WARC files (`ingest_warc`),
and main-text extraction from the HTML they carry (`extract`)."""
