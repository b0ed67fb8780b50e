"""The request state machine (core/jobs.py) on a temporary SQLite database with the real queue
tables (DBOS client): seconds, no server process."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from modelapi.core import db
from modelapi.core.jobs import Done, Failed, JobStore, QueueOrder, Stopped
from modelapi.core.queue import EntryId
from modelapi.core.workers import runner_id
from modelapi.types import Status

SEQ = "bytedance/seedream-4-0/sequential"


def submit(jobs: JobStore, n: int = 0, owner: str = "key_a"):  # noqa: ANN201
    return jobs.create(request_id=f"req_{owner}_{n}", owner_key_id=owner, model_id=SEQ,
                       inputs={"text": "a fox", "sequential_image_generation_options": 3},
                       input_files=[], seed=7, idempotency_key=None, body_hash=None)


def live_runner(jobs: JobStore, worker_id: str) -> str:
    jobs.workers.register(worker_id, "i1", {"engine": "test"})
    return runner_id(worker_id, "i1")


def entries(jobs: JobStore) -> list[tuple[str, str]]:
    with jobs.db.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT workflow_uuid, status FROM workflow_status ORDER BY created_at"))]


def test_a_request_and_its_queue_entry_are_written_together(jobs):
    req = submit(jobs)
    assert req.status is Status.IN_QUEUE and req.queue_position is None
    assert entries(jobs) == [(req.workflow_id, "ENQUEUED")]
    assert jobs.get(req.request_id).queue_position == 0
    with pytest.raises(sa.exc.IntegrityError):  # the same id again: neither row nor entry
        submit(jobs)
    assert len(entries(jobs)) == 1


def test_done_completes_and_bills_exactly_once(jobs):
    req = submit(jobs)
    run = jobs.begin(jobs.get(req.request_id), live_runner(jobs, "w0"), req.workflow_id)
    assert run.attempt == 1 and jobs.get(req.request_id).status is Status.IN_PROGRESS
    assert jobs.finish(run, Done(["outputs/x/1/0.png"], {"image_count": 1}))
    assert not jobs.finish(run, Done(["outputs/x/1/0.png"], {})), "a run finishes once"
    done = jobs.get(req.request_id)
    assert (done.status, done.billed_units, done.cost_usd) == (Status.COMPLETED, 3, 0.09)  # seedream bills the cap
    with jobs.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.usage)).scalar() == 1


def test_only_the_current_entry_and_a_free_request_can_start(jobs):
    req = submit(jobs)
    assert jobs.begin(jobs.get(req.request_id), live_runner(jobs, "w0"), req.workflow_id + "-old") is None
    run = jobs.begin(jobs.get(req.request_id), runner_id("w0", "i1"), req.workflow_id)
    assert run is not None
    # another worker given the same entry while w0 is alive: not started twice
    assert jobs.begin(jobs.get(req.request_id), live_runner(jobs, "w1"), req.workflow_id) is None


def test_an_interrupted_run_is_taken_over_then_failed_after_max_attempts(jobs):
    req = submit(jobs)
    first = jobs.begin(jobs.get(req.request_id), runner_id("dead", "i0"), req.workflow_id)  # a runner with no live row
    second = jobs.begin(jobs.get(req.request_id), live_runner(jobs, "w1"), req.workflow_id)
    assert (first.attempt, second.attempt) == (1, 2)
    assert not jobs.finish(first, Done([], {})), "the outdated run cannot finish the request"
    jobs.workers.unregister("w1", "i1", leaves_claims=False)
    assert jobs.begin(jobs.get(req.request_id), live_runner(jobs, "w2"), req.workflow_id) is None
    failed = jobs.get(req.request_id)
    assert failed.status is Status.FAILED and failed.error["code"] == "interrupted"


def test_stopped_goes_back_to_the_front_under_a_new_entry(jobs):
    req, later = submit(jobs, 0), submit(jobs, 1, owner="key_b")
    run = jobs.begin(jobs.get(req.request_id), live_runner(jobs, "w0"), req.workflow_id)
    assert jobs.finish(run, Stopped())
    back = jobs.get(req.request_id)
    assert (back.status, back.attempts, back.workflow_id, back.queue_position) == (Status.IN_QUEUE, 0, f"{req.request_id}.1", 0)
    assert jobs.get(later.request_id).queue_position == 1
    assert (back.workflow_id, "ENQUEUED") in entries(jobs)


def test_failed_and_cancel_race_with_start(jobs):
    req = submit(jobs)
    assert jobs.cancel(req) and not jobs.cancel(req)
    assert jobs.begin(jobs.get(req.request_id), live_runner(jobs, "w0"), req.workflow_id) is None
    other = submit(jobs, 1)
    run = jobs.begin(jobs.get(other.request_id), runner_id("w0", "i1"), other.workflow_id)
    assert not jobs.cancel(jobs.get(other.request_id)), "a running request is not cancellable"
    assert jobs.finish(run, Failed("invalid_input", "bad"))
    assert jobs.get(other.request_id).error == {"code": "invalid_input", "message": "bad"}


def test_a_stale_read_starts_nothing(jobs):
    req = submit(jobs)
    read = jobs.get(req.request_id)  # a worker read it, then waited for an inference slot
    assert jobs.cancel(read)
    assert jobs.begin(read, live_runner(jobs, "w0"), req.workflow_id) is None
    assert jobs.get(req.request_id).status is Status.CANCELLED


def test_queue_entry_ids_are_built_and_parsed_in_one_place():
    assert str(EntryId("req_1", 0)) == "req_1.0" and EntryId.parse("req_1.0") == EntryId("req_1", 0)
    assert EntryId.parse("req_1.4").next() == EntryId("req_1", 5)
    hook = EntryId.parse("req_1.webhook.3")
    assert (hook.request_id, hook.generation, hook.kind, str(hook.next())) == ("req_1", 3, "webhook", "req_1.webhook.4")
    assert EntryId("req_1", 0).queue != hook.queue
    up = EntryId.parse("req_1.upstream.2")
    assert (up.request_id, up.generation, up.kind, str(up.next())) == ("req_1", 2, "upstream", "req_1.upstream.3")
    assert len({EntryId("req_1", 0).queue, up.queue, hook.queue}) == 3
    event = EntryId.parse("req_1.webhook.e2.5")
    assert (event.request_id, event.generation, event.kind, event.event) == ("req_1", 5, "webhook", 2)
    assert str(event.next()) == "req_1.webhook.e2.6" and event.queue == hook.queue
    assert EntryId.parse("req_1.webhook.3").event == 0
    for text in ("req_1.7", "req_1.upstream.0", "req_1.webhook.1", "req_1.webhook.e1.1"):
        assert str(EntryId.parse(text)) == text
    with pytest.raises(ValueError):
        EntryId.parse("req_1")


def test_webhook_attempts_are_recorded_by_the_state_machine(jobs):
    req = jobs.create(request_id="req_hook", owner_key_id="key_a", model_id=SEQ, inputs={"text": "a fox"}, input_files=[],
                      seed=7, idempotency_key=None, body_hash=None, webhook={"url": "https://example.com/h", "base_url": "http://b"})
    assert jobs.record_webhook_attempt(req.request_id, 503) == {
        "url": "https://example.com/h", "base_url": "http://b", "attempts": 1, "last_status_code": 503, "delivered_at": None}
    record = jobs.record_webhook_attempt(req.request_id, 204)
    assert (record["attempts"], record["last_status_code"]) == (2, 204) and record["delivered_at"].endswith("Z")
    assert jobs.get(req.request_id).webhook == record


def test_webhook_attempts_queued_without_a_partition_key_are_replaced_at_reconcile(jobs):
    """An attempt an earlier release queued with no partition key would never be handed out by
    the partitioned webhook queue: a worker's start replaces it by the next attempt, keyed."""
    req = submit(jobs, owner="key_old")
    jobs.queue.client.enqueue({"queue_name": "modelapi-webhooks", "workflow_name": "modelapi.deliver_webhook",
                               "workflow_id": f"{req.request_id}.webhook.3", "app_version": "modelapi-queue-1"},
                              req.request_id, 3)
    assert [e.generation for e in jobs.queue.unpartitioned_webhooks()] == [3]
    jobs.reconcile()
    assert jobs.queue.unpartitioned_webhooks() == []
    ids = [f"{req.request_id}.webhook.3", f"{req.request_id}.webhook.4"]
    found = {w.workflow_id: w for w in jobs.queue.client.list_workflows(workflow_ids=ids, load_input=False)}
    assert found[f"{req.request_id}.webhook.3"].status == "CANCELLED"
    assert found[f"{req.request_id}.webhook.4"].status == "ENQUEUED"
    assert found[f"{req.request_id}.webhook.4"].queue_partition_key == "key_old"


