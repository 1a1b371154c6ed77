"""``GET /jobs``: every job, newest first, in pages (status filter, opaque cursor).

Under bearer auth a token lists only the jobs it submitted (the ownership rule
of ``whisperop.api.auth``: another token's jobs do not exist for it).

Pages are bounded (``limit`` ≤ 200, default 50) and carry no segments, so a
listing costs the same for 10-second and 2-hour jobs; the cursor is the
position of the last job served, so jobs submitted while a client pages
through never make it see a job twice or skip one.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from whisperop.api.auth import principal
from whisperop.api.deps import ServicesDep
from whisperop.api.errors import ApiError
from whisperop.core.models import ErrorResponse, JobList, JobStatus, JobSummary

router = APIRouter(tags=["jobs"])

MAX_PAGE = 200
DEFAULT_PAGE = 50


def parse_statuses(values: list[str] | None) -> list[JobStatus]:
    """``status=done&status=failed`` or ``status=done,failed``; 400 for an unknown one."""
    out: list[JobStatus] = []
    for value in values or []:
        for name in filter(None, (v.strip() for v in value.split(","))):
            try:
                out.append(JobStatus(name))
            except ValueError:
                raise ApiError(400, f"unknown status {name!r}; choose from {', '.join(s.value for s in JobStatus)}") from None
    return out


@router.get(
    "/jobs",
    summary="List jobs, newest first",
    description="Filter by `status` (repeat it, or comma-separate); page with `limit` and the `next_cursor` of the "
                "previous page. Jobs carry no segments here: fetch `/jobs/{id}` or `/jobs/{id}/transcript.{fmt}`. "
                "Under bearer auth only the calling token's own jobs are listed.",
    response_model=JobList,
    responses={400: {"model": ErrorResponse, "description": "unknown status, bad limit or cursor"}},
)
async def list_jobs(
    request: Request,
    svc: ServicesDep,
    status: Annotated[list[str] | None, Query(description="queued, running, done, failed, cancelled")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="jobs per page")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> Response:
    statuses = parse_statuses(status)
    try:
        page = await asyncio.to_thread(svc.jobs.list_page, statuses, limit, cursor, principal(request))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    body = JobList(jobs=[JobSummary(**j.model_dump(exclude={"segments"})) for j in page.jobs], next_cursor=page.next_cursor)
    return JSONResponse(body.model_dump(mode="json"))
