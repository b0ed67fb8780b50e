"""The HTTP errors only the server raises, beside the SDK's tree (:mod:`modelapi.errors`, whose
classes the server raises too): each carries its status and wire error code, as those do."""

from __future__ import annotations

from typing import Any

from ..errors import APIStatusError


class BadRequest(APIStatusError):
    """400: a body that is not JSON, or not sent as ``application/json``."""

    status_code = 400
    error_code = 400001


class ServiceUnavailable(APIStatusError):
    """503: the server is shutting down, or the file store cannot take a file; retry shortly
    (``retry_after_s`` is sent as Retry-After)."""

    status_code = 503
    error_code = 503001

    def __init__(self, *args: Any, retry_after_s: int = 5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_s = retry_after_s
