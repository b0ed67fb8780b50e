"""A bounded burst, in each configuration: 1,000 submits from 50 concurrent clients over real
HTTP on 127.0.0.1. Every answer is 2xx or 429 with Retry-After, never 5xx; status polls keep
answering during the burst; every accepted request ends terminal (the rest are cancelled at the
end), none lost or duplicated."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


from conftest import wait_terminal

SEQ = "bytedance/seedream-4-0/sequential"


def test_a_burst_of_1000_submits_from_50_clients(make_server):
    srv = make_server(args=["--max-queued-per-key", "200"]).start()
    clients = [srv.client() for _ in range(50)]
    accepted: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()
    burst_over = threading.Event()
    polls: list[int] = []

    def submit(i: int) -> None:
        resp = clients[i % 50].post(f"/v1/models/{SEQ}", json={"text": f"burst {i}"})
        with lock:
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                accepted.append(resp.json()["request_id"])
            else:
                assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0, resp.text

    def poll() -> None:  # a client polling its own request through the burst
        with srv.client() as c:
            rid = c.post(f"/v1/models/{SEQ}", json={"text": "watched"}).json()["request_id"]
            while not burst_over.is_set():
                polls.append(c.get(f"/v1/requests/{rid}/status").status_code)

    watcher = threading.Thread(target=poll)
    watcher.start()
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(submit, range(1000)))
    burst_over.set()
    watcher.join()
    assert len(statuses) == 1000 and not [s for s in statuses if s >= 500]
    assert accepted and len(accepted) == len(set(accepted)), "no request id twice"
    assert polls and set(polls) == {200}, "status polls answered during the burst"
    with srv.client() as c:
        for rid in accepted:
            c.post(f"/v1/requests/{rid}/cancel")
        finals = [wait_terminal(c, rid, timeout_s=120)["status"] for rid in accepted]
        assert set(finals) <= {"completed", "cancelled"} and "completed" in finals
        by_status = {s: 0 for s in ("completed", "cancelled")}
        for s in finals:
            by_status[s] += 1
        metrics = c.get("/metrics").text
    for status, n in by_status.items():  # the database holds exactly the accepted requests (+ the watched one)
        line = f'modelapi_requests{{model="{SEQ}",status="{status}"}}'
        count = float(next((ln.split()[-1] for ln in metrics.splitlines() if ln.startswith(line)), "0"))
        assert count in (n, n + 1), (status, count, n)
    for client in clients:
        client.close()
