"""Replica policy (pure) and the demand annotation on the real control plane."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from whisperop.core import crds
from whisperop.operator import scaling

T0 = datetime(2026, 5, 10, 14, 0, tzinfo=timezone.utc)
def _spec(**kw: int) -> crds.WhisperModelSpec:
    return crds.WhisperModelSpec.model_validate({"modelURI": "/models/m.bin", "minReplicas": 0, "maxReplicas": 3,
                                                 "idleTimeoutSeconds": 300, **kw})


SPEC = _spec()


def test_scales_by_queue_depth_up_to_max() -> None:
    assert scaling.desired_replicas(SPEC, queued=1, running=0, current=0, activity=T0, demand=None, now=T0) == 1
    assert scaling.desired_replicas(SPEC, queued=2, running=1, current=1, activity=T0, demand=None, now=T0) == 3
    assert scaling.desired_replicas(SPEC, queued=50, running=3, current=3, activity=T0, demand=None, now=T0) == 3
    assert scaling.desired_replicas(_spec(minReplicas=2), 1, 0, 0, T0, None, T0) == 2
    # never down while there is work: the last job does not shrink a pool of 3
    assert scaling.desired_replicas(SPEC, queued=0, running=1, current=3, activity=T0, demand=None, now=T0) == 3


def test_idle_timeout_then_min_and_zero_means_never() -> None:
    later = T0 + timedelta(seconds=299)
    ready = T0 - timedelta(seconds=60)
    assert scaling.desired_replicas(SPEC, 0, 0, current=2, activity=T0, demand=None, now=later, ready_since=ready) == 2
    assert scaling.desired_replicas(SPEC, 0, 0, current=2, activity=T0, demand=None, now=T0 + timedelta(seconds=300),
                                    ready_since=ready) == 0
    never = _spec(idleTimeoutSeconds=0)
    assert scaling.desired_replicas(never, 0, 0, current=1, activity=T0, demand=None, now=T0 + timedelta(days=9),
                                    ready_since=ready) == 1


def test_idle_clock_starts_when_the_model_is_ready_not_at_the_load_request() -> None:
    """Issue 15: with idleTimeoutSeconds 3 a load went loading → unloaded in 7.5 s, never ready."""
    spec = _spec(idleTimeoutSeconds=20)
    load = scaling.Demand("load", T0)
    act = scaling.last_activity(None, load, 0, T0, None)
    # loading for 90 s (longer than the idle timeout): never undone while not ready
    d = scaling.decide(spec, 0, 0, 1, act, load, T0 + timedelta(seconds=90), ready_since=None)
    assert (d.replicas, d.reason) == (1, "loading")
    # ready at +90 s: the clock starts there, not at the load request
    ready = T0 + timedelta(seconds=90)
    d = scaling.decide(spec, 0, 0, 1, act, load, T0 + timedelta(seconds=109), ready_since=ready)
    assert (d.replicas, d.reason) == (1, "within_idle")
    assert scaling.idle_deadline(spec, act, ready) == ready + timedelta(seconds=20)
    d = scaling.decide(spec, 0, 0, 1, act, load, T0 + timedelta(seconds=110), ready_since=ready)
    assert (d.replicas, d.reason) == (0, "idle_timeout")
    # an explicit unload is not idle time: it acts while loading too
    unload = scaling.Demand("unload", T0 + timedelta(seconds=5))
    assert scaling.decide(spec, 0, 0, 1, act, unload, T0 + timedelta(seconds=6), ready_since=None).replicas == 0


def test_a_finished_job_is_activity_even_if_no_reconcile_saw_it_run() -> None:
    """Issue 15: the Deployment went to zero 16.6 s after the last job with idleTimeoutSeconds 20;
    the informer's completionTime (any terminal phase) moves the clock."""
    spec = _spec(idleTimeoutSeconds=20)
    ready = T0
    created, finished = T0 + timedelta(seconds=30), T0 + timedelta(seconds=41)
    act = scaling.last_activity(T0, None, 0, T0 + timedelta(seconds=45), None, jobs_seen=[created, finished])
    assert act == finished
    assert scaling.desired_replicas(spec, 0, 0, 1, act, None, finished + timedelta(seconds=19.9), ready_since=ready) == 1
    assert scaling.desired_replicas(spec, 0, 0, 1, act, None, finished + timedelta(seconds=20), ready_since=ready) == 0


def test_demand_load_and_unload() -> None:
    load = scaling.Demand("load", T0)
    act = scaling.last_activity(None, load, 0, T0, None)
    assert scaling.desired_replicas(SPEC, 0, 0, 0, act, load, T0 + timedelta(seconds=10)) == 1
    assert scaling.desired_replicas(SPEC, 0, 0, 1, act, load, T0 + timedelta(seconds=301), ready_since=T0) == 0
    unload = scaling.Demand("unload", T0 + timedelta(seconds=20))
    assert scaling.desired_replicas(SPEC, 0, 0, 1, act, unload, T0 + timedelta(seconds=21)) == 0
    # unload never drops work: with a running job the replicas stay
    assert scaling.desired_replicas(SPEC, 0, 1, 1, act, unload, T0 + timedelta(seconds=21)) == 1
    # ... and once that job is done the model goes down, although the job kept
    # the activity time moving after the unload was asked
    busy_until = T0 + timedelta(seconds=40)
    job_arrived = T0 + timedelta(seconds=5)
    assert scaling.desired_replicas(SPEC, 0, 0, 1, busy_until, unload, T0 + timedelta(seconds=41), last_arrival=job_arrived) == 0
    # a job that arrived after the unload undoes it (normal idle timeout again)
    late_job = T0 + timedelta(seconds=25)
    assert scaling.desired_replicas(SPEC, 0, 0, 1, busy_until, unload, T0 + timedelta(seconds=41), last_arrival=late_job,
                                    ready_since=T0) == 1
    ann = scaling.demand_annotation("load", T0)["metadata"]["annotations"]
    assert scaling.parse_demand(ann) == load
    assert scaling.parse_demand({crds.ANN_DEMAND: "garbage"}) is None


