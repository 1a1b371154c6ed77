"""The operator process in a container: a uid without an /etc/passwd entry
(the image's 65532 before issue 12, any uid OpenShift assigns) and JSON logs
that include kopf's own lines. Both run the real `kopf run` / real getpwuid."""

from __future__ import annotations

import getpass
import json
import os
import pwd
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NO_PASSWD_UID = 1234567  # no entry on any sane host; asserted below


def _unreachable_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose API server refuses connections: the operator starts,
    logs, and retries, with no cluster needed."""
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    return kc


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME", "LNAME", "USERNAME", "POD_ID")}
    env.update(KUBECONFIG=str(_unreachable_kubeconfig(tmp_path)), WHISPEROP_METRICS_PORT="0", HOME=str(tmp_path), **extra)
    return env


def test_ensure_user_name_without_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from whisperop.operator import main

    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(var, raising=False)

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(KeyError):
        getpass.getuser()  # what kopf's peering identity did, and crashed on
    assert main.ensure_user_name() == f"uid-{os.getuid()}"
    assert getpass.getuser() == f"uid-{os.getuid()}"


def test_ensure_user_name_keeps_a_real_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from whisperop.operator import main

    monkeypatch.setenv("USER", "alice")
    monkeypatch.delenv("LOGNAME", raising=False)
    assert main.ensure_user_name() == "alice"
    assert os.environ["USER"] == "alice"


def _others_can_run(path: Path) -> bool:
    """Another uid can execute path: every parent folder searchable, the file executable."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


@pytest.mark.skipif(os.getuid() != 0, reason="running as another uid needs root (CI runs as root)")
def test_operator_identity_as_uid_without_passwd_entry(tmp_path: Path) -> None:
    """The real thing: a process whose uid has no entry imports the operator
    module (as `kopf run -m` does) and asks kopf for its peering identity.
    (The image test runs the operator image as --user 1234567:0 too.)"""
    if not _others_can_run(Path(sys.executable)) or not _others_can_run(REPO / "operator" / "main.py"):
        pytest.skip(f"{sys.executable} or the checkout is not readable by other uids (tests/docker/test_images.py covers it)")
    with pytest.raises(KeyError):
        pwd.getpwuid(NO_PASSWD_UID)
    code = ("import whisperop.operator.main\n"
            "from kopf._core.engines import peering\n"
            "print(peering.detect_own_id(manual=False))\n")
    tmp_path.chmod(0o777)
    r = subprocess.run([sys.executable, "-c", code], env=_clean_env(tmp_path), user=NO_PASSWD_UID, group=0,
                       capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith(f"uid-{NO_PASSWD_UID}@"), r.stdout


def _read_lines(proc: subprocess.Popen[str], until: str, timeout: float) -> list[str]:
    """stderr lines of proc until one contains `until` (or timeout / exit)."""
    lines: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if until in line:
                seen.set()
        seen.set()

    threading.Thread(target=pump, daemon=True).start()
    seen.wait(timeout)
    return lines


def test_kopf_logs_are_json_with_log_format_json(tmp_path: Path) -> None:
    """`kopf run` installs its own text handler before it imports our module;
    with LOG_FORMAT=json every line it writes must still be one JSON object."""
    kopf = Path(sys.executable).parent / "kopf"
    proc = subprocess.Popen([str(kopf), "run", "-m", "whisperop.operator.main", "--standalone", "--namespace", "nowhere"],
                            env=_clean_env(tmp_path, LOG_FORMAT="json", USER="tester"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    try:
        # the API server is unreachable: kopf logs its start-up and its first failed request
        lines = _read_lines(proc, until="Request attempt #1", timeout=180)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert lines, "the operator wrote nothing"
    docs = []
    for line in lines:
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    loggers = {d["logger"] for d in docs}
    assert any(name.startswith("kopf.") for name in loggers), loggers
    assert all({"ts", "level", "logger", "msg"} <= d.keys() for d in docs)
    assert not any("settings" in d for d in docs), "kopf's settings object is no log field"


@pytest.mark.parametrize("kubeconfig", ["unreachable", "missing"])
def test_worker_logs_are_json_with_log_format_json(tmp_path: Path, kubeconfig: str) -> None:
    """An unreachable API (the worker logs its failure) and no credentials at
    all (it dies in the kubernetes client: the traceback is a JSON line too)."""
    whisperop = Path(sys.executable).parent / "whisperop"
    env = _clean_env(tmp_path, LOG_FORMAT="json", POD_NAME="w-0", POD_NAMESPACE="nowhere", USER="tester")
    if kubeconfig == "missing":
        env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")
    r = subprocess.run([str(whisperop), "worker", "--model-uri", str(tmp_path / "missing.bin"), "--port", "0"],
                       env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines
    docs = [json.loads(ln) for ln in lines]  # raises on any non-JSON line
    assert any(d["logger"] in ("whisperop.worker", "whisperop") and d["level"] in ("error", "critical") for d in docs), docs
