"""Each route's success and error shapes, over real HTTP on 127.0.0.1 with a real SQLite file."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from conftest import SKIMAGE_DATA, assert_refused, tampered, wait_terminal
from modelapi import catalog
from modelapi.core.images import embedded_text

SEQ = "bytedance/seedream-4-0/sequential"
EDIT_SEQ = "bytedance/seedream-4-0/edit-sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def assert_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error_code", "error_message", "detail"}
    assert body["error_code"] == status * 1000 + 1
    assert isinstance(body["error_message"], str) and body["error_message"]
    assert "Traceback" not in resp.text
    return body


def test_documented_sequential_example_runs_to_completion(server):
    with server.client() as c:
        body = catalog.get(SEQ).example_request  # {"text": "Generate 3 images of ..."}
        resp = c.post(f"/v1/models/{SEQ}", json=body)
        assert resp.status_code == 200, resp.text
        sub = resp.json()
        assert set(sub) == {"request_id", "status_url", "result_url", "cancel_url"}
        rid = sub["request_id"]
        assert sub["status_url"] == f"{server.base_url}/v1/requests/{rid}/status"
        assert sub["result_url"] == f"{server.base_url}/v1/requests/{rid}/result"
        assert sub["cancel_url"] == f"{server.base_url}/v1/requests/{rid}/cancel"
        result = wait_terminal(c, rid)
        assert result["status"] == "completed", result
        assert len(result["output"]["images"]) == 3  # "Generate 3 images", cap 3 by default
        assert "image" not in result["output"]  # only when exactly one
        assert ISO.match(result["created_at"]) and ISO.match(result["finished_at"])
        assert isinstance(result["seed"], int)
        assert result["metadata"]["image_count"] == 3
        assert (result["metadata"]["width"], result["metadata"]["height"]) == (2560, 1440)
        # outputs are served under signed URLs
        img = httpx.get(result["output"]["images"][0])
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"  # --output-format default
        assert img.content[:3] == b"\xff\xd8\xff"
        assert embedded_text(img.content)["seed"] == str(result["seed"])
        assert set(result["metadata"]["timings"]) == {"queue_s", "fetch_s", "inference_s", "postprocess_s", "total_s"}
        # a tampered signature is refused
        assert_refused(tampered(result["output"]["images"][0]))
        # cost on demand: 3 billed units (sequential_image_generation_options default 3)
        costed = c.get(f"/v1/requests/{rid}/result", params={"include_cost": "true"}).json()
        assert costed["cost"] == pytest.approx(3 * 0.03)
        assert "cost" not in result and "inputs" not in result and "inputs" not in costed
        # the input on demand: the body as accepted, the schema's defaults filled in
        with_inputs = c.get(f"/v1/requests/{rid}/result", params={"include_inputs": "true"}).json()
        assert with_inputs["model_id"] == SEQ
        inputs = with_inputs["inputs"]
        defaults = {k: p["default"] for k, p in catalog.get(SEQ).input_schema["properties"].items() if "default" in p}
        assert inputs == {**defaults, **catalog.get(SEQ).example_request}


def test_documented_dreamina_example_shape_with_local_urls(server, image_host):
    base, _ = image_host
    example = dict(catalog.get(DREAMINA).example_request)
    example["image_urls"] = [f"{base}/astronaut.png", f"{base}/rocket.jpg"]
    with server.client() as c:
        rid = c.post(f"/v1/models/{DREAMINA}", json=example).json()["request_id"]
        result = wait_terminal(c, rid)
        assert result["status"] == "completed", result
        assert result["output"]["image"] == result["output"]["images"][0]  # exactly one image
        assert (result["metadata"]["width"], result["metadata"]["height"]) == (2048, 2048)
        assert c.get(f"/v1/requests/{rid}/result?include_cost=true").json()["cost"] == pytest.approx(0.03)


def test_documented_edit_sequential_example_has_empty_images_which_its_schema_refuses(server):
    # The documented curl body sends "images": [] while the schema says minItems 1.
    with server.client() as c:
        body = assert_error(c.post(f"/v1/models/{EDIT_SEQ}", json=catalog.get(EDIT_SEQ).example_request), 422)
        assert body["detail"] == [{"loc": ["body", "images"], "msg": "List should have at least 1 item", "type": "min_items"}]


def test_status_shows_queue_position_then_progress(make_server):
    srv = make_server(env={"MODELAPI_TEST_STEP_S": "0.1", "MODELAPI_TEST_STEPS": "10"}).start()
    with srv.client() as c:
        ids = [c.post(f"/v1/models/{SEQ}", json={"text": "one image"}).json()["request_id"] for _ in range(3)]
        seen_progress, seen_positions = set(), set()
        for _ in range(200):
            first = c.get(f"/v1/requests/{ids[0]}/status").json()
            last = c.get(f"/v1/requests/{ids[2]}/status").json()
            if first["status"] == "in_progress":
                # no partial_output: the only image is published by completing the request
                assert set(first) == {"request_id", "status", "progress", "status_url", "result_url"}
                seen_progress.add(first["progress"])
            if last["status"] == "in_queue":
                assert set(last) == {"request_id", "status", "queue_position", "status_url", "result_url"}
                seen_positions.add(last["queue_position"])
            if first["status"] == "completed":
                break
            time.sleep(0.05)
        assert any(0 < p < 1 for p in seen_progress), seen_progress
        # two ahead of it before the first starts, then one, then 0 = next
        assert seen_positions <= {0, 1, 2} and max(seen_positions) >= 1, seen_positions
        # result of an unfinished request is the status body, so a client can keep polling
        unfinished = c.get(f"/v1/requests/{ids[2]}/result").json()
        assert unfinished["status"] in ("in_queue", "in_progress") and "output" not in unfinished
        for rid in ids:
            assert wait_terminal(c, rid)["status"] == "completed"


def test_unknown_model_and_request_are_404(server):
    with server.client() as c:
        assert_error(c.post("/v1/models/acme/nope/v1", json={"text": "x"}), 404)
        assert_error(c.get("/v1/requests/req_doesnotexist/status"), 404)
        assert_error(c.get("/v1/requests/req_doesnotexist/result"), 404)
        assert_error(c.post("/v1/requests/req_doesnotexist/cancel"), 404)
        assert_error(c.get("/v1/models/acme/nope/v1/schema"), 404)


def test_missing_or_bad_key_is_401(server):
    url = f"{server.base_url}/v1/models/{SEQ}"
    assert_error(httpx.post(url, json={"text": "x"}), 401)
    assert_error(httpx.post(url, json={"text": "x"}, headers={"Authorization": "Bearer mapi_wrong"}), 401)
    assert_error(httpx.get(f"{server.base_url}/v1/models", headers={"Authorization": "Basic abc"}), 401)


def test_malformed_json_and_wrong_content_type_are_400(server):
    with server.client() as c:
        assert_error(c.post(f"/v1/models/{SEQ}", content=b"{not json", headers={"Content-Type": "application/json"}), 400)
        assert_error(c.post(f"/v1/models/{SEQ}", content=b"text=hi", headers={"Content-Type": "application/x-www-form-urlencoded"}), 400)
        body = assert_error(c.post(f"/v1/models/{SEQ}", json=["a", "list"]), 422)
        assert body["detail"][0]["loc"] == ["body"]


def test_body_over_the_cap_is_413(make_server):
    srv = make_server(args=["--max-body-bytes", "2000"]).start()
    with srv.client() as c:
        big = {"text": "x" * 5000}
        assert_error(c.post(f"/v1/models/{SEQ}", json=big), 413)

        def chunks():
            yield b'{"text": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'

        # no Content-Length: counted while streaming
        assert_error(c.post(f"/v1/models/{SEQ}", content=chunks(), headers={"Content-Type": "application/json"}), 413)
        assert c.post(f"/v1/models/{SEQ}", json={"text": "fine"}).status_code == 200


def test_per_key_queue_cap_is_429_with_retry_after(make_server):
    srv = make_server(args=["--max-queued-per-key", "2"], env={"MODELAPI_TEST_STEP_S": "0.5", "MODELAPI_TEST_STEPS": "4"}).start()
    with srv.client() as c:
        codes = [c.post(f"/v1/models/{SEQ}", json={"text": "a cat"}) for _ in range(5)]
        limited = [r for r in codes if r.status_code == 429]
        assert limited, [r.status_code for r in codes]
        assert_error(limited[0], 429)
        assert int(limited[0].headers["Retry-After"]) > 0
        assert all(r.status_code in (200, 429) for r in codes)


def test_idempotency_key_returns_the_same_request(server):
    with server.client() as c:
        h = {"Idempotency-Key": "order-42"}
        a = c.post(f"/v1/models/{SEQ}", json={"text": "a dog"}, headers=h).json()
        b = c.post(f"/v1/models/{SEQ}", json={"text": "a dog"}, headers=h).json()
        assert a["request_id"] == b["request_id"]
        body = assert_error(c.post(f"/v1/models/{SEQ}", json={"text": "a cat"}, headers=h), 422)
        assert body["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_catalogue_schema_healthz_metrics_docs(server):
    with server.client() as c:
        models = c.get("/v1/models").json()["models"]
        assert sorted(m["model_id"] for m in models) == sorted(catalog.models())
        for model_id, model in catalog.models().items():
            schema = c.get(f"/v1/models/{model_id}/schema").json()
            assert schema["input_schema"] == model.input_schema  # exactly as documented
            assert schema["output_schema"] == model.output_schema
        assert c.get("/healthz").json()["status"] == "ok"
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "metrics"}).json()["request_id"]
        wait_terminal(c, rid)
        assert httpx.get(server.base_url + "/metrics").status_code == 401  # a key (or --metrics-token) needed
        metrics = c.get("/metrics").text
        assert re.search(r'modelapi_requests\{model="bytedance/seedream-4-0/sequential",status="completed"\} [1-9]', metrics)
        assert "modelapi_queue_depth" in metrics
        assert re.search(r'modelapi_job_duration_seconds_count\{model="bytedance/seedream-4-0/sequential"\} [1-9]', metrics)
        for stage in ("queue", "fetch", "inference", "postprocess", "total"):
            assert re.search(rf'modelapi_stage_seconds_count\{{stage="{stage}"\}} [1-9]', metrics), stage
        spec = httpx.get(server.base_url + "/openapi.json").json()
        assert spec["openapi"].startswith("3.1")
        for model_id, model in catalog.models().items():
            op = spec["paths"][f"/v1/models/{model_id}"]["post"]
            body_schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert body_schema["properties"].keys() == model.input_schema["properties"].keys()
            assert body_schema["additionalProperties"] is False
        for path in ("/v1/requests/{request_id}/status", "/v1/requests/{request_id}/result",
                     "/v1/requests/{request_id}/cancel", "/v1/models", "/v1/files", "/healthz", "/metrics"):
            assert path in spec["paths"], path
        assert httpx.get(server.base_url + "/docs").status_code == 200


def test_upload_then_use_as_input(server):
    data = (SKIMAGE_DATA / "chelsea.png").read_bytes()
    with server.client() as c:
        up = c.post("/v1/files", files={"file": ("cat.png", data, "image/png")})
        assert up.status_code == 201, up.text
        url = up.json()["url"]
        assert url.startswith(server.base_url + "/v1/files/file_")
        rid = c.post(f"/v1/models/{DREAMINA}", json={"image_urls": [url], "prompt": "the cat as a lion", "width×height": "1024x1024(1:1)"}).json()["request_id"]
        assert wait_terminal(c, rid)["status"] == "completed"
        gif = c.post("/v1/files", files={"file": ("x.png", b"GIF89a" + b"\0" * 100, "image/png")})
        assert assert_error(gif, 422)["detail"][0]["msg"] == "Only JPEG and PNG images are supported"


def test_inputs_a_fuzzer_found_answer_4xx_not_500(server):
    """Found by schemathesis over /openapi.json: a seed beyond 64 bits, non-ASCII in a file URL."""
    with server.client() as c:
        for seed in (2**64, -(2**63) - 1, 2**63 - 1):
            body = assert_error(c.post(f"/v1/models/{SEQ}", json={"text": "a fox", "seed": seed}), 422)
            assert body["detail"][0]["loc"] == ["body", "seed"] and "64-bit" in body["detail"][0]["msg"]
        assert c.post(f"/v1/models/{SEQ}", json={"text": "a fox", "seed": 2**63 - 15}).status_code == 200
    for path in ("/files/outputs/ñ.png?expires=99999999999&sig=abc", "/files/outputs/a.png?expires=99999999999&sig=%C3%A9%E2%82%AC"):
        assert_error(httpx.get(server.base_url + path), 404)


def test_unknown_body_fields_are_ignored_and_listed(server):
    """Code written for the hosted service may send fields our schema copy does not know."""
    with server.client() as c:
        sub = c.post(f"/v1/models/{SEQ}", json={"text": "Generate 2 images of a fox", "colour": "red", "style": 1})
        assert sub.status_code == 200, sub.text
        assert sub.json()["ignored_fields"] == ["colour", "style"]
        assert "ignored_fields" not in c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()
        result = wait_terminal(c, sub.json()["request_id"])
        assert result["status"] == "completed" and len(result["output"]["images"]) == 2
    assert '"fields": ["colour", "style"]' in server.log()


def test_strict_inputs_refuses_unknown_fields(make_server):
    srv = make_server(args=["--strict-inputs"]).start()
    with srv.client() as c:
        body = assert_error(c.post(f"/v1/models/{SEQ}", json={"text": "a fox", "colour": "red"}), 422)
    assert body["detail"] == [{"loc": ["body", "colour"], "msg": "Unknown field: not in the model's input schema", "type": "extra_forbidden"}]


def test_absolute_urls_follow_the_host_the_client_used(make_server):
    """No --public-url: a server reached under another name in --allowed-hosts answers with URLs
    under that name (a name not in it: tests/server/test_tenants_small.py)."""
    server = make_server()
    server.args += ["--allowed-hosts", json.dumps([f"127.0.0.1:{server.port}", "gpu-box.lan:8000"])]
    server.start()
    with server.client() as c:
        sub = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}, headers={"Host": "gpu-box.lan:8000"}).json()
        assert sub["status_url"] == f"http://gpu-box.lan:8000/v1/requests/{sub['request_id']}/status"
        forged = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"},
                        headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}).json()
        assert forged["status_url"].startswith(server.base_url + "/"), "X-Forwarded-* only from trusted proxies"
        result = wait_terminal(c, sub["request_id"])
        via_name = c.get(f"/v1/requests/{sub['request_id']}/result", headers={"Host": "gpu-box.lan:8000"}).json()
        if server.config == "sqlite":  # outputs served by the API itself
            assert result["output"]["images"][0].startswith(server.base_url + "/files/")
            assert via_name["output"]["images"][0].startswith("http://gpu-box.lan:8000/files/")


def test_a_trusted_proxy_sets_scheme_and_host(make_server):
    srv = make_server(args=["--trusted-proxies", '["127.0.0.1"]', "--allowed-hosts", '["api.example.test"]']).start()
    with srv.client() as c:
        sub = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"},
                     headers={"X-Forwarded-Host": "api.example.test", "X-Forwarded-Proto": "https"}).json()
    assert sub["result_url"] == f"https://api.example.test/v1/requests/{sub['request_id']}/result"
