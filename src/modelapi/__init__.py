"""modelapi: a self-hostable image-generation Model API server, with a Python SDK and CLI.

The SDK::

    from modelapi import Client
    client = Client("http://127.0.0.1:8000")
    result = client.run("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images of a fox"})
    client.download(result, "out/")
"""

from .client import (
    AsyncClient,
    Cancelled,
    Client,
    Completed,
    Failed,
    InProgress,
    Queued,
    RequestHandle,
    StatusUpdate,
)
from .errors import (
    APIStatusError,
    AuthenticationError,
    InputError,
    ModelAPIError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestCancelled,
    RequestFailed,
    RequestTimeout,
    ValidationError,
)
from .types import Status

__version__ = "0.1.0"
__all__ = [
    "APIStatusError",
    "AsyncClient",
    "AuthenticationError",
    "Cancelled",
    "Client",
    "Completed",
    "Failed",
    "InProgress",
    "InputError",
    "ModelAPIError",
    "NotFoundError",
    "PermissionDeniedError",
    "Queued",
    "RateLimitError",
    "RequestCancelled",
    "RequestFailed",
    "RequestHandle",
    "RequestTimeout",
    "Status",
    "StatusUpdate",
    "ValidationError",
]
