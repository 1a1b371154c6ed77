"""Custom resources behave as the operator relies on: schema, status subresource,
watches from a resourceVersion, and optimistic concurrency (409 on stale writes)."""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from whisperop.testenv import K8sEnv
from whisperop.testenv.versions import K8S_VERSION

pytestmark = pytest.mark.cluster

GROUP = "smoke.whisperop.test"
VERSION = "v1"
PLURAL = "widgets"


def _crd() -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "required": ["size"],
                                 "properties": {"size": {"type": "integer", "minimum": 1}}},
                        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                    },
                }},
            }],
        },
    }


@pytest.fixture(scope="module")
def widgets_crd(k8s_env: K8sEnv):
    ext = client.ApiextensionsV1Api(k8s_env.client)
    body = _crd()
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as e:
        if e.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(body["metadata"]["name"])
        conds = {c.type: c.status for c in (crd.status.conditions or [])}
        if conds.get("Established") == "True":
            break
        time.sleep(0.2)
    else:
        pytest.fail("CRD not Established within 30s")
    # Discovery of a new group takes a moment even after Established.
    api = client.CustomObjectsApi(k8s_env.client)
    deadline = time.monotonic() + 30
    while True:
        try:
            api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            break
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield api
    ext.delete_custom_resource_definition(body["metadata"]["name"])


def _widget(name: str, size: object) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size}}


def test_version_is_truthful(k8s_env: K8sEnv) -> None:
    info = client.VersionApi(k8s_env.client).get_code()
    if k8s_env.external:
        pytest.skip("external cluster: its own version")
    assert info.git_version == K8S_VERSION
    assert info.major == "1" and info.minor == K8S_VERSION.split(".")[1]


def test_custom_object_create_patch_status_watch_conflict(widgets_crd, k8s_namespace: str) -> None:
    api: client.CustomObjectsApi = widgets_crd
    ns, name = k8s_namespace, f"w-{uuid.uuid4().hex[:6]}"
    args = (GROUP, VERSION, ns, PLURAL)

    created = api.create_namespaced_custom_object(*args, _widget(name, 1))
    rv0 = created["metadata"]["resourceVersion"]

    # The schema is enforced: 422 for a wrong type.
    with pytest.raises(ApiException) as bad:
        api.create_namespaced_custom_object(*args, _widget("bad", "big"))
    assert bad.value.status == 422

    # Spec patch through the main resource.
    spec_patched = api.patch_namespaced_custom_object(*args, name, {"spec": {"size": 2}})
    assert spec_patched["spec"]["size"] == 2

    # Status only changes through the status subresource.
    api.patch_namespaced_custom_object(*args, name, {"status": {"phase": "Ignored"}})
    assert "status" not in api.get_namespaced_custom_object(*args, name)
    with_status = api.patch_namespaced_custom_object_status(*args, name, {"status": {"phase": "Ready"}})
    assert with_status["status"]["phase"] == "Ready"
    assert with_status["spec"]["size"] == 2

    # A watch from the creation's resourceVersion replays the later changes in order.
    seen: list[tuple[str, int, str | None]] = []
    w = watch.Watch()
    for ev in w.stream(api.list_namespaced_custom_object, *args, resource_version=rv0, timeout_seconds=10):
        obj = ev["object"]
        if obj["metadata"]["name"] != name:
            continue
        seen.append((ev["type"], obj["spec"]["size"], obj.get("status", {}).get("phase")))
        if obj.get("status", {}).get("phase") == "Ready":
            w.stop()
    assert seen[0] == ("MODIFIED", 2, None)
    assert seen[-1] == ("MODIFIED", 2, "Ready")

    # Optimistic concurrency: a write carrying a stale resourceVersion is refused with 409.
    stale = dict(spec_patched)
    stale["spec"] = {"size": 3}
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_custom_object(*args, name, stale)
    assert conflict.value.status == 409
    stale_status = dict(spec_patched, status={"phase": "Stale"})
    with pytest.raises(ApiException) as conflict2:
        api.replace_namespaced_custom_object_status(*args, name, stale_status)
    assert conflict2.value.status == 409

    # The current resourceVersion succeeds.
    current = api.get_namespaced_custom_object(*args, name)
    current["spec"]["size"] = 4
    assert api.replace_namespaced_custom_object(*args, name, current)["spec"]["size"] == 4
