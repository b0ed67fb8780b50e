"""Accounts over real HTTP, in both configurations (SQLite + folder, Postgres + S3): keys with
limits shared by every API process of a deployment, each refusal's code and headers, budget
reservations and their settlement, the admin API refusing user keys, usage that adds up, a key's
running cap, and the CLI managing keys through a server or the database."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from conftest import ServerProcess, wait_status, wait_terminal

SEQ = "bytedance/seedream-4-0/sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"


def body(n: int = 1, text: str = "a red fox") -> dict:
    return {"text": text, "sequential_image_generation_options": n}


def create_key(srv: ServerProcess, **fields) -> tuple[dict, str]:
    """A key made through the admin API with the server's (admin) initial key: (record, secret)."""
    resp = httpx.post(srv.base_url + "/v1/admin/keys", json=fields, headers=srv.headers(), timeout=30)
    assert resp.status_code == 201, resp.text
    record = resp.json()
    return record, record.pop("key")


def change_key(srv: ServerProcess, key_id: str, **fields) -> dict:
    resp = httpx.patch(f"{srv.base_url}/v1/admin/keys/{key_id}", json=fields, headers=srv.headers(), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def me(srv: ServerProcess, secret: str) -> dict:
    resp = httpx.get(srv.base_url + "/v1/keys/me", headers=srv.headers(secret), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def post(srv: ServerProcess, secret: str, payload: dict, model: str = SEQ) -> httpx.Response:
    return httpx.post(f"{srv.base_url}/v1/models/{model}", json=payload, headers=srv.headers(secret), timeout=60)


def assert_error(resp: httpx.Response, status: int, code: int, *words: str) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()
    assert error["error_code"] == code, error
    for word in words:
        assert word in error["error_message"], error
    return error


def a_fresh_minute(spare_s: float = 20) -> None:
    """Wait until at least ``spare_s`` seconds are left in the current UTC minute (the rate
    window), so that a burst falls within one window."""
    while time.time() % 60 > 60 - spare_s:
        time.sleep(0.2)


def refused(srv: ServerProcess, reason: str, key_id: str) -> float:
    text = httpx.get(srv.base_url + "/metrics", headers=srv.headers(), timeout=30).text
    line = f'modelapi_requests_refused_total{{key_id="{key_id}",reason="{reason}"}} '
    found = [ln for ln in text.splitlines() if ln.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


def test_two_api_processes_share_one_rate_count_and_one_budget(make_server):
    first = make_server("data", args=["--no-worker"]).start()
    second = make_server("data", args=["--no-worker"]).start()  # the same database: every request stays queued
    rated, rated_secret = create_key(first, name="rated", rpm=6)
    budgeted, budget_secret = create_key(first, name="budgeted", budget_usd=0.15, budget_period="total")
    a_fresh_minute()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post((first, second)[i % 2], rated_secret, body()), range(16)))
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) == 6, [r.status_code for r in answers]
    assert sorted(int(r.headers["RateLimit-Remaining"]) for r in ok) == [0, 1, 2, 3, 4, 5]
    assert {r.headers["RateLimit-Limit"] for r in ok} == {"6"}
    for r in answers:
        if r.status_code != 200:
            assert_error(r, 429, 429002, "6 requests per minute")
            assert r.headers["Retry-After"] == r.headers["RateLimit-Reset"] and 1 <= int(r.headers["Retry-After"]) <= 60
            assert r.headers["RateLimit-Remaining"] == "0"
    assert me(second, rated_secret)["rate_remaining"] == 0

    with ThreadPoolExecutor(8) as pool:  # 0.03 USD each: the budget covers 5, wherever they land
        answers = list(pool.map(lambda i: post((first, second)[i % 2], budget_secret, body()), range(12)))
    assert sorted(r.status_code for r in answers) == [200] * 5 + [402] * 7
    for r in answers:
        if r.status_code == 402:
            assert assert_error(r, 402, 10001, "budget")["detail"] == {"budget_remaining_usd": 0.0, "resets_at": None}
            assert "RateLimit-Limit" not in r.headers  # no rpm: no rate headers
    state = me(first, budget_secret)
    assert (state["queued"], state["budget_reserved_usd"], state["budget_remaining_usd"]) == (5, 0.15, 0.0)
    assert state["budget_spent_usd"] == 0.0 and state["budget_resets_at"] is None
    assert refused(first, "budget", budgeted["id"]) + refused(second, "budget", budgeted["id"]) == 7
    assert refused(first, "rate", rated["id"]) + refused(second, "rate", rated["id"]) == 10


