"""Python SDK for the Model API: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio),
both over httpx. The same code works against the hosted service
(``https://model-api.runcomfy.net``) and against a self-hosted ``modelapi serve``.

Example::

    from modelapi import Client
    client = Client(base_url="http://127.0.0.1:8000")
    result = client.run("bytedance/seedream-4-0/sequential", {"text": "Generate 3 images of a red fox"})
    client.download(result, "out/")

Step by step (what :meth:`Client.run` does for you)::

    handle = client.submit("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images of a cat"})
    for update in client.iter_status(handle.request_id):
        print(update)            # Queued(position=0) -> InProgress(progress=0.5) -> Completed(output={...})
    body = client.result(handle.request_id)

Configuration:

* ``base_url``: the argument, else ``$MODELAPI_BASE_URL``, else ``https://model-api.runcomfy.net``.
* API key: the argument, else ``$MODELAPI_API_KEY``, else -- only when ``base_url`` is a loopback
  address (127.0.0.1, localhost, [::1]) -- the local server's ``<data dir>/initial_api_key`` file
  (see :func:`modelapi.types.default_data_dir`); else :class:`~modelapi.errors.AuthenticationError`.

Retries (jittered exponential backoff, 0.5 s base, 8 s cap, ``max_retries`` retries, a
``Retry-After`` header always wins): reads (GET) and cancel on HTTP 429/502/503/504 and on
connection errors (``httpx.TransportError``). A submit is retried only when it carries an
``idempotency_key`` (the server then answers with the same request_id: never pay twice). Uploads
are not retried. Once retries are spent, HTTP errors raise the
:class:`~modelapi.errors.APIStatusError` subclass of their status and connection errors raise
:class:`~modelapi.errors.APIConnectionError` (its ``__cause__`` is the ``httpx.TransportError``).

Local files as inputs: see :meth:`Client.resolve_files`.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import inspect
import ipaddress
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx

from modelapi import errors
from modelapi.types import Status, default_data_dir
from modelapi.validation import image_fields, sniff_format

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncClient",
    "Cancelled",
    "Client",
    "Completed",
    "Failed",
    "InProgress",
    "Queued",
    "RequestHandle",
    "StatusUpdate",
    "parse_status",
]

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"
"""The hosted service."""

DEFAULT_MAX_UPLOAD_BYTES = 15 * 1024 * 1024
"""Largest local file :meth:`Client.resolve_files` sends (15 MB, counted as the server's
``file_size_mb`` rule counts it: 1 MB = 1,048,576 bytes)."""

FileMode = Literal["upload", "data_uri", "auto"]

_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_HOSTED_DOMAIN = "runcomfy.net"
_NO_SCHEMA_IMAGE_FIELDS = ("images", "image_urls")
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp"}
_ERROR_CLASSES: dict[int, type[errors.APIStatusError]] = {
    401: errors.AuthenticationError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    422: errors.ValidationError,
    429: errors.RateLimitError,
}


# --------------------------------------------------------------------------- typed statuses


@dataclass(frozen=True)
class RequestHandle:
    """What a submit returns: the request's id and its absolute URLs.

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
    status: ClassVar[Status]

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


@dataclass(frozen=True)
class Queued(_StatusUpdate):
    """Waiting in the queue. ``position`` (`int | None`): 0 = next to run; None when the server
    did not say."""

    position: int | None
    status: ClassVar[Status] = Status.IN_QUEUE


@dataclass(frozen=True)
class InProgress(_StatusUpdate):
    """Running. ``progress`` (`float | None`, 0.0-1.0): None when the server does not report it
    (the hosted service does not)."""

    progress: float | None = None
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


StatusUpdate = Queued | InProgress | Completed | Failed | Cancelled
"""One of the five typed statuses; ``update.status`` is the :class:`~modelapi.types.Status`."""


