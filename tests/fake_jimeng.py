"""A fake of Volcengine's Jimeng 4.0 visual API (``req_key: "jimeng_t2i_v40"``), written from the
documented API (shared/UPSTREAMS.md; the Jimeng 4.0 API page), served on 127.0.0.1 in a thread of
the test process.

- ``POST /?Action=CVSync2AsyncSubmitTask&Version=2022-08-31`` answers ``{"code": 10000, "data":
  {"task_id"}, "message", "request_id", "status", "time_elapsed"}``; ``...CVSync2AsyncGetResult...``
  answers ``data.status`` ``in_queue`` (first poll), ``generating`` (second, and until
  :attr:`FakeJimeng.delay_s` has passed since the submit), then ``done`` with
  ``binary_data_base64`` (or ``image_urls`` when ``req_json`` asks ``return_url``).
- Every call's signature is verified from the documented algorithm (Volcengine signature V4:
  canonical request, ``HMAC-SHA256`` string to sign, key derived from the secret key, date,
  ``cn-north-1``, ``cv`` and ``request``), written here independently of the SDK; a wrong one is
  the gateway's 401 ``SignatureDoesNotMatch``.
- Each reference URL is fetched (as the provider would), and what came back is recorded.
- It makes 2 images (1 with ``force_single``; ``[n K]`` in the prompt: K), capped at 15 − the
  references, of exactly ``width`` x ``height``, each a solid colour (``fake_modelark.colour``).

Markers in the prompt: ``[429]`` (HTTP 429, code 50429), ``[500]`` (HTTP 500, code 50500),
``[policy]`` (HTTP 400, code 50412 at submit), ``[policy-out]`` (code 50511 when done),
``[hold]`` (stays ``generating`` until :attr:`FakeJimeng.release` is set), ``[expire]`` (the
task is ``expired``). :attr:`FakeJimeng.fail_next` (HTTP statuses) fails the next submits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import itertools
import json
import re
import threading
import time
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from PIL import Image

from fake_modelark import colour, serve

ERRORS = {429: (50429, "Request Has Reached API Limit, Please Try Later"), 500: (50500, "Internal Error"),
          503: (50500, "Internal Error"), 400: (50412, "Text Risk Not Pass")}


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def expected_signature(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                       signed: list[str], body: bytes, secret_key: str, date: str, region: str, service: str) -> str:
    """The documented Volcengine V4 signature of a request (lower-case ``headers``)."""
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query))
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed)
    canonical = "\n".join([method, quote(path or "/", safe="/-_.~"), canonical_query, canonical_headers,
                           ";".join(signed), hashlib.sha256(body).hexdigest()])
    scope = f"{date[:8]}/{region}/{service}/request"
    to_sign = "\n".join(["HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(secret_key.encode(), date[:8]), region), service), "request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class FakeJimeng:
    """The fake on ``http://127.0.0.1:<port>`` (:attr:`base_url`)."""

    def __init__(self, access_key: str = "AKLTtest", secret_key: str = "c2VjcmV0LWtleQ==") -> None:
        self.access_key, self.secret_key = access_key, secret_key
        self.received: list[dict[str, Any]] = []
        """Each call: ``{"action", "body", "query", "headers"}``, in arrival order."""
        self.references: list[list[tuple[int, bytes]]] = []
        """Per submit: each reference URL's (HTTP status, body) as fetched."""
        self.fail_next: list[int] = []
        self.delay_s = 0.0
        self.release = threading.Event()
        self.tasks: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(7392616336519610409)
        self._lock = threading.Lock()
        self.server = serve(self._handle, protocol_version="HTTP/1.1")
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def submits(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.received if r["action"] == "CVSync2AsyncSubmitTask"]

    # -- the gateway ---------------------------------------------------------------------------
    def _verify(self, h: BaseHTTPRequestHandler, body: bytes) -> str | None:
        """None when the call is signed right, else why not."""
        auth = h.headers.get("Authorization", "")
        m = re.fullmatch(r"HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/request, "
                         r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", auth)
        if not m:
            return "malformed Authorization"
        ak, day, region, service, signed, signature = m.groups()
        date = h.headers.get("X-Date", "")
        if ak != self.access_key:
            return "unknown access key"
        if (region, service) != ("cn-north-1", "cv") or not date.startswith(day):
            return "wrong credential scope"
        try:
            at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return "malformed X-Date"
        if abs((datetime.now(timezone.utc) - at).total_seconds()) > 900:
            return "X-Date too far from now"
        names = signed.split(";")
        if not {"host", "x-date", "x-content-sha256"} <= set(names):
            return "host, x-date and x-content-sha256 must be signed"
        if h.headers.get("X-Content-Sha256") != hashlib.sha256(body).hexdigest():
            return "X-Content-Sha256 is not the body's"
        parts = urlsplit(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        want = expected_signature("POST", parts.path, parse_qsl(parts.query, keep_blank_values=True), headers, names,
                                  body, self.secret_key, date, region, service)
        return None if hmac.compare_digest(want, signature) else "signature does not match"

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("content-length") or 0))
        query = dict(parse_qsl(urlsplit(h.path).query))
        action = query.get("Action", "")
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        with self._lock:
            self.received.append({"action": action, "body": payload, "query": query, "headers": dict(h.headers)})
        request_id = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + f"{next(self._ids) % 10**6:06d}"
        problem = self._verify(h, body)
        if problem is not None:
            return self._json(h, 401, {"ResponseMetadata": {
                "RequestId": request_id, "Action": action, "Version": query.get("Version"), "Service": "cv",
                "Region": "cn-north-1", "Error": {"CodeN": 100010, "Code": "SignatureDoesNotMatch", "Message": problem}}})
        if query.get("Version") != "2022-08-31" or payload.get("req_key") != "jimeng_t2i_v40":
            return self._business(h, 400, 50400, "Invalid Version or req_key", request_id)
        if action == "CVSync2AsyncSubmitTask":
            return self._submit(h, payload, request_id)
        if action == "CVSync2AsyncGetResult":
            return self._result(h, payload, request_id)
        return self._business(h, 404, 50404, f"unknown Action {action}", request_id)

    # -- the API -------------------------------------------------------------------------------
    def _submit(self, h: BaseHTTPRequestHandler, body: dict[str, Any], request_id: str) -> None:
        with self._lock:
            failing = self.fail_next.pop(0) if self.fail_next else None
        if failing is not None:
            return self._business(h, failing, *ERRORS.get(failing, (50500, "Internal Error")), request_id)
        prompt = str(body.get("prompt", ""))
        for marker, status in (("[429]", 429), ("[500]", 500)):
            if marker in prompt:
                return self._business(h, status, *ERRORS[status], request_id)
        if "[policy]" in prompt:
            return self._business(h, 400, *ERRORS[400], request_id)
        urls = list(body.get("image_urls") or [])
        if len(urls) > 10 or not prompt or len(prompt) > 800:
            return self._business(h, 400, 50400, "Invalid Parameter", request_id)
        fetched = []
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - 127.0.0.1 in tests
                    fetched.append((answer.status, answer.read()))
            except Exception as exc:  # noqa: BLE001 - recorded: the test says what it expects
                fetched.append((getattr(exc, "code", 0), b""))
        self.references.append(fetched)
        if any(status != 200 for status, _ in fetched):
            return self._business(h, 400, 50400, "image download failed", request_id)
        task_id = str(next(self._ids))
        with self._lock:
            self.tasks[task_id] = {"body": body, "submitted": time.monotonic(), "polls": 0}
        self._json(h, 200, {"code": 10000, "data": {"task_id": task_id}, "message": "Success",
                            "request_id": request_id, "status": 10000, "time_elapsed": "104.852309ms"})

    def _result(self, h: BaseHTTPRequestHandler, query: dict[str, Any], request_id: str) -> None:
        with self._lock:
            task = self.tasks.get(str(query.get("task_id")))
            if task is not None:
                task["polls"] += 1
        if task is None:
            return self._json(h, 200, {"code": 10000, "data": {"status": "not_found"}, "message": "Success",
                                       "request_id": request_id, "status": 10000})
        body, prompt = task["body"], str(task["body"].get("prompt", ""))
        if "[expire]" in prompt:
            state = "expired"
        elif task["polls"] == 1:
            state = "in_queue"
        elif (task["polls"] == 2 or time.monotonic() - task["submitted"] < self.delay_s
              or ("[hold]" in prompt and not self.release.is_set())):
            state = "generating"
        else:
            state = "done"
        if state != "done":
            return self._json(h, 200, {"code": 10000, "data": {"status": state, "binary_data_base64": None,
                                                               "image_urls": None},
                                       "message": "Success", "request_id": request_id, "status": 10000})
        if "[policy-out]" in prompt:
            return self._business(h, 400, 50511, "Post Img Risk Not Pass", request_id)
        options = json.loads(query.get("req_json") or "{}")
        n = re.search(r"\[n (\d+)\]", prompt)
        count = 1 if body.get("force_single") else int(n.group(1)) if n else 2
        count = min(count, 15 - len(body.get("image_urls") or []))
        width, height = int(body.get("width") or 2048), int(body.get("height") or 2048)
        images = []
        for i in range(count):
            buf = io.BytesIO()
            Image.new("RGB", (width, height), colour(i)).save(buf, format="JPEG", quality=90)
            images.append(base64.b64encode(buf.getvalue()).decode())
        data: dict[str, Any] = {"status": "done", "binary_data_base64": images, "image_urls": None}
        if options.get("return_url"):
            data = {"status": "done", "binary_data_base64": None,
                    "image_urls": [f"https://example.invalid/{i}.jpeg" for i in range(count)]}
        self._json(h, 200, {"code": 10000, "data": data, "message": "Success", "request_id": request_id,
                            "status": 10000, "time_elapsed": "508.312154ms"})

    def _business(self, h: BaseHTTPRequestHandler, status: int, code: int, message: str, request_id: str) -> None:
        self._json(h, status, {"code": code, "data": None, "message": message, "request_id": request_id,
                               "status": code, "time_elapsed": "1.0ms"})

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
