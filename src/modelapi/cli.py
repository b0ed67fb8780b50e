"""The ``modelapi`` command: server side (serve, worker, workers, keys, usage, model, demo;
these need ``pip install "modelapi[server]"``, and ``[engine]`` to run a worker) and client side
(run, submit, watch, status, result, cancel, delete, ls, models; the plain ``pip install modelapi``);
``sweep`` runs the retention sweeper once (server side).

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

CANCEL_AFTER_HELP = ("A deadline (our server): 30s, 5m, 1h30m or seconds, 1 s to 24 h. Not started by then: cancelled; "
                     "still running: stopped and failed.")
BaseUrl = typer.Option(None, "--base-url", envvar="MODELAPI_BASE_URL", help="Server root; default the local server or the hosted service.")
ApiKeyOpt = typer.Option(None, "--api-key", envvar="MODELAPI_API_KEY", help="API key (Bearer).")


def _client(base_url: str | None, api_key: str | None) -> Client:
    from .client import Client

    return Client(base_url or f"http://127.0.0.1:{os.environ.get('MODELAPI_PORT', '8000')}", api_key)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _print_table(table: Table) -> None:
    if not out.is_terminal:  # piped: whole rows, one line each (a terminal folds them to fit)
        from rich.measure import Measurement

        out.width = max(out.width, Measurement.get(out, out.options.update_width(10_000), table).maximum)
    out.print(table)


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


class _KeysBackend:
    """The keys and usage commands' two ways in: the database itself (``--database-url``, the
    core's :class:`~modelapi.core.accounts.Accounts`) or a server's admin API (``--base-url``
    with an admin ``--api-key``). Every method returns the admin API's JSON shapes."""

    def __init__(self, database_url: str | None, base_url: str | None, api_key: str | None) -> None:
        self.base_url, self.api_key, self.database_url = base_url, api_key, database_url

    def _accounts(self):  # noqa: ANN202
        from .core.accounts import Accounts

        return Accounts(_db(self.database_url))

    def _http(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        from ._calls import connection_error, error_from_response, resolve_api_key, resolve_base_url

        base = resolve_base_url(self.base_url)
        headers = {"Authorization": f"Bearer {resolve_api_key(self.api_key, base)}"}
        try:
            response = httpx.request(method, base + path, headers=headers, timeout=30, **kwargs)
        except httpx.TransportError as exc:
            raise connection_error(base, exc) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.json()

    def create(self, fields: dict[str, Any]) -> tuple[dict[str, Any], str]:
        if self.base_url:
            body = self._http("POST", "/v1/admin/keys", json=fields)
            return body, body.pop("key")
        return self._accounts().create(_key_fields(fields))

    def keys(self) -> list[dict[str, Any]]:
        return self._http("GET", "/v1/admin/keys")["keys"] if self.base_url else self._accounts().keys()

    def key_id(self, id_or_prefix: str) -> str:
        """A key's id from its id or its displayed prefix."""
        if id_or_prefix.startswith("key_"):
            return id_or_prefix
        found = [k["id"] for k in self.keys() if k["prefix"] == id_or_prefix]
        if len(found) != 1:
            console.print(f"[red]no key with the id or prefix {id_or_prefix!r}[/]")
            raise typer.Exit(1)
        return found[0]

    def show(self, key_id: str) -> dict[str, Any]:
        return self._http("GET", f"/v1/admin/keys/{key_id}") if self.base_url else self._accounts().state(key_id)

    def update(self, key_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        if self.base_url:
            return self._http("PATCH", f"/v1/admin/keys/{key_id}", json=fields)
        return self._accounts().update(key_id, _key_fields(fields))

    def revoke(self, key_id: str) -> dict[str, Any]:
        return self._http("POST", f"/v1/admin/keys/{key_id}/revoke") if self.base_url else self._accounts().revoke(key_id)

    def usage(self, group_by: str, start: str | None, end: str | None) -> list[dict[str, Any]]:
        if self.base_url:
            params = {"group_by": group_by, **({"from": start} if start else {}), **({"to": end} if end else {})}
            return self._http("GET", "/v1/admin/usage", params=params)["rows"]
        from .core import usage as billing

        return billing.summary(_db(self.database_url), group_by,  # type: ignore[arg-type]
                               start=_when_flag(start, "--from"), end=_when_flag(end, "--to"))


def _key_fields(fields: dict[str, Any]):  # noqa: ANN202
    """The core's checked KeyFields (the admin API checks the same on the server)."""
    from pydantic import ValidationError as PydanticError

    from .core.accounts import KeyFields

    try:
        return KeyFields(**fields)
    except PydanticError as exc:
        for problem in exc.errors():
            console.print(f"[bold red]error:[/] --{'-'.join(str(p) for p in problem['loc']).replace('_', '-')}: {problem['msg']}")
        raise typer.Exit(2) from None


def _when_flag(value: str | None, flag: str) -> Any:
    from datetime import datetime, timezone

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("an ISO 8601 date or time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z", param_hint=flag) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _limit(value: str | None, flag: str, kind: type = int) -> Any:
    """A limit flag's value: a number, or ``none`` (no limit)."""
    if value is None or value.lower() in ("none", "unlimited"):
        return None
    try:
        return kind(value)
    except ValueError:
        raise typer.BadParameter(f"a number or 'none', not {value!r}", param_hint=flag) from None


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _expiry(expires_in: str | None, expires_at: str | None) -> tuple[bool, str | None]:
    """(given, the ISO 8601 expiry or None for never) from --expires-in (30d, 12h, 90m, 3600s,
    or none) or --expires-at (ISO 8601, or none)."""
    from datetime import datetime, timedelta, timezone

    if expires_in is not None and expires_at is not None:
        raise typer.BadParameter("give --expires-in or --expires-at, not both", param_hint="--expires-in")
    if expires_in is not None:
        if expires_in.lower() == "none":
            return True, None
        unit = expires_in[-1:].lower()
        if unit not in _DURATION or not expires_in[:-1].isdigit():
            raise typer.BadParameter(f"a number and a unit (s, m, h, d, w), e.g. 30d; not {expires_in!r}", param_hint="--expires-in")
        return True, (datetime.now(timezone.utc) + timedelta(seconds=int(expires_in[:-1]) * _DURATION[unit])).isoformat()
    if expires_at is not None:
        return True, None if expires_at.lower() == "none" else _when_flag(expires_at, "--expires-at").isoformat()
    return False, None


def _fields(name: str | None, role: str | None, models: list[str] | None, rpm: str | None, max_queued: str | None,
            max_running: str | None, budget_usd: str | None, budget_period: str | None, expires_in: str | None,
            expires_at: str | None) -> dict[str, Any]:
    """The key fields given as flags (those not given are left out; ``none`` removes a limit)."""
    fields: dict[str, Any] = {}
    if name is not None:
        fields["name"] = name
    if role is not None:
        fields["role"] = role
    if models is not None:
        names = [m for item in models for m in item.split(",") if m.strip()]
        fields["models"] = [] if names == ["all"] else [m.strip() for m in names]
    for flag, value, kind in (("rpm", rpm, int), ("max_queued", max_queued, int), ("max_running", max_running, int),
                              ("budget_usd", budget_usd, float)):
        if value is not None:
            fields[flag] = _limit(value, "--" + flag.replace("_", "-"), kind)
    if budget_period is not None:
        fields["budget_period"] = None if budget_period.lower() == "none" else budget_period
    given, when = _expiry(expires_in, expires_at)
    if given:
        fields["expires_at"] = when
    return fields


KeysBaseUrl = typer.Option(None, "--base-url", envvar="MODELAPI_BASE_URL",
                           help="Manage keys through this server's admin API (with an admin --api-key) instead of the database.")
RoleOpt = typer.Option(None, "--role", help="user or admin (admin keys may call /v1/admin/...).")
ModelsOpt = typer.Option(None, "--models", help="A model id the key may use (repeat, or comma-separated; 'all': every model).")
RpmOpt = typer.Option(None, "--rpm", help="Submits per minute ('none': unlimited).")
MaxQueuedOpt = typer.Option(None, "--max-queued", help="Requests queued at once ('none': the server's --max-queued-per-key).")
MaxRunningOpt = typer.Option(None, "--max-running", help="Requests running at once ('none': the server's --max-running-per-key).")
BudgetOpt = typer.Option(None, "--budget-usd", help="Most cost per --budget-period, USD ('none': no budget).")
PeriodOpt = typer.Option(None, "--budget-period", help="day, month (UTC) or total.")
ExpiresInOpt = typer.Option(None, "--expires-in", help="Expire after this long: 30d, 12h, 90m, 3600s ('none': never).")
ExpiresAtOpt = typer.Option(None, "--expires-at", help="Expire at this ISO 8601 time ('none': never).")
AsJson = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _key_line(k: dict[str, Any]) -> list[str]:
    limits = ", ".join(f"{name}={k[name]}" for name in ("rpm", "max_queued", "max_running") if k.get(name) is not None)
    if k.get("budget_usd") is not None:
        limits += (", " if limits else "") + f"budget={k['budget_usd']} USD/{k['budget_period']}"
    return [k["id"], k["name"], k["role"], k["prefix"] + "…", ", ".join(k["models"]) or "all", limits,
            (k.get("expires_at") or "")[:16], (k.get("revoked_at") or "")[:16]]


@keys_app.command("create")
def keys_create(
    name: str = typer.Option("default", help="A label for the key."), role: Optional[str] = RoleOpt,
    models: Optional[list[str]] = ModelsOpt, rpm: Optional[str] = RpmOpt, max_queued: Optional[str] = MaxQueuedOpt,
    max_running: Optional[str] = MaxRunningOpt, budget_usd: Optional[str] = BudgetOpt, budget_period: Optional[str] = PeriodOpt,
    expires_in: Optional[str] = ExpiresInOpt, expires_at: Optional[str] = ExpiresAtOpt, as_json: bool = AsJson,
    database_url: Optional[str] = DatabaseUrl, base_url: Optional[str] = KeysBaseUrl, api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Create a key with limits and print it (once: only its hash is stored); --json prints the
    key's record with the secret as "key"."""
    fields = _fields(name, role, models, rpm, max_queued, max_running, budget_usd, budget_period, expires_in, expires_at)
    try:
        record, secret = _KeysBackend(database_url, base_url, api_key).create(fields)
    except ModelAPIError as exc:
        _fail(exc)
    if as_json:
        _print_json({**record, "key": secret})
        return
    console.print(f"created {record['id']} ({record['name']}, {record['role']}); the key is shown only now:")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(as_json: bool = AsJson, database_url: Optional[str] = DatabaseUrl, base_url: Optional[str] = KeysBaseUrl,
              api_key: Optional[str] = ApiKeyOpt) -> None:
    """List keys (id, name, role, prefix, models, limits, expiry, revoked)."""
    try:
        keys = _KeysBackend(database_url, base_url, api_key).keys()
    except ModelAPIError as exc:
        _fail(exc)
    if as_json:
        _print_json(keys)
        return
    table = Table("id", "name", "role", "prefix", "models", "limits", "expires", "revoked")
    for k in keys:
        table.add_row(*_key_line(k))
    _print_table(table)


@keys_app.command("show")
def keys_show(key_id: str = typer.Argument(..., help="The key's id (key_...) or its prefix."),
              database_url: Optional[str] = DatabaseUrl, base_url: Optional[str] = KeysBaseUrl,
              api_key: Optional[str] = ApiKeyOpt) -> None:
    """Print a key's limits and where they stand (remaining budget and rate), as JSON."""
    try:
        backend = _KeysBackend(database_url, base_url, api_key)
        _print_json(backend.show(backend.key_id(key_id)))
    except ModelAPIError as exc:
        _fail(exc)


@keys_app.command("update")
def keys_update(
    key_id: str = typer.Argument(..., help="The key's id (key_...) or its prefix."),
    name: Optional[str] = typer.Option(None, help="A new label."), role: Optional[str] = RoleOpt,
    models: Optional[list[str]] = ModelsOpt, rpm: Optional[str] = RpmOpt, max_queued: Optional[str] = MaxQueuedOpt,
    max_running: Optional[str] = MaxRunningOpt, budget_usd: Optional[str] = BudgetOpt, budget_period: Optional[str] = PeriodOpt,
    expires_in: Optional[str] = ExpiresInOpt, expires_at: Optional[str] = ExpiresAtOpt,
    database_url: Optional[str] = DatabaseUrl, base_url: Optional[str] = KeysBaseUrl, api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Change a key's limits (the flags given; 'none' removes a limit) and print it as JSON."""
    fields = _fields(name, role, models, rpm, max_queued, max_running, budget_usd, budget_period, expires_in, expires_at)
    try:
        backend = _KeysBackend(database_url, base_url, api_key)
        _print_json(backend.update(backend.key_id(key_id), fields))
    except ModelAPIError as exc:
        _fail(exc)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (key_...) or its prefix."),
                database_url: Optional[str] = DatabaseUrl, base_url: Optional[str] = KeysBaseUrl,
                api_key: Optional[str] = ApiKeyOpt) -> None:
    """Revoke a key: its requests answer 401 from now on."""
    try:
        backend = _KeysBackend(database_url, base_url, api_key)
        record = backend.revoke(backend.key_id(key_id))
    except ModelAPIError as exc:
        _fail(exc)
    console.print(f"revoked {record['id']} at {record['revoked_at']}")


@app.command()
def usage(
    group_by: str = typer.Option("key", "--group-by", help="key, model or day (UTC, of completion)."),
    start: Optional[str] = typer.Option(None, "--from", help="ISO 8601 date or time, inclusive (UTC when no offset)."),
    end: Optional[str] = typer.Option(None, "--to", help="ISO 8601 date or time, exclusive."),
    as_json: bool = AsJson,
    database_url: Optional[str] = DatabaseUrl, base_url: Optional[str] = KeysBaseUrl, api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Completed requests, images, billed units and cost (USD) by key, model or day, from the
    billing ledger (the database, or a server's admin API with --base-url)."""
    if group_by not in ("key", "model", "day"):
        raise typer.BadParameter("key, model or day", param_hint="--group-by")
    try:
        rows = _KeysBackend(database_url, base_url, api_key).usage(group_by, start, end)
    except ModelAPIError as exc:
        _fail(exc)
    if as_json:
        _print_json(rows)
        return
    first = {"key": ["key", "name"], "model": ["model"], "day": ["day"]}[group_by]
    table = Table(*first, "requests", "images", "billed units", "cost (USD)")
    for row in rows:
        head = [row["key_id"], row.get("name") or ""] if group_by == "key" else [row["model_id" if group_by == "model" else "day"]]
        table.add_row(*head, str(row["requests"]), str(row["images"]), str(row["billed_units"]), f"{row['cost_usd']:.4f}")
    _print_table(table)


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


@app.command()
def sweep(
    database_url: Optional[str] = DatabaseUrl,
    storage_url: Optional[str] = typer.Option(None, "--storage-url", envvar="MODELAPI_STORAGE_URL",
                                              help="The deployment's store (default: the folder in the data dir)."),
    retention_s: Optional[int] = typer.Option(None, "--retention-s", envvar="MODELAPI_RETENTION_S",
                                              help="Keep a finished request's files this long, seconds (default 7 days)."),
    upload_retention_s: Optional[int] = typer.Option(None, "--upload-retention-s", envvar="MODELAPI_UPLOAD_RETENTION_S",
                                                     help="Keep an upload no request used this long, seconds (default 1 day)."),
    keep_requests_s: Optional[int] = typer.Option(None, "--keep-requests-s", envvar="MODELAPI_KEEP_REQUESTS_S",
                                                  help="Keep a finished request's row this long, seconds (default 90 days)."),
    sweep_batch: Optional[int] = typer.Option(None, "--sweep-batch", envvar="MODELAPI_SWEEP_BATCH",
                                              help="Requests (or uploads) deleted per transaction (default 100)."),
) -> None:
    """Run the sweeper once: delete what retention makes due (files of requests past
    --retention-s, unused uploads past --upload-retention-s, request rows past
    --keep-requests-s, finished queue entries), then print what was deleted as JSON. Safe while
    workers (which sweep every --sweep-interval-s) and other sweeps run."""
    from .core.context import open_core
    from .core.sweep import Sweeper

    settings = _settings(database_url=database_url, storage_url=storage_url, retention_s=retention_s,
                         upload_retention_s=upload_retention_s, keep_requests_s=keep_requests_s, sweep_batch=sweep_batch)
    core = open_core(settings, create_initial_key=False)
    try:
        done = Sweeper(settings, core.jobs, core.storage).sweep_once()
    finally:
        core.close()
    _print_json(done.as_dict())


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
    cancel_after: Optional[str] = typer.Option(None, "--cancel-after", help=CANCEL_AFTER_HELP),
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
                result = client.run(model_id, body, timeout_s=timeout_s, webhook=webhook, cancel_after=cancel_after,
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
    _print_table(table)


@app.command()
def submit(
    model_id: str = typer.Argument(...),
    text: Optional[str] = typer.Option(None, "--text", "--prompt", "-t"),
    image: list[str] = typer.Option([], "--image", "-i"),
    set_: list[str] = typer.Option([], "--set", "-s"),
    idempotency_key: Optional[str] = typer.Option(None, "--idempotency-key"),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="POST the result to this URL when it ends (our server)."),
    cancel_after: Optional[str] = typer.Option(None, "--cancel-after", help=CANCEL_AFTER_HELP),
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
                                   webhook=webhook, cancel_after=cancel_after)
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
def cancel(
    request_id: str,
    running: bool = typer.Option(False, "--running", help="Also stop it if it is running (our server): it ends "
                                 "cancelled at its next step, keeping the images already made."),
    base_url: Optional[str] = BaseUrl,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Cancel a queued request (with --running, also a running one); print {request_id, status, outcome}."""
    try:
        with _client(base_url, api_key) as client:
            _print_json(client.cancel(request_id, running=running))
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


@app.command()
def delete(request_id: str, base_url: Optional[str] = BaseUrl, api_key: Optional[str] = ApiKeyOpt) -> None:
    """Delete a request's outputs and inputs now (a queued one is cancelled first); print its
    status with deleted_at (JSON). A running request is refused (409)."""
    try:
        with _client(base_url, api_key) as client:
            _print_json(client.delete(request_id))
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
