"""The OpenAI Images API, synchronous as OpenAI's is, over the same queue, keys, limits, billing
and storage as the rest of the server: each call is an ordinary request (it shows in
``GET /v1/requests``), submitted through the same service path as ``POST /v1/models/...``.

* ``POST /v1/images/generations`` — JSON ``{"model", "prompt", "n", "size", "response_format",
  "seed", "user"}``; ``model`` defaults to ``bytedance/seedream-4-0/sequential``.
* ``POST /v1/images/edits`` — multipart: ``image`` or ``image[]`` files (the reference images),
  ``prompt``, ``model`` (``bytedance/seedream-4-0/edit-sequential`` by default, or
  ``bytedance/dreamina-4-0/edit``), ``n``, ``size``, ``response_format``, ``seed``.

``n``, ``size`` and ``seed`` map onto the model's input body as :mod:`modelapi.shorthand` says;
``response_format`` is ``url`` (default) or ``b64_json``; ``user`` is ignored, and so are other
fields (logged), unless ``--strict-inputs`` (then 400 ``unknown_parameter``); ``stream: true`` and
``mask`` are refused. A call waits on the app's :class:`~modelapi.api.watch.Watcher` (no thread
held) for at most ``--sync-timeout-s`` seconds.

Answers: ``{"created": unix s, "data": [{"url"} | {"b64_json"}, ...] (n items, in order),
"output_format": "jpeg" | "png" | "webp"}`` with the request id in ``x-request-id``. Errors:
``{"error": {"message", "type", "param", "code"}}`` — 400 for a parameter this layer refuses
(``param`` names it), otherwise the status the rest of the API gives (401, 404 unknown model,
413, 422 input rules, 429, 503); 500 when the request failed (``code``: its error code), 409 when
it was cancelled, 504 past the wait bound (the message names the request id; it keeps running and
can be followed through ``/v1/requests/{id}``). Answers after a request was made carry
``x-should-retry: false``: a retry would make another request.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import catalog
from ..core import db
from ..core.auth import ApiKey, authenticate
from ..core.jobs import Request as StoredRequest
from ..core.storage import content_type_of
from ..errors import APIStatusError, RateLimitError
from ..shorthand import ParamError, build_input
from ..types import Status
from ..validation import sniff_format
from .errors import ServiceUnavailable
from .service import Service

log = logging.getLogger("modelapi.openai")

DEFAULT_GENERATION_MODEL = "bytedance/seedream-4-0/sequential"
DEFAULT_EDIT_MODEL = "bytedance/seedream-4-0/edit-sequential"
RESPONSE_FORMATS = ("url", "b64_json")
GENERATION_FIELDS = frozenset({"model", "prompt", "n", "size", "response_format", "seed", "user"})
EDIT_FIELDS = GENERATION_FIELDS | {"image", "image[]"}
NO_RETRY = {"x-should-retry": "false"}


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

    Args:
        status (`int`): HTTP status.
        message (`str`): what went wrong and what is allowed.
        param (`str | None`): the request parameter at fault.
        code (`str | None`): a machine-readable code (``"invalid_api_key"``, ``"timeout"``...).
        type (`str`): ``"invalid_request_error"`` (default), ``"requests"`` (429),
            ``"server_error"`` (5xx) or ``"timeout"`` (504).
        headers (`dict | None`): extra response headers (``Retry-After``...).
    """

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def from_api_error(exc: APIStatusError, model: catalog.Model | None = None) -> OpenAIError:
    """Our API error (:class:`~modelapi.errors.APIStatusError`) in OpenAI's shape, with the same
    status; ``param`` is the first problem's field, named as the OpenAI request names it."""
    status = exc.status_code
    message, param, code = exc.error_message, None, None
    problems = exc.detail if isinstance(exc.detail, list) else []
    if problems:
        message += ": " + "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in problems)
        loc = problems[0].get("loc") or []
        param = _openai_param(str(loc[1]), model) if len(loc) > 1 else None
        code = problems[0].get("type")
    headers: dict[str, str] = {}
    if isinstance(exc, (RateLimitError, ServiceUnavailable)) and exc.retry_after_s is not None:
        headers["Retry-After"] = str(int(exc.retry_after_s))
    kind = "invalid_request_error"
    if status == 401:
        code = "invalid_api_key"
    elif status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    return OpenAIError(status, message, param=param, code=code, type=kind, headers=headers)


def _openai_param(field: str, model: catalog.Model | None) -> str:
    if model is None:
        return field
    task = model.task
    return {task.prompt_field: "prompt", task.image_field: "image", task.size_field: "size",
            task.max_images_field: "n"}.get(field, field)


async def submit(service: Service, key: ApiKey, model: catalog.Model, body: dict[str, Any], base_url: str) -> StoredRequest:
    """Submit ``body`` to ``model`` for ``key`` through the same service path as
    ``POST /v1/models/{model}`` (validation, input images, queue cap, idempotency-free; its
    blocking work runs on the thread pool). The one place the OpenAI and MCP layers submit.

    Raises:
        APIStatusError: as :meth:`Service.submit` (422, 429, 503).
    """
    req, _ = await service.submit(key, model, body, None, base_url=base_url)
    return req


