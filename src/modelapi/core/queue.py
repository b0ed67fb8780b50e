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
from dbos import DBOSClient

log = logging.getLogger("modelapi.queue")

APP_NAME = "modelapi"
APP_VERSION = "modelapi-queue-1"
QUEUE_NAME = "modelapi-requests"
WORKFLOW_NAME = "modelapi.run_request"
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

    def ensure(self, polling_interval_s: float) -> None:
        """Create the queue with default settings if no worker has registered it yet."""
        self.client.register_queue(QUEUE_NAME, worker_concurrency=1, polling_interval_sec=polling_interval_s,
                                   on_conflict="never_update")

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

    def claimed_by(self, executor_id: str) -> list[str]:
        """The entries a worker has claimed and not finished (``PENDING`` under its executor id)."""
        found = self.client.list_workflows(
            status="PENDING", executor_id=executor_id, queue_name=QUEUE_NAME, load_input=False, load_output=False,
        )
        return [w.workflow_id for w in found]

    def resume(self, workflow_id: str) -> None:
        """Put a claimed entry back on the queue for any worker (its claimer is dead)."""
        self.client.resume_workflow(workflow_id, queue_name=QUEUE_NAME)

    def destroy(self) -> None:
        self.client.destroy()

