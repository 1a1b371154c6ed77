"""The inference Deployment of a WhisperModel (pure: the spec and the operator's settings in, a manifest out).

Split from models.py (issue 15) so the rendering can be read and tested without
a cluster; the reconcile applies it with ``models.ensure_deployment``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from whisperop.core import crds, modelsource

from .config import config


# the inference image's user and cache (Dockerfile.inference: USER 65532:65532,
# WHISPEROP_MODEL_CACHE=/var/cache/whisperop/models); the pod must match it
RUN_AS_ID = 65532
CACHE_DIR = "/var/cache/whisperop"
ENGINE_ENV = "ENGINE"  # EngineSettings.engine: the worker's backend (spec.engine rendered; absent = the image default)


def deployment_name(model: str) -> str:
    return f"whisper-{model}"[:63].rstrip("-")


def pod_labels(model: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "whisper-operator", crds.LABEL_COMPONENT: "inference", crds.LABEL_MODEL: model}


def _container(name: str, spec: crds.WhisperModelSpec, source: modelsource.ModelSource) -> dict[str, Any]:
    """The worker container: the model's identity and source in its environment, restricted."""
    cfg = config()
    gpus = spec.resources.gpus
    limits, requests = dict(spec.resources.limits), dict(spec.resources.requests)
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
        requests["nvidia.com/gpu"] = str(gpus)
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "WHISPEROP_MODEL_NAME", "value": name},
        {"name": "WHISPEROP_WORKER_PORT", "value": str(cfg.worker_port)},
        {"name": "WHISPEROP_HEARTBEAT_SECS", "value": str(cfg.worker_heartbeat_secs)},
        {"name": "WHISPEROP_MODEL_CACHE", "value": f"{CACHE_DIR}/models"},
        {"name": "WHISPEROP_TMP_DIR", "value": "/tmp"},
        {"name": "USE_GPU", "value": "true" if gpus else "false"},
    ]
    if source.local_path:  # PVC source: the worker loads this file as is (no download, no conversion)
        env.append({"name": modelsource.MODEL_PATH_ENV, "value": source.local_path})
    extra = dict(spec.env)
    if spec.engine:  # spec.engine wins over an ENGINE in spec.env (one entry per name in the pod)
        extra.pop(ENGINE_ENV, None)
        env.append({"name": ENGINE_ENV, "value": str(spec.engine)})
    env += [{"name": k, "value": v} for k, v in sorted(extra.items())]
    mounts: list[dict[str, Any]] = [{"name": "cache", "mountPath": CACHE_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    if source.kind == "pvc":
        mounts.append({"name": modelsource.PVC_VOLUME, "mountPath": modelsource.PVC_MOUNT_DIR, "readOnly": True})
    return {
        "name": "worker",
        "image": spec.image,
        "command": ["whisperop", "worker"],
        "env": env,
        "envFrom": [{"secretRef": {"name": cfg.s3_secret, "optional": True}}],
        "ports": [{"name": "http", "containerPort": cfg.worker_port}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "failureThreshold": 1},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20, "failureThreshold": 3},
        "resources": {k: v for k, v in (("limits", limits), ("requests", requests)) if v},
        "securityContext": {
            "runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }


def render_deployment(wm: crds.WhisperModel | dict[str, Any]) -> dict[str, Any]:
    """The inference Deployment of a WhisperModel (raises InvalidModelSource for a spec without
    exactly one model source). Pod Security "restricted": non-root 65532, no privilege escalation,
    all capabilities dropped, seccomp RuntimeDefault, read-only root with emptyDirs for the
    model cache and /tmp; a PVC model source is mounted read-only."""
    model = crds.as_model(wm)  # InvalidModelSource, with its reason
    spec, name = model.spec, model.name
    source = modelsource.resolve(spec)
    labels = pod_labels(name)
    volumes: list[dict[str, Any]] = [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    if source.kind == "pvc":
        volumes.append({"name": modelsource.PVC_VOLUME,
                        "persistentVolumeClaim": {"claimName": source.claim_name, "readOnly": True}})
    pod_spec: dict[str, Any] = {
        "containers": [_container(name, spec, source)],
        "terminationGracePeriodSeconds": config().worker_grace_secs,
        "volumes": volumes,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_ID, "runAsGroup": RUN_AS_ID,
                            "fsGroup": RUN_AS_ID, "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "enableServiceLinks": False,
    }
    if spec.runtimeClassName:
        pod_spec["runtimeClassName"] = spec.runtimeClassName
    if spec.nodeSelector:
        pod_spec["nodeSelector"] = dict(spec.nodeSelector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.dump() for t in spec.tolerations]
    if spec.serviceAccountName:
        pod_spec["serviceAccountName"] = spec.serviceAccountName
    template = {"metadata": {"labels": labels}, "spec": pod_spec}
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name),
            "namespace": model.namespace,
            "labels": labels,
            "annotations": {crds.ANN_TEMPLATE_HASH: digest},
            "ownerReferences": [{
                "apiVersion": crds.API_VERSION, "kind": crds.MODEL_KIND, "name": name, "uid": model.metadata["uid"],
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": template,
        },
    }

