"""Fixtures shared by every test package: models and reference audio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["whisperop.testenv.pytest_plugin"]

SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "audio"
REPO_AUDIO = Path(__file__).resolve().parent / "data"


def audio_dir() -> Path:
    """The project's reference speech (../shared/data/audio beside the checkout)."""
    return SHARED_AUDIO


@pytest.fixture(scope="session")
def references() -> dict[str, dict[str, str]]:
    return json.loads((SHARED_AUDIO / "references.json").read_text())


@pytest.fixture(scope="session")
def jfk_wav() -> Path:
    return SHARED_AUDIO / "jfk.wav"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-weight GGML model built through the real converter (a few MB)."""
    from whisperop.modelstore.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "ggml-tiny-random.bin")


@pytest.fixture(scope="session")
def base_model() -> Path:
    """OpenAI whisper base, converted from the offline CTranslate2 packages
    into the model cache on first use (same path as `whisperop model fetch`)."""
    from whisperop.core.settings import EngineSettings
    from whisperop.modelstore.cache import resolve_model

    return resolve_model("base", EngineSettings().model_cache_dir)


@pytest.fixture(scope="session")
def base_model_q8(base_model: Path) -> Path:
    from whisperop.core.settings import EngineSettings
    from whisperop.modelstore.cache import resolve_model

    return resolve_model("base-q8_0", EngineSettings().model_cache_dir)
