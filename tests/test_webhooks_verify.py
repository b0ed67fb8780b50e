"""modelapi.webhooks.verify: deliveries signed with the standardwebhooks library itself are
accepted and parsed; every kind of bad delivery raises WebhookVerificationError."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from standardwebhooks import Webhook

from modelapi import ModelAPIError, WebhookVerificationError, webhooks

SECRET = "whsec_" + base64.b64encode(b"a 32-byte secret for the tests!!").decode()
BODY = json.dumps({"request_id": "req-1", "status": "completed",
                   "output": {"images": ["http://127.0.0.1/a.png"], "image": "http://127.0.0.1/a.png"}})


def signed(body: str = BODY, secret: str = SECRET, when: datetime | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    when = when or datetime.now(timezone.utc)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, when, body)}


def test_a_good_delivery_returns_the_parsed_body():
    headers = signed()
    assert webhooks.verify(BODY.encode(), headers, SECRET) == json.loads(BODY)
    assert webhooks.verify(BODY, headers, SECRET)["status"] == "completed"
    # header names in any case, from any mapping (a framework's Headers object)
    assert webhooks.verify(BODY, httpx.Headers({k.title(): v for k, v in headers.items()}), SECRET)["request_id"] == "req-1"
    # a rotated secret: several signatures, one matches
    other = Webhook("whsec_" + base64.b64encode(b"another secret").decode()).sign("msg_1", datetime.now(timezone.utc), BODY)
    assert webhooks.verify(BODY, {**headers, "webhook-signature": f"{other} {headers['webhook-signature']}"}, SECRET)


@pytest.mark.parametrize(
    ("body", "headers", "secret", "reason"),
    [
        (BODY.replace("completed", "failed"), lambda: signed(), SECRET, "no matching signature"),
        (BODY, lambda: signed(), "whsec_" + base64.b64encode(b"the wrong secret").decode(), "no matching signature"),
        (BODY, lambda: {**signed(), "webhook-id": "msg_2"}, SECRET, "no matching signature"),
        (BODY, lambda: signed(when=datetime.now(timezone.utc) - timedelta(minutes=10)), SECRET, "webhook-timestamp too old"),
        (BODY, lambda: signed(when=datetime.now(timezone.utc) + timedelta(minutes=10)), SECRET, "webhook-timestamp too new"),
        (BODY, lambda: {k: v for k, v in signed().items() if k != "webhook-signature"}, SECRET, "webhook-signature"),
        (BODY, lambda: {}, SECRET, "webhook-id, webhook-timestamp, webhook-signature"),
        (BODY, lambda: {**signed(), "webhook-timestamp": "yesterday"}, SECRET, "malformed webhook-timestamp"),
        (BODY, lambda: {**signed(), "webhook-signature": "garbage"}, SECRET, "malformed webhook-signature"),
        (BODY, lambda: signed(), "whsec_", "secret"),
        (b"\xff\xfe", lambda: {"webhook-id": "m", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,x"},
         SECRET, "not UTF-8"),
    ],
    ids=["tampered-body", "wrong-secret", "other-id", "too-old", "too-new", "no-signature", "no-headers",
         "bad-timestamp", "malformed-signature", "empty-secret", "not-utf8"],
)
def test_a_bad_delivery_raises(body, headers, secret, reason):
    with pytest.raises(WebhookVerificationError) as info:
        webhooks.verify(body, headers(), secret)  # signed now: a slow suite must not age them
    assert reason in info.value.reason
    assert isinstance(info.value, ModelAPIError) and "webhook verification failed" in str(info.value)


def test_a_signed_body_that_is_not_json_raises():
    with pytest.raises(WebhookVerificationError, match="not JSON"):
        webhooks.verify("not json", signed("not json"), SECRET)
