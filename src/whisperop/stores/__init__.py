"""Adapters of the JobQueue and BlobStore ports (local: SQLite + files; cluster: custom resources + S3)."""
