"""The SDK's calls and retries, without IO: configuration (base URL, key), one :class:`Call`
per API route, error mapping, retry and backoff decisions, the server's advertised features,
poll timing and deadlines, and the status stream's reconnect state. :mod:`modelapi.client`
does the sending, blocking or asyncio, with the same decisions."""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from modelapi import errors
from modelapi._models import Completed, Failed, RequestSummary, Result, StatusUpdate, parse_result, parse_status, parse_summary
from modelapi.types import Status, default_data_dir, is_loopback_host

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"
"""The hosted service."""

FEATURES_HEADER = "Modelapi-Features"
"""Response header by which our server lists what it offers beyond the hosted contract, e.g.
``status-stream, long-poll, webhooks, idempotency-key``. The hosted service sends none."""
FEATURE_STREAM = "status-stream"
FEATURE_LONG_POLL = "long-poll"
FEATURE_WEBHOOKS = "webhooks"
FEATURE_IDEMPOTENCY = "idempotency-key"
FEATURE_PREFER_WAIT = "prefer-wait"
FEATURE_CANCEL_AFTER = "cancel-after"
FEATURE_CANCEL_RUNNING = "cancel-running"
PREFER_WAIT_MAX_S = 60
"""The longest wait a submit's ``Prefer: wait=N`` may ask, seconds."""
CANCEL_WAIT_S = 10.0
"""How long the server may hold ``POST /cancel?running=true`` while the stop lands, seconds."""

STREAM_MIN_READ_TIMEOUT_S = 45.0
"""Read timeout of a status stream at least (the server sends a comment every 15 s)."""

_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_ERROR_CLASSES: dict[int, type[errors.APIStatusError]] = {
    401: errors.AuthenticationError,
    402: errors.InsufficientFundsError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    410: errors.GoneError,
    422: errors.ValidationError,
    429: errors.RateLimitError,
}

Retry = Literal["always", "never", "if_server_dedupes"]
"""When a call may be sent again after a transport error or a 429/502/503/504: ``always``
(reads, cancel), ``never`` (uploads), ``if_server_dedupes`` (a submit: only with an
Idempotency-Key and only against a server that advertises it honours one)."""


@dataclass(frozen=True)
class Call:
    """One API call, independent of sync/async: what to send and how to treat failures."""

    method: str
    url: str  # a path under base_url, or an absolute URL
    json: Any = None
    params: dict[str, str] | None = None
    files: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    retry: Retry = "always"
    request_id: str | None = None  # for error context
    auth: bool = True
    follow_redirects: bool = False
    timeout_s: float | None = None  # None: the client's


# --------------------------------------------------------------------------- configuration


def resolve_base_url(base_url: str | None) -> str:
    """The argument, else ``$MODELAPI_BASE_URL``, else the hosted service; without a trailing
    ``/`` or ``/v1`` (routes are added with their ``/v1``)."""
    url = (base_url or os.environ.get("MODELAPI_BASE_URL") or DEFAULT_BASE_URL).strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")].rstrip("/")
    return url


def resolve_api_key(api_key: str | None, base_url: str) -> str:
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
        f"no API key: pass api_key=..., set MODELAPI_API_KEY{where}"
    )


def _same_origin(url: str | httpx.URL, base_url: str) -> bool:
    a, b = httpx.URL(url), httpx.URL(base_url)
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _parse_features(value: str) -> frozenset[str]:
    """``"status-stream, long-poll"`` -> ``{"status-stream", "long-poll"}``."""
    return frozenset(part.strip().lower() for part in value.split(",") if part.strip())


def features_of(response: httpx.Response, base_url: str, known: frozenset[str] | None) -> frozenset[str] | None:
    """What ``response`` says about the server's features: its header when it has one; an
    answer of base_url's origin without it means none (unless they are already known: a proxy's
    error page does not erase them); other origins (presigned URLs) say nothing."""
    if not _same_origin(response.request.url, base_url):
        return known
    value = response.headers.get(FEATURES_HEADER)
    if value is not None:
        return _parse_features(value)
    return frozenset() if known is None else known


# --------------------------------------------------------------------------- errors and retries


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


def error_from_response(response: httpx.Response, request_id: str | None = None) -> errors.APIStatusError:
    """An error response (its body read) -> the APIStatusError subclass of its HTTP status.
    Bodies that are not ``{"error_code", "error_message", "detail"}`` (a proxy's HTML page, a
    bucket's XML) keep the status and use a snippet of the text as ``error_message``."""
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
    if cls is errors.RateLimitError:
        return errors.RateLimitError.from_wire(status, error_code, message, detail, request_id,
                                               retry_after_s=_parse_retry_after(response.headers.get("retry-after")))
    return cls.from_wire(status, error_code, message, detail, request_id)


