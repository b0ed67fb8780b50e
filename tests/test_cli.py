"""The `modelapi` client commands (run, submit, watch, status, result, cancel, ls, models), as a
user runs them: a subprocess against a real `modelapi serve` on 127.0.0.1. Nothing leaves this
machine."""

from __future__ import annotations

import json
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from conftest import SKIMAGE_DATA, ServerProcess, started_in_background, wait_status, wait_terminal
from modelapi import catalog

SEQ = "bytedance/seedream-4-0/sequential"
EDIT_SEQ = "bytedance/seedream-4-0/edit-sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"
SQUARE = "image_size=2048:2048 (1:1)"
TTY = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "160"}  # rich draws its live display


@pytest.fixture(scope="module", autouse=True)
def _busy_server_starting(tmp_path_factory):
    """A second server with slow jobs (100 steps of 0.2 s), started in the background while the
    module's other tests run; stopped at once (no grace period) at the end."""
    srv = ServerProcess(tmp_path_factory.mktemp("busy") / "data", args=["--shutdown-grace-s", "0"],
                        env={"MODELAPI_TEST_STEP_S": "0.2", "MODELAPI_TEST_STEPS": "100"})
    with started_in_background(srv) as started:
        yield started


@pytest.fixture
def busy_server(_busy_server_starting):
    """The slow server, its one worker busy for 20 s with a first request, so that the next
    request stays in_queue."""
    srv = _busy_server_starting.result()
    with srv.client() as c:
        blocker = c.post(f"/v1/models/{SEQ}", json={"text": "one image of a wall"}).json()["request_id"]
        wait_status(c, blocker, "in_progress", timeout_s=10)
    return srv


@pytest.fixture
def chelsea(tmp_path) -> Path:
    path = tmp_path / "chelsea.png"
    shutil.copy(SKIMAGE_DATA / "chelsea.png", path)
    return path


def cli(srv: ServerProcess, *args: str, ok: bool = True):
    """Run a client command against ``srv`` (``--base-url`` added at the end unless given);
    with ``ok``, assert it succeeded."""
    proc = srv.cli(*args, *(() if "--base-url" in args else ("--base-url", srv.base_url)))
    if ok:
        assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def cli_json(srv: ServerProcess, *args: str):
    return json.loads(cli(srv, *args).stdout)


