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

from whisperop.core.errors import JobAlreadyTerminal, JobNotFound, UnsafeURLError


class ApiError(Exception):
    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, exc.headers)

    @app.exception_handler(JobNotFound)
    async def _not_found(_: Request, exc: JobNotFound) -> JSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(JobAlreadyTerminal)
    async def _terminal(_: Request, exc: JobAlreadyTerminal) -> JSONResponse:
        return error_response(409, str(exc))

    @app.exception_handler(UnsafeURLError)
    async def _unsafe_url(_: Request, exc: UnsafeURLError) -> JSONResponse:
        return error_response(exc.http_status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))
