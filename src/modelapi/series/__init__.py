"""Series planning: what a request asks for, read from the API contract, not from the model.

:mod:`~modelapi.series.params` turns a validated request into a
:class:`~modelapi.engine.base.GenerationSpec` (sizes, seed, scale), with the image count and the
per-image prompts from :mod:`~modelapi.series.planner`, whose rules and per-language word lists
are the tables of :mod:`~modelapi.series.languages`.
"""
