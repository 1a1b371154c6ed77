"""``GET /jobs/{id}/transcript.{json,srt,vtt,txt}``: a finished job's transcript as a file.

Both modes render from the job's segments (local: SQLite; cluster: the
result JSON the worker wrote to S3, read through the JobQueue), so the cue
options below apply everywhere — the srt/vtt/txt objects a cluster worker
writes on request (``spec.outputFormats``) use the default options and are
not needed here. ``Content-Disposition: attachment`` names the file after the
uploaded one (``talk.mp3`` → ``talk.srt``), so a browser link downloads it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from whisperop.api.auth import principal
from whisperop.api.deps import ServicesDep
from whisperop.api.errors import ApiError
from whisperop.api.routers.jobs import check_owner
from whisperop.core.models import ErrorResponse, Job, JobStatus, TranscriptionResult
from whisperop.inference.writers import FORMATS, MEDIA_TYPES, CueOptions, render

router = APIRouter(tags=["jobs"])

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def download_name(job: Job, fmt: str) -> str:
    """``<uploaded stem>.<fmt>``, or ``<job id>.<fmt>`` when there is no usable name."""
    stem = (job.filename or "").rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return f"{stem or job.id}.{fmt}"


def content_disposition(name: str) -> str:
    """RFC 6266: an ASCII fallback plus the UTF-8 name (``filename*``) when it differs."""
    ascii_name = _UNSAFE.sub("_", name).strip() or "transcript"
    header = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


def job_result(job: Job) -> TranscriptionResult:
    if job.status != JobStatus.done:
        raise ApiError(409, f"job {job.id} is {job.status.value}; a transcript exists only when it is done")
    return TranscriptionResult(language=job.language, duration_secs=job.duration_secs or 0.0, segments=job.segments)


def transcript_response(job: Job, fmt: str, opts: CueOptions | None = None) -> Response:
    body = render(job_result(job), fmt, opts)
    return Response(body, media_type=MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": content_disposition(download_name(job, fmt))})


def cue_options(max_line_chars: int, max_lines: int, max_cue_secs: float) -> CueOptions:
    try:
        return CueOptions(max_line_chars=max_line_chars, max_lines=max_lines, max_cue_secs=max_cue_secs)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@router.get(
    "/jobs/{job_id}/transcript.{fmt}",
    summary="Download a finished job's transcript (json, srt, vtt or txt)",
    description=(
        "`fmt` is one of json, srt, vtt, txt. Subtitles (srt, vtt) are cut into cues of at most "
        "`max_lines` lines of `max_line_chars` characters and `max_cue_secs` seconds, on word boundaries "
        "taken from the word timings. 409 while the job is not done (queued, running, failed, cancelled)."
    ),
    responses={
        200: {"content": {MEDIA_TYPES[f].split(";")[0]: {} for f in FORMATS}, "description": "the transcript file"},
        400: {"model": ErrorResponse, "description": "cue option out of range"},
        404: {"model": ErrorResponse, "description": "no such job, or unknown format"},
        409: {"model": ErrorResponse, "description": "the job is not done"},
    },
    response_class=Response,
)
async def get_transcript(
    job_id: str,
    fmt: str,
    request: Request,
    svc: ServicesDep,
    max_line_chars: Annotated[int, Query(ge=10, le=500, description="characters per subtitle line")] = 42,
    max_lines: Annotated[int, Query(ge=1, le=10, description="lines per subtitle cue")] = 2,
    max_cue_secs: Annotated[float, Query(ge=0.5, le=600, description="longest cue, seconds")] = 7.0,
) -> Response:
    if fmt not in FORMATS:
        raise ApiError(404, f"unknown transcript format {fmt!r}; choose one of {', '.join(FORMATS)}")
    opts = cue_options(max_line_chars, max_lines, max_cue_secs)
    await asyncio.to_thread(check_owner, svc, job_id, principal(request))
    job = await asyncio.to_thread(svc.jobs.get, job_id)
    return transcript_response(job, fmt, opts)
