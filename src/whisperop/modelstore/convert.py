"""Convert a CTranslate2 whisper model directory into a whisper.cpp GGML file.

CTranslate2 stores whisper with fused attention projections and its own
variable names; whisper.cpp expects OpenAI's checkpoint names. The mapping:

* self-attention ``linear_0`` is ``[q; k; v]`` stacked on the output axis:
  split in three; the key projection has no bias in whisper (its slot in the
  fused bias is zero), so ``attn.key`` gets a weight only;
* cross-attention ``linear_0`` is the query, ``linear_1`` is ``[k; v]``;
* the last ``linear`` of each attention block is the output projection;
* conv biases are written as ``(n, 1)`` f32 matrices, as whisper.cpp reads them.

Hyper-parameters come from tensor shapes and the stored head counts; the mel
filterbank is recomputed (:mod:`whisperop.modelstore.mel`); the vocabulary is
the byte-level BPE table from ``vocabulary.json`` decoded back to raw bytes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from whisperop.modelstore.ct2 import CT2Model, read_ct2_model
from whisperop.modelstore.ggml import GGMLWhisperWriter, Precision, WhisperHParams
from whisperop.modelstore.mel import mel_filters


class ConversionError(ValueError):
    """The input directory is not a convertible CTranslate2 whisper model."""


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode`` (printable stand-ins for bytes)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def vocab_bytes(vocabulary: list[str]) -> list[bytes]:
    """Regular (non-special) tokens as raw bytes, in id order.

    whisper.cpp synthesises every special token itself from ``n_vocab``
    (``<|endoftext|>`` is 50257 in multilingual models), so only the ids
    before the first special token are written.
    """
    try:
        n_regular = vocabulary.index("<|endoftext|>")
    except ValueError as exc:
        raise ConversionError("vocabulary has no <|endoftext|> token") from exc
    decoder = _byte_decoder()
    out: list[bytes] = []
    for tok in vocabulary[:n_regular]:
        try:
            out.append(bytes(decoder[c] for c in tok))
        except KeyError:
            out.append(tok.encode("utf-8"))
    return out


def hparams_from(model: CT2Model) -> WhisperHParams:
    v = model.variables
    try:
        n_vocab, n_text_state = v["decoder/embeddings/weight"].shape
        n_audio_ctx, n_audio_state = v["encoder/position_encodings/encodings"].shape
        n_text_ctx = v["decoder/position_encodings/encodings"].shape[0]
        n_mels = v["encoder/conv1/weight"].shape[1]
    except KeyError as exc:
        raise ConversionError(f"not a CTranslate2 whisper model: missing {exc}") from exc
    return WhisperHParams(
        n_vocab=int(n_vocab), n_audio_ctx=int(n_audio_ctx), n_audio_state=int(n_audio_state),
        n_audio_head=model.scalar("encoder/num_heads"), n_audio_layer=model.count_layers("encoder"),
        n_text_ctx=int(n_text_ctx), n_text_state=int(n_text_state),
        n_text_head=model.scalar("decoder/num_heads"), n_text_layer=model.count_layers("decoder"), n_mels=int(n_mels),
    )


def _linear(v: dict[str, np.ndarray], src: str, dst: str, bias: bool = True) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", v[f"{src}/weight"]
    if bias:
        yield f"{dst}.bias", v[f"{src}/bias"]


def _norm(v: dict[str, np.ndarray], src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", v[f"{src}/gamma"]
    yield f"{dst}.bias", v[f"{src}/beta"]


def _split_qkv(v: dict[str, np.ndarray], src: str, dst: str, parts: tuple[str, ...]) -> Iterator[tuple[str, np.ndarray]]:
    weight, bias = v[f"{src}/weight"], v[f"{src}/bias"]
    n = weight.shape[0] // len(parts)
    for i, part in enumerate(parts):
        yield f"{dst}.{part}.weight", weight[i * n : (i + 1) * n]
        if part != "key":
            yield f"{dst}.{part}.bias", bias[i * n : (i + 1) * n]


def _ffn(v: dict[str, np.ndarray], src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield from _norm(v, f"{src}/layer_norm", f"{dst}.mlp_ln")
    yield from _linear(v, f"{src}/linear_0", f"{dst}.mlp.0")
    yield from _linear(v, f"{src}/linear_1", f"{dst}.mlp.2")


def whisper_tensors(model: CT2Model, hp: WhisperHParams) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(whisper.cpp name, array)`` in the order whisper.cpp's own converter writes."""
    v = model.variables
    yield "encoder.positional_embedding", v["encoder/position_encodings/encodings"]
    yield "encoder.conv1.weight", v["encoder/conv1/weight"]
    yield "encoder.conv1.bias", v["encoder/conv1/bias"].reshape(-1, 1)
    yield "encoder.conv2.weight", v["encoder/conv2/weight"]
    yield "encoder.conv2.bias", v["encoder/conv2/bias"].reshape(-1, 1)
    for i in range(hp.n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        yield from _norm(v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from _split_qkv(v, f"{src}/self_attention/linear_0", f"{dst}.attn", ("query", "key", "value"))
        yield from _linear(v, f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        yield from _ffn(v, f"{src}/ffn", dst)
    yield from _norm(v, "encoder/layer_norm", "encoder.ln_post")
    yield "decoder.positional_embedding", v["decoder/position_encodings/encodings"]
    yield "decoder.token_embedding.weight", v["decoder/embeddings/weight"]
    for i in range(hp.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        yield from _norm(v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from _split_qkv(v, f"{src}/self_attention/linear_0", f"{dst}.attn", ("query", "key", "value"))
        yield from _linear(v, f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        yield from _norm(v, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        yield from _linear(v, f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
        yield from _split_qkv(v, f"{src}/attention/linear_1", f"{dst}.cross_attn", ("key", "value"))
        yield from _linear(v, f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
        yield from _ffn(v, f"{src}/ffn", dst)
    yield from _norm(v, "decoder/layer_norm", "decoder.ln")


def convert_ct2_dir(
    src_dir: str | Path,
    out_path: str | Path,
    precision: Precision = "f16",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Convert ``src_dir`` (``model.bin`` + ``vocabulary.json``) to ``out_path``.

    ``model.bin`` may also be given as ``model.bin.part1``, ``model.bin.part2``, …
    (how the offline packages ship it); the parts are read in order. The file
    is written to a temporary name and renamed, so an interrupted conversion
    never leaves a half-written model in the cache.
    """
    src = Path(src_dir)
    model_bin = src / "model.bin"
    tmp_joined: Path | None = None
    if not model_bin.exists():
        parts = sorted(src.glob("model.bin.part*"), key=lambda p: int(p.suffix.removeprefix(".part") or 0))
        if not parts:
            raise ConversionError(f"{src}: no model.bin (or model.bin.partN) found")
        fd, name = tempfile.mkstemp(suffix=".bin", dir=str(Path(out_path).parent))
        tmp_joined = Path(name)
        with os.fdopen(fd, "wb") as joined:
            for part in parts:
                with open(part, "rb") as pf:
                    while chunk := pf.read(1 << 24):
                        joined.write(chunk)
        model_bin = tmp_joined
    vocab_file = src / "vocabulary.json"
    if not vocab_file.exists():
        raise ConversionError(f"{src}: vocabulary.json not found")
    try:
        model = read_ct2_model(model_bin)
    finally:
        if tmp_joined is not None:
            tmp_joined.unlink(missing_ok=True)
    if model.spec != "WhisperSpec":
        raise ConversionError(f"{src}: model spec is {model.spec!r}, expected 'WhisperSpec'")
    vocabulary = json.loads(vocab_file.read_text(encoding="utf-8"))
    return write_ggml(model, vocabulary, out_path, precision, progress)


def write_ggml(
    model: CT2Model,
    vocabulary: list[str],
    out_path: str | Path,
    precision: Precision = "f16",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    hp = hparams_from(model)
    if len(vocabulary) != hp.n_vocab:
        raise ConversionError(f"vocabulary has {len(vocabulary)} tokens but the embedding has {hp.n_vocab} rows")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = list(whisper_tensors(model, hp))
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "wb") as f:
        writer = GGMLWhisperWriter(f, hp, precision)
        writer.write_mel_filters(mel_filters(16000, 400, hp.n_mels))
        writer.write_vocab(vocab_bytes(vocabulary))
        for i, (name, data) in enumerate(tensors):
            writer.write_tensor(name, np.asarray(data, dtype=np.float32))
            if progress:
                progress(i + 1, len(tensors))
    os.replace(tmp, out)
    return out
