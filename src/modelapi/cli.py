"""The ``modelapi`` command: server side (serve, worker, workers, keys, usage, model, demo;
these need ``pip install "modelapi[server]"``, and ``[engine]`` to run a worker) and client side
(run, submit, watch, status, result, cancel, ls, models; the plain ``pip install modelapi``).

Client commands take ``--base-url`` / ``--api-key`` (else ``MODELAPI_BASE_URL`` /
``MODELAPI_API_KEY``, else the local server's initial key) and print JSON, except ``run``
(a progress display, then the saved file paths), ``watch`` (a progress display, then the output
URLs) and ``ls`` (a table). Progress comes from the server's status stream when it has one,
else from polling.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import catalog
from .errors import APIStatusError, ModelAPIError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from .client import Client, StatusUpdate
    from .core.config import Settings

app = typer.Typer(help="Self-hosted Model API: server, keys, and a client for it.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Manage API keys (stored hashed; a key is printed once).", no_args_is_help=True)
model_app = typer.Typer(help="Model weights.", no_args_is_help=True)
models_app = typer.Typer(help="The catalogue of a server.", invoke_without_command=True)
app.add_typer(keys_app, name="keys")
app.add_typer(model_app, name="model")
app.add_typer(models_app, name="models")
console = Console(stderr=True)
out = Console()

BaseUrl = typer.Option(None, "--base-url", envvar="MODELAPI_BASE_URL", help="Server root; default the local server or the hosted service.")
ApiKeyOpt = typer.Option(None, "--api-key", envvar="MODELAPI_API_KEY", help="API key (Bearer).")


def _client(base_url: str | None, api_key: str | None) -> Client:
    from .client import Client

    return Client(base_url or f"http://127.0.0.1:{os.environ.get('MODELAPI_PORT', '8000')}", api_key)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# -- server side ------------------------------------------------------------------------------
_JSON_FIELDS = ("prices_usd", "allowed_input_hosts", "trusted_proxies", "allowed_hosts", "routes")
_WORKER_ONLY = ("worker_id", "metrics_port", "backends")
_SERVE_ONLY: tuple[str, ...]
_SERVE_ONLY = ("worker", "port", "public_url", "trusted_proxies", "strict_inputs", "max_body_bytes", "max_queued_per_key", "allow_private_urls",
               "allowed_input_hosts", "fetch_timeout_s", "max_input_bytes", "max_input_pixels",
               "allowed_hosts", "print_key", "max_fetching_per_key")
_SERVE_ONLY += ("max_streams_per_key", "max_connections", "header_timeout_s", "max_upload_bytes_per_key", "sync_timeout_s")
_SERVE_ONLY += ("overflow_wait_s",)


def _settings(**given: Any) -> Settings:
    """Settings from the given flags (None: not given) over MODELAPI_* variables; a clear error
    when the server extra is not installed."""
    try:
        from .core.config import Settings
    except ImportError as exc:
        console.print("[bold red]error:[/] " + escape(f'the server needs its extras: pip install "modelapi[server,engine]" ({exc.name} is missing)'))
        raise typer.Exit(2) from None
    values = {k: (json.loads(v) if k in _JSON_FIELDS else v) for k, v in given.items() if v is not None}
    return Settings(**values)


def _run_role(role: str, given: dict[str, Any]) -> None:
    settings = _settings(**given)
    from sqlalchemy.exc import OperationalError

    from .core import logs
    from .core.workers import WorkerIdInUse
    from .engine.errors import EngineError

    logs.setup(settings.log_level)
    try:
        if role == "serve":
            from .api.run import serve

            serve(settings)
        else:
            from .worker.main import run_worker

            run_worker(settings)
    except (EngineError, WorkerIdInUse, ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except OperationalError as exc:
        console.print(f"[bold red]error:[/] cannot reach the database: {str(exc.orig or exc).splitlines()[0]}")
        raise typer.Exit(2) from None


def _serve(**given: Any) -> None:
    """Run the API server — with a worker in the same process (the one-machine default), or API
    only with --no-worker — until SIGINT/SIGTERM. Every flag can also be set by its MODELAPI_*
    environment variable."""
    _run_role("serve", given)


def _worker(**given: Any) -> None:
    """Run a worker only (one per GPU): load the engine, take jobs from the shared queue, serve
    /healthz and /metrics on --metrics-port. Every flag can also be set by its MODELAPI_*
    environment variable."""
    _run_role("worker", given)


def _role_signature(skip: tuple[str, ...]) -> inspect.Signature:
    """One flag per settings field (less ``skip``), documented from the field."""
    from .core.config import Settings

    params = []
    for name, field in Settings.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        help_text = escape(f"{field.description} [env MODELAPI_{name.upper()}]")
        if field.annotation is bool:
            option = typer.Option(None, f"{flag}/--no-{flag[2:]}", help=help_text, show_default=False)
            annotation: Any = Optional[bool]
        else:
            option = typer.Option(None, flag, help=help_text, show_default=False, metavar="JSON" if name in _JSON_FIELDS else None)
            annotation = Optional[str]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return inspect.Signature(params)


try:
    _serve.__signature__ = _role_signature(_WORKER_ONLY)  # type: ignore[attr-defined]
    _worker.__signature__ = _role_signature(_SERVE_ONLY)  # type: ignore[attr-defined]
except ImportError:  # the client-only install: serve and worker explain what to install
    _serve.__signature__ = _worker.__signature__ = inspect.Signature([])  # type: ignore[attr-defined]
app.command("serve")(_serve)
app.command("worker")(_worker)

DatabaseUrl = typer.Option(None, "--database-url", envvar="MODELAPI_DATABASE_URL",
                           help="The deployment's database (default: the SQLite file in the data dir).")


def _db(database_url: str | None = None):  # noqa: ANN202
    from .core import db
    from .core.context import prepare_data_dir

    settings = _settings(database_url=database_url)
    prepare_data_dir(settings)
    engine = db.connect(settings.db_url)
    db.migrate(engine, settings.db_url)
    return engine


@keys_app.command("create")
def keys_create(name: str = typer.Option("default", help="A label for the key."), database_url: Optional[str] = DatabaseUrl) -> None:
    """Create a key and print it (once: only its hash is stored)."""
    from .core.auth import create_key

    record, secret = create_key(_db(database_url), name)
    console.print(f"created {record.id} ({record.name}); the key is shown only now:")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(database_url: Optional[str] = DatabaseUrl) -> None:
    """List keys (id, name, prefix, created, revoked)."""
    from .core.auth import list_keys

    table = Table("id", "name", "prefix", "created", "revoked")
    for k in list_keys(_db(database_url)):
        table.add_row(k.id, k.name, k.prefix + "…", f"{k.created_at:%Y-%m-%d %H:%M}", f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (key_...) or its prefix."), database_url: Optional[str] = DatabaseUrl) -> None:
    """Revoke a key: its requests answer 401 from now on."""
    from .core.auth import revoke_key

    if not revoke_key(_db(database_url), key_id):
        console.print(f"[red]no live key {key_id!r}[/]")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


@app.command()
def usage(database_url: Optional[str] = DatabaseUrl) -> None:
    """Totals per key: requests, completed, billed units and cost (USD)."""
    from .core.usage import totals

    table = Table("key", "name", "requests", "completed", "billed units", "cost (USD)")
    for row in totals(_db(database_url)):
        table.add_row(row["id"], row["name"], str(row["requests"]), str(row["completed"]), str(row["billed_units"]), f"{row['cost_usd']:.4f}")
    out.print(table)


@app.command()
def workers(
    database_url: Optional[str] = DatabaseUrl,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List live workers: id, engine, device, current request, seconds since the last heartbeat."""
    from .core.workers import WorkerRegistry

    rows = WorkerRegistry(_db(database_url), _settings(database_url=database_url).worker_timeout_s).live()
    if as_json:
        _print_json(rows)
        return
    table = Table("worker", "host", "engine", "device", "current request", "heartbeat (s ago)", "state")
    for w in rows:
        engine = w["engine"] or {}
        table.add_row(w["worker_id"], w["host"], str(engine.get("engine")), str(engine.get("device")),
                      w["current_request"] or "", f"{w['heartbeat_age_s']:.1f}", "draining" if w["draining"] else "ok")
    out.print(table)


