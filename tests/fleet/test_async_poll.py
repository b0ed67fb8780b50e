"""The status poll's non-blocking reads on a real Postgres (core.db.AsyncReads): the same answer
as the blocking poll for every state, key and queue depth, and a poll that outlives the
connections a Postgres restart broke."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from modelapi.core import auth, db
from modelapi.core.jobs import Done, JobStore, Polled, QueueOrder
from modelapi.core.queue import TaskQueue
from modelapi.core.workers import WorkerRegistry, runner_id
from modelapi.types import Status

SEQ = "bytedance/seedream-4-0/sequential"


def run_async(coro):  # noqa: ANN001, ANN201
    """``asyncio.run(coro)`` in a thread of its own: an earlier test in this process (Playwright's
    sync API) may have left an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def pg_jobs(fleet_services):
    url = fleet_services.config_env()["MODELAPI_DATABASE_URL"]
    engine = db.connect(url)
    db.migrate(engine, url)
    queue = TaskQueue(url)
    queue.ensure(0.05)
    jobs = JobStore(engine, queue, WorkerRegistry(engine, timeout_s=60))
    assert jobs.async_reads is not None
    yield jobs
    queue.destroy()
    engine.dispose()


def test_the_awaited_poll_answers_as_the_blocking_one(pg_jobs):
    jobs = pg_jobs
    key, secret = auth.create_key(jobs.db, "a")
    other, other_secret = auth.create_key(jobs.db, "b")
    reqs = [jobs.create(request_id=f"req_{n}", owner_key_id=key.id, model_id=SEQ, inputs={"text": "a fox"},
                        input_files=[], seed=1, idempotency_key=None, body_hash=None) for n in range(5)]
    jobs.workers.register("w1", "i1", {"engine": "test"})
    runner = runner_id("w1", "i1")
    done = jobs.begin(jobs.get(reqs[0].request_id), runner, reqs[0].workflow_id)
    jobs.finish(done, Done(["outputs/req_0/1/0.jpg"], {"timings": {}}))
    running = jobs.begin(jobs.get(reqs[1].request_id), runner, reqs[1].workflow_id)
    jobs.set_progress(running, 0.5)
    jobs.set_partial(running, ["outputs/req_1/1/0.jpg"])
    jobs.order = QueueOrder(jobs.db, exact=2)  # req_2, req_3 exact; req_4 from the snapshot
    auth.revoke_key(jobs.db, other.id)
    cases = [(r.request_id, h) for r in reqs for h in (auth.hash_key(secret), auth.hash_key(other_secret))]
    cases += [("req_unknown", auth.hash_key(secret)), (reqs[0].request_id, auth.hash_key("mapi_unknown"))]

    async def awaited() -> list:
        try:
            return [await jobs.poll_async(rid, h) for rid, h in cases]
        finally:
            await jobs.async_reads.close()

    blocking = [jobs.poll(rid, h) for rid, h in cases]
    assert run_async(awaited()) == blocking
    by_id = dict(zip([rid for rid, _ in cases[::2]], blocking[::2]))
    assert by_id["req_0"] == (True, Polled(Status.COMPLETED, 1.0, None, None))
    assert by_id["req_1"] == (True, Polled(Status.IN_PROGRESS, 0.5, None, ["outputs/req_1/1/0.jpg"]))
    assert [by_id[f"req_{n}"][1].queue_position for n in (2, 3, 4)] == [0, 1, 2]
    assert blocking[1] == (False, None), "a revoked key"
    assert blocking[-2:] == [(True, None), (False, None)]


def test_an_awaited_poll_outlives_the_connections_a_restart_broke(pg_jobs):
    jobs = pg_jobs
    key, secret = auth.create_key(jobs.db, "a")
    req = jobs.create(request_id="req_x", owner_key_id=key.id, model_id=SEQ, inputs={"text": "a fox"},
                      input_files=[], seed=1, idempotency_key=None, body_hash=None)
    h = auth.hash_key(secret)

    async def polls() -> tuple:
        try:
            first = await asyncio.gather(*(jobs.poll_async(req.request_id, h) for _ in range(4)))  # opens several
            with jobs.db.connect() as conn:  # what a restart does to every open connection
                killed = conn.execute(sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = ''")).scalar()
            return first, killed, await jobs.poll_async(req.request_id, h)
        finally:
            await jobs.async_reads.close()

    first, killed, after = run_async(polls())
    assert killed >= 1
    assert first[0] == after == (True, Polled(Status.IN_QUEUE, None, 0, None))
