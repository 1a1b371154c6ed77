"""Structured logging: one JSON object per line (for clusters) or key=value text.

Components log with ``extra={...}``; those fields become JSON keys, so log
pipelines can filter on ``job_id``, ``model`` or ``state`` without parsing
prose. ``LOG_FORMAT=json|text`` and ``LOG_LEVEL`` select the output.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from types import TracebackType

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}
# kopf's per-object records carry these: the operator's settings object (not a
# log field) and a flag for its Event poster; k8s_ref is the object concerned,
# written under "object" as kopf's own JSON format does
_KOPF_INTERNAL = {"k8s_skip", "settings"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and k not in _KOPF_INTERNAL and not k.startswith("_")}
    if "k8s_ref" in fields:
        fields["object"] = fields.pop("k8s_ref")
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


def printable(value: object) -> str:
    """``str(value)`` with control characters escaped: a user-chosen string (an upload's
    file name with NUL or terminal escapes) must not reach a terminal or a log file raw."""
    return str(value).translate(_CONTROL)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={printable(v)}" for k, v in _extras(record).items())
        line = f"{record.levelname.lower():7s} {record.name}: {printable(record.getMessage())}" + (f" {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str | None = None, fmt: str | None = None) -> None:
    if level is None or fmt is None:
        from whisperop.core.settings import LogSettings

        env = LogSettings()
        level, fmt = level or env.level, fmt or env.format
    level, fmt = level.upper(), fmt.lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if fmt == "json":
        # a process that dies (a worker without credentials, an operator that cannot
        # log in) writes its traceback as one JSON line too, not 30 lines of text
        sys.excepthook = _log_uncaught
    # httpx logs every request line at INFO, full URL included: webhook URLs carry secrets
    # (whisperop's own lines show them redacted, whisperop.core.urlguard.redact)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("whisperop").critical("exited on an uncaught exception: %s", exc, exc_info=(exc_type, exc, tb))
