"""Format readers behind `curation.io.read_documents`: JSONL lines and Parquet batches.

Each reader turns one input file into (documents, ledger) chunks through a
`ChunkBuilder`, so both formats name ids, reasons and positions the same way.
"""
