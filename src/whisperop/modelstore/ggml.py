"""Writer for whisper.cpp's GGML model file (the legacy ``ggml`` container).

Layout, as read by ``whisper_model_load`` in whisper.cpp:

* magic ``0x67676d6c`` ("ggml"), then eleven int32 hyper-parameters;
* the mel filterbank: ``n_mel``, ``n_fft`` (int32) and ``n_mel * n_fft`` float32;
* the vocabulary: a count and, per token, a length-prefixed byte string (the
  special tokens are synthesised by whisper.cpp from ``n_vocab``);
* the tensors: ``n_dims``, ``len(name)``, type, dims in GGML order (fastest
  first, i.e. numpy shape reversed), the name, then the raw data.

Quantisation (``q8_0``) is done here, in numpy, with ggml's reference
algorithm, so a quantised model needs no whisper.cpp ``quantize`` binary.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np

GGML_MAGIC = 0x67676D6C
GGML_QNT_VERSION = 2
GGML_QNT_VERSION_FACTOR = 1000

# ggml tensor type ids
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_Q8_0 = 8

# ggml "file types" (whole-model precision) as whisper.cpp records them in hparams
FTYPE_F32 = 0
FTYPE_F16 = 1
FTYPE_Q8_0 = 7

Precision = Literal["f32", "f16", "q8_0"]
FTYPE_BY_PRECISION: dict[str, int] = {"f32": FTYPE_F32, "f16": FTYPE_F16, "q8_0": FTYPE_Q8_0}
QK8_0 = 32


@dataclass(frozen=True)
class WhisperHParams:
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int

    def pack(self, ftype: int) -> bytes:
        fields = (
            self.n_vocab, self.n_audio_ctx, self.n_audio_state, self.n_audio_head, self.n_audio_layer,
            self.n_text_ctx, self.n_text_state, self.n_text_head, self.n_text_layer, self.n_mels, ftype,
        )
        return struct.pack("<11i", *fields)


def quantize_q8_0(data: np.ndarray) -> bytes:
    """ggml's ``quantize_row_q8_0_ref`` over every row: blocks of 32 values
    stored as one fp16 scale and 32 int8s (round half away from zero)."""
    x = np.ascontiguousarray(data, dtype=np.float32)
    if x.shape[-1] % QK8_0:
        raise ValueError(f"q8_0 needs rows that are a multiple of {QK8_0}, got {x.shape}")
    blocks = x.reshape(-1, QK8_0)
    amax = np.abs(blocks).max(axis=1)
    d = (amax / 127.0).astype(np.float32)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0).astype(np.float32)
    scaled = blocks * inv[:, None]
    q = (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(np.int8)
    out = np.empty(blocks.shape[0], dtype=[("d", "<f2"), ("qs", "i1", (QK8_0,))])
    out["d"] = d.astype(np.float16)
    out["qs"] = q
    return out.tobytes()


def dequantize_q8_0(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`quantize_q8_0` (used by tests to bound the error)."""
    blocks = np.frombuffer(raw, dtype=[("d", "<f2"), ("qs", "i1", (QK8_0,))])
    values = blocks["qs"].astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return values.reshape(shape)


class GGMLWhisperWriter:
    """Streams a whisper GGML file: header first, then tensors one at a time,
    so converting a large model never needs two copies of it in memory."""

    def __init__(self, out: BinaryIO, hparams: WhisperHParams, precision: Precision) -> None:
        self._out = out
        self.hparams = hparams
        self.precision = precision
        ftype = FTYPE_BY_PRECISION[precision]
        if precision == "q8_0":
            ftype += GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR
        out.write(struct.pack("<I", GGML_MAGIC))
        out.write(hparams.pack(ftype))

    def write_mel_filters(self, filters: np.ndarray) -> None:
        n_mel, n_fft = filters.shape
        self._out.write(struct.pack("<ii", n_mel, n_fft))
        self._out.write(np.ascontiguousarray(filters, dtype="<f4").tobytes())

    def write_vocab(self, tokens: list[bytes]) -> None:
        self._out.write(struct.pack("<i", len(tokens)))
        for tok in tokens:
            self._out.write(struct.pack("<i", len(tok)))
            self._out.write(tok)

    def tensor_type(self, name: str, data: np.ndarray) -> int:
        """The type whisper.cpp expects for this tensor at this precision.

        Mirrors whisper.cpp's loader: 2-D weight matrices take the model's
        type, convolution kernels are f16 unless the model is f32, and biases,
        norms, positional embeddings (and conv biases, stored 2-D) are f32.
        """
        if self.precision == "f32":
            return GGML_TYPE_F32
        keep_f32 = name.endswith("positional_embedding") or name in ("encoder.conv1.bias", "encoder.conv2.bias")
        if data.ndim < 2 or keep_f32:
            return GGML_TYPE_F32
        if data.ndim == 3:  # conv kernels
            return GGML_TYPE_F16
        return GGML_TYPE_Q8_0 if self.precision == "q8_0" else GGML_TYPE_F16

    def write_tensor(self, name: str, data: np.ndarray) -> None:
        ttype = self.tensor_type(name, data)
        encoded = name.encode("utf-8")
        self._out.write(struct.pack("<iii", data.ndim, len(encoded), ttype))
        for dim in reversed(data.shape):
            self._out.write(struct.pack("<i", dim))
        self._out.write(encoded)
        if ttype == GGML_TYPE_F32:
            self._out.write(np.ascontiguousarray(data, dtype="<f4").tobytes())
        elif ttype == GGML_TYPE_F16:
            self._out.write(np.ascontiguousarray(data, dtype="<f2").tobytes())
        else:
            self._out.write(quantize_q8_0(data))
