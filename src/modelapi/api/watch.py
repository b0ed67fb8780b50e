"""Status changes pushed to clients: what the status streams and long-polls of one API process
wait on.

The job may run in any process of the fleet, so changes are read from the database, never
signalled in memory: every ``interval_s`` (default 50 ms) while anyone waits, ONE query reads the
change counters of every watched request (``version`` grows on each status, progress or
partial-output change), then the full rows of those that changed; queue positions are recounted
(one read of the queue's head) only when some request changed status anywhere (the counts
ledger's sequence moved), since only then can they move. The cost is a few reads per tick, not
per waiter, so one process holds hundreds of open streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from starlette.concurrency import run_in_threadpool

from ..core import db
from ..core.jobs import JobStore, Request
from ..types import Status

log = logging.getLogger("modelapi.watch")
_POSITIONS = 1_000_000


def event_id(req: Request) -> int:
    """The stream event id of a request's state: grows with every change a client can see
    (``version``; a smaller queue position at the same version)."""
    rest = _POSITIONS - 1
    if req.status is Status.IN_QUEUE and req.queue_position is not None:
        rest -= min(req.queue_position, _POSITIONS - 1)
    return req.version * _POSITIONS + rest


@dataclass(eq=False)
class _Waiter:
    latest: Request
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, req: Request) -> None:
        if event_id(req) != event_id(self.latest):
            self.latest = req
            self.changed.set()


class Watcher:
    """Waits on requests' changes, for any number of streams in this process.

    Args:
        jobs: the request store.
        interval_s: how often the watched rows are read while anyone waits (seconds).
    """

    def __init__(self, jobs: JobStore, interval_s: float = 0.05) -> None:
        self.jobs = jobs
        self.interval_s = interval_s
        self._waiters: dict[str, set[_Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self._seq = 0

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def updates(self, req: Request, after: int | None = None) -> AsyncIterator[Request]:
        """``req`` now, then each new state of it, until a terminal one (included). States whose
        :func:`event_id` is ``after`` (a client's ``Last-Event-ID``) or one already yielded are
        skipped; several changes within one tick arrive as the newest."""
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
                yield waiter.latest
        finally:
            watchers = self._waiters.get(req.request_id)
            if watchers is not None:
                watchers.discard(waiter)
                if not watchers:
                    del self._waiters[req.request_id]

    async def until_terminal(self, req: Request, timeout_s: float) -> Request:
        """``req``'s newest state once terminal, or after ``timeout_s`` seconds, whichever is first."""
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
                for waiter, req in await run_in_threadpool(self._tick, snapshot, seq):
                    waiter.offer(req)  # on the event loop: asyncio.Event is not thread-safe
                seq = self._seq
            except db.UNAVAILABLE as exc:  # streams stay open; the next tick tries again
                log.warning("status watch: database unavailable: %s", str(exc).splitlines()[0])
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.interval_s)

    def _tick(self, waiters: dict[str, list[_Waiter]], last_seq: int | None) -> list[tuple[_Waiter, Request]]:
        """One read of every watched request's change counter; full rows only of those that
        changed; queue positions (one read of the queue's head) only when some request changed
        status anywhere, or a queued watched one changed. Returns the states to offer."""
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
        return offers
