"""No route blocks the event loop: every database statement and every file-store read or write that
a route makes runs on the thread pool, never on the loop thread (where one slow query would stall
every other request of the process, the status polls included).

The API app runs in this process (``--no-worker``, SQLite, a local folder), driven by Starlette's
test client; listeners on every SQLAlchemy engine (each statement) and pool (each connection
checked out: reads through the driver's own cursor, as the status poll's, run no SQLAlchemy
statement) and a wrapper around the store record any call made while an event loop runs in the
calling thread."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from modelapi.api.run import build
from modelapi.core.config import Settings

SEQ = "bytedance/seedream-4-0/sequential"
EDIT_SEQ = "bytedance/seedream-4-0/edit-sequential"


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def app(tmp_path) -> Iterator[tuple[TestClient, list[str]]]:
    """A test client of the API app (with its key), and the list of what ran on the event loop."""
    app, service = build(Settings(data_dir=tmp_path, worker=False), announce_key=False)
    key = (tmp_path / "initial_api_key").read_text().strip()
    blocking: list[str] = []

    def on_execute(conn, cursor, statement, *_) -> None:  # noqa: ANN001
        if on_event_loop():
            blocking.append(statement.split("\n")[0][:120])

    def on_checkout(dbapi_conn, record, proxy) -> None:  # noqa: ANN001
        if on_event_loop():
            blocking.append("a database connection checked out")

    storage = service.storage
    for name in ("put", "get"):
        def checked(*args, _call=getattr(storage, name), _name=name):  # noqa: ANN002, ANN202
            if on_event_loop():
                blocking.append(f"storage.{_name}{args[:1]}")
            return _call(*args)
        setattr(storage, name, checked)

    sa.event.listen(sa.Engine, "before_cursor_execute", on_execute)
    sa.event.listen(sa.pool.Pool, "checkout", on_checkout)
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            yield client, blocking
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", on_execute)
        sa.event.remove(sa.pool.Pool, "checkout", on_checkout)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 80, 40)).save(out, format="PNG")
    return out.getvalue()


def test_no_route_runs_database_or_storage_work_on_the_event_loop(app):
    c, blocking = app
    offenders: dict[str, list[str]] = {}

    def call(method: str, url: str, status: int = 200, **kwargs) -> httpx.Response:  # noqa: ANN003
        blocking.clear()
        resp = c.request(method, url, **kwargs)
        assert resp.status_code == status, (method, url, resp.text)
        if blocking:
            offenders[f"{method} {url}"] = list(blocking)
        return resp

    upload = call("POST", "/v1/files", 201, files={"file": ("in.png", png(), "image/png")}).json()
    call("GET", f"/v1/files/{upload['id']}")
    rid = call("POST", f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
    call("POST", f"/v1/models/{EDIT_SEQ}", json={"text": "a fox", "images": [upload["url"]]})  # reads the upload
    call("POST", f"/v1/models/{SEQ}", json={"text": "a fox"}, headers={"Idempotency-Key": "k1"})
    call("POST", f"/v1/models/{SEQ}", 401, json={"text": "a fox"}, headers={"Authorization": "Bearer mapi_unknown"})
    call("POST", "/v1/models/no/such-model", 404, json={})
    call("GET", f"/v1/requests/{rid}/status")
    call("GET", f"/v1/requests/{rid}/status", 401, headers={"Authorization": "Bearer mapi_unknown"})
    call("GET", "/v1/requests/r_unknown/status", 404)
    call("GET", f"/v1/requests/{rid}/result", params={"wait": 0.2, "include_cost": "true"})  # a long-poll: watched
    call("GET", "/v1/requests", params={"limit": 5})
    call("POST", f"/v1/requests/{rid}/cancel")
    assert "cancelled" in call("GET", f"/v1/requests/{rid}/status/stream").text  # cancelled: one event, the end
    call("GET", "/v1/webhooks/default/secret")
    call("GET", "/v1/models")
    call("GET", f"/v1/models/{SEQ}/schema")
    call("GET", "/healthz")
    call("GET", "/metrics")

    storage = c.app.state.service.storage  # type: ignore[attr-defined]
    storage.put("outputs/x/0.png", png(), "image/png")
    signed = httpx.URL(storage.url("outputs/x/0.png", time.time() + 60, "http://testserver"))
    call("GET", signed.path, params=signed.params)

    assert offenders == {}, "run on the event loop"
