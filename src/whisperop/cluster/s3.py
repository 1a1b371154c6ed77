"""S3 settings of the cluster components (env ``WHISPEROP_S3_*``, the same names the
test environment's external mode uses) and helpers on ``s3://`` URIs.

Uploads go through the facade's :class:`whisperop.stores.s3_blobs.S3BlobStore`;
this module only adds what the worker and the operator need on top: a client
for any bucket named in a URI, download of an input to a local file, and
deletion of everything under a prefix (job clean-up)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from whisperop.core.crds import ResultDoc, split_s3_uri


class S3Settings(BaseSettings):
    """S3 of the cluster components: one pydantic-settings object (the ``WHISPEROP_S3_*`` names,
    with the AWS SDK's key variables as fallbacks)."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True, frozen=True)

    endpoint: str | None = Field(None, validation_alias="WHISPEROP_S3_ENDPOINT")
    access_key: str | None = Field(None, validation_alias=AliasChoices("WHISPEROP_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"))
    secret_key: str | None = Field(None, validation_alias=AliasChoices("WHISPEROP_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
                                   repr=False)
    region: str = Field("us-east-1", validation_alias="WHISPEROP_S3_REGION")
    bucket: str = Field("whisperop", validation_alias="WHISPEROP_S3_BUCKET")

    @cached_property
    def client(self) -> Any:
        from whisperop.stores.s3_blobs import make_client

        return make_client(self.endpoint, self.access_key, self.secret_key, self.region)

    def store(self, bucket: str | None = None) -> Any:
        from whisperop.stores.s3_blobs import S3BlobStore

        return S3BlobStore(self.client, bucket or self.bucket)

    def uri(self, key: str, bucket: str | None = None) -> str:
        return f"s3://{bucket or self.bucket}/{key}"

    def download(self, uri: str, dest: Path) -> Path:
        bucket, key = split_s3_uri(uri)
        self.client.download_file(bucket, key, str(dest))
        return dest

    def is_object(self, uri: str) -> bool:
        """Whether ``uri`` names one object (a GGML file) rather than a prefix (a directory)."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def download_prefix(self, uri: str, dest: Path) -> Path:
        """Every object under ``s3://bucket/prefix/`` into the directory ``dest`` (a CTranslate2 model
        directory: model.bin, config.json, tokenizer.json, ...); names keep their path below the prefix."""
        bucket, key = split_s3_uri(uri)
        prefix = key.rstrip("/") + "/"
        dest.mkdir(parents=True, exist_ok=True)
        n = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                if not rel or rel.endswith("/") or any(p in ("", ".", "..") for p in rel.split("/")):
                    continue  # folder markers and odd names: never outside dest
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(bucket, obj["Key"], str(target))
                n += 1
        if n == 0:
            raise FileNotFoundError(f"no objects under {uri}")
        return dest

    def delete_uri(self, uri: str) -> None:
        bucket, key = split_s3_uri(uri)
        self.client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, prefix: str, bucket: str | None = None) -> int:
        b = bucket or self.bucket
        n = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=b, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=b, Delete={"Objects": keys, "Quiet": True})
                n += len(keys)
        return n


def read_result(client: Any, uri: str) -> ResultDoc:
    """A Done job's ``transcript.json`` at ``uri`` (``status.result.json``), parsed; ``client`` is
    boto3's. The one reader of results, for the facade's GET and the operator's webhook."""
    bucket, key = split_s3_uri(uri)
    return ResultDoc.parse(json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
