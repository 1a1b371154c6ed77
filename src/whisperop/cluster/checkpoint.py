"""Cluster mode's chunk checkpoints: S3 objects beside the job's results.

``results/<ns>/<job>/checkpoint/<uid>/plan.json`` holds the chunk plan and
``chunk-NNNNN.json`` one finished chunk each (a small object per chunk: a
3-hour job's 180 chunks cost 180 small PUTs, not 180 rewrites of a growing
document, and no status field grows with the transcript). Keyed by the job's
uid, so a job re-created under the same name never resumes a stranger's
work. The worker writes a chunk's object *before* the progress status write,
so every chunk a status shows as done is in S3; the worker that takes over a
requeued job decodes only the rest (see :mod:`whisperop.core.checkpoints`).
The worker deletes the folder when the job is terminal; the operator's GC
deletes the whole results prefix with the job.
"""

from __future__ import annotations

import json
from typing import Any

from whisperop.core import crds
from whisperop.core.checkpoints import ChunkRecord
from whisperop.core.models import DegradedChunk, Segment


def checkpoint_prefix(job: crds.TranscriptionJob) -> str:
    return f"{crds.results_prefix(job.namespace, job.name)}checkpoint/{job.metadata['uid']}/"


class S3Checkpoint:
    """One job's :class:`whisperop.core.checkpoints.Checkpoint` in S3 (``client`` is boto3's)."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def _put(self, name: str, doc: Any) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=json.dumps(doc).encode("utf-8"),
                               ContentType="application/json")

    def _get(self, key: str) -> Any:
        return json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def _keys(self) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def plan(self) -> list[tuple[int, int]] | None:
        if self.prefix + "plan.json" not in self._keys():
            return None
        return [(int(a), int(b)) for a, b in self._get(self.prefix + "plan.json")["chunks"]]

    def save_plan(self, plan: list[tuple[int, int]]) -> None:
        self.clear()
        self._put("plan.json", {"chunks": [list(p) for p in plan]})

    def done(self) -> dict[int, ChunkRecord]:
        out: dict[int, ChunkRecord] = {}
        for key in self._keys():
            if key.rsplit("/", 1)[-1].startswith("chunk-"):
                d = self._get(key)
                out[int(d["index"])] = ChunkRecord(
                    int(d["index"]), [Segment.model_validate(s) for s in d["segments"]], d.get("language"),
                    DegradedChunk.model_validate(d["degraded"]) if d.get("degraded") else None)
        return out

    def save(self, record: ChunkRecord) -> None:
        self._put(f"chunk-{record.index:05d}.json", {
            "index": record.index, "language": record.language,
            "segments": [s.model_dump(mode="json") for s in record.segments],
            "degraded": record.degraded.model_dump(mode="json") if record.degraded is not None else None,
        })

    def clear(self) -> None:
        keys = self._keys()
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                                   "Quiet": True})
