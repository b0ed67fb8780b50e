"""The engine's errors (server-side: the SDK's tree is :mod:`modelapi.errors`)."""

from __future__ import annotations


class EngineError(Exception):
    """The generation engine could not load its weights or run a request."""


class GenerationStopped(EngineError):
    """A stop was requested between denoising steps (graceful shutdown)."""