@pytest.mark.cluster
def test_demand_annotation_scales_without_touching_spec(cluster, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    from .conftest import wait_for

    cluster.start_operator()
    wm = cluster.create_model(modelURI=str(tiny_model), idleTimeoutSeconds=300, resources={"gpus": 0})
    wait_for(lambda: cluster.deployment_replicas() == 0, 30, "Deployment at 0")
    now = datetime.now(timezone.utc)
    cluster.models.patch("default", scaling.demand_annotation("load", now))
    wait_for(lambda: cluster.deployment_replicas() == 1, 20, "load demand → 1 replica")
    cluster.models.patch("default", scaling.demand_annotation("unload", now + timedelta(seconds=1)))
    wait_for(lambda: cluster.deployment_replicas() == 0, 20, "unload demand → 0 replicas")
    after = cluster.models.get("default")
    assert after["spec"] == wm["spec"] and after["metadata"]["generation"] == wm["metadata"]["generation"]
    assert json.loads(after["metadata"]["annotations"][crds.ANN_DEMAND])["action"] == "unload"


def test_queue_order_keeps_submissions_within_one_second_in_order() -> None:
    """creationTimestamp has whole seconds; the facade's microsecond
    submitted-at annotation keeps FIFO for jobs created within one second."""
    from whisperop.cluster import kube

    def job(name: str, created: str, submitted: str | None = None, priority: int = 0) -> crds.TranscriptionJob:
        meta: dict = {"name": name, "creationTimestamp": created}
        if submitted:
            meta["annotations"] = {crds.ANN_SUBMITTED: submitted}
        return crds.as_job({"metadata": meta, "spec": {"audio": "s3://bucket/a.wav", "priority": priority}})

    second = job("ffff", "2026-11-24T20:36:17Z", "2026-11-24T20:36:17.100000Z")
    third = job("0000", "2026-11-24T20:36:17Z", "2026-11-24T20:36:17.900000Z")  # a name that sorts first
    kubectl_later = job("aaaa", "2026-11-24T20:36:18Z")
    kubectl_same_second = job("bbbb", "2026-11-24T20:36:17Z")
    urgent = job("zzzz", "2026-11-24T20:36:19Z", priority=5)
    order = sorted([kubectl_later, third, urgent, second, kubectl_same_second], key=kube.queue_key)
    assert [o.name for o in order] == ["zzzz", "bbbb", "ffff", "0000", "aaaa"]


def test_a_served_load_request_does_not_bring_the_model_back_after_the_idle_timeout() -> None:
    """The reconcile stores the ready time as activity: once the idle timeout took the model down,
    the (older) load request gives it no replica again."""
    spec = _spec(idleTimeoutSeconds=6)
    load = scaling.Demand("load", T0)
    ready = T0 + timedelta(seconds=8)  # loading took longer than the idle timeout
    act = scaling.last_activity(None, load, 0, ready, None, jobs_seen=[ready])
    down = scaling.decide(spec, 0, 0, 1, act, load, ready + timedelta(seconds=6), ready_since=ready)
    assert (down.replicas, down.reason) == (0, "idle_timeout")
    after = scaling.decide(spec, 0, 0, 0, act, load, ready + timedelta(seconds=7), ready_since=None)
    assert (after.replicas, after.reason) == (0, "min")
    # a new load request does
    again = scaling.Demand("load", ready + timedelta(seconds=9))
    act2 = scaling.last_activity(act, again, 0, ready + timedelta(seconds=9), None)
    assert scaling.decide(spec, 0, 0, 0, act2, again, ready + timedelta(seconds=9), ready_since=None).replicas == 1


def test_job_concurrency_packs_jobs_onto_fewer_replicas() -> None:
    """JOB_CONCURRENCY (spec.env) jobs run at once per pod: 5 jobs of work at 4 per pod need 2 replicas."""
    spec = SPEC.model_copy(update={"maxReplicas": 10, "env": {"JOB_CONCURRENCY": "4"}})
    assert scaling.desired_replicas(spec, queued=5, running=0, current=0, activity=T0, demand=None, now=T0) == 2
    assert scaling.desired_replicas(spec, queued=1, running=3, current=1, activity=T0, demand=None, now=T0) == 1
    assert scaling.desired_replicas(SPEC.model_copy(update={"maxReplicas": 10}), queued=5, running=0, current=0,
                                    activity=T0, demand=None, now=T0) == 5
    bad = SPEC.model_copy(update={"maxReplicas": 10, "env": {"JOB_CONCURRENCY": "many"}})
    assert scaling.desired_replicas(bad, queued=3, running=0, current=0, activity=T0, demand=None, now=T0) == 3
