"""The ``jimeng`` backend: Volcengine's Jimeng 4.0 visual API (``req_key: "jimeng_t2i_v40"``) for
dreamina edit, with ``scale``, ``force_single`` and the exact width and height.

Asynchronous upstream: ``POST {base}?Action=CVSync2AsyncSubmitTask&Version=2022-08-31`` gives a
``task_id``; ``...Action=CVSync2AsyncGetResult...`` is polled (0.25 s, doubling to 2 s) until
``done``. Every call is signed with the operator's access key and secret key (Volcengine
signature V4, region ``cn-north-1``, service ``cv``) by the official ``volcengine`` SDK's signer
(``volcengine.auth.SignerV4``; ``pip install 'modelapi[jimeng]'``); the HTTP calls themselves are
httpx, bounded like the other upstreams.

Reference images reach the provider as URLs of our storage (the API takes URLs only: signed
under ``--public-url`` for file storage, presigned for S3 — **the provider must reach them**).
Outputs are asked for as ``binary_data_base64`` (``return_url: false``) without a logo, decoded
(bounded), re-encoded and stored as ours; a provider URL never reaches a client.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..core.jobs import Done, Outcome, Stopped
from ..core.images import FORMATS, encode
from .base import Job, Rejected, Unavailable, decode_image, short, text_of
from .modelark import MAX_ERROR_BYTES, MAX_EVENT_BYTES, SEED_MAX

log = logging.getLogger("modelapi.backends")

DEFAULT_BASE_URL = "https://visual.volcengineapi.com"
REQ_KEY = "jimeng_t2i_v40"
VERSION = "2022-08-31"
REGION, SERVICE = "cn-north-1", "cv"
POLL_S = (0.25, 2.0)
"""The first and the longest wait between two result polls, seconds."""
MAX_ANSWER_BYTES = 15 * MAX_EVENT_BYTES // 4
"""Largest result answer read (up to 15 base64 images)."""
CONTENT_POLICY = {50411: "input image refused", 50412: "input text refused", 50413: "input text refused",
                  50511: "output image refused", 50512: "output text refused"}
"""Business codes of the provider's moderation: the request fails ``content_policy``, never
falls back (50511 is documented as retryable; a retry here would be billed again, so it is not)."""
RATE = (50429, 50430)
"""Rate and concurrency limits: unavailable, retried then fallen back."""

MAPPING: dict[str, str] = {
    # provider field: how it is made from dreamina edit's inputs
    "req_key": '"jimeng_t2i_v40"',
    "prompt": "prompt",
    "image_urls": "image_urls, as URLs of our storage (signed / presigned)",
    "width, height": "width×height: \"2560x1440(16:9)\" -> 2560, 1440",
    "scale": "scale (default 0.5)",
    "force_single": "force_single (default false)",
    "seed": "the request's seed (0..2147483647; undocumented for 4.0, documented for 3.x)",
    "req_json (result)": '{"return_url": false, "logo_info": {"add_logo": false}}',
}
"""What each of our fields becomes in the provider's request, in one table (docs/BACKENDS.md)."""


@dataclass(frozen=True)
class JimengConfig:
    """From the environment: ``MODELAPI_JIMENG_ACCESS_KEY`` and ``MODELAPI_JIMENG_SECRET_KEY``
    (both required), ``MODELAPI_JIMENG_BASE_URL`` (default ``https://visual.volcengineapi.com``),
    ``MODELAPI_JIMENG_TIMEOUT_S`` (one request's total time upstream, queue included, seconds;
    default 600)."""

    access_key: str
    secret_key: str
    base_url: str = DEFAULT_BASE_URL
    timeout_s: float = 600.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "JimengConfig":
        """Raises ``ValueError`` naming the variable that is not set, or saying the
        ``volcengine`` SDK is not installed."""
        env = dict(os.environ if env is None else env)
        keys = {}
        for name in ("MODELAPI_JIMENG_ACCESS_KEY", "MODELAPI_JIMENG_SECRET_KEY"):
            keys[name] = env.get(name, "").strip()
            if not keys[name]:
                raise ValueError(f"{name} is not set")
        try:
            import volcengine.auth.SignerV4  # noqa: F401
        except ImportError:
            raise ValueError("the volcengine SDK is not installed (pip install 'modelapi[jimeng]')") from None
        return cls(keys["MODELAPI_JIMENG_ACCESS_KEY"], keys["MODELAPI_JIMENG_SECRET_KEY"],
                   env.get("MODELAPI_JIMENG_BASE_URL") or DEFAULT_BASE_URL,
                   float(env.get("MODELAPI_JIMENG_TIMEOUT_S") or 600.0))