def test_fair_share_keys_take_turns_and_keep_their_own_order(jobs):
    a = [submit(jobs, i, "key_a") for i in range(5)]
    b = [submit(jobs, i, "key_b") for i in range(2)]
    order = [r.request_id for r in jobs.with_status(Status.IN_QUEUE)]
    assert order[:4] == [a[0].request_id, b[0].request_id, a[1].request_id, b[1].request_id]
    assert order[4:] == [r.request_id for r in a[2:]]
    assert [jobs.get(rid).queue_position for rid in order] == list(range(7))


def test_fair_share_ranks_after_the_running_requests(jobs):
    a = [submit(jobs, i, "key_a") for i in range(3)]  # three rounds of key_a
    runner = live_runner(jobs, "w1")
    for r in a:
        assert jobs.begin(jobs.get(r.request_id), runner, r.workflow_id) is not None
    b0 = submit(jobs, 0, "key_b")  # nothing queued: the round of the newest running request
    a3 = submit(jobs, 3, "key_a")  # the round after key_a's newest running request
    b1 = submit(jobs, 1, "key_b")  # the round after key_b's newest queued one
    assert [r.request_id for r in jobs.with_status(Status.IN_QUEUE)] == [b0.request_id, a3.request_id, b1.request_id]
    assert b0.priority == a[2].priority, "no newcomer ranks ahead of a running request's round"
    assert a3.priority == b1.priority > b0.priority, "key_a's next and key_b's second share one round"


