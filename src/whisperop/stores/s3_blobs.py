"""BlobStore on S3 (or any S3-compatible server such as MinIO), with boto3.

Uploads of unknown length arrive as a stream, so the writer buffers one
part at a time (``part_size``, 8 MiB by default; S3's minimum is 5 MiB) and
turns into a multipart upload once the first part is full; small blobs go
up in a single ``put_object``. Memory stays at one part per upload however
large the file. Any failure (or ``abort``) aborts the multipart upload so
no invisible parts keep costing storage.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from whisperop.core.errors import BlobNotFound
from whisperop.core.ports import write_all

log = logging.getLogger("whisperop.stores.s3")

MIN_PART = 5 * 1024 * 1024


def make_client(endpoint_url: str | None, access_key: str | None, secret_key: str | None, region: str | None = None) -> Any:
    """A boto3 S3 client; path-style addressing so MinIO and friends work without DNS tricks."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region or "us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
    )


def _is_missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class S3BlobWriter:
    """Buffers one part; switches to a multipart upload when the first part is full."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int) -> None:
        self._s3 = client
        self._bucket = bucket
        self._key = key
        self._part_size = max(part_size, MIN_PART)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._size = 0
        self._closed = False

    def _flush_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._s3.create_multipart_upload(Bucket=self._bucket, Key=self._key)["UploadId"]
        number = len(self._parts) + 1
        data = bytes(self._buf[: self._part_size])
        del self._buf[: self._part_size]
        resp = self._s3.upload_part(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data)
        self._parts.append({"ETag": resp["ETag"], "PartNumber": number})

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("blob writer is closed")
        self._buf += data
        self._size += len(data)
        try:
            while len(self._buf) >= self._part_size:
                self._flush_part()
        except BaseException:
            self.abort()
            raise

    def commit(self) -> int:
        if self._closed:
            raise ValueError("blob writer is closed")
        try:
            if self._upload_id is None:
                self._s3.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buf))
            else:
                if self._buf:
                    self._flush_part()
                self._s3.complete_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
                )
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._buf = bytearray()
        return self._size

    def abort(self) -> None:
        self._closed = True
        self._buf = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=upload_id)
            except Exception:
                log.warning("could not abort multipart upload", extra={"key": self._key, "upload_id": upload_id}, exc_info=True)

    @property
    def multipart(self) -> bool:
        return bool(self._parts)


class S3BlobStore:
    """Blobs as objects ``<prefix><key>`` in one bucket."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", part_size: int = 8 * 1024 * 1024) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size

    @classmethod
    def connect(
        cls, endpoint_url: str | None, access_key: str | None, secret_key: str | None, bucket: str,
        region: str | None = None, prefix: str = "", part_size: int = 8 * 1024 * 1024,
    ) -> "S3BlobStore":
        return cls(make_client(endpoint_url, access_key, secret_key, region), bucket, prefix, part_size)

    def _k(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return self.prefix + key

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (test environments, first start)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception:
            self.client.create_bucket(Bucket=self.bucket)

    def writer(self, key: str) -> S3BlobWriter:
        return S3BlobWriter(self.client, self.bucket, self._k(key), self.part_size)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        return write_all(self.writer(key), chunks)

    def get(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as exc:
            if _is_missing(exc):
                raise BlobNotFound(f"blob {key} not found") from None
            raise
        body = resp["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

        return chunks()

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        suffix = Path(key).suffix
        fd, name = tempfile.mkstemp(prefix="blob-", suffix=suffix)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in self.get(key):
                    f.write(chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def url(self, key: str, expires_secs: int = 3600) -> str:
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._k(key)}, ExpiresIn=expires_secs
            )
        )

    def list_multipart_uploads(self, key: str | None = None) -> list[str]:
        """Keys with unfinished multipart uploads (tests check that aborts leave none).
        MinIO only lists uploads of an exact object name, so pass ``key`` to be portable."""
        prefix = self._k(key) if key is not None else self.prefix
        resp = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return [u["Key"] for u in resp.get("Uploads", [])]

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"