def request_body(inputs: dict[str, Any], image_urls: list[str], seed: int) -> dict[str, Any]:
    """The submit body for dreamina edit's validated ``inputs`` (see :data:`MAPPING`).

    Args:
        image_urls: the reference images as URLs the provider can fetch, in request order.
        seed: the request's seed (outside 0..2147483647: modulo 2^31).
    """
    from ..series.params import parse_size  # here: series.params imports the engine's types

    width, height = parse_size(inputs["width×height"])
    body: dict[str, Any] = {
        "req_key": REQ_KEY, "prompt": inputs["prompt"], "image_urls": image_urls, "width": width, "height": height,
        "scale": float(inputs.get("scale", 0.5)), "force_single": bool(inputs.get("force_single", False)),
        "seed": seed if 0 <= seed <= SEED_MAX else seed % (SEED_MAX + 1),
    }
    return body


def sign(method: str, url: str, query: dict[str, str], body: bytes, access_key: str, secret_key: str) -> dict[str, str]:
    """The headers of a signed call (``Content-Type``, ``Host``, ``X-Date``,
    ``X-Content-Sha256``, ``Authorization``), made by the ``volcengine`` SDK's signer."""
    from volcengine.Credentials import Credentials
    from volcengine.auth.SignerV4 import SignerV4
    from volcengine.base.Request import Request

    parts = urlsplit(url)
    request = Request()
    request.set_method(method)
    request.set_path(parts.path or "/")
    request.set_query(dict(query))
    request.set_body(body)
    request.set_headers({"Content-Type": "application/json", "Host": parts.netloc})
    SignerV4.sign(request, Credentials(access_key, secret_key, SERVICE, REGION))
    return dict(request.headers)


def _business_error(payload: dict[str, Any], status: int) -> Exception:
    """The exception for an answer whose ``code`` is not 10000 (or an HTTP error)."""
    meta_error = (payload.get("ResponseMetadata") or {}).get("Error") if isinstance(payload.get("ResponseMetadata"), dict) else None
    if isinstance(meta_error, dict):  # the gateway's own errors (signature, key, throttling)
        name = str(meta_error.get("Code") or status)
        if status == 429 or status >= 500:
            return Unavailable(f"{status} {name}")
        return Unavailable(f"{status} {name}", retry=False)
    code = payload.get("code", payload.get("status"))
    message = short(str(payload.get("message") or ""))
    if isinstance(code, int) and code in CONTENT_POLICY:
        return Rejected("content_policy", f"Jimeng {code}: {message}")
    if (isinstance(code, int) and code in RATE) or status == 429 or status >= 500 or (isinstance(code, int) and code >= 50500):
        return Unavailable(f"{status} {code}")
    if status in (401, 403, 404):
        return Unavailable(f"{status} {code}", retry=False)
    return Rejected("upstream_rejected", f"Jimeng {code}: {message}")


