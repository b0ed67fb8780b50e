"""The web app's pages besides the playground (Generations, Usage, API keys, Workers) in headless
Chromium against a real ``modelapi serve``, in both configurations (SQLite at 1280 px, Postgres +
S3 at 375 px), with screenshots at both widths (``$MODELAPI_PLAYGROUND_SHOTS``, named
``<config>-pages-<step>-<width>px.png``); the fixtures are test_playground.py's."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from conftest import wait_terminal
import test_playground
from test_playground import CHROMIUM, DREAMINA, SEQ, Shots, unsigned

# test_playground.py's fixtures, shared: a Chromium, a server per configuration, a page, screenshots
browser, web_server, page, shots = test_playground.browser, test_playground.web_server, test_playground.page, test_playground.shots

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium not found at /usr/bin/chromium"),
    pytest.mark.timeout(240),
]

from playwright.sync_api import Page, expect  # noqa: E402


def new_key(server, **fields) -> tuple[str, str]:
    """A new key made with the admin API: (id, secret)."""
    with server.client() as api:
        created = api.post("/v1/admin/keys", json=fields)
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


def open_app(page: Page, server, key: str, route: str = "") -> None:
    page.goto("about:blank")
    page.goto(f"/#key={key}")
    page.wait_for_selector("html[data-ready=true]")
    if route:
        page.get_by_role("navigation", name="Pages").get_by_role("link", name=route, exact=True).click()


def grid_ids(page: Page) -> list[str]:
    return page.locator("#gen-grid [data-request-id]").evaluate_all("es => es.map(e => e.dataset.requestId)")


def listed(server, key: str, **params) -> list[str]:
    with server.client(key) as api:
        return [r["request_id"] for r in api.get("/v1/requests", params={"limit": 12, **params}).json()["requests"]]


# -- Generations ----------------------------------------------------------------------------------
def test_generations_pages_filters_opens_and_reruns_a_request(page, web_server):
    _, key = new_key(web_server, name="gallery")
    with web_server.client(key) as api:
        done = [api.post(f"/v1/models/{SEQ}", json={"text": f"Generate 1 image of a {thing}"}).json()["request_id"]
                for thing in ("red fox", "blue boat")]
        for rid in done:
            assert wait_terminal(api, rid)["status"] == "completed"
        # eleven more, cancelled while queued (the worker may start one or two): thirteen in all
        more = [api.post(f"/v1/models/{SEQ}", json={"text": f"Generate 1 image of a cloud {i}"}).json()["request_id"]
                for i in range(11)]
        for rid in more:
            api.post(f"/v1/requests/{rid}/cancel")
        for rid in more:
            wait_terminal(api, rid)
        fox = api.get(f"/v1/requests/{done[0]}/result", params={"include_cost": "true", "include_inputs": "true"}).json()

    open_app(page, web_server, key, "Generations")
    expect(page.get_by_role("heading", name="Generations", level=2)).to_be_focused()
    first = listed(web_server, key)
    expect(page.locator("#gen-grid [data-request-id]")).to_have_count(12)
    assert grid_ids(page) == first  # newest first, as the API lists them
    expect(page.locator(f'#gen-grid [data-request-id="{done[1]}"] img')).to_have_count(1)
    expect(page.locator(f'#gen-grid [data-request-id="{done[1]}"]')).to_contain_text("a blue boat")
    page.wait_for_function("() => [...document.querySelectorAll('#gen-grid img')].every(i => i.complete && i.naturalWidth > 0)")
    page.shots("pages-generations")

    # Paged: the second page is the API's next page; Newer comes back.
    expect(page.get_by_role("button", name="← Newer")).to_be_disabled()
    page.get_by_role("button", name="Older →").click()
    expect(page.locator("#gen-page")).to_have_text("Page 2")
    with web_server.client(key) as api:
        cursor = api.get("/v1/requests", params={"limit": 12}).json()["next_cursor"]
    expect(page.locator("#gen-grid [data-request-id]")).to_have_count(1)
    assert grid_ids(page) == listed(web_server, key, cursor=cursor) == [done[0]]
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    page.get_by_role("button", name="← Newer").click()
    expect(page.locator("#gen-page")).to_have_text("Page 1")
    assert grid_ids(page) == first

    # Filtered by status, then by a model it never used (the empty state).
    page.get_by_label("By status", exact=True).select_option("completed")
    expect(page.locator("#gen-grid [data-request-id]")).to_have_count(len(listed(web_server, key, status="completed")))
    assert grid_ids(page) == listed(web_server, key, status="completed")
    assert set(done) <= set(grid_ids(page))
    page.get_by_label("By status", exact=True).select_option("cancelled")
    expect(page.locator("#gen-grid [data-status=completed]")).to_have_count(0)
    assert grid_ids(page) == listed(web_server, key, status="cancelled")
    page.get_by_label("By model", exact=True).select_option(DREAMINA)
    expect(page.locator("#gen-empty")).to_have_text("No requests match these filters.")
    expect(page.locator("#gen-grid [data-request-id]")).to_have_count(0)
    page.shots("pages-generations-empty")

    # Opened: its inputs, prompts, seed, timings and cost, the image with a download link.
    page.get_by_label("By model", exact=True).select_option(SEQ)
    page.get_by_label("By status", exact=True).select_option("completed")
    page.locator(f'#gen-grid [data-request-id="{done[0]}"] a').click()
    expect(page).to_have_url(re.compile(f"#/generations/{done[0]}$"))
    expect(page.locator("#det-id")).to_have_text(done[0])
    expect(page.locator('#det-inputs [data-input="text"]')).to_have_text(fox["inputs"]["text"])
    expect(page.locator("#det-prompts li")).to_have_text(fox["metadata"]["prompts"])
    expect(page.locator('#det-facts [data-fact="Seed"]')).to_have_text(str(fox["seed"]))
    expect(page.locator('#det-facts [data-fact="Cost"]')).to_have_text(f"${fox['cost']:.2f}")
    expect(page.locator('#det-facts [data-fact="Timings"]')).to_contain_text("inference")
    expect(page.locator('#det-facts [data-fact="Model"]')).to_have_text(SEQ)
    download = page.get_by_role("link", name="Download output 1")
    assert unsigned([download.get_attribute("href")]) == unsigned(fox["output"]["images"])
    assert download.get_attribute("download")
    page.wait_for_function("() => [...document.querySelectorAll('#det-body img')].every(i => i.complete && i.naturalWidth > 0)")
    page.shots("pages-generation-detail")

    # Re-run: the playground's form, filled with its inputs; Run sends them.
    page.get_by_role("button", name="Re-run in playground").click()
    expect(page).to_have_url(re.compile("#/playground$"))
    expect(page.get_by_label("Model", exact=True)).to_have_value(SEQ)
    expect(page.get_by_label("text", exact=True)).to_have_value(fox["inputs"]["text"])
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/v1/models/{SEQ}")) as submitted:
        page.get_by_role("button", name="Run", exact=True).click()
    assert submitted.value.status == 200
    assert submitted.value.request.post_data_json["text"] == fox["inputs"]["text"]
    expect(page.locator("#status-text")).to_contain_text("completed", timeout=30_000)

    # The browser's back button returns to the request.
    page.go_back()
    expect(page.locator("#det-id")).to_have_text(done[0])


# -- Usage ----------------------------------------------------------------------------------------
def test_usage_chart_and_table_match_the_api_with_the_budget_and_rate(page, web_server):
    _, key = new_key(web_server, name="usage", rpm=30, budget_usd=5, budget_period="day")
    with web_server.client(key) as api:
        rids = [api.post(f"/v1/models/{SEQ}", json={"text": text}).json()["request_id"]
                for text in ("Generate 2 images of a kite", "Generate 1 image of a hill")]
        for rid in rids:
            assert wait_terminal(api, rid)["status"] == "completed"
        today = datetime.now(timezone.utc).date()
        start, end = today - timedelta(days=29), today + timedelta(days=1)
        by_day = api.get("/v1/usage", params={"group_by": "day", "from": str(start), "to": str(end)}).json()
        by_model = api.get("/v1/usage", params={"group_by": "model", "from": str(start), "to": str(end)}).json()
        me = api.get("/v1/keys/me").json()
    assert by_day["requests"] == 2 and by_model["rows"][0]["model_id"] == SEQ

    open_app(page, web_server, key, "Usage")
    page.wait_for_selector("html[data-usage=ready]")
    expect(page.get_by_label("From")).to_have_value(str(start))
    expect(page.get_by_label("To (inclusive)")).to_have_value(str(today))
    bars = page.locator("#usage-chart rect.bar")
    expect(bars).to_have_count(30)

    def chart() -> dict[str, float]:
        return dict(bars.evaluate_all("bs => bs.map(b => [b.dataset.day, Number(b.dataset.value)])"))

    api_days = {r["day"]: r for r in by_day["rows"]}
    assert chart() == {str(start + timedelta(days=i)): api_days.get(str(start + timedelta(days=i)), {}).get("requests", 0)
                       for i in range(30)}
    page.get_by_label("Cost", exact=True).check()
    expect(bars.nth(29)).to_have_attribute("data-value", str(api_days[str(today)]["cost_usd"]))
    assert sum(chart().values()) == pytest.approx(by_day["cost_usd"])
    page.get_by_label("Images", exact=True).check()
    assert sum(chart().values()) == by_day["images"]

    rows = page.locator("#usage-models tbody tr")
    expect(rows).to_have_count(len(by_model["rows"]))
    cells = rows.first.locator("td")
    row = by_model["rows"][0]
    expect(cells).to_have_text([SEQ, str(row["requests"]), str(row["images"]), str(row["billed_units"]), f"${row['cost_usd']:.2f}"])
    expect(page.locator("#usage-models tfoot td").first).to_have_text(str(by_model["requests"]))
    expect(page.locator('[data-card=requests] .card-value')).to_have_text(str(by_day["requests"]))
    expect(page.locator('[data-card=images] .card-value')).to_have_text(str(by_day["images"]))
    expect(page.locator('[data-card=cost] .card-value')).to_have_text(f"${by_day['cost_usd']:.2f}")
    # the remaining budget and rate, as GET /v1/keys/me says them
    expect(page.locator('[data-card=budget] .card-value')).to_have_text(f"${me['budget_remaining_usd']:.2f}")
    expect(page.locator('[data-card=budget] .card-note')).to_contain_text("of $5.00 per day")
    expect(page.locator('[data-card=rate] .card-value')).to_have_text(re.compile(r"^\d+ / 30$"))
    page.shots("pages-usage")

    # A range with nothing in it: zeros and an empty state.
    page.get_by_label("From").fill(str(today - timedelta(days=400)))
    page.get_by_label("To (inclusive)").fill(str(today - timedelta(days=390)))
    page.get_by_role("button", name="Show").click()
    expect(bars).to_have_count(11)
    expect(page.locator("#usage-chart")).to_contain_text("No completed requests in this range.")
    expect(page.locator("#usage-models tbody")).to_contain_text("No completed requests in this range.")
    page.shots("pages-usage-empty")


# -- API keys -------------------------------------------------------------------------------------
def test_api_keys_create_shows_the_key_once_changes_limits_and_revokes(page, web_server, browser, shots):
    admin = web_server.key
    page.on("dialog", lambda d: d.accept())  # the revoke confirmation
    open_app(page, web_server, admin, "API keys")
    expect(page.get_by_role("link", name="Workers")).to_be_visible()  # an admin key: the admin pages too
    page.get_by_role("button", name="Create a key").click()
    name = f"pages-{web_server.config}"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Submits per minute (rpm)").fill("5")
    page.get_by_label("Budget, USD").fill("2")
    page.get_by_label("Budget period").select_option("month")
    page.get_by_label(SEQ, exact=True).check()
    page.shots("pages-keys-create")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/v1/admin/keys")) as answer:
        page.get_by_role("button", name="Create", exact=True).click()
    assert answer.value.status == 201
    created = answer.value.json()
    secret = created["key"]
    assert answer.value.request.post_data_json == {"name": name, "role": "user", "rpm": 5, "budget_usd": 2,
                                                   "budget_period": "month", "models": [SEQ]}
    # Shown once, with a copy button.
    expect(page.get_by_label("The new key")).to_have_value(secret)
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator("#new-key-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    row = page.locator(f'#keys-table tr[data-key-id="{created["id"]}"]')
    expect(row).to_contain_text("5 rpm")
    expect(row).to_contain_text("$2.00/month")
    page.shots("pages-keys-created")
    with web_server.client() as api:
        listed = {k["id"]: k for k in api.get("/v1/admin/keys").json()["keys"]}
    assert listed[created["id"]]["rpm"] == 5 and listed[created["id"]]["models"] == [SEQ]
    assert secret not in str(listed)
    # ...then never again: hidden, and not in the page after leaving it or reloading.
    page.get_by_role("button", name="Done: hide it").click()
    expect(page.locator("#new-key")).to_be_hidden()
    assert secret not in page.content() and page.get_by_label("The new key").input_value() == ""
    page.reload()
    page.wait_for_selector("html[data-ready=true]")
    expect(row).to_be_visible()
    assert secret not in page.content()

    # A user key sees its own key's limits, and no admin pages.
    user = browser.new_context(viewport=page.viewport_size, base_url=web_server.base_url)
    user_page = user.new_page()
    user_page.set_default_timeout(15_000)
    user_page.shots = Shots(user_page, shots, web_server.config)  # type: ignore[attr-defined]
    try:
        open_app(user_page, web_server, secret, "API keys")
        expect(user_page.get_by_role("heading", name="Your API key")).to_be_visible()
        expect(user_page.locator('#key-mine-facts [data-fact="Submits per minute"]')).to_contain_text("5")
        expect(user_page.locator('#key-mine-facts [data-fact="Models"]')).to_have_text(SEQ)
        expect(user_page.get_by_role("link", name="Workers")).to_be_hidden()
        expect(user_page.locator("#keys-admin")).to_be_hidden()
        user_page.shots("pages-keys-user")
        user_page.goto("/#/workers")  # typed in: the API's 403, said in the page
        expect(user_page.locator("#workers-error")).to_contain_text("Not allowed")

        # Limits changed in the page are the key's (GET /v1/admin/keys/{id}).
        row.get_by_role("button", name=f"Edit limits of {name}").click()
        expect(page.get_by_label("Submits per minute (rpm)")).to_have_value("5")
        page.get_by_label("Submits per minute (rpm)").fill("9")
        page.get_by_label("Max queued").fill("4")
        page.get_by_label("Budget, USD").fill("")
        page.get_by_label("Budget period").select_option("")
        page.get_by_label(SEQ, exact=True).uncheck()
        with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
            page.get_by_role("button", name="Save limits").click()
        assert patched.value.status == 200, patched.value.text()
        assert patched.value.request.post_data_json == {"rpm": 9, "max_queued": 4, "budget_usd": None, "budget_period": None, "models": []}
        expect(row).to_contain_text("9 rpm")
        with web_server.client() as api:
            now = api.get(f"/v1/admin/keys/{created['id']}").json()
        assert (now["rpm"], now["max_queued"], now["budget_usd"], now["models"]) == (9, 4, None, [])

        # Revoked: the row says so, and the user's page is refused with the 401 message.
        user_page.goto("/#/playground")
        expect(user_page.get_by_role("button", name="Run", exact=True)).to_be_enabled()
        row.get_by_role("button", name=f"Revoke {name}").click()
        expect(row.locator(".badge")).to_have_text("revoked")
        expect(row.get_by_role("button", name=f"Revoke {name}")).to_be_disabled()
        page.shots("pages-keys-revoked")
        with web_server.client() as api:
            assert api.get(f"/v1/admin/keys/{created['id']}").json()["revoked_at"]
        with user_page.expect_response(lambda r: r.request.method == "POST" and "/v1/models/" in r.url) as refused:
            user_page.get_by_role("button", name="Run", exact=True).click()
        assert refused.value.status == 401
        message = "The API key was refused (missing, unknown or revoked API key)."
        expect(user_page.locator("#form-error")).to_have_text(message)
        expect(user_page.locator("#key-error")).to_have_text(message)
        user_page.shots("pages-revoked-key-refused")
        user_page.get_by_role("link", name="Generations").click()
        expect(user_page.locator("#gen-error")).to_have_text(message)
    finally:
        user.close()


# -- Workers and queue ----------------------------------------------------------------------------
def test_workers_and_queue_show_what_runs_and_what_waits(page, web_server):
    admin = web_server.key
    with web_server.client() as api:
        blockers = [api.post(f"/v1/models/{SEQ}", json={"text": f"Generate 3 images of block {i}"}).json()["request_id"]
                    for i in range(6)]
        try:
            open_app(page, web_server, admin, "Workers")
            expect(page.get_by_role("heading", name="Workers and queue", exact=True)).to_be_visible()
            worker = page.locator("#workers-table tbody tr[data-worker]")
            expect(worker).to_have_count(len(api.get("/v1/admin/workers").json()["workers"]))
            expect(worker.first).to_contain_text(re.compile("|".join(blockers)))  # what it runs, live
            queued = page.locator("#queue-table tr[data-model='%s'] td" % SEQ)
            expect(queued.nth(1)).to_have_text(re.compile(r"^[1-9]"))
            expect(page.locator("[data-card=queued] .card-value")).to_have_text(re.compile(r"^[1-9]"))
            expect(page.locator("[data-card=oldest] .card-value")).to_have_text(re.compile(r"\d"))
            page.shots("pages-workers-busy")
        finally:
            for rid in blockers:
                api.post(f"/v1/requests/{rid}/cancel")
            for rid in blockers:
                wait_terminal(api, rid)
    # Refreshed while shown: the queue empties, the worker goes idle.
    expect(page.locator("[data-card=queued] .card-value")).to_have_text("0", timeout=20_000)
    expect(page.locator("#workers-table tbody tr[data-worker]").first).to_contain_text("idle", timeout=20_000)
    expect(page.locator("[data-card=oldest] .card-value")).to_have_text("—")
    page.shots("pages-workers-idle")
