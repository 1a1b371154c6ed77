"""Jobs run FIFO, one at a time; /health queue_depth counts waiting jobs only."""

from __future__ import annotations

import time

from tests.support.client import ApiClient
from tests.support.shapes import assert_health, assert_job, parse_utc


def test_fifo_one_at_a_time_and_queue_depth(api: ApiClient, audio) -> None:
    first = api.submit(audio.long)
    api.wait_status(first, "running", timeout=60)
    second = api.submit(audio.jfk)
    third = api.submit(audio.short)
    ids = [first, second, third]

    # while the first runs: the other two wait, and queue_depth says 2
    health = assert_health(api.health())
    assert health.queue_depth == 2, f"queue_depth with 1 running + 2 queued: {health.queue_depth}"
    assert [api.get_job(i)["status"] for i in ids] == ["running", "queued", "queued"]

    assert api.cancel(first).status_code == 200
    seen: list[list[str]] = []
    depths: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # One GET per job is no atomic snapshot, so read the *newest* job first: a later read of an
        # older job can then only show it further along, never overtaken. (Read oldest first, a fast
        # second job may finish between the two GETs and the third look like it ran beside it.)
        by_id = {i: api.get_job(i)["status"] for i in reversed(ids)}
        statuses = [by_id[i] for i in ids]
        seen.append(statuses)
        depths.append(api.health()["queue_depth"])
        if all(s in ("done", "failed", "cancelled") for s in statuses):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"jobs not finished in time; last statuses {seen[-1]}")

    for st in seen:
        assert st.count("running") <= 1, f"two jobs running at once: {st}"
        # FIFO: the third never runs or finishes while the second is still queued
        if st[1] == "queued":
            assert st[2] == "queued", f"third job overtook the second: {st}"
    assert max(depths) <= 2 and depths[-1] == 0, f"queue_depth over time: {depths}"

    j2, j3 = api.get_job(second), api.get_job(third)
    assert_job(j2, second, status="done")
    assert_job(j3, third, status="done")
    assert parse_utc(j2["completed_at"]) <= parse_utc(j3["completed_at"]), "completion order is not submission order"
    assert assert_health(api.health()).queue_depth == 0
