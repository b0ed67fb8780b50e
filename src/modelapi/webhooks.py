"""Check webhook deliveries from a Model API server (Standard Webhooks, with the
``standardwebhooks`` library).

When a request submitted with ``webhook=URL`` ends, our server POSTs its result body (as
``GET /result?include_cost=true`` returns it) to URL with the headers ``webhook-id``,
``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>``),
signed with the key's secret (``Client.webhook_secret()``, ``whsec_...``). Retries of one
delivery carry the same ``webhook-id``: use it to skip duplicates. With
``&webhook_intermediate_status=true`` the request's status body (``GET /status``:
``in_progress`` with ``progress``, then with ``partial_output.images`` as images are stored)
comes first on each change, in order, each with a ``webhook-id`` of its own
(``msg_<request id>_<k>``); the result body keeps ``msg_<request id>``.

Example (any web framework; here Starlette)::

    from modelapi import webhooks, WebhookVerificationError

    SECRET = client.webhook_secret()          # once, then keep it in your configuration

    async def receive(request):
        try:
            result = webhooks.verify(await request.body(), request.headers, SECRET)
        except WebhookVerificationError:
            return Response(status_code=400)
        print(result["request_id"], result["status"], result.get("output"))
        return Response(status_code=204)
"""

from __future__ import annotations

import binascii
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import standardwebhooks
from standardwebhooks.webhooks import EmptyWebhookSecretError

from modelapi.errors import WebhookVerificationError

__all__ = ["WebhookVerificationError", "verify"]

_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
TOLERANCE_S = 300
"""How far a delivery's ``webhook-timestamp`` may be from now (Standard Webhooks: 5 minutes)."""
_SIGNATURE = re.compile(r"v[0-9]+[a-z]*,[A-Za-z0-9+/]+={0,2}")
"""One entry of the ``webhook-signature`` header: ``<version>,<base64>``."""


def verify(body: bytes | str, headers: Mapping[str, str], secret: str | bytes) -> Any:
    """Check one delivery and return its parsed JSON body (the result body: a dict with
    ``request_id``, ``status``, ``output`` or ``error``...; for an intermediate event, the
    status body: ``status`` ``in_progress``, ``progress``, ``partial_output``).

    Args:
        body: the raw request body exactly as received (bytes, or str decoded as UTF-8); not
            re-serialized JSON, or the signature will not match.
        headers: the request's headers (any mapping; names are matched case-insensitively).
        secret: the signing secret, ``whsec_<base64>`` as the server gives it (or the raw key
            bytes).

    Raises:
        WebhookVerificationError: a missing header, a timestamp more than 5 minutes from now
            (replays), no matching ``v1`` signature, a malformed secret or signature header,
            or a body that is not UTF-8 JSON. ``.reason`` says which.
    """
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    missing = [name for name in _HEADERS if not lowered.get(name)]
    if missing:
        raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise WebhookVerificationError("the body is not UTF-8") from None
    try:
        webhook = standardwebhooks.Webhook(secret)
    except (EmptyWebhookSecretError, binascii.Error, ValueError, RuntimeError) as exc:
        raise WebhookVerificationError(f"the secret is not a whsec_<base64> key ({exc})") from exc
    # The headers' form and the timestamp's age are checked here, so the reason is ours whatever
    # the library's messages say; the library then only compares signatures.
    timestamp = lowered["webhook-timestamp"]
    if not timestamp.isascii() or not timestamp.isdigit():
        raise WebhookVerificationError("malformed webhook-timestamp header (not Unix seconds)")
    age_s = time.time() - int(timestamp)
    if age_s > TOLERANCE_S:
        raise WebhookVerificationError(f"webhook-timestamp too old ({age_s:.0f} s; a replay?)")
    if age_s < -TOLERANCE_S:
        raise WebhookVerificationError(f"webhook-timestamp too new ({-age_s:.0f} s ahead)")
    if not all(_SIGNATURE.fullmatch(entry) for entry in lowered["webhook-signature"].split(" ")):
        raise WebhookVerificationError("malformed webhook-signature header (expected space-separated v1,<base64>)")
    try:
        webhook.verify(text, {name: lowered[name] for name in _HEADERS}, json_parse=False)
    except standardwebhooks.WebhookVerificationError as exc:
        raise WebhookVerificationError("no matching signature (another secret, or the body or headers were changed)") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise WebhookVerificationError(f"the body is not JSON ({exc})") from exc
