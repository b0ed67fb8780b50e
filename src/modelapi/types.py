"""Types and defaults shared by the server, the SDK and the CLI (light: no server dependency)."""

from __future__ import annotations

import enum
import os
from pathlib import Path

import platformdirs


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


def default_data_dir() -> Path:
    """``$MODELAPI_DATA_DIR``, else the platform's user data dir (e.g. ``~/.local/share/modelapi``)."""
    env = os.environ.get("MODELAPI_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("modelapi", appauthor=False))
