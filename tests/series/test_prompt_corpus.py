"""The series-planning corpus (tests/series/prompt_corpus.toml): real-looking prompts in the
seven supported languages, each with its count and per-image prompts. Extend the data file,
not this test."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from modelapi.series.languages import LANGUAGES
from modelapi.series.planner import plan_series

CORPUS = Path(__file__).with_name("prompt_corpus.toml")
CASES: list[dict[str, Any]] = tomllib.loads(CORPUS.read_text(encoding="utf-8"))["case"]
FIELDS = {"lang", "prompt", "count", "each", "prompts", "source", "stated", "max_images", "note"}


def expected(case: dict[str, Any]) -> dict[str, Any]:
    """The plan a case asks for, with the corpus's defaults (see the file's header)."""
    if "prompts" in case:
        prompts, source = case["prompts"], case["source"]
    elif "each" in case:
        prompts, source = [case["each"]] * case["count"], case.get("source", "prompt_count")
    else:
        prompts, source = [case["prompt"]], case.get("source", "none")
    count = case.get("count", 1)
    return {
        "count": count,
        "prompts": prompts,
        "source": source,
        "language": case["lang"],
        "stated_count": case.get("stated", None if source == "none" else count),
    }


def case_id(case: dict[str, Any]) -> str:
    return f"{case['lang']}:{case['prompt'][:40]}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_corpus_case(case: dict[str, Any]) -> None:
    plan = plan_series(case["prompt"], max_images=case.get("max_images", 15))
    got = {k: getattr(plan, k) for k in ("count", "prompts", "source", "language", "stated_count")}
    assert got == expected(case)


def test_corpus_is_well_formed() -> None:
    for case in CASES:
        assert set(case) <= FIELDS, case_id(case)
        assert not ("each" in case and "prompts" in case), case_id(case)
        assert "source" in case or "prompts" not in case, case_id(case)
        if "prompts" in case:
            assert len(case["prompts"]) == case["count"], case_id(case)


def test_corpus_covers_every_language_and_kind() -> None:
    assert len(CASES) >= 150
    per_language = Counter(case["lang"] for case in CASES)
    assert set(per_language) == {lang.code for lang in LANGUAGES}
    assert min(per_language.values()) >= 20, per_language
    kinds = {(case["lang"], expected(case)["source"]) for case in CASES}
    for lang in LANGUAGES:  # counts, non-counts, shot lists and stories in every language
        assert {(lang.code, s) for s in ("prompt_count", "none", "shot_list", "beats")} <= kinds, lang.code
