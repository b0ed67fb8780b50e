"""One webhook attempt (:func:`modelapi.core.delivery.post`) against hostile receivers over real
HTTP on 127.0.0.1: a total deadline whatever the receiver does, an answer's body never read,
the address check before the attempt and the connection pinned to the checked address, URLs
logged without their query; and the receiver back-off (:class:`ReceiverBreaker`) on a clock of
its own."""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from modelapi.core.delivery import ReceiverBreaker, post
from modelapi.core.fetch import FetchPolicy
from receivers import HostileReceiver, Mode

OPEN = FetchPolicy(allow_private=True)
SLACK_S = 0.5


@pytest.fixture
def receivers() -> Iterator[list[HostileReceiver]]:
    made: list[HostileReceiver] = []
    yield made
    for r in made:
        r.close()


def hostile(receivers: list[HostileReceiver], mode: Mode) -> HostileReceiver:
    r = HostileReceiver(mode)
    receivers.append(r)
    return r


@pytest.mark.parametrize("mode", ["trickle", "hold"])
def test_an_attempt_ends_by_the_timeout_whatever_the_receiver_does(receivers, mode):
    r = hostile(receivers, mode)
    started = time.monotonic()
    assert post(r.url, '{"a": 1}', {"content-type": "application/json"}, OPEN, timeout_s=1.0) is None
    took = time.monotonic() - started
    assert 1.0 <= took < 1.0 + SLACK_S, took
    (conn,) = r.connections
    assert conn.done.wait(2) and conn.hung_up_at is not None
    assert conn.hung_up_at - conn.accepted_at < 1.0 + SLACK_S
    assert conn.request.endswith(b'{"a": 1}')
    if mode == "trickle":  # each byte came well within any per-read timeout; only a total deadline stops it
        assert conn.bytes_sent >= 3


def test_an_endless_answer_body_is_never_read(receivers):
    r = hostile(receivers, "endless")
    tracemalloc.start()
    try:
        started = time.monotonic()
        code = post(r.url, "{}", {}, OPEN, timeout_s=5.0)
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 200
    assert took < 2.0, took  # right after the headers, not at the deadline
    assert peak < 4 * 2**20, peak
    (conn,) = r.connections
    assert conn.done.wait(5), "the sender never hung up"
    assert conn.bytes_sent < 64 * 2**20  # what the kernel's buffers took before the hang-up, no more


def test_the_address_is_checked_before_the_attempt_and_the_connection_goes_to_it(receivers, listener):
    assert post(f"http://127.0.0.1:{listener.port}/hook", "{}", {}, FetchPolicy(), timeout_s=1.0) is None
    assert listener.connections() == 0
    r = hostile(receivers, "hold")
    pinned = FetchPolicy(allowed_hosts=frozenset({f"receiver.test:{r.port}"}), resolver=lambda host, port: ["127.0.0.1"])
    assert post(f"http://receiver.test:{r.port}/hook", "{}", {}, pinned, timeout_s=0.3) is None
    (conn,) = r.connections
    assert f"\r\nhost: receiver.test:{r.port}\r\n".encode() in conn.request.lower()


def test_webhook_urls_are_logged_without_their_query(receivers, listener, caplog):
    r = hostile(receivers, "trickle")
    logger = logging.getLogger("modelapi.webhooks")
    logger.addHandler(caplog.handler)  # the modelapi loggers may not propagate to the root
    try:
        with caplog.at_level(logging.INFO, logger="modelapi.webhooks"):
            assert post(f"{r.url}?token=s3cret-token#frag", "{}", {}, OPEN, timeout_s=0.3) is None
            assert post(f"http://127.0.0.1:{listener.port}/private?token=s3cret-token", "{}", {}, FetchPolicy(),
                        timeout_s=0.3) is None
    finally:
        logger.removeHandler(caplog.handler)
    records = list({id(rec): rec for rec in caplog.records if rec.name == "modelapi.webhooks"}.values())
    assert [rec.url for rec in records] == [r.url, f"http://127.0.0.1:{listener.port}/private"]  # type: ignore[attr-defined]
    for rec in records:
        assert "s3cret" not in rec.getMessage() and all("s3cret" not in str(v) for v in vars(rec).values())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_receiver_that_keeps_giving_no_answer_is_backed_off_then_probed():
    clock = Clock()
    breaker = ReceiverBreaker(threshold=3, cooldown_s=30, max_cooldown_s=100, probe_s=11, capacity=3, clock=clock)
    slow = breaker.receiver("key_a", "https://hooks.example.com/a?token=1")
    assert slow == breaker.receiver("key_a", "https://hooks.example.com:443/b") == ("key_a", "https://hooks.example.com:443")
    for _ in range(2):
        breaker.record(slow, answered=False)
        assert breaker.wait_s(slow) == 0
    breaker.record(slow, answered=False)
    assert breaker.wait_s(slow) == 30
    assert breaker.wait_s(breaker.receiver("key_b", "https://hooks.example.com/a")) == 0, "another key's receiver"
    assert breaker.wait_s(breaker.receiver("key_a", "https://other.example.com/")) == 0, "another host"
    clock.now += 30
    assert breaker.wait_s(slow) == 0  # one probe...
    assert breaker.wait_s(slow) == 11  # ...while the others wait
    breaker.record(slow, answered=False)
    assert breaker.wait_s(slow) == 60  # doubled
    clock.now += 60
    assert breaker.wait_s(slow) == 0
    breaker.record(slow, answered=False)
    assert breaker.wait_s(slow) == 100  # at most max_cooldown_s
    clock.now += 100
    assert breaker.wait_s(slow) == 0
    breaker.record(slow, answered=True)  # any answer forgets it
    breaker.record(slow, answered=False)
    assert breaker.wait_s(slow) == 0
    for n in range(5):  # bounded: the least recently failed are forgotten first
        breaker.record(("key_c", f"http://h{n}:80"), answered=False)
    assert len(breaker._failed) == 3 and slow not in breaker._failed
