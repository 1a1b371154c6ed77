"""The Dockerfiles are thin: every RUN step is a script in the repo, and these
tests run those scripts directly (no container engine on the project machine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile.operator", "Dockerfile.inference")


def _run_steps(name: str) -> list[str]:
    text = (REPO / name).read_text().replace("\\\n", " ")
    return [line.split("RUN", 1)[1].strip() for line in text.splitlines() if line.startswith("RUN ")]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_run_step_is_a_repo_script(name: str) -> None:
    steps = _run_steps(name)
    assert steps
    for step in steps:
        scripts = re.findall(r"(?:^|[\s=])((?:/tmp/|scripts/)[\w./-]+\.sh)", step)
        assert scripts, f"{name}: RUN step is not a repo script: {step}"
        for s in scripts:
            rel = s.replace("/tmp/", "scripts/docker/")
            assert (REPO / rel).is_file(), f"{name}: {s} not in the repo"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_scripts_are_shellcheck_clean() -> None:
    scripts = sorted(str(p) for p in (REPO / "scripts" / "docker").glob("*.sh")) + [str(REPO / "tests" / "e2e" / "kind.sh")]
    scripts += [str(REPO / "scripts" / n) for n in ("build-images.sh", "container-engine.sh", "build-pywhispercpp-cuda.sh")]
    r = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout


@pytest.mark.slow  # about a minute: a full pip install
def test_install_python_app_into_prefix(tmp_path: Path) -> None:
    prefix = tmp_path / "opt-whisperop"
    r = subprocess.run(["bash", str(REPO / "scripts" / "docker" / "install-python-app.sh"), str(prefix), "api,cluster"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"installed whisper-operator[api,cluster] into {prefix}" in r.stdout
    # the image's entrypoints: the CLI (facade/worker) and kopf (operator)
    for argv in ([prefix / "bin" / "whisperop", "--help"], [prefix / "bin" / "kopf", "--help"],
                 [prefix / "bin" / "whisperop", "serve", "--help"], [prefix / "bin" / "whisperop", "worker", "--help"]):
        out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (argv, out.stderr[-2000:])
    r = subprocess.run([str(prefix / "bin" / "python"), "-c",
                        "import whisperop.operator.main, whisperop.api.app, whisperop.inference.worker; print('ok')"],
                       capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert r.stdout.strip() == "ok", r.stderr[-2000:]


def _failing_sdist(tmp_path: Path) -> Path:
    """An sdist named like pywhispercpp's whose build runs CMake on a project
    that fails to configure, then writes a screenful more (as pywhispercpp's
    setup.py and pip's traceback do): the CMake error is far from the end."""
    root = tmp_path / "pywhispercpp-1.5.1"
    root.mkdir()
    (root / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(whisperop_probe CXX)\n"
        'message(FATAL_ERROR "whisperop-probe: CUDA toolkit not found (test)")\n')
    (root / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n')
    (root / "setup.py").write_text(
        "import subprocess, sys, tempfile\n"
        "from setuptools import setup\n"
        "if any(a.startswith('bdist_wheel') for a in sys.argv):\n"
        "    r = subprocess.run(['cmake', '-S', '.', '-B', tempfile.mkdtemp()])\n"
        "    for i in range(150):\n"
        "        print(f'  after the failure, line {i}: setup.py and pip keep talking')\n"
        "    sys.exit(r.returncode or 1)\n"
        "setup(name='pywhispercpp', version='1.5.1')\n")
    sdist = tmp_path / "pywhispercpp-1.5.1.tar.gz"
    subprocess.run(["tar", "-C", str(tmp_path), "-czf", str(sdist), root.name], check=True)
    return sdist


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_failed_build_shows_the_cmake_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYWHISPERCPP_SDIST": str(_failing_sdist(tmp_path)), "GGML_CUDA": "0"}
    r = subprocess.run(["bash", str(REPO / "scripts" / "build-pywhispercpp-cuda.sh"), str(tmp_path / "out")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "CMake Error" in r.stderr and "whisperop-probe: CUDA toolkit not found (test)" in r.stderr, r.stderr[-3000:]
