"""Series planning: counts from prompts, caps, shot lists, beats and rewrites
(modelapi.series.planner, with the tables of modelapi.series.languages). The per-language
prompt corpus is tests/series/prompt_corpus.toml (test_prompt_corpus.py)."""

from __future__ import annotations

import re

import pytest

from modelapi.series.languages import LANGUAGES, by_code
from modelapi.series.planner import (
    SOURCES,
    SeriesPlan,
    apply_rewrites,
    detect_language,
    find_count,
    plan_series,
    rewrite_instruction,
    strip_count,
)

EXAMPLE = "Generate 3 images of a beautiful sunset over a calm ocean."
SUBJECT = "a beautiful sunset over a calm ocean"


@pytest.mark.parametrize(
    ("prompt", "stated"),
    [
        (EXAMPLE, 3),
        ("4 pictures of a lighthouse", 4),
        ("Generate three images of a fox", 3),
        ("GENERATE THREE IMAGES OF A FOX", 3),
        ("Make Five Photos of a bakery", 5),
        ("a series of four", 4),
        ("A Series Of Four showing a flower blooming", 4),
        ("a storyboard of 6 panels about a heist", 6),
        ("a sequence of 5 frames of a runner", 5),
        ("a set of 2 posters for a jazz festival", 2),
        ("a 6-panel comic about a robot", 6),
        ("a four-panel strip", 4),
        ("3 cinematic shots of Paris at night", 3),
        ("twelve variations of a logo", 12),
        ("7 views of the same chair", 7),
        ("two versions of this portrait", 2),
        ("4 sketches of a castle", 4),
        ("twenty illustrations", 20),
        ("Generate 3 images of 2 dogs", 3),
        ("one image of a cat", 1),
        ("Generate 10 photographs of a street", 10),
    ],
)
def test_stated_count(prompt: str, stated: int) -> None:
    plan = plan_series(prompt, max_images=15)
    assert plan.stated_count == stated
    assert plan.count == min(stated, 15)
    assert plan.source == "prompt_count"
    assert plan.prompts == [strip_count(prompt)] * plan.count


@pytest.mark.parametrize(
    "prompt",
    [
        "a photo of 3 cats",
        "a beautiful sunset over a calm ocean",
        "a set of 3 cups on a table",
        "a series of 3 cats",
        "a 3 cats poster",
        "2 dogs in photos",
        "a 16:9 images banner",
        "8K photos of a forest",
        "3D renders of a car",
        "someone image",
        "merge the 2 images into one",
        "put the hat from these 3 photos on the man",
        "a clock showing 3 o'clock",
    ],
)
def test_no_count(prompt: str) -> None:
    plan = plan_series(prompt, max_images=15)
    assert (plan.count, plan.stated_count, plan.source) == (1, None, "none")
    assert plan.prompts == [prompt]


def test_documented_example_with_default_cap() -> None:
    plan = plan_series(EXAMPLE, max_images=3)
    assert plan.count == 3
    assert plan.prompts == [SUBJECT] * 3  # the instruction "Generate 3 images of" is gone


@pytest.mark.parametrize(
    ("prompt", "max_images", "n_refs", "count", "cap"),
    [
        ("Generate 12 images of a cat", 3, 0, 3, 3),
        ("Generate 8 images of a cat", 15, 10, 5, 5),
        ("Generate 100 images of a cat", 15, 0, 15, 15),
        ("Generate 100 images of a cat", 15, 14, 1, 1),
        ("Generate 2 images of a cat", 15, 10, 2, 5),
        ("Generate 5 images of a cat", 15, 15, 1, 1),
    ],
)
def test_caps(prompt: str, max_images: int, n_refs: int, count: int, cap: int) -> None:
    plan = plan_series(prompt, max_images=max_images, n_references=n_refs)
    assert (plan.count, plan.cap, len(plan.prompts)) == (count, cap, count)
    assert plan.stated_count == int(prompt.split()[1])


def test_stated_zero_makes_one_image() -> None:
    plan = plan_series("Generate 0 images of a cat", max_images=5)
    assert (plan.count, plan.stated_count, plan.source) == (1, 0, "prompt_count")


