"""HTTP routes: parse, authorise, call the service, map errors. Nothing else lives here.

A route either is ``async`` and awaits only non-blocking work (its database and storage calls go
through ``run_in_threadpool``; submit fetches URL inputs on the loop itself, non-blocking), or is
a plain ``def``, which FastAPI runs on its thread pool: the event loop never waits on the
database, the file store or a fetch.

Submit routes are made from the catalogue (one per spec file), so their real input schema shows
in /openapi.json; adding an endpoint adds no route code.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
from pathlib import Path
from collections.abc import AsyncIterator, MutableMapping
from typing import Any, Callable

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route

from .. import catalog, mcp_server
from ..core import db
from ..core import accounts
from ..core.auth import ApiKey, operations_authorized
from ..core.storage import FileStorage, content_type_of
from ..core.sweep import SweepCollector
from ..errors import APIStatusError, AuthenticationError, NotFoundError, RateLimitedError, RateLimitError, ValidationError
from ..types import Status
from ..validation import json_schema
from . import admin, headers, openai_images, schemas
from .schemas import StatusName
from .errors import BadRequest, ServiceUnavailable
from .service import Service
from .watch import Hold, Watcher, event_id


log = logging.getLogger("modelapi.http")
ERROR_MESSAGES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                  405: "Method not allowed", 413: "Request body too large", 422: "Unprocessable input",
                  429: "Too many requests", 500: "Internal server error", 503: "Service unavailable"}


def error_response(status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None,
                   error_code: int | None = None) -> JSONResponse:
    """The contract's error body: ``{"error_code", "error_message", "detail"}`` (README, "The
    API"); ``error_code`` defaults to ``status * 1000 + 1``."""
    return JSONResponse(
        {"error_code": error_code or status * 1000 + 1, "error_message": message, "detail": detail},
        status_code=status, headers=headers,
    )


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is answered 413 (413001), by Content-Length
    at once, or while streaming."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self.too_big()(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self.too_big()(scope, receive, send)

    def too_big(self) -> JSONResponse:
        return error_response(413, f"request body over the {self.max_bytes}-byte limit")


class _TooLarge(Exception):
    pass


FEATURES = "status-stream, long-poll, webhooks, idempotency-key, prefer-wait, cancel-after, cancel-running, delete"
_FEATURES_HEADER = (b"modelapi-features", FEATURES.encode())
NO_STORE = {"Cache-Control": "no-store"}
TOO_MANY_STREAMS: dict[int | str, dict[str, Any]] = {429: {"model": schemas.ErrorBody, "description": (
    "The key already holds --max-streams-per-key status streams and long-polls open on this server (429001)")}}


