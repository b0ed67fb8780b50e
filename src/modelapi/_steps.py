"""Every operation of the SDK written once, for :class:`~modelapi.client.Client` and
:class:`~modelapi.client.AsyncClient` both, without IO.

An operation is a generator of *effects*: it yields what it needs done (a :class:`Call` to
send, a :class:`Sleep`, a status stream to :class:`Open`, its :class:`NextEvent`, a
:class:`Close`, a :class:`Notify` of the caller's ``on_update``, an :class:`Emit` of one item
to the caller) and is sent the answer, or has the effect's exception thrown in, where it
decides as it would around a direct call (retry, reconnect, raise). :mod:`modelapi.client` is
two thin shells that perform the effects, one blocking and one awaited; the retries, polling,
reconnects and deadlines live here, once.

Time: deadlines and poll intervals read :data:`monotonic`, the shells wait with :data:`sleep`
and :data:`async_sleep`; each is looked up at every use, so that a test can put a fake clock
in their place (``monkeypatch.setattr(modelapi._steps, "sleep", fake.sleep)``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from modelapi import errors
from modelapi._calls import (
    FEATURE_STREAM,
    Call,
    Deadline,
    Listing,
    Poll,
    StreamState,
    auto_idempotency_key,
    cancel_call,
    delete_call,
    connection_error,
    download_call,
    error_from_response,
    features_of,
    models_call,
    needs_features,
    prefer_wait_s,
    needs_result,
    resolve_api_key,
    resolve_base_url,
    result_call,
    retry_delay,
    run_outcome,
    schema_call,
    status_call,
    submit_call,
    webhook_secret_call,
)
from modelapi._files import (
    FileMode,
    download_name,
    effective_mode,
    local_images,
    output_urls,
    upload_call,
    upload_call_for,
    with_replacements,
    write,
)
from modelapi._models import (
    RequestHandle,
    RequestSummary,
    Result,
    StatusUpdate,
    parse_handle,
    parse_result,
    parse_status,
)
from modelapi.types import Status

monotonic: Callable[[], float] = time.monotonic
"""The clock of deadlines and poll intervals."""
sleep: Callable[[float], None] = time.sleep
"""How :class:`~modelapi.client.Client` waits."""
async_sleep: Callable[[float], Any] = asyncio.sleep
"""How :class:`~modelapi.client.AsyncClient` waits."""


def now() -> float:
    return monotonic()


T = TypeVar("T")


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds``; answered with None."""

    seconds: float


@dataclass(frozen=True)
class Open:
    """Open ``call`` as a status stream (an error answer's body read); answered with the
    :class:`Stream`."""

    call: Call


@dataclass
class Stream:
    """An open status stream: the response and its server-sent events (a sync or async
    iterator, as the shell made it)."""

    response: httpx.Response
    events: Any


@dataclass(frozen=True)
class NextEvent:
    """The stream's next server-sent event; answered with it, or None at the stream's end."""

    stream: Stream


@dataclass(frozen=True)
class Close:
    """Close the stream (a shell also closes every stream still open when an operation ends)."""

    stream: Stream


@dataclass(frozen=True)
class Notify:
    """Call ``callback(value)`` (the async shell awaits what it returns, when awaitable)."""

    callback: Callable[[Any], Any] | None
    value: Any


@dataclass(frozen=True)
class Emit:
    """One item for the caller of an iterating operation (``watch``, ``list_requests``)."""

    value: Any


Effect = Call | Sleep | Open | NextEvent | Close | Notify | Emit
Steps = Generator[Effect, Any, T]
"""An operation: yields effects, is sent their answers, returns its value."""


def returning(steps: Steps[T]) -> Steps[None]:
    """``steps`` with its return value emitted last (how a shell gets it from an iterator)."""
    value = yield from steps
    yield Emit(value)


