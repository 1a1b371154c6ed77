"""``whisperop operator kwok-workers`` (docs/testing.md, "Cluster mode by hand"): the documented
command, not test code, runs a worker for each Running kwok inference pod; a job then completes
and the workers stop with the command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
import pytest

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster


def test_kwok_workers_command_runs_the_pods_workers(cluster: Cluster, tiny_model: Path, jfk_s3: str) -> None:
    c = cluster
    c.start_operator()
    c.create_model(modelURI=str(tiny_model), minReplicas=1, maxReplicas=1, idleTimeoutSeconds=60, resources={"gpus": 0})
    logs = c.tmp / "kw"
    out = open(c.tmp / "kwok-workers.log", "ab")
    c.logs.append(c.tmp / "kwok-workers.log")
    kw = subprocess.Popen([sys.executable, "-m", "whisperop", "operator", "kwok-workers", "--namespace", c.ns,
                           "--log-dir", str(logs)], env=c.env, stdout=out, stderr=subprocess.STDOUT, cwd=str(c.tmp),
                          start_new_session=True)
    try:
        wait_for(lambda: c.model_status().get("state") == "ready", 120, "model ready through kwok-workers")
        job = c.create_job(jfk_s3)["metadata"]["name"]
        done = c.wait_phase(job, ("Done", "Failed"), timeout=180)
        assert (done.get("status") or {}).get("phase") == "Done", done.get("status")
        [pod] = c.running_pods()
        assert (logs / f"worker-{pod}.log").read_text().count("job done") == 1
    finally:
        kw.send_signal(signal.SIGTERM)
        kw.wait(60)
    assert kw.returncode == 0
    text = (c.tmp / "kwok-workers.log").read_text()
    assert "worker started" in text, text

    pids = [int(m) for m in re.findall(r"worker started .*pid=(\d+)", text)]
    assert pids, text
    for pid in pids:  # the command stopped its workers (and waited for them) before it exited
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
