"""Which engine runs a model (issue 18): ``ENGINE=auto`` (the default) in one place,
:meth:`EngineSettings.resolved` — the model's format where only one engine can
run it, else the device class (CPU: CTranslate2, measured ~2x whisper.cpp q8_0
on this CPU, docs/benchmarks.md; GPU: whisper.cpp)."""

from __future__ import annotations

from pathlib import Path

from whisperop.core.settings import AUTO_ENGINE, EngineSettings, resolve_engine
from whisperop.inference.ct2engine import CT2Engine
from whisperop.inference.engine import WhisperEngine
from whisperop.inference.isolated import make_engine
from whisperop.modelstore.cache import resolve_model


def test_auto_is_the_default_and_the_model_format_decides(tmp_path: Path) -> None:
    s = EngineSettings(USE_GPU=False)
    assert s.engine == "auto"
    ggml = tmp_path / "ggml-x.bin"
    ggml.write_bytes(b"x")
    ct2 = tmp_path / "x-ct2"
    ct2.mkdir()
    assert s.resolved(ggml).engine == "whispercpp"
    assert s.resolved(ct2).engine == "ctranslate2"
    # no model yet (whisperop serve choosing what to fetch): the device class; this machine has no GPU
    assert s.resolved().engine == AUTO_ENGINE["cpu"] == "ctranslate2"
    assert resolve_engine("auto", on_gpu=True) == AUTO_ENGINE["gpu"] == "whispercpp"
    # an explicit ENGINE is never overridden
    assert EngineSettings(ENGINE="whispercpp", USE_GPU=False).resolved(ct2).engine == "whispercpp"
    assert EngineSettings(ENGINE="ctranslate2", USE_GPU=False).resolved().engine == "ctranslate2"


def test_the_factory_loads_each_format_with_its_engine_by_default(tiny_model: Path) -> None:
    """The default settings load a GGML file with whisper.cpp (every existing deployment) and the
    CTranslate2 export with CTranslate2 — no ENGINE needed for either."""
    s = EngineSettings(USE_GPU=False)
    cpp = make_engine(tiny_model, s)
    try:
        assert isinstance(cpp, WhisperEngine)
    finally:
        cpp.close()
    ct2 = make_engine(resolve_model("base-ct2", s.model_cache_dir), s)
    try:
        assert isinstance(ct2, CT2Engine) and ct2.compute_type == "int8"
    finally:
        ct2.close()


def test_serve_fetches_the_model_of_the_default_engine() -> None:
    from whisperop.api.cli import default_model_for

    assert default_model_for(EngineSettings(USE_GPU=False).resolved().engine) == "base-ct2"
    assert default_model_for("whispercpp") == "base-q8_0"


def test_auto_falls_back_to_whisper_cpp_where_ctranslate2_is_not_installed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``scripts/quickstart.sh`` installs the ``api`` extra only (no CTranslate2): its ``whisperop serve``
    must keep choosing whisper.cpp and base-q8_0, the model it fetched."""
    import whisperop.core.settings as settings_mod
    from whisperop.api.cli import default_model_for

    monkeypatch.setattr(settings_mod, "_ct2_installed", lambda: False)
    engine = EngineSettings(USE_GPU=False).resolved().engine
    assert engine == "whispercpp" and default_model_for(engine) == "base-q8_0"
