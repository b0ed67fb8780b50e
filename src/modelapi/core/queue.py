"""The durable queue, as every role sees it: DBOS Transact's queue tables in the same database
as the requests, driven through a ``DBOSClient`` (which never launches the DBOS runtime).

The worker side registers the workflow these entries name (:mod:`modelapi.worker.runtime`);
this module holds the names both sides must agree on:

- ``APP_VERSION`` is pinned: a process of another modelapi release would otherwise tag its
  entries with a version hash of its own source, and workers of the other release would never
  take them (DBOS hands an entry only to processes of its own version). Change it only when ``run_request``'s arguments or meaning
  change, and drain the queue before such an upgrade.
- Every entry carries the request's owner key as its partition key; ``--max-running-per-key``
  turns partition limits on (DBOS partitioned queues), otherwise the key is inert. The webhook
  queue is always partitioned: one key's attempts hold at most ``WEBHOOK_PER_KEY`` of a worker's
  ``WEBHOOK_CONCURRENCY`` delivery slots.
- An entry's id (its DBOS workflow id) is an :class:`EntryId`, built and parsed only here.
- A request runs from one of two queues, chosen by its entry's kind: ``modelapi-requests``
  (kind ``run``: the local engine, GPU workers) or ``modelapi-upstream`` (kind ``upstream``: the
  providers, ``modelapi worker --backends ...``), so a GPU worker never holds an upstream job and
  an upstream worker never a local one (:mod:`modelapi.backends` decides at submit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import sqlalchemy as sa
from dbos import DBOSClient, EnqueueOptions

log = logging.getLogger("modelapi.queue")

APP_NAME = "modelapi"
APP_VERSION = "modelapi-queue-1"
QUEUE_NAME = "modelapi-requests"
UPSTREAM_QUEUE = "modelapi-upstream"
"""The queue of requests whose route starts (or goes on) on an upstream backend."""
WORKFLOW_NAME = "modelapi.run_request"
WEBHOOK_QUEUE = "modelapi-webhooks"
WEBHOOK_WORKFLOW = "modelapi.deliver_webhook"
WEBHOOK_CONCURRENCY = 8
"""Webhook attempts one worker process makes at once (each is one POST of at most
``--webhook-timeout-s``)."""
WEBHOOK_PER_KEY = 2
"""Of those, the most one key's attempts may hold (its entries' partition key is the request's
owner key): however slow one key's receivers are, the others' attempts keep the rest."""
LIVE = ("ENQUEUED", "PENDING")
"""DBOS workflow statuses of an entry that will still run (waiting, or claimed by a worker)."""


@dataclass(frozen=True)
class EntryId:
    """The id of a queue entry (its DBOS workflow id): ``<request id>.<generation>`` for a run of
    the request on the local engine, ``<request id>.upstream.<generation>`` for a run on an
    upstream backend (generation 0 at submit, one more for each new entry: handed back,
    requeued, moved to the other queue), ``<request id>.webhook.<n>`` for attempt ``n``
    (1-based) of the request's webhook (its terminal state), or
    ``<request id>.webhook.e<k>.<n>`` for attempt ``n`` of its intermediate webhook event ``k``
    (1-based; ``?webhook_intermediate_status=true``)."""

    request_id: str
    generation: int
    kind: Literal["run", "upstream", "webhook"] = "run"
    event: int = 0
    """The intermediate webhook event (1-based) a webhook attempt delivers; 0: the terminal one."""

    @classmethod
    def parse(cls, text: str) -> EntryId:
        """The entry id written as ``text``. Raises ``ValueError`` on another form."""
        head, _, n = text.rpartition(".")
        request_id, _, kind = head.rpartition(".")
        if kind in ("webhook", "upstream") and request_id:
            return cls(request_id, int(n), kind)  # type: ignore[arg-type]
        hook_of, _, hook = request_id.rpartition(".")
        if hook == "webhook" and hook_of and kind[:1] == "e" and kind[1:].isdigit():
            return cls(hook_of, int(n), "webhook", int(kind[1:]))
        if not head:
            raise ValueError(f"not a queue entry id: {text!r}")
        return cls(head, int(n))

    def __str__(self) -> str:
        if self.kind == "webhook":
            event = f"e{self.event}." if self.event else ""
            return f"{self.request_id}.webhook.{event}{self.generation}"
        if self.kind == "upstream":
            return f"{self.request_id}.upstream.{self.generation}"
        return f"{self.request_id}.{self.generation}"

    def next(self) -> EntryId:
        """The entry that follows this one (the next run of the request, the next attempt)."""
        return replace(self, generation=self.generation + 1)

    @property
    def queue(self) -> str:
        """The queue the entry belongs to."""
        return {"webhook": WEBHOOK_QUEUE, "upstream": UPSTREAM_QUEUE}.get(self.kind, QUEUE_NAME)


class TaskQueue:
    """The queue of requests. Safe to share between threads.

    Args:
        system_database_url: the database URL (SQLite file or Postgres) holding DBOS's tables.
    """

    def __init__(self, system_database_url: str) -> None:
        self.client = DBOSClient(system_database_url=system_database_url, application_name=APP_NAME, lazy=True)

    def configure(self, *, worker_concurrency: int | None, max_running_per_key: int | None, polling_interval_s: float,
                  queue: str = QUEUE_NAME) -> None:
        """Write ``queue``'s settings (the last process to call this sets them for the fleet)."""
        self.client.register_queue(
            queue,
            worker_concurrency=worker_concurrency,
            partition_concurrency=max_running_per_key,
            polling_interval_sec=polling_interval_s,
            on_conflict="always_update",
        )
        self._register_webhooks(polling_interval_s, "always_update")

    def ensure(self, polling_interval_s: float) -> None:
        """Create the queues with default settings if no worker has registered them yet."""
        self.client.register_queue(QUEUE_NAME, worker_concurrency=1, polling_interval_sec=polling_interval_s,
                                   on_conflict="never_update")
        self.client.register_queue(UPSTREAM_QUEUE, worker_concurrency=32, polling_interval_sec=polling_interval_s,
                                   on_conflict="never_update")
        self._register_webhooks(polling_interval_s, "never_update")

    def _register_webhooks(self, polling_interval_s: float, on_conflict: Literal["always_update", "never_update"]) -> None:
        self.client.register_queue(WEBHOOK_QUEUE, worker_concurrency=WEBHOOK_CONCURRENCY,
                                   partition_worker_concurrency=WEBHOOK_PER_KEY,
                                   polling_interval_sec=polling_interval_s, on_conflict=on_conflict)

    def enqueue(self, conn: sa.Connection, *, entry: EntryId, priority: int, owner_key_id: str,
                delay_s: float | None = None) -> None:
        """Add ``entry``, which runs its request, to its queue (:attr:`EntryId.queue`) inside the
        caller's transaction ``conn``: on rollback neither the caller's rows nor the entry exist.
        Lower ``priority`` runs first; ``delay_s``: not before that many seconds."""
        options: EnqueueOptions = {
            "queue_name": entry.queue,
            "workflow_name": WORKFLOW_NAME,
            "workflow_id": str(entry),
            "app_version": APP_VERSION,
            "priority": priority,
            "queue_partition_key": owner_key_id,
        }
        if delay_s:
            options["delay_seconds"] = delay_s
        self.client.enqueue_in_transaction(conn, options, entry.request_id)

    def enqueue_webhook(self, conn: sa.Connection | None, *, request_id: str, attempt: int, owner_key_id: str,
                        delay_s: float | None = None, event: int = 0) -> None:
        """Add webhook attempt ``attempt`` of ``request_id`` — of its terminal state, or of its
        intermediate event ``event`` when given (entry ``<request id>.webhook.<n>`` or
        ``<request id>.webhook.e<k>.<n>``, so enqueueing it twice adds one; partition: the
        request's ``owner_key_id``) — inside ``conn``'s transaction when given, runnable after
        ``delay_s`` seconds when given. The workflow gets ``(request_id, attempt)``, and
        ``event`` after them when not 0."""
        entry = EntryId(request_id, attempt, "webhook", event)
        options: EnqueueOptions = {"queue_name": entry.queue, "workflow_name": WEBHOOK_WORKFLOW,
                                   "workflow_id": str(entry), "app_version": APP_VERSION,
                                   "queue_partition_key": owner_key_id}
        if delay_s:
            options["delay_seconds"] = delay_s
        args = (request_id, attempt, event) if event else (request_id, attempt)
        if conn is None:
            self.client.enqueue(options, *args)
        else:
            self.client.enqueue_in_transaction(conn, options, *args)

    def unpartitioned_webhooks(self) -> list[EntryId]:
        """Webhook attempts waiting with no partition key: queued by a release before the webhook
        queue was partitioned by owner key. A partitioned queue never hands them out, so
        :meth:`modelapi.core.jobs.JobStore.reconcile` replaces each with the next attempt."""
        found = self.client.list_workflows(queue_name=WEBHOOK_QUEUE, status=["ENQUEUED", "DELAYED"],
                                           load_input=False, load_output=False)
        return [EntryId.parse(w.workflow_id) for w in found if w.queue_partition_key is None]

    def cancel(self, workflow_id: str) -> None:
        """Take an entry off the queue (it will not start)."""
        self.client.cancel_workflow(workflow_id)

    def live(self, workflow_ids: list[str]) -> set[str]:
        """Those of ``workflow_ids`` that will still run: waiting or claimed, under our version."""
        if not workflow_ids:
            return set()
        found = self.client.list_workflows(
            workflow_ids=workflow_ids, status=list(LIVE), load_input=False, load_output=False,
        )
        return {w.workflow_id for w in found if w.app_version in (None, APP_VERSION)}

    def claimed_by(self, executor_id: str, queues: tuple[str, ...] = (QUEUE_NAME, UPSTREAM_QUEUE, WEBHOOK_QUEUE)) -> list[str]:
        """The entries of ``queues`` (default: requests, local and upstream, and webhook attempts) a worker has
        claimed and not finished (``PENDING`` under its executor id)."""
        return [w.workflow_id for queue in queues for w in self.client.list_workflows(
            status="PENDING", executor_id=executor_id, queue_name=queue, load_input=False, load_output=False,
        )]

    def resume(self, workflow_id: str) -> None:
        """Put a claimed entry back on its queue for any worker (its claimer is dead)."""
        self.client.resume_workflow(workflow_id, queue_name=EntryId.parse(workflow_id).queue)

    def destroy(self) -> None:
        self.client.destroy()

