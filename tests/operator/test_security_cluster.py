"""Issue 16 in cluster mode (real control plane, MinIO, operator, worker and facade processes):
the operator's webhook deliveries go through the outbound URL guard and are signed; the
cluster facade refuses internal webhook URLs at submit and keeps tokens' jobs apart.
(The local-mode suite is tests/security/; it lives here for the cluster fixtures.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from whisperop.core.signing import verify

from tests.operator.test_facade_cluster import Facade
from tests.support import audio as audio_mod
from tests.support.webhooks import WebhookReceiver, is_job_payload, is_model_event

from .conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster

SECRET = "whsec_Y2x1c3Rlci1tb2RlLXdlYmhvb2stc2VjcmV0LTAxMjM0"


def _run_job(cluster: Cluster, tiny_model: Path, jfk_s3: str, webhook: str) -> dict[str, Any]:
    cluster.create_model(modelURI=str(tiny_model), maxReplicas=1, idleTimeoutSeconds=120, resources={"gpus": 0})
    job = cluster.create_job(jfk_s3, name="hooked", webhookUrl=webhook)
    pod = wait_for(lambda: (cluster.running_pods() or [None])[0], 60, "inference pod")
    cluster.start_worker(pod)
    cluster.wait_phase("hooked", "Done", timeout=180)
    return job


def test_operator_refuses_an_internal_webhook_at_delivery(cluster: Cluster, tiny_model: Path, jfk_s3: str) -> None:
    """A TranscriptionJob created with kubectl never passed the facade's check: the operator's
    sender refuses the loopback receiver at connect time (no allow-list), records why, sends nothing."""
    with WebhookReceiver() as receiver:
        cluster.start_operator({"WHISPEROP_OUTBOUND_ALLOW": ""})
        _run_job(cluster, tiny_model, jfk_s3, receiver.url("/internal"))
        rec = wait_for(lambda: cluster.jobs.get("hooked")["status"].get("webhook"), 60, "delivery outcome recorded")
        assert rec["state"] == "failed" and rec["error"].startswith("refused: ") and "loopback" in rec["error"], rec
        assert rec["attempts"] == 1, "a refusal is not retried"
        assert receiver.received() == []


def test_operator_signs_deliveries_with_a_stable_id(cluster: Cluster, tiny_model: Path, jfk_s3: str) -> None:
    with WebhookReceiver() as receiver:
        receiver.fail_first("/signed", 1)  # the first POST (whichever event) is retried: same id
        cluster.start_operator({"WHISPEROP_WEBHOOK_SECRET": SECRET})
        job = _run_job(cluster, tiny_model, jfk_s3, receiver.url("/signed"))
        receiver.wait_for("/signed", lambda d: is_job_payload(d) and d.status == 200, timeout=60)
        receiver.wait_for("/signed", lambda d: is_model_event(d, "model_ready") and d.status == 200, timeout=60)
        got = receiver.received("/signed")
        assert got[0].status == 500 and len(got) >= 3, got
        assert {d.headers["webhook-id"] for d in got if is_job_payload(d)} == {f"job-{job['metadata']['uid']}-done"}
        ready_ids = {d.headers["webhook-id"] for d in got if is_model_event(d, "model_ready")}
        assert len(ready_ids) == 1 and ready_ids.pop().startswith("model-model_ready-")
        for d in got:
            assert verify([SECRET], d.headers, d.body) == d.headers["webhook-id"]


def test_cluster_facade_refuses_internal_webhooks_and_separates_tokens(cluster: Cluster) -> None:
    tokens = cluster.tmp / "tokens"
    tokens.write_text("tok-alice\ntok-bob\n")
    f = Facade(cluster, "sec", WHISPEROP_AUTH_TOKENS_FILE=str(tokens), WHISPEROP_OUTBOUND_ALLOW="")
    alice, bob = ({"Authorization": f"Bearer {t}"} for t in ("tok-alice", "tok-bob"))
    wav = audio_mod.JFK_WAV.read_bytes()
    try:
        with httpx.Client(base_url=f.url, timeout=60) as h:
            for url in ("http://127.0.0.1:9/h", "http://2130706433/h", "http://[::ffff:10.0.0.1]/h", "http://u:p@example.com/"):
                r = h.post("/jobs", headers=alice, files={"audio": ("a.wav", wav, "audio/wav")}, data={"webhook_url": url})
                assert r.status_code == 400 and r.json()["error"].startswith("webhook_url "), (url, r.text)
            assert cluster.jobs.list()["items"] == []
            r = h.post("/jobs", headers=alice, files={"audio": ("a.wav", wav, "audio/wav")})
            assert r.status_code == 202, r.text
            job = r.json()["job_id"]
            assert h.get(f"/jobs/{job}", headers=alice).status_code == 200
            assert h.get(f"/jobs/{job}", headers=bob).status_code == 404
            assert h.delete(f"/jobs/{job}", headers=bob).status_code == 404
            # issue 19's routes keep the tokens apart too (the watch cache's listing is filtered by owner)
            assert h.delete(f"/jobs/{job}?purge=true", headers=bob).status_code == 404
            assert h.get(f"/jobs/{job}/transcript.srt", headers=bob).status_code == 404
            assert h.get(f"/jobs/{job}/transcript.srt", headers=alice).status_code == 409  # not done yet
            assert [j["id"] for j in h.get("/jobs", headers=alice).json()["jobs"]] == [job]
            assert h.get("/jobs", headers=bob).json() == {"jobs": [], "next_cursor": None}
            ann = cluster.jobs.get(job)["metadata"]["annotations"]
            assert ann["whisperop.io/owner"].startswith("tok-") and "tok-alice" not in str(ann)
            assert not cluster.jobs.get(job)["spec"].get("cancel"), "bob's cancel did nothing"
    finally:
        f.close()


def test_cluster_registry_is_bounded_expires_and_unregisters(cluster: Cluster) -> None:
    """The namespace registry ConfigMap (both the facade and the operator write it)."""
    import time

    from kubernetes import client

    from whisperop.cluster import webhooks as wh
    from whisperop.core.settings import WebhookRegistrySettings

    lim = WebhookRegistrySettings(WEBHOOK_REGISTRY_MAX=4, WEBHOOK_PENDING_MAX=2, WEBHOOK_PENDING_TTL_SECS=1)
    api, ns = cluster.api, cluster.ns
    assert [wh.register(api, ns, f"http://r/x?n={i}", pending=True, limits=lim) for i in range(4)] == [True, True, False, False]
    assert wh.register(api, ns, "http://job/1", limits=lim) and wh.register(api, ns, "http://job/2", limits=lim)
    assert wh.register(api, ns, "http://job/3", limits=lim)  # full: a pending entry makes room
    assert [u for u in wh.registered(api, ns) if u.startswith("http://job/")] == ["http://job/1", "http://job/2", "http://job/3"]
    assert len(wh.registered(api, ns)) == 4
    # an entry written by an older version (a bare URL) is still read
    client.CoreV1Api(api).patch_namespaced_config_map(wh.WEBHOOK_CONFIGMAP, ns, {"data": {"legacy0000000000": "http://old/1"}})
    time.sleep(1.5)  # pending entries live 1 s here
    assert wh.registered(api, ns) == ["http://job/1", "http://job/2", "http://job/3", "http://old/1"]
    assert wh.unregister(api, ns, "http://job/2") and not wh.unregister(api, ns, "http://job/2")
    assert "http://job/2" not in wh.registered(api, ns)