def test_each_limit_answers_its_code_and_headers_in_order_and_a_refusal_counts_nothing(make_server):
    srv = make_server(args=["--no-worker"]).start()  # nothing runs: the queue holds
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    expired, expired_secret = create_key(srv, name="expired", expires_at=past)
    assert_error(post(srv, expired_secret, body()), 401, 401001, "expired at")
    assert_error(httpx.get(srv.base_url + "/v1/keys/me", headers=srv.headers(expired_secret)), 401, 401001, "expired")
    change_key(srv, expired["id"], expires_at=None)
    assert me(srv, expired_secret)["expires_at"] is None

    key, secret = create_key(srv, models=[SEQ], rpm=2, max_queued=1, budget_usd=0.03, budget_period="day")
    assert_error(post(srv, secret, {"prompt": "x"}, DREAMINA), 403, 403003, DREAMINA)
    a_fresh_minute()
    accepted = post(srv, secret, body())
    assert accepted.status_code == 200, accepted.text
    assert (accepted.headers["RateLimit-Limit"], accepted.headers["RateLimit-Remaining"]) == ("2", "1")
    assert 1 <= int(accepted.headers["RateLimit-Reset"]) <= 60
    full = post(srv, secret, body())
    assert_error(full, 429, 429001, "max_queued")  # the rate allows one more: the queue refuses
    assert "RateLimit-Limit" not in full.headers and int(full.headers["Retry-After"]) > 0
    assert_error(post(srv, secret, body()), 429, 429001)
    state = me(srv, secret)
    assert (state["rate_remaining"], state["queued"], state["budget_reserved_usd"]) == (1, 1, 0.03), state

    change_key(srv, key["id"], max_queued=None)
    broke = assert_error(post(srv, secret, body()), 402, 10001, "0.03 USD")
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00.000000Z")
    assert broke["detail"] == {"budget_remaining_usd": 0.0, "resets_at": tomorrow}
    assert me(srv, secret)["rate_remaining"] == 1  # three refusals counted against nothing

    change_key(srv, key["id"], budget_usd=None, budget_period=None)
    assert post(srv, secret, body()).headers["RateLimit-Remaining"] == "0"
    change_key(srv, key["id"], max_queued=1, budget_usd=0.03, budget_period="day")  # every limit refuses now
    limited = post(srv, secret, body())
    assert_error(limited, 429, 429002, "2 requests per minute")
    assert limited.headers["Retry-After"] == limited.headers["RateLimit-Reset"]
    assert (limited.headers["RateLimit-Limit"], limited.headers["RateLimit-Remaining"]) == ("2", "0")
    assert_error(post(srv, secret, {"prompt": "x"}, DREAMINA), 403, 403003)  # the model before the rate
    assert me(srv, secret)["queued"] == 2

    assert [refused(srv, reason, key["id"]) for reason in ("model", "rate", "queue", "budget")] == [2, 1, 2, 1]
    assert refused(srv, "expired", expired["id"]) == 2