class JimengBackend:
    """Runs dreamina edit on Jimeng 4.0 with the operator's access key and secret key.

    Args:
        config: keys, base URL, deadline.
        public_url: our own base URL (``--public-url``), under which file-storage reference URLs
            are signed; the provider must reach it (S3 storage gives presigned store URLs).
        url_ttl_s: lifetime of those reference URLs, seconds.
    """

    name = "jimeng"

    def __init__(self, config: JimengConfig, public_url: str, url_ttl_s: float = 3600.0) -> None:
        self.config, self.public_url, self.url_ttl_s = config, public_url, url_ttl_s
        self.url = config.base_url.rstrip("/") or config.base_url
        self.client = httpx.Client(follow_redirects=False, timeout=httpx.Timeout(30.0, connect=10.0),
                                   limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))

    def health(self) -> dict[str, Any]:
        return {"base_url": self.config.base_url, "req_key": REQ_KEY}

    def run(self, job: Job) -> Outcome:
        """Submit, poll until ``done``, store the images. ``Done.metadata``: ``upstream``
        (``{model: "jimeng_t2i_v40", request_id, task_id}``); ``Done.ledger``:
        ``upstream_units`` (the images made, which the provider bills).

        Raises:
            Unavailable: HTTP 429/5xx, codes 50429/50430/505xx, 401/403/404 and the gateway's
                signature or key errors (not retried), a timeout, a connection error, a task
                ``not_found`` or ``expired``.
            Rejected: a moderation code (504xx/505xx refusals: ``content_policy``), any other
                refusal of the request (``upstream_rejected``), or a model it does not serve.
        """
        req = job.request
        if req.model_id != "bytedance/dreamina-4-0/edit":
            raise Rejected("upstream_rejected", f"jimeng does not serve {req.model_id}")
        t0 = time.monotonic()
        deadline = t0 + self.config.timeout_s
        expires = time.time() + self.url_ttl_s
        refs = [job.storage.url(key, expires, self.public_url) for key in req.input_files]
        body = request_body(req.inputs, refs, req.seed)
        try:
            submitted = self._call("CVSync2AsyncSubmitTask", body, MAX_ERROR_BYTES)
            task_id = str((submitted.get("data") or {}).get("task_id") or "")
            if not task_id:
                raise Unavailable("no task_id in the submit answer")
            result = self._wait(job, task_id, deadline)
            if result is None:
                return Stopped()
        except httpx.TimeoutException:
            raise Unavailable("timeout") from None
        except httpx.TransportError as exc:
            raise Unavailable(f"connection error: {type(exc).__name__}") from None
        t_inferred = time.monotonic()
        images = (result.get("data") or {}).get("binary_data_base64") or []
        if not images:
            raise Unavailable("no image in the answer")
        content_type, ext = FORMATS[job.output_format]
        keys, sizes = [], []
        for i, b64 in enumerate(images):
            try:
                image = decode_image(base64.b64decode(str(b64), validate=False), job.max_pixels)
            except ValueError as exc:
                raise Unavailable(f"unreadable image: {exc}") from None
            key = f"outputs/{req.request_id}/{job.attempt}/{i}.{ext}"
            job.storage.put(key, encode(image, job.output_format, text_of(job, self.name, body["prompt"], body["seed"])),
                            content_type)
            keys.append(key)
            sizes.append(image.size)
            if i + 1 < len(images):
                job.on_stored(list(keys))
        return Done(keys, {
            "image_count": len(keys), "width": sizes[0][0], "height": sizes[0][1], "seed": req.seed,
            "output_format": job.output_format,
            "upstream": {"model": REQ_KEY, "request_id": submitted.get("request_id"), "task_id": task_id},
            "timings": {"fetch_s": 0.0, "inference_s": round(t_inferred - t0, 4),
                        "postprocess_s": round(time.monotonic() - t_inferred, 4)},
        }, ledger={"upstream_units": len(keys)})

    def _call(self, action: str, body: dict[str, Any], cap: int) -> dict[str, Any]:
        """One signed call; its answer when ``code`` is 10000, else the matching exception."""
        query = {"Action": action, "Version": VERSION}
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = sign("POST", self.url, query, data, self.config.access_key, self.config.secret_key)
        with self.client.stream("POST", self.url, params=query, content=data, headers=headers) as response:
            raw = bytearray()
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > (cap if response.status_code == 200 else MAX_ERROR_BYTES):
                    raise Unavailable(f"answer larger than {len(raw) - 1} bytes")
            status = response.status_code
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"message": bytes(raw[:300]).decode(errors="replace")}
        if not isinstance(payload, dict):
            payload = {"message": str(payload)}
        if status != 200 or payload.get("code") != 10000:
            raise _business_error(payload, status)
        return payload

    def _wait(self, job: Job, task_id: str, deadline: float) -> dict[str, Any] | None:
        """The ``done`` answer, or None when the worker stopped (nothing to cancel upstream:
        the API has no cancel)."""
        delay = POLL_S[0]
        query = {"req_key": REQ_KEY, "task_id": task_id,
                 "req_json": json.dumps({"return_url": False, "logo_info": {"add_logo": False}})}
        while True:
            answer = self._call("CVSync2AsyncGetResult", query, MAX_ANSWER_BYTES)
            state = (answer.get("data") or {}).get("status")
            if state == "done":
                return answer
            if state in ("not_found", "expired"):
                raise Unavailable(f"task {state}")
            if state == "generating":
                job.progress(0.5)
            if job.should_stop():
                return None
            if time.monotonic() + delay > deadline:
                raise Unavailable("timeout")
            time.sleep(delay)
            delay = min(delay * 2, POLL_S[1])

