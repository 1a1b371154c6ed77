"""Self-contained kubeconfig files (certificates embedded, not referenced).

Why: the admin kubeconfig is handed to kubectl, helm, the Python client and
to users outside the process; embedding the PEM data means it keeps working
when copied, and each control-plane component gets its own identity.
"""

from __future__ import annotations

import base64
from pathlib import Path

import json


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str, context: str = "whisperop-testenv") -> Path:
    """Write a kubeconfig for one client-certificate user and return its path.

    JSON is valid YAML, so no YAML library is needed.
    """
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user, "namespace": "default"}}],
        "current-context": context,
        "preferences": {},
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    path.chmod(0o600)
    return path
