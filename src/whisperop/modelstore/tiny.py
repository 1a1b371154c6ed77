"""A tiny random-weight whisper model for fast tests.

It is built through the same path as the real model: a CTranslate2-layout
``model.bin`` (random weights, real variable names and fused projections) is
written and then converted by :func:`convert_ct2_dir`. So tests that use it
exercise the converter, whisper.cpp loading and the whole pipeline in
milliseconds. Its transcripts are noise: never use it for quality claims.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from whisperop.modelstore.ct2 import write_ct2_model
from whisperop.modelstore.convert import _byte_decoder, convert_ct2_dir
from whisperop.modelstore.ggml import Precision

N_VOCAB = 51865  # multilingual size: whisper.cpp derives special-token ids from it
N_REGULAR = 50257
N_AUDIO_CTX = 1500  # fixed by whisper's 30 s mel window
N_TEXT_CTX = 448
N_MELS = 80


def synthetic_vocabulary() -> list[str]:
    byte_chars = list(_byte_decoder().keys())  # the 256 single-byte tokens
    regular = byte_chars + [f"\u0120t{i}" for i in range(N_REGULAR - len(byte_chars))]
    special = ["<|endoftext|>", "<|startoftranscript|>"]
    special += [f"<|lang{i}|>" for i in range(99)]
    special += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    special += [f"<|{i * 0.02:.2f}|>" for i in range(N_VOCAB - N_REGULAR - len(special))]
    vocab = regular + special
    assert len(vocab) == N_VOCAB
    return vocab


def tiny_ct2_variables(n_state: int = 64, n_head: int = 2, n_layer: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float16)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float16)

    v: dict[str, np.ndarray] = {
        "encoder/num_heads": np.array(n_head, dtype=np.int16),
        "decoder/num_heads": np.array(n_head, dtype=np.int16),
        "encoder/conv1/weight": w(n_state, N_MELS, 3), "encoder/conv1/bias": zeros(n_state),
        "encoder/conv2/weight": w(n_state, n_state, 3), "encoder/conv2/bias": zeros(n_state),
        "encoder/position_encodings/encodings": w(N_AUDIO_CTX, n_state),
        "encoder/layer_norm/gamma": ones(n_state), "encoder/layer_norm/beta": zeros(n_state),
        "decoder/embeddings/weight": w(N_VOCAB, n_state),
        "decoder/position_encodings/encodings": w(N_TEXT_CTX, n_state),
        "decoder/layer_norm/gamma": ones(n_state), "decoder/layer_norm/beta": zeros(n_state),
    }
    for side in ("encoder", "decoder"):
        for i in range(n_layer):
            p = f"{side}/layer_{i}"
            v[f"{p}/self_attention/layer_norm/gamma"] = ones(n_state)
            v[f"{p}/self_attention/layer_norm/beta"] = zeros(n_state)
            v[f"{p}/self_attention/linear_0/weight"] = w(3 * n_state, n_state)
            v[f"{p}/self_attention/linear_0/bias"] = zeros(3 * n_state)
            v[f"{p}/self_attention/linear_1/weight"] = w(n_state, n_state)
            v[f"{p}/self_attention/linear_1/bias"] = zeros(n_state)
            v[f"{p}/ffn/layer_norm/gamma"] = ones(n_state)
            v[f"{p}/ffn/layer_norm/beta"] = zeros(n_state)
            v[f"{p}/ffn/linear_0/weight"] = w(4 * n_state, n_state)
            v[f"{p}/ffn/linear_0/bias"] = zeros(4 * n_state)
            v[f"{p}/ffn/linear_1/weight"] = w(n_state, 4 * n_state)
            v[f"{p}/ffn/linear_1/bias"] = zeros(n_state)
            if side == "decoder":
                v[f"{p}/attention/layer_norm/gamma"] = ones(n_state)
                v[f"{p}/attention/layer_norm/beta"] = zeros(n_state)
                v[f"{p}/attention/linear_0/weight"] = w(n_state, n_state)
                v[f"{p}/attention/linear_0/bias"] = zeros(n_state)
                v[f"{p}/attention/linear_1/weight"] = w(2 * n_state, n_state)
                v[f"{p}/attention/linear_1/bias"] = zeros(2 * n_state)
                v[f"{p}/attention/linear_2/weight"] = w(n_state, n_state)
                v[f"{p}/attention/linear_2/bias"] = zeros(n_state)
    return v


def write_tiny_ct2_dir(dest: Path, seed: int = 0) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    write_ct2_model(dest / "model.bin", "WhisperSpec", 3, tiny_ct2_variables(seed=seed))
    (dest / "vocabulary.json").write_text(json.dumps(synthetic_vocabulary()), encoding="utf-8")
    return dest


def build_tiny_model(out_path: str | Path, precision: Precision = "f16", seed: int = 0) -> Path:
    """Write a tiny random-weight GGML whisper model to ``out_path``."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tiny-ct2-") as tmp:
        src = write_tiny_ct2_dir(Path(tmp), seed)
        return convert_ct2_dir(src, out, precision)
