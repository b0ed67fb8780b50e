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
    for update in client.watch(handle.request_id):
        print(update)            # Queued(position=0) -> InProgress(progress=0.5) -> Completed(output={...})
    body = client.result(handle.request_id)

Push or poll: our server says what it offers beyond the hosted contract in a
``Modelapi-Features`` response header (``status-stream, long-poll, webhooks,
idempotency-key``); the hosted service sends none. :meth:`Client.watch` and :meth:`Client.run`
read the status stream (server-sent events, resumed with ``Last-Event-ID`` after a dropped
connection) where the server has one, and poll ``/status`` otherwise.

Configuration:

* ``base_url``: the argument, else ``$MODELAPI_BASE_URL``, else ``https://model-api.runcomfy.net``;
  a trailing ``/v1`` is dropped (routes carry their own).
* API key: the argument, else ``$MODELAPI_API_KEY``, else -- only when ``base_url`` is a loopback
  address (127.0.0.1, localhost, [::1]) -- the local server's ``<data dir>/initial_api_key`` file
  (see :func:`modelapi.types.default_data_dir`); else :class:`~modelapi.errors.AuthenticationError`.

Retries (jittered exponential backoff, 0.5 s base, 8 s cap, ``max_retries`` retries, a
``Retry-After`` header always wins): reads (GET) and cancel on HTTP 429/502/503/504 and on
connection errors. A submit is retried only against a server that advertises
``idempotency-key`` and only with an ``Idempotency-Key`` (the caller's, else one the SDK
generates), so that it is never run twice. Uploads are not retried. Once retries are spent, HTTP
errors raise the :class:`~modelapi.errors.APIStatusError` subclass of their status and
connection errors raise :class:`~modelapi.errors.APIConnectionError` (its ``__cause__`` is the
``httpx.TransportError``).

Local files as inputs: see :meth:`Client.resolve_files`. Webhook deliveries: see
:func:`modelapi.webhooks.verify`.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
from httpx_sse import EventSource

from modelapi import errors
from modelapi._calls import (
    DEFAULT_BASE_URL,
    FEATURE_STREAM,
    FEATURES_HEADER,
    auto_idempotency_key,
    Call,
    cancel_call,
    connection_error,
    Deadline,
    download_call,
    error_from_response,
    features_of,
    Listing,
    MAX_PAGE_SIZE,
    models_call,
    needs_features,
    needs_result,
    Poll,
    resolve_api_key,
    resolve_base_url,
    result_call,
    retry_delay,
    run_outcome,
    schema_call,
    status_call,
    StreamState,
    submit_call,
    webhook_secret_call,
    is_loopback_host,
)
from modelapi._files import (
    DEFAULT_MAX_UPLOAD_BYTES,
    FileMode,
    download_name,
    effective_mode,
    local_images,
    LocalImage,
    output_urls,
    upload_call,
    upload_call_for,
    with_replacements,
    write,
)
from modelapi._models import (
    Cancelled,
    Completed,
    Failed,
    InProgress,
    Queued,
    RequestHandle,
    RequestSummary,
    StatusUpdate,
    Unknown,
    parse_handle,
    parse_status,
    parse_summary,
)
from modelapi.types import Status

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "FEATURES_HEADER",
    "AsyncClient",
    "Cancelled",
    "Client",
    "Completed",
    "Failed",
    "FileMode",
    "InProgress",
    "Queued",
    "RequestHandle",
    "RequestSummary",
    "StatusUpdate",
    "Unknown",
    "is_loopback_host",
    "parse_handle",
    "parse_status",
    "parse_summary",
]

