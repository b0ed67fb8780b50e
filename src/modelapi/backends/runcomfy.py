"""The ``runcomfy`` backend: the hosted Model API itself (the same contract this server serves),
with the operator's key: the request's body is submitted as given (its reference images as
URLs of our storage, which the upstream must reach; ``seed`` set to the request's seed), its
status polled (queue position and progress mapped onto ours), its outputs copied into our storage.

A submit carries ``Idempotency-Key: <request id>.<attempt>``, so trying the same run again after
a lost answer never starts a second upstream job. When the worker stops, a cancel is forwarded
(it takes effect while the upstream job is still queued). While the upstream queues it, our
request (in_progress: a worker holds it) has a ``requests.upstream`` record that says so, with the
upstream's queue position and ``cancel_url``: clients see it in_queue at that position, and a
client's cancel goes upstream (:func:`forward_cancel`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx

from .. import catalog
from ..core.jobs import Done, Failed, Outcome, Stopped
from ..core.images import FORMATS, encode
from .base import Job, Rejected, Unavailable, decode_image, short, text_of
from .modelark import MAX_ERROR_BYTES, MAX_EVENT_BYTES, _read_capped

log = logging.getLogger("modelapi.backends")

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"
POLL_S = (0.25, 2.0)
"""The first and the longest wait between two status polls, seconds."""
REFUSED = {"content_policy": "content_policy", "invalid_input": "upstream_rejected"}
"""Upstream ``error.code`` -> ours, for failures that must not fall back."""


@dataclass(frozen=True)
class RunComfyConfig:
    """From the environment: ``MODELAPI_RUNCOMFY_API_KEY`` (required), ``MODELAPI_RUNCOMFY_BASE_URL``
    (default ``https://model-api.runcomfy.net``), ``MODELAPI_RUNCOMFY_TIMEOUT_S`` (one request's
    total deadline upstream, queue included, seconds; default 1800)."""

    api_key: str
    base_url: str = DEFAULT_BASE_URL
    timeout_s: float = 1800.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "RunComfyConfig":
        """Raises ``ValueError`` naming ``MODELAPI_RUNCOMFY_API_KEY`` when it is not set."""
        env = dict(os.environ if env is None else env)
        key = env.get("MODELAPI_RUNCOMFY_API_KEY", "").strip()
        if not key:
            raise ValueError("MODELAPI_RUNCOMFY_API_KEY is not set")
        return cls(key, env.get("MODELAPI_RUNCOMFY_BASE_URL") or DEFAULT_BASE_URL,
                   float(env.get("MODELAPI_RUNCOMFY_TIMEOUT_S") or 1800.0))


def _error(status: int, response: httpx.Response) -> Exception:
    """The exception for an error answer of the contract (``{"error_code", "error_message"}``)."""
    try:
        payload = json.loads(_read_capped(response, MAX_ERROR_BYTES))
    except (ValueError, Unavailable):
        payload = {}
    message = short(str(payload.get("error_message") or payload.get("detail") or status)) if isinstance(payload, dict) else str(status)
    if status == 429 or status >= 500:
        return Unavailable(f"{status} {message}")
    if status in (400, 413, 422):
        return Rejected("upstream_rejected", f"RunComfy {status}: {message}")
    return Unavailable(f"{status} {message}", retry=False)


class RunComfyBackend:
    """Runs requests on the hosted Model API (or another modelapi server).

    Args:
        config: key, base URL, deadline.
        public_url: our own base URL (``--public-url``), under which file-storage reference URLs
            are signed; the upstream must reach it (S3 storage gives presigned store URLs).
        url_ttl_s: lifetime of those reference URLs, seconds.
    """

    name = "runcomfy"

    def __init__(self, config: RunComfyConfig, public_url: str, url_ttl_s: float = 3600.0) -> None:
        self.config, self.public_url, self.url_ttl_s = config, public_url, url_ttl_s
        self.client = httpx.Client(base_url=config.base_url.rstrip("/"), follow_redirects=False,
                                   headers={"Authorization": f"Bearer {config.api_key}"},
                                   timeout=httpx.Timeout(30.0, connect=10.0))

    def health(self) -> dict[str, Any]:
        return {"base_url": self.config.base_url}

    def run(self, job: Job) -> Outcome:
        """Submit, poll until terminal, copy the outputs. ``Done.metadata``: the upstream's own
        metadata and ``upstream`` (``{model, request_id}``); ``Done.ledger``: ``upstream_units``.

        Raises:
            Unavailable: 429, 5xx, 401/403/404 (not retried), a timeout, a connection error, the
                upstream request failing for another reason than its input.
            Rejected: 400/413/422 at submit, or the upstream request failed ``content_policy`` /
                ``invalid_input``.
        """
        req = job.request
        deadline = time.monotonic() + self.config.timeout_s
        body = dict(req.inputs)
        field = catalog.models()[req.model_id].task.image_field
        if field and req.input_files:
            expires = time.time() + self.url_ttl_s
            body[field] = [job.storage.url(key, expires, self.public_url) for key in req.input_files]
        if "seed" in catalog.models()[req.model_id].input_schema.get("properties", {}):
            body["seed"] = req.seed
        submitted = False
        try:
            upstream_id, cancel_url = self._submit(req.model_id, body, f"{req.request_id}.{job.attempt}")
            submitted = True
            result = self._wait(job, upstream_id, cancel_url, deadline)
            if result is None:
                return Stopped()
            if result.get("status") == "cancelled":  # a client's cancel forwarded (ours is cancelled already), or the operator's
                return Failed("upstream_cancelled", f"RunComfy: the upstream request {upstream_id} was cancelled")
            return self._copy(job, upstream_id, result, deadline)
        except Exception as exc:
            if submitted:  # another try or backend goes on: no upstream queue shown (nor cancel forwarded)
                job.on_upstream(None)
            if isinstance(exc, httpx.TimeoutException):
                raise Unavailable("timeout") from None
            if isinstance(exc, httpx.TransportError):
                raise Unavailable(f"connection error: {type(exc).__name__}") from None
            raise

    def _submit(self, model_id: str, body: dict[str, Any], idempotency_key: str) -> tuple[str, str]:
        """(the upstream's request id, its cancel URL)."""
        with self.client.stream("POST", f"/v1/models/{model_id}", json=body,
                                headers={"Idempotency-Key": idempotency_key}) as response:
            if response.status_code not in (200, 201, 202):
                raise _error(response.status_code, response)
            answer = json.loads(_read_capped(response, MAX_ERROR_BYTES))
        upstream_id = str(answer["request_id"])
        return upstream_id, str(answer.get("cancel_url") or f"{self.config.base_url.rstrip('/')}/v1/requests/{upstream_id}/cancel")

    def _get(self, path: str) -> dict[str, Any]:
        with self.client.stream("GET", path) as response:
            if response.status_code != 200:
                raise _error(response.status_code, response)
            answer = json.loads(_read_capped(response, MAX_ERROR_BYTES))
        return dict(answer)

    def _wait(self, job: Job, upstream_id: str, cancel_url: str, deadline: float) -> dict[str, Any] | None:
        """The upstream result once terminal (``{"status": "cancelled"}`` when cancelled), or
        None when the worker stopped (cancel forwarded). Each change of the upstream's status or
        queue position is recorded (``job.on_upstream``)."""
        delay = POLL_S[0]
        seen: tuple[Any, Any] | None = None
        while True:
            status = self._get(f"/v1/requests/{upstream_id}/status")
            if (status.get("status"), status.get("queue_position")) != seen:  # recorded first: ours leaves in_queue with it
                seen = (status.get("status"), status.get("queue_position"))
                job.on_upstream({"backend": self.name, "request_id": upstream_id, "status": seen[0],
                                 "queue_position": seen[1], "cancel_url": cancel_url})
            if status.get("status") == "cancelled":
                return {"status": "cancelled"}
            if status.get("status") in ("completed", "failed"):
                return self._get(f"/v1/requests/{upstream_id}/result")
            if isinstance(status.get("progress"), (int, float)):
                job.progress(min(0.99, float(status["progress"])))
            if job.should_stop():
                try:
                    self.client.post(f"/v1/requests/{upstream_id}/cancel")
                except httpx.HTTPError as exc:
                    log.warning("cancel of upstream %s not forwarded: %s", upstream_id, exc)
                return None
            if time.monotonic() + delay > deadline:
                raise Unavailable("timeout")
            time.sleep(delay)
            delay = min(delay * 2, POLL_S[1])

    def _copy(self, job: Job, upstream_id: str, result: dict[str, Any], deadline: float) -> Outcome:
        if result.get("status") != "completed":
            error = result.get("error") or {}
            code, message = str(error.get("code") or result.get("status")), short(str(error.get("message") or ""))
            if code in REFUSED:
                raise Rejected(REFUSED[code], f"RunComfy {code}: {message}")
            raise Unavailable(f"upstream {result.get('status')}: {code}")
        urls = list((result.get("output") or {}).get("images") or [])
        if not urls:
            raise Unavailable("no image in the upstream result")
        content_type, ext = FORMATS[job.output_format]
        upstream_meta = result.get("metadata") or {}
        prompt = str(job.request.inputs.get(catalog.models()[job.request.model_id].task.prompt_field, ""))
        keys = []
        for i, url in enumerate(urls):
            if time.monotonic() > deadline:
                raise Unavailable("timeout")
            with httpx.stream("GET", url, timeout=60.0, follow_redirects=False) as response:
                if response.status_code != 200:
                    raise Unavailable(f"output download answered {response.status_code}")
                data = _read_capped(response, MAX_EVENT_BYTES)
            try:
                image = decode_image(data, job.max_pixels)
            except ValueError as exc:
                raise Unavailable(f"unreadable image: {exc}") from None
            key = f"outputs/{job.request.request_id}/{job.attempt}/{i}.{ext}"
            job.storage.put(key, encode(image, job.output_format, text_of(job, self.name, prompt, job.request.seed)),
                            content_type)
            keys.append(key)
            if i + 1 < len(urls):
                job.on_stored(list(keys))
        metadata = {k: v for k, v in upstream_meta.items() if k not in ("backend", "backends_tried", "upstream")}
        metadata.update({"image_count": len(keys), "seed": result.get("seed", job.request.seed),
                         "output_format": job.output_format,
                         "upstream": {"model": job.request.model_id, "request_id": upstream_id}})
        metadata.setdefault("timings", {})
        return Done(keys, metadata, ledger={"upstream_units": len(keys)})


def forward_cancel(record: dict[str, Any], config: RunComfyConfig) -> bool:
    """Forward a client's cancel of a request the upstream still queues (``record``: the
    request's ``upstream``, see :meth:`RunComfyBackend._wait`) to the upstream's ``cancel_url``
    — only one under ``config.base_url``, so the operator's key goes nowhere else. True when the
    upstream cancelled it; False when it is running there already, or did not answer (10 s)."""
    base = config.base_url.rstrip("/") + "/"
    url = str(record.get("cancel_url") or "")
    if not url.startswith(base):
        log.warning("cancel of upstream %s not forwarded: its cancel_url is not under %s", record.get("request_id"), base)
        return False
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {config.api_key}"}, follow_redirects=False,
                          timeout=httpx.Timeout(10.0)) as client, client.stream("POST", url) as response:
            if response.status_code != 200:
                log.warning("cancel of upstream %s answered %d", record.get("request_id"), response.status_code)
                return False
            answer = json.loads(_read_capped(response, MAX_ERROR_BYTES))
    except (httpx.HTTPError, ValueError, Unavailable) as exc:
        log.warning("cancel of upstream %s not forwarded: %s", record.get("request_id"), exc)
        return False
    return isinstance(answer, dict) and answer.get("outcome") == "cancelled"
