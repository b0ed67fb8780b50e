"""Settings: one object, from flags and ``MODELAPI_*`` environment variables.

Every field is documented in ``modelapi serve --help`` and the README. Units are in the names
(``_s`` seconds, ``_bytes`` bytes, ``_usd`` US dollars).
"""

from __future__ import annotations

import socket
from pathlib import Path

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..types import DEFAULT_VAE_TILING_PIXELS, OffloadMode, default_data_dir

DEFAULT_PRICES_USD: dict[str, float] = {
    "bytedance/seedream-4-0/sequential": 0.03,
    "bytedance/seedream-4-0/edit-sequential": 0.03,
    "bytedance/dreamina-4-0/edit": 0.03,
}
"""Price per billed unit (one image) by model id, in USD. Seedream bills
sequential_image_generation_options; dreamina bills the images produced."""


_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


def default_allowed_hosts(host: str, port: int) -> list[str]:
    """The Host values a server listening on ``host``:``port`` answers to by default: the
    loopback names on ``port``, and ``host``:``port`` itself when ``host`` is a concrete
    (non-wildcard) address or name. IPv6 addresses come in brackets (``[::1]:8000``)."""
    names = [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]
    if host.strip() not in _WILDCARD_HOSTS:
        bare = host.strip().strip("[]").lower()
        name = f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"
        if name not in names:
            names.append(name)
    return names


