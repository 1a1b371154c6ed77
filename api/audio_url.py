"""``audio_url``: audio given by URL instead of uploaded (``POST /jobs``).

- ``http(s)://`` (both modes): checked by the outbound URL guard
  (:mod:`whisperop.core.urlguard`: every resolved address must be public
  unless listed in ``WHISPEROP_OUTBOUND_ALLOW``; checked again at connect
  time, for every redirect hop too), then streamed in 1 MiB pieces into the
  BlobStore exactly like an upload (a file locally, a multipart upload to S3
  in a cluster) — never held in memory. Refused with a 400 that says why:
  unreachable, an HTTP error status, a text/HTML/JSON Content-Type, more than
  ``AUDIO_URL_MAX_BYTES`` (declared or counted), empty, not decodable audio
  or longer than ``MAX_AUDIO_SECS`` (both from the container header, read
  once the blob is stored: locally the file itself, in a cluster one read
  back from S3).
- ``s3://bucket/key`` (cluster mode only): not copied; the job points at the
  object (``spec.audio``) and the worker reads it. The bucket must be listed
  in ``AUDIO_URL_S3_BUCKETS`` (none by default: the facade's credentials may
  reach objects its REST users must not), the object must exist and fit
  ``AUDIO_URL_MAX_BYTES``. It stays the user's: never deleted with the job.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from whisperop.api.deps import Services
from whisperop.api.errors import ApiError
from whisperop.core.errors import UnsafeURLError
from whisperop.core.urlguard import AllowList, aresolve_url, guarded_async_client, redact

log = logging.getLogger("whisperop.api.audio_url")

PIECE = 1 << 20
MAX_REDIRECTS = 5
_NOT_AUDIO_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml", "application/javascript")


@dataclass(frozen=True)
class FetchedAudio:
    key: str  # a blob key of ours, or the user's s3:// URI (external)
    filename: str | None
    size: int
    external: bool


def filename_of(url: str) -> str | None:
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name or None


async def fetch(url: str, svc: Services, key_for: Any) -> FetchedAudio:
    """Fetch or point at ``url``; ``key_for(filename)`` names the blob. Raises :class:`ApiError` (400)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "s3":
        return await _s3(url, svc)
    if scheme not in ("http", "https"):
        raise ApiError(400, "audio_url must be an http(s) URL" + (" or s3:// URI" if _bucket(svc) else ""))
    allow = AllowList.parse(svc.settings.outbound_allow)  # the one setting, as webhooks use it
    try:
        await aresolve_url(url, allow=allow, what="audio_url")
    except UnsafeURLError as exc:
        raise ApiError(400, str(exc)) from None
    name = filename_of(url)
    key = key_for(name)
    size = await _download(url, svc, key, allow)
    try:
        await asyncio.to_thread(_probe, svc, key)
    except BaseException:
        await asyncio.to_thread(svc.blobs.delete, key)
        raise
    log.info("audio fetched from url", extra={"url": redact(url), "bytes": size})
    return FetchedAudio(key, name, size, external=False)


async def _download(url: str, svc: Services, key: str, allow: AllowList) -> int:
    limit = svc.settings.audio_url_max_bytes
    writer = svc.blobs.writer(key)
    n = 0
    try:
        timeout = httpx.Timeout(svc.settings.audio_url_timeout_secs, connect=min(10.0, svc.settings.audio_url_timeout_secs))
        async with guarded_async_client(allow, timeout=timeout, follow_redirects=True,
                                        max_redirects=MAX_REDIRECTS) as client:
            async with client.stream("GET", url) as r:
                _check_response(r, limit)
                async for piece in r.aiter_bytes(PIECE):
                    n += len(piece)
                    if n > limit:
                        raise ApiError(400, f"audio_url is larger than AUDIO_URL_MAX_BYTES ({limit} bytes)")
                    await asyncio.to_thread(writer.write, piece)
        if n == 0:
            raise ApiError(400, "audio_url returned no data")
        await asyncio.to_thread(writer.commit)
        return n
    except ApiError:
        writer.abort()
        raise
    except (httpx.HTTPError, UnsafeURLError) as exc:
        writer.abort()
        unsafe = _unsafe_cause(exc)
        if unsafe is not None:
            raise ApiError(400, f"audio_url refused: {unsafe}") from None
        raise ApiError(400, f"audio_url unreachable: {type(exc).__name__}: {exc}") from None
    except BaseException:
        writer.abort()
        raise


def _unsafe_cause(exc: BaseException) -> UnsafeURLError | None:
    """The guard's refusal behind an httpx error (the connect-time check raises inside httpcore)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, UnsafeURLError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _check_response(r: httpx.Response, limit: int) -> None:
    if r.status_code >= 400:
        raise ApiError(400, f"audio_url answered HTTP {r.status_code}")
    ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith(_NOT_AUDIO_TYPES):
        raise ApiError(400, f"audio_url is not audio (Content-Type {ctype})")
    declared = r.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(400, f"audio_url is {declared} bytes, larger than AUDIO_URL_MAX_BYTES ({limit} bytes)")


def _probe(svc: Services, key: str) -> None:
    """The container header: an audio stream, and a declared duration within MAX_AUDIO_SECS."""
    import av

    max_secs = svc.settings.max_audio_secs
    with svc.blobs.local_path(key) as path:
        try:
            container = av.open(str(path), mode="r", metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
            raise ApiError(400, "audio_url is not a readable audio file") from None
        with container:
            streams = list(container.streams.audio)
            if not streams:
                raise ApiError(400, "audio_url has no audio stream")
            s = streams[0]
            declared = (float(s.duration * s.time_base) if s.duration is not None and s.time_base is not None
                        else container.duration / 1_000_000 if container.duration is not None else None)
    if declared is not None and declared > max_secs:
        raise ApiError(400, f"audio_url is {declared:.0f} s long, more than MAX_AUDIO_SECS ({max_secs:.0f} s)")


def _bucket(svc: Services) -> str | None:
    return getattr(svc.blobs, "bucket", None)  # S3BlobStore: cluster mode


def allowed_buckets(svc: Services) -> set[str]:
    return {b.strip() for b in svc.settings.audio_url_s3_buckets.replace(" ", ",").split(",") if b.strip()}


async def _s3(url: str, svc: Services) -> FetchedAudio:
    if _bucket(svc) is None:
        raise ApiError(400, "an s3:// audio_url needs cluster mode; give an http(s) URL or upload the file")
    from whisperop.core.crds import split_s3_uri

    try:
        bucket, key = split_s3_uri(url)
    except ValueError as exc:
        raise ApiError(400, f"audio_url: {exc}") from None
    if bucket not in allowed_buckets(svc):
        raise ApiError(400, f"audio_url bucket {bucket!r} is not listed in AUDIO_URL_S3_BUCKETS")
    client = getattr(svc.blobs, "client")
    try:
        head = await asyncio.to_thread(client.head_object, Bucket=bucket, Key=key)
    except Exception as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""
        raise ApiError(400, f"audio_url {url} cannot be read ({code or type(exc).__name__})") from None
    size = int(head.get("ContentLength") or 0)
    if size == 0:
        raise ApiError(400, "audio_url object is empty")
    if size > svc.settings.audio_url_max_bytes:
        raise ApiError(400, f"audio_url is {size} bytes, larger than AUDIO_URL_MAX_BYTES "
                            f"({svc.settings.audio_url_max_bytes} bytes)")
    return FetchedAudio(url, filename_of(url), size, external=True)
