"""BlobStores: local files (always) and S3 against a real S3-compatible server (``-m s3``)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest

from whisperop.core.errors import BlobNotFound
from whisperop.stores.local_blobs import LocalBlobStore
from whisperop.stores.s3_blobs import S3BlobStore

MiB = 1024 * 1024


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ── local ────────────────────────────────────────────────────────────────────


def test_local_put_get_local_path_delete(blobstore: LocalBlobStore) -> None:
    data = os.urandom(3 * MiB + 17)
    assert blobstore.put("audio/j1/source.wav", (data[i : i + MiB] for i in range(0, len(data), MiB))) == len(data)
    assert blobstore.exists("audio/j1/source.wav")
    assert b"".join(blobstore.get("audio/j1/source.wav", chunk_size=MiB // 2)) == data
    with blobstore.local_path("audio/j1/source.wav") as p:
        assert p.read_bytes() == data
    assert blobstore.url("audio/j1/source.wav").startswith("file://")
    blobstore.delete("audio/j1/source.wav")
    assert not blobstore.exists("audio/j1/source.wav")
    assert not (blobstore.root / "audio").exists(), "empty per-job folders are removed"
    blobstore.delete("audio/j1/source.wav")  # absent: no error
    with pytest.raises(BlobNotFound):
        blobstore.get("audio/j1/source.wav")


def test_local_writer_is_invisible_until_commit_and_abort_leaves_nothing(blobstore: LocalBlobStore) -> None:
    w = blobstore.writer("audio/j2/source")
    w.write(b"x" * 1000)
    assert not blobstore.exists("audio/j2/source"), "half an upload must not be visible"
    w.abort()
    w.abort()  # idempotent
    assert _files(blobstore.root) == []
    w = blobstore.writer("audio/j3/source")
    w.write(b"abc")
    assert w.commit() == 3
    assert _files(blobstore.root) == [blobstore.root / "audio" / "j3" / "source"]


def test_local_failed_put_leaves_nothing(blobstore: LocalBlobStore) -> None:
    def chunks():
        yield b"a" * 100
        raise OSError("client went away")

    with pytest.raises(OSError):
        blobstore.put("audio/j4/source", chunks())
    assert _files(blobstore.root) == []


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", ".incoming/x", "a//b"])
def test_local_refuses_keys_outside_the_root(blobstore: LocalBlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        blobstore.writer(key)


def test_local_clean_incoming_removes_leftovers_of_a_killed_process(blobstore: LocalBlobStore) -> None:
    blobstore.writer("audio/j5/source").write(b"partial")  # never committed nor aborted
    assert blobstore.clean_incoming() == 1
    assert _files(blobstore.root) == []


# ── S3 (real server from whisperop.testenv) ──────────────────────────────────


@pytest.fixture
def s3store(s3_env) -> S3BlobStore:  # type: ignore[no-untyped-def]
    store = S3BlobStore(s3_env.client(), s3_env.bucket, prefix=f"t-{uuid.uuid4().hex[:8]}/", part_size=5 * MiB)
    store.ensure_bucket()
    return store


@pytest.mark.s3
def test_s3_small_blob_single_put(s3store: S3BlobStore) -> None:
    assert s3store.put("audio/a/source.wav", [b"hello ", b"world"]) == 11
    assert s3store.exists("audio/a/source.wav")
    assert b"".join(s3store.get("audio/a/source.wav")) == b"hello world"
    r = httpx.get(s3store.url("audio/a/source.wav", expires_secs=60))
    assert r.status_code == 200 and r.content == b"hello world"
    s3store.delete("audio/a/source.wav")
    assert not s3store.exists("audio/a/source.wav")
    with pytest.raises(BlobNotFound):
        s3store.get("audio/a/source.wav")


@pytest.mark.s3
def test_s3_multipart_streaming_roundtrip(s3store: S3BlobStore) -> None:
    data = os.urandom(12 * MiB + 5)
    w = s3store.writer("audio/b/source.bin")
    for i in range(0, len(data), 256 * 1024):
        w.write(data[i : i + 256 * 1024])
    assert w.multipart, "12 MiB with 5 MiB parts must use a multipart upload"
    assert not s3store.exists("audio/b/source.bin"), "invisible until commit"
    assert w.commit() == len(data)
    got = bytearray()
    for chunk in s3store.get("audio/b/source.bin", chunk_size=MiB):
        assert len(chunk) <= MiB
        got += chunk
    assert bytes(got) == data
    with s3store.local_path("audio/b/source.bin") as p:
        assert p.stat().st_size == len(data)
    assert not p.exists(), "the temp copy is removed after use"
    assert s3store.list_multipart_uploads("audio/b/source.bin") == []


@pytest.mark.s3
def test_s3_abort_mid_multipart_leaves_no_upload_and_no_object(s3store: S3BlobStore) -> None:
    w = s3store.writer("audio/c/source.bin")
    w.write(os.urandom(11 * MiB))
    assert w.multipart and s3store.list_multipart_uploads("audio/c/source.bin") == [s3store.prefix + "audio/c/source.bin"]
    w.abort()
    assert s3store.list_multipart_uploads("audio/c/source.bin") == []
    assert not s3store.exists("audio/c/source.bin")

    def failing():
        yield os.urandom(6 * MiB)
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        s3store.put("audio/d/source.bin", failing())
    assert s3store.list_multipart_uploads("audio/d/source.bin") == []
    assert not s3store.exists("audio/d/source.bin")
