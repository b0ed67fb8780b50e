"""The ``modelark`` backend: BytePlus ModelArk's Seedream 4.0 (``POST {base}/images/generations``)
for both seedream endpoints, and for dreamina edit (without ``scale``, listed in the result's
``metadata.unsupported``).

Every call asks for ``stream: true``, ``watermark: false`` and ``response_format: "b64_json"``:
each image is decoded (bounded), re-encoded in ``--output-format`` and stored in our storage the
moment its ``image_generation.partial_succeeded`` event arrives, and published as
``partial_output``. A provider URL never reaches a client.

Bounds on what the provider can do to us: one total deadline per call
(``MODELAPI_MODELARK_TIMEOUT_S``, default 120 s + 40 s per image), an idle read timeout, at most
:data:`MAX_EVENT_BYTES` per streamed event (and per plain answer), and at most
``--max-input-pixels`` per decoded image.

The official SDK (``byteplus-python-sdk-v2``) is not used: see docs/BACKENDS.md ("Why not the
SDK") — it reads answers without a size bound and retries on its own.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import httpx
from PIL import Image

from .. import catalog
from ..core.jobs import Done, Outcome, Stopped
from ..core.images import FORMATS, encode
from .base import Job, Rejected, Unavailable, decode_image, short, text_of

log = logging.getLogger("modelapi.backends")

DEFAULT_BASE_URL = "https://ark.ap-southeast.bytepluses.com/api/v3"
DEFAULT_MODEL = "seedream-4-0-250828"
MAX_TOTAL_IMAGES = 15
"""References + generated images of one call (the provider's documented limit)."""
MAX_REFERENCE_BYTES = 10 * 1024 * 1024
"""Largest reference the provider accepts; a larger one is re-encoded as JPEG first."""
MAX_EVENT_BYTES = 64 * 1024 * 1024
"""Largest streamed event or plain answer read from the provider (one b64 image of 4096² px fits)."""
MAX_ERROR_BYTES = 64 * 1024
"""Largest error answer read."""
SEED_MAX = 2_147_483_647
CONTENT_POLICY_CODES = ("SensitiveContentDetected", "InputTextSensitiveContentDetected",
                        "InputImageSensitiveContentDetected", "OutputImageSensitiveContentDetected")
"""Error codes (and prefixes) of the provider's moderation: the request fails ``content_policy``."""

MAPPING: dict[str, dict[str, str]] = {
    # our model id -> {provider field: how it is made from our inputs}
    "bytedance/seedream-4-0/sequential": {
        "prompt": "text", "size": "image_size as WxH", "sequential_image_generation": "as given (default auto)",
        "sequential_image_generation_options.max_images": "sequential_image_generation_options",
        "seed": "seed (the request's seed; outside 0..2147483647: modulo 2^31)",
        "optimize_prompt_options.mode": "optimize_prompt_options",
    },
    "bytedance/seedream-4-0/edit-sequential": {
        "prompt": "text", "image": "images, as data URIs", "size": "image_size as WxH",
        "sequential_image_generation": "as given (default auto)",
        "sequential_image_generation_options.max_images": "sequential_image_generation_options, at most 15 - references",
        "seed": "seed", "optimize_prompt_options.mode": "optimize_prompt_options",
    },
    "bytedance/dreamina-4-0/edit": {
        "prompt": "prompt", "image": "image_urls, as data URIs", "size": "width×height as WxH",
        "sequential_image_generation": "disabled when force_single, else auto",
        "sequential_image_generation_options.max_images": "15 - references", "seed": "the request's seed",
        "(not sent)": "scale: listed in metadata.unsupported",
    },
}
"""What each of our fields becomes in the provider's request, in one table (docs/BACKENDS.md)."""


@dataclass(frozen=True)
class ModelArkConfig:
    """From the environment: ``MODELAPI_MODELARK_API_KEY`` (required), ``MODELAPI_MODELARK_BASE_URL``
    (default the international base), ``MODELAPI_MODELARK_MODEL`` (default
    ``seedream-4-0-250828``), ``MODELAPI_MODELARK_TIMEOUT_S`` (a call's total deadline, seconds;
    default 120 + 40 per image)."""

    api_key: str
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    timeout_s: float | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "ModelArkConfig":
        """Raises ``ValueError`` naming ``MODELAPI_MODELARK_API_KEY`` when it is not set."""
        env = dict(os.environ if env is None else env)
        key = env.get("MODELAPI_MODELARK_API_KEY", "").strip()
        if not key:
            raise ValueError("MODELAPI_MODELARK_API_KEY is not set")
        timeout = env.get("MODELAPI_MODELARK_TIMEOUT_S")
        return cls(key, env.get("MODELAPI_MODELARK_BASE_URL") or DEFAULT_BASE_URL,
                   env.get("MODELAPI_MODELARK_MODEL") or DEFAULT_MODEL, float(timeout) if timeout else None)


def _data_uri(data: bytes) -> str:
    """A stored reference as a ``data:image/<fmt>;base64,...`` URI, re-encoded as JPEG when it is
    above :data:`MAX_REFERENCE_BYTES` or in a format the provider does not take."""
    image = Image.open(io.BytesIO(data))
    fmt = (image.format or "").lower()
    if len(data) > MAX_REFERENCE_BYTES or fmt not in ("jpeg", "png", "webp", "bmp", "tiff", "gif"):
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=90)
        data, fmt = buf.getvalue(), "jpeg"
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"