def parse_status(body: dict[str, Any]) -> StatusUpdate:
    """A status or result body -> its typed variant.

    Raises ``ValueError`` for a status the API does not define (via :class:`Status`).

    Example::

        parse_status({"request_id": "r1", "status": "in_queue", "queue_position": 2})
        # Queued(request_id='r1', position=2)
    """
    status = Status(body.get("status"))
    request_id = str(body.get("request_id", ""))
    if status is Status.IN_QUEUE:
        position = body.get("queue_position")
        return Queued(request_id, None if position is None else int(position))
    if status is Status.IN_PROGRESS:
        progress = body.get("progress")
        return InProgress(request_id, None if progress is None else float(progress))
    if status is Status.COMPLETED:
        output = body.get("output")
        return Completed(request_id, output or {}, result=body if output is not None else None)
    if status is Status.FAILED:
        error = body.get("error")
        return Failed(request_id, error or {}, result=body if error is not None else None)
    return Cancelled(request_id)


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class _Call:
    """One API call, independent of sync/async: what to send and how to treat failures."""

    method: str
    url: str  # a path under base_url, or an absolute URL
    json: Any = None
    params: dict[str, str] | None = None
    files: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    retry: bool = True
    request_id: str | None = None  # for error context
    auth: bool = True
    follow_redirects: bool = False


def _resolve_base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("MODELAPI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (a name or an address, IPv6 with or without brackets) is this machine."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve_api_key(api_key: str | None, base_url: str) -> str:
    if api_key:
        return api_key
    env = os.environ.get("MODELAPI_API_KEY", "").strip()
    if env:
        return env
    key_file = None
    if is_loopback_host(httpx.URL(base_url).host):
        key_file = default_data_dir() / "initial_api_key"
        if key_file.is_file():
            key = key_file.read_text(encoding="utf-8").strip()
            if key:
                return key
    where = f", or start the local server once so {key_file} exists" if key_file else ""
    raise errors.AuthenticationError(
        401, 401001, f"no API key: pass api_key=..., set MODELAPI_API_KEY{where}"
    )


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` (delta-seconds or HTTP-date) -> seconds, or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_from_response(response: httpx.Response, request_id: str | None = None) -> errors.APIStatusError:
    """An error response -> the APIStatusError subclass of its HTTP status. Bodies that are not
    ``{"error_code", "error_message", "detail"}`` (a proxy's HTML page, a bucket's XML) keep
    the status and use a snippet of the text as ``error_message``."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("error_code" in body or "error_message" in body):
        error_code = int(body.get("error_code") or status * 1000 + 1)
        message = str(body.get("error_message") or response.reason_phrase)
        detail = body.get("detail")
    else:  # not our error shape: keep whatever explains it best
        error_code = status * 1000 + 1
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            message = body["detail"]
        else:
            message = " ".join(response.text.split())[:200] or response.reason_phrase
        detail = body
    cls = _ERROR_CLASSES.get(status, errors.APIStatusError)
    kwargs: dict[str, Any] = {"detail": detail, "request_id": request_id}
    if cls is errors.RateLimitError:
        kwargs["retry_after_s"] = _parse_retry_after(response.headers.get("retry-after"))
    return cls(status, error_code, message, **kwargs)


def _retry_delay(call: _Call, attempt: int, max_retries: int, response: httpx.Response | None) -> float | None:
    """Seconds to wait before retrying ``call`` (attempt 0 = the first retry), or None when it
    must not be retried. ``response`` None means a connection error."""
    if not call.retry or attempt >= max_retries:
        return None
    if response is not None:
        if response.status_code not in _RETRY_STATUSES:
            return None
        retry_after = _parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            return retry_after
    backoff = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)
    return backoff * (0.5 + random.random() / 2)


def _path_id(value: str) -> str:
    return quote(value, safe="")


def _handle_from(body: dict[str, Any]) -> RequestHandle:
    return RequestHandle(body["request_id"], body["status_url"], body["result_url"], body["cancel_url"])


def _submit_call(model_id: str, input: dict[str, Any], idempotency_key: str | None) -> _Call:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    # Never pay twice: a submit is retried only when the server can deduplicate it.
    return _Call("POST", f"/v1/models/{quote(model_id, safe='/')}", json=input, headers=headers,
                 retry=idempotency_key is not None)


def _status_call(request_id: str) -> _Call:
    return _Call("GET", f"/v1/requests/{_path_id(request_id)}/status", request_id=request_id)


def _result_call(request_id: str, include_cost: bool) -> _Call:
    params = {"include_cost": "true"} if include_cost else None
    return _Call("GET", f"/v1/requests/{_path_id(request_id)}/result", params=params, request_id=request_id)


def _cancel_call(request_id: str) -> _Call:
    # Cancel is idempotent on the server, so it is retried like a read.
    return _Call("POST", f"/v1/requests/{_path_id(request_id)}/cancel", request_id=request_id)


def _same_origin(url: str, base_url: str) -> bool:
    a, b = httpx.URL(url), httpx.URL(base_url)
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _download_call(url: str, base_url: str) -> _Call:
    # Presigned object-store URLs must not receive our key; our own signed URLs don't need it.
    return _Call("GET", url, auth=_same_origin(url, base_url), follow_redirects=True)


def _output_urls(result: dict[str, Any]) -> list[str]:
    output = result.get("output")
    if not isinstance(output, dict):
        raise ValueError(f"result of request {result.get('request_id')} has no output "
                         f"(status {result.get('status')!r})")
    if output.get("images"):
        return list(output["images"])
    return [output["image"]] if output.get("image") else []


def _download_name(request_id: str, index: int, content_type: str | None, url: str) -> str:
    media_type = (content_type or "").split(";")[0].strip().lower()
    ext = _EXTENSIONS.get(media_type)
    if ext is None:
        ext = Path(httpx.URL(url).path).suffix.lower() or ".bin"
        ext = ".jpg" if ext == ".jpeg" else ext
    return f"{request_id}_{index}{ext}"


def _write(directory: Path, name: str, content: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------- local files


def _sniff_image(head: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` by magic bytes (the server's own check), else None."""
    fmt = sniff_format(head)
    return f"image/{fmt}" if fmt else None


def _image_fields(schema: dict[str, Any] | None) -> list[str]:
    """Names of the fields holding images: those whose items (or themselves) have format
    ``image_uri``; without a schema, ``images`` and ``image_urls``."""
    if schema is None:
        return list(_NO_SCHEMA_IMAGE_FIELDS)
    return list(image_fields(schema.get("input_schema", schema)))


_URL_PREFIX = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|data:)")


@dataclass(frozen=True)
class _LocalImage:
    loc: list[Any]
    path: Path
    content: bytes
    content_type: str

    def data_uri(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.content).decode('ascii')}"


