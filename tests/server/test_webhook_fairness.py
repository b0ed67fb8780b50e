"""One tenant's webhook receivers cannot hurt another's deliveries (a real server in both
configurations, hostile receivers on 127.0.0.1, see ``tests/receivers.py``): every attempt ends
by ``--webhook-timeout-s`` and never reads an answer's body; one key's attempts hold at most
``WEBHOOK_PER_KEY`` of a worker's delivery slots; a receiver that keeps giving no answer is
backed off, for its key only; webhook URLs are logged without their query."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from modelapi.core.queue import WEBHOOK_PER_KEY
from receivers import HostileReceiver
from test_webhooks import SEQ, Receiver, webhook_entries

SLACK_S = 0.75


@pytest.fixture
def hostile() -> Iterator[list[HostileReceiver]]:
    made: list[HostileReceiver] = []
    yield made
    for r in made:
        r.close()


@pytest.fixture
def fast() -> Iterator[Receiver]:
    r = Receiver([200])
    yield r
    r.server.shutdown()


def until(condition, timeout_s: float, what: str):  # noqa: ANN001, ANN201
    """Poll ``condition()`` every 50 ms until it is truthy (returned), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return value


def hook(c: httpx.Client, rid: str) -> dict:
    """The request's webhook record (before the request ends: no attempt yet)."""
    return c.get(f"/v1/requests/{rid}/result").json().get("webhook") or {"attempts": 0, "delivered_at": None}


def submit(c: httpx.Client, url: str) -> str:
    resp = c.post(f"/v1/models/{SEQ}", params={"webhook": url}, json={"text": "one image"})
    assert resp.status_code == 200, resp.text
    return resp.json()["request_id"]


def latency_s(c: httpx.Client, receiver: Receiver) -> tuple[float, float]:
    """Submit a request with a webhook to ``receiver``; ``(seconds from the request's end to the
    delivery's arrival, time.monotonic() at the arrival)``."""
    seen = len(receiver.deliveries)
    submit(c, receiver.url)
    receiver.wait(seen + 1, timeout_s=30)
    finished = datetime.fromisoformat(json.loads(receiver.deliveries[seen][1])["finished_at"]).timestamp()
    arrived_mono, arrived_wall = receiver.arrived[seen]
    return arrived_wall - finished, arrived_mono


def test_a_trickled_answer_ends_by_the_timeout_and_an_endless_one_is_not_read(make_server, hostile):
    trickle, endless = HostileReceiver("trickle"), HostileReceiver("endless")
    hostile += [trickle, endless]
    srv = make_server(args=["--allow-private-urls", "--webhook-timeout-s", "2"]).start()
    with srv.client() as c:
        slow = submit(c, f"{trickle.url}?token=s3cret-token")
        huge = submit(c, f"{endless.url}?token=s3cret-token")
        slow_hook = until(lambda: (h := hook(c, slow))["attempts"] >= 1 and h, 30, "the trickled attempt was not recorded")
        huge_hook = until(lambda: (h := hook(c, huge))["delivered_at"] and h, 30, "the endless answer was not delivered")
    assert slow_hook["last_status_code"] is None and slow_hook["delivered_at"] is None
    assert huge_hook["last_status_code"] == 200 and huge_hook["attempts"] == 1
    first = trickle.connections[0]
    assert first.done.wait(5) and first.hung_up_at is not None
    assert first.bytes_sent >= 3  # it kept answering, a byte at a time
    assert first.hung_up_at - first.accepted_at < 2.0 + SLACK_S
    (answer,) = endless.connections
    assert answer.done.wait(5) and answer.hung_up_at is not None
    assert answer.hung_up_at - answer.accepted_at < 1.5  # right after the headers, not at the deadline
    log = srv.log()
    assert "s3cret" not in log
    assert f'"url": "{trickle.url}"' in log


def test_one_key_s_slow_receivers_do_not_delay_another_key_s_webhook(make_server, hostile, fast):
    timeout_s = 5.0
    srv = make_server(args=["--allow-private-urls", "--webhook-timeout-s", str(timeout_s)]).start()
    victim_key = srv.cli("keys", "create", "--name", "victim").stdout.strip().split()[-1]
    slow = [HostileReceiver("hold") for _ in range(8)]
    hostile += slow
    with srv.client() as attacker, srv.client(victim_key) as victim:
        at_rest, _ = latency_s(victim, fast)
        for r in slow:
            submit(attacker, r.url)
        until(lambda: sum(r.open_count() for r in slow) >= WEBHOOK_PER_KEY, 30, "the attack never started")
        under_attack, arrived = latency_s(victim, fast)
    # when the victim's delivery arrived: the attacker's connections open, and its attempts not yet made
    held = sum(1 for r in slow for c in r.connections
               if c.accepted_at <= arrived and (c.hung_up_at is None or c.hung_up_at > arrived))
    waiting = len(slow) - sum(1 for r in slow for c in r.connections if c.accepted_at <= arrived)
    print(f"victim webhook latency: at rest {at_rest:.3f} s, under attack {under_attack:.3f} s "
          f"({srv.config}, {held} attacker connections held, {waiting} attacker attempts waiting)")
    assert held == WEBHOOK_PER_KEY and waiting > 0, "the attacker held more than its share of delivery slots"
    assert under_attack < 2.0 < timeout_s, "the victim waited for an attacker's timeout"


def test_a_receiver_that_keeps_giving_no_answer_is_backed_off_for_its_key_only(make_server, hostile, fast):
    dead = HostileReceiver("hold")
    hostile.append(dead)
    srv = make_server(args=["--allow-private-urls", "--webhook-timeout-s", "1"]).start()
    other_key = srv.cli("keys", "create", "--name", "other").stdout.strip().split()[-1]
    with srv.client() as c, srv.client(other_key) as other:
        rids = [submit(c, dead.url) for _ in range(4)]

        def backed_off() -> dict[str, int] | None:
            """Each request's recorded attempts (POSTs made), once every request has had an
            entry that ran without POSTing and has its next one waiting."""
            attempts = {}
            for rid in rids:
                entries = webhook_entries(srv, rid)
                attempts[rid] = hook(c, rid)["attempts"]
                ran = sum(1 for s in entries.values() if s == "SUCCESS")
                if not (ran > attempts[rid] and len(entries) == ran + 1):
                    return None
            return attempts

        attempts = until(backed_off, 30, "the dead receiver was not backed off")
        posts = len(dead.connections)
        assert posts == sum(attempts.values()), "a POST was made that no attempt recorded"
        assert posts <= 3 + WEBHOOK_PER_KEY - 1  # the back-off threshold, plus those already under way
        assert '"event": "webhook.backed_off"' in srv.log()
        # the key's other receivers are unaffected...
        delay, _ = latency_s(c, fast)
        assert delay < 2.0
        # ...and so is another key sending to the same receiver
        submit(other, dead.url)
        until(lambda: len(dead.connections) > posts, 10, "the other key's POST was held back")
        assert len(dead.connections) == posts + 1
