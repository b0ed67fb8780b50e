"""Exceptions raised by the modelapi SDK.

Tree::

    ModelAPIError
    ├── APIStatusError                the server answered an error (``status_code``, ``error_code``,
    │   │                             ``error_message``, ``detail``, ``request_id``)
    │   ├── AuthenticationError       401 / 401001
    │   │   └── KeyExpiredError       401 / 401001, the key's ``expires_at`` has passed
    │   ├── InsufficientFundsError    402 / 10001, the key's budget is spent (``detail``:
    │   │                             ``{"budget_remaining_usd", "resets_at"}``)
    │   ├── PermissionDeniedError     403 / 403001
    │   │   └── ForbiddenError        403 / 403003, a model the key may not use, or an admin route
    │   ├── NotFoundError             404 / 404001
    │   ├── ConflictError             409 / 409001 (e.g. deleting a request while it runs)
    │   ├── GoneError                 410 / 410001 (a request's outputs were deleted: retention or DELETE)
    │   ├── ValidationError           422 / 422001 (``detail``: list of {"loc", "msg", "type"})
    │   └── RateLimitError            429 / 429001 (``retry_after_s``): the per-key queue cap
    │       └── RateLimitedError      429 / 429002, the key's submits per minute (``rpm``)
    ├── APIConnectionError            the server could not be reached (retries spent), or its
    │                                 status stream kept dropping
    ├── RequestFailed                 the job itself failed (``error`` = {"code", "message"})
    ├── RequestCancelled              the job was cancelled before it ran
    ├── RequestTimeout                a client-side deadline passed (also a ``TimeoutError``)
    ├── InputError                    an input was refused before anything was sent or run
    └── WebhookVerificationError      a webhook delivery's signature or timestamp does not check out

Each :class:`APIStatusError` subclass carries its HTTP status and wire error code as class
attributes, so raising one takes only the message (``NotFoundError("request r_1 not found")``);
:meth:`APIStatusError.from_wire` builds one from what a server answered. Wire error codes are
``status_code * 1000 + 1`` (README.md, "The API"). The errors only the server raises live with
it: :mod:`modelapi.api.errors` (400, 503) and :mod:`modelapi.engine.errors` (the engine's).
"""

from __future__ import annotations

from typing import Any, Self


class ModelAPIError(Exception):
    """Base class of every error modelapi raises."""


class APIStatusError(ModelAPIError):
    """The server answered with an error body ``{"error_code", "error_message", "detail"}``.

    Subclasses hold their ``status_code`` and ``error_code`` as class attributes; this base
    class itself is built from a server's answer (:meth:`from_wire`), for the statuses that have
    no subclass (400, 5xx, a proxy's page).

    Attributes:
        status_code (`int`): HTTP status.
        error_code (`int`): the body's error_code (e.g. 422001).
        error_message (`str`): the body's error_message.
        detail: the body's detail (a list of ``{"loc", "msg", "type"}`` for 422).
        request_id (`str | None`): the request the call was about, when known.
    """

    status_code: int
    error_code: int

    def __init__(
        self,
        error_message: str,
        detail: Any = None,
        *,
        request_id: str | None = None,
        status_code: int | None = None,
        error_code: int | None = None,
    ) -> None:
        if status_code is not None:
            self.status_code = status_code
        if not hasattr(self, "status_code"):
            raise TypeError(f"{type(self).__name__} needs a status_code (or raise a subclass that has one)")
        if error_code is not None:
            self.error_code = error_code
        elif status_code is not None or not hasattr(self, "error_code"):
            self.error_code = self.status_code * 1000 + 1
        super().__init__(f"HTTP {self.status_code} ({self.error_code}): {error_message}")
        self.error_message = error_message
        self.detail = detail
        self.request_id = request_id

    @classmethod
    def from_wire(
        cls,
        status_code: int,
        error_code: int,
        error_message: str,
        detail: Any = None,
        request_id: str | None = None,
        **extra: Any,
    ) -> Self:
        """The error a server answered, with the status and code it sent (which are the class's
        own for a subclass of that status). ``extra``: the subclass's own keywords
        (``retry_after_s`` of :class:`RateLimitError`)."""
        return cls(error_message, detail, request_id=request_id, status_code=status_code,
                   error_code=error_code, **extra)


