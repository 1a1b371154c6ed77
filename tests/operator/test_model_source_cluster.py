"""A WhisperModel with ``runtimeClassName`` and a PVC model source on the real
control plane, in a namespace that enforces Pod Security "restricted": the
operator's Deployment is accepted, its pods are admitted (Pod Security and the
RuntimeClass admission plugin) and scheduled with the claim, and a worker that
loads the resolved file (never downloading anything) completes a job."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from whisperop.core import modelsource

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster

CLAIM, FILE = "whisper-models", "large-v3/ggml-tiny-random.bin"


def _restricted_pod(ns: str, runtime_class: str) -> dict[str, Any]:
    sc = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
          "seccompProfile": {"type": "RuntimeDefault"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rc-probe", "namespace": ns},
            "spec": {"runtimeClassName": runtime_class, "securityContext": {"runAsUser": 65532},
                     "containers": [{"name": "c", "image": "busybox", "securityContext": sc}]}}


def _bound_claim(core: Any, ns: str, pv: str, claim: str, host_dir: Path, created: list[tuple[str, str]]) -> None:
    """A pre-populated hostPath PersistentVolume and the claim bound to it (the PV controller
    of the real controller-manager binds them); the cluster-scoped PV is noted for clean-up."""
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(host_dir)},
                 "claimRef": {"namespace": ns, "name": claim}}})
    created.append(("pv", pv))
    core.create_namespaced_persistent_volume_claim(ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv,
                 "resources": {"requests": {"storage": "1Gi"}}}})


def _cleanup(what: list[tuple[str, str]], api: Any) -> None:
    from kubernetes import client

    for kind, name in what:
        try:
            if kind == "pv":
                client.CoreV1Api(api).delete_persistent_volume(name)
            else:
                client.NodeV1Api(api).delete_runtime_class(name)
        except Exception:
            pass


def test_pvc_source_and_runtime_class_in_a_restricted_namespace(cluster: Cluster, tiny_model: Path,
                                                                  jfk_s3: str) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ns, api = cluster.ns, cluster.api
    core, apps, node = client.CoreV1Api(api), client.AppsV1Api(api), client.NodeV1Api(api)
    core.patch_namespace(ns, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                                      "pod-security.kubernetes.io/enforce-version": "latest"}}})
    rc, pv = f"nvidia-{ns}", f"models-{ns}"  # cluster-scoped: one per test namespace
    created: list[tuple[str, str]] = []
    try:
        # what the API server does: a Pod naming a RuntimeClass that does not exist is rejected
        # (RuntimeClass admission), so the RuntimeClass must exist before the inference pods
        with pytest.raises(ApiException) as err:
            core.create_namespaced_pod(ns, _restricted_pod(ns, rc))
        assert f'RuntimeClass "{rc}" not found' in json.loads(err.value.body)["message"], err.value.body
        node.create_runtime_class({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                                   "metadata": {"name": rc}, "handler": "nvidia"})
        created.append(("rc", rc))
        # a pre-populated volume, bound to the claim the model names
        _bound_claim(core, ns, pv, CLAIM, tiny_model.parent, created)

        cluster.start_operator()
        cluster.create_model(source={"pvc": {"claimName": CLAIM, "path": FILE}}, runtimeClassName=rc,
                             idleTimeoutSeconds=120, resources={"gpus": 0})
        dep = wait_for(lambda: _deployment(apps, ns), 30, "Deployment whisper-default")
        pod_spec = dep["spec"]["template"]["spec"]
        assert pod_spec["runtimeClassName"] == rc
        assert {"name": modelsource.PVC_VOLUME, "persistentVolumeClaim": {"claimName": CLAIM, "readOnly": True}} \
            in pod_spec["volumes"]
        c = pod_spec["containers"][0]
        assert {"name": modelsource.PVC_VOLUME, "mountPath": modelsource.PVC_MOUNT_DIR, "readOnly": True} \
            in c["volumeMounts"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env[modelsource.MODEL_PATH_ENV] == f"{modelsource.PVC_MOUNT_DIR}/{FILE}"
        assert pod_spec["securityContext"]["runAsUser"] == 65532 and env["WHISPEROP_MODEL_CACHE"] == \
            "/var/cache/whisperop/models"
        cond = wait_for(lambda: next((x for x in cluster.model_status().get("conditions") or []
                                      if x["type"] == "Accepted"), None), 20, "Accepted condition")
        assert cond["status"] == "True" and cond["reason"] == "ModelSourceValid" and CLAIM in cond["message"]

        # a job scales it from zero; the ReplicaSet's pod passes admission and is scheduled with the claim
        cluster.create_job(jfk_s3, name="from-pvc")
        pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 60, "inference pod Running")
        live = core.read_namespaced_pod(pod, ns)
        assert live.spec.runtime_class_name == rc
        assert any(v.persistent_volume_claim and v.persistent_volume_claim.claim_name == CLAIM for v in live.spec.volumes)
        assert core.read_namespaced_persistent_volume_claim(CLAIM, ns).status.phase == "Bound"
        # kwok runs no containers: the worker runs locally with the pod's identity; the claim's file is
        # where WHISPEROP_MODEL_PATH points (here: the tiny model, as the mount would show it)
        local = tiny_model.parent / FILE
        local.parent.mkdir(parents=True, exist_ok=True)
        if not local.exists():
            local.symlink_to(tiny_model)
        cluster.start_worker(pod, extra={modelsource.MODEL_PATH_ENV: str(local)})
        st = cluster.wait_phase("from-pvc", ("Done", "Failed"), timeout=120)["status"]
        assert st["phase"] == "Done", st
        cache = cluster.tmp / "cache"  # the worker's WHISPEROP_MODEL_CACHE: nothing was downloaded into it
        assert not cache.exists() or not any(cache.rglob("*")), list(cache.rglob("*"))
    finally:
        cluster.stop_all()
        _cleanup(created, api)


def _deployment(apps: Any, ns: str) -> dict[str, Any] | None:
    from kubernetes.client.rest import ApiException

    try:
        return json.loads(apps.read_namespaced_deployment("whisper-default", ns, _preload_content=False).data)
    except ApiException:
        return None


def test_operator_reports_an_invalid_source_stored_under_an_older_crd(cluster: Cluster,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The CEL rules keep invalid sources out of the API; a WhisperModel stored before them (older
    CRD) can still name none or two. The operator's reconcile, run in-process against the real API
    server on such a body, renders nothing and reports Accepted=False/Ready=False with reason
    InvalidModelSource and one Warning Event (not one per reconcile)."""
    from whisperop.operator import config as opconfig
    from whisperop.operator import models

    monkeypatch.setattr(opconfig, "_api", cluster.api)
    stored = cluster.create_model(modelURI="/models/m.bin", resources={"gpus": 0})
    # the body as an older CRD would have stored it: both sources
    body = {**stored, "spec": {**stored["spec"], "source": {"pvc": {"claimName": "models", "path": "m.bin"}}}}
    assert models.reconcile(body) == {"invalid": "set exactly one model source: modelURI or source.pvc, not both"}
    st = cluster.model_status()
    conds = {c["type"]: c for c in st["conditions"]}
    for t in ("Accepted", "Ready"):
        assert conds[t]["status"] == "False" and conds[t]["reason"] == "InvalidModelSource", conds
        assert "exactly one model source" in conds[t]["message"]
    assert cluster.deployment_replicas() is None  # nothing rendered
    events = wait_for(lambda: cluster.events("InvalidModelSource"), 10, "InvalidModelSource Event")
    assert events[0].type == "Warning" and "exactly one model source" in events[0].message
    again = cluster.models.get("default")
    models.reconcile({**again, "spec": body["spec"]})  # same problem, same generation: no second Event
    assert len(cluster.events("InvalidModelSource")) == 1


