"""The sweeper (core/sweep.py) on the real database, queue tables and store of each
configuration — SQLite + a folder, Postgres + SeaweedFS S3 — with no server process: several
sweepers at once delete each object once and never a live request's inputs; per-request
retention; unused uploads; request rows pruned after --keep-requests-s with the ledger kept."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from modelapi.core import db
from modelapi.core.config import Settings
from modelapi.core.files import FileStore
from modelapi.core.jobs import Done, Failed, JobStore
from modelapi.core.queue import TaskQueue
from modelapi.core.storage import open_storage
from modelapi.core.sweep import Sweeper, counts
from modelapi.core.workers import WorkerRegistry, runner_id

SEQ = "bytedance/seedream-4-0/sequential"
OWNER = "key_a"


class Deployment:
    """One database + store; ``sweeper()`` opens its own engine and queue client each time, as
    another process would."""

    def __init__(self, database_url: str, storage_url: str, data_dir, monkeypatch) -> None:  # noqa: ANN001
        self.database_url, self.storage_url, self.data_dir = database_url, storage_url, data_dir
        self.closing: list = []
        self.jobs = self._jobs()
        self.storage = open_storage(storage_url, data_dir)
        self.storage.check()
        self.deleted: Counter[str] = Counter()
        """Every storage delete made by any sweeper of this deployment, by key."""
        self._lock = threading.Lock()

    def _jobs(self) -> JobStore:
        engine = db.connect(self.database_url)
        db.migrate(engine, self.database_url)
        queue = TaskQueue(self.database_url)
        queue.ensure(0.05)
        self.closing += [queue.destroy, engine.dispose]
        return JobStore(engine, queue, WorkerRegistry(engine, timeout_s=60))

    def sweeper(self, **settings) -> Sweeper:  # noqa: ANN003
        storage = open_storage(self.storage_url, self.data_dir)
        real = storage.delete

        def counted(key: str) -> None:
            with self._lock:
                self.deleted[key] += 1
            real(key)

        storage.delete = counted  # type: ignore[method-assign]
        return Sweeper(Settings(data_dir=self.data_dir, **settings), self._jobs(), storage)

    def request(self, n: int, *, finish: str | None = "done", upload: str | None = None, retention_s: int | None = None) -> str:
        """A request with one stored input (and ``upload`` named in its inputs), run to
        ``finish`` ("done": two outputs over two attempts' folders; "failed"; "cancelled"; None:
        left in_queue; "running": left in_progress). Returns its id."""
        rid = f"req_{n:024x}"
        inputs = {"text": "a fox"} | ({"image_urls": [f"http://127.0.0.1:9/v1/files/{upload}"]} if upload else {})
        self.storage.put(f"inputs/{rid}/0.png", b"in", "image/png")
        req = self.jobs.create(request_id=rid, owner_key_id=OWNER, model_id=SEQ, inputs=inputs,
                               input_files=[f"inputs/{rid}/0.png"], seed=1, idempotency_key=None, body_hash=None,
                               retention_s=retention_s)
        if finish is None:
            return rid
        if finish == "cancelled":
            assert self.jobs.cancel(req)
            return rid
        self.jobs.workers.register("w0", "i1", {"engine": "test"})
        run = self.jobs.begin(self.jobs.get(rid), runner_id("w0", "i1"), req.workflow_id)
        assert run is not None
        self.storage.put(f"outputs/{rid}/1/0.png", b"partial of an earlier attempt", "image/png")
        if finish == "running":
            return rid
        outputs = [f"outputs/{rid}/2/0.png", f"outputs/{rid}/2/1.png"]
        for key in outputs:
            self.storage.put(key, b"out", "image/png")
        assert self.jobs.finish(run, Done(outputs, {"image_count": 2}) if finish == "done" else Failed("boom", "boom"))
        self.jobs.queue.client.cancel_workflow(req.workflow_id)  # its entry ended (no DBOS runtime here)
        return rid

    def upload(self, name: str, *, age_s: float = 0) -> str:
        file_id = f"file_{name.encode().hex():0>24}"
        key = f"uploads/{file_id}.png"
        self.storage.put(key, b"upload", "image/png")
        with self.jobs.db.begin() as conn:
            conn.execute(db.files.insert().values(id=file_id, owner_key_id=OWNER, storage_key=key, bytes=6,
                                                  content_type="image/png", created_at=db.utcnow() - timedelta(seconds=age_s)))
        return file_id

    def objects(self, rid: str) -> set[str]:
        return set(self.storage.keys(f"inputs/{rid}/")) | set(self.storage.keys(f"outputs/{rid}/"))

    def workflows(self) -> set[str]:
        table = "workflow_status" if self.jobs.db.dialect.name == "sqlite" else "dbos.workflow_status"
        with self.jobs.db.connect() as conn:
            return set(conn.execute(sa.text(f"SELECT workflow_uuid FROM {table}")).scalars())

    def close(self) -> None:
        for close in reversed(self.closing):
            close()


@pytest.fixture(params=["sqlite", "fleet"])
def deployment(request, tmp_path, fleet_services, monkeypatch):
    if request.param == "sqlite":
        database_url, storage_url = f"sqlite:///{tmp_path / 'd.sqlite3'}", (tmp_path / "files").as_uri()
    else:
        env = fleet_services.config_env()
        for name, value in env.items():
            if name.startswith("AWS_"):
                monkeypatch.setenv(name, value)
        database_url, storage_url = env["MODELAPI_DATABASE_URL"], env["MODELAPI_STORAGE_URL"]
    d = Deployment(database_url, storage_url, tmp_path, monkeypatch)
    yield d
    d.close()


def test_two_sweepers_at_once_delete_each_object_once_and_never_a_live_requests_inputs(deployment):
    d = deployment
    used = d.upload("used")
    finished = [d.request(i, finish=("done", "failed", "cancelled")[i % 3]) for i in range(24)]
    queued = d.request(100, finish=None, upload=used)
    running = d.request(101, finish="running")
    stale = d.upload("stale", age_s=7200)
    expected = set().union(*(d.objects(r) for r in finished)) | {f"uploads/{stale}.png"}
    live = d.objects(queued) | d.objects(running) | {f"uploads/{used}.png"}
    assert len(expected) > 24 * 1 and live
    later = db.utcnow() + timedelta(seconds=3600)  # past the retention of everything finished
    a, b = (d.sweeper(retention_s=60, upload_retention_s=3600, sweep_batch=4) for _ in range(2))
    start = threading.Barrier(2)
    results = []

    def sweep(s: Sweeper) -> None:
        start.wait()
        results.append(s.sweep_once(now=later))

    threads = [threading.Thread(target=sweep, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 2
    assert set(d.deleted) == expected, "every due object deleted, and nothing else"
    assert max(d.deleted.values()) == 1, "each object deleted by one sweeper only"
    assert sum(r.requests_expired for r in results) == len(finished)
    assert all(d.storage.get(k) for k in live), "a live request's inputs and upload are kept"
    assert not set().union(*(d.objects(r) for r in finished))
    assert d.workflows() == {f"{queued}.0", f"{running}.0"}, "finished requests' queue entries deleted (DBOS API)"
    for rid in finished:
        req = d.jobs.get(rid)
        assert req is not None and req.deleted_at is not None and req.status.is_terminal
    total = counts(d.jobs.db)
    assert total["objects"] == len(expected) and total["requests_expired"] == len(finished)
    assert total["files"] == 1 and total["queue"] == len(finished)
    assert d.sweeper(retention_s=60).sweep_once(now=later).as_dict() == {
        "requests_expired": 0, "objects": 0, "requests": 0, "files": 0, "queue": 0}, "nothing twice"


def test_a_request_asking_for_less_retention_is_swept_first_and_its_upload_with_it(deployment):
    d = deployment
    up = d.upload("short")
    short = d.request(1, retention_s=5, upload=up)
    default = d.request(2)
    sweeper = d.sweeper(retention_s=3600)
    assert sweeper.sweep_once().requests_expired == 0
    done = sweeper.sweep_once(now=db.utcnow() + timedelta(seconds=60))
    assert done.requests_expired == 1 and done.files == 1
    assert d.jobs.get(short).deleted_at is not None and d.jobs.get(default).deleted_at is None
    assert f"uploads/{up}.png" in d.deleted and not d.objects(short) and d.objects(default)
    with d.jobs.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.files)).scalar() == 0


def test_unused_uploads_go_after_upload_retention_and_rows_after_keep_requests(deployment):
    d = deployment
    fresh, old = d.upload("fresh"), d.upload("old", age_s=100)
    rid = d.request(1)
    sweeper = d.sweeper(retention_s=10, upload_retention_s=50, keep_requests_s=1000)
    done = sweeper.sweep_once()
    assert (done.files, done.requests_expired) == (1, 0)
    assert FileStore(d.jobs.db).get(old, OWNER) is None and FileStore(d.jobs.db).get(fresh, OWNER) is not None
    assert sweeper.sweep_once(now=db.utcnow() + timedelta(seconds=100)).requests == 0, "kept until --keep-requests-s"
    done = sweeper.sweep_once(now=db.utcnow() + timedelta(seconds=2000))
    assert done.requests == 1 and d.jobs.get(rid) is None
    with d.jobs.db.connect() as conn:
        assert conn.execute(sa.select(db.usage.c.request_id)).scalars().all() == [rid], "the ledger keeps its billing"


def test_a_pruned_request_takes_its_webhook_and_intermediate_event_entries_with_it(deployment):
    """The queue rows of a request's terminal webhook and of each intermediate event
    (``<rid>.webhook.<n>``, ``<rid>.webhook.e<k>.<n>``) go when its row is pruned."""
    d = deployment
    rid = d.request(1)
    record = {"url": "https://example.com/h", "base_url": "http://b", "attempts": 1, "intermediate_status": True,
              "events": [{"attempts": 2}, {"attempts": 1}]}
    with d.jobs.db.begin() as conn:
        conn.execute(db.requests.update().where(db.requests.c.request_id == rid).values(webhook=record))
    queue = d.jobs.queue
    for entry in [(1, 0), (1, 1), (2, 1), (1, 2)]:  # (attempt, event)
        queue.enqueue_webhook(None, request_id=rid, attempt=entry[0], owner_key_id=OWNER, event=entry[1])
        workflow_id = f"{rid}.webhook.{f'e{entry[1]}.' if entry[1] else ''}{entry[0]}"
        queue.client.cancel_workflow(workflow_id)  # ended (no DBOS runtime here)
    assert {w for w in d.workflows() if w.startswith(f"{rid}.webhook.")} == {
        f"{rid}.webhook.1", f"{rid}.webhook.e1.1", f"{rid}.webhook.e1.2", f"{rid}.webhook.e2.1"}
    sweeper = d.sweeper(retention_s=10, keep_requests_s=1000)
    assert sweeper.sweep_once(now=db.utcnow() + timedelta(seconds=2000)).requests == 1
    assert not {w for w in d.workflows() if w.startswith(f"{rid}.")}, "every entry of the request went with its row"