def test_reap_gives_a_dead_workers_claims_back_once(jobs):
    jobs.workers.register("dead", "i0", {})
    with jobs.db.begin() as conn:
        conn.execute(db.workers.update().values(heartbeat_at=0.0))
    assert [w for w, _ in jobs.workers.claim_dead("w1")] == ["dead"]
    assert jobs.workers.claim_dead("w2") == [], "one reaper per dead worker"
    assert not jobs.workers.is_live(runner_id("dead", "i0"))


def test_positions_are_exact_near_the_head_and_from_a_snapshot_beyond(jobs, monkeypatch):
    jobs.order = QueueOrder(jobs.db, exact=3)
    reqs = [submit(jobs, n) for n in range(6)]  # one key: queued in submission order
    assert [jobs.get(r.request_id).queue_position for r in reqs] == [0, 1, 2, 3, 4, 5]
    jobs.cancel(reqs[0])  # the snapshot is at most a second old: beyond the exact range it may lag
    assert [jobs.get(r.request_id).queue_position for r in reqs[1:4]] == [0, 1, 2]
    real_monotonic = time.monotonic  # a minute later, the next read beyond the exact range takes a new snapshot
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 60)
    assert [jobs.get(r.request_id).queue_position for r in reqs[4:]] == [3, 4]
    late = submit(jobs, 9)  # queued after the snapshot: at the back
    assert jobs.get(late.request_id).queue_position == 5


def test_counts_come_from_the_ledger_kept_by_triggers_and_survive_compaction(jobs):
    reqs = [submit(jobs, n) for n in range(4)]
    jobs.cancel(reqs[0])
    run = jobs.begin(jobs.get(reqs[1].request_id), live_runner(jobs, "w1"), reqs[1].workflow_id)
    jobs.finish(run, Done(["o/0.png"], {}))
    with jobs.db.begin() as conn:  # a change made outside the state machine is counted too
        conn.execute(db.requests.delete().where(db.requests.c.request_id == reqs[3].request_id))
    expected = {(SEQ, "in_queue", 1), (SEQ, "cancelled", 1), (SEQ, "completed", 1)}
    assert set(jobs.counts()) == expected
    seq = jobs.change_seq()
    with jobs.db.begin() as conn:  # the ledger after 1000 failed requests were deleted: past its fold threshold
        conn.execute(db.request_counts.insert(), [{"model_id": SEQ, "status": "failed", "n": n} for n in (1, -1) * 1000])
    assert set(jobs.counts()) == expected  # this read folds the ledger
    with jobs.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.request_counts)).scalar() == 3
    assert set(jobs.counts()) == expected
    submit(jobs, 7)
    assert jobs.change_seq() > seq