def test_a_reservation_is_given_back_when_cancelled_or_failed_and_spent_when_completed(make_server):
    srv = make_server(env={"MODELAPI_TEST_STEP_S": "0.1", "MODELAPI_TEST_STEPS": "20"}).start()
    key, secret = create_key(srv, budget_usd=0.3, budget_period="month")
    with httpx.Client(base_url=srv.base_url, headers=srv.headers(secret), timeout=60) as c:
        running = c.post(f"/v1/models/{SEQ}", json=body(3)).json()["request_id"]  # reserves 0.09
        wait_status(c, running, "in_progress")
        queued = c.post(f"/v1/models/{SEQ}", json=body(5)).json()["request_id"]  # reserves 0.15
        state = me(srv, secret)
        assert (state["budget_reserved_usd"], state["budget_remaining_usd"]) == (0.24, 0.06)
        assert_error(c.post(f"/v1/models/{SEQ}", json=body(3)), 402, 10001)
        assert c.post(f"/v1/requests/{queued}/cancel").json()["outcome"] == "cancelled"
        assert me(srv, secret)["budget_reserved_usd"] == 0.09
        doomed = c.post(f"/v1/models/{SEQ}", json=body(2, "a fox [out of memory]")).json()["request_id"]
        assert wait_terminal(c, doomed)["status"] == "failed"
        done = wait_terminal(c, running)
        assert done["status"] == "completed"
        assert c.get(f"/v1/requests/{running}/result?include_cost=true").json()["cost"] == 0.09
    state = me(srv, secret)
    assert (state["budget_spent_usd"], state["budget_reserved_usd"], state["budget_remaining_usd"]) == (0.09, 0.0, 0.21)
    assert state["budget_resets_at"] == (datetime.now(timezone.utc).replace(day=1) + timedelta(days=32)).strftime(
        "%Y-%m-01T00:00:00.000000Z")


ADMIN_ROUTES = [("POST", "/v1/admin/keys"), ("GET", "/v1/admin/keys"), ("GET", "/v1/admin/keys/{key_id}"),
                ("PATCH", "/v1/admin/keys/{key_id}"), ("POST", "/v1/admin/keys/{key_id}/revoke"), ("GET", "/v1/admin/usage"),
                ("GET", "/v1/admin/requests"), ("GET", "/v1/admin/workers"), ("GET", "/v1/admin/queue")]


def test_admin_routes_refuse_user_keys_and_a_new_key_is_shown_once(make_server):
    srv = make_server().start()
    user, secret = create_key(srv, name="user")
    assert user["role"] == "user" and secret.startswith("mapi_") and user["prefix"] == secret[:12]
    with httpx.Client(base_url=srv.base_url, timeout=30) as c:
        for method, path in ADMIN_ROUTES:
            url = path.format(key_id=user["id"])
            payload = {"json": {}} if method in ("POST", "PATCH") else {}
            assert_error(c.request(method, url, headers=srv.headers(secret), **payload), 403, 403003, "admin")
            assert_error(c.request(method, url, **payload), 401, 401001)
        admin = {"headers": srv.headers()}
        keys = c.get("/v1/admin/keys", **admin).json()["keys"]
        assert [k["role"] for k in keys] == ["admin", "user"] and all("key" not in k for k in keys)
        assert "key" not in c.get(f"/v1/admin/keys/{user['id']}", **admin).json()
        rid = c.post(f"/v1/models/{SEQ}", json=body(), headers=srv.headers(secret)).json()["request_id"]
        listed = c.get("/v1/admin/requests", params={"key_id": user["id"]}, **admin).json()["requests"]
        assert [(r["request_id"], r["key_id"]) for r in listed] == [(rid, user["id"])]
        assert c.get("/v1/admin/queue", **admin).json()["models"][0]["model_id"]
        assert len(c.get("/v1/admin/workers", **admin).json()["workers"]) == 1
        assert_error(c.get("/v1/admin/keys/key_nope", **admin), 404, 404001)
        bad = assert_error(c.patch(f"/v1/admin/keys/{user['id']}", json={"rpm": 0}, **admin), 422, 422001)
        assert bad["detail"][0]["loc"] == ["body", "rpm"]
        bad = assert_error(c.post("/v1/admin/keys", json={"models": ["no/such/model"]}, **admin), 422, 422001)
        assert "unknown model id 'no/such/model'" in bad["detail"][0]["msg"]
        assert_error(c.post("/v1/admin/keys", json={"budget_usd": 5}, **admin), 422, 422001, "budget_period")
        revoked = c.post(f"/v1/admin/keys/{user['id']}/revoke", **admin).json()
        assert revoked["revoked_at"] is not None
        assert_error(c.post(f"/v1/models/{SEQ}", json=body(), headers=srv.headers(secret)), 401, 401001)
        paths = c.get("/openapi.json").json()["paths"]
        assert {p for _, p in ADMIN_ROUTES} | {"/v1/keys/me", "/v1/usage"} <= set(paths)
        assert "402" in paths[f"/v1/models/{SEQ}"]["post"]["responses"]


