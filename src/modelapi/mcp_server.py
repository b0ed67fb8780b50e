"""An MCP server (Model Context Protocol, on the official ``mcp`` SDK) that lets agents make and
follow image requests.

Two ways in, the same tools:

* ``modelapi mcp`` — stdio, for desktop agents. The tools call a modelapi server (or the hosted
  service) through the SDK's :class:`~modelapi.client.AsyncClient` at ``MODELAPI_BASE_URL`` with
  ``MODELAPI_API_KEY`` (``--base-url``/``--api-key``; default the local server and its initial
  key). Needs ``pip install "modelapi[mcp]"`` only.
* ``/mcp`` on the server itself — streamable HTTP (stateless: any API process of a fleet can
  answer any message), authenticated with the same Bearer keys (401 without). Its tools call the
  service directly, with the caller's own key: the same submit path (validation, queue cap,
  billing), the same per-key reads (another key's request is not found), the same watcher the
  status streams use, and output URLs on the base the caller reached. Calling our own HTTP API
  from inside the server would need an address at which the process can reach itself and would
  lose the caller's base URL; the service is one function call away.

Tools (schemas from the catalogue: sizes, prompt lengths, counts and model ids are the specs'):

* ``generate_images(prompt, count=1, size=None, seed=None)`` — ``bytedance/seedream-4-0/sequential``.
* ``edit_images(images, prompt, model="bytedance/seedream-4-0/edit-sequential", count=1)`` —
  ``images``: URLs (``https://``, ``data:``), or local file paths over stdio.
* ``get_request(request_id)`` — status, and outputs when completed.
* ``list_requests(status=None, model=None, limit=10)`` — the key's requests, newest first.

A result is a JSON text block (``request_id``, ``status``, ``images``: output URLs, ``seed``... —
the result body) plus a small JPEG preview of each output (MCP image content, at most 512 px a
side, all of them together at most :data:`PREVIEW_BUDGET_BYTES` of base64, since agents' clients
cap a message at 1 MiB). While a tool waits it sends progress notifications (0 to 1) when the
client asked for them; past the wait bound (``--wait-s``; on the server ``--sync-timeout-s``) it
answers with the request still running, to follow with ``get_request``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent
from pydantic import Field

from . import catalog
from ._models import Completed, InProgress, Queued, RequestSummary, Result, StatusUpdate, parse_result, parse_status, parse_summary
from .errors import APIStatusError, ModelAPIError
from .shorthand import ParamError, build_input, max_count
from .types import Status

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .api.service import Service
    from .api.watch import Watcher
    from .client import AsyncClient
    from .core.auth import ApiKey

GENERATE_MODEL = "bytedance/seedream-4-0/sequential"
EDIT_MODELS = ("bytedance/seedream-4-0/edit-sequential", "bytedance/dreamina-4-0/edit")
PREVIEW_SIDE_PX = 512
PREVIEW_BUDGET_BYTES = 768 * 1024
"""All previews of one result together, base64 bytes: under the 1 MiB message cap of agents'
clients, with room for the text."""
DEFAULT_WAIT_S = 300.0

_SEQ = catalog.models()[GENERATE_MODEL]
_SEQ_PROPS = _SEQ.input_schema["properties"]
if TYPE_CHECKING:
    SizeValue = str
    EditModel = str
    ModelId = str
    StatusValue = str
else:  # enums from the catalogue, so that the tools' JSON schemas list them
    SizeValue = Literal[tuple(_SEQ_PROPS["image_size"]["enum"])]
    EditModel = Literal[EDIT_MODELS]
    ModelId = Literal[tuple(catalog.models())]
    StatusValue = Literal[tuple(s.value for s in Status)]
_EDIT_PROMPT_MAX = min(catalog.models()[m].input_schema["properties"][catalog.models()[m].task.prompt_field]["maxLength"] for m in EDIT_MODELS)


class Backend(Protocol):
    """What the tools need of a modelapi deployment (:class:`SDKBackend`, :class:`ServiceBackend`)."""

    async def references(self, model: catalog.Model, images: list[str]) -> list[str]:
        """``images`` as URIs the server accepts. Raises ToolError for what cannot be sent."""
        ...

    async def submit(self, model: catalog.Model, body: dict[str, Any]) -> str:
        """Submit; returns the request id."""
        ...

    def watch(self, request_id: str) -> AsyncIterator[StatusUpdate]:
        """Each new state of the request, until a terminal one."""
        ...

    async def result(self, request_id: str) -> Result: ...

    async def outputs(self, result: Result) -> list[bytes]:
        """The bytes of a completed request's output images, in order."""
        ...

    async def list_requests(self, status: str | None, model: str | None, limit: int) -> list[RequestSummary]: ...


