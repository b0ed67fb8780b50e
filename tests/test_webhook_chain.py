"""Intermediate webhook events in the state machine (core/jobs.py, core/webhook_events.py) on a
temporary SQLite database with the real queue tables: which state changes make an event, that
each is enqueued in the transaction of its change or of the end of the event before it (one
live entry per request), and that the terminal delivery waits for the last event. Seconds, no
server process (tests/server/test_webhook_events.py delivers them over HTTP)."""

from __future__ import annotations

import sqlalchemy as sa

from modelapi.core import bodies
from modelapi.core.queue import EntryId
from modelapi.core.storage import FileStorage
from modelapi.core.workers import runner_id
from modelapi.types import Status

SEQ = "bytedance/seedream-4-0/sequential"


def submit(jobs, request_id: str = "req_ev", intermediate: bool = True):  # noqa: ANN001, ANN201
    hook = {"url": "https://example.com/h", "base_url": "http://b", **({"intermediate_status": True} if intermediate else {})}
    return jobs.create(request_id=request_id, owner_key_id="key_a", model_id=SEQ,
                       inputs={"text": "a fox", "sequential_image_generation_options": 3}, input_files=[], seed=7,
                       idempotency_key=None, body_hash=None, webhook=hook)


def hooks(jobs, request_id: str) -> set[str]:  # noqa: ANN001
    """The request's webhook entries (one per attempt, made or to come)."""
    with jobs.db.connect() as conn:
        return {r[0] for r in conn.execute(sa.text("SELECT workflow_uuid FROM workflow_status WHERE workflow_uuid LIKE :p"),
                                           {"p": f"{request_id}.webhook.%"})}


def live(jobs, worker: str) -> str:  # noqa: ANN001
    jobs.workers.register(worker, "i1", {"engine": "test"})
    return runner_id(worker, "i1")


def test_entry_ids_of_intermediate_events_parse_back():
    entry = EntryId("req_1", 2, "webhook", 3)
    assert str(entry) == "req_1.webhook.e3.2" and EntryId.parse(str(entry)) == entry
    assert str(entry.next()) == "req_1.webhook.e3.3" and entry.queue == EntryId("req_1", 1, "webhook").queue
    assert EntryId.parse("req_1.webhook.2") == EntryId("req_1", 2, "webhook")


def test_events_are_made_by_start_and_new_partial_outputs_and_delivered_in_order(jobs, tmp_path):
    from modelapi.core.jobs import Done

    rid = submit(jobs).request_id
    run = jobs.begin(jobs.get(rid), live(jobs, "w0"), f"{rid}.0")
    assert hooks(jobs, rid) == {f"{rid}.webhook.e1.1"}, "in_progress: enqueued with the start"
    jobs.set_progress(run, 0.2)
    jobs.set_partial(run, ["k0"])
    jobs.set_progress(run, 0.5)
    jobs.set_partial(run, ["k0"])  # nothing new
    jobs.set_partial(run, ["k0", "k1"])
    record = jobs.get(rid).webhook
    assert [(e["progress"], e["partial_outputs"]) for e in record["events"]] == [(0.0, None), (0.2, ["k0"]), (0.5, ["k0", "k1"])]
    assert hooks(jobs, rid) == {f"{rid}.webhook.e1.1"}, "one live entry: later events wait for the first"
    assert jobs.finish(run, Done(["k0", "k1", "k2"], {}))
    assert hooks(jobs, rid) == {f"{rid}.webhook.e1.1"}, "the terminal delivery waits too"

    record = jobs.record_webhook_attempt(rid, 500, 1)  # a failed attempt: event 1 is retried, the rest wait
    assert (record["events"][0]["attempts"], record.get("events_ended", 0)) == (1, 0)
    assert hooks(jobs, rid) == {f"{rid}.webhook.e1.1"}
    record = jobs.record_webhook_attempt(rid, 204, 1)
    assert record["events"][0]["delivered_at"] and record["events_ended"] == 1
    assert hooks(jobs, rid) == {f"{rid}.webhook.e{k}.1" for k in (1, 2)}, "its end enqueued the next, in the same transaction"
    assert jobs.record_webhook_attempt(rid, 500, 1) == jobs.get(rid).webhook, "an ended event: no change"
    jobs.give_up_webhook_event(rid, 2)
    assert hooks(jobs, rid) == {f"{rid}.webhook.e{k}.1" for k in (1, 2, 3)}
    jobs.record_webhook_attempt(rid, 200, 3)
    assert hooks(jobs, rid) == {f"{rid}.webhook.e{k}.1" for k in (1, 2, 3)} | {f"{rid}.webhook.1"}, \
        "then the terminal delivery's first attempt"
    state = bodies.result_body(jobs.get(rid), base_url="http://b", storage=FileStorage(tmp_path / "files", b"s"),
                               url_ttl_s=60, include_cost=False)["webhook"]
    assert [e["attempts"] for e in state["events"]] == [2, 0, 1]
    assert [bool(e["delivered_at"]) for e in state["events"]] == [True, False, True]
    assert state["attempts"] == 0 and state["delivered_at"] is None


