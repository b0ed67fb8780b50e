"""Uploads: the files table, one row per image uploaded with ``POST /v1/files``, whose bytes the
storage holds under ``uploads/<file id>.<jpg|png>``. This module is the table's one writer."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from . import db

F = db.files.c


@dataclass(frozen=True)
class Upload:
    """A file to store for ``owner_key_id``: its id, storage key, size and content type."""

    id: str
    owner_key_id: str
    storage_key: str
    bytes: int
    content_type: str


class FileStore:
    """The files table. Safe to call from any thread."""

    def __init__(self, database: sa.Engine) -> None:
        self.db = database

    @staticmethod
    def new(owner_key_id: str, fmt: str, size: int) -> Upload:
        """A new upload of ``size`` bytes in format ``fmt`` (``jpeg`` or ``png``), not yet
        recorded: store its bytes under ``storage_key`` first, then :meth:`add` it."""
        file_id = "file_" + secrets.token_hex(12)
        return Upload(id=file_id, owner_key_id=owner_key_id, storage_key=f"uploads/{file_id}.{'jpg' if fmt == 'jpeg' else 'png'}",
                      bytes=size, content_type=f"image/{fmt}")

    def add(self, upload: Upload) -> None:
        """Record ``upload`` (its bytes are stored)."""
        with self.db.begin() as conn:
            conn.execute(db.files.insert().values(**asdict(upload), created_at=db.utcnow()))

    def stored_bytes(self, owner_key_id: str) -> int:
        """The bytes of every upload of ``owner_key_id`` (0 when none)."""
        with self.db.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(F.bytes), 0)).where(F.owner_key_id == owner_key_id)).scalar_one())

    def get(self, file_id: str, owner_key_id: str) -> dict[str, Any] | None:
        """The row of ``file_id`` (``id``, ``owner_key_id``, ``storage_key``, ``bytes``,
        ``content_type``, ``created_at``), or None when unknown or another key's."""
        with self.db.connect() as conn:
            row = conn.execute(db.files.select().where(F.id == file_id, F.owner_key_id == owner_key_id)).mappings().first()
        return dict(row) if row else None