def test_usage_sums_match_the_requests_that_ran(make_server):
    srv = make_server().start()
    keys = [create_key(srv, name=f"k{i}") for i in range(2)]
    costs: dict[str, list[float]] = {}
    images: dict[str, int] = {}
    for (record, secret), counts in zip(keys, ([1, 2, 3], [2])):
        with httpx.Client(base_url=srv.base_url, headers=srv.headers(secret), timeout=60) as c:
            ids = [c.post(f"/v1/models/{SEQ}", json=body(n, f"Generate {n} images of a fox")).json()["request_id"] for n in counts]
            for rid in ids:
                result = wait_terminal(c, rid)
                assert result["status"] == "completed"
                costs.setdefault(record["id"], []).append(c.get(f"/v1/requests/{rid}/result?include_cost=true").json()["cost"])
                images[record["id"]] = images.get(record["id"], 0) + len(result["output"]["images"])
    with httpx.Client(base_url=srv.base_url, headers=srv.headers(), timeout=30) as c:
        by_key = {r["key_id"]: r for r in c.get("/v1/admin/usage", params={"group_by": "key"}).json()["rows"]}
        for key_id, spent in costs.items():
            row = by_key[key_id]
            assert (row["requests"], row["images"]) == (len(spent), images[key_id])
            assert row["cost_usd"] == pytest.approx(sum(spent)) and row["billed_units"] == round(sum(spent) / 0.03)
        total = sum(sum(v) for v in costs.values())
        for group_by in ("model", "day"):
            report = c.get("/v1/admin/usage", params={"group_by": group_by}).json()
            assert len(report["rows"]) == 1 and report["cost_usd"] == pytest.approx(total) and report["requests"] == 4
        tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%d")
        assert c.get("/v1/admin/usage", params={"from": tomorrow}).json()["rows"] == []
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        assert c.get("/v1/admin/usage", params={"to": today}).json()["rows"] == []  # `to` is exclusive
        ranged = c.get("/v1/admin/usage", params={"from": today, "to": tomorrow}).json()
        assert ranged["to"].startswith(tomorrow) and ranged["requests"] == 4
        assert_error(c.get("/v1/admin/usage", params={"group_by": "week"}), 422, 422001)
        assert_error(c.get("/v1/admin/usage", params={"from": "yesterday"}), 422, 422001)
    (first, first_secret) = keys[0]
    mine = httpx.get(srv.base_url + "/v1/usage", params={"group_by": "day"}, headers=srv.headers(first_secret)).json()
    assert mine["requests"] == 3 and mine["cost_usd"] == pytest.approx(sum(costs[first["id"]]))
    assert mine["rows"][0]["day"] == datetime.now(timezone.utc).strftime("%Y-%m-%d")
    before = httpx.get(srv.base_url + "/v1/usage", params={"to": mine["rows"][0]["day"]}, headers=srv.headers(first_secret)).json()
    assert before["rows"] == [] and before["to"].startswith(mine["rows"][0]["day"])
    printed = srv.cli("usage", "--json", "--base-url", srv.base_url, "--api-key", srv.key)
    assert printed.returncode == 0, printed.stderr
    assert {r["key_id"]: r["cost_usd"] for r in json.loads(printed.stdout)} == {k: r["cost_usd"] for k, r in by_key.items()}
    table = srv.cli("usage", "--group-by", "model")  # the database itself
    assert table.returncode == 0 and SEQ in table.stdout and f"{total:.4f}" in table.stdout


def test_a_key_s_max_running_holds_its_second_request_until_the_first_ends(make_server):
    srv = make_server(args=["--worker-concurrency", "2"], env={"MODELAPI_TEST_STEP_S": "0.05", "MODELAPI_TEST_STEPS": "20"}).start()
    key, secret = create_key(srv, max_running=1)
    with httpx.Client(base_url=srv.base_url, headers=srv.headers(secret), timeout=60) as c:
        ids = [c.post(f"/v1/models/{SEQ}", json=body()).json()["request_id"] for _ in range(2)]
        assert all(wait_terminal(c, rid)["status"] == "completed" for rid in ids)
    events = {}
    for line in srv.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("request_id") in ids and entry.get("event") in ("request.in_progress", "request.completed", "request.deferred"):
                events.setdefault((entry["request_id"], entry["event"]), datetime.fromisoformat(entry["ts"]))
    second = max(ids, key=lambda rid: events[(rid, "request.in_progress")])
    first = ids[1 - ids.index(second)]
    assert events[(second, "request.in_progress")] >= events[(first, "request.completed")]
    assert (second, "request.deferred") in events  # it waited on a delayed entry, not on the worker