def test_numbered_list_gives_per_image_prompts() -> None:
    prompt = (
        "A knight in silver armour:\n1. riding at dawn\n2. fighting a dragon\n3. resting at dusk"
    )
    plan = plan_series(prompt, max_images=15)
    assert (plan.count, plan.stated_count, plan.source) == (3, 3, "shot_list")
    assert plan.prompts == [
        "A knight in silver armour: riding at dawn",
        "A knight in silver armour: fighting a dragon",
        "A knight in silver armour: resting at dusk",
    ]


def test_inline_parenthesised_list() -> None:
    plan = plan_series("Two cars: 1) a red car, and 2) a blue car", max_images=15)
    assert plan.prompts == ["Two cars: a red car", "Two cars: a blue car"]


def test_labelled_panels_and_postscript() -> None:
    prompt = "Panel 1: a cat wakes up. Panel 2: it eats. Panel 3: it sleeps.\n\nWatercolor style."
    plan = plan_series(prompt, max_images=15)
    assert plan.prompts == [
        "a cat wakes up. Watercolor style.",
        "it eats. Watercolor style.",
        "it sleeps. Watercolor style.",
    ]


@pytest.mark.parametrize("bullet", ["-", "*", "•"])
def test_bulleted_list(bullet: str) -> None:
    prompt = f"A lighthouse\n{bullet} in fog\n{bullet} in a storm"
    plan = plan_series(prompt, max_images=15)
    assert (plan.count, plan.source) == (2, "shot_list")
    assert plan.prompts == ["A lighthouse in fog", "A lighthouse in a storm"]


def test_list_without_preamble_and_over_cap() -> None:
    prompt = "\n".join(f"{i}. shot number {i}" for i in range(1, 7))
    plan = plan_series(prompt, max_images=4)
    assert (plan.count, plan.stated_count) == (4, 6)
    assert plan.prompts == [f"shot number {i}" for i in range(1, 5)]


def test_list_wins_over_stated_number() -> None:
    plan = plan_series("Generate 4 images:\n1. a cat\n2. a dog", max_images=15)
    assert (plan.count, plan.source) == (2, "shot_list")


@pytest.mark.parametrize(
    "prompt",
    [
        "1. only one item",
        "Put the hat from image 1. on the man in image 2. now",
        "Version 2. and 3. later",
    ],
)
def test_not_a_list(prompt: str) -> None:
    assert plan_series(prompt, max_images=15).source != "shot_list"


def test_disabled_gives_one_image_without_the_count_instruction() -> None:
    plan = plan_series(EXAMPLE, max_images=3, sequential="disabled")
    assert (plan.count, plan.prompts, plan.stated_count) == (1, [SUBJECT], 3)
    assert plan.source == "disabled"


def test_disabled_story_keeps_the_whole_prompt() -> None:
    prompt = "a story in 3 images: waking, riding out, returning"
    plan = plan_series(prompt, max_images=3, sequential="disabled")
    assert (plan.count, plan.prompts, plan.stated_count) == (1, [prompt], 3)


def test_force_single() -> None:
    prompt = "Shots:\n1. a\n2. b"
    plan = plan_series(prompt, max_images=15, force_single=True)
    assert (plan.count, plan.prompts, plan.source) == (1, [prompt], "force_single")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_images": 0},
        {"max_images": 3, "n_references": -1},
        {"max_images": 3, "sequential": "on"},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        plan_series(EXAMPLE, **kwargs)


def test_to_dict_is_json_ready_copy() -> None:
    plan = plan_series(EXAMPLE, max_images=3)
    d = plan.to_dict()
    assert d == {
        "count": 3,
        "prompts": [SUBJECT] * 3,
        "stated_count": 3,
        "cap": 3,
        "source": "prompt_count",
        "language": "en",
        "rewritten": False,
    }
    d["prompts"].append("x")
    assert len(plan.prompts) == 3


def test_rewrite_instruction_names_count_coherence_and_language() -> None:
    text = rewrite_instruction(plan_series(EXAMPLE, max_images=3))
    assert "exactly 3 prompts" in text and "coherent" in text and "Write in English" in text
    assert "exactly 1 prompt" in rewrite_instruction(plan_series("a cat", max_images=3))
    korean = rewrite_instruction(plan_series("등대 사진 4장을 만들어 줘", max_images=4))
    assert "Write in Korean" in korean and "do not translate" in korean and "quotation marks" in korean


