"""The web playground (``GET /``) in headless Chromium, against a real ``modelapi serve`` in both
configurations (SQLite + folder at desktop width, Postgres + S3 store at 375 px).

Chromium is Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it), driven by
Playwright's sync API (``playwright install`` is never needed). Every step writes a screenshot
at 375 px and at desktop width to ``$MODELAPI_PLAYGROUND_SHOTS`` (default: a pytest temp folder),
named ``<config>-<step>-<width>px.png``; at 375 px the page must not scroll sideways.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import CONFIGS, SKIMAGE_DATA, TESTS, ServerProcess, wait_terminal
from modelapi import catalog

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium not found at /usr/bin/chromium (Debian package "
                       "`chromium`; .ci/run installs it when missing)"),
    pytest.mark.timeout(180),
]

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

SEQ = "bytedance/seedream-4-0/sequential"
EDIT_SEQ = "bytedance/seedream-4-0/edit-sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
IMAGES_LOADED = "() => [...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)"
STEP_S, STEPS = 0.15, 8  # each job runs ~1.2 s: long enough to see it queued and in progress


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MODELAPI_PLAYGROUND_SHOTS") or tmp_path_factory.mktemp("playground-shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    # One per module, not per session: Playwright's sync API keeps an event loop running in this
    # thread while it is open, which would refuse every later test's asyncio.run() in this process
    # (and a second module's own sync_playwright()).
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module", params=CONFIGS)
def web_server(request, tmp_path_factory, fleet_services):
    config_env = fleet_services.config_env() if request.param == "fleet" else None
    srv = ServerProcess(
        tmp_path_factory.mktemp("web") / "data", config_env=config_env, args=["--allow-private-urls", "--print-key"],
        env={"PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS / "web")]),
             "MODELAPI_ENGINE": "playground_engine:make",
             "MODELAPI_TEST_STEP_S": str(STEP_S), "MODELAPI_TEST_STEPS": str(STEPS)},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def page(browser, web_server, shots, request):
    viewport = DESKTOP if web_server.config == "sqlite" else PHONE
    context = browser.new_context(viewport=viewport, base_url=web_server.base_url, is_mobile=viewport is PHONE,
                                  has_touch=viewport is PHONE)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web_server.base_url)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.shots = Shots(pg, shots, web_server.config)  # type: ignore[attr-defined]
    yield pg
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


class Shots:
    """Full-page screenshots at 375 px and at desktop width; checks 375 px has no sideways scroll."""

    def __init__(self, page: Page, folder: Path, config: str) -> None:
        self.page, self.folder, self.config = page, folder, config

    def __call__(self, step: str, *, full_page: bool = True) -> None:
        own = self.page.viewport_size
        for size in ([own] + [s for s in (PHONE, DESKTOP) if s["width"] != own["width"]]):
            if size != self.page.viewport_size:
                self.page.set_viewport_size(size)
                self.page.wait_for_timeout(150)
            if size["width"] == PHONE["width"]:
                overflow = self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{step}: the page scrolls sideways by {overflow}px at 375 px"
            self.page.screenshot(path=self.folder / f"{self.config}-{step}-{size['width']}px.png", full_page=full_page)
        if self.page.viewport_size != own:
            self.page.set_viewport_size(own)


def open_playground(page: Page, server: ServerProcess, *, key: bool = True) -> None:
    """A fresh load of the page (with ``#key=`` in the URL, or relying on the stored key)."""
    page.goto("about:blank")
    page.goto(f"/#key={server.key}" if key else "/")
    page.wait_for_selector("html[data-ready=true]")


def pick(page: Page, model_id: str) -> None:
    page.get_by_label("Model", exact=True).select_option(model_id)
    props = list(catalog.get(model_id).input_schema["properties"])
    page.wait_for_function(
        "names => JSON.stringify([...document.querySelectorAll('#fields [data-field]')].map(e => e.dataset.field)) === JSON.stringify(names)",
        arg=props)


def results_images(page: Page):
    return page.get_by_role("region", name="Results").get_by_role("img", name=re.compile("^output"))


def field(page: Page, name: str):
    return page.locator(f'#fields [data-field="{name}"]')


def unsigned(urls: list[str]) -> list[str]:
    """Output URLs without their query (a presigned URL is signed anew on every read)."""
    return [u.split("?")[0] for u in urls]


def expect_status(page: Page, pattern: str, timeout_ms: int = 30_000) -> None:
    expect(page.locator("#status-text")).to_have_text(re.compile(pattern, re.I), timeout=timeout_ms)


# -- the form -------------------------------------------------------------------------------------
def test_each_models_form_renders_from_its_schema_with_the_example(page, web_server):
    open_playground(page, web_server)
    expect(page.get_by_role("note")).to_contain_text("Random weights")  # this engine reports random weights
    model = page.get_by_label("Model", exact=True)
    assert sorted(model.locator("option").evaluate_all("os => os.map(o => o.value)")) == sorted(catalog.models())
    with web_server.client() as api:
        for model_id in catalog.models():
            pick(page, model_id)
            schema = api.get(f"/v1/models/{model_id}/schema").json()["input_schema"]
            example = catalog.get(model_id).example_request
            for name, prop in schema["properties"].items():
                box = field(page, name)
                expected = example.get(name, prop.get("default"))
                if prop.get("description"):
                    expect(box.locator(".help")).to_contain_text(prop["description"])
                if prop["type"] == "array":  # image list: files (picked or dropped) and URLs, with thumbnails
                    expect(box.locator("legend")).to_contain_text(name)
                    expect(box.locator("input[type=file]")).to_have_attribute("accept", "image/png,image/jpeg")
                    expect(box.get_by_label(f"Image URL for {name}")).to_be_visible()
                    expect(box.locator(".thumb")).to_have_count(len(expected))
                    assert box.locator(".thumb-name").evaluate_all("es => es.map(e => e.title)") == expected
                    continue
                control = page.get_by_label(name, exact=True)
                if "enum" in prop:
                    assert control.evaluate("e => e.tagName") == "SELECT"
                    assert control.locator("option").evaluate_all("os => os.map(o => o.value)") == [str(v) for v in prop["enum"]]
                    expect(control).to_have_value(str(expected))
                elif prop["type"] == "boolean":
                    assert control.get_attribute("type") == "checkbox"
                    assert control.is_checked() is expected
                elif prop["type"] in ("integer", "number", "float"):
                    assert control.get_attribute("type") == "number"
                    for bound, attr in (("minimum", "min"), ("maximum", "max")):
                        if bound in prop:
                            assert float(control.get_attribute(attr)) == prop[bound]
                    expect(control).to_have_value("" if expected is None else str(expected))
                else:
                    expect(control).to_have_value(expected or "")
            page.shots(f"form-{model_id.split('/', 1)[1].replace('/', '-')}")
            if model_id == DREAMINA:  # the browser's checks mirror the schema, at once
                page.get_by_label("scale", exact=True).fill("1.5")
                expect(field(page, "scale").locator(".error")).to_have_text("Input should be less than or equal to 1")
                page.get_by_label("prompt", exact=True).fill("x" * 801)
                expect(field(page, "prompt").locator(".error")).to_have_text("String should have at most 800 characters")
                page.shots("form-browser-checks")

    # Every visible control has an accessible name, and the keyboard reaches all of them.
    controls = page.locator("input:visible, select:visible, textarea:visible, button:visible")
    for i in range(controls.count()):
        expect(controls.nth(i)).to_have_accessible_name(re.compile(r"\S"))
    open_playground(page, web_server)  # afresh: the keyboard starts at the top of the page
    reached: list[str] = []
    for _ in range(80):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
        if reached[-1] == "run":
            break
    wanted = ["api-key", "model", *page.locator("#fields [id]:is(input, select, textarea)").evaluate_all("es => es.map(e => e.id)"), "run"]
    assert [w for w in wanted if w not in reached] == []


# -- running ---------------------------------------------------------------------------------------
def test_the_seedream_example_runs_and_shows_its_images(page, web_server, tmp_path):
    open_playground(page, web_server)
    pick(page, SEQ)
    example = catalog.get(SEQ).example_request
    page.get_by_role("button", name="Run", exact=True).focus()
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/v1/models/{SEQ}")) as submitted:
        page.keyboard.press("Enter")
    assert submitted.value.status == 200
    assert submitted.value.request.post_data_json == example  # the documented example, exactly
    request_id = submitted.value.json()["request_id"]

    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuetext", re.compile(r"^Running — \d+%"), timeout=30_000)
    page.shots("seedream-running")
    images = results_images(page)
    expect(images).to_have_count(3, timeout=30_000)
    expect_status(page, "completed")
    with web_server.client() as api:
        result = api.get(f"/v1/requests/{request_id}/result", params={"include_cost": "true"}).json()
    assert unsigned(images.evaluate_all("es => es.map(e => e.src)")) == unsigned(result["output"]["images"])
    page.wait_for_function(IMAGES_LOADED)
    for i, figure in enumerate(page.locator("#gallery figure").all()):
        caption = figure.locator("figcaption")
        expect(caption).to_contain_text(f"seed {result['seed'] + i}")
        expect(caption).to_contain_text(f"{result['metadata']['width']}×{result['metadata']['height']}")
        expect(caption).to_contain_text(re.compile(r"\d+(\.\d)? s"))
        expect(caption).to_contain_text(f"cost ${result['cost']:.2f}")
        href = caption.get_by_role("link", name=f"Download output {i + 1}").get_attribute("href")
        assert unsigned([href]) == unsigned([result["output"]["images"][i]])
    expect(page.locator("#result-summary")).to_contain_text("3 images")
    page.shots("seedream-results")

    # A click opens the full-size image; Escape closes it.
    page.get_by_role("button", name="Open output 2 full size").click()
    viewer = page.get_by_role("dialog", name="Full-size image")
    expect(viewer).to_be_visible()
    full = viewer.get_by_role("img")
    assert unsigned([full.get_attribute("src")]) == unsigned([result["output"]["images"][1]])
    page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth === 2560")
    page.shots("seedream-full-size", full_page=False)
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()

    # Copy as curl / Python: the exact request, runnable once BASE and YOUR_API_TOKEN are set.
    env = {**os.environ, "BASE": web_server.base_url, "YOUR_API_TOKEN": web_server.key}
    env.pop("MODELAPI_API_KEY", None)
    page.get_by_role("button", name="Copy as curl").click()
    expect(page.locator("#copy-status")).to_contain_text("Copied")
    curl = page.evaluate("navigator.clipboard.readText()")
    assert curl == page.locator("#code").text_content()
    assert "$BASE/v1/models/bytedance/seedream-4-0/sequential" in curl and "Bearer $YOUR_API_TOKEN" in curl
    assert web_server.key not in curl and web_server.base_url not in curl
    out = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    copied_id = json.loads(out.stdout)["request_id"]
    page.get_by_role("button", name="Copy as Python").click()
    python = page.evaluate("navigator.clipboard.readText()")
    page.shots("copy-as-python")
    out = subprocess.run([sys.executable, "-c", python], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(eval(out.stdout)) == 3  # noqa: S307 — the printed list of output URLs
    with web_server.client() as api:
        assert wait_terminal(api, copied_id)["status"] == "completed"
        inputs = [api.get(f"/v1/requests/{rid}/result").json()["metadata"]["prompts"] for rid in (request_id, copied_id)]
    assert inputs[0] == inputs[1]

    # History reopens the form values and outputs.
    page.get_by_label("text", exact=True).fill("Generate 2 images of something else")
    pick(page, DREAMINA)
    entry = page.locator(f'#history-list [data-request-id="{request_id}"]')
    expect(entry).to_contain_text("completed")
    entry.click()
    expect(page.get_by_label("Model", exact=True)).to_have_value(SEQ)
    expect(page.get_by_label("text", exact=True)).to_have_value(example["text"])
    expect(page.locator("#request-id")).to_have_text(request_id)
    expect(results_images(page)).to_have_count(3)
    assert unsigned(results_images(page).evaluate_all("es => es.map(e => e.src)")) == unsigned(result["output"]["images"])
    page.shots("history-reopened")


def test_dreamina_runs_with_an_uploaded_photo(page, web_server, image_host):
    open_playground(page, web_server)
    pick(page, DREAMINA)
    images = field(page, "image_urls")
    while images.locator(".thumb").count():  # drop the example's URLs
        images.get_by_role("button", name=re.compile("^Remove image_urls")).first.click()
    with page.expect_response(lambda r: r.url.endswith("/v1/files")) as uploaded:
        images.locator("input[type=file]").set_input_files(SKIMAGE_DATA / "chelsea.png")
    assert uploaded.value.status == 201
    # A second photo dropped on the drop zone.
    data = base64.b64encode((SKIMAGE_DATA / "coffee.png").read_bytes()).decode()
    with page.expect_response(lambda r: r.url.endswith("/v1/files")):
        images.locator(".drop").evaluate("""(zone, data) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "coffee.png", { type: "image/png" }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""", data)
    # And a third pasted as a URL (fetched by the server; loopback allowed on this test server).
    url = f"{image_host[0]}/rocket.jpg"
    images.get_by_label("Image URL for image_urls").fill(url)
    images.get_by_label("Image URL for image_urls").press("Enter")
    expect(images.locator(".thumb[data-status=ready]")).to_have_count(3)
    expect(images.get_by_role("img", name="image_urls 1: chelsea.png")).to_be_visible()
    page.wait_for_function("() => [...document.querySelectorAll('.thumbs img')].every(i => i.complete && i.naturalWidth > 0)")
    assert images.locator(".thumb-status").all_text_contents() == ["451×300", "600×400", "640×427"]
    page.get_by_label("prompt", exact=True).fill("the cat as a lion")
    page.shots("dreamina-uploaded")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/v1/models/{DREAMINA}")) as submitted:
        page.get_by_role("button", name="Run", exact=True).click()
    assert submitted.value.status == 200, submitted.value.text()
    body = submitted.value.request.post_data_json
    assert body["prompt"] == "the cat as a lion"
    assert len(body["image_urls"]) == 3 and all("/v1/files/file_" in u for u in body["image_urls"][:2])
    assert body["image_urls"][2] == url
    expect_status(page, "completed")
    request_id = submitted.value.json()["request_id"]
    with web_server.client() as api:
        result = api.get(f"/v1/requests/{request_id}/result").json()
    assert result["status"] == "completed"
    expect(results_images(page)).to_have_count(len(result["output"]["images"]))
    page.wait_for_function(IMAGES_LOADED)
    page.shots("dreamina-results")

    # Reopened from history, the uploaded photos come back as thumbnails (read with the key).
    pick(page, SEQ)
    page.locator(f'#history-list [data-request-id="{request_id}"]').click()
    expect(page.get_by_label("Model", exact=True)).to_have_value(DREAMINA)
    expect(field(page, "image_urls").locator(".thumb")).to_have_count(3)
    page.wait_for_function("() => [...document.querySelectorAll('.thumbs img')].length === 3 && [...document.querySelectorAll('.thumbs img')].every(i => i.complete && i.naturalWidth > 0)")


def test_a_too_long_prompt_shows_the_servers_message_next_to_the_field(page, web_server):
    open_playground(page, web_server)
    pick(page, SEQ)
    prompt = page.get_by_label("text", exact=True)
    prompt.fill("a lighthouse at dusk " * 30)  # 630 characters; the schema allows 600
    error = field(page, "text").locator(".error")
    expect(error).to_have_text("String should have at most 600 characters")  # the browser's check, at once
    expect(error).to_have_attribute("data-source", "browser")
    with page.expect_response(lambda r: r.request.method == "POST" and "/v1/models/" in r.url) as answer:
        page.get_by_role("button", name="Run", exact=True).click()
    assert answer.value.status == 422
    detail = answer.value.json()["detail"]
    assert detail[0]["loc"] == ["body", "text"]
    expect(error).to_have_attribute("data-source", "server")
    expect(error).to_have_text(detail[0]["msg"])
    expect(prompt).to_have_attribute("aria-invalid", "true")
    assert error.get_attribute("id") in prompt.get_attribute("aria-describedby").split()
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_enabled()
    page.shots("too-long-prompt")


def test_cancel_while_queued_shows_cancelled(page, web_server):
    open_playground(page, web_server)
    pick(page, SEQ)
    with web_server.client() as api:
        blockers = [api.post(f"/v1/models/{SEQ}", json={"text": f"blocker {i}"}).json()["request_id"] for i in range(5)]
        try:
            with page.expect_response(lambda r: r.request.method == "POST" and "/v1/models/" in r.url) as submitted:
                page.get_by_role("button", name="Run", exact=True).click()
            request_id = submitted.value.json()["request_id"]
            expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuetext", re.compile(r"^In queue — (next|\d+ ahead)"))
            page.shots("queued")
            page.get_by_role("button", name="Cancel", exact=True).click()
            expect_status(page, "cancelled")
            expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_hidden()
            assert api.get(f"/v1/requests/{request_id}/status").json()["status"] == "cancelled"
            expect(page.locator(f'#history-list [data-request-id="{request_id}"]')).to_contain_text("cancelled")
            page.shots("cancelled")
        finally:
            for rid in blockers:
                api.post(f"/v1/requests/{rid}/cancel")
            for rid in blockers:
                wait_terminal(api, rid)


# -- the key ---------------------------------------------------------------------------------------
def test_the_key_from_the_fragment_is_used_and_kept(page, web_server):
    key = web_server.key
    assert f"Open the playground: {web_server.base_url}/#key={key}" in web_server.log()
    seen: list[tuple[str, str | None]] = []
    page.on("request", lambda r: seen.append((r.url, r.headers.get("authorization"))))
    open_playground(page, web_server)
    assert page.url == web_server.base_url + "/"  # the fragment is dropped from the address bar
    assert page.evaluate("localStorage.getItem('modelapi.playground.key')") == json.dumps(key)
    expect(page.get_by_label("API key", exact=True)).to_have_value(key)
    models = [auth for url, auth in seen if url.endswith("/v1/models")]
    assert models == [f"Bearer {key}"]
    page.shots("key-from-fragment")

    # Kept: a later visit without the fragment uses it.
    seen.clear()
    open_playground(page, web_server, key=False)
    expect(page.get_by_label("Model", exact=True).locator("option")).to_have_count(len(catalog.models()))
    assert [auth for url, auth in seen if "/v1/" in url] and all(auth == f"Bearer {key}" for url, auth in seen if "/v1/" in url)
    assert not any(key in url for url, _ in seen)  # never in a URL

    # Typed into the field: a wrong key is refused next to the field, the right one works.
    key_field = page.get_by_label("API key", exact=True)
    key_field.fill("mapi_not_a_key")
    key_field.press("Enter")
    expect(page.locator("#key-error")).to_contain_text("refused")
    expect(page.get_by_label("Model", exact=True)).to_be_disabled()
    page.shots("wrong-key")
    key_field.fill(key)
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_label("Model", exact=True)).to_be_enabled()
    expect(page.locator("#key-error")).to_be_empty()


def test_a_key_from_a_link_replaces_a_different_stored_key_only_when_confirmed(page, web_server):
    """A link could otherwise silently switch a victim to the attacker's account: with no stored
    key (or the same one) the link's key is taken silently; a different stored key is kept unless
    the user accepts the question; the fragment leaves the address bar either way."""
    key = web_server.key
    created = web_server.cli("keys", "create", "--name", "from-a-link")
    assert created.returncode == 0, created.stderr
    other = created.stdout.strip().split()[-1]
    asked: list[str] = []
    accept = {"now": False}

    def on_dialog(dialog) -> None:  # noqa: ANN001
        asked.append(f"{dialog.type}: {dialog.message}")
        dialog.accept() if accept["now"] else dialog.dismiss()

    page.on("dialog", on_dialog)
    auths: list[str | None] = []
    page.on("request", lambda r: auths.append(r.headers.get("authorization")) if r.url.endswith("/v1/models") else None)
    stored = "() => JSON.parse(localStorage.getItem('modelapi.playground.key'))"

    open_playground(page, web_server)  # nothing stored yet: taken silently
    assert asked == [] and page.evaluate(stored) == key
    open_playground(page, web_server)  # the same key again: nothing to ask
    assert asked == []

    # A link with another key: asked; declined, the stored key stays and is the one used.
    auths.clear()
    page.goto("about:blank")
    page.goto(f"/#key={other}")
    page.wait_for_selector("html[data-ready=true]")
    assert len(asked) == 1 and asked[0].startswith("confirm: ") and other[:12] in asked[0], asked
    assert page.url == web_server.base_url + "/"
    assert page.evaluate(stored) == key
    expect(page.get_by_label("API key", exact=True)).to_have_value(key)
    assert auths == [f"Bearer {key}"]
    page.shots("link-key-declined")

    # The same link followed in the open page (a hash change), accepted: the link's key is used.
    accept["now"] = True
    auths.clear()
    page.evaluate("k => { location.hash = 'key=' + k; }", other)
    expect(page.get_by_label("API key", exact=True)).to_have_value(other)
    assert len(asked) == 2 and asked[1].startswith("confirm: ")
    page.wait_for_function("() => location.hash === ''")
    assert page.evaluate(stored) == other
    expect(page.get_by_label("Model", exact=True).locator("option")).to_have_count(len(catalog.models()))
    assert auths and set(auths) == {f"Bearer {other}"}


# -- a server with a request list and a status stream ---------------------------------------------
def test_a_list_route_and_a_status_stream_are_used_when_the_server_has_them(page, web_server):
    """The shapes of the push issue (``GET /v1/requests``, ``GET .../status/stream`` as SSE),
    added here by intercepting the browser's requests; everything else is the real server."""
    with web_server.client() as api:
        elsewhere = api.post(f"/v1/models/{SEQ}", json={"text": "Generate 2 images of a harbour"}).json()["request_id"]
        done = wait_terminal(api, elsewhere)
    polled: list[str] = []
    page.on("request", lambda r: polled.append(r.url) if r.url.endswith("/status") else None)

    def openapi(route):
        spec = route.fetch().json()
        spec["paths"]["/v1/requests"] = {"get": {"summary": "List requests"}}
        spec["paths"]["/v1/requests/{request_id}/status/stream"] = {"get": {"summary": "Status stream"}}
        route.fulfill(json=spec)

    def listing(route):
        item = httpx.get(f"{web_server.base_url}/v1/requests/{elsewhere}/status", headers=web_server.headers()).json()
        route.fulfill(json={"requests": [{**item, "model_id": SEQ, "created_at": done["created_at"], "finished_at": done["finished_at"]}],
                            "next_cursor": None})

    def stream(route):
        request_id = route.request.url.split("/v1/requests/")[1].split("/")[0]
        with httpx.Client(base_url=web_server.base_url, headers=web_server.headers()) as api:
            wait_terminal(api, request_id)
            final = api.get(f"/v1/requests/{request_id}/status").json()
        events = [{**final, "status": "in_queue", "queue_position": 0}, {**final, "status": "in_progress", "progress": 0.5}, final]
        body = ": keep-alive\n\n" + "".join(f"id: {i}\nevent: status\ndata: {json.dumps(e)}\n\n" for i, e in enumerate(events))
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/openapi.json", openapi)
    page.route(re.compile(r".*/v1/requests\?.*"), listing)
    page.route("**/v1/requests/*/status/stream", stream)
    open_playground(page, web_server)
    assert page.evaluate("[document.documentElement.dataset.list, document.documentElement.dataset.stream]") == ["true", "true"]
    listed = page.locator(f'#history-list [data-request-id="{elsewhere}"]')
    expect(listed).to_contain_text("made elsewhere")
    pick(page, SEQ)
    with page.expect_response(lambda r: r.request.method == "POST" and "/v1/models/" in r.url) as submitted:
        page.get_by_role("button", name="Run", exact=True).click()
    request_id = submitted.value.json()["request_id"]
    expect(results_images(page)).to_have_count(3, timeout=30_000)
    assert not [u for u in polled if request_id in u]  # the stream, not polling
    page.wait_for_function(IMAGES_LOADED)
    page.shots("stream-and-list")
    listed.click()
    expect(page.locator("#request-id")).to_have_text(elsewhere)
    expect(results_images(page)).to_have_count(len(done["output"]["images"]))
    expect(page.locator("#form-error")).to_contain_text("made elsewhere")