class SDKBackend:
    """A deployment reached over HTTP with our SDK (``modelapi mcp``, stdio)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def references(self, model: catalog.Model, images: list[str]) -> list[str]:
        field = model.task.image_field
        assert field is not None
        resolved = await self.client.resolve_files({field: images}, schema=model.input_schema)  # local paths: uploads
        return list(resolved[field])

    async def submit(self, model: catalog.Model, body: dict[str, Any]) -> str:
        return (await self.client.submit(model.model_id, body)).request_id

    def watch(self, request_id: str) -> AsyncIterator[StatusUpdate]:
        return self.client.watch(request_id)

    async def result(self, request_id: str) -> Result:
        return await self.client.result(request_id)

    async def outputs(self, result: Result) -> list[bytes]:
        with tempfile.TemporaryDirectory(prefix="modelapi-mcp-") as folder:
            return [path.read_bytes() for path in await self.client.download(result, folder)]

    async def list_requests(self, status: str | None, model: str | None, limit: int) -> list[RequestSummary]:
        return [item async for item in self.client.list_requests(status=status, model=model, limit=limit)]


class ServiceBackend:
    """This server's service, for the holder of ``key`` (``/mcp``); URLs on ``base_url``."""

    def __init__(self, service: Service, watcher: Watcher, key: ApiKey, base_url: str) -> None:
        self.service, self.watcher, self.key, self.base_url = service, watcher, key, base_url

    async def references(self, model: catalog.Model, images: list[str]) -> list[str]:
        for i, image in enumerate(images):
            if not image.startswith(("https://", "http://", "data:")):
                raise ToolError(f"images[{i}]: give a URL (https://, or a data: URI); local file paths work only with "
                                "`modelapi mcp` (stdio), on the machine that has them")
        return images

    async def submit(self, model: catalog.Model, body: dict[str, Any]) -> str:
        from .api.openai_images import submit

        return (await submit(self.service, self.key, model, body, self.base_url)).request_id

    async def watch(self, request_id: str) -> AsyncIterator[StatusUpdate]:
        req = await anyio.to_thread.run_sync(self.service.get, request_id, self.key)
        async for state in self.watcher.updates(req):
            yield parse_status(self.service.status_body(state, self.base_url))

    async def result(self, request_id: str) -> Result:
        def read() -> dict[str, Any]:
            return self.service.result_body(self.service.get(request_id, self.key), False, self.base_url)

        return parse_result(await anyio.to_thread.run_sync(read))

    async def outputs(self, result: Result) -> list[bytes]:
        def read() -> list[bytes]:
            req = self.service.get(result.request_id, self.key)
            return [self.service.storage.get(k) for k in req.outputs or []]

        return await anyio.to_thread.run_sync(read)

    async def list_requests(self, status: str | None, model: str | None, limit: int) -> list[RequestSummary]:
        def read() -> dict[str, Any]:
            return self.service.list_requests(self.key, status=Status(status) if status else None, model_id=model, limit=limit,
                                              cursor=None, base_url=self.base_url)

        return [parse_summary(item) for item in (await anyio.to_thread.run_sync(read))["requests"]]


def previews(images: list[bytes], budget_bytes: int = PREVIEW_BUDGET_BYTES) -> list[ImageContent]:
    """A JPEG preview of each image (at most :data:`PREVIEW_SIDE_PX` a side, smaller when the
    share of ``budget_bytes`` (base64) of each image needs it), as MCP image content."""
    from PIL import Image

    share = budget_bytes // max(1, len(images))
    out = []
    for data in images:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
        for side in (PREVIEW_SIDE_PX, 384, 256, 160, 96, 64):
            thumb = image.copy()
            thumb.thumbnail((side, side))
            buffer = io.BytesIO()
            thumb.save(buffer, "JPEG", quality=80)
            encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
            if len(encoded) <= share:
                break
        out.append(ImageContent(type="image", data=encoded, mime_type="image/jpeg"))
    return out


