"""The sweeper: deletes what retention makes due, so that storage and tables stay bounded.

One pass (:meth:`Sweeper.sweep_once`; every worker runs one every ``--sweep-interval-s`` in a
thread, and ``modelapi sweep`` runs one) deletes, in batches of ``--sweep-batch``:

1. the files of finished requests past their retention (``--retention-s``, or the shorter
   ``?retention_s`` the submit asked for): outputs (every attempt's, listed under
   ``outputs/<request id>/``), stored inputs (fetched references, data URIs, copies of uploads)
   and the uploads each request was the last to use; the request's row keeps its status, times,
   billing and ``deleted_at``, and its queue entries (DBOS workflows, through DBOS's own
   ``delete_workflows``) are deleted — except entries that will still run (a webhook attempt
   still retrying) and those of a request deleted by ``DELETE``, which go when the row does;
2. uploads no request used, ``--upload-retention-s`` after they were uploaded;
3. the rows of requests whose files were deleted, ``--keep-requests-s`` after they finished
   (the usage ledger keeps their billing), with any queue entries left.

Safe when several sweepers run at once: every batch is claimed by one conditional statement
(``UPDATE ... WHERE deleted_at IS NULL RETURNING``, or ``DELETE ... RETURNING``; on Postgres
the rows another sweeper holds are skipped), so each request, upload and object is deleted by
one sweeper only. A live request's inputs are never deleted: only finished requests are
claimed, and an upload used by a request is kept until that request is swept. A sweeper that
dies between a claim and its deletes leaves that batch's objects behind (logged on error).

What was deleted is counted in the ``sweep_counts`` table (fleet-wide), shown on the API's
``/metrics`` by :class:`SweepCollector`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily

from . import db
from .config import Settings
from .files import FileStore
from .jobs import JobStore, Request
from .queue import LIVE, EntryId
from .storage import Storage

log = logging.getLogger("modelapi.sweep")
UNFINISHED = (*LIVE, "DELAYED")
"""DBOS statuses of a queue entry that will still run (a delayed webhook attempt included)."""


@dataclass
class Swept:
    """What a pass (or a ``DELETE``) deleted: requests whose files were deleted
    (``requests_expired``), storage objects, request rows pruned (``requests``), upload rows
    (``files``) and queue entries (``queue``, DBOS workflows with their rows)."""

    requests_expired: int = 0
    objects: int = 0
    requests: int = 0
    files: int = 0
    queue: int = 0

    def __iadd__(self, other: Swept) -> Swept:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Sweeper:
    """Retention for one deployment: ``jobs``' database and queue, and ``storage``.
    Thread-safe; any number may run at once, in one process or many."""

    DUTY = 0.25
    """The share of time a pass works: after each batch it pauses three times as long as the
    batch took, so that a backlog (retention turned on over a year of requests) is worked off
    at a fraction of one core and of the database's write time, beside the routes."""

    def __init__(self, settings: Settings, jobs: JobStore, storage: Storage, *, duty: float = DUTY) -> None:
        self.duty = duty
        self.settings = settings
        self.jobs = jobs
        self.storage = storage
        self.files = FileStore(jobs.db)

    # -- one pass ------------------------------------------------------------------------------
    def sweep_once(self, now: datetime | None = None, stop: threading.Event | None = None) -> Swept:
        """Delete everything due at ``now`` (default: now), batch after batch (pausing between
        batches: :attr:`DUTY`), until nothing is due or ``stop`` is set. Returns what this
        pass deleted."""
        now = now or db.utcnow()
        s = self.settings
        total = Swept()
        batch = s.sweep_batch
        steps = (
            lambda: self.purge(*self.jobs.claim_expired(now, s.retention_s, batch)),
            lambda: self._uploads(self.files.claim_unused(now - timedelta(seconds=s.upload_retention_s), batch)),
            lambda: self._prune(self.jobs.prune(now - timedelta(seconds=s.keep_requests_s), batch)),
        )
        for step in steps:
            while not (stop and stop.is_set()):
                t0 = time.monotonic()
                done, claimed = step()
                total += done
                if claimed < batch:
                    break
                pause = (time.monotonic() - t0) * (1 / self.duty - 1)
                if stop is not None:
                    stop.wait(pause)
                else:
                    time.sleep(pause)
        return total

    def purge(self, requests: list[Request], upload_keys: list[str], *, queue: bool = True) -> tuple[Swept, int]:
        """Delete the files of ``requests`` (claimed: marked deleted by this caller), the
        uploads ``upload_keys`` they were the last to use, and (``queue``) their finished queue
        entries; count it. Returns what was deleted and how many requests there were.
        ``DELETE`` passes ``queue=False``: a request cancelled a moment ago may still have its
        entry held by a worker's thread (which must find it when it ends); the row's pruning
        deletes those entries."""
        keys = set(upload_keys)
        for req in requests:
            keys |= set(req.input_files) | set(req.outputs or []) | set(req.partial_outputs or [])
            keys |= set(self.storage.keys(f"outputs/{req.request_id}/"))
        done = Swept(requests_expired=len(requests), objects=self._delete(keys), files=len(upload_keys),
                     queue=self._forget(requests) if queue else 0)
        self._count(done)
        return done, len(requests)

    def _uploads(self, keys: list[str]) -> tuple[Swept, int]:
        done = Swept(objects=self._delete(set(keys)), files=len(keys))
        self._count(done)
        return done, len(keys)

    def _prune(self, rows: list[Request]) -> tuple[Swept, int]:
        done = Swept(requests=len(rows), queue=self._forget(rows))
        self._count(done)
        return done, len(rows)

    def _delete(self, keys: set[str]) -> int:
        deleted = 0
        for key in sorted(keys):
            try:
                self.storage.delete(key)
                deleted += 1
            except Exception as exc:  # noqa: BLE001 - the store refused: left behind, logged
                log.warning("could not delete %s: %s: %s", key, type(exc).__name__, exc)
        return deleted

    def _forget(self, requests: list[Request]) -> int:
        """Delete the finished queue entries (DBOS workflows) of ``requests``: every run entry
        up to the current one (on the local or the upstream queue) and every webhook attempt (of the
        terminal delivery and of each
        intermediate event). Returns how many were deleted."""
        ids: list[str] = []
        for req in requests:
            current = EntryId.parse(req.workflow_id)
            ids += [str(EntryId(req.request_id, g, kind)) for g in range(current.generation + 1)  # either queue
                    for kind in ("run", "upstream")]
            if req.webhook is not None:
                attempts = int(req.webhook.get("attempts") or 0)
                ids += [str(EntryId(req.request_id, n, "webhook")) for n in range(1, attempts + 2)]
                for k, event in enumerate(req.webhook.get("events") or [], start=1):  # intermediate events
                    tried = int(event.get("attempts") or 0)
                    ids += [str(EntryId(req.request_id, n, "webhook", k)) for n in range(1, tried + 2)]
        if not ids:
            return 0
        client = self.jobs.queue.client
        found = client.list_workflows(workflow_ids=ids, load_input=False, load_output=False)
        done = [w.workflow_id for w in found if w.status not in UNFINISHED]
        if done:
            client.delete_workflows(done)
        return len(done)

    def _count(self, done: Swept) -> None:
        """Add ``done`` to the fleet-wide counters (``sweep_counts``)."""
        K = db.sweep_counts.c
        changes = [(name, n) for name, n in done.as_dict().items() if n]
        if changes:
            with self.jobs.db.begin() as conn:
                for name, n in changes:
                    conn.execute(db.sweep_counts.update().where(K.name == name).values(n=K.n + n))

    # -- in a worker ---------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> threading.Thread:
        """A daemon thread that runs a pass now and then every ``--sweep-interval-s`` until
        ``stop`` is set; a failed pass (the database or the store unreachable) is logged and
        the next one tries again."""
        def loop() -> None:
            interval = self.settings.sweep_interval_s
            while not stop.is_set():
                t0 = time.process_time()
                try:
                    done = self.sweep_once(stop=stop)
                except Exception as exc:  # noqa: BLE001 - keep sweeping on the next tick
                    log.warning("sweep failed: %s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                else:
                    if any(done.as_dict().values()):
                        log.info("sweep", extra={**done.as_dict(), "cpu_s": round(time.process_time() - t0, 3)})
                stop.wait(interval)

        thread = threading.Thread(target=loop, name="modelapi-sweeper", daemon=True)
        thread.start()
        return thread


def counts(engine: sa.Engine) -> dict[str, int]:
    """The fleet-wide counters: ``{"objects", "requests_expired", "requests", "files", "queue"}``."""
    with engine.connect() as conn:
        return {name: int(n) for name, n in conn.execute(sa.select(db.sweep_counts.c.name, db.sweep_counts.c.n))}


class SweepCollector:
    """``/metrics``: what every sweeper of the deployment has deleted, read from the database at
    scrape time — ``modelapi_sweep_objects_deleted_total`` (storage objects),
    ``modelapi_sweep_requests_expired_total`` (requests whose files were deleted) and
    ``modelapi_sweep_rows_deleted_total{table="requests"|"files"|"queue"}`` (request rows pruned,
    upload rows, queue entries)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def collect(self):  # noqa: ANN201
        n = counts(self.engine)
        yield CounterMetricFamily("modelapi_sweep_objects_deleted", "Storage objects deleted by the sweeper and DELETE",
                                  value=n.get("objects", 0))
        yield CounterMetricFamily("modelapi_sweep_requests_expired", "Requests whose outputs and inputs were deleted",
                                  value=n.get("requests_expired", 0))
        rows = CounterMetricFamily("modelapi_sweep_rows_deleted", "Rows deleted by the sweeper, by table", labels=["table"])
        for table in ("requests", "files", "queue"):
            rows.add_metric([table], n.get(table, 0))
        yield rows
