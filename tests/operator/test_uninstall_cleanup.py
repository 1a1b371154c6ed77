"""``whisperop operator cleanup`` (the chart's pre-delete hook) on the real control
plane and MinIO: with the operator running it only deletes, and the operator's
own finalization (S3 clean-up) runs; with the operator gone it releases
whisperop's finalizers so nothing stays stuck — and leaves any other
controller's finalizer alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from whisperop.core import crds

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster
KOPF = "kopf.zalando.org/KopfFinalizerMarker"
FOREIGN = "example.org/keep"


def _cleanup(cluster: Cluster, *args: str) -> list[dict[str, Any]]:
    """Run the CLI as the hook does; returns its JSON log records."""
    r = subprocess.run([sys.executable, "-m", "whisperop", "--log-format", "json", "operator", "cleanup",
                        "--namespace", cluster.ns, *args],
                       env=cluster.env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]


def _finalizers(res: Any, name: str) -> list[str]:
    return res.get(name)["metadata"].get("finalizers") or []


def _setup(cluster: Cluster, tiny_model: Path, jfk_s3: str, n_jobs: int = 2) -> list[str]:
    """Operator running, a model and jobs carrying their finalizers, a result object per job in S3."""
    cluster.start_operator()
    cluster.create_model(modelURI=str(tiny_model), resources={"gpus": 0}, idleTimeoutSeconds=60)
    names = [cluster.create_job(jfk_s3, name=f"job-{i}")["metadata"]["name"] for i in range(n_jobs)]
    for n in names:
        wait_for(lambda n=n: crds.FINALIZER in _finalizers(cluster.jobs, n), 60, f"{n} finalizer")
        # what a worker would have written: deleted by the operator's finalization only
        cluster.s3_env.client().put_object(Bucket=cluster.s3_env.bucket,
                                           Key=crds.results_prefix(cluster.ns, n) + "transcript.json", Body=b"{}")
    wait_for(lambda: KOPF in _finalizers(cluster.models, "default"), 60, "kopf finalizer on the model")
    return names


def _results(cluster: Cluster) -> list[str]:
    resp = cluster.s3_env.client().list_objects_v2(Bucket=cluster.s3_env.bucket, Prefix=f"results/{cluster.ns}/")
    return [o["Key"] for o in resp.get("Contents", [])]


def test_cleanup_with_running_operator_finalizes_everything(cluster: Cluster, tiny_model: Path, jfk_s3: str) -> None:
    _setup(cluster, tiny_model, jfk_s3)
    assert len(_results(cluster)) == 2
    logs = _cleanup(cluster, "--timeout", "240")  # the garbage collector's pace on a loaded machine
    assert cluster.jobs.list()["items"] == [] and cluster.models.list()["items"] == []
    done = next(r for r in logs if r["msg"] == "clean-up finished")
    assert (done["deleted"], done["finalized"], done["released"], done["remaining"]) == (3, 3, 0, 0), logs
    print(f"cleanup with a running operator: 2 jobs + 1 model (and its Deployment and pod) gone in {done['secs']} s")
    assert _results(cluster) == []  # the operator's clean-up ran: results deleted
    # the model was deleted in the foreground: its Deployment and pods were gone before it was
    assert cluster.deployment_replicas() is None and cluster.pods() == []
    # idempotent: a retried hook finds nothing and succeeds
    done = next(r for r in _cleanup(cluster, "--timeout", "5") if r["msg"] == "clean-up finished")
    assert done["deleted"] == 0


def test_cleanup_without_operator_releases_only_our_finalizers(cluster: Cluster, tiny_model: Path, jfk_s3: str) -> None:
    names = _setup(cluster, tiny_model, jfk_s3)
    # another controller's finalizer on one job: never ours to remove
    obj = cluster.jobs.get(names[1])
    cluster.jobs.patch(names[1], {"metadata": {"finalizers": [*obj["metadata"]["finalizers"], FOREIGN]}})
    cluster.kill_operator()
    logs = _cleanup(cluster, "--timeout", "3")
    done = next(r for r in logs if r["msg"] == "clean-up finished")
    assert (done["deleted"], done["finalized"], done["released"], done["remaining"]) == (3, 0, 3, 1), logs
    warned = {r["object"] for r in logs if r["level"] == "warning" and r["msg"].startswith("finalizer removed")}
    assert warned == {*(f"TranscriptionJob/{n}" for n in names), "WhisperModel/default"}
    assert [o["metadata"]["name"] for o in cluster.jobs.list()["items"]] == [names[1]]
    left = cluster.jobs.get(names[1])["metadata"]
    assert left["finalizers"] == [FOREIGN] and left.get("deletionTimestamp")
    assert cluster.models.list()["items"] == []
    # no operator: the S3 objects stay (the warning says so)
    assert len(_results(cluster)) == 2
    cluster.jobs.patch(names[1], {"metadata": {"finalizers": []}})


def test_namespace_deleted_without_uninstall_is_released(cluster: Cluster, tiny_model: Path, jfk_s3: str) -> None:
    """`kubectl delete namespace` with no operator left: the namespace stays Terminating on our
    finalizers until `whisperop operator cleanup --timeout 0` (the documented way out) runs."""
    from kubernetes import client

    names = _setup(cluster, tiny_model, jfk_s3, n_jobs=1)
    cluster.kill_operator()
    core = client.CoreV1Api(cluster.api)
    core.delete_namespace(cluster.ns)
    # the namespace controller has asked for the deletion of our objects, which cannot go
    wait_for(lambda: cluster.jobs.get(names[0])["metadata"].get("deletionTimestamp"), 60, "job being deleted")

    def stuck_on_ours() -> bool:
        conds = core.read_namespace(cluster.ns).status.conditions or []
        return any(c.type == "NamespaceFinalizersRemaining" and c.status == "True" and crds.FINALIZER in (c.message or "")
                   for c in conds)

    wait_for(stuck_on_ours, 60, "namespace Terminating on whisperop.io/cleanup")
    assert core.read_namespace(cluster.ns).status.phase == "Terminating"
    done = next(r for r in _cleanup(cluster, "--timeout", "0") if r["msg"] == "clean-up finished")
    assert done["released"] == 2 and done["remaining"] == 0, done

    def gone() -> bool:
        try:
            core.read_namespace(cluster.ns)
            return False
        except client.ApiException as exc:
            return exc.status == 404

    wait_for(gone, 120, "namespace deleted")
