"""A fake of BytePlus ModelArk's ``POST /images/generations`` (Seedream 4.0), written from the
documented API (shared/UPSTREAMS.md), served on 127.0.0.1 in a thread of the test process.

It checks the Bearer key (401 ``AuthenticationError`` otherwise), records every request it got
(:attr:`FakeModelArk.received`), and makes ``max_images`` images (1 with
``sequential_image_generation: "disabled"``) of exactly the requested ``size``, each a solid
colour (:func:`colour`). With ``stream: true`` it answers server-sent events
(``image_generation.partial_succeeded`` per image, ``image_generation.partial_failed`` for a
refused one, ``image_generation.completed`` with ``usage``, then ``data: [DONE]``); otherwise one
plain JSON answer. Markers in the prompt choose a behaviour:

- ``[429]``, ``[500]``: that error answer (``RateLimitExceeded.EndpointRPMExceeded``,
  ``InternalServiceError``); ``[policy]``: 400 ``InputTextSensitiveContentDetected``;
  ``[invalid]``: 400 ``InvalidParameter``.
- ``[refuse N]``: image N is refused (``OutputImageSensitiveContentDetected``);
  ``[refuse all]``: every image is.
- ``[plain]``: a plain JSON answer even when streaming was asked for.
- ``[slow]``: no byte before :attr:`FakeModelArk.slow_s` seconds.
- ``[cut]``: the stream ends after the first image, without ``completed``.
- ``[hold]``: after the first image, wait for :attr:`FakeModelArk.release` before the others.

:attr:`FakeModelArk.fail_next` (a list of HTTP statuses) makes the next calls fail with those,
whatever the prompt.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import Any

from PIL import Image

ERRORS = {
    429: ("RateLimitExceeded.EndpointRPMExceeded", "Too many requests per minute for this endpoint"),
    500: ("InternalServiceError", "The service encountered an unexpected internal error"),
    503: ("ServiceUnavailable", "The service is temporarily unavailable"),
}


def colour(index: int) -> tuple[int, int, int]:
    """The colour of the fake's image ``index``."""
    return (30 + 40 * index) % 256, 120, (220 - 30 * index) % 256


def serve(handle: Callable[[BaseHTTPRequestHandler], None], protocol_version: str = "HTTP/1.0") -> ThreadingHTTPServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) passing every POST to ``handle``,
    serving in a daemon thread; stop it with ``shutdown()`` and ``server_close()``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            handle(self)

    Handler.protocol_version = protocol_version
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class FakeModelArk:
    """The fake on ``http://127.0.0.1:<port>/api/v3`` (:attr:`base_url`)."""

    def __init__(self, api_key: str = "ark-test-key") -> None:
        self.api_key = api_key
        self.received: list[dict[str, Any]] = []
        """Each request: ``{"body", "authorization"}``, in arrival order."""
        self.fail_next: list[int] = []
        self.slow_s = 5.0
        self.release = threading.Event()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.server = serve(self._handle)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/api/v3"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # -- the API -------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers.get("content-length") or 0)) or b"{}")
        with self._lock:
            self.received.append({"body": body, "authorization": h.headers.get("authorization")})
            failing = self.fail_next.pop(0) if self.fail_next else None
        request_id = f"0217{next(self._ids):012d}"
        if h.path != "/api/v3/images/generations":
            return self._error(h, 404, "InvalidEndpoint.NotFound", f"no such path {h.path}")
        if h.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(h, 401, "AuthenticationError", "the API key is missing or invalid")
        if failing is not None:
            return self._error(h, failing, *ERRORS.get(failing, ("Error", "error")))
        prompt = str(body.get("prompt", ""))
        for marker, status in (("[429]", 429), ("[500]", 500)):
            if marker in prompt:
                return self._error(h, status, *ERRORS[status])
        if "[policy]" in prompt:
            return self._error(h, 400, "InputTextSensitiveContentDetected",
                               "The request failed because the input text may contain sensitive information.")
        if "[invalid]" in prompt:
            return self._error(h, 400, "InvalidParameter", "the parameter `size` specified in the request is not valid")
        if "[slow]" in prompt:
            time.sleep(self.slow_s)
        width, height = (int(v) for v in str(body["size"]).split("x"))
        count = 1 if body.get("sequential_image_generation") == "disabled" else \
            int(body.get("sequential_image_generation_options", {}).get("max_images", 15))
        refuse = set(range(count)) if "[refuse all]" in prompt else {int(n) for n in re.findall(r"\[refuse (\d+)\]", prompt)}
        stream = bool(body.get("stream")) and "[plain]" not in prompt
        images = []
        if stream:
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("x-request-id", request_id)
            h.send_header("Connection", "close")
            h.end_headers()
        for i in range(count):
            if i == 1 and "[hold]" in prompt:
                self.release.wait(60)
            if i in refuse:
                event = {"type": "image_generation.partial_failed", "image_index": i,
                         "error": {"code": "OutputImageSensitiveContentDetected",
                                   "message": "The generated image may contain sensitive information."}}
            else:
                event = {"type": "image_generation.partial_succeeded", "image_index": i,
                         "size": f"{width}x{height}", **self._image(body, width, height, i)}
                images.append({k: event[k] for k in ("size", "b64_json", "url") if k in event})
            if stream:
                self._event(h, event)
            if "[cut]" in prompt and stream:
                return
        usage = {"generated_images": len(images), "output_tokens": 16384 * len(images), "total_tokens": 16384 * len(images)}
        if stream:
            self._event(h, {"type": "image_generation.completed", "model": body.get("model"), "usage": usage})
            h.wfile.write(b"data: [DONE]\n\n")
            return
        self._json(h, 200, {"model": body.get("model"), "created": int(time.time()), "data": images, "usage": usage},
                   request_id)

    @staticmethod
    def _image(body: dict[str, Any], width: int, height: int, index: int) -> dict[str, str]:
        buf = io.BytesIO()
        Image.new("RGB", (width, height), colour(index)).save(buf, format="JPEG", quality=90)
        return {"b64_json": base64.b64encode(buf.getvalue()).decode()}

    @staticmethod
    def _event(h: BaseHTTPRequestHandler, event: dict[str, Any]) -> None:
        h.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        h.wfile.flush()

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        self._json(h, status, {"error": {"code": code, "message": message, "param": "", "type": "BadRequest"}},
                   "err")

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any], request_id: str) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("x-request-id", request_id)
        h.end_headers()
        h.wfile.write(data)
