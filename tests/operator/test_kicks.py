"""Event-driven reconciles (issue 15): kicks are coalesced, delayed kicks run on time, and a job's
phase change (not its progress writes) kicks its model. Pure/in-process: no cluster needed."""

from __future__ import annotations

import threading
import time

from whisperop.core import crds
from whisperop.operator import informers
from whisperop.operator.kick import Kicker


def test_kicks_coalesce_and_never_block_the_caller() -> None:
    runs: list[tuple[str, str]] = []
    gate = threading.Event()
    first = threading.Event()

    def run(ns: str, name: str) -> None:
        runs.append((ns, name))
        first.set()
        gate.wait(30)

    k = Kicker(run)
    k.kick("ns", "m")
    assert first.wait(30)
    t0 = time.monotonic()
    for _ in range(50):  # a burst while the first reconcile runs: one more run, not 50
        k.kick("ns", "m")
    assert time.monotonic() - t0 < 5, "kick() waited on the running reconcile"
    gate.set()
    deadline = time.monotonic() + 30
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert runs == [("ns", "m"), ("ns", "m")]
    assert k.pending() == {}


def test_a_delayed_kick_runs_after_its_delay_and_an_earlier_one_wins() -> None:
    done = threading.Event()
    at: list[float] = []
    k = Kicker(lambda ns, name: (at.append(time.monotonic()), done.set()))
    t0 = time.monotonic()
    k.kick("ns", "m", delay=30)
    k.kick("ns", "m", delay=0.5)  # sooner: replaces the later one
    assert done.wait(20)
    assert at[0] - t0 >= 0.5
    time.sleep(0.2)
    assert len(at) == 1 and k.pending() == {}


def _job(name: str, phase: str | None, progress: int = 0) -> crds.JobSummary:
    return crds.JobSummary.of({"metadata": {"namespace": "ns", "name": name}, "spec": {"audio": "s3://b/a.wav", "model": "m"},
                               "status": {"phase": phase, "progress": progress} if phase else {}})


def test_only_phase_changes_of_a_job_count() -> None:
    """The cache hands each change with the job's previous summary; only a new phase kicks."""
    assert not informers.phase_changed("ADDED", _job("j1", None), None)  # not accepted yet: no work
    assert informers.phase_changed("ADDED", _job("j1", "Queued"), None)
    assert not informers.phase_changed("MODIFIED", _job("j1", "Queued"), _job("j1", "Queued"))
    assert informers.phase_changed("MODIFIED", _job("j1", "Running", 10), _job("j1", "Queued"))
    assert not informers.phase_changed("MODIFIED", _job("j1", "Running", 50), _job("j1", "Running", 10))  # progress
    assert informers.phase_changed("MODIFIED", _job("j1", "Failed"), _job("j1", "Running", 50))  # any terminal phase
    assert informers.phase_changed("DELETED", _job("j1", "Failed"), _job("j1", "Failed"))