class OpenAIRoute(APIRoute):
    """A route whose every error is answered in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return exc.response()
            except APIStatusError as exc:
                return from_api_error(exc, request.state.model if hasattr(request.state, "model") else None).response()
            except db.UNAVAILABLE as exc:
                log.warning("database unavailable: %s", str(exc).splitlines()[0])
                return OpenAIError(503, "the database is unavailable; retry shortly", type="server_error",
                                   code="service_unavailable", headers={"Retry-After": "5"}).response()
            except Exception:
                log.exception("unexpected error")
                return OpenAIError(500, "internal server error", type="server_error").response()

        return answer


def mount(app: FastAPI) -> None:
    """Add the OpenAI Images routes to ``app`` (made by :func:`modelapi.api.app.create_app`:
    its ``state`` holds the service, the watcher and the request-base-URL function)."""
    service: Service = app.state.service
    watcher = app.state.watcher
    base_of = app.state.request_base_url
    router = APIRouter(route_class=OpenAIRoute, tags=["openai"])
    auth_header = Header(None, alias="Authorization", description="`Bearer <API key>`")

    async def authorize(authorization: str | None) -> ApiKey:
        token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
        key = await run_in_threadpool(authenticate, service.db, token or None)
        if key is None:
            raise OpenAIError(401, "missing, unknown or revoked API key: send Authorization: Bearer <key>", code="invalid_api_key",
                              headers={"WWW-Authenticate": "Bearer"})
        return key

    def choose_model(request: Request, model_id: Any, default: str, edits: bool) -> catalog.Model:
        if model_id is None:
            model_id = default
        model = catalog.get(model_id) if isinstance(model_id, str) else None
        if model is None:
            raise OpenAIError(404, f"The model {model_id!r} does not exist; see GET /v1/models", param="model", code="model_not_found")
        if edits and model.task.image_field is None:
            raise OpenAIError(400, f"{model.model_id} generates from text: use POST /v1/images/generations", param="model")
        if not edits and model.task.image_field is not None:
            raise OpenAIError(400, f"{model.model_id} edits images: use POST /v1/images/edits", param="model")
        request.state.model = model
        return model

    def check_fields(given: set[str], known: frozenset[str]) -> None:
        unknown = sorted(given - known)
        if unknown and service.settings.strict_inputs:
            raise OpenAIError(400, f"Unknown parameter: {unknown[0]!r}.", param=unknown[0], code="unknown_parameter")
        if unknown:
            log.info("openai.ignored_fields", extra={"fields": unknown})

    async def run(request: Request, key: ApiKey, model: catalog.Model, body: dict[str, Any], response_format: Any) -> JSONResponse:
        if response_format is None:
            response_format = "url"
        if response_format not in RESPONSE_FORMATS:
            raise OpenAIError(400, f"response_format must be 'url' or 'b64_json', not {response_format!r}", param="response_format")
        base = await base_of(request)
        req = await submit(service, key, model, body, base)
        req = await watcher.until_terminal(req, service.settings.sync_timeout_s)
        return await run_in_threadpool(answer, req, response_format, base)

    def answer(req: StoredRequest, response_format: str, base: str) -> JSONResponse:
        """The OpenAI answer for a request that had its wait (on the thread pool: storage reads)."""
        headers = {"x-request-id": req.request_id, **NO_RETRY}
        if req.status is Status.COMPLETED:
            keys = req.outputs or []
            if response_format == "b64_json":
                data = [{"b64_json": base64.b64encode(service.storage.get(k)).decode("ascii")} for k in keys]
            else:
                data = [{"url": url} for url in service.result_body(req, False, base)["output"]["images"]]
            fmt = content_type_of(keys[0]).split("/")[-1] if keys else service.settings.output_format
            return JSONResponse({"created": int(req.created_at.timestamp()), "data": data, "output_format": fmt}, headers=headers)
        if req.status is Status.FAILED:
            error = req.error or {}
            raise OpenAIError(500, f"request {req.request_id} failed: {error.get('message', 'unknown error')}", type="server_error",
                              code=error.get("code"), headers=headers)
        if req.status is Status.CANCELLED:
            raise OpenAIError(409, f"request {req.request_id} was cancelled", code="cancelled", headers=headers)
        raise OpenAIError(504, f"request {req.request_id} is still {req.status.value} after {service.settings.sync_timeout_s:g} s; "
                               f"it keeps running: follow it with GET /v1/requests/{req.request_id}/status and "
                               f"/v1/requests/{req.request_id}/result", type="timeout", code="timeout", headers=headers)

    @router.post("/v1/images/generations", summary="Create images (OpenAI Images API)", response_model=ImagesResponse, responses=_ERRORS,
                 openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _GENERATION_SCHEMA}}}})
    async def generations(request: Request, authorization: str | None = auth_header) -> JSONResponse:
        key = await authorize(authorization)
        body = await _json_object(request)
        if body.get("stream"):
            raise OpenAIError(400, "streaming is not supported: leave stream unset or false", param="stream")
        check_fields(set(body) - {"stream"}, GENERATION_FIELDS)
        model = choose_model(request, body.get("model"), DEFAULT_GENERATION_MODEL, edits=False)
        try:
            inputs = build_input(model, body.get("prompt"), n=body.get("n", 1), size=body.get("size"), seed=body.get("seed"))
        except ParamError as exc:
            raise OpenAIError(400, exc.message, param=exc.param) from None
        return await run(request, key, model, inputs, body.get("response_format"))

    @router.post("/v1/images/edits", summary="Edit images (OpenAI Images API)", response_model=ImagesResponse, responses=_ERRORS,
                 openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _EDIT_SCHEMA}}}})
    async def edits(request: Request, authorization: str | None = auth_header) -> JSONResponse:
        key = await authorize(authorization)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data":
            raise OpenAIError(400, f"Content-Type must be multipart/form-data, not {ctype or 'missing'!r}")
        try:
            form = await request.form()
        except StarletteHTTPException as exc:  # a malformed multipart body
            raise OpenAIError(400, f"malformed multipart body: {exc.detail}") from None
        try:
            if "mask" in form:
                raise OpenAIError(400, "mask is not supported: the whole image is edited, following the prompt", param="mask")
            if form.get("stream") not in (None, "false"):
                raise OpenAIError(400, "streaming is not supported: leave stream unset or false", param="stream")
            check_fields(set(form.keys()) - {"stream"}, EDIT_FIELDS)
            model = choose_model(request, form.get("model"), DEFAULT_EDIT_MODEL, edits=True)
            images = []
            for upload in [*form.getlist("image"), *form.getlist("image[]")]:
                if isinstance(upload, str):
                    raise OpenAIError(400, "image must be a file (multipart file part), not a text field", param="image")
                data = await upload.read()
                images.append(f"data:image/{sniff_format(data) or 'png'};base64,{base64.b64encode(data).decode('ascii')}")
            fields = {name: form.get(name) for name in ("prompt", "n", "size", "seed", "response_format")}
        finally:
            await form.close()
        try:
            inputs = build_input(model, fields["prompt"], n=_form_int("n", fields["n"], 1), size=_text(fields["size"]),
                                 seed=_form_int("seed", fields["seed"], None), images=images)
        except ParamError as exc:
            raise OpenAIError(400, exc.message, param=exc.param) from None
        return await run(request, key, model, inputs, fields["response_format"])

    app.include_router(router)


async def _json_object(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise OpenAIError(400, f"Content-Type must be application/json, not {ctype or 'missing'!r}")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise OpenAIError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object")
    return body


def _text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ParamError("size", "must be a text field")
    return value


def _form_int(param: str, value: Any, default: int | None) -> int | None:
    """A multipart text field as an integer (``default`` when absent)."""
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ParamError(param, f"must be an integer, not {value!r}") from None


_COMMON = {
    "prompt": {"type": "string", "description": "What to draw (or how to edit)."},
    "n": {"type": "integer", "minimum": 1, "maximum": 15, "default": 1, "description": "How many images, exactly (whatever the prompt says)."},
    "size": {"type": "string", "description": "'auto', or 'WxH': the documented size of the same aspect ratio (dreamina: the exact documented size)."},
    "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": "url"},
    "seed": {"type": "integer", "description": "Extension: the seed of the first image (image i uses seed + i); seedream only."},
    "user": {"type": "string", "description": "Ignored."},
}
_GENERATION_SCHEMA = {"type": "object", "required": ["prompt"], "properties": {
    "model": {"type": "string", "default": DEFAULT_GENERATION_MODEL}, **_COMMON}}
_EDIT_SCHEMA = {"type": "object", "required": ["prompt", "image"], "properties": {
    "image": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "The reference images (also as image[])."},
    "model": {"type": "string", "default": DEFAULT_EDIT_MODEL, "enum": [DEFAULT_EDIT_MODEL, "bytedance/dreamina-4-0/edit"]}, **_COMMON}}


class ImageData(BaseModel):
    """One image: ``url`` (response_format ``url``) or ``b64_json`` (``b64_json``)."""

    url: str | None = None
    b64_json: str | None = None


class ImagesResponse(BaseModel):
    """OpenAI's images answer: ``created`` (Unix seconds: when the request was made), ``data``
    (n images, in order), ``output_format``."""

    created: int
    data: list[ImageData]
    output_format: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": what} for status, what in {
        400: "A parameter this layer refuses (param names it), or a malformed body",
        401: "Missing, unknown or revoked API key",
        404: "Unknown model",
        409: "The request was cancelled",
        422: "The model's input rules (e.g. a reference image's size)",
        429: "The key's queue cap",
        500: "The request failed (code: its error code)",
        503: "Shutting down, or the database or the file store is unavailable",
        504: "Still running after --sync-timeout-s; the message names the request id",
    }.items()
}
_ERRORS[413] = {"description": "Body over the cap (answered before the route, in this server's own error shape)"}