async def _answer(backend: Backend, result: Result) -> CallToolResult:
    """The tool result of a request: its body as JSON text (and structured content), plus
    previews of its outputs when completed."""
    content: list[ContentBlock] = [TextContent(type="text", text=json.dumps(result.body, indent=2))]
    if isinstance(result.update, Completed) and result.images:
        content += await anyio.to_thread.run_sync(previews, await backend.outputs(result))
    return CallToolResult(content=content, structured_content=result.body, is_error=result.update.status is Status.FAILED)


async def _run(backend: Backend, ctx: Context, model: catalog.Model, body: dict[str, Any], wait_s: float) -> CallToolResult:
    """Submit, report progress while waiting (at most ``wait_s``), answer."""
    try:
        request_id = await backend.submit(model, body)
        last = -1.0
        with anyio.move_on_after(wait_s):
            async for update in backend.watch(request_id):
                if isinstance(update, Queued):
                    progress, message = 0.0, f"{request_id}: in queue" + (f", position {update.position}" if update.position is not None else "")
                elif isinstance(update, InProgress):
                    progress, message = float(update.progress or 0.0), f"{request_id}: generating"
                elif update.status is not None and update.status.is_terminal:
                    progress, message = 1.0, f"{request_id}: {update.status.value}"
                else:
                    continue
                if progress > last:  # MCP: progress must grow with each notification
                    await ctx.report_progress(progress, 1.0, message)
                    last = progress
        return await _answer(backend, await backend.result(request_id))
    except APIStatusError as exc:
        raise ToolError(_api_message(exc)) from None
    except ModelAPIError as exc:
        raise ToolError(str(exc)) from None


def _api_message(exc: APIStatusError) -> str:
    message = f"{exc.status_code}: {exc.error_message}"
    if isinstance(exc.detail, list):
        message += "".join(f"\n- {'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in exc.detail if isinstance(d, dict))
    return message


def build_server(backend_for: Callable[[Context], Backend], *, wait_s: float = DEFAULT_WAIT_S) -> MCPServer:
    """The MCP server with the four tools; ``backend_for(ctx)`` gives each call its deployment
    (the caller's, over HTTP)."""
    server = MCPServer("modelapi", log_level="WARNING", instructions=(
        "Generate and edit images with modelapi (Seedream / Dreamina contract). generate_images and edit_images "
        "wait for the images and return their URLs with small previews; a request still running when they answer "
        "can be followed with get_request."))

    @server.tool(description=f"Generate `count` images from a text prompt with {GENERATE_MODEL} (a coherent series when "
                             "count > 1). Returns the output URLs and a small preview of each.")
    async def generate_images(
        prompt: Annotated[str, Field(max_length=_SEQ_PROPS["text"]["maxLength"], description="What to draw.")],
        ctx: Context,
        count: Annotated[int, Field(ge=1, le=max_count(_SEQ), description="How many images, exactly.")] = 1,
        size: Annotated[SizeValue | None, Field(description=_SEQ_PROPS["image_size"]["description"] + " Default: "
                                                + _SEQ_PROPS["image_size"]["default"])] = None,
        seed: Annotated[int | None, Field(description="Seed of the first image (image i uses seed + i); same inputs and "
                                                      "seed give the same images.")] = None,
    ) -> CallToolResult:
        try:
            body = build_input(_SEQ, prompt, n=count, size=size, seed=seed)
        except ParamError as exc:
            raise ToolError(f"{exc.param}: {exc.message}") from None
        return await _run(backend_for(ctx), ctx, _SEQ, body, wait_s)

    @server.tool(description="Edit reference images, or make `count` new images from them, following a prompt. "
                             f"Models: {EDIT_MODELS[0]} (a coherent series) or {EDIT_MODELS[1]}. Returns the output URLs "
                             "and a small preview of each.")
    async def edit_images(
        images: Annotated[list[str], Field(min_length=1, max_length=10, description="1 to 10 reference images: https:// URLs or "
                                           "data: URIs (JPEG or PNG); with `modelapi mcp` (stdio) also local file paths.")],
        prompt: Annotated[str, Field(max_length=_EDIT_PROMPT_MAX, description="The edit, or what to make from the images.")],
        ctx: Context,
        model: Annotated[EditModel, Field(description="The edit model.")] = EDIT_MODELS[0],
        count: Annotated[int, Field(ge=1, le=max_count(catalog.models()[EDIT_MODELS[0]], 1),
                                    description="How many images, exactly (references + outputs <= 15).")] = 1,
    ) -> CallToolResult:
        chosen = catalog.models()[model]
        backend = backend_for(ctx)
        try:
            refs = await backend.references(chosen, list(images))
            body = build_input(chosen, prompt, n=count, images=refs)
        except ParamError as exc:
            raise ToolError(f"{exc.param}: {exc.message}") from None
        except ModelAPIError as exc:  # a local file that is missing, too big, or not JPEG/PNG
            raise ToolError(str(exc)) from None
        return await _run(backend, ctx, chosen, body, wait_s)

    @server.tool(description="A request's status (queue position, progress), and when completed its output URLs with previews.")
    async def get_request(request_id: Annotated[str, Field(description="The request id (req_...).")], ctx: Context) -> CallToolResult:
        backend = backend_for(ctx)
        try:
            return await _answer(backend, await backend.result(request_id))
        except APIStatusError as exc:
            raise ToolError(_api_message(exc)) from None

    @server.tool(description="The key's requests, newest first: id, model, status, created and finished times.")
    async def list_requests(
        ctx: Context,
        status: Annotated[StatusValue | None, Field(description="Only requests in this status.")] = None,
        model: Annotated[ModelId | None, Field(description="Only requests of this model.")] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="How many.")] = 10,
    ) -> CallToolResult:
        try:
            items = [item.body for item in await backend_for(ctx).list_requests(status, model, limit)]
        except APIStatusError as exc:
            raise ToolError(_api_message(exc)) from None
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(items, indent=2))],
                              structured_content={"requests": items})

    return server