class HeldStream(EventSourceResponse):
    """A status stream that gives back its :class:`~modelapi.api.watch.Hold` when it ends,
    however it ends (also when the client leaves before its first event)."""

    def __init__(self, *args: Any, hold: Hold, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold = hold

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hold.release()


class FeaturesHeader:
    """ASGI middleware: every answer names, in ``Modelapi-Features``, what this server offers
    beyond the hosted contract (the hosted service sends no such header), so an SDK streams,
    long-polls and retries submits only where it may."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), _FEATURES_HEADER]
            await send(message)

        await self.app(scope, receive, send_with_header)


def forwarded_base_url(scope: MutableMapping[str, Any], trusted: frozenset[str], allowed: frozenset[str]) -> str | None:
    """The base a request reached the API at, from its Host header — or, when the connection
    comes from one of ``trusted`` proxies, from its X-Forwarded-Proto and X-Forwarded-Host —
    so that a server reached by other machines returns URLs that work for them. ``allowed``
    holds the accepted host values (``--allowed-hosts``: exact ``host:port``, lower case): a
    host not in it is a forgery (``Host: evil.example``) and gives None, as do headers that name
    no valid base; the caller then uses the configured base."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    scheme, host = scope.get("scheme", "http"), headers.get("host")
    if scope.get("client") and scope["client"][0] in trusted:
        scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip() or scheme
        host = headers.get("x-forwarded-host", host or "").split(",")[0].strip() or host
    if not host or host.lower() not in allowed or not _HOST.fullmatch(host) or scheme not in ("http", "https"):
        return None
    return f"{scheme}://{host}"


class HeaderRoute(APIRoute):
    """A route whose ``async`` endpoint takes only ``str`` path parameters, the Authorization
    header (``authorization``, None when absent) and the request's base URL (``base``, from the
    ``request_base_url`` dependency that :func:`create_app` keeps in ``app.state``), handed to it
    as they come: no per-request parameter solving and validation by FastAPI, which cost more CPU
    than the status poll's database read. The endpoint's signature still documents the route in
    /openapi.json."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        endpoint = self.endpoint
        assert inspect.iscoroutinefunction(endpoint), "a HeaderRoute endpoint is async"

        async def handler(request: Request) -> Response:
            return await endpoint(**request.path_params, authorization=request.headers.get("authorization"),
                                  base=await request.app.state.request_base_url(request))
        return handler


_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def create_app(service: Service, collectors: tuple = ()) -> FastAPI:
    """The FastAPI app over ``service``; ``collectors`` are added to its /metrics (e.g. an
    in-process worker's)."""
    app = FastAPI(
        title="modelapi",
        version="0.1.0",
        description="Self-hosted Model API: asynchronous image-generation jobs behind Bearer keys.",
    )
    app.state.service = service
    watcher = app.state.watcher = Watcher(service.jobs, max_per_key=service.settings.max_streams_per_key)
    app.add_middleware(BodyLimit, max_bytes=service.settings.max_body_bytes)
    app.add_middleware(FeaturesHeader)
    trusted = frozenset(service.settings.trusted_proxies)
    allowed_hosts = frozenset(h.strip().lower() for h in service.settings.allowed_hosts)

    async def request_base_url(request: Request) -> str:
        """The base of the absolute URLs of this request's answer, once per request:
        ``--public-url`` when set, else :func:`forwarded_base_url`, else the configured default
        (``settings.base_url``) — also when the Host (or trusted X-Forwarded-Host) is not in
        ``--allowed-hosts``, so a forged Host never reaches an output URL or a webhook payload.
        Passed to whatever builds URLs. ``async`` because it never blocks: FastAPI would run a
        plain ``def`` dependency on the thread pool."""
        if service.settings.public_url:
            return service.settings.base_url
        return forwarded_base_url(request.scope, trusted, allowed_hosts) or service.settings.base_url

    BaseURL = Depends(request_base_url)
    app.state.request_base_url = request_base_url
    openai_images.mount(app)  # POST /v1/images/generations, /v1/images/edits (OpenAI's shapes)
    app.include_router(admin.router)  # /v1/admin/..., /v1/keys/me, /v1/usage
    mcp_server.mount(app)  # /mcp: the MCP tools over streamable HTTP, behind the same keys

    @app.exception_handler(APIStatusError)
    async def _api_error(_: Request, exc: APIStatusError) -> JSONResponse:
        headers = {}
        if isinstance(exc, (RateLimitError, ServiceUnavailable)) and exc.retry_after_s is not None:
            headers["Retry-After"] = str(int(exc.retry_after_s))
        if isinstance(exc, RateLimitedError) and exc.rate_limit is not None:
            headers |= accounts.RateState(*exc.rate_limit).headers()
        if isinstance(exc, AuthenticationError):
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(exc.status_code, exc.error_message, exc.detail, headers, exc.error_code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)  # e.g. Allow on a 405
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc.status_code, str(exc.detail) if exc.detail else ERROR_MESSAGES.get(exc.status_code, "error"),
                              headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return error_response(422, "Invalid request", detail)

    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        return error_response(503, "the database is unavailable; retry shortly", headers={"Retry-After": "5"})

    for kind in db.UNAVAILABLE:
        app.add_exception_handler(kind, _database_down)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc.__cause__, db.UNAVAILABLE):  # wrapped by the queue library
            return await _database_down(request, exc)
        log.exception("unexpected error")
        return error_response(500, "internal server error")

    def require_key(authorization: str | None) -> ApiKey:
        return service.accounts.authenticate(bearer_token(authorization))  # 401: missing, unknown, revoked, expired

    Auth = Header(None, alias="Authorization", description="`Bearer <API key>`")

    # -- submit, one route per catalogue entry ----------------------------------------------
    def make_submit(model: catalog.Model):
        async def submit(
            request: Request,
            response: Response,
            authorization: str | None = Auth,
            idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=200,
                                                 description="Same key + same body -> the same request (at most 200 characters)"),
            cancel_after: str | None = Header(None, alias="Cancel-After", max_length=40, description=(
                "A deadline after the submit: 30s, 5m, 1h30m or seconds (1 s to 24 h). Not started by then: cancelled "
                "(error.code deadline, not billed); still running: stopped and failed (deadline_exceeded)")),
            prefer: str | None = Header(None, alias="Prefer", max_length=200, description=(
                "`wait` or `wait=N` (1-60 s, default 60): answer with the result body as soon as the request ends "
                "within N s, else with the usual answer after N s (it keeps running); Preference-Applied says so")),
            webhook: str | None = Query(None, max_length=2000, description="A URL to POST the result to when the "
                                        "request ends, signed per Standard Webhooks (see GET /v1/webhooks/default/secret)"),
            retention_s: int | None = Query(None, ge=1, le=service.settings.retention_s, description="Seconds the "
                                            "request's outputs and inputs are kept once it finished (at most the server's --retention-s)"),
            webhook_intermediate_status: bool = Query(False, description="With `webhook`: also POST the status body "
                                                      "on each change before the end (in_progress, each new partial_output)"),
            base: str = BaseURL,
        ) -> Any:
            key = await run_in_threadpool(require_key, authorization)
            deadline_s, wait_s = headers.cancel_after_s(cancel_after), headers.prefer_wait_s(prefer)
            body = await read_json(request)
            # A wait is one of the key's --max-streams-per-key, taken before anything is stored (a 429 then stores nothing).
            with watcher.hold(key.id) if wait_s else contextlib.nullcontext():
                # on the loop: the service sends its database, store and decoding work to the thread
                # pool and fetches URL inputs on the loop, so a slow image host holds no thread
                req, ignored = await service.submit(key, model, body, idempotency_key, webhook, base_url=base,
                                                    cancel_after_s=deadline_s, intermediate=webhook_intermediate_status,
                                                    retention_s=retention_s,
                                                    headers=response.headers)  # RateLimit-*
                if wait_s:
                    req = await watcher.until_terminal(req, wait_s)
            submitted = schemas.Submitted(request_id=req.request_id, **service.urls(req.request_id, base),
                                          ignored_fields=ignored.fields or None, ignored_fields_count=ignored.count or None)
            if not wait_s:
                return submitted
            applied = {"Preference-Applied": f"wait={wait_s}"}
            if req.status.is_terminal:
                return JSONResponse(await run_in_threadpool(service.result_body, req, False, base), headers=applied)
            return JSONResponse(submitted.model_dump(exclude_none=True), headers=applied)

        return submit

    for model in catalog.models().values():
        app.add_api_route(
            f"/v1/models/{model.model_id}", make_submit(model), methods=["POST"],
            summary=f"Submit a {model.model_id} request", tags=["requests"],
            response_model=schemas.Submitted, response_model_exclude_none=True,
            responses=schemas.errors(400, 401, 402, 403, 413, 422, 429) | {200: {"description": (
                "The request's ids and URLs; with `Prefer: wait` and the request ended within the wait, its result "
                "body instead (as GET /result)"), "model": schemas.Submitted}},
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": json_schema(model.input_schema), "example": model.example_request}}}},
        )

    # -- requests ---------------------------------------------------------------------------
    async def status(request_id: str, authorization: str | None = Auth, base: str = BaseURL) -> JSONResponse:
        # The polling hot path: one indexed read in autocommit (the key checked in the same
        # query), awaited on the loop where the database has non-blocking reads (Postgres: no
        # thread hand-over, which costs more CPU than the read), else on the thread pool (SQLite);
        # the body built by the service (the response_model documents it).
        token = bearer_token(authorization)
        if service.jobs.async_reads is not None:
            return JSONResponse(await service.status_async(request_id, token, base))
        return JSONResponse(await run_in_threadpool(service.status, request_id, token, base))

    app.router.add_api_route("/v1/requests/{request_id}/status", status, methods=["GET"], route_class_override=HeaderRoute,
                             response_model=schemas.StatusBody, response_model_exclude_none=True,
                             tags=["requests"], responses=schemas.errors(401, 404))

    @app.get("/v1/requests/{request_id}/status/stream", tags=["requests"], responses=schemas.errors(401, 404) | TOO_MANY_STREAMS
             | {200: {"content": {"text/event-stream": {}}, "description": "`status` events, each the status body; "
                      "the terminal state's is the last. Resume with `Last-Event-ID`."}})
    async def status_stream(request_id: str, authorization: str | None = Auth,
                            last_event_id: str | None = Header(None, alias="Last-Event-ID"),
                            base: str = BaseURL) -> EventSourceResponse:
        # One of the key's --max-streams-per-key (429 above); it ends within a watcher tick of
        # the key's revocation. A Last-Event-ID that is not a plain event id is ignored.
        key = await run_in_threadpool(require_key, authorization)
        req = await run_in_threadpool(service.get, request_id, key)
        after = int(last_event_id) if last_event_id and len(last_event_id) <= 20 and last_event_id.isascii() \
            and last_event_id.isdigit() else None

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                async for update in watcher.updates(req, after):
                    yield ServerSentEvent(json.dumps(service.status_body(update, base)), event="status", id=str(event_id(update)))
            except AuthenticationError:  # revoked: the stream ends
                return

        return HeldStream(events(), hold=watcher.hold(key.id), ping=service.settings.stream_ping_s, headers=NO_STORE)

    @app.get("/v1/requests/{request_id}/result", response_model=schemas.ResultBody, response_model_exclude_none=True,
             tags=["requests"], responses=schemas.errors(401, 404, 410, 422) | TOO_MANY_STREAMS)
    async def result(request_id: str, include_cost: bool = Query(False),
                     include_inputs: bool = Query(False, description="Add `model_id` and `inputs`: the request's input as "
                                                  "accepted (the body, with the schema's defaults filled in)"),
                     wait: float | None = Query(None, ge=0, le=60, description="Seconds to wait for a terminal state (long-poll)"),
                     authorization: str | None = Auth, base: str = BaseURL) -> JSONResponse:
        key = await run_in_threadpool(require_key, authorization)
        req = await run_in_threadpool(service.get, request_id, key)
        if wait and not req.status.is_terminal:
            with watcher.hold(key.id):  # one of the key's --max-streams-per-key (429 above); 401 once revoked
                req = await watcher.until_terminal(req, wait)  # full rows: outputs, metadata, error
        body = await run_in_threadpool(service.result_body, req, include_cost, base)
        return JSONResponse(body | {"model_id": req.model_id, "inputs": req.inputs} if include_inputs else body)

    @app.get("/v1/requests", response_model=schemas.RequestPage, tags=["requests"], responses=schemas.errors(401, 422))
    def list_requests(status: StatusName | None = Query(None), model: str | None = Query(None, description="A model id"),
                      limit: int = Query(20, ge=1, le=100), cursor: str | None = Query(None, description="A page's next_cursor"),
                      authorization: str | None = Auth, base: str = BaseURL) -> JSONResponse:
        return JSONResponse(service.list_requests(require_key(authorization), status=Status(status) if status else None,
                                                  model_id=model, limit=limit, cursor=cursor, base_url=base))

    @app.post("/v1/requests/{request_id}/cancel", response_model=schemas.CancelBody, tags=["requests"],
              responses=schemas.errors(401, 404, 413))
    async def cancel(request_id: str, authorization: str | None = Auth, running: bool = Query(False, description=(
            "Also stop an in_progress request, at its next denoising step or image boundary: it ends cancelled, "
            "keeping (and billing) the images already stored. The answer waits up to 10 s for the stop"))) -> dict:
        key = await run_in_threadpool(require_key, authorization)
        req = await run_in_threadpool(service.get, request_id, key)
        answer = await run_in_threadpool(service.cancel, req, running)
        if answer["outcome"] == "stopping":
            try:
                hold = watcher.hold(key.id)
            except RateLimitError:  # the key's waits are all taken: the stop was asked; answer at once
                return answer
            with hold:
                req = await watcher.until_terminal(req, service.STOP_WAIT_S)
            answer = service.cancel_answer(req, stopping=True)
        return answer

    @app.delete("/v1/requests/{request_id}", response_model=schemas.DeletedBody, response_model_exclude_none=True,
                tags=["requests"], responses=schemas.errors(401, 404, 409))
    def delete(request_id: str, authorization: str | None = Auth, base: str = BaseURL) -> dict:
        """Delete a finished request's outputs and inputs now (a queued one is cancelled first);
        its status stays. 409 while it runs."""
        return service.delete(service.get(request_id, require_key(authorization)), base)

    @app.get("/v1/webhooks/default/secret", response_model=schemas.WebhookSecret, tags=["webhooks"],
             responses=schemas.errors(401))
    def webhook_secret(authorization: str | None = Auth) -> dict:
        return service.webhook_secret(require_key(authorization))

    # -- catalogue --------------------------------------------------------------------------
    @app.get("/v1/models", tags=["models"], responses=schemas.errors(401))
    def list_models(authorization: str | None = Auth, base: str = BaseURL) -> dict:
        require_key(authorization)
        info = service.engine_info()
        return {"models": [
            {"model_id": m.model_id, "input_schema_url": f"{base}/v1/models/{m.model_id}/schema",
             "engine": info.get("engine"), "weights": info.get("weights"),
             "random_weights": info.get("random_weights")}
            for m in catalog.models().values()
        ], "object": "list",  # and OpenAI's list shape, for client.models.list()
            "data": [{"id": m.model_id, "object": "model", "owned_by": m.model_id.split("/")[0]} for m in catalog.models().values()]}

    @app.get("/v1/models/{model_path:path}/schema", tags=["models"], responses=schemas.errors(401, 404))
    def model_schema(model_path: str, authorization: str | None = Auth) -> dict:
        require_key(authorization)
        model = catalog.get(model_path)
        if model is None:
            raise NotFoundError(f"unknown model {model_path!r}; see GET /v1/models")
        return {"model_id": model.model_id, "input_schema": model.input_schema, "output_schema": model.output_schema}

    # After the schema route, so that a 405 on /v1/models/{id}/schema allows GET (first match).
    @app.post("/v1/models/{model_path:path}", include_in_schema=False)
    def submit_unknown(model_path: str, authorization: str | None = Auth) -> None:
        require_key(authorization)
        raise NotFoundError(f"unknown model {model_path!r}; see GET /v1/models")

    # -- files ------------------------------------------------------------------------------
    @app.post("/v1/files", status_code=201, response_model=schemas.Uploaded, tags=["files"],
              responses=schemas.errors(400, 401, 422) | {413: {"model": schemas.ErrorBody, "description": (
                  "Body over the size cap, or the key's uploads over --max-upload-bytes-per-key (413001)")}},
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"], "title": "Upload",
                  "properties": {"file": {"type": "string", "format": "binary", "description": "A JPEG or PNG image"}}}}}}})
    async def upload(request: Request, authorization: str | None = Auth, base: str = BaseURL) -> Any:
        # The key is checked before the body is read: the form is parsed here, not by FastAPI.
        key = await run_in_threadpool(require_key, authorization)
        try:
            async with request.form(max_files=1, max_fields=10) as form:
                file = form.get("file")
                if not isinstance(file, StarletteUploadFile):
                    raise ValidationError("Invalid request", [{"loc": ["body", "file"], "msg": "A file part named 'file' is required", "type": "missing"}])
                # a spooled file, read on the thread pool
                return await run_in_threadpool(lambda: service.upload(key, file.file.read(), base))
        except ClientDisconnect:  # gone mid-body: nobody reads the answer
            return error_response(400, "the client left before the body was complete")

    @app.get("/v1/files/{file_id}", tags=["files"], responses=schemas.errors(401, 404)
             | {200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "The uploaded image"}})
    def uploaded(file_id: str, authorization: str | None = Auth) -> Response:
        record = service.upload_record(file_id, require_key(authorization))
        if record is None:
            raise NotFoundError(f"file {file_id} not found")
        return Response(service.storage.get(record["storage_key"]), media_type=record["content_type"])

    @app.get("/files/{key:path}", tags=["files"], summary="An output file, under a signed URL (file storage only)",
             responses=schemas.errors(404, 422) | {200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "The image"}})
    def signed_file(key: str, expires: int = Query(...), sig: str = Query(...)) -> FileResponse:
        storage = service.storage
        try:
            path = storage.path(key) if isinstance(storage, FileStorage) and storage.verify(key, expires, sig) else None
        except ValueError:
            path = None
        if path is None or not path.is_file():
            raise NotFoundError("file not found or link expired")
        return FileResponse(path, media_type=content_type_of(key))

    # -- operations -------------------------------------------------------------------------
    def may_see_operations(authorization: str | None) -> bool:
        """True when ``authorization`` carries a live API key or ``--metrics-token``."""
        return operations_authorized(service.db, service.settings.metrics_token, bearer_token(authorization))

    @app.get("/healthz", tags=["operations"], responses=schemas.errors())
    def healthz(authorization: str | None = Auth) -> dict:
        """``{"status": "ok"}`` (or ``draining``) when the database answers, else 503. With
        ``Authorization: Bearer <a live API key or --metrics-token>``, also the live workers'
        count (``workers``) and the engine of the oldest (``engine``: name, device, weights),
        and with an in-process worker its backends (``backends``: ``{name: {circuit,
        failures_in_a_row, ...}}``, the circuit breakers); without one (or with a wrong one),
        only the status."""
        live = service.jobs.workers.live()  # reads the database: down → 503
        state = "draining" if service.draining.is_set() else "ok"
        if not may_see_operations(authorization):
            return {"status": state}
        body = {"status": state, "workers": len(live), "engine": service.engine_info(live)}
        if service.backends_health is not None:
            body["backends"] = service.backends_health()
        return body

    registry = CollectorRegistry()
    registry.register(_RequestsCollector(service))
    registry.register(SweepCollector(service.db))
    registry.register(accounts.REFUSED)  # per process
    for collector in collectors:
        registry.register(collector)

    @app.get("/metrics", tags=["operations"], response_class=Response, responses=schemas.errors(401))
    def metrics(authorization: str | None = Auth) -> Response:
        """Prometheus text. Needs ``Authorization: Bearer <a live API key or --metrics-token>``
        (401 without)."""
        if not may_see_operations(authorization):
            raise AuthenticationError("/metrics needs an API key or the --metrics-token")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # -- the web playground: static files over the public API (no key needed to load them) ---
    @app.get("/", include_in_schema=False)
    def playground() -> FileResponse:
        return FileResponse(PLAYGROUND / "index.html", media_type="text/html", headers=PLAYGROUND_HEADERS)

    app.mount("/playground", StaticFiles(directory=PLAYGROUND), name="playground")

    return app


