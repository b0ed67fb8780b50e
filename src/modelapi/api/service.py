"""The application service: what each route does, with no HTTP in it.

Routes parse and authorise, then call one method here; errors are raised as
:class:`~modelapi.errors.APIStatusError` subclasses and mapped to the wire by the app. Methods
that build absolute URLs take ``base_url``: the base the current HTTP request reached the API at,
computed once per request by the app (a dependency of its routes; see
:func:`modelapi.api.app.forwarded_base_url`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
from typing import Any

import sqlalchemy as sa

from .. import catalog
from ..core import bodies, delivery
from ..core.auth import ApiKey, hash_key
from ..core.context import Core
from ..core.fetch import FetchPolicy, check_url, decode_image, fetch_bytes, read_data_uri
from ..core.files import FileStore
from ..core.jobs import Polled, Request, new_request_id
from ..core.storage import content_type_of
from ..errors import APIStatusError, AuthenticationError, InputError, NotFoundError, RateLimitError, ValidationError
from ..types import Status
from ..validation import check_image, check_input, image_fields, sniff_format
from .errors import ServiceUnavailable

log = logging.getLogger("modelapi.service")


class Service:
    """Everything the routes need, built once per process."""

    def __init__(self, core: Core) -> None:
        settings = core.settings
        self.settings = settings
        self.db = core.db
        self.jobs = core.jobs
        self.storage = core.storage
        self.files = FileStore(core.db)
        self.draining = threading.Event()
        self.policy = FetchPolicy.from_settings(settings)

    # -- submit ------------------------------------------------------------------------------
    def submit(self, key: ApiKey, model: catalog.Model, body: Any, idempotency_key: str | None,
               webhook: str | None = None, *, base_url: str) -> tuple[Request, list[str]]:
        """Validate, fetch and check the reference images, store them, store the request and
        put it on the durable queue — in that order, so that a 2xx means durably accepted.
        Returns the request and the body's fields that the schema does not know, which were
        ignored (the hosted documentation does not forbid them; ``--strict-inputs`` refuses
        them with a 422 instead). The webhook record keeps ``base_url``: the delivery, later and
        in another process, builds the body's URLs on it.

        Raises:
            ValidationError: 422, one detail entry per problem (schema and image rules).
            RateLimitError: 429, the key already has ``max_queued_per_key`` requests queued.
            ServiceUnavailable: 503 while shutting down.
            sqlalchemy.exc.OperationalError: the database is unreachable (the app answers 503).
        """
        if self.draining.is_set():
            raise ServiceUnavailable("the server is shutting down; retry shortly")
        ignored: list[str] = []
        if isinstance(body, dict) and not self.settings.strict_inputs:
            known = model.input_schema.get("properties", {})
            ignored = sorted(k for k in body if k not in known)
            body = {k: v for k, v in body.items() if k in known}
        inputs, problems = check_input(model.input_schema, body)
        if not problems:
            problems = catalog.engine_limits(inputs)
        if webhook is not None:
            try:
                check_url(webhook, self.policy, loc=["query", "webhook"])  # resolves; connects to nothing
            except InputError as exc:
                problems.append(exc.to_detail())
        if problems:
            raise ValidationError("Input fails the model's schema", problems)
        body_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if idempotency_key:
            earlier = self.jobs.find_idempotent(key.id, idempotency_key)
            if earlier is not None:
                return self._same_request(earlier, body_hash), ignored
        if self.jobs.count_queued(key.id, up_to=self.settings.max_queued_per_key) >= self.settings.max_queued_per_key:
            raise RateLimitError(
                f"this key already has {self.settings.max_queued_per_key} requests in the queue",
                retry_after_s=5,
            )
        request_id = new_request_id()
        input_files = self._store_images(model, inputs, key, request_id, base_url)
        seed = inputs.get("seed")
        try:
            req = self.jobs.create(
                request_id=request_id, owner_key_id=key.id, model_id=model.model_id, inputs=inputs,
                input_files=input_files, seed=seed if seed is not None else secrets.randbelow(2**31),
                idempotency_key=idempotency_key, body_hash=body_hash,
                webhook={"url": webhook, "base_url": base_url} if webhook else None,
            )
        except sa.exc.IntegrityError:  # the same idempotency key, submitted at the same moment
            earlier = self.jobs.find_idempotent(key.id, idempotency_key or "")
            if earlier is None:
                raise
            return self._same_request(earlier, body_hash), ignored
        if ignored:
            log.info("request.ignored_fields", extra={"request_id": req.request_id, "fields": ignored})
        return req, ignored

    @staticmethod
    def _same_request(earlier: Request, body_hash: str) -> Request:
        if earlier.body_hash != body_hash:
            raise ValidationError("Idempotency-Key reused with a different body", [
                {"loc": ["header", "Idempotency-Key"], "msg": "This key was used with a different request body", "type": "idempotency_mismatch"}
            ])
        return earlier

    def _store_images(self, model: catalog.Model, inputs: dict[str, Any], key: ApiKey, request_id: str,
                      base_url: str) -> list[str]:
        problems: list[dict[str, Any]] = []
        loaded: list[tuple[bytes, str]] = []
        for field, rules in image_fields(model.input_schema).items():
            for i, uri in enumerate(inputs.get(field, [])):
                loc = ["body", field, i]
                try:
                    data = self.load_input(uri, key, loc, base_url)
                    image = decode_image(data, self.policy, loc=loc)
                except InputError as exc:
                    problems.append(exc.to_detail())
                    continue
                problems += check_image(rules, file_bytes=len(data), width=image.width, height=image.height, loc=loc)
                loaded.append((data, sniff_format(data) or "png"))
        if problems:
            raise ValidationError("Input images fail the model's rules", problems)
        keys = []
        for i, (data, fmt) in enumerate(loaded):
            keys.append(f"inputs/{request_id}/{i}.{'jpg' if fmt == 'jpeg' else 'png'}")
            self._put(keys[-1], data, content_type_of(keys[-1]))
        return keys

    def load_input(self, uri: str, key: ApiKey, loc: list[Any], base_url: str) -> bytes:
        """The bytes of one image input: an upload to this server (under ``base_url`` or the
        configured base; no network fetch), a ``data:`` URI, or an http(s) URL fetched behind
        the SSRF guard."""
        for base in {base_url, self.settings.base_url}:
            if uri.startswith(f"{base}/v1/files/"):
                return self.read_upload(uri[len(f"{base}/v1/files/"):], key, loc)
        if uri.startswith("data:"):
            return read_data_uri(uri, self.policy, loc=loc)
        return fetch_bytes(uri, self.policy, loc=loc)

    # -- uploads -----------------------------------------------------------------------------
    def upload(self, key: ApiKey, data: bytes, base_url: str) -> dict[str, Any]:
        """Store an uploaded JPEG/PNG image, decoded whole first (not only its signature
        sniffed) under the input-image policy (``max_input_bytes``, ``max_input_pixels``).
        Returns ``{"id", "url", "bytes", "content_type"}``.

        Raises:
            ValidationError: 422 naming ``["body", "file"]``: over ``max_input_bytes``
                (``file_too_large``), not a JPEG or PNG by content (``image_format``), over
                ``max_input_pixels`` (``image_too_large``), or truncated or undecodable
                (``image_corrupt``).
            APIStatusError: 413 (413001), the key's stored uploads and this one together would
                be over ``max_upload_bytes_per_key`` bytes (``--max-upload-bytes-per-key``;
                checked before storing, so uploads racing each other may pass it by a few).
            ServiceUnavailable: 503, the file store cannot take the file.
        """
        loc = ["body", "file"]
        try:
            decode_image(data, self.policy, loc=loc).close()
        except InputError as exc:
            raise ValidationError("Invalid image", [exc.to_detail()]) from None
        quota, used = self.settings.max_upload_bytes_per_key, self.files.stored_bytes(key.id)
        if used + len(data) > quota:
            raise APIStatusError(f"upload quota exceeded: this key's uploads would hold {used + len(data)} bytes, "
                                 f"over its {quota}-byte quota (--max-upload-bytes-per-key)", status_code=413)
        fmt = sniff_format(data)
        assert fmt is not None  # decoded as one
        upload = self.files.new(key.id, fmt, len(data))
        self._put(upload.storage_key, data, upload.content_type)
        self.files.add(upload)
        return {"id": upload.id, "url": f"{base_url}/v1/files/{upload.id}", "bytes": upload.bytes,
                "content_type": upload.content_type}

    def webhook_secret(self, key: ApiKey) -> dict[str, str]:
        """``{"key": "whsec_..."}``: the key's webhook signing secret (Standard Webhooks)."""
        return {"key": delivery.signing_secret(self.db, key.id)}

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        """Store an input. Raises ServiceUnavailable (503, with Retry-After) when the store
        refuses or cannot be reached: nothing was accepted, and the client may retry."""
        try:
            self.storage.put(key, data, content_type)
        except Exception as exc:  # noqa: BLE001 - a full disk, a read-only folder, a bucket refusing writes
            log.error("storage refused %s: %s: %s", key, type(exc).__name__, exc)
            raise ServiceUnavailable(f"the file store cannot take the file now ({type(exc).__name__}); retry shortly") from None

    def upload_record(self, file_id: str, key: ApiKey) -> dict[str, Any] | None:
        return self.files.get(file_id, key.id)

    def read_upload(self, file_id: str, key: ApiKey, loc: list[Any]) -> bytes:
        record = self.upload_record(file_id, key)
        if record is None:
            raise InputError("Unknown file: upload it with POST /v1/files using the same API key", loc, "file_unknown")
        return self.storage.get(record["storage_key"])

    def engine_info(self, live: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The engine of the oldest of ``live`` workers (default: read now); ``{}`` when none."""
        live = self.jobs.workers.live() if live is None else live
        return dict(live[0]["engine"]) if live else {}

    # -- reads -------------------------------------------------------------------------------
    def get(self, request_id: str, key: ApiKey) -> Request:
        """Raises NotFoundError for unknown requests and for another key's (the same 404)."""
        req = self.jobs.get(request_id, key.id)
        if req is None:
            raise NotFoundError(f"request {request_id} not found", request_id=request_id)
        return req

    def urls(self, request_id: str, base_url: str) -> dict[str, str]:
        return bodies.urls(base_url, request_id)

    def status(self, request_id: str, token: str | None, base_url: str) -> dict[str, Any]:
        """The status body for the holder of API key ``token``, checked in the same query.

        Raises:
            AuthenticationError: missing, unknown or revoked key.
            NotFoundError: unknown request, or another key's (the same 404).
        """
        polled = self.jobs.poll(request_id, hash_key(token)) if token else (False, None)
        return self._polled_body(request_id, polled, base_url)

    async def status_async(self, request_id: str, token: str | None, base_url: str) -> dict[str, Any]:
        """:meth:`status` without blocking (``jobs.async_reads`` must exist: Postgres)."""
        polled = await self.jobs.poll_async(request_id, hash_key(token)) if token else (False, None)
        return self._polled_body(request_id, polled, base_url)

    def _polled_body(self, request_id: str, polled: tuple[bool, Polled | None], base_url: str) -> dict[str, Any]:
        key_ok, found = polled
        if not key_ok:
            raise AuthenticationError("missing, unknown or revoked API key")
        if found is None:
            raise NotFoundError(f"request {request_id} not found", request_id=request_id)
        return bodies.status_body(base_url, request_id, found.status, found.progress, found.queue_position,
                                  bodies.partial_urls(self.storage, found.partial_outputs, self.settings.url_ttl_s, base_url))

    def status_body(self, req: Request, base_url: str) -> dict[str, Any]:
        return bodies.request_status_body(req, base_url=base_url, storage=self.storage, url_ttl_s=self.settings.url_ttl_s)

    def result_body(self, req: Request, include_cost: bool, base_url: str) -> dict[str, Any]:
        return bodies.result_body(req, base_url=base_url, storage=self.storage, url_ttl_s=self.settings.url_ttl_s,
                                  include_cost=include_cost)

    def list_requests(self, key: ApiKey, *, status: Status | None, model_id: str | None, limit: int,
                      cursor: str | None, base_url: str) -> dict[str, Any]:
        """A page of the key's requests, newest first: ``{"requests": [item], "next_cursor": str |
        None}``; each item is the status body plus ``model_id``, ``created_at`` and
        ``finished_at``. ``cursor`` is a page's ``next_cursor`` (opaque).

        Raises:
            ValidationError: 422 for an unknown ``model`` or a malformed ``cursor``.
        """
        if model_id is not None and catalog.get(model_id) is None:
            raise ValidationError("Unknown model", [
                {"loc": ["query", "model"], "msg": "Must be one of the model ids of GET /v1/models", "type": "enum"}])
        before = None
        if cursor is not None:
            try:
                before = int(base64.urlsafe_b64decode(cursor.encode("ascii") + b"==").decode("ascii"))
            except (ValueError, UnicodeError):
                raise ValidationError("Malformed cursor", [
                    {"loc": ["query", "cursor"], "msg": "Must be a next_cursor from this route", "type": "value_error"}]) from None
        page = self.jobs.page(key.id, status=status, model_id=model_id, limit=limit, before_seq=before)
        next_cursor = None
        if len(page) == limit:
            next_cursor = base64.urlsafe_b64encode(str(page[-1].seq).encode()).decode().rstrip("=")
        return {"requests": [self.status_body(r, base_url) | {"model_id": r.model_id, "created_at": bodies.iso(r.created_at),
                                                    "finished_at": bodies.iso(r.finished_at)} for r in page],
                "next_cursor": next_cursor}

    def cancel(self, req: Request) -> dict[str, Any]:
        """in_queue -> cancelled (and off the queue); anything else -> not_cancellable. Idempotent."""
        if req.status is Status.IN_QUEUE and self.jobs.cancel(req):
            outcome = "cancelled"
        else:
            req = self.jobs.get(req.request_id) or req
            outcome = "cancelled" if req.status is Status.CANCELLED else "not_cancellable"
        return {"request_id": req.request_id, "status": Status.CANCELLED.value if outcome == "cancelled" else req.status.value, "outcome": outcome}