class AuthenticationError(APIStatusError):
    """401: missing, unknown or revoked API key."""

    status_code = 401
    error_code = 401001


class KeyExpiredError(AuthenticationError):
    """401 (401001): the key's ``expires_at`` has passed."""


class InsufficientFundsError(APIStatusError):
    """402 (10001, the hosted service's InsufficientFunds code): the key's budget for its period
    cannot cover the request's cost. ``detail``: ``{"budget_remaining_usd": float,
    "resets_at": ISO 8601 str | None}`` (None for a ``total`` budget, which never resets)."""

    status_code = 402
    error_code = 10001


class PermissionDeniedError(APIStatusError):
    """403: the key lacks permission."""

    status_code = 403
    error_code = 403001


class ForbiddenError(PermissionDeniedError):
    """403 (403003): the key may not use this model (its ``models`` allow-list), or a user key
    called an admin route."""

    error_code = 403003


class NotFoundError(APIStatusError):
    """404: unknown model, or unknown / expired / another key's request_id."""

    status_code = 404
    error_code = 404001


class ConflictError(APIStatusError):
    """409: the request is in a state that refuses the call (``DELETE`` of a running request)."""

    status_code = 409
    error_code = 409001


class GoneError(APIStatusError):
    """410: the request's outputs and inputs were deleted (after its retention, or by
    ``DELETE``); its status still answers. ``detail``: ``{"request_id", "status", "deleted_at"}``."""

    status_code = 410
    error_code = 410001


class ValidationError(APIStatusError):
    """422: the input fails the model's schema; ``detail`` lists each problem."""

    status_code = 422
    error_code = 422001


class RateLimitError(APIStatusError):
    """429: rate limit or per-key queue cap. ``retry_after_s`` is the Retry-After header (s)."""

    status_code = 429
    error_code = 429001

    def __init__(self, *args: Any, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_s = retry_after_s


class RateLimitedError(RateLimitError):
    """429 (429002): the key's submits per minute (``rpm``) are used up; ``retry_after_s`` is the
    seconds to the window's reset. ``rate_limit`` is ``(limit, remaining, reset_s)``, sent as the
    ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` headers."""

    error_code = 429002

    def __init__(self, *args: Any, rate_limit: tuple[int, int, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rate_limit = rate_limit


class APIConnectionError(ModelAPIError):
    """The server could not be reached (connection refused, timed out, ...) after the retries,
    or a status stream dropped ``max_retries`` times in a row without a new event. Its
    ``__cause__`` is the ``httpx.TransportError`` when there was one."""


class RequestFailed(ModelAPIError):
    """The request ran and failed. ``error`` is the result's ``{"code", "message"}``."""

    def __init__(self, request_id: str, error: dict[str, Any]) -> None:
        super().__init__(f"request {request_id} failed: {error.get('message')}")
        self.request_id = request_id
        self.error = error


class RequestCancelled(ModelAPIError):
    """The request was cancelled before it ran."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id} was cancelled")
        self.request_id = request_id


class RequestTimeout(ModelAPIError, TimeoutError):
    """A client-side deadline passed before the request finished."""


class InputError(ModelAPIError):
    """An input was refused (bad local file, unreachable or hostile URL, bad image).

    Attributes:
        loc (`list`): where the problem is, e.g. ``["body", "images", 2]``.
        msg (`str`): the rule that failed, in the schema's own words where it has them.
        type (`str`): a short machine-readable kind, e.g. ``"url_forbidden"``.
    """

    def __init__(self, msg: str, loc: list[Any] | None = None, type: str = "value_error") -> None:
        super().__init__(msg)
        self.msg = msg
        self.loc = list(loc or [])
        self.type = type

    def to_detail(self) -> dict[str, Any]:
        return {"loc": self.loc, "msg": self.msg, "type": self.type}


class WebhookVerificationError(ModelAPIError):
    """A webhook delivery failed verification (:func:`modelapi.webhooks.verify`): a missing
    ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature`` header, a timestamp more than
    5 minutes off, no matching signature, a malformed secret, or a body that is not JSON.
    ``reason`` (`str`) says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook verification failed: {reason}")
        self.reason = reason

