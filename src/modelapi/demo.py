"""``modelapi demo``: the server in-process, the three documented example requests, and a page
showing inputs, prompts, plans, outputs and timings.

Image endpoints get real photos from scikit-image's bundled data as their references (the
documented examples point at hosted files this machine may not reach).
"""

from __future__ import annotations

import html
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from . import catalog
from .client import Client, Completed, InProgress, Queued, Result

PHOTOS = {
    "bytedance/seedream-4-0/edit-sequential": ["astronaut.png", "chelsea.png"],
    "bytedance/dreamina-4-0/edit": ["motorcycle_left.png", "coffee.png"],
}


def demo_requests(photo_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """The documented example request of each endpoint, with local photos as image inputs."""
    out = []
    for model_id, model in sorted(catalog.models().items(), key=lambda kv: kv[0], reverse=True):
        body = dict(model.example_request)
        field = model.task.image_field
        if field is not None:
            body[field] = [str(photo_dir / name) for name in PHOTOS[model_id]]
        out.append((model_id, body))
    return out


@dataclass
class _Run:
    """One demo request: what was sent, when, and what came back."""

    model_id: str
    body: dict[str, Any]
    inputs: list[str]
    request_id: str
    submitted: float
    finished: float = 0.0
    result: Result | None = None
    outputs: list[Path] = field(default_factory=list)


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(out_dir: Path, *, port: int = 0, console: Console | None = None) -> Path:
    """Run the demo; returns the path of index.html. Raises ModelAPIError if a request fails."""
    import skimage

    from .api.run import start_in_thread
    from .core.auth import create_key
    from .core.config import Settings

    console = console or Console(stderr=True)
    overrides: dict[str, Any] = {"port": port or _free_port()}
    settings = Settings(**overrides)  # every other setting from MODELAPI_* variables or its default
    console.print(f"starting the server on {settings.base_url} (data dir {settings.data_dir}) …")
    t0 = time.monotonic()
    server, service, thread = start_in_thread(settings)
    try:
        while not server.started:
            time.sleep(0.05)
        info = service.engine_info()
        if info.get("random_weights"):
            console.print("[bold yellow]RANDOM WEIGHTS:[/] no FLUX.2 weights were found, so the demo runs a tiny "
                          "random-weight pipeline. Its images are NOISE; the plumbing is real.")
        console.print(f"server ready in {time.monotonic() - t0:.1f} s; engine {info.get('engine')} on {info.get('device')}")
        _, key = create_key(service.db, name="demo")
        out_dir.mkdir(parents=True, exist_ok=True)
        inputs_dir = out_dir / "inputs"
        inputs_dir.mkdir(exist_ok=True)
        photo_dir = Path(skimage.__file__).parent / "data"
        runs: list[_Run] = []
        with Client(settings.base_url, key, timeout_s=120) as client:
            for model_id, body in demo_requests(photo_dir):
                images = _image_inputs(model_id, body)
                for p in images:
                    shutil.copy(p, inputs_dir / Path(p).name)
                handle = client.submit(model_id, client.resolve_files(body, mode="upload"))
                runs.append(_Run(model_id, body, [Path(p).name for p in images], handle.request_id, time.monotonic()))
            _wait(client, runs, console)
            for run in runs:
                result = client.result(run.request_id, include_cost=True)
                run.result = result
                if not isinstance(result.update, Completed):
                    raise RuntimeError(f"{run.model_id} ended {result.update.status_value}: {result.error}")
                folder = out_dir / run.model_id.replace("/", "__")
                run.outputs = [p.relative_to(out_dir) for p in client.download(result, folder)]
        index = out_dir / "index.html"
        index.write_text(_page(runs, info), encoding="utf-8")
        console.print(f"[bold green]done[/] in {time.monotonic() - t0:.1f} s: {index}")
        for run in runs:
            for output in run.outputs:
                print(out_dir / output)
        return index
    finally:
        server.should_exit = True
        thread.join(timeout=120)


def _image_inputs(model_id: str, body: dict[str, Any]) -> list[str]:
    model = catalog.get(model_id)
    field_name = model.task.image_field if model is not None else None
    return list(body.get(field_name, [])) if field_name else []


def _wait(client: Client, runs: list[_Run], console: Console) -> None:
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=console) as bar:
        tasks = {r.request_id: bar.add_task(r.model_id, total=1.0, state="submitted") for r in runs}
        by_id = {r.request_id: r for r in runs}
        pending = set(tasks)
        while pending:
            for rid in list(pending):
                update = client.status(rid)
                if isinstance(update, Queued):
                    bar.update(tasks[rid], state=f"in queue (position {update.position})")
                elif isinstance(update, InProgress):
                    bar.update(tasks[rid], completed=update.progress or 0.0, state="generating")
                elif update.is_terminal:
                    bar.update(tasks[rid], completed=1.0, state=update.status_value)
                    pending.discard(rid)
                    by_id[rid].finished = time.monotonic()
            time.sleep(0.25)


def _page(runs: list[_Run], info: dict[str, Any]) -> str:
    esc = html.escape
    banner = ""
    if info.get("random_weights"):
        banner = ("<p class=warn><b>Random weights:</b> these images come from a tiny random-weight pipeline "
                  "(no FLUX.2 weights were found); they are noise. Serve real weights with <code>--model</code>.</p>")
    sections = []
    for run in runs:
        result = run.result
        assert result is not None, "the page is written once every result is in"
        meta = result.metadata
        prompt = run.body.get("text") or run.body.get("prompt")
        inputs = "".join(f'<img src="inputs/{esc(n)}" alt="{esc(n)}">' for n in run.inputs) or "<i>none (text only)</i>"
        outputs = "".join(f'<a href="{esc(str(p))}"><img src="{esc(str(p))}"></a>' for p in run.outputs)
        plan = "".join(f"<li>{esc(p)}</li>" for p in meta.get("prompts", []))
        sections.append(f"""
<section>
  <h2>{esc(run.model_id)}</h2>
  <p><b>Prompt:</b> {esc(prompt or '')}</p>
  <p><b>Plan:</b> {meta.get('image_count')} image(s) at {meta.get('width')}×{meta.get('height')},
     seed {result.seed}, count from {esc(str(meta.get('source')))}; per-image prompts:</p><ol>{plan}</ol>
  <p><b>Timings:</b> {run.finished - run.submitted:.1f} s from submit to finished
     (created {esc(result['created_at'])}, finished {esc(result['finished_at'])}); cost ${result.cost or 0:.2f}</p>
  <h3>Inputs</h3><div class=row>{inputs}</div>
  <h3>Outputs</h3><div class=row>{outputs}</div>
</section>""")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>modelapi demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} .row img{{height:180px;margin:4px;border:1px solid #ccc}}
.warn{{background:#fff3cd;padding:.8em;border:1px solid #e0c36b}}</style></head>
<body><h1>modelapi demo</h1>
<p>Engine: {esc(str(info.get('engine')))} · weights {esc(str(info.get('weights')))} · device {esc(str(info.get('device')))}</p>
{banner}{''.join(sections)}
</body></html>
"""
