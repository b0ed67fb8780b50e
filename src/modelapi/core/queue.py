"""The durable queue, as every role sees it: DBOS Transact's queue tables in the same database
as the requests, driven through a ``DBOSClient`` (which never launches the DBOS runtime).

The worker side registers the workflow these entries name (:mod:`modelapi.worker.runtime`);
this module holds the names both sides must agree on:

- ``APP_VERSION`` is pinned: a process of another modelapi release would otherwise tag its
  entries with a version hash of its own source, and workers of the other release would never
  take them (../shared/SCALE.md). Change it only when ``run_request``'s arguments or meaning
  change, and drain the queue before such an upgrade.
- Every entry carries the request's owner key as its partition key; ``--max-running-per-key``
  turns partition limits on (DBOS partitioned queues), otherwise the key is inert.
"""

from __future__ import annotations

import logging
import sqlalchemy as sa
from dbos import DBOSClient, EnqueueOptions

log = logging.getLogger("modelapi.queue")

APP_NAME = "modelapi"
APP_VERSION = "modelapi-queue-1"
QUEUE_NAME = "modelapi-requests"
WORKFLOW_NAME = "modelapi.run_request"
WEBHOOK_QUEUE = "modelapi-webhooks"
WEBHOOK_WORKFLOW = "modelapi.deliver_webhook"
WEBHOOK_CONCURRENCY = 8
"""Webhook attempts one worker process makes at once (each is one short POST)."""
LIVE = ("ENQUEUED", "PENDING")
"""DBOS workflow statuses of an entry that will still run (waiting, or claimed by a worker)."""


class TaskQueue:
    """The queue of requests. Safe to share between threads.

    Args:
        system_database_url: the database URL (SQLite file or Postgres) holding DBOS's tables.
    """

    def __init__(self, system_database_url: str) -> None:
        self.client = DBOSClient(system_database_url=system_database_url, application_name=APP_NAME, lazy=True)

    def configure(self, *, worker_concurrency: int | None, max_running_per_key: int | None, polling_interval_s: float) -> None:
        """Write the queue's settings (the last process to call this sets them for the fleet)."""
        self.client.register_queue(
            QUEUE_NAME,
            worker_concurrency=worker_concurrency,
            partition_concurrency=max_running_per_key,
            polling_interval_sec=polling_interval_s,
            on_conflict="always_update",
        )
        self.client.register_queue(WEBHOOK_QUEUE, worker_concurrency=WEBHOOK_CONCURRENCY,
                                   polling_interval_sec=polling_interval_s, on_conflict="always_update")

    def ensure(self, polling_interval_s: float) -> None:
        """Create the queues with default settings if no worker has registered them yet."""
        self.client.register_queue(QUEUE_NAME, worker_concurrency=1, polling_interval_sec=polling_interval_s,
                                   on_conflict="never_update")
        self.client.register_queue(WEBHOOK_QUEUE, worker_concurrency=WEBHOOK_CONCURRENCY,
                                   polling_interval_sec=polling_interval_s, on_conflict="never_update")

    def enqueue(self, conn: sa.Connection, *, request_id: str, workflow_id: str, priority: int, owner_key_id: str) -> None:
        """Add the entry that runs ``request_id``, inside the caller's transaction ``conn``: on
        rollback neither the caller's rows nor the entry exist. Lower ``priority`` runs first."""
        self.client.enqueue_in_transaction(conn, {
            "queue_name": QUEUE_NAME,
            "workflow_name": WORKFLOW_NAME,
            "workflow_id": workflow_id,
            "app_version": APP_VERSION,
            "priority": priority,
            "queue_partition_key": owner_key_id,
        }, request_id)

    def enqueue_webhook(self, conn: sa.Connection | None, *, request_id: str, attempt: int, delay_s: float | None = None) -> None:
        """Add webhook attempt ``attempt`` of ``request_id`` (entry ``<request id>.webhook.<n>``,
        so enqueueing it twice adds one), inside ``conn``'s transaction when given, runnable
        after ``delay_s`` seconds when given."""
        options: EnqueueOptions = {"queue_name": WEBHOOK_QUEUE, "workflow_name": WEBHOOK_WORKFLOW,
                                   "workflow_id": f"{request_id}.webhook.{attempt}", "app_version": APP_VERSION}
        if delay_s:
            options["delay_seconds"] = delay_s
        if conn is None:
            self.client.enqueue(options, request_id, attempt)
        else:
            self.client.enqueue_in_transaction(conn, options, request_id, attempt)

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

    def claimed_by(self, executor_id: str, queues: tuple[str, ...] = (QUEUE_NAME, WEBHOOK_QUEUE)) -> list[str]:
        """The entries of ``queues`` (default: requests and webhook attempts) a worker has
        claimed and not finished (``PENDING`` under its executor id)."""
        return [w.workflow_id for queue in queues for w in self.client.list_workflows(
            status="PENDING", executor_id=executor_id, queue_name=queue, load_input=False, load_output=False,
        )]

    def resume(self, workflow_id: str) -> None:
        """Put a claimed entry back on its queue for any worker (its claimer is dead)."""
        self.client.resume_workflow(workflow_id, queue_name=WEBHOOK_QUEUE if ".webhook." in workflow_id else QUEUE_NAME)

    def destroy(self) -> None:
        self.client.destroy()

