"""The ``local`` backend: the diffusers engine of this worker (GPU or CPU), as before backends
existed (:func:`modelapi.worker.generate.generate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.jobs import Outcome
from .base import Job

if TYPE_CHECKING:  # the API side imports the backends, never the engine
    from ..engine.base import Engine


class LocalBackend:
    """Runs requests on ``engine`` (loaded once, kept warm by the worker)."""

    name = "local"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, job: Job) -> Outcome:
        """The engine's run of ``job`` (see :func:`~modelapi.worker.generate.generate`); never
        raises :class:`~modelapi.backends.base.Unavailable`."""
        from ..worker.generate import generate

        return generate(job.request, job.attempt, self.engine, job.storage, job.progress, job.should_stop,
                        pool=job.pool, inference=job.inference, output_format=job.output_format,
                        on_stored=job.on_stored)

    def health(self) -> dict[str, Any]:
        return {"engine": self.engine.info.engine, "device": self.engine.info.device}
