"""Types and defaults shared by the server, the SDK and the CLI (light: no server dependency)."""

from __future__ import annotations

import enum
import ipaddress
import os
from pathlib import Path
from typing import Literal

import platformdirs


class Status(str, enum.Enum):
    """A request's status (README, "The API": in_queue, in_progress, completed, failed, cancelled). Unknown wire values raise ``ValueError``."""

    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.CANCELLED, Status.FAILED)


OffloadMode = Literal["none", "model", "sequential"]
"""``--offload`` values (see :class:`modelapi.engine.flux2.Flux2Engine`)."""

DEFAULT_VAE_TILING_PIXELS = 2048 * 2048
"""Generated images larger than this (width x height, px) are decoded tile by tile
(``--vae-tiling-pixels``'s default): every 2K size decodes in one piece, the ~16 MP dreamina
sizes in tiles."""


def default_data_dir() -> Path:
    """``$MODELAPI_DATA_DIR``, else the platform's user data dir (e.g. ``~/.local/share/modelapi``)."""
    env = os.environ.get("MODELAPI_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("modelapi", appauthor=False))


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (a name or an address, IPv6 with or without brackets) is this machine."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