def request_body(model_id: str, inputs: dict[str, Any], references: list[str], seed: int,
                 provider_model: str) -> tuple[dict[str, Any], list[str]]:
    """The provider's request for one of our requests (see :data:`MAPPING`), and our input
    fields it cannot honour (``["scale"]`` for dreamina).

    Args:
        references: the reference images as data URIs, in request order.
        seed: the request's seed.

    Raises:
        ValueError: ``model_id`` is not one this backend serves.
    """
    model = catalog.get(model_id)
    if model is None or model_id not in MAPPING:
        raise ValueError(f"modelark does not serve {model_id!r}")
    task = model.task
    from ..series.params import parse_size  # here: series.params imports the engine's types

    width, height = parse_size(inputs[task.size_field])
    room = MAX_TOTAL_IMAGES - len(references)
    unsupported: list[str] = []
    if task.max_images_field:
        cap = int(inputs.get(task.max_images_field) or 1)
        sequential = inputs.get("sequential_image_generation", "auto")
    else:  # dreamina: as many as the prompt asks for, unless force_single
        cap = room
        sequential = "disabled" if inputs.get("force_single") else "auto"
        if inputs.get("scale") is not None:
            unsupported.append("scale")
    body: dict[str, Any] = {
        "model": provider_model,
        "prompt": inputs[task.prompt_field],
        "size": f"{width}x{height}",
        "sequential_image_generation": sequential,
        "sequential_image_generation_options": {"max_images": max(1, min(cap, room))},
        "response_format": "b64_json",
        "watermark": False,
        "stream": True,
        "seed": seed if 0 <= seed <= SEED_MAX else seed % (SEED_MAX + 1),
    }
    if references:
        body["image"] = references if len(references) > 1 else references[0]
    if inputs.get("optimize_prompt_options") in ("standard", "fast"):
        body["optimize_prompt_options"] = {"mode": inputs["optimize_prompt_options"]}
    return body, unsupported


def _error(status: int, payload: Any) -> Exception:
    """The exception for an error answer (``{"error": {"code", "message"}}``) of HTTP ``status``."""
    err = payload.get("error") if isinstance(payload, dict) else None
    err = err if isinstance(err, dict) else {}
    code, message = str(err.get("code") or status), short(str(err.get("message") or payload))
    if any(code.startswith(c) for c in CONTENT_POLICY_CODES):
        return Rejected("content_policy", f"ModelArk {code}: {message}")
    if status == 429 or status >= 500:
        return Unavailable(f"{status} {code}")
    if status == 400:
        return Rejected("upstream_rejected", f"ModelArk {code}: {message}")
    return Unavailable(f"{status} {code}", retry=False)  # 401, 403, 404: the operator's set-up


