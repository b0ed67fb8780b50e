"""Accounts on a real SQLite database (no server): a submit's checks and their order, the budget's
reservation and settlement in the state machine's transactions, a key's running cap, periods."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from modelapi import catalog
from modelapi.core import accounts, auth
from modelapi.core.accounts import Accounts, KeyFields
from modelapi.core.jobs import Done, Failed
from modelapi.errors import ForbiddenError, InsufficientFundsError, RateLimitedError, RateLimitError, ValidationError

SEQ = "bytedance/seedream-4-0/sequential"


def submit(jobs, acc: Accounts, key_id: str, n: int = 1, rid: str | None = None):
    key = acc.get(key_id)
    inputs = {"text": "a fox", "sequential_image_generation_options": n}
    admission = acc.admission(key, catalog.get(SEQ), inputs)
    rid = rid or f"r_{key_id}_{submit.count}"
    submit.count += 1
    return jobs.create(request_id=rid, owner_key_id=key_id, model_id=SEQ, inputs=inputs, input_files=[], seed=1,
                       idempotency_key=None, body_hash="h", admission=admission)


submit.count = 0


@pytest.fixture
def acc(jobs):
    return Accounts(jobs.db, max_queued_per_key=100, prices_usd={SEQ: 0.03})


def test_the_first_key_is_admin_and_later_ones_are_users(acc):
    first, _ = acc.create(KeyFields())
    second, _ = acc.create(KeyFields(name="b"))
    assert (first["role"], second["role"]) == ("admin", "user")


def test_refusals_come_in_order_and_a_refused_submit_counts_against_nothing(jobs, acc):
    acc.create(KeyFields())
    key, _ = acc.create(KeyFields(models=[SEQ], rpm=2, max_queued=1, budget_usd=0.03, budget_period="day"))
    with pytest.raises(ForbiddenError) as refused:
        acc.check_model(acc.get(key["id"]), "bytedance/dreamina-4-0/edit")
    assert refused.value.error_code == 403003
    submit(jobs, acc, key["id"])                      # rate 1/2, queue 1/1, budget 0.03/0.03
    with pytest.raises(RateLimitError) as queue_full:  # the rate still allows one: the queue refuses
        submit(jobs, acc, key["id"])
    assert type(queue_full.value) is RateLimitError and queue_full.value.error_code == 429001
    state = acc.state(key["id"])
    assert (state["rate_remaining"], state["queued"], state["budget_reserved_usd"]) == (1, 1, 0.03)
    acc.update(key["id"], KeyFields(max_queued=None))
    with pytest.raises(InsufficientFundsError) as broke:
        submit(jobs, acc, key["id"])
    assert broke.value.detail["budget_remaining_usd"] == 0.0 and broke.value.detail["resets_at"].endswith("T00:00:00.000000Z")
    acc.update(key["id"], KeyFields(budget_usd=None, budget_period=None))
    submit(jobs, acc, key["id"])                       # the second submit of the minute
    with pytest.raises(RateLimitedError) as rate:
        submit(jobs, acc, key["id"])
    assert rate.value.error_code == 429002 and rate.value.rate_limit[:2] == (2, 0) and 1 <= rate.value.retry_after_s <= 60


def test_a_reservation_is_settled_when_the_request_ends(jobs, acc):
    acc.create(KeyFields())
    key, _ = acc.create(KeyFields(budget_usd=1.0, budget_period="month"))
    done = submit(jobs, acc, key["id"], n=3)          # reserves 0.09
    failed = submit(jobs, acc, key["id"], n=2)        # reserves 0.06
    cancelled = submit(jobs, acc, key["id"], n=1)     # reserves 0.03
    assert acc.state(key["id"])["budget_reserved_usd"] == pytest.approx(0.18)
    assert jobs.cancel(cancelled)
    for req, outcome in ((done, Done(["a", "b"], {})), (failed, Failed("boom", "it broke"))):
        run = jobs.begin(jobs.get(req.request_id), "w#1", req.workflow_id)
        assert run is not None and jobs.finish(run, outcome)
    state = acc.state(key["id"])
    assert state["budget_reserved_usd"] == pytest.approx(0.0, abs=1e-9)
    assert state["budget_spent_usd"] == pytest.approx(0.09)  # seedream bills its cap: 3 units
    assert state["budget_remaining_usd"] == pytest.approx(0.91)


def test_a_key_at_its_running_cap_waits_on_a_new_delayed_entry(jobs, acc):
    acc.create(KeyFields())
    key, _ = acc.create(KeyFields(max_running=1))
    first, second = submit(jobs, acc, key["id"]), submit(jobs, acc, key["id"])
    assert jobs.begin(jobs.get(first.request_id), "w#1", first.workflow_id) is not None
    assert jobs.begin(jobs.get(second.request_id), "w#1", second.workflow_id) is None
    moved = jobs.get(second.request_id)
    assert moved.status.value == "in_queue" and moved.workflow_id == f"{second.request_id}.1"


def test_periods_and_windows():
    now = datetime(2026, 12, 31, 23, 59, 30, tzinfo=timezone.utc)
    assert accounts.budget_period("day", now)[0::2] == ("day:2026-12-31", datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert accounts.budget_period("month", now)[0::2] == ("month:2026-12", datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert accounts.budget_period("total", now) == ("total", None, None)
    assert accounts.rate_window(120.0) == (2, 60) and accounts.rate_window(179.5) == (2, 1)


def test_key_fields_name_the_field_and_rule(acc):
    with pytest.raises(Exception) as bad:
        KeyFields(rpm=0)
    assert "rpm" in str(bad.value)
    with pytest.raises(Exception) as unknown:
        KeyFields(models=["nope/nope/nope"])
    assert "unknown model id 'nope/nope/nope'" in str(unknown.value)
    with pytest.raises(ValidationError) as no_period:
        acc.create(KeyFields(budget_usd=5))
    assert no_period.value.detail[0]["loc"] == ["body", "budget_period"]
    assert auth.authenticate(acc.db, "mapi_nope") is None
