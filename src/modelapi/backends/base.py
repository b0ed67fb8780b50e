"""The backend interface: what the worker hands a backend (one run of one request) and what it
gets back. A backend is the local engine or an upstream provider; the worker loop never knows
which (:class:`~modelapi.backends.routing.Router` picks, in the order of the model's route).

A backend returns the run's :data:`~modelapi.core.jobs.Outcome` (``Done``, ``Failed``,
``Stopped``), or raises :class:`Unavailable` for a failure worth trying again or elsewhere
(429, 5xx, a timeout, a connection error) and :class:`Rejected` for a refusal that would fail
the same way anywhere (validation, content policy).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from ..core.jobs import Outcome, Request
from ..core.storage import Storage


class Unavailable(Exception):
    """The backend could not run the request now: ``outcome`` says why in a few words (e.g.
    ``"429 RateLimitExceeded"``, ``"timeout"``, ``"connection error"``). The router retries it
    (bounded, with backoff) when ``retry``, then moves on to the next backend of the route; with
    ``retry=False`` (401, 403, 404: the operator's set-up) it moves on at once."""

    def __init__(self, outcome: str, retry: bool = True) -> None:
        super().__init__(outcome)
        self.outcome, self.retry = outcome, retry


class Rejected(Exception):
    """The provider refused the request itself: no other backend is tried. ``code`` is the
    request's ``error.code`` (``"content_policy"`` or ``"upstream_rejected"``), ``message`` the
    provider's own message (with its error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass
class Job:
    """One run of one request, as the worker hands it to a backend.

    Attributes:
        request: the request as stored (validated inputs, stored reference keys, seed).
        attempt: the run's attempt number (1-based); outputs go under
            ``outputs/<request_id>/<attempt>/<index>.<ext>``.
        storage: where references are read from and outputs written to.
        progress: called with the fraction done, 0.0-1.0.
        should_stop: True when the run must stop (graceful shutdown): return ``Stopped``.
        on_stored: called with the storage keys of the outputs stored so far, in index order,
            as each lands (``partial_output``).
        pool: the worker's small pool for encoding and storing outputs.
        inference: the local engine's slot (held by the local backend while it infers).
        output_format: ``jpeg``, ``png`` or ``webp`` (``--output-format``).
        max_pixels: the largest image decoded from a provider (width*height; above it the
            answer is refused as a decompression bomb).
        kind: the queue the run came from: ``"run"`` (the local engine's) or ``"upstream"``;
            the route is run from its first backend of that kind.
        tried: backends tried by earlier runs of the request (``[{"backend", "outcome"}]``):
            the run goes on after them.
        on_upstream: called with the upstream's side of the run when it changes (``{backend,
            request_id, status, queue_position, cancel_url}``; upstreams with a queue of their
            own; None: none any more), so that clients see the upstream's queue position and a
            client's cancel can be forwarded while the upstream queues it.
    """

    request: Request
    attempt: int
    storage: Storage
    progress: Callable[[float], None]
    should_stop: Callable[[], bool]
    on_stored: Callable[[list[str]], None]
    pool: Executor
    inference: AbstractContextManager[Any]
    output_format: str = "jpeg"
    max_pixels: int = 40_000_000
    kind: str = "run"
    tried: list[dict[str, str]] = field(default_factory=list)
    on_upstream: Callable[[dict[str, Any] | None], None] = lambda record: None


class Backend(Protocol):
    """One way of running requests. ``name`` is what routes and ``result.metadata.backend`` call it."""

    name: str

    def run(self, job: Job) -> Outcome:
        """Run ``job`` to its outcome. ``Done.metadata`` of an upstream carries ``upstream``
        (``{"model", "request_id"}``); its ``Done.ledger`` ``upstream_units`` (the provider's
        billed units, for the usage ledger only: clients never see them).

        Raises:
            Unavailable: worth retrying, here later or on another backend.
            Rejected: the provider refused the request (never retried elsewhere).
        """
        ...

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` shows of this backend (never a credential)."""
        ...


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """The image in ``data`` as RGB, checked before decoding: at most ``max_pixels`` pixels.

    Raises:
        ValueError: not an image, or larger than ``max_pixels``.
    """
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > max_pixels:
            raise ValueError(f"image of {image.width}x{image.height} px is above {max_pixels} px")
        return image.convert("RGB")
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"not a readable image: {exc}") from None


def text_of(job: Job, backend: str, prompt: str, seed: int) -> dict[str, str]:
    """The metadata written inside each output file of an upstream backend."""
    return {"prompt": prompt, "seed": str(seed), "model_id": job.request.model_id, "backend": backend,
            "random_weights": "false"}


def short(obj: Any, limit: int = 300) -> str:
    """``obj`` as text of at most ``limit`` characters (provider messages in errors and logs)."""
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
