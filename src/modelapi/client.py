"""Python SDK for the Model API: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio),
both over httpx. The same code works against the hosted service
(``https://model-api.runcomfy.net``) and against a self-hosted ``modelapi serve``.

Example::

    from modelapi import Client
    client = Client(base_url="http://127.0.0.1:8000")
    result = client.run("bytedance/seedream-4-0/sequential", {"text": "Generate 3 images of a red fox"})
    result.images, result.seed   # typed (a Result); result["output"] reads the body as sent
    client.download(result, "out/")

Step by step (what :meth:`Client.run` does for you)::

    handle = client.submit("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images of a cat"})
    for update in client.watch(handle.request_id):
        print(update)            # Queued(position=0) -> InProgress(progress=0.5) -> Completed(output={...})
    result = client.result(handle.request_id)

Push or poll: our server says what it offers beyond the hosted contract in a
``Modelapi-Features`` response header (``status-stream, long-poll, webhooks,
idempotency-key, prefer-wait, cancel-after, cancel-running``); the hosted service sends none. :meth:`Client.watch` and :meth:`Client.run`
read the status stream (server-sent events, resumed with ``Last-Event-ID`` after a dropped
connection) where the server has one, and poll ``/status`` otherwise.

Configuration:

* ``base_url``: the argument, else ``$MODELAPI_BASE_URL``, else ``https://model-api.runcomfy.net``;
  a trailing ``/v1`` is dropped (routes carry their own).
* API key: the argument, else ``$MODELAPI_API_KEY``, else -- only when ``base_url`` is a loopback
  address (127.0.0.1, localhost, [::1]) -- the local server's ``<data dir>/initial_api_key`` file
  (see :func:`modelapi.types.default_data_dir`); else :class:`~modelapi.errors.AuthenticationError`.

Retries (jittered exponential backoff, 0.5 s base, 8 s cap, ``max_retries`` retries, a
``Retry-After`` header always wins): reads (GET), cancel and delete on HTTP 429/502/503/504 and on
connection errors. A submit is retried only against a server that advertises
``idempotency-key`` and only with an ``Idempotency-Key`` (the caller's, else one the SDK
generates), so that it is never run twice. Uploads are not retried. Once retries are spent, HTTP
errors raise the :class:`~modelapi.errors.APIStatusError` subclass of their status and
connection errors raise :class:`~modelapi.errors.APIConnectionError` (its ``__cause__`` is the
``httpx.TransportError``).

Local files as inputs: see :meth:`Client.resolve_files`. Webhook deliveries: see
:func:`modelapi.webhooks.verify`.

Both clients perform the same operations, written once in :mod:`modelapi._steps` (no IO); this
module is the two thin shells that send, wait and read streams, blocking or awaited.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource

from modelapi import _steps
from modelapi._calls import DEFAULT_BASE_URL, FEATURES_HEADER, MAX_PAGE_SIZE, Call
from modelapi.types import is_loopback_host
from modelapi._files import DEFAULT_MAX_UPLOAD_BYTES, FileMode
from modelapi._models import (
    Cancelled,
    Completed,
    Failed,
    InProgress,
    Queued,
    RequestHandle,
    RequestSummary,
    Result,
    StatusUpdate,
    Unknown,
    parse_handle,
    parse_result,
    parse_status,
    parse_summary,
)
from modelapi._steps import ClientCore, Close, Emit, NextEvent, Notify, Open, Sleep, Steps, Stream, returning
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
    "Result",
    "StatusUpdate",
    "Unknown",
    "is_loopback_host",
    "parse_handle",
    "parse_result",
    "parse_status",
    "parse_summary",
]

T = TypeVar("T")


class Client(ClientCore):
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
        event_hooks: dict[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s=timeout_s, max_retries=max_retries,
                         max_upload_bytes=max_upload_bytes)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                  headers={"User-Agent": "modelapi-python"}, event_hooks=event_hooks)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- performing the steps (modelapi._steps), blocking

    def _iterate(self, steps: Steps[Any]) -> Iterator[Any]:
        """Perform each effect of ``steps`` and send its answer back (or throw its exception
        in); yield what it emits. Streams still open when it ends are closed."""
        opened: list[Stream] = []
        answer: Any = None
        failed = False
        try:
            while True:
                try:
                    effect = steps.throw(answer) if failed else steps.send(answer)
                except StopIteration:
                    return
                answer, failed = None, False
                if isinstance(effect, Emit):
                    yield effect.value
                    continue
                try:
                    answer = self._perform(effect, opened)
                except Exception as exc:  # the steps decide: retry, reconnect or raise
                    answer, failed = exc, True
        finally:
            steps.close()
            for stream in opened:
                stream.response.close()

    def _perform(self, effect: Any, opened: list[Stream]) -> Any:
        if isinstance(effect, Call):
            return self._http.send(self._request(effect), follow_redirects=effect.follow_redirects)
        if isinstance(effect, Sleep):
            return _steps.sleep(effect.seconds)
        if isinstance(effect, Open):
            response = self._http.send(self._request(effect.call), stream=True)
            opened.append(stream := Stream(response, EventSource(response).iter_sse()))
            if not response.is_success:
                response.read()
            return stream
        if isinstance(effect, NextEvent):
            return next(effect.stream.events, None)
        if isinstance(effect, Close):
            opened.remove(effect.stream)
            return effect.stream.response.close()
        if isinstance(effect, Notify):
            return None if effect.callback is None else effect.callback(effect.value)
        raise TypeError(f"not an effect: {effect!r}")

    def _call(self, steps: Steps[T]) -> T:
        return list(self._iterate(returning(steps)))[-1]

    # -- the API, one call each

    def features(self) -> frozenset[str]:
        """What the server offers beyond the hosted contract, from its ``Modelapi-Features``
        response header: a subset of ``{"status-stream", "long-poll", "webhooks",
        "idempotency-key"}``; empty for the hosted service. Read from any answer already
        received, else learnt with one ``GET /v1/models``. Ours also lists ``prefer-wait``,
        ``cancel-after`` and ``cancel-running``."""
        return self._call(self._features_steps())

    def submit(self, model_id: str, input: dict[str, Any], *, idempotency_key: str | None = None,
               webhook: str | None = None, cancel_after: float | str | None = None) -> RequestHandle:
        """Queue a request; returns at once. ``POST /v1/models/{model_id}``.

        ``idempotency_key``: same key + same body -> the same request. Without one, the SDK sends
        a fresh key to a server that honours keys (or has not said yet), so that a submit cut
        off by a connection error can be retried without running twice; it is retried only
        against a server advertising ``idempotency-key``. ``webhook`` (our server): a URL the
        server POSTs the result body to when the request ends, signed per Standard Webhooks
        (check it with :func:`modelapi.webhooks.verify` and :meth:`webhook_secret`).
        ``cancel_after`` (our server; ``Cancel-After``): seconds (``30``) or a duration string
        (``"5m"``, ``"1h30m"``), 1 s to 24 h from the submit: not started by then, the request
        is cancelled (``error.code: "deadline"``, not billed); still running, it is stopped and
        failed (``deadline_exceeded``).
        Raises ValidationError (422, ``detail`` lists the problems; also a ``cancel_after`` out
        of range), NotFoundError (unknown model), APIConnectionError.
        """
        return self._call(self._submit_steps(model_id, input, idempotency_key, webhook, cancel_after))

    def status(self, request_id: str) -> StatusUpdate:
        """The request's current status, typed. ``GET /v1/requests/{id}/status``."""
        return self._call(self._status_steps(request_id))

    def result(self, request_id: str, *, include_cost: bool = False, wait_s: float | None = None) -> Result:
        """The result, typed (:class:`Result`: ``images``, ``seed``, ``metadata``, ``cost``,
        ``error``...; it also reads as the body sent): ``output`` when completed, ``error`` when
        failed, else only the status. ``include_cost`` adds ``cost``. ``wait_s`` (our server,
        0-60 seconds): answer as soon as the request ends, or after ``wait_s`` with the status
        (long-poll; outside 0-60 is a ValidationError). ``GET /v1/requests/{id}/result``."""
        return self._call(self._result_steps(request_id, include_cost, wait_s))

    def cancel(self, request_id: str, *, running: bool = False) -> dict[str, Any]:
        """Cancel a queued request: ``{"request_id", "status", "outcome": "cancelled" |
        "not_cancellable"}``. Idempotent. ``running=True`` (our server, ``cancel-running``): also
        stop a running one at its next step; it ends ``cancelled`` keeping the images already
        stored (its result's ``output.images``, billed per image); the server answers once it
        has stopped, or after 10 s with ``"outcome": "stopping"``."""
        return self._call(self._cancel_steps(request_id, running))

    def delete(self, request_id: str) -> dict[str, Any]:
        """Delete a request's outputs and inputs on the server now (a queued request is
        cancelled first); its status stays. Returns the status body plus ``deleted_at`` (ISO
        8601 UTC). Idempotent: deleting again returns the same ``deleted_at``.

        Raises:
            ConflictError: the request is running (delete it once it has finished).
            NotFoundError: unknown request, or another key's.
        """
        return self._call(self._delete_steps(request_id))

    def models(self) -> list[dict[str, Any]]:
        """The catalogue (``GET /v1/models`` -> ``models``)."""
        return self._call(self._models_steps())

    def model_schema(self, model_id: str) -> dict[str, Any]:
        """``{"input_schema", "output_schema", ...}`` of one model."""
        return self._call(self._schema_steps(model_id))

    def webhook_secret(self) -> str:
        """The signing secret of this key's webhook deliveries (``whsec_...``), for
        :func:`modelapi.webhooks.verify`. ``GET /v1/webhooks/default/secret`` (our server)."""
        return self._call(self._webhook_secret_steps())

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
        return self._iterate(self._list_steps(status, model, limit, page_size, cursor))

    def upload(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file to this server (``POST /v1/files``, not retried); returns its URL,
        usable as an image input. The hosted service has no upload route: use data URIs there."""
        return self._call(self._upload_steps(path))

    # -- waiting for a request

    def watch(self, request_id: str, *, timeout_s: float | None = None, poll_interval_s: float = 0.5,
              max_interval_s: float = 5.0) -> Iterator[StatusUpdate]:
        """Yield each new status until the request is terminal; the last one has ``output`` /
        ``error`` filled (fetched from the result route). The same code works against our
        server and the hosted service.

        Where the server advertises ``status-stream`` (ours), it reads the status stream
        (``GET /v1/requests/{id}/status/stream``, server-sent events): Queued updates carry the
        moving ``position``, InProgress the growing ``progress`` (and ``partial_output`` when
        the server publishes images early). A dropped connection is resumed with
        ``Last-Event-ID`` (nothing repeats) after a jittered backoff; ``max_retries`` reconnects
        in a row without a new event raise APIConnectionError. A stream the server ends before
        the terminal event is checked with one ``/status`` call before reconnecting.

        Elsewhere it polls ``/status``, skipping repeats: the interval starts at
        ``poll_interval_s`` and grows x1.5 per poll up to ``max_interval_s``; a 429 waits its
        ``Retry-After``.

        ``timeout_s`` (seconds, None = no deadline) raises RequestTimeout (a ``TimeoutError``);
        the request itself is left running. Raises NotFoundError / AuthenticationError as
        ``status`` does. Stopping early (``break``, or ``contextlib.closing``) closes the stream.
        """
        return self._iterate(self._watch_steps(request_id, timeout_s, poll_interval_s, max_interval_s))

    def run(self, model_id: str, input: dict[str, Any], *, timeout_s: float | None = 600,
            idempotency_key: str | None = None, webhook: str | None = None,
            on_update: Callable[[StatusUpdate], Any] | None = None, cancel_after: float | str | None = None) -> Result:
        """Submit, wait (the status stream where the server has one, else polling: see
        :meth:`watch`), and return the completed :class:`Result` (``images``, ``seed``,
        ``metadata``...; it also reads as the result body, ``{"request_id", "status":
        "completed", "output": {"images": [...]}, ...}``).

        ``timeout_s`` (seconds; None = wait forever): client-side deadline -> RequestTimeout.
        ``on_update`` is called with every new StatusUpdate. ``idempotency_key``, ``webhook``
        and ``cancel_after``: see :meth:`submit`. Without ``on_update``, the submit asks the
        server to wait for the result (``Prefer: wait``, up to 60 s and ``timeout_s``) where it
        offers that (``prefer-wait``) or has not said yet: a request that ends within the wait
        costs one call; one that does not is then watched. Raises RequestFailed (``.error``),
        RequestCancelled, or the APIStatusError of a refused submit.

        Example::

            result = client.run("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images of a cat"},
                                on_update=print)
        """
        return self._call(self._run_steps(model_id, input, timeout_s, idempotency_key, webhook, on_update, cancel_after))

    # -- files

    def download(self, result: Mapping[str, Any], dir: str | os.PathLike[str]) -> list[Path]:
        """Save every output image of a completed ``result`` (a :class:`Result`, or a result
        body as a dict, e.g. a webhook's) into ``dir`` (created if needed) as
        ``<request_id>_<i>.<ext>`` (i from 0; ext from Content-Type: .png/.jpg/.webp, else the
        URL's suffix). Our key is sent only to URLs on base_url's own origin, never to presigned
        object-store URLs. Returns the paths in output order."""
        return self._call(self._download_steps(result, dir))

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
        return self._call(self._resolve_files_steps(input, schema, mode))


class AsyncClient(ClientCore):
    """asyncio client for the Model API: the same methods as :class:`Client`, awaited
    (``watch`` and ``list_requests`` are async iterators). ``transport`` is an
    ``httpx.AsyncBaseTransport``.

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
        event_hooks: dict[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s=timeout_s, max_retries=max_retries,
                         max_upload_bytes=max_upload_bytes)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                       headers={"User-Agent": "modelapi-python"}, event_hooks=event_hooks)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- performing the steps (modelapi._steps), awaited: as Client's, with await

    async def _iterate(self, steps: Steps[Any]) -> AsyncIterator[Any]:
        """See :meth:`Client._iterate`."""
        opened: list[Stream] = []
        answer: Any = None
        failed = False
        try:
            while True:
                try:
                    effect = steps.throw(answer) if failed else steps.send(answer)
                except StopIteration:
                    return
                answer, failed = None, False
                if isinstance(effect, Emit):
                    yield effect.value
                    continue
                try:
                    answer = await self._perform(effect, opened)
                except Exception as exc:  # the steps decide: retry, reconnect or raise
                    answer, failed = exc, True
        finally:
            steps.close()
            for stream in opened:
                await stream.response.aclose()

    async def _perform(self, effect: Any, opened: list[Stream]) -> Any:
        if isinstance(effect, Call):
            return await self._http.send(self._request(effect), follow_redirects=effect.follow_redirects)
        if isinstance(effect, Sleep):
            return await _steps.async_sleep(effect.seconds)
        if isinstance(effect, Open):
            response = await self._http.send(self._request(effect.call), stream=True)
            opened.append(stream := Stream(response, EventSource(response).aiter_sse()))
            if not response.is_success:
                await response.aread()
            return stream
        if isinstance(effect, NextEvent):
            return await anext(effect.stream.events, None)
        if isinstance(effect, Close):
            opened.remove(effect.stream)
            return await effect.stream.response.aclose()
        if isinstance(effect, Notify):
            if effect.callback is not None and inspect.isawaitable(awaited := effect.callback(effect.value)):
                await awaited
            return None
        raise TypeError(f"not an effect: {effect!r}")

    async def _call(self, steps: Steps[T]) -> T:
        return [value async for value in self._iterate(returning(steps))][-1]

    # -- the API: see Client's methods

    async def features(self) -> frozenset[str]:
        """See :meth:`Client.features`."""
        return await self._call(self._features_steps())

    async def submit(self, model_id: str, input: dict[str, Any], *, idempotency_key: str | None = None,
                     webhook: str | None = None, cancel_after: float | str | None = None) -> RequestHandle:
        """See :meth:`Client.submit`."""
        return await self._call(self._submit_steps(model_id, input, idempotency_key, webhook, cancel_after))

    async def status(self, request_id: str) -> StatusUpdate:
        """See :meth:`Client.status`."""
        return await self._call(self._status_steps(request_id))

    async def result(self, request_id: str, *, include_cost: bool = False, wait_s: float | None = None) -> Result:
        """See :meth:`Client.result`."""
        return await self._call(self._result_steps(request_id, include_cost, wait_s))

    async def cancel(self, request_id: str, *, running: bool = False) -> dict[str, Any]:
        """See :meth:`Client.cancel`."""
        return await self._call(self._cancel_steps(request_id, running))

    async def delete(self, request_id: str) -> dict[str, Any]:
        """See :meth:`Client.delete`."""
        return await self._call(self._delete_steps(request_id))

    async def models(self) -> list[dict[str, Any]]:
        """See :meth:`Client.models`."""
        return await self._call(self._models_steps())

    async def model_schema(self, model_id: str) -> dict[str, Any]:
        """See :meth:`Client.model_schema`."""
        return await self._call(self._schema_steps(model_id))

    async def webhook_secret(self) -> str:
        """See :meth:`Client.webhook_secret`."""
        return await self._call(self._webhook_secret_steps())

    def list_requests(self, *, status: Status | str | None = None, model: str | None = None,
                      limit: int | None = None, page_size: int = MAX_PAGE_SIZE,
                      cursor: str | None = None) -> AsyncIterator[RequestSummary]:
        """See :meth:`Client.list_requests`; use with ``async for``."""
        return self._iterate(self._list_steps(status, model, limit, page_size, cursor))

    async def upload(self, path: str | os.PathLike[str]) -> str:
        """See :meth:`Client.upload`."""
        return await self._call(self._upload_steps(path))

    def watch(self, request_id: str, *, timeout_s: float | None = None, poll_interval_s: float = 0.5,
              max_interval_s: float = 5.0) -> AsyncIterator[StatusUpdate]:
        """See :meth:`Client.watch`; use with ``async for`` (``contextlib.aclosing`` closes the
        stream at once when you stop early)."""
        return self._iterate(self._watch_steps(request_id, timeout_s, poll_interval_s, max_interval_s))

    async def run(self, model_id: str, input: dict[str, Any], *, timeout_s: float | None = 600,
                  idempotency_key: str | None = None, webhook: str | None = None,
                  on_update: Callable[[StatusUpdate], Any] | None = None, cancel_after: float | str | None = None) -> Result:
        """See :meth:`Client.run`. ``on_update`` may be a plain function or a coroutine function."""
        return await self._call(self._run_steps(model_id, input, timeout_s, idempotency_key, webhook, on_update,
                                                cancel_after))

    async def download(self, result: Mapping[str, Any], dir: str | os.PathLike[str]) -> list[Path]:
        """See :meth:`Client.download`."""
        return await self._call(self._download_steps(result, dir))

    async def resolve_files(self, input: dict[str, Any], *, schema: dict[str, Any] | None = None,
                            mode: FileMode = "auto") -> dict[str, Any]:
        """See :meth:`Client.resolve_files`."""
        return await self._call(self._resolve_files_steps(input, schema, mode))