def _local_images(input: dict[str, Any], schema: dict[str, Any] | None, max_bytes: int) -> list[_LocalImage]:
    """Every local path in an image field, read and checked. Raises InputError (naming the file
    and the rule) for a missing path, a file over ``max_bytes``, or one that is not JPEG/PNG."""
    found = []
    for name in _image_fields(schema):
        value = input.get(name)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if not isinstance(item, str) or _URL_PREFIX.match(item):
                continue  # URLs and data: URIs go as they are; the server checks them
            loc = ["body", name] + ([] if index is None else [index])
            path = Path(item).expanduser()
            if not path.is_file():
                raise errors.InputError(f"{item}: no such file (and not an http(s):// or data: URL)",
                                        loc, "file_not_found")
            size = path.stat().st_size
            if size > max_bytes:
                raise errors.InputError(
                    f"{item}: {size} bytes is over the {max_bytes}-byte limit for an input image "
                    f"({max_bytes / 1048576:g} MB)", loc, "file_too_large")
            content = path.read_bytes()
            content_type = _sniff_image(content[:8])
            if content_type is None:
                raise errors.InputError(f"{item}: only JPEG and PNG images are accepted (checked by content)",
                                        loc, "unsupported_image_type")
            found.append(_LocalImage(loc, path, content, content_type))
    return found


def _effective_mode(mode: FileMode, base_url: str) -> Literal["upload", "data_uri"]:
    if mode == "auto":
        host = httpx.URL(base_url).host.lower()
        hosted = host == _HOSTED_DOMAIN or host.endswith("." + _HOSTED_DOMAIN)
        return "data_uri" if hosted else "upload"
    if mode not in ("upload", "data_uri"):
        raise ValueError(f"mode must be 'upload', 'data_uri' or 'auto', not {mode!r}")
    return mode


def _with_replacements(input: dict[str, Any], replacements: list[tuple[list[Any], str]]) -> dict[str, Any]:
    out = dict(input)
    for loc, url in replacements:
        name = loc[1]
        if len(loc) == 2:
            out[name] = url
        else:
            if out[name] is input[name]:
                out[name] = list(input[name])
            out[name][loc[2]] = url
    return out


