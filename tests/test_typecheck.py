"""The installed ``whisperop`` package type-checks with mypy (the pydantic plugin included).

mypy runs where the package is installed (the strict editable install maps
``api/``, ``operator/`` and ``inference/`` under ``whisperop``; a wheel install
puts them in site-packages), so it sees the same module names as Python does —
it could not type-check ``operator/`` from the repository root, where that
folder is deliberately not a package.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import whisperop

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_whisperop_is_mypy_clean(tmp_path: Path) -> None:
    root = Path(whisperop.__path__[0]).parent
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                        "--explicit-package-bases", "--cache-dir", str(tmp_path / "mypy-cache"), "whisperop"],
                       cwd=root, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "Success: no issues found" in r.stdout