def run_stdio(base_url: str | None, api_key: str | None, *, wait_s: float = DEFAULT_WAIT_S) -> None:
    """Serve the tools over stdio until the client closes it, calling the deployment at
    ``base_url`` with ``api_key`` (None: as :class:`~modelapi.client.AsyncClient` defaults).

    Raises:
        AuthenticationError: no API key was given or found.
    """
    from .client import AsyncClient

    async def main() -> None:
        async with AsyncClient(base_url, api_key, timeout_s=120) as client:
            backend = SDKBackend(client)
            await build_server(lambda ctx: backend, wait_s=wait_s).run_stdio_async()

    anyio.run(main)


def mount(app: FastAPI) -> None:
    """Serve the tools at ``/mcp`` on ``app`` (made by :func:`modelapi.api.app.create_app`):
    streamable HTTP, stateless, behind the same Bearer keys (401, in the API's error shape,
    without one)."""
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.routing import Route

    from .api.app import bearer_token, error_response
    from .core.auth import authenticate

    service: Service = app.state.service
    watcher: Watcher = app.state.watcher
    base_of = app.state.request_base_url

    def backend_for(ctx: Context) -> Backend:
        key, base = ctx.request_context.request.scope["modelapi.mcp"]  # type: ignore[union-attr]
        return ServiceBackend(service, watcher, key, base)

    server = build_server(backend_for, wait_s=service.settings.sync_timeout_s)
    # DNS-rebinding protection guards servers that need no credentials; every message here needs
    # a Bearer key, which a rebinding page cannot send, and the Host may be any public name.
    server.streamable_http_app(stateless_http=True, transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    manager = server.session_manager
    started: asyncio.Event | None = None
    tasks: set[asyncio.Task[None]] = set()

    async def run_manager() -> None:
        assert started is not None
        async with manager.run():  # until this process's event loop ends
            started.set()
            await asyncio.Event().wait()

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        nonlocal started
        request = Request(scope)
        token = bearer_token(request.headers.get("authorization"))
        key = await run_in_threadpool(authenticate, service.db, token) if token else None
        if key is None:
            response = error_response(401, "missing, unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        scope["modelapi.mcp"] = (key, await base_of(request))
        if started is None:  # the session manager runs in a task of the serving loop, started on first use
            started = asyncio.Event()
            tasks.add(asyncio.get_running_loop().create_task(run_manager()))
        await started.wait()
        await manager.handle_request(scope, receive, send)

    app.router.routes.append(Route("/mcp", _ASGIEndpoint(endpoint), methods=["GET", "POST", "DELETE"], include_in_schema=False))


class _ASGIEndpoint:
    """Wraps an ASGI function so that Starlette's ``Route`` passes it the raw ASGI call (a plain
    function would be treated as a request/response endpoint)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


__all__ = ["Backend", "SDKBackend", "ServiceBackend", "build_server", "mount", "previews", "run_stdio"]