def connection_error(base_url: str, exc: Exception) -> errors.APIConnectionError:
    return errors.APIConnectionError(f"could not reach {base_url}: {type(exc).__name__}: {exc}")


def _backoff(attempt: int) -> float:
    """Jittered exponential backoff: 0.5 s x 2**attempt, capped at 8 s, times 0.5-1.0."""
    return min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt) * (0.5 + random.random() / 2)


def _may_retry(call: Call, features: frozenset[str] | None) -> bool:
    if call.retry == "if_server_dedupes":
        return features is not None and FEATURE_IDEMPOTENCY in features
    return call.retry == "always"


def retry_delay(call: Call, attempt: int, max_retries: int, response: httpx.Response | None,
                 features: frozenset[str] | None = None) -> float | None:
    """Seconds to wait before retrying ``call`` (attempt 0 = the first retry), or None when it
    must not be retried. ``response`` None means a connection error; ``features`` are the
    server's (None: not known)."""
    if attempt >= max_retries or not _may_retry(call, features):
        return None
    if response is not None:
        if response.status_code not in _RETRY_STATUSES:
            return None
        retry_after = _parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            return retry_after
    return _backoff(attempt)


def needs_features(call: Call, features: frozenset[str] | None) -> bool:
    """True when a transport error on ``call`` can be retried only once the server's features
    are known (a submit with an Idempotency-Key, to a server not heard from yet)."""
    return call.retry == "if_server_dedupes" and features is None


# --------------------------------------------------------------------------- one call per route


def _path_id(value: str) -> str:
    return quote(value, safe="")


def cancel_after_header(value: float | str) -> str:
    """A ``Cancel-After`` value: a number of seconds as written (``30``, ``2.5``), or a duration
    string passed as given (``"30s"``, ``"5m"``, ``"1h30m"``); the server checks the range
    (1 s to 24 h) and answers 422 outside it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"cancel_after must be seconds or a duration string like '5m', not {value!r}")
    return value if isinstance(value, str) else f"{value:g}"


def submit_call(model_id: str, input: dict[str, Any], idempotency_key: str | None,
                 webhook: str | None = None, *, cancel_after: float | str | None = None,
                 wait_s: int | None = None, timeout_s: float | None = None) -> Call:
    """``wait_s``: ask the server to answer with the result when the request ends within that
    many seconds (``Prefer: wait=N``); the call's read timeout then covers the wait."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    if cancel_after is not None:
        headers["Cancel-After"] = cancel_after_header(cancel_after)
    call_timeout = None
    if wait_s:
        headers["Prefer"] = f"wait={wait_s}"
        call_timeout = max(timeout_s or 0.0, wait_s + 15.0)
    params = {"webhook": webhook} if webhook else None
    # Never pay twice: a submit is retried only when it has a key and the server deduplicates by it.
    return Call("POST", f"/v1/models/{quote(model_id, safe='/')}", json=input, headers=headers, params=params,
                 retry="if_server_dedupes" if idempotency_key else "never", timeout_s=call_timeout)


def prefer_wait_s(timeout_s: float | None, features: frozenset[str] | None) -> int | None:
    """The ``Prefer: wait`` seconds of a run's submit: up to 60, within the run's ``timeout_s``,
    where the server offers ``prefer-wait`` or has not said yet (a server that does not know the
    preference ignores it, RFC 7240); None where it does not, or under 1 s of timeout."""
    if features is not None and FEATURE_PREFER_WAIT not in features:
        return None
    wait = PREFER_WAIT_MAX_S if timeout_s is None else min(PREFER_WAIT_MAX_S, int(timeout_s))
    return wait if wait >= 1 else None


def auto_idempotency_key(given: str | None, features: frozenset[str] | None) -> str | None:
    """The caller's key; else, unless the server is known not to honour keys, a fresh one (so
    that a submit cut off by a transport error can be sent again safely)."""
    if given or (features is not None and FEATURE_IDEMPOTENCY not in features):
        return given
    return f"modelapi-python-{uuid.uuid4()}"


def status_call(request_id: str) -> Call:
    return Call("GET", f"/v1/requests/{_path_id(request_id)}/status", request_id=request_id)


