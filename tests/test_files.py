"""Uploads (core/files.py): the files table's one owner records an upload and reads it back for
its own key only."""

from __future__ import annotations

from modelapi.core.files import FileStore


def test_an_upload_is_recorded_and_read_back_by_its_key_only(jobs):
    files = FileStore(jobs.db)
    upload = files.new("key_a", "jpeg", 123)
    assert upload.id.startswith("file_") and upload.storage_key == f"uploads/{upload.id}.jpg"
    assert upload.content_type == "image/jpeg" and files.new("key_a", "png", 1).storage_key.endswith(".png")
    assert files.get(upload.id, "key_a") is None, "nothing is recorded before add"
    files.add(upload)
    row = files.get(upload.id, "key_a")
    assert {k: row[k] for k in ("id", "owner_key_id", "storage_key", "bytes", "content_type")} == upload.__dict__
    assert files.get(upload.id, "key_b") is None, "another key's upload is unknown"