class _BaseClient:
    _http: httpx.Client | httpx.AsyncClient

    def __init__(self, base_url: str | None, api_key: str | None, *, timeout_s: float, max_retries: int,
                 max_upload_bytes: int, clock: Callable[[], float]) -> None:
        self.base_url = resolve_base_url(base_url)
        self._api_key = resolve_api_key(api_key, self.base_url)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_upload_bytes = max_upload_bytes
        self._clock = clock
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

    def _file_mode(self, mode: FileMode) -> Literal["upload", "data_uri"]:
        return effective_mode(mode, self.base_url)

    def _poll(self, request_id: str, poll_interval_s: float, max_interval_s: float,
              timeout_s: float | None) -> Poll:
        return Poll(request_id, poll_interval_s, max_interval_s, timeout_s, self._clock)

    def _stream_state(self, request_id: str, timeout_s: float | None) -> StreamState:
        return StreamState(request_id, max_retries=self.max_retries, read_timeout_s=self.timeout_s,
                            deadline=Deadline(request_id, timeout_s, self._clock))

    def _submit_call(self, model_id: str, input: dict[str, Any], idempotency_key: str | None,
                     webhook: str | None) -> Call:
        return submit_call(model_id, input, auto_idempotency_key(idempotency_key, self._features), webhook)


