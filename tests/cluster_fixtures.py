"""Cluster and S3 fixtures for the test suite (re-exported from the package plugin).

Why a file here: the fixtures live in ``whisperop.testenv.pytest_plugin`` so
any test tree can use them; the top-level tests/conftest.py enables them for
this repository with one line:

    pytest_plugins = ["whisperop.testenv.pytest_plugin"]

Until that line exists, tests/testenv/conftest.py registers the plugin for
its own folder via :func:`register`. Fixtures: ``k8s_env`` (kubeconfig,
api_url, client), ``s3_env`` (endpoint, access_key, secret_key, bucket,
client()), ``k8s_namespace`` (a fresh namespace per test), ``testenv``.
"""

from __future__ import annotations

import pytest

PLUGIN = "whisperop.testenv.pytest_plugin"


def register(config: pytest.Config) -> None:
    """Register the plugin once, whether or not tests/conftest.py already did."""
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