class ClientCore:
    """What :class:`~modelapi.client.Client` and :class:`~modelapi.client.AsyncClient` share:
    configuration, the server's features, and every operation as steps."""

    _http: httpx.Client | httpx.AsyncClient

    def __init__(self, base_url: str | None, api_key: str | None, *, timeout_s: float, max_retries: int,
                 max_upload_bytes: int) -> None:
        self.base_url = resolve_base_url(base_url)
        self._api_key = resolve_api_key(api_key, self.base_url)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_upload_bytes = max_upload_bytes
        self._features: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _request(self, call: Call) -> httpx.Request:
        headers = dict(call.headers)
        if call.auth:
            headers["Authorization"] = f"Bearer {self._api_key}"
        timeout = httpx.USE_CLIENT_DEFAULT if call.timeout_s is None else httpx.Timeout(self.timeout_s, read=call.timeout_s)
        return self._http.build_request(call.method, call.url, json=call.json, params=call.params,
                                        files=call.files, headers=headers, timeout=timeout)

    def _note(self, response: httpx.Response) -> None:
        self._features = features_of(response, self.base_url, self._features)

    # -- sending, with retries

    def _send(self, call: Call) -> Steps[httpx.Response]:
        attempt = 0
        while True:
            try:
                response = yield call
            except httpx.TransportError as exc:
                if needs_features(call, self._features):
                    yield from self._learn_features()
                delay = retry_delay(call, attempt, self.max_retries, None, self._features)
                if delay is None:
                    raise connection_error(self.base_url, exc) from exc
            else:
                self._note(response)
                if response.is_success:
                    return response
                delay = retry_delay(call, attempt, self.max_retries, response, self._features)
                if delay is None:
                    raise error_from_response(response, call.request_id)
            yield Sleep(delay)
            attempt += 1

    def _json(self, call: Call) -> Steps[Any]:
        response = yield from self._send(call)
        return response.json()

    def _learn_features(self) -> Steps[None]:
        try:
            yield from self._send(models_call())
        except errors.ModelAPIError:
            pass  # an error answer of the server still told its features (when it has any)

    # -- the API, one call each

    def _features_steps(self) -> Steps[frozenset[str]]:
        if self._features is None:
            yield from self._learn_features()
        return self._features or frozenset()

    def _submit_steps(self, model_id: str, input: dict[str, Any], idempotency_key: str | None,
                      webhook: str | None, cancel_after: float | str | None = None) -> Steps[RequestHandle]:
        key = auto_idempotency_key(idempotency_key, self._features)
        return parse_handle((yield from self._json(submit_call(model_id, input, key, webhook, cancel_after=cancel_after))),
                            self.base_url)

    def _status_steps(self, request_id: str) -> Steps[StatusUpdate]:
        return parse_status((yield from self._json(status_call(request_id))))

    def _result_body(self, request_id: str, include_cost: bool = False, wait_s: float | None = None) -> Steps[dict[str, Any]]:
        return (yield from self._json(result_call(request_id, include_cost, wait_s, self.timeout_s)))

    def _result_steps(self, request_id: str, include_cost: bool, wait_s: float | None) -> Steps[Result]:
        return parse_result((yield from self._result_body(request_id, include_cost, wait_s)))

    def _cancel_steps(self, request_id: str, running: bool = False) -> Steps[dict[str, Any]]:
        return (yield from self._json(cancel_call(request_id, running, self.timeout_s)))

    def _delete_steps(self, request_id: str) -> Steps[dict[str, Any]]:
        return (yield from self._json(delete_call(request_id)))

    def _models_steps(self) -> Steps[list[dict[str, Any]]]:
        return (yield from self._json(models_call()))["models"]

    def _schema_steps(self, model_id: str) -> Steps[dict[str, Any]]:
        return (yield from self._json(schema_call(model_id)))

    def _webhook_secret_steps(self) -> Steps[str]:
        return str((yield from self._json(webhook_secret_call()))["key"])

    def _list_steps(self, status: Status | str | None, model: str | None, limit: int | None, page_size: int,
                    cursor: str | None) -> Steps[None]:
        listing = Listing(status, model, limit, page_size, cursor)
        while (call := listing.next_call()) is not None:
            summaries: list[RequestSummary] = listing.page((yield from self._json(call)))
            for summary in summaries:
                yield Emit(summary)

    def _upload_steps(self, path: str | os.PathLike[str]) -> Steps[str]:
        return (yield from self._json(upload_call_for(path)))["url"]

    # -- waiting for a request: each reports every new update with ``report`` and returns the last

    def _watch_steps(self, request_id: str, timeout_s: float | None, poll_interval_s: float, max_interval_s: float,
                     report: Callable[[StatusUpdate], Effect] = Emit) -> Steps[StatusUpdate]:
        if FEATURE_STREAM in (yield from self._features_steps()):
            return (yield from self._stream_steps(request_id, timeout_s, report))
        return (yield from self._poll_steps(request_id, poll_interval_s, max_interval_s, timeout_s, report))

    def _poll_steps(self, request_id: str, poll_interval_s: float, max_interval_s: float, timeout_s: float | None,
                    report: Callable[[StatusUpdate], Effect]) -> Steps[StatusUpdate]:
        poll = Poll(request_id, poll_interval_s, max_interval_s, timeout_s, now)
        last: StatusUpdate | None = None
        while True:
            retry_after = None
            update: StatusUpdate | None
            try:
                update = yield from self._status_steps(request_id)
                if update.is_terminal:
                    update = parse_status((yield from self._result_body(request_id)))
            except errors.RateLimitError as exc:  # retries spent: slow the polling down instead
                retry_after, update = exc.retry_after_s, last
            if update is not None and update != last:
                yield report(update)
                last = update
            if update is not None and update.is_terminal:
                return update
            yield Sleep(poll.next_sleep(retry_after))

    def _stream_steps(self, request_id: str, timeout_s: float | None,
                      report: Callable[[StatusUpdate], Effect]) -> Steps[StatusUpdate]:
        state = StreamState(request_id, max_retries=self.max_retries, read_timeout_s=self.timeout_s,
                            deadline=Deadline(request_id, timeout_s, now))
        while True:
            try:
                stream = yield Open(state.call())
            except httpx.TransportError as exc:
                delay = state.dropped(exc)
            else:
                try:
                    last, delay = yield from self._read_stream(stream, state, report)
                except httpx.TransportError as exc:
                    last, delay = None, state.dropped(exc)
                yield Close(stream)  # left open only when an error ends it all: the shell closes it then
                if last is not None:
                    return last
            yield Sleep(delay)

    def _read_stream(self, stream: Stream, state: StreamState,
                     report: Callable[[StatusUpdate], Effect]) -> Steps[tuple[StatusUpdate | None, float]]:
        """One connection of the status stream: (the terminal update, 0) when it came, else
        (None, seconds to wait before reconnecting)."""
        self._note(stream.response)
        opened = state.check_open(stream.response)
        if opened is not None:
            return None, opened
        while (sse := (yield NextEvent(stream))) is not None:
            update = state.event(sse)
            if update is not None and update.is_terminal:
                if needs_result(update):
                    update = parse_status((yield from self._result_body(state.request_id)))
                yield report(update)
                return update, 0.0
            if update is not None:
                yield report(update)
            state.deadline.check()
        ended = yield from self._status_steps(state.request_id)  # closed before the terminal event: ended meanwhile?
        if ended.is_terminal:
            update = parse_status((yield from self._result_body(state.request_id)))
            yield report(update)
            return update, 0.0
        return None, state.dropped(None)

    def _run_steps(self, model_id: str, input: dict[str, Any], timeout_s: float | None, idempotency_key: str | None,
                   webhook: str | None, on_update: Callable[[StatusUpdate], Any] | None,
                   cancel_after: float | str | None = None) -> Steps[Result]:
        """Submit (with ``Prefer: wait`` where the server offers it and no ``on_update`` asks for
        progress: a request that ends within the wait costs one call), then watch what is left."""
        started = now()
        wait_s = None if on_update is not None else prefer_wait_s(timeout_s, self._features)
        key = auto_idempotency_key(idempotency_key, self._features)
        body = yield from self._json(submit_call(model_id, input, key, webhook, cancel_after=cancel_after,
                                                 wait_s=wait_s, timeout_s=self.timeout_s))
        if wait_s and isinstance(body, dict) and (update := parse_status(body)).is_terminal:
            return run_outcome(update)  # the result body itself
        handle = parse_handle(body, self.base_url)
        left = None if timeout_s is None else max(timeout_s - (now() - started), 0.0)
        last = yield from self._watch_steps(handle.request_id, left, 0.5, 5.0,
                                            lambda update: Notify(on_update, update))
        return run_outcome(last)

    # -- files

    def _download_steps(self, result: Mapping[str, Any], dir: str | os.PathLike[str]) -> Steps[list[Path]]:
        paths = []
        for index, url in enumerate(output_urls(result)):
            response = yield from self._send(download_call(url, self.base_url))
            name = download_name(result["request_id"], index, response.headers.get("content-type"), url)
            paths.append(write(Path(dir), name, response.content))
        return paths

    def _resolve_files_steps(self, input: dict[str, Any], schema: dict[str, Any] | None,
                             mode: FileMode) -> Steps[dict[str, Any]]:
        effective: Literal["upload", "data_uri"] = effective_mode(mode, self.base_url)
        images = local_images(input, schema, self.max_upload_bytes)
        if effective == "data_uri":
            return with_replacements(input, [(img.loc, img.data_uri()) for img in images])
        replacements = []
        for img in images:
            answer = yield from self._json(upload_call(img.path.name, img.content, img.content_type))
            replacements.append((img.loc, answer["url"]))
        return with_replacements(input, replacements)