def result_call(request_id: str, include_cost: bool, wait_s: float | None = None,
                 timeout_s: float | None = None) -> Call:
    params = {"include_cost": "true"} if include_cost else {}
    call_timeout = None
    if wait_s is not None:
        params["wait"] = f"{wait_s:g}"
        call_timeout = max(timeout_s or 0.0, wait_s + 15.0)  # the server holds the answer wait_s
    return Call("GET", f"/v1/requests/{_path_id(request_id)}/result", params=params or None,
                 request_id=request_id, timeout_s=call_timeout)


def cancel_call(request_id: str, running: bool = False, timeout_s: float | None = None) -> Call:
    # Cancel is idempotent on the server, so it is retried like a read. With ``running`` the
    # server holds the answer while the stop lands (up to CANCEL_WAIT_S).
    if not running:
        return Call("POST", f"/v1/requests/{_path_id(request_id)}/cancel", request_id=request_id)
    return Call("POST", f"/v1/requests/{_path_id(request_id)}/cancel", params={"running": "true"},
                 request_id=request_id, timeout_s=max(timeout_s or 0.0, CANCEL_WAIT_S + 15.0))


def delete_call(request_id: str) -> Call:
    # Deleting is idempotent on the server (the same deleted_at), so it is retried like a read.
    return Call("DELETE", f"/v1/requests/{_path_id(request_id)}", request_id=request_id)


def models_call() -> Call:
    return Call("GET", "/v1/models")


def schema_call(model_id: str) -> Call:
    return Call("GET", f"/v1/models/{quote(model_id, safe='/')}/schema")


def webhook_secret_call() -> Call:
    return Call("GET", "/v1/webhooks/default/secret")


MAX_PAGE_SIZE = 100


class Listing:
    """Paging through ``GET /v1/requests`` (no IO): :meth:`next_call` is the next page's call,
    or None when done; :meth:`page` turns its answer into summaries and moves the cursor.
    ``limit``: at most this many in all (None: all). Raises ValueError for a ``page_size``
    outside 1-100 (the route's ``limit`` bounds)."""

    def __init__(self, status: Status | str | None, model: str | None, limit: int | None, page_size: int,
                 cursor: str | None) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        self.status = status.value if isinstance(status, Status) else status
        self.model, self.remaining, self.page_size, self.cursor = model, limit, page_size, cursor
        self.done = False

    def _size(self) -> int:
        return self.page_size if self.remaining is None else min(self.page_size, self.remaining)

    def next_call(self) -> Call | None:
        if self.done or (self.remaining is not None and self.remaining <= 0):
            return None
        params = {"limit": str(self._size())}
        for name, value in (("status", self.status), ("model", self.model), ("cursor", self.cursor)):
            if value:
                params[name] = value
        return Call("GET", "/v1/requests", params=params)

    def page(self, body: Any) -> list[RequestSummary]:
        """One listing answer (``{"requests": [...], "next_cursor"}``) -> its summaries."""
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise errors.ModelAPIError(f"the listing answer has no requests list: {body!r:.200}")
        items = [item for item in body["requests"] if isinstance(item, dict)][:self._size()]
        cursor = body.get("next_cursor")
        self.cursor = str(cursor) if cursor else None
        if self.remaining is not None:
            self.remaining -= len(items)
        self.done = not self.cursor or not items
        return [parse_summary(item) for item in items]


def download_call(url: str, base_url: str) -> Call:
    # Presigned object-store URLs must not receive our key; our own signed URLs don't need it.
    return Call("GET", url, auth=_same_origin(url, base_url), follow_redirects=True)


# --------------------------------------------------------------------------- waiting


class Deadline:
    """A client-side deadline (``timeout_s`` None: none)."""

    def __init__(self, request_id: str, timeout_s: float | None, clock: Callable[[], float]) -> None:
        self.request_id = request_id
        self.timeout_s = timeout_s
        self.clock = clock
        self.at = None if timeout_s is None else clock() + timeout_s

    def remaining(self) -> float | None:
        """Seconds left (may be <= 0), or None without a deadline."""
        return None if self.at is None else self.at - self.clock()

    def check(self) -> None:
        """Raise RequestTimeout once the deadline has passed."""
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise errors.RequestTimeout(
                f"request {self.request_id} did not finish within {self.timeout_s} s "
                "(it may still run: cancel it or watch it later)")

    def cap(self, delay: float) -> float:
        """``delay`` cut to the time left; raises RequestTimeout when none is left."""
        self.check()
        remaining = self.remaining()
        return delay if remaining is None else min(delay, remaining)


