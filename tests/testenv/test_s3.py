"""The S3 server behaves as the BlobStore needs: multipart upload of a large
object, ranged reads, read-after-write on overwrite, delete."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from botocore.exceptions import ClientError

from whisperop.testenv import S3Env

pytestmark = pytest.mark.s3

MiB = 1024 * 1024


def test_multipart_50mb_ranged_get_delete(s3_env: S3Env) -> None:
    s3 = s3_env.client()
    key = f"smoke/{uuid.uuid4().hex}/audio.bin"
    part_size, parts_n = 10 * MiB, 5
    data = os.urandom(part_size * parts_n)  # 50 MiB

    up = s3.create_multipart_upload(Bucket=s3_env.bucket, Key=key, ContentType="application/octet-stream")
    parts = []
    for i in range(parts_n):
        chunk = data[i * part_size:(i + 1) * part_size]
        r = s3.upload_part(Bucket=s3_env.bucket, Key=key, UploadId=up["UploadId"], PartNumber=i + 1, Body=chunk)
        parts.append({"PartNumber": i + 1, "ETag": r["ETag"]})
    done = s3.complete_multipart_upload(
        Bucket=s3_env.bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert done["ETag"].strip('"').endswith(f"-{parts_n}")  # a multipart ETag, not a plain MD5

    head = s3.head_object(Bucket=s3_env.bucket, Key=key)
    assert head["ContentLength"] == len(data)

    # Ranged reads, inside one part and across a part boundary.
    for start, end in ((1000, 1999), (part_size - 10, part_size + 9), (len(data) - 5, len(data) - 1)):
        r = s3.get_object(Bucket=s3_env.bucket, Key=key, Range=f"bytes={start}-{end}")
        assert r["ContentRange"] == f"bytes {start}-{end}/{len(data)}"
        assert r["Body"].read() == data[start:end + 1]

    body = s3.get_object(Bucket=s3_env.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()

    s3.delete_object(Bucket=s3_env.bucket, Key=key)
    with pytest.raises(ClientError) as gone:
        s3.get_object(Bucket=s3_env.bucket, Key=key)
    assert gone.value.response["Error"]["Code"] in ("NoSuchKey", "404")


def test_read_after_write_and_overwrite(s3_env: S3Env) -> None:
    s3 = s3_env.client()
    key = f"smoke/{uuid.uuid4().hex}/transcript.json"
    for version in range(3):
        payload = f'{{"version": {version}}}'.encode()
        s3.put_object(Bucket=s3_env.bucket, Key=key, Body=payload, ContentType="application/json")
        assert s3.get_object(Bucket=s3_env.bucket, Key=key)["Body"].read() == payload
    listed = s3.list_objects_v2(Bucket=s3_env.bucket, Prefix=key)
    assert [o["Key"] for o in listed.get("Contents", [])] == [key]
    s3.delete_object(Bucket=s3_env.bucket, Key=key)
    assert s3.list_objects_v2(Bucket=s3_env.bucket, Prefix=key).get("KeyCount") == 0
