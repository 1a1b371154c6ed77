"""Which server the contract suite drives: its own (managed) or WHISPEROP_BASE_URL."""

from __future__ import annotations

import os

EXTERNAL_URL = (os.environ.get("WHISPEROP_BASE_URL") or "").strip().rstrip("/") or None
MANAGED = EXTERNAL_URL is None
MANAGED_ONLY_REASON = (
    "needs a server started by the suite itself (special settings, fault hooks or kill -9); WHISPEROP_BASE_URL is set"
)