def _upload_call(name: str, content: bytes, content_type: str) -> _Call:
    return _Call("POST", "/v1/files", files={"file": (name, content, content_type)}, retry=False)


def _upload_call_for(path: str | os.PathLike[str]) -> _Call:
    path = Path(path).expanduser()
    content = path.read_bytes()
    return _upload_call(path.name, content, _sniff_image(content[:8]) or "application/octet-stream")


# --------------------------------------------------------------------------- polling


class _Poll:
    """Poll timing shared by sync and async: interval x1.5 up to a cap, a client-side deadline."""

    def __init__(self, request_id: str, poll_interval_s: float, max_interval_s: float,
                 timeout_s: float | None, clock: Callable[[], float]) -> None:
        self.request_id = request_id
        self.interval = poll_interval_s
        self.max_interval = max_interval_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.deadline = None if timeout_s is None else clock() + timeout_s

    def next_sleep(self, retry_after_s: float | None = None) -> float:
        """Seconds to wait before the next poll; raises RequestTimeout once the deadline passed."""
        delay = max(self.interval, retry_after_s or 0.0)
        self.interval = min(self.max_interval, self.interval * 1.5)
        if self.deadline is None:
            return delay
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise errors.RequestTimeout(
                f"request {self.request_id} did not finish within {self.timeout_s} s "
                "(it may still run: cancel it or poll it later)")
        return min(delay, remaining)


def _run_outcome(update: StatusUpdate) -> dict[str, Any]:
    """The terminal update of run() -> the result body, or the matching exception."""
    if isinstance(update, Completed):
        return update.result if update.result is not None else {
            "request_id": update.request_id, "status": "completed", "output": update.output}
    if isinstance(update, Failed):
        raise errors.RequestFailed(update.request_id, update.error)
    raise errors.RequestCancelled(update.request_id)


# --------------------------------------------------------------------------- clients


class _BaseClient:
    _http: httpx.Client | httpx.AsyncClient

    def __init__(self, base_url: str | None, api_key: str | None, *, timeout_s: float, max_retries: int,
                 max_upload_bytes: int, clock: Callable[[], float]) -> None:
        self.base_url = _resolve_base_url(base_url)
        self._api_key = _resolve_api_key(api_key, self.base_url)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_upload_bytes = max_upload_bytes
        self._clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _request(self, call: _Call) -> httpx.Request:
        headers = dict(call.headers)
        if call.auth:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return self._http.build_request(call.method, call.url, json=call.json, params=call.params,
                                        files=call.files, headers=headers)

    def _file_mode(self, mode: FileMode) -> Literal["upload", "data_uri"]:
        return _effective_mode(mode, self.base_url)

    def _poll(self, request_id: str, poll_interval_s: float, max_interval_s: float,
              timeout_s: float | None) -> _Poll:
        return _Poll(request_id, poll_interval_s, max_interval_s, timeout_s, self._clock)


