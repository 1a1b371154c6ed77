"""WhisperModel status pieces computed from what the operator reads (pure functions; the
cluster tests cover the API calls): ModelSourceAvailable from a PVC, the GPU of the ready pods."""

from __future__ import annotations

import json

import pytest

from whisperop.core import crds
from whisperop.operator.observe import claim_condition, observe, ready_since


@pytest.mark.parametrize("pvc, want", [
    (None, ("False", "ClaimNotFound")),
    ({"status": {"phase": "Bound"}}, ("True", "ClaimBound")),
    ({"status": {"phase": "Lost"}}, ("False", "ClaimLost")),
    ({"status": {"phase": "Pending"}}, ("Unknown", "ClaimPending")),
    ({}, ("Unknown", "ClaimPending")),  # just created: no status yet
])
def test_claim_condition(pvc: dict | None, want: tuple[str, str]) -> None:
    status, reason, message = claim_condition("models", "ml", pvc)
    assert (status, reason) == want
    assert "models" in message


def _pod(name: str, state: dict | None, ready: bool = True) -> dict:
    ann = {crds.ANN_LOAD_STATE: json.dumps(state)} if state is not None else {}
    return {"metadata": {"name": name, "annotations": ann},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


WM = crds.WhisperModel.model_validate({"spec": {"modelURI": "/models/m.bin"}, "status": {}})
H100 = {"name": "NVIDIA H100 80GB HBM3", "vramTotalMB": 81559, "vramUsedMB": 1187}


def test_gpu_of_the_first_ready_replica_reaches_the_model_status() -> None:
    pods = [_pod("b", {"state": "ready", "loadedAt": "2026-11-24T10:00:00Z", "gpu": H100}),
            _pod("a", {"state": "loading"}),  # first by name, but not ready: not the source
            _pod("c", {"state": "ready", "loadedAt": "2026-11-24T10:00:01Z",
                       "gpu": {**H100, "vramUsedMB": 2000}})]
    seen = observe(WM, 3, pods)
    assert seen["state"] == "ready" and seen["gpu"] == H100


def test_no_gpu_reported_without_a_ready_gpu_replica() -> None:
    assert observe(WM, 1, [_pod("a", {"state": "ready", "loadedAt": "2026-11-24T10:00:00Z"})])["gpu"] is None  # CPU
    assert observe(WM, 1, [_pod("a", {"state": "loading"})])["gpu"] is None
    assert observe(WM, 0, [])["gpu"] is None


def test_worker_ready_state_carries_its_gpu() -> None:
    from whisperop.core.gpu import GpuInfo
    from whisperop.inference.worker import ready_state

    st = ready_state("2026-11-24T10:00:00Z", 0.4567, GpuInfo("NVIDIA H100 80GB HBM3", 81559, 1187))
    assert st == {"state": "ready", "loadedAt": "2026-11-24T10:00:00Z", "loadSecs": 0.457, "gpu": H100}
    assert "gpu" not in ready_state("2026-11-24T10:00:00Z", 1.0, None)
    # and what the worker reports is what the facade reads back
    assert GpuInfo.from_report(st["gpu"]) == GpuInfo("NVIDIA H100 80GB HBM3", 81559, 1187)


def test_ready_since_is_the_earliest_load_of_a_ready_pod() -> None:
    """The idle clock starts here (issue 15): not while loading, not at a not-Ready pod's load."""
    from datetime import datetime, timezone

    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    loading = _pod("a", {"state": "loading"})
    assert ready_since([loading], now) is None
    early_not_ready = _pod("b", {"state": "ready", "loadedAt": "2026-11-27T11:00:00.000Z"}, ready=False)
    r1 = _pod("c", {"state": "ready", "loadedAt": "2026-11-27T11:59:00.500Z"})
    r2 = _pod("d", {"state": "ready", "loadedAt": "2026-11-27T11:59:30.000Z"})
    assert ready_since([loading, early_not_ready, r2, r1], now) == datetime(2026, 11, 27, 11, 59, 0, 500000, timezone.utc)
    assert ready_since([_pod("e", {"state": "ready"})], now) == now


def test_status_body_stores_a_newer_activity_when_idle_even_within_a_second() -> None:
    """lastActivityTime is where the idle clock starts: a ready time 0.3 s after the load request
    must be stored (or the served request would look unserved once the model is down); while jobs
    run, moves under a second are not written (every reconcile sees ``now`` as activity)."""
    from datetime import datetime, timedelta, timezone

    from whisperop.operator.status import changed, status_body

    t0 = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    wm = crds.WhisperModel.model_validate({
        "metadata": {"name": "default", "namespace": "ns", "generation": 1},
        "spec": {"modelURI": "s3://models/whisper/m.bin"},
        "status": {"lastActivityTime": "2026-11-27T12:00:00.000Z", "state": "loading", "conditions": []}})
    seen = {"state": "ready", "readyReplicas": 1, "unschedulableReplicas": 0, "unschedulableMessage": None,
            "vramNeededMB": None, "vramFreeMB": None, "retryInSecs": None, "loadedAt": "2026-11-27T12:00:00.300Z",
            "gpu": None}
    idle = status_body(wm, seen, 1, 0, 0, t0 + timedelta(seconds=0.3), None, t0)
    assert idle.merge_patch()["lastActivityTime"] == "2026-11-27T12:00:00.300Z"
    busy = status_body(wm, seen, 1, 0, 1, t0 + timedelta(seconds=0.3), None, t0)
    assert busy.merge_patch()["lastActivityTime"] == "2026-11-27T12:00:00.000Z"
    assert changed(wm.status, idle)
    again = status_body(wm.model_copy(update={"status": idle}), seen, 1, 0, 0, t0, None, t0 + timedelta(seconds=9))
    assert not changed(idle, again)


def test_decode_streams_of_the_ready_replicas_reach_the_model_status() -> None:
    """Issue 14: a worker that started fewer streams than wanted (GPU memory was short) reports
    them in its load state, again when it adds some; the model's status sums the ready replicas."""
    from datetime import datetime, timezone

    from whisperop.inference.worker import ready_state
    from whisperop.operator.status import status_body

    st = ready_state("2026-11-27T10:00:00Z", 1.0, None, (2, 8))
    assert (st["streams"], st["streamsWanted"]) == (2, 8)
    assert "streams" not in ready_state("2026-11-27T10:00:00Z", 1.0, None), "an engine without streams (CTranslate2)"
    pods = [_pod("a", st), _pod("b", ready_state("2026-11-27T10:00:01Z", 1.0, None, (8, 8))),
            _pod("c", {"state": "loading"}), _pod("d", ready_state("2026-11-27T10:00:02Z", 1.0, None, (1, 8)), ready=False)]
    seen = observe(WM, 4, pods)
    assert (seen["streams"], seen["streamsWanted"]) == (10, 16), "the ready replicas only"
    wm = crds.WhisperModel.model_validate({"metadata": {"name": "default", "namespace": "ns", "generation": 1},
                                           "spec": {"modelURI": "s3://models/whisper/m.bin"}, "status": {}})
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    body = status_body(wm, seen, 4, 0, 0, None, None, now)
    assert (body.streams, body.streamsWanted) == (10, 16)
    crds.WhisperModelStatus.model_validate(body.merge_patch())  # the CRD's schema has them
    waiting = observe(WM, 1, [_pod("a", {"state": "waiting_for_gpu", "vramNeededMB": 1041, "vramFreeMB": 20})])
    assert (waiting["streams"], waiting["streamsWanted"]) == (None, None)
    assert status_body(wm, waiting, 1, 0, 0, None, None, now).streams is None


def test_the_facade_announces_streams_added_to_a_ready_model() -> None:
    """Cluster mode's ``model_streams`` event: a ready WhisperModel whose ``status.streams`` grew
    (a worker added streams as GPU memory freed up); nothing for other changes."""
    from whisperop.cluster.model_runtime import ClusterModelRuntime
    from whisperop.core.models import ModelStreamsEvent

    rt = ClusterModelRuntime(None, "ns")  # no API calls: the watch is not started
    got: list[object] = []
    rt.subscribe(got.append)

    def wm(**status: object) -> crds.WhisperModel:
        return crds.WhisperModel.model_validate({"metadata": {"name": "default"}, "spec": {"modelURI": "/models/m.bin"},
                                                 "status": status})

    rt._on_event("MODIFIED", wm(state="ready", streams=8, streamsWanted=8), wm(state="ready", streams=2, streamsWanted=8))
    assert got == [ModelStreamsEvent(streams=8, streams_wanted=8)]
    rt._on_event("MODIFIED", wm(state="ready", streams=8, streamsWanted=8, queueDepth=3),
                 wm(state="ready", streams=8, streamsWanted=8))
    rt._on_event("MODIFIED", wm(state="ready", streams=1, streamsWanted=8), wm(state="ready", streams=2, streamsWanted=8))
    assert len(got) == 1, got


def test_status_write_clears_what_no_longer_applies_with_explicit_nulls() -> None:
    """The status is written as a merge patch, which deletes only the fields it names as null: a
    model that went down must lose ``loadedAt``, ``gpu`` and the stream counts. Nulls stay at the top
    level; a condition is written whole (a null inside a list item would fail the CRD's schema)."""
    from datetime import datetime, timezone

    from whisperop.operator.status import status_body

    ready = crds.WhisperModel.model_validate({
        "metadata": {"name": "default", "namespace": "ns", "generation": 2}, "spec": {"modelURI": "/models/m.bin"},
        "status": {"state": "ready", "replicas": 1, "readyReplicas": 1, "loadedAt": "2026-11-27T11:00:00.250Z",
                   "gpu": H100, "streams": 8, "streamsWanted": 8, "lastActivityTime": "2026-11-27T11:00:00.250Z"}})
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    patch = status_body(ready, observe(ready, 0, []), 0, 0, 0, None, None, now).merge_patch()
    assert set(patch) == {f.alias or n for n, f in crds.WhisperModelStatus.model_fields.items()}
    assert patch["state"] == "unloaded"
    assert {k: patch[k] for k in ("loadedAt", "gpu", "streams", "streamsWanted", "vramNeededMB")} == dict.fromkeys(
        ("loadedAt", "gpu", "streams", "streamsWanted", "vramNeededMB"))
    assert patch["lastActivityTime"] == "2026-11-27T11:00:00.250Z", "kept, in the stored format"
    assert patch["conditions"] and all(v is not None for c in patch["conditions"] for v in c.values())
    assert {c["type"]: c["observedGeneration"] for c in patch["conditions"]} == {"Ready": 2, "GpuAvailable": 2, "Accepted": 2}


def test_an_activity_time_that_differs_below_a_millisecond_is_no_write() -> None:
    """Times are stored in milliseconds; a reconcile whose activity time differs from the stored one
    by less must not write again (compared as stored, not as datetimes)."""
    from datetime import datetime, timedelta, timezone

    from whisperop.operator.status import changed, status_body

    t0 = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    wm = crds.WhisperModel.model_validate({"metadata": {"name": "default", "namespace": "ns", "generation": 1},
                                           "spec": {"modelURI": "/models/m.bin"}, "status": {}})
    seen = observe(wm, 0, [])
    first = status_body(wm, seen, 0, 0, 0, t0 + timedelta(microseconds=250_400), None, t0)
    stored = crds.WhisperModelStatus.model_validate(first.merge_patch())  # what the API server hands back
    assert stored.merge_patch()["lastActivityTime"] == "2026-11-27T12:00:00.250Z"
    again = status_body(wm.model_copy(update={"status": stored}), seen, 0, 0, 0, t0 + timedelta(microseconds=250_400),
                        None, t0 + timedelta(seconds=5))
    assert not changed(stored, again)
