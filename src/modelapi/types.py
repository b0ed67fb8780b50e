"""Types shared by the server, the SDK and the CLI."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """A request's status (API.md "Statuses"). Unknown wire values raise ``ValueError``."""

    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.CANCELLED, Status.FAILED)
