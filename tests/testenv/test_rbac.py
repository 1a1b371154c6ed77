"""RBAC is enforced: a ServiceAccount bound to a namespaced Role can do what the
Role allows there, and gets 403 for anything else. Tokens come from both the
TokenRequest API and the controller manager's service-account token controller."""

from __future__ import annotations

import base64
import copy
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from whisperop.testenv import K8sEnv

pytestmark = pytest.mark.cluster


def _as_token(k8s_env: K8sEnv, token: str) -> client.ApiClient:
    cfg = copy.copy(k8s_env.client.configuration)
    cfg.cert_file = None
    cfg.key_file = None
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def _status(fn) -> int:
    try:
        fn()
    except ApiException as e:
        return e.status
    return 200


def test_service_account_role_is_enforced(k8s_env: K8sEnv, k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_env.client)
    rbac = client.RbacAuthorizationV1Api(k8s_env.client)
    ns, sa = k8s_namespace, "limited"
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa)))
    rbac.create_namespaced_role(ns, client.V1Role(
        metadata=client.V1ObjectMeta(name="pod-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list", "watch"])],
    ))
    rbac.create_namespaced_role_binding(ns, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="pod-reader"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=sa, namespace=ns)],
    ))

    # A bound token from the TokenRequest API.
    tr = core.create_namespaced_service_account_token(
        sa, ns, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    )
    limited = client.CoreV1Api(_as_token(k8s_env, tr.status.token))

    who = client.AuthenticationV1Api(_as_token(k8s_env, tr.status.token)).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    assert who.status.user_info.username == f"system:serviceaccount:{ns}:{sa}"

    # RBAC propagates through the authorizer's informer cache; allow a moment.
    deadline = time.monotonic() + 10
    while _status(lambda: limited.list_namespaced_pod(ns)) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _status(lambda: limited.list_namespaced_pod(ns)) == 200
    assert _status(lambda: limited.list_namespaced_secret(ns)) == 403
    assert _status(lambda: limited.list_namespaced_pod("default")) == 403
    assert _status(lambda: limited.list_node()) == 403
    assert _status(lambda: limited.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="nope")))) == 403

    # A long-lived token Secret, filled in by the controller manager's token controller.
    core.create_namespaced_secret(ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name=f"{sa}-token", annotations={"kubernetes.io/service-account.name": sa}),
        type="kubernetes.io/service-account-token",
    ))
    deadline = time.monotonic() + 30
    secret = core.read_namespaced_secret(f"{sa}-token", ns)
    while not (secret.data or {}).get("token") and time.monotonic() < deadline:
        time.sleep(0.2)
        secret = core.read_namespaced_secret(f"{sa}-token", ns)
    assert (secret.data or {}).get("token"), "token controller did not populate the secret"
    legacy = client.CoreV1Api(_as_token(k8s_env, base64.b64decode(secret.data["token"]).decode()))
    assert _status(lambda: legacy.list_namespaced_pod(ns)) == 200
    assert _status(lambda: legacy.list_namespaced_secret(ns)) == 403
