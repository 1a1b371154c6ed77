"""The Dockerfiles as committed must build on any machine with a container
engine: these check, without an engine, each defect that made them fail
(issue 12). tests/docker/test_images.py builds and runs them for real."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from whisperop.core import crds

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile.operator", "Dockerfile.inference")
# a tag a registry resolves: repo[:port]/path:tag, optionally pinned @sha256:<real digest>
IMAGE_REF = re.compile(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+:[\w][\w.-]{0,127}(@sha256:[0-9a-f]{64})?$")


def _text(name: str) -> str:
    return (REPO / name).read_text()


def _base_image_args(name: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)", _text(name), flags=re.M))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_no_frontend_pulled_from_a_registry(name: str) -> None:
    # "# syntax=docker/dockerfile:1.7" makes BuildKit pull the frontend image: fails offline
    assert not re.search(r"^#\s*syntax\s*=", _text(name), flags=re.M | re.I)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_are_build_args_with_real_default_tags(name: str) -> None:
    args = _base_image_args(name)
    assert args, f"{name}: base images must be ARGs (CI passes its local base)"
    for arg, ref in args.items():
        assert IMAGE_REF.match(ref), f"{name}: {arg}={ref} is not repo:tag[@sha256:digest]"
        assert not re.search(r"sha256:0{64}", ref), f"{name}: {arg} has a placeholder digest"
    from_lines = re.findall(r"^FROM (\S+)", _text(name), flags=re.M)
    for ref in from_lines:
        assert re.fullmatch(r"\$\{\w+_IMAGE\}", ref), f"{name}: FROM {ref} is not a base-image build arg"
    assert "docs/images.md" in _text(name) and "pin" in (REPO / "docs" / "images.md").read_text()


def test_inference_has_cuda_switch_and_its_own_compiler() -> None:
    text = _text("Dockerfile.inference")
    assert re.search(r"^ARG GGML_CUDA=1$", text, flags=re.M), "GGML_CUDA build arg (1 = CUDA, 0 = CPU)"
    assert 'GGML_CUDA="${GGML_CUDA}" scripts/build-pywhispercpp-cuda.sh' in text
    assert "install-python-runtime.sh dev" in text
    script = (REPO / "scripts" / "docker" / "install-python-runtime.sh").read_text()
    assert "g++" in script and "cmake" in script


@pytest.mark.parametrize("name", DOCKERFILES)
def test_non_root_user_has_a_passwd_entry(name: str) -> None:
    text = _text(name)
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 65532:65532$", final, flags=re.M)
    assert re.search(r"^RUN .*add-user\.sh", final, flags=re.M), "the final stage must create the user"
    assert final.index("add-user.sh") < final.index("\nUSER ")
    # getpass.getuser() reads these first: an arbitrary uid (OpenShift) still has a name
    assert re.search(r"USER=whisperop", final) and re.search(r"LOGNAME=whisperop", final)


def test_add_user_script_writes_uid_65532(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\n")
    script = REPO / "scripts" / "docker" / "add-user.sh"
    for _ in range(2):  # idempotent: the second run adds nothing
        r = subprocess.run(["bash", str(script)], env={"ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    assert (etc / "passwd").read_text().splitlines()[1:] == ["whisperop:x:65532:65532:whisper-operator:/tmp:/usr/sbin/nologin"]
    assert (etc / "group").read_text().splitlines()[1:] == ["whisperop:x:65532:"]


def _dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a directory pattern covers its contents."""
    allowed = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p, pat[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatchcase(p, pat) for p in prefixes)
        if hit:
            allowed = neg
    return allowed


def test_dockerignore_keeps_the_context_to_what_the_images_copy() -> None:
    sources: set[str] = set()
    for name in DOCKERFILES:
        for line in _text(name).splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                sources.update(s.rstrip("/") for s in line.split()[1:-1])
    for src in sorted(sources):
        assert _dockerignore_allows(src), f".dockerignore excludes {src}, which a Dockerfile copies"
        assert _dockerignore_allows(f"{src}/x.py") or (REPO / src).is_file()
    for private in (".venv/bin/python", ".git/config", "build/lib/x", "tests/data/jfk.wav", "bench/x.py",
                    "src/whisperop/__pycache__/cli.cpython-311.pyc", "whisper_operator.egg-info/PKG-INFO", "charts/x"):
        assert not _dockerignore_allows(private), f".dockerignore lets {private} into the build context"


def test_default_inference_image_is_the_charts() -> None:
    chart = REPO / "charts" / "whisper-operator"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    assert crds.DEFAULT_IMAGE == f"{values['image']['inference']['repository']}:{app_version}"


ENGINE = ("numpy", "av", "pywhispercpp", "_pywhispercpp")
_BLOCK_ENGINE = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {ENGINE!r}:
            raise ModuleNotFoundError("No module named " + repr(name), name=name)  # as when not installed
sys.meta_path.insert(0, Block())
"""


def test_operator_image_extras_carry_no_engine() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    image_extras = re.search(r'install-python-app\.sh /opt/whisperop "([\w,]+)"', _text("Dockerfile.operator"))
    assert image_extras
    reqs = list(project["dependencies"])
    for extra in image_extras.group(1).split(","):
        reqs += extras[extra]
    names = {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in reqs}
    assert not names & {"numpy", "av", "pywhispercpp", "whisper-operator"}, names


def test_operator_and_cluster_facade_import_no_engine() -> None:
    """What the operator image runs: kopf's module, the CLI (whisperop --help,
    serve --cluster) and the cluster stores, with the engine modules blocked."""
    code = _BLOCK_ENGINE + (
        "import whisperop.operator.main, whisperop.api.app, whisperop.cluster.job_queue, whisperop.cluster.model_runtime, "
        "whisperop.stores.s3_blobs\n"
        "from whisperop import cli\n"
        "cli.build_parser().parse_args(['serve', '--help'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr[-3000:]


def test_engine_commands_say_what_is_missing_without_the_engine(tmp_path: Path) -> None:
    """`whisperop transcribe` in the operator image: a one-line answer, not a traceback."""
    code = _BLOCK_ENGINE + "from whisperop import cli\nraise SystemExit(cli.main(['transcribe', 'x.wav', '--model', 'm.bin']))\n"
    (tmp_path / "m.bin").write_bytes(b"\0")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "transcribe needs the transcription engine" in r.stderr and "whisper-operator[engine]" in r.stderr
    assert "Traceback" not in r.stderr
