"""The worker pod's model on local disk, and the engine settings it loads with.

Where the model comes from is :func:`whisperop.core.modelsource.location`; a
local path (the PVC's file, a path in the image) is loaded as is, never fetched
or converted, and an ``s3://`` source is downloaded once into the model cache.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from whisperop.cluster.s3 import S3Settings
from whisperop.core import crds, modelsource
from whisperop.core.errors import ModelNotFoundError
from whisperop.core.settings import EngineSettings


def locate(spec: crds.WhisperModelSpec, settings: EngineSettings, s3: S3Settings, model_path: str | None = None,
           model_uri: str | None = None) -> tuple[Path, EngineSettings]:
    """The local model of ``spec`` (fetched where needed) and the engine settings to load it with:
    the pod's ``settings`` with ``spec.engine`` on top, ``auto`` resolved by the model found."""
    settings = engine_settings(spec, settings)
    path = fetch(modelsource.location(spec, model_path, model_uri), settings, s3)
    return path, settings.resolved(path)


def engine_settings(spec: crds.WhisperModelSpec, settings: EngineSettings) -> EngineSettings:
    """``spec.engine`` wins over the pod's ``ENGINE`` (the operator renders it into ENGINE as well; a
    worker started by hand reads it here). ``auto`` stays auto until the model is found
    (:func:`fetch`, then :meth:`EngineSettings.resolved`)."""
    if spec.engine:
        settings = settings.model_copy(update={"engine": crds.EngineName(spec.engine).value})
    return settings


def fetch(uri: str, settings: EngineSettings, s3: S3Settings) -> Path:
    """The local model: a path as is (never fetched), or an ``s3://`` source downloaded once into
    the model cache — one object (a GGML file) for whisper.cpp, every object under the prefix
    (a CTranslate2 directory) for ``ENGINE=ctranslate2``."""
    if not uri.startswith("s3://"):
        path = Path(uri)
        if not path.is_file() and not (path / "model.bin").is_file():  # a local file (or CTranslate2 dir) is never fetched
            raise ModelNotFoundError(f"model file {path} does not exist (PVC not populated, or wrong path?)")
        return path
    cache = Path(settings.model_cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    dest = cache / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{name}"
    engine = settings.engine
    if engine == "auto":  # the source decides: one object is a GGML file, a prefix a CTranslate2 directory
        engine = "whispercpp" if s3.is_object(uri) else "ctranslate2"
    if engine == "ctranslate2":
        if not (dest / "model.bin").is_file():
            part = dest.with_name(dest.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            try:
                s3.download_prefix(uri, part)
            except FileNotFoundError as exc:
                raise ModelNotFoundError(f"ENGINE=ctranslate2 needs a CTranslate2 model directory: {exc}") from exc
            part.rename(dest)
        return dest
    if not dest.is_file():
        part = dest.with_suffix(dest.suffix + ".part")
        s3.download(uri, part)
        part.rename(dest)
    return dest