def test_an_event_made_while_the_chain_is_idle_is_enqueued_with_its_change(jobs):
    from modelapi.core.jobs import Failed

    rid = submit(jobs).request_id
    run = jobs.begin(jobs.get(rid), live(jobs, "w0"), f"{rid}.0")
    jobs.record_webhook_attempt(rid, 200, 1)
    assert hooks(jobs, rid) == {f"{rid}.webhook.e1.1"}, "nothing pending: the chain is idle"
    jobs.set_partial(run, ["k0"])
    assert f"{rid}.webhook.e2.1" in hooks(jobs, rid)
    jobs.record_webhook_attempt(rid, 200, 2)
    assert jobs.finish(run, Failed("generation_error", "boom"))
    assert f"{rid}.webhook.1" in hooks(jobs, rid), "no event pending: the terminal one goes at once"


def test_a_restart_makes_no_new_in_progress_nor_repeats_partial_outputs(jobs):
    rid = submit(jobs).request_id
    first = jobs.begin(jobs.get(rid), runner_id("dead", "i0"), f"{rid}.0")  # a runner with no live row
    jobs.set_partial(first, ["a0"])
    second = jobs.begin(jobs.get(rid), live(jobs, "w1"), f"{rid}.0")
    assert second.attempt == 2
    jobs.set_partial(second, ["b0"])
    assert len(jobs.get(rid).webhook["events"]) == 2, "no second in_progress, no image announced twice"
    jobs.set_partial(second, ["b0", "b1"])
    assert [e["partial_outputs"] for e in jobs.get(rid).webhook["events"]] == [None, ["a0"], ["b0", "b1"]]


def test_without_the_flag_nothing_changes(jobs):
    from modelapi.core.jobs import Done

    rid = submit(jobs, "req_plain", intermediate=False).request_id
    run = jobs.begin(jobs.get(rid), live(jobs, "w0"), f"{rid}.0")
    jobs.set_partial(run, ["k0"])
    assert hooks(jobs, rid) == set()
    assert jobs.finish(run, Done(["k0", "k1"], {}))
    assert hooks(jobs, rid) == {f"{rid}.webhook.1"}
    assert set(jobs.get(rid).webhook) == {"url", "base_url", "attempts", "last_status_code", "delivered_at"}


def test_the_payload_of_an_event_is_the_status_body_as_it_was_then(jobs, tmp_path):
    """Built by the delivery for event 2 after the request moved on: the progress and images
    of when the event was made."""
    from modelapi.core.config import Settings
    from modelapi.core.delivery import Delivery, message_id

    rid = submit(jobs).request_id
    run = jobs.begin(jobs.get(rid), live(jobs, "w0"), f"{rid}.0")
    jobs.set_progress(run, 0.4)
    jobs.set_partial(run, ["outputs/x/1/0.png"])
    jobs.set_progress(run, 0.9)
    storage = FileStorage(tmp_path / "files", b"s3cret")
    delivery = Delivery(Settings(data_dir=tmp_path), jobs, storage)
    body = delivery._body(jobs.get(rid), 2)
    assert body["status"] == Status.IN_PROGRESS.value and body["progress"] == 0.4
    assert [u.split("?")[0] for u in body["partial_output"]["images"]] == ["http://b/files/outputs/x/1/0.png"]
    assert body["status_url"] == f"http://b/v1/requests/{rid}/status"
    assert "partial_output" not in delivery._body(jobs.get(rid), 1)
    assert (message_id(rid), message_id(rid, 2)) == (f"msg_{rid}", f"msg_{rid}_2")
