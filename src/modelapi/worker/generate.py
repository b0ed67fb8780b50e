"""One request's run on the engine, from stored inputs to stored outputs, as a typed outcome.

Nothing here writes a request row: the runtime reports the outcome to the state machine
(:meth:`modelapi.core.jobs.JobStore.finish`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

from PIL import Image, PngImagePlugin

from .. import catalog
from ..core.jobs import Done, Failed, Outcome, Request, Stopped
from ..core.storage import Storage
from ..engine.base import Engine
from ..engine.params import prepare
from ..errors import GenerationStopped, InputError

log = logging.getLogger("modelapi.worker")


def encode_png(image: Image.Image, text: dict[str, str]) -> bytes:
    """``image`` as PNG bytes with ``text`` in iTXt chunks (e.g. prompt, seed)."""
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_itxt(k, v)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def generate(req: Request, attempt: int, engine: Engine, storage: Storage, progress: Callable[[float], None],
             should_stop: Callable[[], bool]) -> Outcome:
    """Plan the series, run the engine, store each image under
    ``outputs/<request_id>/<attempt>/<i>.png`` (an outdated run never overwrites the files of
    the run that completes the request).

    Returns:
        ``Done`` (outputs stored), ``Failed("invalid_input", ...)`` for inputs the engine
        refuses, ``Failed("storage_error", ...)`` when an output cannot be written, or
        ``Stopped`` when ``should_stop()`` turned True between steps.
    """
    model = catalog.get(req.model_id)
    if model is None:
        raise LookupError(f"unknown model {req.model_id!r}")
    refs = [Image.open(io.BytesIO(storage.get(key))).convert("RGB") for key in req.input_files]
    rewrite = getattr(engine, "rewrite_prompts", None)
    try:
        spec = prepare(model, req.inputs, refs, rewrite=rewrite, seed=req.seed)
        images = engine.generate(spec, progress, should_stop)
    except GenerationStopped:
        return Stopped()
    except InputError as exc:
        return Failed("invalid_input", exc.msg)
    random_weights = str(engine.info.get("random_weights", False)).lower()
    outputs = []
    for i, (image, prompt) in enumerate(zip(images, spec.prompts)):
        key = f"outputs/{req.request_id}/{attempt}/{i}.png"
        text = {"prompt": prompt, "seed": str(spec.seed + i), "model_id": req.model_id, "random_weights": random_weights}
        try:
            storage.put(key, encode_png(image, text), "image/png")
        except Exception as exc:  # noqa: BLE001 - a full disk, a read-only folder, a bucket refusing writes
            log.exception("request.storage_error", extra={"request_id": req.request_id})
            return Failed("storage_error", f"the outputs could not be stored: {type(exc).__name__}: {exc}"[:500])
        outputs.append(key)
    metadata = {
        **spec.plan,
        "image_count": len(outputs),
        "width": images[0].width, "height": images[0].height,
        "seed": spec.seed,
        **engine.info,
    }
    return Done(outputs, metadata)
