"""File storage (core/storage.py): keys never leave the root; signed URLs expire and refuse tampering."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from modelapi.core.storage import FileStorage, open_storage


@pytest.fixture
def store(tmp_path) -> FileStorage:
    return FileStorage(tmp_path / "files", b"k" * 32)


def test_put_get_and_missing_keys(store):
    store.put("outputs/r/1/0.png", b"png", "image/png")
    assert store.get("outputs/r/1/0.png") == b"png"
    with pytest.raises(KeyError):
        store.get("outputs/r/1/1.png")


@pytest.mark.parametrize("key", ["../secret_key", "outputs/../../x", "/etc/passwd"])
def test_keys_never_leave_the_root(store, key):
    with pytest.raises(ValueError):
        store.path(key)


def test_signed_urls_expire_and_refuse_tampering(store):
    url = store.url("outputs/r/1/0.png", time.time() + 60, "http://127.0.0.1:8000")
    query = parse_qs(urlsplit(url).query)
    expires, sig = int(query["expires"][0]), query["sig"][0]
    assert url.startswith("http://127.0.0.1:8000/files/outputs/r/1/0.png?")
    assert store.verify("outputs/r/1/0.png", expires, sig)
    assert not store.verify("outputs/r/1/1.png", expires, sig), "another key"
    assert not store.verify("outputs/r/1/0.png", expires + 1, sig), "another expiry"
    assert not store.verify("outputs/r/1/0.png", expires, sig[:-1] + "é"), "non-ASCII is refused, not an error"
    past = store.url("outputs/r/1/0.png", time.time() - 1, "http://127.0.0.1:8000")
    q = parse_qs(urlsplit(past).query)
    assert not store.verify("outputs/r/1/0.png", int(q["expires"][0]), q["sig"][0])


def test_storage_urls(tmp_path):
    assert isinstance(open_storage((tmp_path / "f").as_uri(), tmp_path), FileStorage)
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="file:///PATH or s3://BUCKET/PREFIX"):
        open_storage("ftp://x/y", tmp_path)
