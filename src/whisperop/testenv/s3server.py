"""MinIO on loopback with one bucket.

Why: the BlobStore's cluster adapter speaks S3 (multipart uploads, ranged
reads); MinIO is an S3 server people run in production, so its behaviour, not
a mock's, is what the tests see. Credentials are random per start.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from . import binaries
from .ports import free_port
from .process import Component
from .rest import http_ok

DEFAULT_BUCKET = "whisperop-test"
REGION = "us-east-1"


@dataclass
class S3Server:
    """One MinIO process and the bucket it serves."""

    root: Path
    bucket: str = DEFAULT_BUCKET
    port: int = field(default_factory=free_port)
    console_port: int = field(default_factory=free_port)
    access_key: str = field(default_factory=lambda: "testenv-" + secrets.token_hex(4))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    component: Component | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, detach: bool = False, timeout: float = 60.0) -> Component:
        """Start MinIO on a fresh data dir, wait until live, create the bucket."""
        data = self.root / "minio-data"
        data.mkdir(parents=True, exist_ok=True)
        c = Component(
            "minio",
            [
                str(binaries.binary("minio")), "server", str(data),
                "--address", f"127.0.0.1:{self.port}",
                "--console-address", f"127.0.0.1:{self.console_port}",
                "--quiet", "--anonymous",
            ],
            self.root / "logs",
            env={
                "MINIO_ROOT_USER": self.access_key,
                "MINIO_ROOT_PASSWORD": self.secret_key,
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
                "MINIO_CI_CD": "1",
                "MINIO_REGION": REGION,
                "HOME": str(self.root),  # keeps MinIO's ~/.minio config out of the user's home
            },
        )
        self.component = c
        c.start(detach)
        c.wait_until(lambda: http_ok(f"{self.endpoint}/minio/health/ready"), timeout, "ready")
        create_bucket(self.endpoint, self.access_key, self.secret_key, self.bucket)
        return c


def create_bucket(endpoint: str, access_key: str, secret_key: str, bucket: str, region: str = REGION) -> None:
    """Create ``bucket`` if it does not exist (boto3, from the `cluster` extra)."""
    import boto3  # late: only needed when an S3 server is used
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=region,
    )
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)