def cli_all(srv: ServerProcess, *commands: tuple[str, ...], ok: bool = True) -> list:
    """Run independent commands at once (each CLI start costs about a second)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: cli(srv, *args, ok=ok), commands))


def unwrapped(text: str) -> str:
    """stderr with its line breaks removed (the CLI's console folds long lines)."""
    return "".join(text.splitlines())


def request_count(srv: ServerProcess) -> float:
    """Every request the server holds, in any status (from /metrics)."""
    text = httpx.get(srv.base_url + "/metrics", headers=srv.headers()).text
    return sum(float(v) for v in re.findall(r"^modelapi_requests\{[^}]*\} (\S+)$", text, re.M))


def test_run_saves_images_and_prints_their_paths(server, chelsea, tmp_path):
    out = tmp_path / "generated-images" / "dreamina-edit"  # paths longer than 80 characters
    proc = cli(server, "run", DREAMINA, "--prompt", "the cat as a lion", "-i", str(chelsea),
               "--set", "width×height=1024x1024(1:1)", "-o", str(out))
    printed = proc.stdout.splitlines()
    saved = sorted(out.iterdir())
    assert len(saved) == 1 and saved[0].suffix == ".jpg", saved  # the server's default --output-format
    # stdout is exactly the saved paths, one per line (whatever their length)
    assert printed == [str(p) for p in saved], proc.stdout
    with Image.open(saved[0]) as img:
        assert img.size == (1024, 1024)


def test_submit_status_result_cancel_print_json(server):
    args = ("submit", SEQ, "--text", "one image of a fox", "--set", "image_size=2048:2048 (1:1)")
    handle = cli_json(server, *args, "--idempotency-key", "cli-order-1")
    assert set(handle) == {"request_id", "status_url", "result_url", "cancel_url"}
    rid = handle["request_id"]
    assert handle["status_url"] == f"{server.base_url}/v1/requests/{rid}/status"
    assert cli_json(server, *args, "--idempotency-key", "cli-order-1")["request_id"] == rid
    with server.client() as c:
        assert wait_terminal(c, rid)["status"] == "completed"
    status, result, costed, cancelled = (json.loads(p.stdout) for p in cli_all(
        server, ("status", rid), ("result", rid), ("result", rid, "--include-cost"), ("cancel", rid)))
    assert status["request_id"] == rid and status["status"] == "completed"
    assert result["status"] == "completed" and len(result["output"]["images"]) == 1
    assert result["output"]["image"] == result["output"]["images"][0]
    # billed by sequential_image_generation_options (default 3), not by the images made
    assert costed["cost"] == pytest.approx(3 * 0.03)
    # a finished request cannot be cancelled: still a 200 and JSON
    assert cancelled == {"request_id": rid, "status": "completed", "outcome": "not_cancellable"}


def test_models_and_schema(server):
    listed, *schemas = cli_all(server, ("models",), *(("models", "--base-url", server.base_url, "schema", m)
                                                      for m in (DREAMINA, EDIT_SEQ)))
    assert sorted(m["model_id"] for m in json.loads(listed.stdout)) == sorted(catalog.models())
    for model_id, proc in zip((DREAMINA, EDIT_SEQ), schemas):
        assert json.loads(proc.stdout)["input_schema"] == catalog.get(model_id).input_schema


def test_invalid_input_is_refused_before_anything_is_sent(server, chelsea):
    before = request_count(server)
    too_many = ("--text", "a cat", "--set", "sequential_image_generation_options=99")
    missing = chelsea.parent / "missing.png"
    run_bad, submit_bad, bad_size, no_file = cli_all(
        server, ("run", SEQ, *too_many), ("submit", SEQ, *too_many),
        ("run", DREAMINA, "--prompt", "a cat", "-i", str(chelsea), "--set", "width×height=999x999"),
        ("run", DREAMINA, "--prompt", "a cat", "-i", str(missing)), ok=False)
    for proc in (run_bad, submit_bad, bad_size, no_file):
        assert proc.returncode != 0, proc.stdout
    assert "sequential_image_generation_options" in run_bad.stderr
    detail = json.loads(submit_bad.stdout)["detail"]  # submit prints the problems as JSON
    assert [d["loc"] for d in detail] == [["body", "sequential_image_generation_options"]]
    assert "width×height" in bad_size.stderr  # checked before chelsea.png was uploaded
    assert "missing.png" in unwrapped(no_file.stderr)
    assert request_count(server) == before


def test_wrong_api_key_is_a_clear_error(server):
    before = request_count(server)
    commands = (("models",), ("run", SEQ, "--text", "one image of a cat"))
    for args, proc in zip(commands, cli_all(server, *((*c, "--api-key", "mapi_wrong") for c in commands), ok=False)):
        assert proc.returncode != 0, args
        assert "401" in proc.stderr and "API key" in proc.stderr, proc.stderr
        assert proc.stdout == "", proc.stdout
    assert request_count(server) == before


def test_watch_and_cancel_a_queued_request(busy_server):
    # Two requests ahead of ours: a worker may take the next one early (one job ahead), never two.
    with busy_server.client() as c:
        for i in range(2):
            c.post(f"/v1/models/{SEQ}", json={"text": f"one image of a wall, part {i}"}).raise_for_status()
    rid = cli_json(busy_server, "submit", SEQ, "--text", "one image of a heron")["request_id"]
    status = cli_json(busy_server, "status", rid)
    assert status["status"] == "in_queue" and status["queue_position"] >= 1
    # watch draws the queue position live, and gives up at its --timeout (the request stays queued)
    proc = busy_server.cli("watch", rid, "--timeout", "2", "--base-url", busy_server.base_url, env=TTY)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"in queue (position {status['queue_position']})" in proc.stderr
    assert "did not finish within" in unwrapped(proc.stderr) and "Traceback" not in proc.stderr
    assert cli_json(busy_server, "cancel", rid) == {"request_id": rid, "status": "cancelled", "outcome": "cancelled"}
    status, result, watched = cli_all(busy_server, ("status", rid), ("result", rid), ("watch", rid), ok=False)
    assert json.loads(status.stdout)["status"] == "cancelled"
    result = json.loads(result.stdout)
    assert result["status"] == "cancelled" and "output" not in result
    assert watched.returncode == 1 and watched.stdout == "" and "cancelled" in watched.stderr


def test_unreachable_server_is_a_clear_error(server, tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = server.cli("models", "--base-url", f"http://127.0.0.1:{port}", "--api-key", "mapi_x")
    assert proc.returncode != 0
    assert "could not reach" in proc.stderr and "Traceback" not in proc.stderr


def test_watch_shows_progress_then_prints_the_output_urls(server):
    rid = cli_json(server, "submit", SEQ, "--text", "Generate 2 images of a gull", "--set", SQUARE)["request_id"]
    proc = server.cli("watch", rid, "--base-url", server.base_url, env=TTY)
    assert proc.returncode == 0, proc.stderr
    with server.client() as c:
        result = wait_terminal(c, rid)
    # stdout: exactly the output URLs, one per line (presigned URLs are signed anew per answer)
    assert [urlsplit(u).path for u in proc.stdout.splitlines()] == [urlsplit(u).path for u in result["output"]["images"]]
    assert len(result["output"]["images"]) == 2
    assert "completed" in proc.stderr and "100%" in proc.stderr


def test_ls_lists_recent_requests_newest_first(server):
    first, second = (cli_json(server, "submit", SEQ, "--text", f"one image of a dune, take {i}", "--set", SQUARE)["request_id"]
                     for i in range(2))
    with server.client() as c:
        for rid in (first, second):
            wait_terminal(c, rid)
    table, as_json, filtered = cli_all(server, ("ls", "--limit", "2"), ("ls", "--json", "-n", "2"),
                                       ("ls", "--json", "--status", "completed", "--model", SEQ, "--limit", "100"))
    rows = [line for line in table.stdout.splitlines() if first in line or second in line]
    assert len(rows) == 2 and second in rows[0] and first in rows[1], table.stdout  # whole ids, newest first
    for row in rows:
        assert SEQ in row and "completed" in row
        assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row)) == 2  # created and finished
    assert [item["request_id"] for item in json.loads(as_json.stdout)] == [second, first]
    items = json.loads(filtered.stdout)
    assert {first, second} <= {item["request_id"] for item in items}
    assert all(item["status"] == "completed" and item["model_id"] == SEQ for item in items)
    bad = cli(server, "ls", "--status", "paused", ok=False)
    assert bad.returncode == 2 and "--status" in bad.stderr
