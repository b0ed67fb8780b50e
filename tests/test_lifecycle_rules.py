"""Deadlines and stopping a running request, below the HTTP layer: the headers' syntax, the
state machine's transitions and billing on a temporary SQLite database with the real queue
tables, and a worker run's stop check — seconds, no server process. Over real HTTP in both
configurations: tests/server/test_lifecycle.py."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from modelapi.api import headers
from modelapi.core import bodies, db
from modelapi.core.jobs import Cancelled, JobStore, Stopped
from modelapi.core.storage import FileStorage
from modelapi.core.workers import runner_id
from modelapi.errors import ValidationError
from modelapi.types import Status
from modelapi.worker.runtime import _StopCheck

SEQ = "bytedance/seedream-4-0/sequential"


def submit(jobs: JobStore, n: int = 0, cancel_after_s: float | None = None):  # noqa: ANN201
    return jobs.create(request_id=f"req_{n}", owner_key_id="key_a", model_id=SEQ,
                       inputs={"text": "a fox", "sequential_image_generation_options": 3},
                       input_files=[], seed=7, idempotency_key=None, body_hash=None, cancel_after_s=cancel_after_s)


def runner(jobs: JobStore) -> str:
    jobs.workers.register("w0", "i1", {"engine": "test"})
    return runner_id("w0", "i1")


def usage_rows(jobs: JobStore) -> list[tuple]:
    with jobs.db.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(db.usage.c.request_id, db.usage.c.billed_units, db.usage.c.cost_usd))]


def entry_status(jobs: JobStore, workflow_id: str) -> str:
    with jobs.db.connect() as conn:
        return conn.execute(sa.text("SELECT status FROM workflow_status WHERE workflow_uuid = :w"), {"w": workflow_id}).scalar()


def backdate(jobs: JobStore, request_id: str, seconds: float) -> None:
    """Move the request's submit and deadline back together, until its deadline is ``seconds``
    in the past (instead of waiting for it)."""
    req = jobs.get(request_id)
    shift = req.deadline_at - db.utcnow() + timedelta(seconds=seconds)
    with jobs.db.begin() as conn:
        conn.execute(db.requests.update().where(db.requests.c.request_id == request_id)
                     .values(deadline_at=req.deadline_at - shift, created_at=req.created_at - shift))


# -- the headers -------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [("30s", 30), ("5m", 300), ("90", 90), ("2.5", 2.5), ("1h30m", 5400),
                                                ("1500ms", 1.5), (" 24h ", 86_400), ("1S", 1), (None, None)])
def test_cancel_after_reads_replicate_s_syntax(value, seconds):
    assert headers.cancel_after_s(value) == seconds


@pytest.mark.parametrize(("value", "rule"), [("0.5", "at least 1 s"), ("25h", "at most 24 h"), ("86401", "at most 24 h"),
                                             ("soon", "a duration like"), ("-5", "a duration like"), ("5 m", "a duration like"),
                                             ("", "a duration like"), ("1d", "a duration like")])
def test_a_cancel_after_out_of_range_or_malformed_is_a_422_naming_the_header(value, rule):
    with pytest.raises(ValidationError) as caught:
        headers.cancel_after_s(value)
    assert caught.value.status_code == 422 and caught.value.error_code == 422001
    [problem] = caught.value.detail
    assert problem["loc"] == ["header", "Cancel-After"] and rule in problem["msg"]


@pytest.mark.parametrize(("value", "wait"), [("wait", 60), ("wait=5", 5), ("WAIT=60", 60), ('wait="7"', 7),
                                             ("respond-async, wait=3", 3), ("return=minimal", None), (None, None),
                                             ("wait=10; foo=bar", 10)])
def test_prefer_wait_reads_rfc_7240(value, wait):
    assert headers.prefer_wait_s(value) == wait


@pytest.mark.parametrize("value", ["wait=0", "wait=61", "wait=abc", "wait=1.5", "wait=-1", "wait="])
def test_a_prefer_wait_out_of_range_is_a_422_naming_the_header(value):
    with pytest.raises(ValidationError) as caught:
        headers.prefer_wait_s(value)
    assert caught.value.detail[0]["loc"] == ["header", "Prefer"] and "1 to 60" in caught.value.detail[0]["msg"]


# -- deadlines in the state machine ------------------------------------------------------------

def test_a_queued_request_past_its_deadline_is_swept_cancelled_off_the_queue_and_not_billed(jobs):
    late, timely, none = submit(jobs, 0, cancel_after_s=30), submit(jobs, 1, cancel_after_s=3600), submit(jobs, 2)
    assert jobs.get(late.request_id).deadline_at == late.deadline_at == late.created_at + timedelta(seconds=30)
    assert jobs.expire_queued() == []
    backdate(jobs, late.request_id, 1)
    assert jobs.expire_queued() == [late.request_id]
    assert jobs.expire_queued() == [], "each request is cancelled once"
    gone = jobs.get(late.request_id)
    assert gone.status is Status.CANCELLED and gone.error == {
        "code": "deadline", "message": "not started within its Cancel-After of 30 s; cancelled"}
    assert (gone.billed_units, gone.cost_usd) == (None, None) and usage_rows(jobs) == []
    assert entry_status(jobs, late.workflow_id) == "CANCELLED", "it left the queue"
    assert {jobs.get(r.request_id).status for r in (timely, none)} == {Status.IN_QUEUE}


def test_two_sweeps_at_once_cancel_each_request_once(jobs):
    reqs = [submit(jobs, i, cancel_after_s=5) for i in range(20)]
    for req in reqs:
        backdate(jobs, req.request_id, 1)
    swept: list[list[str]] = []
    threads = [threading.Thread(target=lambda: swept.append(jobs.expire_queued())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(swept[0] + swept[1]) == sorted(r.request_id for r in reqs)


def test_the_sweep_reads_the_partial_index_of_queued_deadlines(jobs):
    compiled = jobs._expired.compile(jobs.db)
    params = compiled.construct_params({"now": db.utcnow(), "n": 10})
    with jobs.db.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + compiled.string, tuple(params[name] for name in compiled.positiontup or ())))
    assert "ix_requests_queued_deadline" in plan, plan


def test_the_periodic_sweep_cancels_within_its_interval(jobs):
    req = submit(jobs, cancel_after_s=1)
    stop = threading.Event()
    sweeper = threading.Thread(target=jobs.expire_queued_every, args=(0.05, stop))
    sweeper.start()
    try:
        deadline = time.monotonic() + 10
        while jobs.get(req.request_id).status is Status.IN_QUEUE:
            assert time.monotonic() < deadline, "never swept"
            time.sleep(0.02)
        done = jobs.get(req.request_id)
        assert done.error["code"] == "deadline" and done.finished_at - done.deadline_at < timedelta(seconds=2)
    finally:
        stop.set()
        sweeper.join()


def test_begin_cancels_a_queued_request_past_its_deadline_instead_of_running_it(jobs):
    req = submit(jobs, cancel_after_s=10)
    backdate(jobs, req.request_id, 1)
    assert jobs.begin(jobs.get(req.request_id), runner(jobs), req.workflow_id) is None
    assert jobs.get(req.request_id).error["code"] == "deadline"


def test_an_interrupted_run_past_its_deadline_is_failed_not_run_again(jobs):
    req = submit(jobs, cancel_after_s=10)
    jobs.begin(jobs.get(req.request_id), runner_id("dead", "i0"), req.workflow_id)  # its worker has no live row
    backdate(jobs, req.request_id, 1)
    assert jobs.begin(jobs.get(req.request_id), runner(jobs), req.workflow_id) is None
    failed = jobs.get(req.request_id)
    assert failed.status is Status.FAILED and failed.error["code"] == "deadline_exceeded"


# -- stopping a running request ----------------------------------------------------------------

def test_a_stop_is_asked_only_of_a_running_request_and_read_by_its_worker(jobs):
    req = submit(jobs)
    assert not jobs.request_stop(req), "queued: nothing to stop"
    run = jobs.begin(jobs.get(req.request_id), runner(jobs), req.workflow_id)
    assert not jobs.stop_requested(req.request_id)
    assert jobs.request_stop(req) and jobs.request_stop(req)
    assert jobs.stop_requested(req.request_id)
    assert jobs.finish(run, Cancelled(["outputs/req_0/1/0.jpg", "outputs/req_0/1/1.jpg"]))
    assert not jobs.finish(run, Cancelled([])), "a run finishes once"
    assert not jobs.request_stop(req), "finished: nothing to stop"
    done = jobs.get(req.request_id)
    assert done.status is Status.CANCELLED and done.outputs == ["outputs/req_0/1/0.jpg", "outputs/req_0/1/1.jpg"]
    assert (done.billed_units, done.cost_usd) == (2, 0.06), "billed per image kept, not the cap of 3"
    assert usage_rows(jobs) == [(req.request_id, 2, 0.06)]


def test_a_run_stopped_before_any_image_is_cancelled_and_not_billed(jobs):
    req = submit(jobs)
    run = jobs.begin(jobs.get(req.request_id), runner(jobs), req.workflow_id)
    assert jobs.finish(run, Cancelled([]))
    done = jobs.get(req.request_id)
    assert (done.status, done.billed_units, done.cost_usd) == (Status.CANCELLED, 0, 0.0) and usage_rows(jobs) == []


def test_the_result_body_of_a_stopped_request_has_the_images_it_kept_and_a_deadline_s_has_its_error(jobs, tmp_path):
    storage = FileStorage(tmp_path / "files", b"k" * 32)
    req = submit(jobs)
    run = jobs.begin(jobs.get(req.request_id), runner(jobs), req.workflow_id)
    jobs.finish(run, Cancelled(["outputs/req_0/1/0.jpg"]))
    body = bodies.result_body(jobs.get(req.request_id), base_url="http://h", storage=storage, url_ttl_s=60, include_cost=True)
    assert body["status"] == "cancelled" and len(body["output"]["images"]) == 1 and body["output"]["image"]
    assert body["seed"] == 7 and body["cost"] == 0.03 and "error" not in body and "metadata" not in body
    late = submit(jobs, 1, cancel_after_s=2)
    backdate(jobs, late.request_id, 1)
    jobs.expire_queued()
    body = bodies.result_body(jobs.get(late.request_id), base_url="http://h", storage=storage, url_ttl_s=60, include_cost=True)
    assert body["error"]["code"] == "deadline" and "output" not in body and body["cost"] == 0.0


def test_the_stop_check_names_why_it_stopped_and_reads_the_flag_at_most_every_interval(jobs):
    req = submit(jobs, cancel_after_s=3600)
    jobs.begin(jobs.get(req.request_id), runner(jobs), req.workflow_id)
    running = jobs.get(req.request_id)
    reads = []
    real = jobs.stop_requested
    jobs.stop_requested = lambda rid: reads.append(rid) or real(rid)  # count the reads (an instance attribute)
    shutdown = threading.Event()
    check = _StopCheck(jobs, running, shutdown, read_every_s=3600)
    assert not any(check() for _ in range(50)) and len(reads) == 1, "one read per interval, however many steps"
    jobs.request_stop(running)
    assert _StopCheck(jobs, running, shutdown, read_every_s=0)() is True
    asked = _StopCheck(jobs, running, shutdown, read_every_s=0)
    assert asked() and asked.outcome(Stopped(["k0"])) == Cancelled(["k0"])
    hour = timedelta(seconds=3600)
    late = _StopCheck(jobs, replace(running, created_at=running.created_at - hour, deadline_at=running.deadline_at - hour),
                      shutdown)
    assert late() and late.reason == "deadline"
    failed = late.outcome(Stopped(["k0"]))
    assert failed.code == "deadline_exceeded" and "3600 s" in failed.message
    req2 = submit(jobs, 1)
    quiet = _StopCheck(jobs, req2, shutdown, read_every_s=0)
    shutdown.set()
    assert quiet() and quiet.reason == "shutdown" and quiet.outcome(Stopped(["k0"])) == Stopped(["k0"])
