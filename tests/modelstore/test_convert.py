"""The CTranslate2 → GGML converter, checked against independent references."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest

from whisperop.core.errors import ModelLoadError, ModelNotFoundError
from whisperop.modelstore.convert import ConversionError, convert_ct2_dir, vocab_bytes
from whisperop.modelstore.ct2 import read_ct2_model, write_ct2_model
from whisperop.modelstore.ggml import dequantize_q8_0, quantize_q8_0
from whisperop.modelstore.mel import mel_filters
from whisperop.modelstore.tiny import synthetic_vocabulary, tiny_ct2_variables, write_tiny_ct2_dir


def test_mel_filters_match_faster_whisper_reference() -> None:
    fw = pytest.importorskip("faster_whisper.feature_extractor", reason="faster-whisper is in the test extra")
    ours = mel_filters(16000, 400, 80)
    ref = fw.FeatureExtractor.get_mel_filters(16000, 400, 80)
    assert ours.shape == (80, 201)
    np.testing.assert_allclose(ours, ref, atol=1e-7)


def test_q8_0_roundtrip_error_is_bounded() -> None:
    x = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
    raw = quantize_q8_0(x)
    assert len(raw) == 64 * 512 // 32 * 34
    y = dequantize_q8_0(raw, x.shape)
    # within half a quantisation step, plus the fp16 rounding of the block scale
    scale = np.abs(x.reshape(-1, 32)).max(axis=1) / 127
    err = np.abs((x - y).reshape(-1, 32)).max(axis=1)
    assert np.all(err <= scale * 0.6 + 1e-8)


def test_ct2_roundtrip(tmp_path: Path) -> None:
    variables = tiny_ct2_variables(n_state=32)
    write_ct2_model(tmp_path / "model.bin", "WhisperSpec", 3, variables)
    back = read_ct2_model(tmp_path / "model.bin")
    assert back.spec == "WhisperSpec"
    for name, arr in variables.items():
        np.testing.assert_array_equal(back.variables[name], arr)
    assert back.count_layers("encoder") == 1 and back.scalar("decoder/num_heads") == 2


def test_vocab_bytes_decodes_byte_level_bpe() -> None:
    toks = vocab_bytes(["Hello", "\u0120world", "\u010a", "<|endoftext|>", "<|startoftranscript|>"])
    assert toks == [b"Hello", b" world", b"\n"]


def read_ggml_header(path: Path) -> tuple[list[int], int]:
    with open(path, "rb") as f:
        magic, *hp = struct.unpack("<I11i", f.read(48))
        assert magic == 0x67676D6C
        n_mel, n_fft = struct.unpack("<ii", f.read(8))
        f.seek(n_mel * n_fft * 4, io.SEEK_CUR)
        (n_vocab_written,) = struct.unpack("<i", f.read(4))
    return hp, n_vocab_written


@pytest.mark.parametrize("precision, ftype", [("f16", 1), ("q8_0", 2007), ("f32", 0)])
def test_tiny_conversion_header_and_whisper_cpp_load(tmp_path: Path, precision: str, ftype: int) -> None:
    from whisperop.inference.whispercpp import WhisperContext

    src = write_tiny_ct2_dir(tmp_path / "ct2")
    out = convert_ct2_dir(src, tmp_path / f"tiny-{precision}.bin", precision)  # type: ignore[arg-type]
    hp, n_vocab_written = read_ggml_header(out)
    assert hp == [51865, 1500, 64, 2, 1, 448, 64, 2, 1, 80, ftype]
    assert n_vocab_written == 50257
    ctx = WhisperContext(out, use_gpu=False)  # whisper.cpp checks every tensor's name, shape and size
    try:
        assert ctx.multilingual
    finally:
        ctx.close()


def test_parts_are_joined(tmp_path: Path) -> None:
    src = write_tiny_ct2_dir(tmp_path / "ct2")
    data = (src / "model.bin").read_bytes()
    (src / "model.bin").unlink()
    (src / "model.bin.part1").write_bytes(data[:1000])
    (src / "model.bin.part2").write_bytes(data[1000:])
    out = convert_ct2_dir(src, tmp_path / "joined.bin")
    assert out.stat().st_size > 1_000_000
    assert not list(tmp_path.glob("*.partial")), "no partial file is left behind"


def test_missing_vocabulary_and_wrong_spec_are_clear_errors(tmp_path: Path) -> None:
    src = write_tiny_ct2_dir(tmp_path / "ct2")
    (src / "vocabulary.json").unlink()
    with pytest.raises(ConversionError, match="vocabulary.json"):
        convert_ct2_dir(src, tmp_path / "x.bin")
    write_ct2_model(tmp_path / "ct2" / "model.bin", "TransformerSpec", 1, {"a": np.zeros(2, np.float32)})
    (src / "vocabulary.json").write_text("[]")
    with pytest.raises(ConversionError, match="TransformerSpec"):
        convert_ct2_dir(src, tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()


def test_synthetic_vocabulary_has_whisper_layout() -> None:
    vocab = synthetic_vocabulary()
    assert len(vocab) == 51865 and vocab[50257] == "<|endoftext|>" and vocab[50258] == "<|startoftranscript|>"


def test_loading_non_ggml_files_fails_cleanly(tmp_path: Path) -> None:
    from whisperop.inference.whispercpp import WhisperContext

    with pytest.raises(ModelNotFoundError):
        WhisperContext(tmp_path / "absent.bin", use_gpu=False)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelLoadError, match="bad magic"):
        WhisperContext(bad, use_gpu=False)
    truncated = tmp_path / "trunc.bin"
    good = convert_ct2_dir(write_tiny_ct2_dir(tmp_path / "ct2"), tmp_path / "good.bin")
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelLoadError):
        WhisperContext(truncated, use_gpu=False)
