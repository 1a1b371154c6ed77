"""Where an inference pod gets its GGML model file: one place for the operator
(which renders the pod) and the worker (which loads the file).

A WhisperModel names exactly one source:

* ``spec.modelURI`` — ``s3://bucket/key`` (downloaded once into the model
  cache) or an absolute path already present in the image or on a volume;
* ``spec.source.pvc`` — ``{claimName, path}``: a PersistentVolumeClaim that
  platform teams pre-populate with model files. The operator mounts the claim
  read-only at :data:`PVC_MOUNT_DIR` and hands the worker the resolved file
  through :data:`MODEL_PATH_ENV`, so the worker never downloads or converts
  anything for it (GPU nodes often have no egress, and a shared read-only
  volume avoids N copies of a multi-GB file).

The API server enforces the same rules through the CRD's CEL rules; this
module re-checks them so that objects stored under an older CRD (or a server
without CEL) get a clear error instead of a crash-looping pod.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # crds imports this module for its patterns
    from whisperop.core.crds import WhisperModelSpec

# where the claim is mounted in the inference pod (read-only)
PVC_MOUNT_DIR = "/var/lib/whisperop/model-pvc"
PVC_VOLUME = "model-pvc"
# a local GGML file the worker loads as is (set by the operator for PVC sources)
MODEL_PATH_ENV = "WHISPEROP_MODEL_PATH"

DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# relative, no empty/'.'/'..' segments, no backslashes or whitespace
PVC_PATH_RE = r"^[^/\s\\]+(/[^/\s\\]+)*$"
MODEL_URI_RE = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|/.+)$"


class InvalidModelSource(ValueError):
    """The WhisperModel's spec does not name exactly one usable model source."""


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["uri", "pvc"]
    uri: str | None = None
    claim_name: str | None = None
    path: str | None = None

    @property
    def local_path(self) -> str | None:
        """The model file inside the inference pod for a PVC source (None for a URI)."""
        return posixpath.join(PVC_MOUNT_DIR, self.path) if self.kind == "pvc" and self.path else None


def check_pvc_path(path: str) -> str | None:
    """Why ``path`` is not a safe file path inside a claim (None when it is)."""
    if not re.match(PVC_PATH_RE, path):
        return f"source.pvc.path must be a relative path inside the claim, got {path!r}"
    if any(seg in (".", "..") for seg in path.split("/")):
        return f"source.pvc.path must not contain '.' or '..' segments, got {path!r}"
    return None


def check(spec: Mapping[str, Any]) -> None:
    """Refuse a WhisperModel spec as stored that names no usable model source
    (:class:`InvalidModelSource` with the reason). ``WhisperModelSpec`` runs this before it
    parses its fields, so an invalid source reads as this reason (what the ``Accepted``
    condition shows), not as a schema pattern error."""
    uri = spec.get("modelURI")
    source = spec.get("source")
    if uri and source:
        raise InvalidModelSource("set exactly one model source: modelURI or source.pvc, not both")
    if uri:
        if not isinstance(uri, str) or not re.match(MODEL_URI_RE, uri):
            raise InvalidModelSource(f"modelURI must be an s3://bucket/key URI or an absolute path, got {uri!r}")
        return
    if not source:
        raise InvalidModelSource("no model source: set modelURI (s3:// URI or absolute path) or source.pvc")
    pvc = source.get("pvc") if isinstance(source, Mapping) else None
    if not isinstance(pvc, Mapping):
        raise InvalidModelSource("source must name exactly one kind: pvc {claimName, path}")
    claim, path = str(pvc.get("claimName") or ""), str(pvc.get("path") or "")
    if not re.match(DNS_SUBDOMAIN_RE, claim) or len(claim) > 253:
        raise InvalidModelSource(f"source.pvc.claimName must be a PersistentVolumeClaim name, got {claim!r}")
    why = check_pvc_path(path)
    if why:
        raise InvalidModelSource(why)


def resolve(spec: WhisperModelSpec) -> ModelSource:
    """The one model source of a parsed WhisperModel spec (parsing ran :func:`check`)."""
    if spec.modelURI:
        return ModelSource("uri", uri=spec.modelURI)
    pvc = spec.source.pvc if spec.source else None
    if pvc is None:  # only a spec built without validation (model_construct) gets here
        raise InvalidModelSource("no model source: set modelURI (s3:// URI or absolute path) or source.pvc")
    return ModelSource("pvc", claim_name=pvc.claimName, path=pvc.path)


def location(spec: WhisperModelSpec, model_path: str | None = None, model_uri: str | None = None) -> str:
    """Where a worker finds its model: the local file the operator resolved for a PVC source
    (``model_path``, :data:`MODEL_PATH_ENV`), the ``--model-uri`` override, or the WhisperModel's
    own source (an ``s3://`` URI or an absolute path)."""
    if model_path or model_uri:
        return str(model_path or model_uri)
    src = resolve(spec)
    return src.uri or src.local_path or ""
