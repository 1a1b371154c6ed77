"""The repository layout never shadows the standard library.

``operator/`` holds the kopf operator but must never be importable as the
bare name ``operator`` (Python's standard module). This is checked in a clean
virtualenv where the project is installed as a plain wheel, running from the
repository root (where ``''`` leads ``sys.path``).
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_no_init_next_to_operator_folder() -> None:
    assert (REPO / "operator").is_dir()
    assert not (REPO / "operator" / "__init__.py").exists()
    assert not (REPO / "whisperop" / "__init__.py").exists(), "a top-level whisperop/ package would shadow the install"


@pytest.mark.timeout(600)
def test_import_operator_from_repo_root_in_clean_venv(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # install the project itself (no dependencies: only the layout is under test)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(REPO)], check=True, cwd=tmp_path)
    probe = (
        "import importlib.util, operator, sys, sysconfig;"
        "stdlib = sysconfig.get_paths()['stdlib'];"
        "assert operator.__file__.startswith(stdlib), operator.__file__;"
        "assert hasattr(operator, 'itemgetter');"
        "spec = importlib.util.find_spec('operator');"
        "assert spec.origin.startswith(stdlib), spec.origin;"
        "import whisperop.operator, whisperop.api, whisperop.inference, whisperop.core;"
        "assert 'site-packages' in whisperop.operator.__path__[0], list(whisperop.operator.__path__);"
        # the web page and the docs' vendored assets ship as package data (api/routers/web.py serves them)
        "import importlib.resources as res; static = res.files('whisperop.api') / 'static';"
        "assert all((static / f).is_file() for f in ('index.html', 'app.js', 'docs.js', 'vendor/redoc/redoc.standalone.js',"
        " 'vendor/swagger-ui/swagger-ui-bundle.js', 'vendor/swagger-ui/LICENSE')), sorted(p.name for p in static.iterdir());"
        "print('ok')"
    )
    out = subprocess.run([str(py), "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    # a fresh interpreter that has not imported operator yet, with the repo root first on sys.path
    out = subprocess.run([str(py), "-S", "-c", "import sys; sys.path.insert(0, '.'); import operator; print(operator.__file__)"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "/operator/" not in out.stdout and out.stdout.strip().endswith("operator.py"), out.stdout + out.stderr
