"""BlobStore on the local file system: ``<data_dir>/blobs/<key>``.

Uploads are written to a hidden temp file *in the same directory tree* and
renamed into place on commit, so a reader never sees half a file, an
aborted upload leaves nothing under its key, and the rename never copies
across file systems. Keys are relative POSIX paths; anything that could
escape the root (``..``, absolute paths) is refused.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from whisperop.core.errors import BlobNotFound
from whisperop.core.ports import write_all

TMP_DIR = ".incoming"


def _safe_key(key: str) -> PurePosixPath:
    p = PurePosixPath(key)
    if not key or "//" in key or key.endswith("/") or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or p.parts[0] == TMP_DIR:
        raise ValueError(f"invalid blob key {key!r}")
    return p


class LocalBlobWriter:
    """Writes to a temp file; ``commit`` renames it to the key's path."""

    def __init__(self, final: Path, tmp_dir: Path) -> None:
        self._final = final
        fd, name = tempfile.mkstemp(prefix="upload-", dir=tmp_dir)
        self._tmp = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._size = 0

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("blob writer is closed")
        self._file.write(data)
        self._size += len(data)

    def commit(self) -> int:
        if self._file is None:
            raise ValueError("blob writer is closed")
        self._file.close()
        self._file = None
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, self._final)
        return self._size

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as files under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._tmp = self.root / TMP_DIR
        self._tmp.mkdir(parents=True, exist_ok=True)

    @classmethod
    def in_data_dir(cls, data_dir: str | Path) -> "LocalBlobStore":
        return cls(Path(data_dir) / "blobs")

    def path_of(self, key: str) -> Path:
        return self.root.joinpath(*_safe_key(key).parts)

    def clean_incoming(self) -> int:
        """Remove temp files of uploads a killed process never finished (at start)."""
        n = 0
        for p in self._tmp.iterdir():
            p.unlink(missing_ok=True)
            n += 1
        return n

    def writer(self, key: str) -> LocalBlobWriter:
        return LocalBlobWriter(self.path_of(key), self._tmp)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        return write_all(self.writer(key), chunks)

    def get(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        path = self.path_of(key)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {key} not found") from None

        def chunks() -> Iterator[bytes]:
            with f:
                while data := f.read(chunk_size):
                    yield data

        return chunks()

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self.path_of(key)
        if not path.is_file():
            raise BlobNotFound(f"blob {key} not found")
        yield path

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def delete(self, key: str) -> None:
        path = self.path_of(key)
        path.unlink(missing_ok=True)
        # drop now-empty per-job directories, never the root
        parent = path.parent
        while parent != self.root and parent.is_dir():
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def url(self, key: str, expires_secs: int = 3600) -> str:
        return self.path_of(key).as_uri()

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"
