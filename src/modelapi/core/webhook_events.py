"""Intermediate webhook events: with ``?webhook=URL&webhook_intermediate_status=true`` (the hosted
service's serverless parameter name), a request's receiver also gets its status body on each
change before the terminal one — ``in_progress`` once it starts, then again each time more
images of its series are stored (with ``partial_output``) — and the result body at the end, as
without the flag. Each event is its own Standard Webhooks message (``webhook-id``
``msg_<request id>_<k>``, k = 1, 2, …; the terminal one keeps ``msg_<request id>``), signed and
retried as the terminal one is (:mod:`modelapi.core.delivery`).

The events live in the request's webhook record (``requests.webhook``, written only by
:mod:`modelapi.core.jobs`)::

    {"url", "base_url", "attempts", "last_status_code", "delivered_at",   # the terminal delivery
     "intermediate_status": true,
     "events": [{"progress": 0.0-1.0, "partial_outputs": [storage key] | null, "made_at": ISO 8601,
                 "attempts", "last_status_code", "delivered_at"}, ...],
     "events_ended": <how many of them were delivered or given up>}

In order per request: one chain delivers a request's events, and at most one of its webhook
entries is live at any time. An event made while the chain is idle (every earlier event ended)
is enqueued in the same transaction as the state change that made it; otherwise the end of the
event before it enqueues it, in the transaction that records that end. The terminal delivery's
first attempt waits likewise for the last event to end. Each of those transactions holds the
request's row locked, so exactly one of them enqueues each entry (and an entry enqueued twice
is added once).

Bounded: one ``in_progress`` event per request (none again after a restart or a hand-back), and
a ``partial_output`` event only when more images are stored than any earlier event announced —
a series of N images makes at most N + 1 deliveries with the terminal one (the last image comes
with ``completed``); progress alone makes none.

This module only computes records; :mod:`modelapi.core.jobs` reads and writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .db import iso

Record = dict[str, Any]


def wanted(record: Record | None) -> bool:
    """Whether the request's receiver asked for intermediate events."""
    return bool(record and record.get("intermediate_status"))


def made(record: Record, progress: float | None, partial_outputs: list[str] | None, at: datetime) -> Record | None:
    """The record with the event that a change to in_progress (``partial_outputs`` None) or a
    publication of ``partial_outputs`` (storage keys of the images stored so far) makes, at
    ``at``; None when it makes none (in_progress was announced already, or no more images than
    an earlier event announced)."""
    events = list(record.get("events") or [])
    if partial_outputs is None:
        if events:
            return None
    elif len(partial_outputs) <= max((len(e["partial_outputs"] or []) for e in events), default=0):
        return None
    events.append({"progress": round(float(progress or 0.0), 4), "partial_outputs": list(partial_outputs) if partial_outputs else None,
                   "made_at": iso(at), "attempts": 0, "last_status_code": None, "delivered_at": None})
    return {**record, "events": events}


def ended(record: Record) -> int:
    """How many of the record's events were delivered or given up."""
    return int(record.get("events_ended") or 0)


def pending(record: Record) -> int:
    """Events made and not ended: 0 when the chain is idle."""
    return len(record.get("events") or []) - ended(record)


def current(record: Record) -> int:
    """The event (1-based) the chain delivers now; 0 when none is pending."""
    return ended(record) + 1 if pending(record) else 0


def attempted(record: Record, event: int, status_code: int | None, at: datetime) -> Record:
    """The record with one attempt at ``event`` counted (``delivered_at`` on a 2xx, which ends
    it)."""
    events = list(record["events"])
    e = {**events[event - 1], "attempts": int(events[event - 1]["attempts"]) + 1, "last_status_code": status_code}
    if status_code is not None and 200 <= status_code < 300:
        e["delivered_at"] = iso(at)
    events[event - 1] = e
    record = {**record, "events": events}
    return end(record, event) if e["delivered_at"] else record


def end(record: Record, event: int) -> Record:
    """The record with ``event`` ended (delivered, or given up), if it is the chain's current one."""
    return {**record, "events_ended": event} if event == current(record) else record
