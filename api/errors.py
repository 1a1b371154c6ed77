"""Error answers in the contract's shape: ``{"error": "<message>"}``.

Routes raise :class:`ApiError` (or let a typed domain error through); the
handlers here turn every error — including FastAPI's own 404/405 and
validation errors — into that one body shape, so clients parse one thing.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from whisperop.api.openai_shapes import OpenAIError
from whisperop.api.openai_shapes import error_response as openai_error_response
from whisperop.core.errors import JobAlreadyTerminal, JobNotFound, JobStillActive, UnsafeURLError


class ApiError(Exception):
    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {401: "authentication_error", 404: "invalid_request_error", 405: "invalid_request_error"}


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None,
                   request: Request | None = None) -> JSONResponse:
    """The contract's ``{"error": message}``; under ``/v1/`` OpenAI's ``{"error": {message, type, param, code}}``."""
    if request is not None and request.url.path.startswith(OPENAI_PREFIX):
        type_ = _OPENAI_TYPES.get(status_code, "invalid_request_error" if status_code < 500 else "server_error")
        return openai_error_response(OpenAIError(status_code, message, type_, headers=headers))
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(r: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, exc.headers, r)

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return openai_error_response(exc)

    @app.exception_handler(JobNotFound)
    async def _not_found(r: Request, exc: JobNotFound) -> JSONResponse:
        return error_response(404, str(exc), request=r)

    @app.exception_handler(JobAlreadyTerminal)
    async def _terminal(r: Request, exc: JobAlreadyTerminal) -> JSONResponse:
        return error_response(409, str(exc), request=r)

    @app.exception_handler(JobStillActive)
    async def _active(r: Request, exc: JobStillActive) -> JSONResponse:
        return error_response(409, str(exc), request=r)

    @app.exception_handler(UnsafeURLError)
    async def _unsafe_url(r: Request, exc: UnsafeURLError) -> JSONResponse:
        return error_response(exc.http_status, str(exc), request=r)

    @app.exception_handler(StarletteHTTPException)
    async def _http(r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None), r)

    @app.exception_handler(RequestValidationError)
    async def _validation(r: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")), request=r)