PLAYGROUND = Path(__file__).parent / "playground"
PLAYGROUND_HEADERS = {
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Output images may come from an object store on another origin (presigned URLs).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob: http: https:; connect-src 'self'; "
                               "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
}


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at ``request``'s path (sorted), for the ``Allow`` header
    of a 405: one path may be served by several routes (``GET`` and ``PATCH`` of an admin key)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if (isinstance(route, Route) and route.methods and route.include_in_schema
                and route.matches(request.scope)[0] is not Match.NONE):
            methods |= route.methods
    return sorted(methods)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


MAX_JSON_VALUES = 10_000
"""Most values a JSON body may hold, counting each array, object, string and list item."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects in a JSON body."""
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]++|\\[\s\S])*+(?:"|\\?\Z)|[\[{,\]}]')
"""A string (to its closing quote, or the end: linear on any input), or a bracket or comma."""


def json_cost_problem(raw: bytes) -> str | None:
    """Why parsing ``raw`` whole would cost too much — more than :data:`MAX_JSON_VALUES`
    values (each array, object, string and comma counts one) or nesting deeper than
    :data:`MAX_JSON_DEPTH` — else None (also for malformed JSON: the parser says why, cheaply).
    Counts bytes first (an upper bound: brackets inside strings count too); scans past strings,
    and at most ~2 x MAX_JSON_VALUES tokens, only when that bound is over a limit."""
    opens = raw.count(b"{") + raw.count(b"[")
    if opens <= MAX_JSON_DEPTH and opens + raw.count(b",") + raw.count(b'"') // 2 <= MAX_JSON_VALUES:
        return None
    values = depth = 0
    for token in _JSON_TOKEN.finditer(raw):
        char = raw[token.start()]
        if char in b"]}":
            depth -= 1
            if depth < 0:
                return None  # malformed
            continue
        values += 1
        if values > MAX_JSON_VALUES:
            return f"JSON body has more than {MAX_JSON_VALUES} values (arrays, objects, strings and list items)"
        if char in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return f"JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
    return None


async def read_json(request: Request) -> Any:
    """The body as JSON. Raises 400 (400001) on a non-JSON content type, on malformed JSON, and
    on a body that would cost too much to parse (:func:`json_cost_problem`), checked on the raw
    bytes before any is parsed."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise BadRequest(f"Content-Type must be application/json, not {ctype or 'missing'!r}")
    try:
        raw = await request.body()
    except ClientDisconnect:  # gone mid-body: nobody reads the answer
        raise BadRequest("the client left before the body was complete") from None
    problem = json_cost_problem(raw)
    if problem is not None:
        raise BadRequest(problem)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None


class _RequestsCollector:
    """Requests by model and status, the queue depth and the live workers, read from the
    database at scrape time (so they survive restarts and count every process's work)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self):  # noqa: ANN201
        by_status = GaugeMetricFamily("modelapi_requests", "Requests by model and status", labels=["model", "status"])
        depth = 0
        for model_id, status, count in self.service.jobs.counts():
            by_status.add_metric([model_id, status], count)
            depth += count if status == Status.IN_QUEUE.value else 0
        yield by_status
        yield GaugeMetricFamily("modelapi_queue_depth", "Requests waiting in the queue", value=depth)
        yield GaugeMetricFamily("modelapi_workers_live", "Workers with a recent heartbeat",
                                value=len(self.service.jobs.workers.live()))