@model_app.command("make-tiny")
def model_make_tiny(path: Path = typer.Argument(..., help="Folder to write the pipeline to.")) -> None:
    """Build a tiny RANDOM-WEIGHT FLUX.2 [klein] pipeline (noise images; for tests and offline demos)."""
    from .engine.tiny import make_tiny

    with console.status("building tiny random-weight pipeline"):
        make_tiny(path)
    console.print(f"wrote {path} (random weights: its images are noise). Serve it with: modelapi serve --model {path}")


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("modelapi-demo"), "--out", "-o", help="Where outputs and index.html go."),
    port: int = typer.Option(0, help="Port for the in-process server (0 = a free one)."),
) -> None:
    """Start the server in-process, run the three documented example requests (real photos as
    inputs), download every output and write index.html."""
    from .demo import run_demo

    run_demo(out_dir, port=port, console=console)


# -- client side ------------------------------------------------------------------------------
def _fail(exc: ModelAPIError) -> NoReturn:
    if isinstance(exc, APIStatusError) and exc.detail:
        console.print(f"[bold red]error:[/] {exc}")
        for d in exc.detail if isinstance(exc.detail, list) else [exc.detail]:
            console.print(f"  {d.get('loc') if isinstance(d, dict) else ''}: {d.get('msg') if isinstance(d, dict) else d}")
    else:
        console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(1)


