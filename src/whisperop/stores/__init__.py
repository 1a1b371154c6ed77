"""Adapters of the JobStore and BlobStore ports (local: SQLite + files; cluster: custom resources + S3)."""
