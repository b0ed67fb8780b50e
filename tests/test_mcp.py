"""The MCP server, driven by the official ``mcp`` client against a real ``modelapi serve`` on
127.0.0.1 in both configurations: over stdio (``modelapi mcp`` as a subprocess) and over
streamable HTTP (``/mcp`` on the server, with and without a key) — tools listed with the
catalogue's schemas, generations and edits answered with output URLs and image previews,
progress notifications received while waiting, keys and isolation as in the HTTP API."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ImageContent, TextContent
from PIL import Image

from conftest import CONFIGS, SKIMAGE_DATA, ServerProcess
from modelapi import catalog

SEQ = "bytedance/seedream-4-0/sequential"
TOOLS = {"generate_images", "edit_images", "get_request", "list_requests"}
SLOW = {"MODELAPI_TEST_STEP_S": "0.05", "MODELAPI_TEST_STEPS": "10"}  # progress the watcher can see


@pytest.fixture(scope="module", params=CONFIGS)
def srv(request, tmp_path_factory, fleet_services):
    config_env = fleet_services.config_env() if request.param == "fleet" else None
    server = ServerProcess(tmp_path_factory.mktemp("mcp") / "data", env=SLOW, config_env=config_env).start()
    yield server
    server.stop()


def run(coro: Any) -> Any:
    """Run ``coro`` on an event loop of its own thread (this thread may already have one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=120)


def stdio(server: ServerProcess) -> Client:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "MODELAPI_BASE_URL": server.base_url,
           "MODELAPI_API_KEY": server.key}
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "modelapi", "mcp"], env=env))


def over_http(server: ServerProcess, key: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=120))
    return Client(streamable_http_client(f"{server.base_url}/mcp", http_client=http))