def test_the_cli_manages_keys_through_a_server_or_the_database(make_server):
    srv = make_server().start()
    server = ("--base-url", srv.base_url, "--api-key", srv.key)
    made = srv.cli("keys", "create", "--name", "ci", "--rpm", "60", "--budget-usd", "50", "--budget-period", "month",
                   "--models", SEQ, "--expires-in", "30d", "--json", *server)
    assert made.returncode == 0, made.stderr
    record = json.loads(made.stdout)
    assert (record["rpm"], record["budget_usd"], record["budget_period"], record["models"]) == (60, 50.0, "month", [SEQ])
    expires = datetime.fromisoformat(record["expires_at"].replace("Z", "+00:00"))
    assert abs((expires - datetime.now(timezone.utc)) - timedelta(days=30)) < timedelta(minutes=5)
    assert me(srv, record["key"])["budget_remaining_usd"] == 50.0
    changed = srv.cli("keys", "update", record["id"], "--rpm", "none", "--max-running", "2", "--models", "all", *server)
    assert changed.returncode == 0, changed.stderr
    assert (json.loads(changed.stdout)["rpm"], json.loads(changed.stdout)["max_running"], json.loads(changed.stdout)["models"]) == (None, 2, [])
    shown = srv.cli("keys", "show", record["prefix"], "--database-url", srv.database_url)  # the database itself
    assert shown.returncode == 0 and json.loads(shown.stdout)["max_running"] == 2, shown.stderr
    by_db = srv.cli("keys", "update", record["id"], "--budget-usd", "none", "--database-url", srv.database_url)
    assert by_db.returncode == 0 and json.loads(by_db.stdout)["budget_usd"] is None, by_db.stderr
    listed = srv.cli("keys", "list", *server)
    assert listed.returncode == 0 and record["id"] in listed.stdout and "admin" in listed.stdout
    denied = srv.cli("keys", "list", "--base-url", srv.base_url, "--api-key", record["key"])
    assert denied.returncode == 1 and "403003" in denied.stderr
    bad = srv.cli("keys", "update", record["id"], "--rpm", "0", "--database-url", srv.database_url)
    assert bad.returncode == 2 and "--rpm" in bad.stderr
    gone = srv.cli("keys", "revoke", record["id"], *server)
    assert gone.returncode == 0 and "revoked" in gone.stderr, gone.stderr
    assert_error(post(srv, record["key"], body()), 401, 401001)


def test_a_refused_submit_leaves_no_input_image_in_the_store(make_server, monkeypatch):
    """A submit refused after its reference images were checked and stored (here: its budget)
    deletes them again: a key refused over and over fills no storage."""
    import base64
    import io

    from PIL import Image

    from modelapi.core.config import Settings
    from modelapi.core.storage import open_storage

    srv = make_server().start()
    key, secret = create_key(srv, budget_usd=0.01, budget_period="total")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    edit = "bytedance/seedream-4-0/edit-sequential"
    for _ in range(3):
        assert_error(post(srv, secret, {"images": [image], "text": "the same fox"}, model=edit), 402, 10001, "budget")
    for name, value in srv.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    store = open_storage(Settings(data_dir=srv.data_dir, storage_url=srv.env.get("MODELAPI_STORAGE_URL")).files_url,
                         srv.data_dir)
    assert store.keys("inputs/") == [], "nothing stored for requests that were never made"
    accepted = post(srv, srv.key, {"images": [image], "text": "the same fox"}, model=edit)  # the admin key: no budget
    assert accepted.status_code == 200, accepted.text
    assert len(store.keys(f"inputs/{accepted.json()['request_id']}/")) == 1, "an accepted submit keeps its input"
