"""Read (and, for test fixtures, write) CTranslate2 ``model.bin`` files.

The only real whisper weights reachable offline are OpenAI's whisper *base* in
CTranslate2 format, so the GGML converter starts from this format. The layout
is CTranslate2's binary version 6 (``ctranslate2/specs/model_spec.py``): a
header, a list of named variables (rank, dims, dtype id, raw bytes) and a list
of aliases. Reading is done without importing ctranslate2 so the converter has
no heavy dependency.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

#: CTranslate2 dtype ids -> numpy dtypes (bfloat16 is not used by whisper exports).
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}
_DTYPE_IDS = {v: k for k, v in _DTYPES.items()}
SUPPORTED_BINARY_VERSIONS = (5, 6)


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass
class CT2Model:
    """Variables of a CTranslate2 model, with aliases resolved."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)

    def scalar(self, name: str) -> int:
        return int(np.asarray(self.variables[name]).reshape(-1)[0])

    def count_layers(self, prefix: str) -> int:
        """Number of ``{prefix}/layer_N`` blocks present."""
        pattern = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
        return len({m.group(1) for k in self.variables if (m := pattern.match(k))})


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CT2FormatError("unexpected end of file (truncated model.bin?)")
    return data


def _read_u32(f: BinaryIO) -> int:
    return int(struct.unpack("<I", _read_exact(f, 4))[0])


def _read_string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<H", _read_exact(f, 2))
    return _read_exact(f, n)[:-1].decode("utf-8")


def read_ct2_model(path: str | Path) -> CT2Model:
    """Load every variable of ``model.bin`` into memory as numpy arrays."""
    with open(path, "rb") as f:
        version = _read_u32(f)
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise CT2FormatError(f"unsupported CTranslate2 binary version {version}")
        spec = _read_string(f)
        revision = _read_u32(f)
        model = CT2Model(spec=spec, revision=revision)
        for _ in range(_read_u32(f)):
            name = _read_string(f)
            rank = _read_exact(f, 1)[0]
            dims = tuple(_read_u32(f) for _ in range(rank))
            dtype_id = _read_exact(f, 1)[0]
            nbytes = _read_u32(f)
            if dtype_id not in _DTYPES:
                raise CT2FormatError(f"variable {name}: unsupported dtype id {dtype_id}")
            raw = _read_exact(f, nbytes)
            model.variables[name] = np.frombuffer(raw, dtype=_DTYPES[dtype_id]).reshape(dims)
        for _ in range(_read_u32(f)):
            alias = _read_string(f)
            target = _read_string(f)
            model.variables[alias] = model.variables[target]
    return model


def _write_string(f: BinaryIO, s: str) -> None:
    data = s.encode("utf-8")
    f.write(struct.pack("<H", len(data) + 1))
    f.write(data + b"\0")


def write_ct2_model(path: str | Path, spec: str, revision: int, variables: dict[str, np.ndarray]) -> None:
    """Write variables in CTranslate2's binary layout (used to build test fixtures)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<I", 6))
        _write_string(f, spec)
        f.write(struct.pack("<I", revision))
        f.write(struct.pack("<I", len(variables)))
        for name, value in variables.items():
            arr = np.ascontiguousarray(value)
            _write_string(f, name)
            f.write(struct.pack("<B", arr.ndim))
            for dim in arr.shape:
                f.write(struct.pack("<I", dim))
            f.write(struct.pack("<B", _DTYPE_IDS[np.dtype(arr.dtype.str.replace("=", "<"))]))
            raw = arr.tobytes()
            f.write(struct.pack("<I", len(raw)))
            f.write(raw)
        f.write(struct.pack("<I", 0))