async def generate_with_progress(client: Client, arguments: dict) -> tuple[CallToolResult, list[tuple[float, str | None]]]:
    seen: list[tuple[float, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        assert total == 1.0
        seen.append((value, message))

    return await client.call_tool("generate_images", arguments, progress_callback=progress), seen


def body_of(result: CallToolResult) -> dict:
    assert isinstance(result.content[0], TextContent), result.content
    return json.loads(result.content[0].text)


def assert_previews(result: CallToolResult, count: int) -> None:
    images = [c for c in result.content if isinstance(c, ImageContent)]
    assert len(images) == count and all(c.mime_type == "image/jpeg" for c in images)
    for content in images:
        preview = Image.open(io.BytesIO(base64.b64decode(content.data)))
        assert preview.format == "JPEG" and max(preview.size) <= 512
    assert sum(len(c.data) for c in images) < 1024 * 1024


def assert_progress(seen: list[tuple[float, str | None]], request_id: str) -> None:
    values = [v for v, _ in seen]
    assert values == sorted(set(values)), values  # MCP: each notification's progress grows
    assert values[-1] == 1.0 and any(0 < v < 1 for v in values), values
    assert all(request_id in (m or "") for _, m in seen)


def assert_catalogue_schemas(tools: list) -> None:
    assert {t.name for t in tools} == TOOLS
    by_name = {t.name: t.input_schema for t in tools}
    spec = catalog.get(SEQ).input_schema["properties"]
    generate = by_name["generate_images"]["properties"]
    assert generate["size"]["anyOf"][0]["enum"] == spec["image_size"]["enum"]
    assert generate["prompt"]["maxLength"] == spec["text"]["maxLength"]
    assert (generate["count"]["minimum"], generate["count"]["maximum"]) == (1, 15)
    assert by_name["generate_images"]["required"] == ["prompt"]
    edit = by_name["edit_images"]["properties"]
    assert edit["model"]["enum"] == ["bytedance/seedream-4-0/edit-sequential", "bytedance/dreamina-4-0/edit"]
    assert sorted(by_name["list_requests"]["properties"]["model"]["anyOf"][0]["enum"]) == sorted(catalog.models())


def test_over_stdio_the_tools_generate_and_edit_with_previews_and_progress(srv):
    async def session() -> None:
        async with stdio(srv) as client:
            assert_catalogue_schemas((await client.list_tools()).tools)
            result, seen = await generate_with_progress(client, {"prompt": "a heron at dawn", "count": 2, "seed": 5,
                                                                 "size": "2304:1728 (4:3)"})
            assert not result.is_error, result.content
            body = body_of(result)
            assert body["status"] == "completed" and len(body["output"]["images"]) == 2 and body["seed"] == 5
            assert result.structured_content == body
            assert_previews(result, 2)
            assert_progress(seen, body["request_id"])
            assert all(url.startswith(srv.base_url) or "X-Amz-Signature" in url for url in body["output"]["images"])

            edited = await client.call_tool("edit_images", {"images": [str(SKIMAGE_DATA / "astronaut.png"), str(SKIMAGE_DATA / "chelsea.png")],
                                                            "prompt": "the astronaut holding the cat", "count": 1})
            assert not edited.is_error, edited.content
            assert body_of(edited)["status"] == "completed" and len(body_of(edited)["output"]["images"]) == 1
            assert_previews(edited, 1)

            again = await client.call_tool("get_request", {"request_id": body["request_id"]})
            assert [urlsplit(u).path for u in body_of(again)["output"]["images"]] == [urlsplit(u).path for u in body["output"]["images"]]
            assert_previews(again, 2)
            listed = await client.call_tool("list_requests", {"limit": 5})
            ids = [item["request_id"] for item in json.loads(listed.content[0].text)]
            assert ids[:2] == [body_of(edited)["request_id"], body["request_id"]]

            bad = await client.call_tool("generate_images", {"prompt": "a fox", "count": 16})
            assert bad.is_error and "count" in bad.content[0].text

    run(session())


def test_over_http_at_mcp_with_the_caller_s_key(srv):
    assert httpx.post(f"{srv.base_url}/mcp", json={}).status_code == 401
    refused = httpx.post(f"{srv.base_url}/mcp", json={}, headers={"Authorization": "Bearer mk_nope"})
    assert refused.status_code == 401 and refused.json()["error_code"] == 401001
    other_key = srv.cli("keys", "create", "--name", "mcp-other").stdout.strip().split()[-1]

    async def session() -> str:
        async with over_http(srv, srv.key) as client:
            assert_catalogue_schemas((await client.list_tools()).tools)
            result, seen = await generate_with_progress(client, {"prompt": "Generate 4 images of a lighthouse", "count": 2})
            assert not result.is_error, result.content
            body = body_of(result)
            assert body["status"] == "completed" and len(body["output"]["images"]) == 2
            assert_previews(result, 2)
            assert_progress(seen, body["request_id"])

            local = await client.call_tool("edit_images", {"images": ["/etc/hostname"], "prompt": "x"})
            assert local.is_error and "stdio" in local.content[0].text
            png = base64.b64encode((SKIMAGE_DATA / "astronaut.png").read_bytes()).decode()
            edited = await client.call_tool("edit_images", {"images": [f"data:image/png;base64,{png}"], "prompt": "as a watercolor",
                                                            "model": "bytedance/dreamina-4-0/edit"})
            assert not edited.is_error, edited.content
            assert_previews(edited, 1)
            return body["request_id"]

    request_id = run(session())

    async def as_other() -> None:
        async with over_http(srv, other_key) as client:
            foreign = await client.call_tool("get_request", {"request_id": request_id})
            assert foreign.is_error and "404" in foreign.content[0].text
            mine = await client.call_tool("list_requests", {})
            assert json.loads(mine.content[0].text) == []

    run(as_other())
    with srv.client() as c:  # an ordinary request of the HTTP API
        assert c.get(f"/v1/requests/{request_id}/result").json()["status"] == "completed"