def _parse_value(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def build_input(schema: dict[str, Any], text: str | None, images: list[str], sets: list[str]) -> dict[str, Any]:
    """The request body from ``--text``, ``-i`` and ``--set key=value`` (values parsed as JSON
    when they parse, else kept as strings)."""
    from .validation import image_fields

    body: dict[str, Any] = {}
    props = schema.get("properties", {})
    if text is not None:
        body["text" if "text" in props else "prompt"] = text
    if images:
        fields = list(image_fields(schema)) or ["images"]
        body[fields[0]] = list(images)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set takes key=value, got {item!r}")
        body[key] = _parse_value(value)
    return body


def _checked_body(client: Any, model_id: str, text: str | None, images: list[str], sets: list[str]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(input schema, request body, problems) — checked client-side with the server's own
    validation module before anything is sent."""
    from .validation import check_input

    local = catalog.get(model_id)
    schema = local.input_schema if local else client.model_schema(model_id)["input_schema"]
    body = build_input(schema, text, images, sets)
    inputs, problems = check_input(schema, body)
    return schema, body, problems or catalog.engine_limits(inputs)


def _progress() -> Progress:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(), console=console)


def _show(bar: Progress, task: TaskID, update: StatusUpdate) -> None:
    """One status on the progress bar: queue position while queued, progress while running."""
    from .client import Completed, InProgress, Queued

    if isinstance(update, Queued):
        where = "" if update.position is None else f" (position {update.position})"
        bar.update(task, description=f"in queue{where}")
    elif isinstance(update, InProgress):
        bar.update(task, description="generating", completed=update.progress or 0.0)
    elif isinstance(update, Completed):
        bar.update(task, description="completed", completed=1.0)
    else:
        bar.update(task, description=update.status_value or "unknown status")


@app.command()
def run(
    model_id: str = typer.Argument(..., help="e.g. bytedance/seedream-4-0/sequential"),
    text: Optional[str] = typer.Option(None, "--text", "--prompt", "-t", help="The prompt."),
    image: list[str] = typer.Option([], "--image", "-i", help="A reference image: local file or URL (repeat)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Another input field, key=value (repeat)."),
    out_dir: Path = typer.Option(Path("."), "--out", "-o", help="Where to save the images."),
    timeout_s: float = typer.Option(1800, "--timeout", help="Give up waiting after this many seconds."),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="Also POST the result to this URL when it ends (our server)."),
    base_url: Optional[str] = BaseUrl,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Submit a request, show its queue position and progress (from the status stream, else by
    polling), download the images and print their paths."""
    try:
        with _client(base_url, api_key) as client:
            schema, body, problems = _checked_body(client, model_id, text, image, set_)
            if problems:
                for p in problems:
                    console.print(f"[red]invalid input[/] {'.'.join(str(x) for x in p['loc'][1:])}: {p['msg']}")
                raise typer.Exit(2)
            body = client.resolve_files(body, schema=schema)
            with _progress() as bar:
                task = bar.add_task("submitting", total=1.0)
                result = client.run(model_id, body, timeout_s=timeout_s, webhook=webhook,
                                    on_update=lambda update: _show(bar, task, update))
            paths = client.download(result, out_dir)
            if result.metadata.get("random_weights"):
                console.print("[yellow]note: the server runs RANDOM weights; these images are noise[/]")
            for path in paths:
                typer.echo(str(path))
    except ModelAPIError as exc:
        _fail(exc)


@app.command()
def watch(
    request_id: str = typer.Argument(..., help="The request to follow."),
    timeout_s: Optional[float] = typer.Option(None, "--timeout", help="Give up waiting after this many seconds (default: never)."),
    base_url: Optional[str] = BaseUrl,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Follow a request live (queue position while queued, progress while running; from the
    status stream, else by polling) until it ends, then print its output URLs, one per line.
    Exits 1 when it failed or was cancelled."""
    from ._models import image_urls
    from .client import Cancelled, Completed, Failed

    try:
        with _client(base_url, api_key) as client:
            last = None
            with _progress() as bar:
                task = bar.add_task("connecting", total=1.0)
                for update in client.watch(request_id, timeout_s=timeout_s):
                    _show(bar, task, update)
                    last = update
    except ModelAPIError as exc:
        _fail(exc)
    if isinstance(last, Completed):
        for url in image_urls(last.output):
            typer.echo(url)
    elif isinstance(last, Failed):
        console.print(f"[bold red]failed:[/] {escape(str(last.error.get('message') or last.error))}")
        raise typer.Exit(1)
    elif isinstance(last, Cancelled):
        console.print("[yellow]cancelled[/]")
        raise typer.Exit(1)


def _when(value: Any) -> str:
    return "" if value is None else f"{value.astimezone():%Y-%m-%d %H:%M:%S}"


@app.command("ls")
def list_requests(
    status_: Optional[str] = typer.Option(None, "--status", help="Only this status: in_queue, in_progress, completed, failed, cancelled."),
    model: Optional[str] = typer.Option(None, "--model", help="Only this model id."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the listing items as JSON instead of a table."),
    base_url: Optional[str] = BaseUrl,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """List your recent requests, newest first: id, model, status, created, finished (local time)."""
    from .types import Status

    if status_ is not None and status_ not in {s.value for s in Status}:
        raise typer.BadParameter(f"must be one of {', '.join(s.value for s in Status)}", param_hint="--status")
    try:
        with _client(base_url, api_key) as client:
            items = list(client.list_requests(status=status_, model=model, limit=limit))
    except ModelAPIError as exc:
        _fail(exc)
    if as_json:
        _print_json([item.body for item in items])
        return
    table = Table("id", "model", "status", "created", "finished")
    table.columns[0].overflow = "fold"
    for item in items:
        table.add_row(item.request_id, item.model_id, item.update.status_value, _when(item.created_at), _when(item.finished_at))
    if not out.is_terminal:  # piped: whole rows, one line each (a terminal folds them to fit)
        from rich.measure import Measurement

        out.width = max(out.width, Measurement.get(out, out.options.update_width(10_000), table).maximum)
    out.print(table)


@app.command()
def submit(
    model_id: str = typer.Argument(...),
    text: Optional[str] = typer.Option(None, "--text", "--prompt", "-t"),
    image: list[str] = typer.Option([], "--image", "-i"),
    set_: list[str] = typer.Option([], "--set", "-s"),
    idempotency_key: Optional[str] = typer.Option(None, "--idempotency-key"),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="POST the result to this URL when it ends (our server)."),
    base_url: Optional[str] = BaseUrl,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Submit a request and print {request_id, status_url, result_url, cancel_url}."""
    try:
        with _client(base_url, api_key) as client:
            schema, body, problems = _checked_body(client, model_id, text, image, set_)
            if problems:
                _print_json({"detail": problems})
                raise typer.Exit(2)
            handle = client.submit(model_id, client.resolve_files(body, schema=schema), idempotency_key=idempotency_key,
                                   webhook=webhook)
            _print_json(handle.__dict__)
    except ModelAPIError as exc:
        _fail(exc)


@app.command()
def status(request_id: str, base_url: Optional[str] = BaseUrl, api_key: Optional[str] = ApiKeyOpt) -> None:
    """Print a request's status JSON."""
    try:
        with _client(base_url, api_key) as client:
            _print_json(client.status(request_id).body)  # the body as the server sent it
    except ModelAPIError as exc:
        _fail(exc)


@app.command()
def result(request_id: str, include_cost: bool = typer.Option(False, "--include-cost"), base_url: Optional[str] = BaseUrl, api_key: Optional[str] = ApiKeyOpt) -> None:
    """Print a request's result JSON."""
    try:
        with _client(base_url, api_key) as client:
            _print_json(client.result(request_id, include_cost=include_cost).body)
    except ModelAPIError as exc:
        _fail(exc)


@app.command()
def cancel(request_id: str, base_url: Optional[str] = BaseUrl, api_key: Optional[str] = ApiKeyOpt) -> None:
    """Cancel a queued request; print {request_id, status, outcome}."""
    try:
        with _client(base_url, api_key) as client:
            _print_json(client.cancel(request_id))
    except ModelAPIError as exc:
        _fail(exc)


@app.command("mcp")
def mcp_stdio(
    wait_s: float = typer.Option(300, "--wait-s", min=0, help="How long a tool waits for its images before answering "
                                 "with the request still running (follow it with get_request), seconds."),
    base_url: Optional[str] = BaseUrl,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Serve modelapi's tools to a desktop agent over MCP (stdio): generate_images, edit_images,
    get_request, list_requests, calling the server at --base-url. Needs pip install "modelapi[mcp]"."""
    try:
        from .mcp_server import run_stdio
    except ImportError as exc:
        console.print("[bold red]error:[/] " + escape(f'the MCP server needs its extra: pip install "modelapi[mcp]" ({exc.name} is missing)'))
        raise typer.Exit(2) from None
    try:
        run_stdio(base_url or f"http://127.0.0.1:{os.environ.get('MODELAPI_PORT', '8000')}", api_key, wait_s=wait_s)
    except ModelAPIError as exc:
        _fail(exc)


@models_app.callback()
def models(ctx: typer.Context, base_url: Optional[str] = BaseUrl, api_key: Optional[str] = ApiKeyOpt) -> None:
    """List the server's models (JSON)."""
    ctx.obj = (base_url, api_key)
    if ctx.invoked_subcommand is None:
        try:
            with _client(base_url, api_key) as client:
                _print_json(client.models())
        except ModelAPIError as exc:
            _fail(exc)


@models_app.command("schema")
def models_schema(ctx: typer.Context, model_id: str) -> None:
    """Print a model's input and output schema (JSON)."""
    base_url, api_key = ctx.obj
    try:
        with _client(base_url, api_key) as client:
            _print_json(client.model_schema(model_id))
    except ModelAPIError as exc:
        _fail(exc)


def main() -> None:
    """Entry point of the ``modelapi`` console script."""
    app(prog_name="modelapi")
