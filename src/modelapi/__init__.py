"""modelapi: a self-hostable image-generation Model API server, with a Python SDK and CLI.

The SDK::

    from modelapi import Client
    client = Client("http://127.0.0.1:8000")
    result = client.run("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images of a fox"})
    result.images              # typed: images, seed, metadata, cost...
    client.download(result, "out/")

Webhook deliveries: :func:`modelapi.webhooks.verify`.
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
    RequestSummary,
    Result,
    StatusUpdate,
    Unknown,
)
from .errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InputError,
    InsufficientFundsError,
    KeyExpiredError,
    ModelAPIError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RateLimitedError,
    RequestCancelled,
    RequestFailed,
    RequestTimeout,
    ValidationError,
    WebhookVerificationError,
)
from .types import Status

__version__ = "0.1.0"
__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AsyncClient",
    "AuthenticationError",
    "Cancelled",
    "Client",
    "Completed",
    "ConflictError",
    "Failed",
    "ForbiddenError",
    "GoneError",
    "InProgress",
    "InputError",
    "InsufficientFundsError",
    "KeyExpiredError",
    "ModelAPIError",
    "NotFoundError",
    "PermissionDeniedError",
    "Queued",
    "RateLimitError",
    "RateLimitedError",
    "RequestCancelled",
    "RequestFailed",
    "RequestHandle",
    "RequestSummary",
    "RequestTimeout",
    "Result",
    "Status",
    "StatusUpdate",
    "Unknown",
    "ValidationError",
    "WebhookVerificationError",
]