def test_missing_claim_is_reported_until_it_appears(cluster: Cluster, tiny_model: Path) -> None:
    """A PVC source naming a claim that does not exist: the Deployment is still rendered, the model
    reports ModelSourceAvailable=False/ClaimNotFound with one Warning Event (not one per reconcile);
    once the claim is created and bound, the condition turns True/ClaimBound by itself."""
    from kubernetes import client

    ns, api = cluster.ns, cluster.api
    core = client.CoreV1Api(api)
    pv = f"late-{ns}"
    claim = "models-later"
    created: list[tuple[str, str]] = []
    try:
        cluster.start_operator()
        cluster.create_model(source={"pvc": {"claimName": claim, "path": FILE}}, resources={"gpus": 0})

        def source_cond() -> dict[str, Any] | None:
            return next((c for c in cluster.model_status().get("conditions") or []
                         if c["type"] == "ModelSourceAvailable"), None)

        cond = wait_for(source_cond, 30, "ModelSourceAvailable condition")
        assert (cond["status"], cond["reason"]) == ("False", "ClaimNotFound"), cond
        assert claim in cond["message"] and cond["observedGeneration"] == cluster.models.get("default")["metadata"]["generation"]
        assert cluster.deployment_replicas() is not None, "a missing claim must not stop the Deployment"
        events = wait_for(lambda: cluster.events("ModelSourceUnavailable"), 10, "ModelSourceUnavailable Event")
        assert events[0].type == "Warning" and claim in events[0].message
        time.sleep(3)  # several timer reconciles (1 s in tests) later: still one Event
        assert len(cluster.events("ModelSourceUnavailable")) == 1

        _bound_claim(core, ns, pv, claim, tiny_model.parent, created)
        cond = wait_for(lambda: (c := source_cond()) and c["status"] == "True" and c, 60, "claim reported Bound")
        assert cond["reason"] == "ClaimBound", cond
    finally:
        cluster.stop_all()
        _cleanup(created, api)