class Client(_BaseClient):
    """Blocking client for the Model API.

    Args:
        base_url (`str | None`): server root; default ``$MODELAPI_BASE_URL``, else the hosted
            service ``https://model-api.runcomfy.net``.
        api_key (`str | None`): default ``$MODELAPI_API_KEY``, else (loopback base_url only) the
            local server's ``<data dir>/initial_api_key``. Raises AuthenticationError when none.
        timeout_s (`float`, seconds): per-HTTP-call timeout (not the job's; see ``run``).
        max_retries (`int`): retries of a retryable call (see the module docstring).
        transport (`httpx.BaseTransport | None`): e.g. ``httpx.MockTransport`` in tests.
        max_upload_bytes (`int`, bytes): largest local file ``resolve_files`` sends; 15 MB.
        sleep, clock: ``time.sleep`` / ``time.monotonic`` replacements (tests: a fake clock).

    Example::

        with Client("http://127.0.0.1:8000", api_key="mk_...") as client:
            catalogue = client.models()          # [{...}, ...] one per model
            result = client.run("bytedance/dreamina-4-0/edit",
                                client.resolve_files({"image_urls": ["me.jpg"], "prompt": "as a watercolor"}))
            paths = client.download(result, "out/")   # [Path('out/<request_id>_0.png')]
    """

    _http: httpx.Client

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        transport: httpx.BaseTransport | None = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s=timeout_s, max_retries=max_retries,
                         max_upload_bytes=max_upload_bytes, clock=clock)
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                  headers={"User-Agent": "modelapi-python"})

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.send(self._request(call), follow_redirects=call.follow_redirects)
            except httpx.TransportError as exc:
                delay = _retry_delay(call, attempt, self.max_retries, None)
                if delay is None:
                    raise errors.APIConnectionError(f"could not reach {self.base_url}: {type(exc).__name__}: {exc}") from exc
            else:
                if response.is_success:
                    return response
                delay = _retry_delay(call, attempt, self.max_retries, response)
                if delay is None:
                    raise _error_from_response(response, call.request_id)
            self._sleep(delay)
            attempt += 1

    def _json(self, call: _Call) -> Any:
        return self._send(call).json()

    # -- the API, one call each

    def submit(self, model_id: str, input: dict[str, Any], *, idempotency_key: str | None = None) -> RequestHandle:
        """Queue a request; returns at once. ``POST /v1/models/{model_id}``.

        ``idempotency_key``: same key + same body -> the same request (and the call is then
        safe to retry, so it is retried on 429/5xx/connection errors; without a key it is not).
        Raises ValidationError (422, ``detail`` lists the problems), NotFoundError (unknown model).
        """
        return _handle_from(self._json(_submit_call(model_id, input, idempotency_key)))

    def status(self, request_id: str) -> StatusUpdate:
        """The request's current status, typed. ``GET /v1/requests/{id}/status``."""
        return parse_status(self._json(_status_call(request_id)))

    def result(self, request_id: str, *, include_cost: bool = False) -> dict[str, Any]:
        """The raw result body: ``output`` when completed, ``error`` when failed, else the status
        body. ``include_cost`` adds ``"cost"``. ``GET /v1/requests/{id}/result``."""
        return self._json(_result_call(request_id, include_cost))

    def cancel(self, request_id: str) -> dict[str, Any]:
        """Cancel a queued request: ``{"request_id", "status", "outcome": "cancelled" |
        "not_cancellable"}``. Idempotent."""
        return self._json(_cancel_call(request_id))

    def models(self) -> list[dict[str, Any]]:
        """The catalogue (``GET /v1/models`` -> ``models``)."""
        return self._json(_Call("GET", "/v1/models"))["models"]

    def model_schema(self, model_id: str) -> dict[str, Any]:
        """``{"input_schema", "output_schema", ...}`` of one model."""
        return self._json(_Call("GET", f"/v1/models/{quote(model_id, safe='/')}/schema"))

    def _upload_image(self, img: _LocalImage) -> str:
        return self._json(_upload_call(img.path.name, img.content, img.content_type))["url"]

    def upload(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file to this server (``POST /v1/files``, not retried); returns its URL,
        usable as an image input. The hosted service has no upload route: use data URIs there."""
        return self._json(_upload_call_for(path))["url"]

    # -- composed helpers

    def iter_status(self, request_id: str, *, poll_interval_s: float = 0.5, max_interval_s: float = 5.0,
                    timeout_s: float | None = None) -> Iterator[StatusUpdate]:
        """Poll until the request is terminal, yielding each new status (repeats are skipped).

        The last update is fetched from the result route, so ``Completed.output`` and
        ``Failed.error`` are filled. The interval grows x1.5 per poll up to ``max_interval_s``;
        a 429 waits its ``Retry-After``. ``timeout_s`` (seconds, None = no deadline) raises
        RequestTimeout (a ``TimeoutError``); the request itself is left running.
        """
        poll = self._poll(request_id, poll_interval_s, max_interval_s, timeout_s)
        last = None
        while True:
            retry_after = None
            try:
                update = self.status(request_id)
                if update.is_terminal:
                    update = parse_status(self.result(request_id))
            except errors.RateLimitError as exc:  # retries spent: slow the polling down instead
                retry_after, update = exc.retry_after_s, last
            if update is not None and update != last:
                yield update
                last = update
            if update is not None and update.is_terminal:
                return
            self._sleep(poll.next_sleep(retry_after))

    def run(self, model_id: str, input: dict[str, Any], *, timeout_s: float | None = 600,
            idempotency_key: str | None = None,
            on_update: Callable[[StatusUpdate], Any] | None = None) -> dict[str, Any]:
        """Submit, wait, and return the completed result body
        (``{"request_id", "status": "completed", "output": {"images": [...]}, ...}``).

        ``timeout_s`` (seconds; None = wait forever): client-side deadline -> RequestTimeout.
        ``on_update`` is called with every new StatusUpdate. Raises RequestFailed (``.error``),
        RequestCancelled, or the APIStatusError of a refused submit.

        Example::

            result = client.run("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images of a cat"},
                                on_update=print)
        """
        handle = self.submit(model_id, input, idempotency_key=idempotency_key)
        for update in self.iter_status(handle.request_id, timeout_s=timeout_s):
            if on_update is not None:
                on_update(update)
            if update.is_terminal:
                return _run_outcome(update)
        raise AssertionError("unreachable: iter_status ends on a terminal update")

    def download(self, result: dict[str, Any], dir: str | os.PathLike[str]) -> list[Path]:
        """Save every output image of a completed ``result`` into ``dir`` (created if needed) as
        ``<request_id>_<i>.<ext>`` (i from 0; ext from Content-Type: .png/.jpg/.webp, else the
        URL's suffix). Our key is sent only to URLs on base_url's own origin, never to presigned
        object-store URLs. Returns the paths in output order."""
        paths = []
        for index, url in enumerate(_output_urls(result)):
            response = self._send(_download_call(url, self.base_url))
            name = _download_name(result["request_id"], index, response.headers.get("content-type"), url)
            paths.append(_write(Path(dir), name, response.content))
        return paths

    def resolve_files(self, input: dict[str, Any], *, schema: dict[str, Any] | None = None,
                      mode: FileMode = "auto") -> dict[str, Any]:
        """Return a copy of ``input`` where local file paths in image fields became URLs.

        Image fields: with ``schema`` (a model's input_schema, or ``model_schema()``'s answer),
        the fields whose items have ``format: image_uri``; without, ``images`` and
        ``image_urls``. ``http(s)://`` and ``data:`` values are left alone.

        Modes: ``"upload"`` -> ``POST /v1/files`` (our server), the value becomes the file's
        URL; ``"data_uri"`` -> ``data:image/png;base64,...`` inline in the request body;
        ``"auto"`` (default) -> ``data_uri`` when base_url is the hosted service (any
        ``*.runcomfy.net`` host: it has no upload route), ``upload`` otherwise. The hosted
        service's documents only promise public https:// URLs; data: URIs are what this SDK
        can send it without a file host of your own.

        Every file is checked before anything is sent: a missing path, a file over
        ``max_upload_bytes`` or one that is not JPEG/PNG (by its bytes) raises InputError
        naming the file and the rule.

        Example::

            input = client.resolve_files({"images": ["a.png", "https://x/b.jpg"], "text": "..."})
        """
        mode = self._file_mode(mode)
        images = _local_images(input, schema, self.max_upload_bytes)
        if mode == "data_uri":
            return _with_replacements(input, [(img.loc, img.data_uri()) for img in images])
        return _with_replacements(input, [(img.loc, self._upload_image(img)) for img in images])


class AsyncClient(_BaseClient):
    """asyncio client for the Model API: the same methods as :class:`Client`, awaited
    (``iter_status`` is an async iterator). ``transport`` is an ``httpx.AsyncBaseTransport``;
    ``sleep`` defaults to ``asyncio.sleep``.

    Example::

        async with AsyncClient("http://127.0.0.1:8000") as client:
            handle = await client.submit("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images of a cat"})
            async for update in client.iter_status(handle.request_id):
                print(update)
            paths = await client.download(await client.result(handle.request_id), "out/")
    """

    _http: httpx.AsyncClient

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s=timeout_s, max_retries=max_retries,
                         max_upload_bytes=max_upload_bytes, clock=clock)
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                       headers={"User-Agent": "modelapi-python"})

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.send(self._request(call), follow_redirects=call.follow_redirects)
            except httpx.TransportError as exc:
                delay = _retry_delay(call, attempt, self.max_retries, None)
                if delay is None:
                    raise errors.APIConnectionError(f"could not reach {self.base_url}: {type(exc).__name__}: {exc}") from exc
            else:
                if response.is_success:
                    return response
                delay = _retry_delay(call, attempt, self.max_retries, response)
                if delay is None:
                    raise _error_from_response(response, call.request_id)
            await self._sleep(delay)
            attempt += 1

    async def _json(self, call: _Call) -> Any:
        return (await self._send(call)).json()

    async def submit(self, model_id: str, input: dict[str, Any], *,
                     idempotency_key: str | None = None) -> RequestHandle:
        """See :meth:`Client.submit`."""
        return _handle_from(await self._json(_submit_call(model_id, input, idempotency_key)))

    async def status(self, request_id: str) -> StatusUpdate:
        """See :meth:`Client.status`."""
        return parse_status(await self._json(_status_call(request_id)))

    async def result(self, request_id: str, *, include_cost: bool = False) -> dict[str, Any]:
        """See :meth:`Client.result`."""
        return await self._json(_result_call(request_id, include_cost))

    async def cancel(self, request_id: str) -> dict[str, Any]:
        """See :meth:`Client.cancel`."""
        return await self._json(_cancel_call(request_id))

    async def models(self) -> list[dict[str, Any]]:
        """See :meth:`Client.models`."""
        return (await self._json(_Call("GET", "/v1/models")))["models"]

    async def model_schema(self, model_id: str) -> dict[str, Any]:
        """See :meth:`Client.model_schema`."""
        return await self._json(_Call("GET", f"/v1/models/{quote(model_id, safe='/')}/schema"))

    async def _upload_image(self, img: _LocalImage) -> str:
        return (await self._json(_upload_call(img.path.name, img.content, img.content_type)))["url"]

    async def upload(self, path: str | os.PathLike[str]) -> str:
        """See :meth:`Client.upload`."""
        return (await self._json(_upload_call_for(path)))["url"]

    async def iter_status(self, request_id: str, *, poll_interval_s: float = 0.5, max_interval_s: float = 5.0,
                          timeout_s: float | None = None) -> AsyncIterator[StatusUpdate]:
        """See :meth:`Client.iter_status`; use with ``async for``."""
        poll = self._poll(request_id, poll_interval_s, max_interval_s, timeout_s)
        last = None
        while True:
            retry_after = None
            try:
                update = await self.status(request_id)
                if update.is_terminal:
                    update = parse_status(await self.result(request_id))
            except errors.RateLimitError as exc:
                retry_after, update = exc.retry_after_s, last
            if update is not None and update != last:
                yield update
                last = update
            if update is not None and update.is_terminal:
                return
            await self._sleep(poll.next_sleep(retry_after))

    async def run(self, model_id: str, input: dict[str, Any], *, timeout_s: float | None = 600,
                  idempotency_key: str | None = None,
                  on_update: Callable[[StatusUpdate], Any] | None = None) -> dict[str, Any]:
        """See :meth:`Client.run`. ``on_update`` may be a plain function or a coroutine function."""
        handle = await self.submit(model_id, input, idempotency_key=idempotency_key)
        async for update in self.iter_status(handle.request_id, timeout_s=timeout_s):
            if on_update is not None and inspect.isawaitable(awaited := on_update(update)):
                await awaited
            if update.is_terminal:
                return _run_outcome(update)
        raise AssertionError("unreachable: iter_status ends on a terminal update")

    async def download(self, result: dict[str, Any], dir: str | os.PathLike[str]) -> list[Path]:
        """See :meth:`Client.download`."""
        paths = []
        for index, url in enumerate(_output_urls(result)):
            response = await self._send(_download_call(url, self.base_url))
            name = _download_name(result["request_id"], index, response.headers.get("content-type"), url)
            paths.append(_write(Path(dir), name, response.content))
        return paths

    async def resolve_files(self, input: dict[str, Any], *, schema: dict[str, Any] | None = None,
                            mode: FileMode = "auto") -> dict[str, Any]:
        """See :meth:`Client.resolve_files`."""
        mode = self._file_mode(mode)
        images = _local_images(input, schema, self.max_upload_bytes)
        if mode == "data_uri":
            return _with_replacements(input, [(img.loc, img.data_uri()) for img in images])
        return _with_replacements(input, [(img.loc, await self._upload_image(img)) for img in images])
