"""Status changes pushed to clients: what the status streams and long-polls of one API process
wait on.

The job may run in any process of the fleet, so changes are read from the database, never
signalled in memory: every ``interval_s`` (default 50 ms) while anyone waits, ONE query reads the
change counters of every watched request (``version`` grows on each status, progress,
partial-output or upstream queue change), then the full rows of those that changed; queue positions are recounted
(one read of the queue's head) only when some request changed status anywhere (the counts
ledger's sequence moved), since only then can they move. The cost is a few reads per tick, not
per waiter, so one process holds hundreds of open streams.

Each tick also reads whether the keys of the watched requests are still live (one query for all
of them): a revoked key's streams end, and its long-polls answer 401, within one tick. One key
holds at most ``max_per_key`` streams and long-polls at once in this process (:meth:`Watcher.hold`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool

from ..core import db
from ..core.auth import live_key
from ..core.jobs import JobStore, Request
from ..errors import AuthenticationError, RateLimitError
from ..types import Status

log = logging.getLogger("modelapi.watch")
_POSITIONS = 1_000_000


def event_id(req: Request) -> int:
    """The stream event id of a request's state: grows with every change a client can see
    (``version``, which an upstream's new queue position moves too; a smaller queue position at
    the same version), of the state as shown (:meth:`Request.shown`)."""
    rest = _POSITIONS - 1
    status, _, position = req.shown()
    if status is Status.IN_QUEUE and position is not None:
        rest -= min(position, _POSITIONS - 1)
    return req.version * _POSITIONS + rest


@dataclass(eq=False)
class _Waiter:
    latest: Request
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    revoked: bool = False

    def offer(self, req: Request) -> None:
        if event_id(req) != event_id(self.latest):
            self.latest = req
            self.changed.set()

    def revoke(self) -> None:
        self.revoked = True
        self.changed.set()


class Hold:
    """One open status stream or long-poll of a key, counted by :meth:`Watcher.hold` until
    :meth:`release` (once; later calls do nothing). A context manager that releases on exit."""

    def __init__(self, held: Counter[str], key_id: str) -> None:
        self._held, self.key_id, self._open = held, key_id, True
        held[key_id] += 1

    def release(self) -> None:
        if self._open:
            self._open = False
            self._held[self.key_id] -= 1
            if not self._held[self.key_id]:
                del self._held[self.key_id]

    def __enter__(self) -> "Hold":
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class Watcher:
    """Waits on requests' changes, for any number of streams in this process.

    Args:
        jobs: the request store.
        interval_s: how often the watched rows are read while anyone waits (seconds).
        max_per_key: most streams and long-polls one key holds open at once (:meth:`hold`);
            None: no limit.
    """

    def __init__(self, jobs: JobStore, interval_s: float = 0.05, max_per_key: int | None = None) -> None:
        self.jobs = jobs
        self.interval_s = interval_s
        self.max_per_key = max_per_key
        self._held: Counter[str] = Counter()
        self._waiters: dict[str, set[_Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self._seq = 0

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def hold(self, key_id: str) -> Hold:
        """Count one more open stream or long-poll of key ``key_id``, until the returned
        :class:`Hold` is released. Call on the event loop.

        Raises:
            RateLimitError: 429, the key already holds ``max_per_key`` of them in this process.
        """
        if self.max_per_key is not None and self._held[key_id] >= self.max_per_key:
            raise RateLimitError(f"this key already has {self.max_per_key} status streams and long-polls open "
                                 "on this server (--max-streams-per-key)", retry_after_s=5)
        return Hold(self._held, key_id)

    async def updates(self, req: Request, after: int | None = None) -> AsyncIterator[Request]:
        """``req`` now, then each new state of it, until a terminal one (included). States whose
        :func:`event_id` is ``after`` (a client's ``Last-Event-ID``) or one already yielded are
        skipped; several changes within one tick arrive as the newest.

        Raises:
            AuthenticationError: 401, the request's key was revoked (seen within one tick).
        """
        waiter = _Waiter(req)
        self._waiters.setdefault(req.request_id, set()).add(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        try:
            if event_id(req) != after:
                yield req
            while not waiter.latest.status.is_terminal:
                await waiter.changed.wait()
                waiter.changed.clear()
                if waiter.revoked:
                    raise AuthenticationError("the API key was revoked")
                yield waiter.latest
        finally:
            watchers = self._waiters.get(req.request_id)
            if watchers is not None:
                watchers.discard(waiter)
                if not watchers:
                    del self._waiters[req.request_id]

    async def until_terminal(self, req: Request, timeout_s: float) -> Request:
        """``req``'s newest state once terminal, or after ``timeout_s`` seconds, whichever is first.

        Raises:
            AuthenticationError: 401, the request's key was revoked meanwhile.
        """
        latest = req

        async def follow() -> None:
            nonlocal latest
            async for latest in self.updates(req):
                pass

        try:
            await asyncio.wait_for(follow(), timeout_s)
        except TimeoutError:
            pass
        return latest

    async def _run(self) -> None:
        seq = None
        while self._waiters:
            try:
                snapshot = {rid: list(ws) for rid, ws in self._waiters.items()}  # on the event loop
                offers, revoked = await run_in_threadpool(self._tick, snapshot, seq)
                for waiter, req in offers:
                    waiter.offer(req)  # on the event loop: asyncio.Event is not thread-safe
                for waiter in revoked:
                    waiter.revoke()
                seq = self._seq
            except db.UNAVAILABLE as exc:  # streams stay open; the next tick tries again
                log.warning("status watch: database unavailable: %s", str(exc).splitlines()[0])
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.interval_s)

    def _tick(self, waiters: dict[str, list[_Waiter]],
              last_seq: int | None) -> tuple[list[tuple[_Waiter, Request]], list[_Waiter]]:
        """One read of which watched requests' keys are live; one read of every watched
        request's change counter; full rows only of those that changed; queue positions (one
        read of the queue's head) only when some request changed status anywhere, or a queued
        watched one changed. Returns the states to offer, and the waiters whose key was revoked."""
        live = self._live_keys({w.latest.owner_key_id for ws in waiters.values() for w in ws})
        revoked = [w for ws in waiters.values() for w in ws if w.latest.owner_key_id not in live]
        waiters = {rid: kept for rid, ws in waiters.items() if (kept := [w for w in ws if w.latest.owner_key_id in live])}
        if not waiters:
            return [], revoked
        self._seq = self.jobs.change_seq()
        versions = self.jobs.versions(list(waiters))
        changed = [rid for rid, ws in waiters.items() if any(w.latest.version != versions.get(rid) for w in ws)]
        latest = {req.request_id: req for req in (self.jobs.watch(changed) if changed else [])}
        for rid, ws in waiters.items():
            latest.setdefault(rid, ws[0].latest)
        queued = [rid for rid, req in latest.items() if req.status is Status.IN_QUEUE
                  and (self._seq != last_seq or rid in changed)]
        positions = self.jobs.queue_positions(queued) if queued else {}
        offers = []
        for rid, ws in waiters.items():
            req = latest[rid]
            if rid in positions:
                req = replace(req, queue_position=positions[rid])
            elif req.status is Status.IN_QUEUE:
                req = replace(req, queue_position=ws[0].latest.queue_position)
            offers += [(waiter, req) for waiter in ws]
        return offers, revoked

    def _live_keys(self, key_ids: set[str]) -> set[str]:
        """Those of ``key_ids`` whose key is live (:func:`modelapi.core.auth.live_key`; its
        hash compared with itself: any stored hash)."""
        c = db.api_keys.c
        with self.jobs.db.connect() as conn:
            return set(conn.execute(sa.select(c.id).where(c.id.in_(key_ids), live_key(c.key_hash))).scalars())
