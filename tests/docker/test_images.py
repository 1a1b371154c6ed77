"""Build both images with scripts/build-images.sh and run them as containers.

Needs a running container engine (scripts/container-engine.sh start); skips
without one, fails instead with WHISPEROP_REQUIRE_CLUSTER=1 (CI), like the
cluster tests. The first build takes minutes (mmdebstrap bases, whisper.cpp
compiled for the CPU image); a warm run only checks the inputs' hash.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.images, pytest.mark.timeout(7200)]


def _docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"docker {' '.join(args)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _engine_missing() -> str | None:
    if shutil.which("docker") is None:
        return "docker not installed (apt-get install docker.io containerd runc mmdebstrap)"
    r = subprocess.run(["docker", "version"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return f"no container engine answers: scripts/container-engine.sh start ({r.stderr.strip()[-200:]})"
    return None


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    missing = _engine_missing()
    if missing:
        if os.environ.get("WHISPEROP_REQUIRE_CLUSTER", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"WHISPEROP_REQUIRE_CLUSTER=1 but {missing}", pytrace=False)
        pytest.skip(missing)
    r = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh")], capture_output=True, text=True, timeout=7000)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-6000:]
    tags = re.findall(r"^  (\S+)  \d+ MB$", r.stdout, flags=re.M)
    found = {t.rsplit("/", 1)[-1].split(":")[0].removeprefix("whisperop-"): t for t in tags}
    assert set(found) == {"operator", "inference"}, r.stdout
    return found


def test_operator_image_runs_as_65532_with_a_name(images: dict[str, str]) -> None:
    img = images["operator"]
    assert "usage: whisperop" in _docker("run", "--rm", "--user", "65532", img, "--help").stdout
    assert _docker("run", "--rm", "--entrypoint", "id", img).stdout.strip() == "uid=65532(whisperop) gid=65532(whisperop) groups=65532(whisperop)"


@pytest.mark.parametrize("env", [[], ["-e", "USER=", "-e", "LOGNAME="]], ids=["image-env", "no-user-env"])
def test_operator_starts_under_an_arbitrary_uid(images: dict[str, str], env: list[str]) -> None:
    """OpenShift's restricted SCC runs the image as a random uid with group 0:
    kopf's start-up (identity, then login: no cluster here, so it stops there)
    must not die on getpwuid, and every line it writes is JSON."""
    r = _docker("run", "--rm", "--user", "1234567:0", "--network", "none", "-e", "WHISPEROP_METRICS_PORT=0", *env,
                "--entrypoint", "kopf", images["operator"], "run", "-m", "whisperop.operator.main", "--standalone",
                "--namespace", "nowhere", timeout=300, check=False)
    assert "getpwuid" not in r.stderr and "KeyError" not in r.stderr, r.stderr[-3000:]
    docs = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    loggers = {d["logger"] for d in docs}
    assert "kopf.activities.startup" in loggers, loggers  # our startup handler ran: past the identity
    assert any("credentials" in d["msg"] for d in docs), docs[-3:]


def test_operator_image_carries_no_engine(images: dict[str, str]) -> None:
    code = "import importlib.util as u; print([m for m in ('numpy', 'av', 'pywhispercpp', '_pywhispercpp') if u.find_spec(m)])"
    r = _docker("run", "--rm", "--entrypoint", "/opt/whisperop/bin/python", images["operator"], "-c", code)
    assert r.stdout.strip() == "[]"


def test_inference_image_transcribes_jfk(images: dict[str, str], base_model: Path, jfk_wav: Path,
                                         references: dict[str, dict[str, str]]) -> None:
    """whisper.cpp compiled in the image and working: the real base model,
    mounted read-only, on a read-only root filesystem as in the pods."""
    r = _docker("run", "--rm", "--user", "65532:65532", "--read-only", "--tmpfs", "/tmp", "--network", "none",
                "-v", f"{base_model}:/models/ggml-base.bin:ro", "-v", f"{jfk_wav}:/data/jfk.wav:ro",
                "--entrypoint", "whisperop", images["inference"],
                "transcribe", "/data/jfk.wav", "--model", "/models/ggml-base.bin", "--language", "en", "--quiet", timeout=900)
    words = re.findall(r"[a-z]+", r.stdout.lower())
    expected = re.findall(r"[a-z]+", references["jfk.wav"]["text"].lower())
    assert words == expected, (r.stdout, r.stderr[-2000:])


def test_inference_worker_logs_json(images: dict[str, str]) -> None:
    """The worker entrypoint with no cluster credentials: it dies, and says so in JSON lines."""
    r = _docker("run", "--rm", "--network", "none", "-e", "POD_NAME=w-0", "-e", "POD_NAMESPACE=nowhere",
                images["inference"], "--model-uri", "/nonexistent/ggml.bin", "--port", "0", timeout=300, check=False)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines, r.stdout
    docs = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert any(d["level"] == "critical" and "exc" in d for d in docs), docs  # no credentials: the exit is a JSON line