def test_apply_rewrites() -> None:
    plan = plan_series(EXAMPLE, max_images=2)
    new = apply_rewrites(plan, [" a detailed sunset ", "Two images of another detailed sunset."])
    assert new.prompts == ["a detailed sunset", "another detailed sunset"]  # a count written back goes
    assert new.rewritten and new.count == 2 and new.source == plan.source


@pytest.mark.parametrize("rewritten", [[], ["only one"], ["a", "b", "c"], ["a", "  "], ["a", None]])
def test_apply_rewrites_falls_back(rewritten: list) -> None:
    plan = plan_series(EXAMPLE, max_images=2)
    assert apply_rewrites(plan, rewritten) is plan


def test_plan_is_frozen() -> None:
    plan = plan_series(EXAMPLE, max_images=3)
    assert isinstance(plan, SeriesPlan)
    with pytest.raises(AttributeError):
        plan.count = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Genera 3 immagini di un faro", "un faro"),
        ("등대 사진 4장을 만들어 줘", "등대 사진"),
        ("Gere quatro imagens de um barco", "um barco"),
        ("Erstelle zwei Bilder von einem Fuchs", "einem Fuchs"),
        ("生成3张日落的图片", "日落"),
        ("夕日の画像を3枚生成してください", "夕日"),
        (EXAMPLE, SUBJECT),
        ("a photo of 3 cats", "a photo of 3 cats"),
        ("Generate 3 images", "Generate 3 images"),  # nothing else to draw: kept whole
    ],
)
def test_strip_count(prompt: str, expected: str) -> None:
    assert strip_count(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "code"),
    [
        (EXAMPLE, "en"),
        ("Genera 3 immagini di un faro", "it"),
        ("Gere quatro imagens de um barco", "pt"),
        ("Erstelle zwei Bilder von einem Fuchs", "de"),
        ("등대 사진 4장을 만들어 줘", "ko"),
        ("生成3张日落的图片", "zh"),
        ("夕日の画像を3枚生成してください", "ja"),
        ("猫", "zh"),  # Han without kana reads as Chinese
        ("42", "en"),  # no words: English first
    ],
)
def test_detect_language(prompt: str, code: str) -> None:
    assert detect_language(prompt).code == code


def test_the_detected_languages_determiners_hold_for_other_tables() -> None:
    # Portuguese has the noun "foto" too, but the Italian "queste" names the inputs.
    assert find_count("Metti il cappello di queste 3 foto sull'uomo") is None


def test_beats_are_capped_in_order() -> None:
    plan = plan_series("a story in 4 images: waking, riding out, meeting a dragon, returning", max_images=2)
    assert (plan.count, plan.stated_count, plan.source) == (2, 4, "beats")
    assert plan.prompts == ["waking", "riding out"]


def test_beats_need_exactly_the_stated_number_of_items() -> None:
    plan = plan_series("Generate 3 images of a fox: red, sleek", max_images=15)
    assert (plan.count, plan.source) == (3, "prompt_count")
    assert plan.prompts == ["a fox: red, sleek"] * 3


def test_force_single_with_a_count_drops_the_instruction() -> None:
    plan = plan_series("4 photos of the girl on the boat", max_images=15, force_single=True)
    assert (plan.count, plan.prompts, plan.stated_count) == (1, ["photo of the girl on the boat"], 4)


def test_every_source_is_documented() -> None:
    assert set(SOURCES) == {"prompt_count", "shot_list", "beats", "none", "disabled", "force_single"}


@pytest.mark.parametrize("language", LANGUAGES, ids=lambda lang: lang.code)
def test_language_tables_are_consistent(language) -> None:
    assert by_code(language.code) is language
    assert language.script in {"latin", "hangul", "han"}
    assert language.forms and all("{num}" in form for form in language.forms)
    assert set(range(2, 11)) <= set(language.numbers.values())  # 2..10 as words at least
    assert language.generic < set(language.nouns) and language.generic
    assert all(noun == noun.lower() for noun in language.nouns)
    for pattern in (language.lead_in, language.tail, language.before, language.connector, language.after):
        if pattern:
            re.compile(pattern)
    assert find_count("") is None


def test_unknown_language_code_raises() -> None:
    with pytest.raises(KeyError, match="supported"):
        by_code("fr")
