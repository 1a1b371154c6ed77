"""Streaming ``multipart/form-data`` reader for ``POST /jobs``.

The contract has no size limit on ``audio``, so the body is never held in
memory: ``request.stream()`` is pushed through python-multipart's callback
parser, the ``audio`` part's bytes go to a :class:`BlobWriter` in ~1 MiB
writes (off the event loop), and the small text fields are collected with
a size cap. Flow control does the rest: while a write is pending the server
stops reading the socket, so RSS stays flat however large the upload.

On any failure — malformed body, client gone mid-upload, storage error —
the writer is aborted, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from whisperop.api.auth import principal
from whisperop.core.ports import BlobWriter

if TYPE_CHECKING:
    from whisperop.api.deps import Services

log = logging.getLogger("whisperop.api.upload")

AUDIO_FIELD = "audio"
TEXT_FIELDS = frozenset({"language", "task", "webhook_url", "priority", "audio_url", "time_limit_secs",
                         "chunk_time_limit_factor"})
MAX_FIELD_BYTES = 64 * 1024
FLUSH_BYTES = 1 << 20


class MultipartError(Exception):
    """The body is not usable multipart (answered ``400 multipart error: …``)."""


class UploadStalled(Exception):
    """No body bytes for ``idle_timeout`` seconds (answered 408): a client that opens an
    upload and goes quiet must not hold a socket, a file descriptor and a temp blob forever."""


class UploadSlots:
    """Caps on uploads being received at once: ``limit`` in all (``MAX_CONCURRENT_UPLOADS``)
    and ``per_key`` per principal (``MAX_UPLOADS_PER_TOKEN``); 0 = no cap.

    Used only from the event loop, so plain counters are enough."""

    def __init__(self, limit: int, per_key: int = 0) -> None:
        self.limit = limit
        self.per_key = per_key
        self.active = 0
        self._by_key: dict[str, int] = {}

    def try_acquire(self, key: str | None = None) -> str | None:
        """None when a slot was taken, else which cap is full."""
        if self.limit and self.active >= self.limit:
            return f"too many uploads in progress (MAX_CONCURRENT_UPLOADS={self.limit})"
        if key is not None and self.per_key and self._by_key.get(key, 0) >= self.per_key:
            return f"too many uploads in progress for this token (MAX_UPLOADS_PER_TOKEN={self.per_key})"
        self.active += 1
        if key is not None:
            self._by_key[key] = self._by_key.get(key, 0) + 1
        return None

    def release(self, key: str | None = None) -> None:
        self.active -= 1
        if key is not None:
            left = self._by_key.get(key, 1) - 1
            if left > 0:
                self._by_key[key] = left
            else:
                self._by_key.pop(key, None)


@dataclass
class Upload:
    """What came in: the text fields we know, and the audio part (still uncommitted)."""

    fields: dict[str, str] = field(default_factory=dict)
    multi: dict[str, list[str]] = field(default_factory=dict)  # every value of a repeated field, in order
    audio_seen: bool = False
    filename: str | None = None
    audio_bytes: int = 0
    writer: BlobWriter | None = None

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _basename(name: str) -> str:
    """Browsers on Windows once sent full paths; keep the file name only."""
    return name.replace("\\", "/").rsplit("/", 1)[-1]


class _Collector:
    """python-multipart callbacks → :class:`Upload` (all synchronous, in-memory only)."""

    def __init__(self, upload: Upload, open_writer: Callable[[str | None], BlobWriter],
                 audio_field: str = AUDIO_FIELD, text_fields: frozenset[str] = TEXT_FIELDS) -> None:
        self.upload = upload
        self.audio_field = audio_field
        self.text_fields = text_fields
        self.open_writer = open_writer
        self.pending = bytearray()  # audio bytes not yet handed to the writer
        self.ended = False
        self._headers: dict[str, bytes] = {}
        self._hname = b""
        self._hvalue = b""
        self._target: str | None = None  # "audio", a text field name, or None (ignored part)
        self._text = bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._target = None
        self._text = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._hname.decode("latin-1").strip().lower()] = self._hvalue
        self._hname, self._hvalue = b"", b""

    def on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            return
        name = params[b"name"].decode("utf-8", "replace")
        if name == self.audio_field and not self.upload.audio_seen:
            self.upload.audio_seen = True
            raw = params.get(b"filename")
            self.upload.filename = _basename(raw.decode("utf-8", "replace")) if raw else None
            self.upload.writer = self.open_writer(self.upload.filename)
            self._target = AUDIO_FIELD
        elif name in self.text_fields:
            self._target = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target == AUDIO_FIELD:
            self.pending += data[start:end]
        elif self._target is not None:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise MultipartError(f"field '{self._target}' is larger than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._target is not None and self._target != AUDIO_FIELD:
            try:
                value = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise MultipartError(f"field '{self._target}' is not UTF-8") from None
            self.upload.fields[self._target] = value
            self.upload.multi.setdefault(self._target, []).append(value)
        self._target = None

    def on_end(self) -> None:
        self.ended = True


async def _chunks(request: Request, idle_timeout: float | None) -> AsyncIterator[bytes]:
    """``request.stream()``, failing with :class:`UploadStalled` when a read waits longer than ``idle_timeout``."""
    it = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle_timeout):  # no task per chunk, unlike wait_for
                chunk = await it.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadStalled(f"upload stalled: no data for {idle_timeout:g} s") from None
        yield chunk


async def receive_upload(
    request: Request,
    open_writer: Callable[[str | None], BlobWriter],
    on_bytes: Callable[[int], None] | None = None,
    audio_field: str = AUDIO_FIELD,
    text_fields: frozenset[str] = TEXT_FIELDS,
    idle_timeout: float | None = None,
) -> Upload:
    """Read the whole multipart body, streaming ``audio`` into a writer from ``open_writer(filename)``.

    Raises :class:`MultipartError` for a malformed body and :class:`UploadStalled` when the
    client sends nothing for ``idle_timeout`` seconds; lets
    ``starlette.requests.ClientDisconnect`` through. Either way the writer is aborted.
    """
    mime, params = parse_options_header(request.headers.get("content-type", ""))
    if mime != b"multipart/form-data":
        shown = mime.decode("latin-1") or "none"
        raise MultipartError(f"expected Content-Type multipart/form-data, got {shown}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("missing boundary in Content-Type")

    upload = Upload()
    collector = _Collector(upload, open_writer, audio_field, text_fields)
    parser = MultipartParser(boundary, cast(Any, collector.callbacks()))

    async def flush() -> None:
        if collector.pending and upload.writer is not None:
            data = bytes(collector.pending)
            collector.pending.clear()
            await asyncio.to_thread(upload.writer.write, data)
            upload.audio_bytes += len(data)
            if on_bytes is not None:
                on_bytes(len(data))

    try:
        async for chunk in _chunks(request, idle_timeout):
            if chunk:
                parser.write(chunk)
            if len(collector.pending) >= FLUSH_BYTES:
                await flush()
        parser.finalize()
        if not collector.ended:
            raise MultipartError("unexpected end of body (no closing boundary)")
        await flush()
    except FormParserError as exc:
        upload.abort()
        raise MultipartError(str(exc) or type(exc).__name__) from None
    except BaseException:
        upload.abort()
        raise
    return upload


# ── the submit prologue of POST /jobs and /v1/audio/* ───────────────────────

RETRY_BUSY_SECS = 5  # Retry-After of a 429 for lack of an upload slot
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")


def audio_key(job_id: str, filename: str | None) -> str:
    """Blob key of a job's audio; keeps a plain extension as a hint for humans and decoders."""
    m = _SUFFIX.search(filename or "")
    return f"audio/{job_id}/source{m.group(0).lower() if m else ''}"


