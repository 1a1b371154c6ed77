"""Enable the cluster fixtures for this folder even before tests/conftest.py does.

Why: the fixtures live in whisperop.testenv.pytest_plugin; the top-level
conftest registers them with `pytest_plugins` (see tests/cluster_fixtures.py),
and this hook does the same only when that has not happened, so the plugin is
never registered twice.
"""

from __future__ import annotations

import pytest

PLUGIN = "whisperop.testenv.pytest_plugin"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
