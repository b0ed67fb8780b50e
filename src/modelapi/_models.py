"""The SDK's typed models and their parsers (no IO): what a submit returns
(:class:`RequestHandle`), a request's status (:data:`StatusUpdate`: :class:`Queued`,
:class:`InProgress`, :class:`Completed`, :class:`Failed`, :class:`Cancelled`, or
:class:`Unknown` for a status string this SDK does not know), and one row of the request
listing (:class:`RequestSummary`), and a request's result body (:class:`Result`).

Parsers accept the shapes of both our server and the hosted service: optional fields may be
missing, and an unknown status string is an :class:`Unknown` update rather than an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

from modelapi import errors
from modelapi.types import Status

__all__ = [
    "Cancelled",
    "Completed",
    "Failed",
    "InProgress",
    "Queued",
    "RequestHandle",
    "RequestSummary",
    "Result",
    "StatusUpdate",
    "Unknown",
    "parse_handle",
    "parse_result",
    "parse_status",
    "parse_summary",
]


@dataclass(frozen=True)
class RequestHandle:
    """What a submit returns: the request's id and its absolute URLs.

    When a submit answer omits a URL (the hosted service's status_url and result_url are
    optional), it is built from the client's base URL and the documented route.

    Example::

        handle = client.submit("bytedance/dreamina-4-0/edit", {"image_urls": [url], "prompt": "..."})
        handle.request_id   # '6f1c...'
        handle.status_url   # 'https://.../v1/requests/6f1c.../status'
    """

    request_id: str
    status_url: str
    result_url: str
    cancel_url: str


@dataclass(frozen=True)
class _StatusUpdate:
    request_id: str
    status: ClassVar[Status | None]
    body: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, kw_only=True)
    """The body it was parsed from, as the server sent it (keyword only; not compared)."""

    @property
    def is_terminal(self) -> bool:
        """True for Completed, Failed and Cancelled: nothing will change any more."""
        return self.status is not None and self.status.is_terminal

    @property
    def status_value(self) -> str:
        """The status string as the server sent it (e.g. ``"in_queue"``)."""
        return self.status.value if self.status is not None else ""


@dataclass(frozen=True)
class Queued(_StatusUpdate):
    """Waiting in the queue. ``position`` (`int | None`): 0 = next to run; None when the server
    did not say."""

    position: int | None
    status: ClassVar[Status] = Status.IN_QUEUE


@dataclass(frozen=True)
class InProgress(_StatusUpdate):
    """Running. ``progress`` (`float | None`, 0.0-1.0): None when the server does not report it
    (the hosted service does not). ``partial_output`` (`dict | None`): images the engine
    published early, ``{"images": [url, ...]}``, when the server sends them (ours may, on the
    status stream); None otherwise."""

    progress: float | None = None
    partial_output: dict[str, Any] | None = None
    status: ClassVar[Status] = Status.IN_PROGRESS


@dataclass(frozen=True)
class Completed(_StatusUpdate):
    """Finished. ``output``: ``{"images": [url, ...], "image": url (when exactly one)}`` --
    empty when parsed from a status body (only the result body carries it). ``result``: the
    whole result body (``seed``, ``metadata``, ``created_at``...) when it was fetched."""

    output: dict[str, Any]
    result: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    status: ClassVar[Status] = Status.COMPLETED


@dataclass(frozen=True)
class Failed(_StatusUpdate):
    """The request failed. ``error``: ``{"code", "message"}`` (empty when parsed from a status
    body). ``result``: the whole result body when it was fetched."""

    error: dict[str, Any]
    result: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    status: ClassVar[Status] = Status.FAILED


@dataclass(frozen=True)
class Cancelled(_StatusUpdate):
    """The request was cancelled before it ran."""

    status: ClassVar[Status] = Status.CANCELLED


@dataclass(frozen=True)
class Unknown(_StatusUpdate):
    """A status string this SDK does not know (a newer server, or a service with more states).
    Not terminal: polling and streaming go on. ``value``: the string as sent (``""`` when the
    body had none)."""

    value: str
    status: ClassVar[None] = None

    @property
    def status_value(self) -> str:
        return self.value


StatusUpdate = Queued | InProgress | Completed | Failed | Cancelled | Unknown
"""One typed status. ``update.status`` is the :class:`~modelapi.types.Status` (None for
:class:`Unknown`), ``update.status_value`` the wire string, ``update.is_terminal`` whether it
is the last."""


def _optional_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _optional_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def parse_status(body: dict[str, Any]) -> StatusUpdate:
    """A status or result body -> its typed variant. Never raises for an unexpected status
    string or a missing optional field: an unknown status is :class:`Unknown`.

    Example::

        parse_status({"request_id": "r1", "status": "in_queue", "queue_position": 2})
        # Queued(request_id='r1', position=2)
    """
    raw = body.get("status")
    request_id = str(body.get("request_id", ""))
    try:
        status = Status(raw)
    except ValueError:
        return Unknown(request_id, "" if raw is None else str(raw), body=body)
    if status is Status.IN_QUEUE:
        return Queued(request_id, _optional_int(body.get("queue_position")), body=body)
    if status is Status.IN_PROGRESS:
        partial = body.get("partial_output")
        return InProgress(request_id, _optional_float(body.get("progress")),
                          partial if isinstance(partial, dict) else None, body=body)
    if status is Status.COMPLETED:
        output = body.get("output")
        return Completed(request_id, output if isinstance(output, dict) else {},
                         result=body if isinstance(output, dict) else None, body=body)
    if status is Status.FAILED:
        error = body.get("error")
        return Failed(request_id, error if isinstance(error, dict) else {},
                      result=body if isinstance(error, dict) else None, body=body)
    return Cancelled(request_id, body=body)


def parse_handle(body: Any, base_url: str) -> RequestHandle:
    """A submit answer -> :class:`RequestHandle`; missing URLs are built from ``base_url``.
    Raises :class:`~modelapi.errors.ModelAPIError` when the answer has no ``request_id``."""
    if not isinstance(body, dict) or not body.get("request_id"):
        raise errors.ModelAPIError(f"the submit answer has no request_id: {body!r:.200}")
    request_id = str(body["request_id"])
    root = f"{base_url}/v1/requests/{quote(request_id, safe='')}"
    return RequestHandle(request_id, str(body.get("status_url") or f"{root}/status"),
                         str(body.get("result_url") or f"{root}/result"),
                         str(body.get("cancel_url") or f"{root}/cancel"))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class RequestSummary:
    """One request of :meth:`Client.list_requests`.

    Attributes:
        request_id (`str`).
        model_id (`str`): e.g. ``"bytedance/seedream-4-0/sequential"`` (``""`` if not sent).
        update (:data:`StatusUpdate`): its status when listed, typed (no output: fetch the
            result for that).
        created_at (`datetime | None`): when it was submitted (timezone-aware, UTC).
        finished_at (`datetime | None`): when it ended; None while it has not.
        body (`dict`): the listing item as the server sent it.
    """

    request_id: str
    model_id: str
    update: StatusUpdate
    created_at: datetime | None
    finished_at: datetime | None
    body: dict[str, Any] = field(compare=False, repr=False)


def parse_summary(item: dict[str, Any]) -> RequestSummary:
    """One item of ``GET /v1/requests`` -> :class:`RequestSummary`."""
    update = parse_status(item)
    return RequestSummary(update.request_id, str(item.get("model_id") or ""), update,
                          _parse_time(item.get("created_at")), _parse_time(item.get("finished_at")), item)


@dataclass(frozen=True, eq=False)
class Result(Mapping[str, Any]):
    """A request's result body (what :meth:`Client.result` and :meth:`Client.run` return), typed.

    Attributes:
        request_id (`str`).
        update (:data:`StatusUpdate`): its status, typed: :class:`Completed` (with ``output``),
            :class:`Failed` (with ``error``), or the status of a request not finished yet.
        images (`list[str]`): the output image URLs, in order (empty unless completed).
        output (`dict | None`): ``{"images": [...], "image": ...}`` when completed.
        error (`dict | None`): ``{"code", "message"}`` when failed.
        seed (`int | None`), metadata (`dict`: e.g. ``prompts``, ``random_weights``; empty when
            the server sent none), cost (`float | None`: only asked with ``include_cost``).
        created_at, finished_at (`datetime | None`): timezone-aware.
        body (`dict`): the body as the server sent it.

    It also reads as that body (a read-only mapping: ``result["output"]["images"]``,
    ``result.get("seed")``) and equals a dict of the same body, so code written for the raw
    body keeps working; ``dict(result)`` or ``result.body`` is the plain dict (e.g. for JSON).
    """

    request_id: str
    update: StatusUpdate
    images: list[str]
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    seed: int | None
    metadata: dict[str, Any]
    cost: float | None
    created_at: datetime | None
    finished_at: datetime | None
    body: dict[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.body)

    def __len__(self) -> int:
        return len(self.body)


def image_urls(output: Mapping[str, Any]) -> list[str]:
    """The image URLs of a result's ``output`` (``images``, else the single ``image``)."""
    if output.get("images"):
        return list(output["images"])
    return [output["image"]] if output.get("image") else []


def parse_result(body: dict[str, Any]) -> Result:
    """A result body -> :class:`Result`. Never raises for a missing optional field."""
    output, error, metadata = body.get("output"), body.get("error"), body.get("metadata")
    output = output if isinstance(output, dict) else None
    return Result(str(body.get("request_id", "")), parse_status(body), image_urls(output or {}), output,
                  error if isinstance(error, dict) else None, _optional_int(body.get("seed")),
                  metadata if isinstance(metadata, dict) else {}, _optional_float(body.get("cost")),
                  _parse_time(body.get("created_at")), _parse_time(body.get("finished_at")), body)