def _read_capped(response: httpx.Response, cap: int) -> bytes:
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf += chunk
        if len(buf) > cap:
            raise Unavailable(f"answer larger than {cap} bytes")
    return bytes(buf)


def _events(response: httpx.Response, deadline: float) -> Iterator[dict[str, Any]]:
    """The JSON of each server-sent event's ``data:`` (``[DONE]`` ends), each at most
    :data:`MAX_EVENT_BYTES`, the whole stream within ``deadline`` (monotonic)."""
    buf = b""
    for chunk in response.iter_bytes():
        if time.monotonic() > deadline:
            raise Unavailable("timeout")
        buf += chunk
        while b"\n\n" in buf or b"\r\n\r\n" in buf:
            sep = b"\n\n" if b"\n\n" in buf else b"\r\n\r\n"
            raw, _, buf = buf.partition(sep)
            data = b"".join(line[5:].strip() for line in raw.splitlines() if line.startswith(b"data:"))
            if not data:
                continue
            if data == b"[DONE]":
                return
            try:
                yield json.loads(data)
            except ValueError:
                raise Unavailable("unreadable event") from None
        if len(buf) > MAX_EVENT_BYTES:
            raise Unavailable(f"event larger than {MAX_EVENT_BYTES} bytes")


class ModelArkBackend:
    """Runs seedream (and dreamina, without scale) on ModelArk with the operator's key."""

    name = "modelark"

    def __init__(self, config: ModelArkConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.client = httpx.Client(
            base_url=config.base_url.rstrip("/"), transport=transport, follow_redirects=False,
            headers={"Authorization": f"Bearer {config.api_key}"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def health(self) -> dict[str, Any]:
        return {"base_url": self.config.base_url, "model": self.config.model}

    def run(self, job: Job) -> Outcome:
        """Make the request's images on ModelArk, storing each as it streams in.

        Returns ``Done`` (metadata: ``upstream`` ``{model, request_id}``,
        ``refused`` ``[{index, code, message}]`` when some images were refused, ``unsupported``),
        ledger: ``upstream_units``), or ``Stopped`` when the worker stops between events.

        Raises:
            Unavailable: 429, 5xx, 401/403/404 (not retried), a timeout, a connection error, an
                answer too large or unreadable, a stream that ends before its last event.
            Rejected: 400 (content policy or validation), or every image refused.
        """
        req = job.request
        t0 = time.monotonic()
        queue_s = (datetime.now(timezone.utc) - req.created_at).total_seconds()
        refs = [_data_uri(job.storage.get(key)) for key in req.input_files]
        body, unsupported = request_body(req.model_id, req.inputs, refs, req.seed, self.config.model)
        count = body["sequential_image_generation_options"]["max_images"]
        total_s = self.config.timeout_s or 120.0 + 40.0 * count
        deadline = time.monotonic() + total_s
        timeout = httpx.Timeout(min(total_s, 120.0), connect=min(total_s, 10.0))
        stored: dict[int, str] = {}
        refused: list[dict[str, Any]] = []
        sizes: list[tuple[int, int]] = []
        state: dict[str, Any] = {"units": None, "model": self.config.model}
        t_fetched = time.monotonic()
        try:
            with self.client.stream("POST", "/images/generations", json=body, timeout=timeout) as response:
                request_id = response.headers.get("x-request-id")
                if response.status_code != 200:
                    raw = _read_capped(response, MAX_ERROR_BYTES)
                    try:
                        payload: Any = json.loads(raw)
                    except ValueError:
                        payload = raw.decode(errors="replace")
                    raise _error(response.status_code, payload)
                if response.headers.get("content-type", "").startswith("text/event-stream"):
                    events = _events(response, deadline)
                else:  # a plain answer: {"data": [...], "usage": {...}}
                    events = iter(self._plain(_read_capped(response, MAX_EVENT_BYTES)))
                finished = False
                for event in events:
                    if time.monotonic() > deadline:
                        raise Unavailable("timeout")
                    finished = self._event(job, event, body, count, stored, refused, sizes, state) or finished
                    if job.should_stop():
                        return Stopped()
                if not finished:
                    raise Unavailable("stream ended before image_generation.completed")
        except httpx.TimeoutException:
            raise Unavailable("timeout") from None
        except httpx.TransportError as exc:
            raise Unavailable(f"connection error: {type(exc).__name__}") from None
        t_inferred = time.monotonic()
        if not stored:
            if refused:
                raise Rejected("content_policy", "ModelArk refused every image: " + short(refused))
            raise Unavailable("no image in the answer")
        keys = [stored[i] for i in sorted(stored)]
        metadata: dict[str, Any] = {
            "image_count": len(keys), "width": sizes[0][0], "height": sizes[0][1], "seed": req.seed,
            "output_format": job.output_format,
            "upstream": {"model": state["model"], "request_id": request_id},
            "timings": {"queue_s": round(queue_s, 4), "fetch_s": round(t_fetched - t0, 4),
                        "inference_s": round(t_inferred - t_fetched, 4), "postprocess_s": 0.0,
                        "total_s": round(queue_s + t_inferred - t0, 4)},
        }
        if refused:
            metadata["refused"] = refused
        if unsupported:
            metadata["unsupported"] = unsupported
        return Done(keys, metadata, ledger={"upstream_units": state["units"] if state["units"] is not None else len(keys)})

    @staticmethod
    def _plain(raw: bytes) -> list[dict[str, Any]]:
        try:
            answer = json.loads(raw)
        except ValueError:
            raise Unavailable("unreadable answer") from None
        events = [{"type": "image_generation.partial_succeeded", "image_index": i, **item}
                  for i, item in enumerate(answer.get("data") or [])]
        events.append({"type": "image_generation.completed", "usage": answer.get("usage") or {},
                       "model": answer.get("model")})
        return events

    def _event(self, job: Job, event: dict[str, Any], body: dict[str, Any], count: int, stored: dict[int, str],
               refused: list[dict[str, Any]], sizes: list[tuple[int, int]], state: dict[str, Any]) -> bool:
        """Handle one event; True when it was the last (``completed``)."""
        kind = event.get("type", "")
        if "error" in event and kind != "image_generation.partial_failed":
            raise _error(int(event.get("status") or 500), event)
        if event.get("model"):
            state["model"] = event["model"]
        if kind == "image_generation.partial_failed":
            err = event.get("error") or {}
            refused.append({"index": int(event.get("image_index", len(stored) + len(refused))),
                            "code": str(err.get("code")), "message": short(str(err.get("message")))})
            return False
        if kind == "image_generation.completed":
            units = (event.get("usage") or {}).get("generated_images")
            state["units"] = int(units) if isinstance(units, int) else None
            return True
        if kind != "image_generation.partial_succeeded":
            return False
        index = int(event.get("image_index", len(stored) + len(refused)))
        if "b64_json" in event:
            data = base64.b64decode(event["b64_json"], validate=False)
        elif "url" in event:
            data = self._download(str(event["url"]))
        else:
            raise Unavailable("an image event without an image")
        try:
            image = decode_image(data, job.max_pixels)
        except ValueError as exc:
            raise Unavailable(f"unreadable image: {exc}") from None
        content_type, ext = FORMATS[job.output_format]
        key = f"outputs/{job.request.request_id}/{job.attempt}/{index}.{ext}"
        job.storage.put(key, encode(image, job.output_format, text_of(job, self.name, body["prompt"], body["seed"])),
                        content_type)
        stored[index] = key
        sizes.append(image.size)
        done = len(stored) + len(refused)
        job.on_stored([stored[i] for i in sorted(stored)])
        job.progress(min(0.99, done / max(count, 1)))
        return False

    def _download(self, url: str) -> bytes:
        """An output the provider gave as a URL (when it ignores ``b64_json``), bounded in size."""
        with httpx.stream("GET", url, timeout=60.0, follow_redirects=False) as response:
            if response.status_code != 200:
                raise Unavailable(f"output download answered {response.status_code}")
            return _read_capped(response, MAX_EVENT_BYTES)
