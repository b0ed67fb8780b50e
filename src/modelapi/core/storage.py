"""Where files live: uploads, fetched reference images and outputs, behind one protocol with two
implementations, picked by ``--storage-url``:

- ``file:///PATH`` (default ``<data_dir>/files``): a folder on this machine. Outputs are served
  by the API itself under signed URLs that expire (``/files/<key>?expires=<unix s>&sig=<hmac>``,
  HMAC-SHA256 with a per-install secret kept in ``<data_dir>/secret_key``). Every process of
  the deployment must see the same folder.
- ``s3://BUCKET/PREFIX``: any S3-compatible store, through boto3. Endpoint, region and
  credentials come from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_REGION``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, or any other source boto3 reads). Output
  URLs are presigned GET URLs (SigV4); workers share no disk with the API.

Keys are relative paths such as ``outputs/<request_id>/<attempt>/0.png``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlencode, urlparse

log = logging.getLogger("modelapi.storage")


class Storage(Protocol):
    """What the API and the workers need of a store."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` durably under ``key`` (it is readable by every process once this returns)."""

    def get(self, key: str) -> bytes:
        """The bytes under ``key``. Raises ``KeyError`` when absent."""

    def url(self, key: str, expires_at: float, base_url: str) -> str:
        """An absolute URL that serves ``key`` until ``expires_at`` (unix seconds), then stops;
        under ``base_url`` (the base a client reached the API at) when the API serves it."""

    def check(self) -> None:
        """Raise ``OSError`` when the store cannot be written (checked at start)."""

    def delete(self, key: str) -> None:
        """Delete ``key``; nothing happens when it is absent. Raises ``OSError`` (or the
        store's client error) when the store refuses."""

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder: ``outputs/<request id>/``), in no set order."""


def content_type_of(key: str) -> str:
    return {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}.get(
        key.rsplit(".", 1)[-1].lower(), "application/octet-stream")


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
"""Modes of what this server writes: directories only its user can enter, files only its
user can read (the data dir, the database, keys and secrets, stored uploads and outputs)."""


def private_dir(path: Path) -> Path:
    """Make ``path`` a directory of mode 0700 — created so (missing parents get the default
    mode), or narrowed to it when it exists with more (a warning, not an error, when this user
    may not change it). Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    return _narrow(path, PRIVATE_DIR)


def private_file(path: Path) -> Path:
    """Make ``path`` a file of mode 0600: created empty when missing, narrowed when it exists
    with more (a warning when this user may not change it). Returns ``path``."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        _narrow(path, PRIVATE_FILE)
    return path


def _narrow(path: Path, mode: int) -> Path:
    """Take from ``path`` every permission bit ``mode`` lacks (a warning when this user may not)."""
    if path.stat().st_mode & 0o777 & ~mode:
        try:
            os.chmod(path, mode)
        except PermissionError as exc:
            log.warning("cannot make %s private (mode 0%o): %s", path, mode, exc)
    return path


class FileStorage:
    """Files under ``root``; URLs served by the API, signed with ``secret``. ``root`` and every
    folder under it are mode 0700, every file 0600."""

    def __init__(self, root: Path, secret: bytes) -> None:
        self.root = root
        self._secret = secret
        private_dir(root)

    def path(self, key: str) -> Path:
        """The file of ``key``. Raises ``ValueError`` for keys leaving the root."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"bad storage key {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str = "") -> None:
        path = self.path(key)
        self._folders(path.parent)
        tmp = path.with_suffix(path.suffix + f".{secrets.token_hex(4)}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _folders(self, folder: Path) -> None:
        """Create ``folder`` (under the root) and its missing parents, each mode 0700."""
        missing = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for each in reversed(missing):
            each.mkdir(mode=PRIVATE_DIR, exist_ok=True)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def url(self, key: str, expires_at: float, base_url: str) -> str:
        expires = int(expires_at)
        query = urlencode({"expires": expires, "sig": self._sign(key, expires)})
        return f"{base_url}/files/{key}?{query}"

    def verify(self, key: str, expires: int, sig: str) -> bool:
        """True when ``sig`` is ours for ``key`` and ``expires`` has not passed."""
        return expires >= time.time() and hmac.compare_digest(sig.encode("utf-8", "replace"), self._sign(key, expires).encode())

    def check(self) -> None:
        probe = self.root / f".probe-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()

    def _sign(self, key: str, expires: int) -> str:
        return hmac.new(self._secret, f"{key}\n{expires}".encode("utf-8", "replace"), hashlib.sha256).hexdigest()

    def delete(self, key: str) -> None:
        """Remove the file of ``key``, then its folders left empty below the key's top folder
        (``outputs/<request id>/<attempt>/``, ``outputs/<request id>/``; never ``outputs/`` or
        ``uploads/`` themselves, where other files are being written)."""
        path = self.path(key)
        path.unlink(missing_ok=True)
        top = (self.root / key.split("/", 1)[0]).resolve()
        parent = path.parent
        while parent != top and parent.is_relative_to(top):
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone)
                break
            parent = parent.parent

    def keys(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        root = self.root.resolve()
        return [(Path(d) / f).relative_to(root).as_posix() for d, _, files in os.walk(folder) for f in files]


class S3Storage:
    """Objects under ``s3://bucket/prefix`` of an S3-compatible store (boto3 client).

    Args:
        bucket: the bucket (created when missing, if the credentials allow it).
        prefix: a key prefix for this deployment (may be empty).
        client: a boto3 S3 client; default one configured from the environment.
    """

    client: Any  # a boto3 S3 client (boto3 ships no type information)

    def __init__(self, bucket: str, prefix: str = "", client: Any | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client(
            "s3", config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )

    def _key(self, key: str) -> str:
        if ".." in key.split("/"):
            raise ValueError(f"bad storage key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str = "") -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                               ContentType=content_type or content_type_of(key))

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise KeyError(key) from None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def keys(self, prefix: str) -> list[str]:
        cut = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        return [obj["Key"][cut:] for page in pages for obj in page.get("Contents", [])]

    def url(self, key: str, expires_at: float, base_url: str) -> str:
        """A presigned GET URL (the store's own, whatever ``base_url``); SigV4 allows 1 s to 7 days."""
        expires_in = int(min(max(1, expires_at - time.time()), 7 * 86400))
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_in,
        )

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                    raise
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                except ClientError as exc:  # another process created it at the same moment
                    if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self.put(".probe", b"", "application/octet-stream")
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"storage s3://{self.bucket}/{self.prefix} is not writable: {exc}") from exc


def open_storage(storage_url: str, data_dir: Path) -> FileStorage | S3Storage:
    """The store named by ``storage_url`` (``file:///PATH`` or ``s3://BUCKET/PREFIX``).

    Raises:
        ValueError: another scheme.
    """
    parsed = urlparse(storage_url)
    if parsed.scheme == "s3":
        return S3Storage(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        return FileStorage(Path(unquote(parsed.path)), _install_secret(data_dir))
    raise ValueError(f"--storage-url must be file:///PATH or s3://BUCKET/PREFIX, not {storage_url!r}")


def _install_secret(data_dir: Path) -> bytes:
    """The install's URL-signing secret, created (mode 0600) on first use."""
    key_file = private_dir(data_dir) / "secret_key"
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return bytes.fromhex(key_file.read_text().strip())
