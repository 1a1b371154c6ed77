"""Helpers for the chart tests: the helm/kubectl binaries of whisperop.testenv
and the operator tests' harness (processes, waits), loaded by path."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PLUGIN = "whisperop.testenv.pytest_plugin"
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "whisper-operator"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
CPU_VALUES = CHART / "ci" / "cpu-values.yaml"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)


def _load_harness() -> Any:
    spec = importlib.util.spec_from_file_location("whisperop_chart_op_harness", REPO / "tests" / "operator" / "conftest.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


harness = _load_harness()


def helm_bin() -> str:
    from whisperop.testenv import binaries

    path = binaries.binary("helm")
    if not path.exists():
        if os.environ.get("WHISPEROP_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"helm is not built ({path}); run scripts/build-testenv.sh")
        pytest.skip(f"helm is not built ({path}); run scripts/build-testenv.sh helm")
    return str(path)


def helm(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([helm_bin(), *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **(env or {})})
    if check:
        assert r.returncode == 0, f"helm {' '.join(args)}\n{r.stdout}\n{r.stderr}"
    return r


def render(*args: str, namespace: str = "whisper", release: str = "wo") -> list[dict[str, Any]]:
    out = helm("template", release, str(CHART), "--namespace", namespace, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session")
def jfk_s3(s3_env: Any, jfk_wav: Path) -> str:
    key = "inputs/chart/jfk.wav"
    s3_env.client().upload_file(str(jfk_wav), s3_env.bucket, key)
    return f"s3://{s3_env.bucket}/{key}"
