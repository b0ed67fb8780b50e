"""The drawing test engine, reporting random weights (so the playground's notice shows), with
steps slow enough that a test sees a request queued and in progress. Never part of the package."""

from __future__ import annotations

from dataclasses import replace

from drawing_engine import make as make_drawing


def make(settings):  # noqa: ANN001, ANN201
    engine = make_drawing(settings)
    engine.info = replace(engine.info, weights="random (test)", random_weights=True)
    return engine