def test_pages_are_newest_first_and_never_repeat_or_skip_while_requests_arrive(jobs):
    for n in range(5):
        submit(jobs, n)
    submit(jobs, 0, owner="key_b")
    seen, before = [], None
    while True:
        page = jobs.page("key_a", limit=2, before_seq=before)
        if not page:
            break
        seen += [r.request_id for r in page]
        before = page[-1].seq
        submit(jobs, 10 + len(seen))  # newer requests do not disturb older pages
    assert seen == [f"req_key_a_{n}" for n in (4, 3, 2, 1, 0)]
    assert [r.request_id for r in jobs.page("key_a", status=Status.IN_QUEUE, limit=1)] == ["req_key_a_15"]
    assert jobs.page("key_a", model_id="bytedance/dreamina-4-0/edit") == []


def test_a_watcher_reads_versions_then_positions_of_many_in_one_read_of_the_queue_head(jobs):
    jobs.order = QueueOrder(jobs.db, exact=2)
    reqs = [submit(jobs, n) for n in range(4)]
    ids = [r.request_id for r in reqs]
    before = jobs.versions(ids)
    assert set(before.values()) == {0}
    assert jobs.queue_positions(ids) == dict(zip(ids, [0, 1, 2, 3]))  # the last two from the snapshot
    run = jobs.begin(jobs.get(ids[0]), live_runner(jobs, "w1"), reqs[0].workflow_id)
    jobs.set_progress(run, 0.5)
    assert jobs.versions(ids)[ids[0]] == 2 and jobs.versions(ids)[ids[1]] == 0
    assert jobs.queue_positions(ids[1:3]) == {ids[1]: 0, ids[2]: 1}
    assert [r.progress for r in jobs.watch([ids[0]])] == [0.5]


def test_an_upstreams_queue_is_shown_as_ours_while_it_queues_the_request(jobs):
    from modelapi.core import auth
    from modelapi.core.jobs import Polled

    key, secret = auth.create_key(jobs.db, "a")
    req = submit(jobs, owner=key.id)
    run = jobs.begin(jobs.get(req.request_id), live_runner(jobs, "w0"), req.workflow_id)
    jobs.set_progress(run, 0.0)
    version = jobs.get(req.request_id).version
    record = {"backend": "runcomfy", "request_id": "up_1", "status": "in_queue", "queue_position": 1500,
              "cancel_url": "http://up/v1/requests/up_1/cancel"}
    jobs.set_upstream(run, record)  # beyond order.exact: the upstream's position, not our snapshot's
    shown = jobs.get(req.request_id)
    assert shown.status is Status.IN_PROGRESS and shown.version == version + 1  # stored as is; a change clients see
    assert shown.shown() == (Status.IN_QUEUE, None, 1500)
    assert jobs.poll(req.request_id, auth.hash_key(secret)) == (True, Polled(Status.IN_QUEUE, None, 1500, None, upstream=True))
    jobs.set_upstream(run, record | {"status": "in_progress", "queue_position": None})
    jobs.set_progress(run, 0.5)
    assert jobs.poll(req.request_id, auth.hash_key(secret)) == (True, Polled(Status.IN_PROGRESS, 0.5, None, None))
    jobs.set_upstream(run, record)
    jobs.set_upstream(run, None)  # the try ended: another backend goes on
    assert jobs.get(req.request_id).shown() == (Status.IN_PROGRESS, 0.5, None)
    assert jobs.finish(run, Done(["outputs/x/1/0.png"], {"image_count": 1}))
    jobs.set_upstream(run, record)  # an outdated run writes nothing
    assert jobs.poll(req.request_id, auth.hash_key(secret))[1].status is Status.COMPLETED