async def take_upload_slot(svc: "Services", who: str | None) -> str | None:
    """Take an upload slot (MAX_CONCURRENT_UPLOADS, MAX_UPLOADS_PER_TOKEN) unless ``who`` already has
    MAX_QUEUED_JOBS_PER_TOKEN queued jobs; None when taken (release it with ``svc.uploads.release``),
    else why not (answered 429)."""
    busy = svc.uploads.try_acquire(who)
    if busy is None and who is not None and svc.settings.max_queued_per_token:
        if await asyncio.to_thread(svc.jobs.count_queued, who) >= svc.settings.max_queued_per_token:
            svc.uploads.release(who)
            busy = f"this token already has {svc.settings.max_queued_per_token} queued jobs (MAX_QUEUED_JOBS_PER_TOKEN)"
    return busy


class UploadRefused(Exception):
    """The upload was not taken; each API answers in its own error shape. ``kind``: ``busy``
    (429), ``multipart`` (400), ``stalled`` (408) or ``disconnected`` (the client is gone).
    The uploads metric (rejected/aborted) is already counted."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class JobUpload:
    """A received upload for a new job: its id, the blob key its audio went to (one element once
    the audio part started; a list so that the audio_url path can replace it), who sent it."""

    job_id: str
    key: list[str]
    who: str | None
    upload: Upload


async def receive_job_upload(request: Request, svc: "Services", **options: Any) -> JobUpload:
    """The prologue both submit routes share: a new job id, an upload slot for the principal,
    the body streamed into the blob store (``options``: :func:`receive_upload`'s field names),
    the slot released again; raises :class:`UploadRefused` with nothing kept."""
    job_id = str(uuid.uuid4())
    key: list[str] = []

    def open_writer(filename: str | None) -> BlobWriter:
        key.append(audio_key(job_id, filename))
        return svc.blobs.writer(key[0])

    who = principal(request)
    busy = await take_upload_slot(svc, who)
    if busy is not None:
        svc.metrics.uploads.labels("rejected").inc()
        raise UploadRefused("busy", f"{busy}; retry later")
    try:
        upload = await receive_upload(request, open_writer, svc.metrics.upload_bytes.inc,
                                      idle_timeout=svc.settings.upload_idle_timeout_secs or None, **options)
    except MultipartError as exc:
        svc.metrics.uploads.labels("rejected").inc()
        raise UploadRefused("multipart", f"multipart error: {exc}") from None
    except UploadStalled as exc:
        svc.metrics.uploads.labels("aborted").inc()
        log.info("upload stalled; nothing kept", extra={"job_id": job_id})
        raise UploadRefused("stalled", str(exc)) from None
    except ClientDisconnect:
        svc.metrics.uploads.labels("aborted").inc()
        log.info("client disconnected mid-upload; nothing kept", extra={"job_id": job_id})
        raise UploadRefused("disconnected") from None
    finally:
        svc.uploads.release(who)
    return JobUpload(job_id, key, who, upload)
