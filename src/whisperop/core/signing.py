"""Signed webhooks, the Standard Webhooks way (https://www.standardwebhooks.com).

Every delivery, in both modes, carries three headers:

* ``webhook-id`` — stable per event: the same on every retry of it (and on a
  re-delivery after an operator crash), so a receiver drops duplicates by it;
* ``webhook-timestamp`` — Unix seconds of this attempt;
* ``webhook-signature`` — ``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``,
  one entry per configured secret, space-separated, so a secret can be
  rotated without a window where receivers reject deliveries: configure the
  new one as current and keep the old one as previous until every receiver
  has switched.

Secrets: ``WHISPEROP_WEBHOOK_SECRET`` and ``WHISPEROP_WEBHOOK_SECRET_PREVIOUS``,
or ``WHISPEROP_WEBHOOK_SECRETS_FILE`` (a file, one secret per line, current
first; or a mounted Secret directory with keys ``current`` and ``previous``).
A secret written ``whsec_<base64>`` (the Standard Webhooks format) is
base64-decoded to the HMAC key; any other value is used as UTF-8 bytes.
Without a secret, deliveries carry the id and timestamp but no signature
(and the server logs a warning at start).

:func:`verify` is what a receiver runs (docs/security.md has a standalone
copy): signature by any known secret, timestamp within ``tolerance`` seconds
(5 minutes, as the standard suggests) — replays older than that are refused;
inside the window, a receiver remembers ids it has seen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SECRET_ENV = "WHISPEROP_WEBHOOK_SECRET"
PREVIOUS_ENV = "WHISPEROP_WEBHOOK_SECRET_PREVIOUS"
FILE_ENV = "WHISPEROP_WEBHOOK_SECRETS_FILE"
TOLERANCE_SECS = 300

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class SignatureError(Exception):
    """A delivery that does not verify (bad/missing signature, stale or future timestamp)."""


def secret_key(secret: str) -> bytes:
    s = secret.strip()
    if s.startswith("whsec_"):
        return base64.b64decode(s[len("whsec_"):])
    return s.encode("utf-8")


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass(frozen=True)
class WebhookSigner:
    """The keys deliveries are signed with (current first)."""

    keys: tuple[bytes, ...] = ()

    @classmethod
    def from_secrets(cls, secrets: Sequence[str]) -> WebhookSigner:
        return cls(tuple(secret_key(s) for s in secrets if s and s.strip()))

    @classmethod
    def from_config(cls, secret: str = "", previous: str = "", secrets_file: str | Path | None = None) -> WebhookSigner:
        """The secrets file when given (it wins), else ``secret`` and ``previous``; the
        values come from :class:`whisperop.core.settings.WebhookSettings`."""
        if secrets_file:
            return cls.from_secrets(_read_secrets(Path(secrets_file)))
        return cls.from_secrets([secret, previous])

    @classmethod
    def from_env(cls, variables: Mapping[str, str]) -> WebhookSigner:
        """The same from a mapping of the variables' names (a child's environment, a test)."""
        return cls.from_config(variables.get(SECRET_ENV, ""), variables.get(PREVIOUS_ENV, ""), variables.get(FILE_ENV))

    def __bool__(self) -> bool:
        return bool(self.keys)

    def headers(self, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        out = {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(ts)}
        if self.keys:
            out[SIGNATURE_HEADER] = " ".join(signature(k, msg_id, ts, body) for k in self.keys)
        return out


def _read_secrets(path: Path) -> list[str]:
    if path.is_dir():
        return [(path / name).read_text().strip() for name in ("current", "previous") if (path / name).is_file()]
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def verify(secrets: Sequence[str], headers: Mapping[str, str], body: bytes,
           tolerance: int = TOLERANCE_SECS, now: float | None = None) -> str:
    """The delivery's ``webhook-id`` when ``headers`` carry a valid signature of ``body``
    by one of ``secrets`` and a fresh timestamp; :class:`SignatureError` otherwise."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts_raw, sigs = h.get(ID_HEADER), h.get(TIMESTAMP_HEADER), h.get(SIGNATURE_HEADER)
    if not (msg_id and ts_raw and sigs):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(ts_raw)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer") from None
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise SignatureError("webhook-timestamp outside the tolerance (replay or clock skew)")
    offered = [s.strip() for s in sigs.split(" ") if s.strip()]
    for secret in secrets:
        expected = signature(secret_key(secret), msg_id, ts, body)
        if any(hmac.compare_digest(expected, o) for o in offered):
            return msg_id
    raise SignatureError("no valid signature")
