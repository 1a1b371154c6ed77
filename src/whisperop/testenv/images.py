"""Single-layer container images made from files, without a container engine.

Why: the real node needs a pod sandbox ("pause") image and a MinIO image,
and there is no registry to pull them from. Both programs are static
binaries the test-environment build already makes, so an image is one layer
holding the file plus an image config: written here as a ``docker save``
archive (manifest.json + config + layer.tar) that ``ctr images import`` and
``docker load`` both accept. Timestamps and ownership are fixed, so the same
inputs give the same image id every time (the node imports them at each
start; a few hundred ms).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_EPOCH = 0  # fixed mtime: reproducible layer digests


@dataclass(frozen=True)
class FileImage:
    """An image with one layer: ``files`` (path in image -> source file) and empty ``dirs``."""

    ref: str
    files: dict[str, Path]
    entrypoint: Sequence[str]
    dirs: Sequence[str] = ()
    user: str = "65532:65532"
    env: Sequence[str] = field(default_factory=lambda: ["PATH=/"])


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name.strip("/"))
    info.type = tarfile.DIRTYPE
    info.mode = 0o1777 if name.strip("/") == "tmp" else 0o755
    info.mtime = _EPOCH
    tar.addfile(info)


def _layer(image: FileImage) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(image.dirs):
            _add_dir(tar, d)
        for dest, src in sorted(image.files.items()):
            data = src.read_bytes()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = len(data)
            info.mode = 0o755
            info.mtime = _EPOCH
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_archive(image: FileImage, out: Path) -> Path:
    """Write ``image`` as a docker-save archive at ``out`` and return the path."""
    layer = _layer(image)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(image.entrypoint), "Env": list(image.env), "User": image.user},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "whisperop.testenv.images"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":", 1)[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [image.ref], "Layers": [layer_name]}]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w") as tar:
        for name, data in (
            (config_name, config_bytes),
            (layer_name, layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = _EPOCH
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out
