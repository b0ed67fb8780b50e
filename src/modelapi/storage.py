"""Where files live: outputs, stored input images and uploads, under ``<data_dir>/files``.

Outputs are served by the server itself under signed URLs that expire
(``/files/<key>?expires=<unix s>&sig=<hmac>``, HMAC-SHA256 with a per-install secret kept in
``<data_dir>/secret_key``). An object store with presigned URLs is the scale-out seam: it
offers the same three methods.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

from PIL import Image, PngImagePlugin


class LocalStorage:
    """Files under ``root``; URLs under ``base_url``.

    Args:
        root: folder holding the files.
        base_url: the server's public base URL (absolute URLs are built from it).
        secret: HMAC key for signed URLs (bytes).
    """

    def __init__(self, root: Path, base_url: str, secret: bytes) -> None:
        self.root = root
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, data_dir: Path, base_url: str) -> "LocalStorage":
        """Storage in ``<data_dir>/files`` with the install's secret (created 0600 on first use)."""
        key_file = data_dir / "secret_key"
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        return cls(data_dir / "files", base_url, bytes.fromhex(key_file.read_text().strip()))

    def path(self, key: str) -> Path:
        """The file of ``key``. Raises ``ValueError`` for keys leaving the root."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"bad storage key {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` durably (fsync) under ``key``."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def put_png(self, key: str, image: Image.Image, text: dict[str, str]) -> None:
        """Save ``image`` as PNG with ``text`` in tEXt/iTXt chunks (e.g. prompt, seed)."""
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_itxt(k, v)
        buf = io.BytesIO()
        image.save(buf, format="PNG", pnginfo=info)
        self.put(key, buf.getvalue())

    def signed_url(self, key: str, expires_at: float) -> str:
        """Absolute URL of ``key`` valid until ``expires_at`` (unix seconds)."""
        expires = int(expires_at)
        query = urlencode({"expires": expires, "sig": self._sign(key, expires)})
        return f"{self.base_url}/files/{key}?{query}"

    def verify(self, key: str, expires: int, sig: str) -> bool:
        """True when ``sig`` is ours for ``key`` and ``expires`` has not passed."""
        return expires >= time.time() and hmac.compare_digest(sig, self._sign(key, expires))

    def _sign(self, key: str, expires: int) -> str:
        return hmac.new(self._secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()