class Client(_BaseClient):
    """Blocking client for the Model API.

    Args:
        base_url (`str | None`): server root; default ``$MODELAPI_BASE_URL``, else the hosted
            service ``https://model-api.runcomfy.net``. A trailing ``/v1`` is dropped.
        api_key (`str | None`): default ``$MODELAPI_API_KEY``, else (loopback base_url only) the
            local server's ``<data dir>/initial_api_key``. Raises AuthenticationError when none.
        timeout_s (`float`, seconds): per-HTTP-call timeout (not the job's; see ``run``); a
            status stream's read timeout is at least 45 s (keep-alives come every 15 s).
        max_retries (`int`): retries of a retryable call, and reconnects of a status stream in a
            row without a new event (see the module docstring).
        transport (`httpx.BaseTransport | None`): e.g. ``httpx.MockTransport`` in tests.
        max_upload_bytes (`int`, bytes): largest local file ``resolve_files`` sends; 15 MB.
        sleep, clock: ``time.sleep`` / ``time.monotonic`` replacements (tests: a fake clock).
        event_hooks: passed to ``httpx.Client`` (e.g. ``{"request": [log]}``).

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
        event_hooks: dict[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s=timeout_s, max_retries=max_retries,
                         max_upload_bytes=max_upload_bytes, clock=clock)
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                  headers={"User-Agent": "modelapi-python"}, event_hooks=event_hooks)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.send(self._request(call), follow_redirects=call.follow_redirects)
            except httpx.TransportError as exc:
                if needs_features(call, self._features):
                    self._learn_features()
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
            self._sleep(delay)
            attempt += 1

    def _json(self, call: Call) -> Any:
        return self._send(call).json()

    def _learn_features(self) -> None:
        try:
            self._send(models_call())
        except errors.ModelAPIError:
            pass  # an error answer of the server still told its features (when it has any)

    def features(self) -> frozenset[str]:
        """What the server offers beyond the hosted contract, from its ``Modelapi-Features``
        response header: a subset of ``{"status-stream", "long-poll", "webhooks",
        "idempotency-key"}``; empty for the hosted service. Read from any answer already
        received, else learnt with one ``GET /v1/models``."""
        if self._features is None:
            self._learn_features()
        return self._features or frozenset()

    # -- the API, one call each

    def submit(self, model_id: str, input: dict[str, Any], *, idempotency_key: str | None = None,
               webhook: str | None = None) -> RequestHandle:
        """Queue a request; returns at once. ``POST /v1/models/{model_id}``.

        ``idempotency_key``: same key + same body -> the same request. Without one, the SDK sends
        a fresh key to a server that honours keys (or has not said yet), so that a submit cut
        off by a connection error can be retried without running twice; it is retried only
        against a server advertising ``idempotency-key``. ``webhook`` (our server): a URL the
        server POSTs the result body to when the request ends, signed per Standard Webhooks
        (check it with :func:`modelapi.webhooks.verify` and :meth:`webhook_secret`).
        Raises ValidationError (422, ``detail`` lists the problems), NotFoundError (unknown
        model), APIConnectionError.
        """
        return parse_handle(self._json(self._submit_call(model_id, input, idempotency_key, webhook)), self.base_url)

    def status(self, request_id: str) -> StatusUpdate:
        """The request's current status, typed. ``GET /v1/requests/{id}/status``."""
        return parse_status(self._json(status_call(request_id)))

    def result(self, request_id: str, *, include_cost: bool = False, wait_s: float | None = None) -> dict[str, Any]:
        """The raw result body: ``output`` when completed, ``error`` when failed, else the status
        body. ``include_cost`` adds ``"cost"``. ``wait_s`` (our server, 0-60 seconds): answer as
        soon as the request ends, or after ``wait_s`` with the status body (long-poll; outside
        0-60 is a ValidationError). ``GET /v1/requests/{id}/result``."""
        return self._json(result_call(request_id, include_cost, wait_s, self.timeout_s))

    def cancel(self, request_id: str) -> dict[str, Any]:
        """Cancel a queued request: ``{"request_id", "status", "outcome": "cancelled" |
        "not_cancellable"}``. Idempotent."""
        return self._json(cancel_call(request_id))

    def models(self) -> list[dict[str, Any]]:
        """The catalogue (``GET /v1/models`` -> ``models``)."""
        return self._json(models_call())["models"]

    def model_schema(self, model_id: str) -> dict[str, Any]:
        """``{"input_schema", "output_schema", ...}`` of one model."""
        return self._json(schema_call(model_id))

    def webhook_secret(self) -> str:
        """The signing secret of this key's webhook deliveries (``whsec_...``), for
        :func:`modelapi.webhooks.verify`. ``GET /v1/webhooks/default/secret`` (our server)."""
        return str(self._json(webhook_secret_call())["key"])

    def list_requests(self, *, status: Status | str | None = None, model: str | None = None,
                      limit: int | None = None, page_size: int = MAX_PAGE_SIZE,
                      cursor: str | None = None) -> Iterator[RequestSummary]:
        """This key's requests, newest first, across pages (``GET /v1/requests``, our server).

        ``status``: only that status (``"in_queue"``, ``"in_progress"``, ``"completed"``,
        ``"failed"``, ``"cancelled"``). ``model``: only that model id. ``limit``: at most this
        many (None: all). ``page_size`` (1-100): requests per call. ``cursor``: start where an
        earlier listing's ``next_cursor`` left off. Yields :class:`RequestSummary`.

        Example::

            for item in client.list_requests(status="completed", limit=10):
                print(item.request_id, item.model_id, item.finished_at)
        """
        listing = Listing(status, model, limit, page_size, cursor)
        while (call := listing.next_call()) is not None:
            yield from listing.page(self._json(call))

    def _upload_image(self, img: LocalImage) -> str:
        return self._json(upload_call(img.path.name, img.content, img.content_type))["url"]

    def upload(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file to this server (``POST /v1/files``, not retried); returns its URL,
        usable as an image input. The hosted service has no upload route: use data URIs there."""
        return self._json(upload_call_for(path))["url"]

    # -- waiting for a request

    def iter_status(self, request_id: str, *, poll_interval_s: float = 0.5, max_interval_s: float = 5.0,
                    timeout_s: float | None = None) -> Iterator[StatusUpdate]:
        """Poll until the request is terminal, yielding each new status (repeats are skipped).

        The last update is fetched from the result route, so ``Completed.output`` and
        ``Failed.error`` are filled. The interval grows x1.5 per poll up to ``max_interval_s``;
        a 429 waits its ``Retry-After``. ``timeout_s`` (seconds, None = no deadline) raises
        RequestTimeout (a ``TimeoutError``); the request itself is left running.
        """
        poll = self._poll(request_id, poll_interval_s, max_interval_s, timeout_s)
        last: StatusUpdate | None = None
        while True:
            retry_after = None
            update: StatusUpdate | None
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

    def stream(self, request_id: str, *, timeout_s: float | None = None) -> Iterator[StatusUpdate]:
        """Yield each new status from the server's status stream
        (``GET /v1/requests/{id}/status/stream``, server-sent events; our server) until the
        request is terminal.

        Queued updates carry the moving ``position``, InProgress the growing ``progress`` (and
        ``partial_output`` when the server publishes images early). The last update is fetched
        from the result route, so ``Completed.output`` / ``Failed.error`` are filled. A dropped
        connection is resumed with ``Last-Event-ID`` (nothing repeats) after a jittered backoff;
        ``max_retries`` reconnects in a row without a new event raise APIConnectionError. A
        stream the server ends before the terminal event is checked with one ``/status`` call
        (the request may have ended meanwhile) before reconnecting. ``timeout_s`` (seconds,
        None = none): RequestTimeout, checked at each event and keep-alive. Raises
        NotFoundError / AuthenticationError as ``status`` does, and NotFoundError on a server
        without the stream (use :meth:`watch` to work with both).
        """
        state = self._stream_state(request_id, timeout_s)
        while True:
            try:
                response = self._http.send(self._request(state.call()), stream=True)
            except httpx.TransportError as exc:
                delay = state.dropped(exc)
            else:
                try:
                    self._note(response)
                    if not response.is_success:
                        response.read()
                    opened = state.check_open(response)
                    if opened is not None:
                        delay = opened
                    else:
                        for sse in EventSource(response).iter_sse():
                            update = state.event(sse)
                            if update is not None and update.is_terminal:
                                if needs_result(update):
                                    update = parse_status(self.result(request_id))
                                yield update
                                return
                            if update is not None:
                                yield update
                            state.deadline.check()
                        ended = self.status(request_id)  # closed before the terminal event: ended meanwhile?
                        if ended.is_terminal:
                            yield parse_status(self.result(request_id))
                            return
                        delay = state.dropped(None)
                except httpx.TransportError as exc:
                    delay = state.dropped(exc)
                finally:
                    response.close()
            self._sleep(delay)

    def watch(self, request_id: str, *, timeout_s: float | None = None, poll_interval_s: float = 0.5,
              max_interval_s: float = 5.0) -> Iterator[StatusUpdate]:
        """Yield each new status until the request is terminal: from the status stream when the
        server advertises ``status-stream`` (see :meth:`stream`), else by polling (see
        :meth:`iter_status`, whose intervals apply). The same code works against our server and
        the hosted service. The last update has ``output`` / ``error`` filled."""
        if FEATURE_STREAM in self.features():
            yield from self.stream(request_id, timeout_s=timeout_s)
        else:
            yield from self.iter_status(request_id, poll_interval_s=poll_interval_s,
                                        max_interval_s=max_interval_s, timeout_s=timeout_s)

    def run(self, model_id: str, input: dict[str, Any], *, timeout_s: float | None = 600,
            idempotency_key: str | None = None, webhook: str | None = None,
            on_update: Callable[[StatusUpdate], Any] | None = None) -> dict[str, Any]:
        """Submit, wait (the status stream where the server has one, else polling: see
        :meth:`watch`), and return the completed result body
        (``{"request_id", "status": "completed", "output": {"images": [...]}, ...}``).

        ``timeout_s`` (seconds; None = wait forever): client-side deadline -> RequestTimeout.
        ``on_update`` is called with every new StatusUpdate. ``idempotency_key`` and
        ``webhook``: see :meth:`submit`. Raises RequestFailed (``.error``), RequestCancelled, or
        the APIStatusError of a refused submit.

        Example::

            result = client.run("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images of a cat"},
                                on_update=print)
        """
        handle = self.submit(model_id, input, idempotency_key=idempotency_key, webhook=webhook)
        for update in self.watch(handle.request_id, timeout_s=timeout_s):
            if on_update is not None:
                on_update(update)
            if update.is_terminal:
                return run_outcome(update)
        raise AssertionError("unreachable: watch ends on a terminal update")

    # -- files

    def download(self, result: dict[str, Any], dir: str | os.PathLike[str]) -> list[Path]:
        """Save every output image of a completed ``result`` into ``dir`` (created if needed) as
        ``<request_id>_<i>.<ext>`` (i from 0; ext from Content-Type: .png/.jpg/.webp, else the
        URL's suffix). Our key is sent only to URLs on base_url's own origin, never to presigned
        object-store URLs. Returns the paths in output order."""
        paths = []
        for index, url in enumerate(output_urls(result)):
            response = self._send(download_call(url, self.base_url))
            name = download_name(result["request_id"], index, response.headers.get("content-type"), url)
            paths.append(write(Path(dir), name, response.content))
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
        effective = self._file_mode(mode)
        images = local_images(input, schema, self.max_upload_bytes)
        if effective == "data_uri":
            return with_replacements(input, [(img.loc, img.data_uri()) for img in images])
        return with_replacements(input, [(img.loc, self._upload_image(img)) for img in images])


class AsyncClient(_BaseClient):
    """asyncio client for the Model API: the same methods as :class:`Client`, awaited
    (``iter_status``, ``stream``, ``watch`` and ``list_requests`` are async iterators).
    ``transport`` is an ``httpx.AsyncBaseTransport``; ``sleep`` defaults to ``asyncio.sleep``.

    Example::

        async with AsyncClient("http://127.0.0.1:8000") as client:
            handle = await client.submit("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images of a cat"})
            async for update in client.watch(handle.request_id):
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
        event_hooks: dict[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s=timeout_s, max_retries=max_retries,
                         max_upload_bytes=max_upload_bytes, clock=clock)
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                       headers={"User-Agent": "modelapi-python"}, event_hooks=event_hooks)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.send(self._request(call), follow_redirects=call.follow_redirects)
            except httpx.TransportError as exc:
                if needs_features(call, self._features):
                    await self._learn_features()
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
            await self._sleep(delay)
            attempt += 1

    async def _json(self, call: Call) -> Any:
        return (await self._send(call)).json()

    async def _learn_features(self) -> None:
        try:
            await self._send(models_call())
        except errors.ModelAPIError:
            pass

    async def features(self) -> frozenset[str]:
        """See :meth:`Client.features`."""
        if self._features is None:
            await self._learn_features()
        return self._features or frozenset()

    async def submit(self, model_id: str, input: dict[str, Any], *, idempotency_key: str | None = None,
                     webhook: str | None = None) -> RequestHandle:
        """See :meth:`Client.submit`."""
        body = await self._json(self._submit_call(model_id, input, idempotency_key, webhook))
        return parse_handle(body, self.base_url)

    async def status(self, request_id: str) -> StatusUpdate:
        """See :meth:`Client.status`."""
        return parse_status(await self._json(status_call(request_id)))

    async def result(self, request_id: str, *, include_cost: bool = False,
                     wait_s: float | None = None) -> dict[str, Any]:
        """See :meth:`Client.result`."""
        return await self._json(result_call(request_id, include_cost, wait_s, self.timeout_s))

    async def cancel(self, request_id: str) -> dict[str, Any]:
        """See :meth:`Client.cancel`."""
        return await self._json(cancel_call(request_id))

    async def models(self) -> list[dict[str, Any]]:
        """See :meth:`Client.models`."""
        return (await self._json(models_call()))["models"]

    async def model_schema(self, model_id: str) -> dict[str, Any]:
        """See :meth:`Client.model_schema`."""
        return await self._json(schema_call(model_id))

    async def webhook_secret(self) -> str:
        """See :meth:`Client.webhook_secret`."""
        return str((await self._json(webhook_secret_call()))["key"])

    async def list_requests(self, *, status: Status | str | None = None, model: str | None = None,
                            limit: int | None = None, page_size: int = MAX_PAGE_SIZE,
                            cursor: str | None = None) -> AsyncIterator[RequestSummary]:
        """See :meth:`Client.list_requests`; use with ``async for``."""
        listing = Listing(status, model, limit, page_size, cursor)
        while (call := listing.next_call()) is not None:
            for summary in listing.page(await self._json(call)):
                yield summary

    async def _upload_image(self, img: LocalImage) -> str:
        return (await self._json(upload_call(img.path.name, img.content, img.content_type)))["url"]

    async def upload(self, path: str | os.PathLike[str]) -> str:
        """See :meth:`Client.upload`."""
        return (await self._json(upload_call_for(path)))["url"]

    async def iter_status(self, request_id: str, *, poll_interval_s: float = 0.5, max_interval_s: float = 5.0,
                          timeout_s: float | None = None) -> AsyncIterator[StatusUpdate]:
        """See :meth:`Client.iter_status`; use with ``async for``."""
        poll = self._poll(request_id, poll_interval_s, max_interval_s, timeout_s)
        last: StatusUpdate | None = None
        while True:
            retry_after = None
            update: StatusUpdate | None
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

    async def stream(self, request_id: str, *, timeout_s: float | None = None) -> AsyncIterator[StatusUpdate]:
        """See :meth:`Client.stream`; use with ``async for`` (``contextlib.aclosing`` closes the
        connection at once when you stop early)."""
        state = self._stream_state(request_id, timeout_s)
        while True:
            try:
                response = await self._http.send(self._request(state.call()), stream=True)
            except httpx.TransportError as exc:
                delay = state.dropped(exc)
            else:
                try:
                    self._note(response)
                    if not response.is_success:
                        await response.aread()
                    opened = state.check_open(response)
                    if opened is not None:
                        delay = opened
                    else:
                        async for sse in EventSource(response).aiter_sse():
                            update = state.event(sse)
                            if update is not None and update.is_terminal:
                                if needs_result(update):
                                    update = parse_status(await self.result(request_id))
                                yield update
                                return
                            if update is not None:
                                yield update
                            state.deadline.check()
                        ended = await self.status(request_id)
                        if ended.is_terminal:
                            yield parse_status(await self.result(request_id))
                            return
                        delay = state.dropped(None)
                except httpx.TransportError as exc:
                    delay = state.dropped(exc)
                finally:
                    await response.aclose()
            await self._sleep(delay)

    async def watch(self, request_id: str, *, timeout_s: float | None = None, poll_interval_s: float = 0.5,
                    max_interval_s: float = 5.0) -> AsyncIterator[StatusUpdate]:
        """See :meth:`Client.watch`; use with ``async for``."""
        if FEATURE_STREAM in await self.features():
            async for update in self.stream(request_id, timeout_s=timeout_s):
                yield update
        else:
            async for update in self.iter_status(request_id, poll_interval_s=poll_interval_s,
                                                 max_interval_s=max_interval_s, timeout_s=timeout_s):
                yield update

    async def run(self, model_id: str, input: dict[str, Any], *, timeout_s: float | None = 600,
                  idempotency_key: str | None = None, webhook: str | None = None,
                  on_update: Callable[[StatusUpdate], Any] | None = None) -> dict[str, Any]:
        """See :meth:`Client.run`. ``on_update`` may be a plain function or a coroutine function."""
        handle = await self.submit(model_id, input, idempotency_key=idempotency_key, webhook=webhook)
        async for update in self.watch(handle.request_id, timeout_s=timeout_s):
            if on_update is not None and inspect.isawaitable(awaited := on_update(update)):
                await awaited
            if update.is_terminal:
                return run_outcome(update)
        raise AssertionError("unreachable: watch ends on a terminal update")

    async def download(self, result: dict[str, Any], dir: str | os.PathLike[str]) -> list[Path]:
        """See :meth:`Client.download`."""
        paths = []
        for index, url in enumerate(output_urls(result)):
            response = await self._send(download_call(url, self.base_url))
            name = download_name(result["request_id"], index, response.headers.get("content-type"), url)
            paths.append(write(Path(dir), name, response.content))
        return paths

    async def resolve_files(self, input: dict[str, Any], *, schema: dict[str, Any] | None = None,
                            mode: FileMode = "auto") -> dict[str, Any]:
        """See :meth:`Client.resolve_files`."""
        effective = self._file_mode(mode)
        images = local_images(input, schema, self.max_upload_bytes)
        if effective == "data_uri":
            return with_replacements(input, [(img.loc, img.data_uri()) for img in images])
        return with_replacements(input, [(img.loc, await self._upload_image(img)) for img in images])

