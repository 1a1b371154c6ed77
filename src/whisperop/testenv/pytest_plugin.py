"""pytest fixtures for the real cluster and S3 server.

Why: starting the control plane takes seconds, so it happens once per test
session and every test that needs it shares it (each in its own namespace via
``k8s_namespace``). When the binaries are absent the tests skip with the
reason, unless ``WHISPEROP_REQUIRE_CLUSTER=1`` (CI), where they fail: a CI
that silently skipped its cluster tests would prove nothing. When a test
fails, the tail of every component's log is attached to its report.

Register with ``pytest_plugins = ["whisperop.testenv.pytest_plugin"]`` in the
top-level tests/conftest.py.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from . import binaries, external
from .environment import Environment, K8sEnv, MissingBinaries, S3Env

_ENV_FIXTURES = {"testenv", "k8s_env", "s3_env", "k8s_namespace"}
_active: list[Environment] = []


def _required() -> bool:
    return os.environ.get("WHISPEROP_REQUIRE_CLUSTER", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "cluster: needs the real Kubernetes control plane and S3 server (whisperop.testenv)",
        "s3: needs a real S3-compatible server",
    ):
        config.addinivalue_line("markers", line)


@pytest.fixture(scope="session")
def testenv(request: pytest.FixtureRequest) -> Iterator[Environment | None]:
    """The local environment (None in external mode); components start lazily."""
    if external.enabled():
        yield None
        return
    env = Environment(gpus=int(os.environ.get("WHISPEROP_TESTENV_GPUS", "1")))
    _active.append(env)
    try:
        yield env
    finally:
        _active.remove(env)
        keep = os.environ.get("WHISPEROP_TESTENV_KEEP") == "1" or request.session.testsfailed > 0
        env.stop(remove=not keep)
        if keep:
            sys.stderr.write(f"\nwhisperop testenv: logs kept in {env.log_dir}\n")


def skip_or_fail_missing(names: tuple[str, ...]) -> None:
    """Skip (or, with WHISPEROP_REQUIRE_CLUSTER=1, fail) when binaries are absent."""
    try:
        Environment.check_binaries(names)
    except MissingBinaries as e:
        if _required():
            pytest.fail(f"WHISPEROP_REQUIRE_CLUSTER=1 but {e}", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def k8s_env(testenv: Environment | None) -> K8sEnv:
    """Kubernetes as cluster admin: ``.kubeconfig``, ``.api_url``, ``.client`` (ApiClient)."""
    if testenv is None:
        return external.kubernetes()
    skip_or_fail_missing(binaries.KUBERNETES)
    return testenv.start_kubernetes()


@pytest.fixture(scope="session")
def s3_env(testenv: Environment | None) -> S3Env:
    """S3: ``.endpoint``, ``.access_key``, ``.secret_key``, ``.bucket``, ``.client()`` (boto3)."""
    if testenv is None:
        return external.s3()
    skip_or_fail_missing(binaries.S3)
    return testenv.start_s3()


@pytest.fixture
def k8s_namespace(k8s_env: K8sEnv) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (not waited for)."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_env.client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"whisperop-test": "1"})))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except Exception:
            pass


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every component's log to a failed test that used the environment."""
    report = yield
    if not report.failed or not _active or not (_ENV_FIXTURES & set(getattr(item, "fixturenames", ()))):
        return report
    if any(title == "whisperop testenv logs" for title, _ in report.sections):
        return report
    tails = "\n".join(env.log_tails() for env in _active)
    if tails:
        report.sections.append(("whisperop testenv logs", tails))
    return report
