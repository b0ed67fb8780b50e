"""One request's run on the engine, from stored inputs to stored outputs, as a typed outcome.

Only inference holds the engine: each image is handed, as soon as the engine has it, to a
bounded pool that encodes it (``--output-format``, metadata inside the file) and stores it, while
the engine goes on with the next pass — or, once the series is done, with the next job (the
runtime takes one job ahead). The run completes only when every output is durably stored.

Nothing here writes a request row: the runtime reports the outcome to the state machine
(:meth:`modelapi.core.jobs.JobStore.finish`) and publishes stored images as they land.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

from PIL import Image

from .. import catalog
from ..core.images import FORMATS, embedded_text, encode  # noqa: F401 - embedded_text: this module's readers
from ..core.jobs import Done, Failed, Outcome, Request, Stopped
from ..core.storage import Storage
from ..engine.base import Engine, GenerationSpec
from ..engine.errors import GenerationStopped
from ..errors import InputError
from ..series.params import prepare

log = logging.getLogger("modelapi.worker")

class Outputs:
    """One run's images, encoded and stored on ``pool`` as the engine hands them over (any
    order, each index once); ``on_stored(keys)`` publishes the keys stored so far, in index
    order, each time one lands but the last (completing the request publishes them all)."""

    def __init__(self, pool: Executor, storage: Storage, req: Request, attempt: int, spec: GenerationSpec,
                 fmt: str, random_weights: bool, on_stored: Callable[[list[str]], None]) -> None:
        self.pool, self.storage, self.req, self.attempt, self.spec, self.fmt = pool, storage, req, attempt, spec, fmt
        self.random_weights = str(random_weights).lower()
        self.on_stored = on_stored
        self._futures: dict[int, Future[str]] = {}
        self._stored: dict[int, str] = {}
        self._lock = threading.Lock()

    def add(self, index: int, image: Image.Image) -> None:
        if index not in self._futures:
            self._futures[index] = self.pool.submit(self._store, index, image)

    def _store(self, index: int, image: Image.Image) -> str:
        content_type, ext = FORMATS[self.fmt]
        key = f"outputs/{self.req.request_id}/{self.attempt}/{index}.{ext}"
        text = {"prompt": self.spec.prompts[index], "seed": str(self.spec.seed + index), "model_id": self.req.model_id,
                "random_weights": self.random_weights}
        self.storage.put(key, encode(image, self.fmt, text), content_type)
        with self._lock:  # held while publishing, so a shorter list is never published after a longer one
            self._stored[index] = key
            if len(self._stored) < self.spec.count:
                try:
                    self.on_stored([self._stored[i] for i in sorted(self._stored)])
                except Exception as exc:  # noqa: BLE001 - publishing early is best effort
                    log.warning("partial outputs not published: %s", exc)
        return key

    def wait(self) -> list[str]:
        """Every key in index order, once all are stored. Raises the first storage error."""
        return [self._futures[i].result() for i in sorted(self._futures)]

    def kept(self) -> list[str]:
        """After a stop: the keys of the images handed over so far, once stored, in index order,
        up to the first that is missing or could not be stored (a series keeps its prefix)."""
        keys = []
        for i in range(len(self._futures)):
            future = self._futures.get(i)
            if future is None or future.exception() is not None:
                break
            keys.append(future.result())
        return keys


def generate(req: Request, attempt: int, engine: Engine, storage: Storage, progress: Callable[[float], None],
             should_stop: Callable[[], bool], *, pool: Executor, inference: AbstractContextManager[Any],
             output_format: str = "jpeg", on_stored: Callable[[list[str]], None] = lambda keys: None) -> Outcome:
    """Plan the series, run the engine while holding ``inference``, and store each image under
    ``outputs/<request_id>/<attempt>/<i>.<ext>`` through ``pool`` (an outdated run never
    overwrites the files of the run that completes the request).

    Returns:
        ``Done`` (outputs stored; ``metadata["timings"]``: ``queue_s``, ``fetch_s``,
        ``inference_s``, ``postprocess_s`` (after inference, until every output is stored) and
        ``total_s``, seconds), ``Failed("invalid_input", ...)`` for inputs the engine refuses,
        ``Failed("storage_error", ...)`` when an output cannot be written, or ``Stopped`` when
        ``should_stop()`` turned True between steps (its ``outputs``: the images finished before
        the stop, stored).
    """
    model = catalog.get(req.model_id)
    if model is None:
        raise LookupError(f"unknown model {req.model_id!r}")
    queue_s = (datetime.now(timezone.utc) - req.created_at).total_seconds()
    t0 = time.monotonic()
    refs = [Image.open(io.BytesIO(storage.get(key))).convert("RGB") for key in req.input_files]
    t_fetched = time.monotonic()
    info = engine.info
    try:
        spec = prepare(model, req.inputs, refs, rewrite=getattr(engine, "rewrite_prompts", None), seed=req.seed)
        outputs = Outputs(pool, storage, req, attempt, spec, output_format, info.random_weights, on_stored)
        with inference:
            t_started = time.monotonic()
            images = engine.generate(spec, progress, should_stop, on_image=outputs.add)
            t_inferred = time.monotonic()
    except GenerationStopped:  # raised by engine.generate only: outputs exists
        return Stopped(outputs.kept())
    except InputError as exc:
        return Failed("invalid_input", exc.msg)
    for i, image in enumerate(images):  # any the engine did not hand over early
        outputs.add(i, image)
    try:
        keys = outputs.wait()
    except Exception as exc:  # noqa: BLE001 - a full disk, a read-only folder, a bucket refusing writes
        log.exception("request.storage_error", extra={"request_id": req.request_id})
        return Failed("storage_error", f"the outputs could not be stored: {type(exc).__name__}: {exc}"[:500])
    t_stored = time.monotonic()
    metadata = {
        **spec.plan,
        "image_count": len(keys),
        "width": images[0].width, "height": images[0].height,
        "seed": spec.seed,
        "output_format": output_format,
        **info.as_dict(),
        "timings": {"queue_s": round(queue_s, 4), "fetch_s": round(t_fetched - t0, 4),
                    "inference_s": round(t_inferred - t_started, 4), "postprocess_s": round(t_stored - t_inferred, 4),
                    "total_s": round(queue_s + t_stored - t0, 4)},
    }
    return Done(keys, metadata)