class Settings(BaseSettings):
    """Settings of every server role (``serve``, ``serve --no-worker``, ``worker``). Each field
    can be set as ``MODELAPI_<FIELD>`` or as a flag of those commands."""

    model_config = SettingsConfigDict(env_prefix="MODELAPI_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="Where the database, outputs, uploads and keys live.")
    database_url: str | None = Field(None, description="Database of requests, keys, files, usage, workers and the queue: sqlite:///PATH (default <data_dir>/modelapi.sqlite3, one machine) or postgresql://USER:PASS@HOST:PORT/DB (the fleet).")
    storage_url: str | None = Field(None, description="Where uploads, fetched references and outputs live: file:///PATH (default <data_dir>/files; served under signed URLs) or s3://BUCKET/PREFIX (any S3-compatible store; endpoint, region and credentials from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; outputs under presigned URLs).")
    worker: bool = Field(True, description="serve only: run a worker in the API process (--no-worker: API only; it enqueues, never runs jobs or loads the engine).")
    worker_id: str | None = Field(None, description="worker: this worker's stable, unique id (default <hostname>-<device>); a restart under the same id recovers its own job.")
    worker_timeout_s: float = Field(60.0, description="A worker silent for this long is dead: live workers take over its job, seconds.")
    metrics_port: int = Field(9100, description="worker: port of its /healthz and /metrics (on --host).")
    max_running_per_key: int | None = Field(None, description="Most requests of one key running at once across the fleet (default unlimited). A queue setting, applied by workers: the last worker started sets it for the fleet.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, description="Port to listen on.")
    public_url: str | None = Field(None, description="Base of the absolute URLs the server returns; default: from each request (its Host header, or X-Forwarded-Proto/-Host from a trusted proxy).")
    trusted_proxies: list[str] = Field(default_factory=list, description='Addresses of reverse proxies whose X-Forwarded-Proto and X-Forwarded-Host are believed, JSON list (e.g. ["127.0.0.1"]).')
    allowed_hosts: list[str] = Field(default_factory=lambda data: default_allowed_hosts(data["host"], data["port"]), description='Exact "host:port" values of the Host header (or of a trusted proxy\'s X-Forwarded-Host) that absolute URLs may be built from, JSON list; any other Host gets URLs under the configured base (--public-url, else http://127.0.0.1:PORT). Default: 127.0.0.1:PORT, localhost:PORT, [::1]:PORT and --host:PORT when --host is a concrete address. Unused with --public-url.')
    metrics_token: str | None = Field(None, description="A secret that /metrics and the full /healthz also accept as `Authorization: Bearer <token>` (besides a live API key), for a metrics scraper. Without either, /metrics answers 401 and /healthz only its status.")
    print_key: bool = Field(False, description="serve only: print the first API key (and the playground URL carrying it) when it is created, not only where its file is.")
    strict_inputs: bool = Field(False, description="Refuse body fields the model's schema does not know (422 naming each) instead of ignoring them and listing them in the submit answer as ignored_fields.")
    allow_private_urls: bool = Field(False, description="Let input URLs point at private/loopback addresses (tests only; unsafe).")
    allowed_input_hosts: list[str] = Field(default_factory=list, description='Exact "host:port" input hosts exempt from the address check (e.g. an internal asset server), JSON list.')
    url_ttl_s: int = Field(86_400, description="Lifetime of signed output URLs, seconds.")
    max_body_bytes: int = Field(64 * 1024 * 1024, description="Largest request body accepted (413 above), bytes.")
    max_queued_per_key: int = Field(100, description="Most requests one key may have in_queue at once (429 above).")
    max_fetching_per_key: int = Field(4, ge=1, description="Most submits of one key resolving, fetching, checking and storing their input images (or resolving a webhook) at once, per API process (429 above).")
    worker_concurrency: int = Field(1, description="Jobs run at once by each worker process (one model per GPU); one value for the whole fleet (the last worker started sets it).")
    engine: str = Field("flux2", description="'flux2', or 'module:factory' returning an engine (tests).")
    model: str | None = Field(None, description="Hub id or local folder of the weights; default: FLUX.2-klein-4B if present locally, else a tiny random-weight pipeline.")
    device: str = Field("auto", description="'auto' (cuda, then mps, then cpu), or a torch device.")
    output_format: Literal["jpeg", "png", "webp"] = Field("jpeg", description="Format of output images (quality 95 for jpeg and webp); prompt, seed and model are in each file's metadata.")
    compile: bool = Field(False, description="GPU: torch.compile the transformer at start (regional where diffusers supports it) and warm it up; slower start, faster images. Off on CPU.")
    offload: OffloadMode = Field("none", description="GPU with less memory than the pipeline: 'model' keeps one component on the GPU at a time (small slowdown), 'sequential' streams weights layer by layer (smallest memory, much slower).")
    attention_backend: str | None = Field(None, description="diffusers attention backend (e.g. 'flash', '_flash_3', 'sage', 'native'); default: the pipeline's own (PyTorch SDPA).")
    vae_tiling_pixels: int = Field(DEFAULT_VAE_TILING_PIXELS, description="Images larger than this (width*height) are decoded tile by tile, so VAE memory stays bounded.")
    shutdown_grace_s: float = Field(30.0, description="On SIGTERM, how long the running job may finish before it is handed back to the queue, seconds.")
    max_attempts: int = Field(2, description="Runs of one request before a request whose worker died (or was killed) is marked failed.")
    fetch_timeout_s: float = Field(30.0, description="Total time to fetch one input URL, seconds.")
    max_input_bytes: int = Field(50 * 1024 * 1024, description="Largest input image fetched or uploaded, bytes.")
    max_input_pixels: int = Field(40_000_000, description="Largest input image decoded (width*height); above it is a decompression bomb.")
    prices_usd: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_PRICES_USD), description="Price per billed unit by model id, USD (JSON).")
    sync_timeout_s: float = Field(300.0, description="OpenAI Images routes (/v1/images/...): how long a call waits for its request before answering 504 naming the request id (which keeps running), seconds.")
    max_streams_per_key: int = Field(20, description="Most status streams and result long-polls one key may hold open at once on one API process (429 above).")
    max_connections: int = Field(1000, description="Most HTTP connections one API process holds at once; a request above it is answered 503.")
    header_timeout_s: float = Field(10.0, description="A connection whose request headers are not complete this long after it opened (or after its last answer) is closed, seconds.")
    max_upload_bytes_per_key: int = Field(1024**3, description="Most bytes of uploads (POST /v1/files) one key may have stored (413 above).")
    stream_ping_s: float = Field(15.0, description="Status streams send a comment line this often so proxies keep them open, seconds.")
    webhook_retry_s: float = Field(86_400.0, description="How long a webhook delivery is retried (exponential backoff) before it is given up, seconds.")
    webhook_timeout_s: float = Field(10.0, description="Time one webhook delivery attempt may take, seconds.")
    routes: dict[str, list[str]] = Field(default_factory=dict, description='Backends per model id, tried in order, JSON (e.g. {"bytedance/seedream-4-0/sequential": ["modelark", "local"]}); a model not named runs on ["local"]. Backends: local, modelark, jimeng, runcomfy; credentials from MODELAPI_MODELARK_* / MODELAPI_JIMENG_* / MODELAPI_RUNCOMFY_* (docs/BACKENDS.md).')
    backends: str | None = Field(None, description="worker only: run upstream jobs only, on these backends, comma-separated (e.g. modelark,jimeng,runcomfy): no engine, no torch; it must name every upstream the routes name. Default: a GPU worker (local jobs only).")
    concurrency: int = Field(32, ge=1, description="Upstream jobs one process (an upstream worker, or serve's worker) holds at once, each waiting on its provider; one value for the fleet (the last worker started sets it).")
    overflow_wait_s: float | None = Field(None, description="serve: a request whose route starts with local goes to the route's next backend at once when its estimated wait for local is above this, seconds (default off).")
    deadline_check_s: float = Field(1.0, gt=0, description="How often every worker (and API-only process) cancels the queued requests past their Cancel-After deadline, seconds: such a request leaves the queue at most this long after its deadline.")
    queue_poll_interval_s: float = Field(0.05, description="How often the worker looks for queued jobs, seconds.")
    retention_s: int = Field(7 * 86_400, gt=0, description="How long a finished request's outputs and inputs (and the uploads it used) are kept, seconds; then they are deleted and its result answers 410 (its status stays). A submit may ask for less (?retention_s=N).")
    upload_retention_s: int = Field(86_400, gt=0, description="How long an upload that no request used is kept, seconds.")
    keep_requests_s: int = Field(90 * 86_400, gt=0, description="How long the row of a finished request is kept (status, listing), seconds; the usage ledger keeps its billing.")
    sweep_interval_s: float = Field(60.0, ge=0, description="How often each worker runs the sweeper (deletes what retention makes due, in batches), seconds; 0: never (run `modelapi sweep` instead).")
    sweep_batch: int = Field(100, ge=1, description="Requests (or uploads) the sweeper deletes per transaction.")
    log_level: str = Field("INFO", description="Log level.")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'modelapi.sqlite3'}"

    @property
    def files_url(self) -> str:
        return self.storage_url or (self.data_dir / "files").resolve().as_uri()

    def default_worker_id(self, device: str) -> str:
        """``<hostname>-<device>`` (e.g. ``gpu-host-3-cuda0``): stable across restarts of the same worker."""
        return self.worker_id or f"{socket.gethostname()}-{device.replace(':', '')}"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://127.0.0.1:{self.port}").rstrip("/")
