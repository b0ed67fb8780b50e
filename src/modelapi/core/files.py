"""Uploads: the files table, one row per image uploaded with ``POST /v1/files``, whose bytes the
storage holds under ``uploads/<file id>.<jpg|png>``. This module is the table's one writer."""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import db

F = db.files.c
_UPLOAD_URL = re.compile(r"/v1/files/(file_[0-9a-f]{24})$")


def upload_ids(inputs: dict[str, Any]) -> list[str]:
    """The ids of the uploads a request's ``inputs`` name (image fields holding an upload URL,
    ``<base>/v1/files/<file id>``)."""
    found = []
    for value in inputs.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and (match := _UPLOAD_URL.search(item)):
                found.append(match.group(1))
    return found


def mark_used(conn: sa.Connection, owner_key_id: str, file_ids: list[str], request_id: str) -> None:
    """In the transaction that stores request ``request_id``: the key's uploads ``file_ids`` are
    used by it (they are deleted with it, not after ``--upload-retention-s``)."""
    if file_ids:
        conn.execute(db.files.update().where(F.id.in_(file_ids), F.owner_key_id == owner_key_id).values(used_by=request_id))


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

    def claim_unused(self, before: datetime, limit: int) -> list[str]:
        """Delete up to ``limit`` rows of uploads never used by a request and created before
        ``before``, oldest first; their storage keys (each returned to one caller only, however
        many call at once: the rows are deleted in the claim; skipped while another holds them)."""
        ids = db.picked(sa.select(F.id).where(F.used_by.is_(None), F.created_at < before).order_by(F.created_at).limit(limit))
        with self.db.begin() as conn:
            return list(conn.execute(db.files.delete().where(F.id.in_(ids), F.used_by.is_(None))
                                     .returning(F.storage_key)).scalars())

    @staticmethod
    def claim_used_by(conn: sa.Connection, request_ids: list[str]) -> list[str]:
        """Delete the rows of the uploads last used by ``request_ids`` (in the caller's
        transaction); their storage keys."""
        if not request_ids:
            return []
        return list(conn.execute(db.files.delete().where(F.used_by.in_(request_ids)).returning(F.storage_key)).scalars())