class Poll:
    """Poll timing shared by sync and async: interval x1.5 up to a cap, a client-side deadline."""

    def __init__(self, request_id: str, poll_interval_s: float, max_interval_s: float,
                 timeout_s: float | None, clock: Callable[[], float]) -> None:
        self.interval = poll_interval_s
        self.max_interval = max_interval_s
        self.deadline = Deadline(request_id, timeout_s, clock)

    def next_sleep(self, retry_after_s: float | None = None) -> float:
        """Seconds to wait before the next poll; raises RequestTimeout once the deadline passed."""
        delay = max(self.interval, retry_after_s or 0.0)
        self.interval = min(self.max_interval, self.interval * 1.5)
        return self.deadline.cap(delay)


def needs_result(update: StatusUpdate) -> bool:
    """A terminal update parsed from a status body: its output or error is on the result route."""
    return isinstance(update, (Completed, Failed)) and update.result is None


class StreamState:
    """The status stream of one request across reconnects: the last event id (sent back as
    ``Last-Event-ID``), consecutive failures (at most ``max_retries`` reconnects without a new
    event, with jittered backoff, then APIConnectionError), repeats skipped, the deadline."""

    def __init__(self, request_id: str, *, max_retries: int, read_timeout_s: float, deadline: Deadline) -> None:
        self.request_id = request_id
        self.max_retries = max_retries
        self.read_timeout_s = max(read_timeout_s, STREAM_MIN_READ_TIMEOUT_S)
        self.deadline = deadline
        self.last_event_id: str | None = None
        self.failures = 0
        self.last: StatusUpdate | None = None

    def call(self) -> Call:
        """The next connection's call (with ``Last-Event-ID`` once an event was seen)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        read = self.deadline.cap(self.read_timeout_s)
        return Call("GET", f"/v1/requests/{_path_id(self.request_id)}/status/stream", headers=headers,
                     request_id=self.request_id, retry="never", timeout_s=max(read, 0.001))

    def check_open(self, response: httpx.Response) -> float | None:
        """A just-opened stream's response (an error's body read): None when it is an event
        stream; the seconds to wait before reconnecting on 429/502/503/504; raises the
        APIStatusError of other errors (401, 403, 404...), or ModelAPIError for a 2xx that is
        not ``text/event-stream``."""
        if response.is_success:
            content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if content_type != "text/event-stream":
                raise errors.ModelAPIError(
                    f"{response.request.url} answered {content_type or 'no content type'}, not an event stream")
            return None
        if response.status_code not in _RETRY_STATUSES:
            raise error_from_response(response, self.request_id)
        return self.dropped(None, response)

    def event(self, sse: ServerSentEvent) -> StatusUpdate | None:
        """One server-sent event -> the new typed update, or None (a keep-alive, another event
        type, or a repeat)."""
        if sse.event != "status" or not sse.data:
            return None
        try:
            body = json.loads(sse.data)
        except ValueError as exc:
            raise errors.ModelAPIError(f"the status stream of {self.request_id} sent a bad event: {sse.data!r:.200}") from exc
        if sse.id:
            self.last_event_id = sse.id
        self.failures = 0
        update = parse_status(body if isinstance(body, dict) else {})
        if update == self.last:
            return None
        self.last = update
        return update

    def dropped(self, exc: Exception | None, response: httpx.Response | None = None) -> float:
        """The connection broke (``exc``: the transport error; None: the server ended the
        stream before the terminal event, or answered ``response`` 429/5xx): seconds to wait
        before reconnecting. Raises APIConnectionError after ``max_retries`` failures in a row,
        RequestTimeout once the deadline passed."""
        self.deadline.check()
        self.failures += 1
        if self.failures > self.max_retries:
            if response is not None:
                raise error_from_response(response, self.request_id)
            why = f"{type(exc).__name__}: {exc}" if exc is not None else "the server ended it before the last status"
            raise errors.APIConnectionError(
                f"the status stream of {self.request_id} dropped {self.failures} times in a row ({why})") from exc
        retry_after = _parse_retry_after(response.headers.get("retry-after")) if response is not None else None
        return self.deadline.cap(retry_after if retry_after is not None else _backoff(self.failures - 1))


def run_outcome(update: StatusUpdate) -> Result:
    """The terminal update of run() -> its result, or the matching exception."""
    if isinstance(update, Completed):
        return parse_result(update.result if update.result is not None else {
            "request_id": update.request_id, "status": "completed", "output": update.output})
    if isinstance(update, Failed):
        raise errors.RequestFailed(update.request_id, update.error)
    raise errors.RequestCancelled(update.request_id)
