"""Configuration lives in one settings object per deployable (issue 13).

Three properties, checked on the code itself: every variable those objects
read is in the one table of docs/configuration.md; a variable read by several
deployables has one default (``WHISPEROP_WATCH_TIMEOUT_SECS`` was 240 in the
facade and 300 in the operator); and nothing outside the settings layer reads
``os.environ``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from whisperop.api.config import ServeSettings
from whisperop.inference.config import WorkerConfig
from whisperop.operator.config import OperatorSettings

REPO = Path(__file__).resolve().parents[1]
DEPLOYABLES: tuple[type[BaseSettings], ...] = (ServeSettings, WorkerConfig, OperatorSettings)

#: files allowed to touch os.environ, and why (nothing else may)
ENVIRON_ALLOWED = {
    "src/whisperop/core/settings.py": "the settings layer (XDG_CACHE_HOME for the cache's default)",
    "operator/main.py": "writes USER for a uid without a passwd entry (kopf's getpass), reads nothing",
    "operator/kwok_workers.py": "builds the environment of the worker processes it starts",
    "inference/isolated.py": "builds the engine child's environment; the child reads the fault armed for it",
    "src/whisperop/core/gpu.py": "the NVML boundary's test hook WHISPEROP_TEST_GPU_FILE, read where NVML would be (parent and engine child)",
}
SCANNED = ("src/whisperop", "api", "operator", "inference")


def _env_names(f: FieldInfo) -> list[str]:
    alias = f.validation_alias or f.alias
    if alias is None:
        return []
    choices = getattr(alias, "choices", None)
    return [str(c) for c in choices] if choices else [str(alias)]


def _group(f: FieldInfo) -> type[BaseSettings] | None:
    factory = f.default_factory
    return factory if isinstance(factory, type) and issubclass(factory, BaseSettings) else None


def variables(cls: type[BaseSettings]) -> Iterator[tuple[str, Any, str]]:
    """(variable, default, owner) of every knob of ``cls`` and of the groups it holds."""
    for name, f in cls.model_fields.items():
        group = _group(f)
        if group is not None:
            yield from variables(group)
            continue
        default = f.default if f.default_factory is None else f.default_factory()  # type: ignore[call-arg]
        for env in _env_names(f):
            yield env, default, f"{cls.__name__}.{name}"


def test_every_variable_is_in_the_one_table() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    table = {m.group(1) for m in re.finditer(r"^\| `([A-Z0-9_]+)` \|", doc, re.MULTILINE)}
    names = {env for cls in DEPLOYABLES for env, _, _ in variables(cls)}
    assert len(names) > 80
    missing = sorted(n for n in names if n not in table and f"`{n}`" not in doc)
    assert not missing, f"not documented in docs/configuration.md: {missing}"
    stale = sorted(table - names)
    assert not stale, f"docs/configuration.md lists variables nothing reads: {stale}"


def test_a_variable_has_one_default_wherever_it_is_read() -> None:
    seen: dict[str, tuple[Any, str]] = {}
    conflicts = []
    for cls in DEPLOYABLES:
        for env, default, owner in variables(cls):
            if default is PydanticUndefined:  # required there (POD_NAME in the worker): no default to disagree with
                continue
            if env in seen and seen[env][0] != default:
                conflicts.append(f"{env}: {seen[env][0]!r} ({seen[env][1]}) vs {default!r} ({owner})")
            seen.setdefault(env, (default, owner))
    assert not conflicts, conflicts
    assert seen["WHISPEROP_WATCH_TIMEOUT_SECS"][0] == 240


def test_nothing_outside_the_settings_layer_reads_the_environment() -> None:
    reads = re.compile(r"os\.environ|os\.getenv|environ\.get\(")
    found = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith("src/whisperop/testenv/") or rel in ENVIRON_ALLOWED:
                continue  # the test environment launcher configures the processes it starts
            for no, line in enumerate(path.read_text().splitlines(), 1):
                if reads.search(line):
                    found.append(f"{rel}:{no}: {line.strip()}")
    assert not found, "\n".join(found)


def test_flags_reach_the_settings_object_as_values() -> None:
    """``whisperop worker --port 0 --model m`` override the environment without writing it."""
    import os

    before = dict(os.environ)
    cfg = WorkerConfig.from_env(pod="p", namespace="ns", model="m", port=0)
    assert (cfg.pod, cfg.namespace, cfg.model, cfg.port) == ("p", "ns", "m", 0)
    assert dict(os.environ) == before


def test_a_group_is_not_read_from_a_variable_of_its_name(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``ENGINE=ctranslate2`` is the engine group's knob, not a JSON value for the ``engine`` group
    field (a settings object that parsed it as one would not start); likewise LOG, S3, KUBE."""
    for name, value in {"ENGINE": "ctranslate2", "LOG": "x", "S3": "x", "KUBE": "x", "SERVER": "x", "FAULTS": "x",
                        "WEBHOOKS": "x", "REGISTRY": "x", "CLUSTER": "x", "POD_NAME": "p", "POD_NAMESPACE": "ns"}.items():
        monkeypatch.setenv(name, value)
    assert ServeSettings().engine.engine == "ctranslate2"
    assert WorkerConfig.from_env().engine.engine == "ctranslate2"
    assert OperatorSettings().log.level == "INFO"
