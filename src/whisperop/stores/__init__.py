"""Local and object storage: the SQLite JobQueue and its WorkQueue (``whisperop serve``),
and the BlobStores (local files, S3). Everything that talks to the Kubernetes API server
lives in :mod:`whisperop.cluster`."""
