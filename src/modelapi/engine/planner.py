"""Series planning: how many images a request makes, and the prompt for each one.

Source: API.md "Semantics" and the seedream specs' field descriptions. The prompt states the
number of images ("Generate 3 images of ...", "a series of four", a numbered list of shots);
``sequential_image_generation_options`` is only the cap (and the billed unit);
``sequential_image_generation="disabled"`` means one image; references + outputs <= 15.

Count rules (case-insensitive). A shot list (rule 1) wins; otherwise the first of rules 2
and 3 in reading order gives ``stated_count``:

1. A shot list of >= 2 items, numbered 1, 2, 3, ... in order (``"1. "``, ``"2) "``, or
   labelled ``"Shot 1:"`` / ``"Panel 2."`` / ``"Scene 3)"``; on their own lines or inline;
   not ``"image 1."``, which names a reference) or bulleted at line start (``"- "``, ``"* "``,
   ``"• "``). Each item becomes one image with its own prompt:
   ``preamble + " " + item (+ " " + postscript)``; the preamble is the text before the first
   item, the postscript the text after a blank line that follows the last item; trailing
   ``,`` / ``;`` / ``and`` are dropped from items. ``stated_count`` = the number of items.
2. A number attached to an image noun (:data:`IMAGE_NOUNS`): digits or ``zero``..``twenty``,
   directly (``"3 images"``, ``"4 panel comic"``, ``"6-panel"``, ``"one image"``) or through
   one modifier word before a plural noun (``"3 cinematic shots"``; ``"a 3 cats poster"`` is
   not a count). A number for anything else does not count: ``"a photo of 3 cats"`` names no
   count, ``"Generate 3 images of 2 dogs"`` names 3. A number after a determiner
   (``"the 2 images"``, ``"these 3 photos"``) refers to the inputs and does not count.
3. ``"series|sequence|storyboard|set|collection|grid|batch of N"``, unless N is followed by a
   plural word that is not an image noun (``"a set of 3 cups"`` does not count).

No count -> one image. Without a shot list every image gets the user's prompt unchanged: the
series varies through the per-image seed (``seed + i``) and stays coherent through reference
chaining in the engine. No " (image i of N)" suffix is added, because FLUX.2 tends to render
such text into the picture.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from modelapi.catalog import SEQUENTIAL_MODES

MAX_TOTAL_IMAGES = 15
"""References + outputs per request, at most (API.md "Semantics"; seedream upstream)."""


_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
NUMBER_WORDS: dict[str, int] = {w: i for i, w in enumerate(_NUMBER_WORDS)}
"""English number words understood in prompts, ``"zero"``..``"twenty"``."""

IMAGE_NOUNS = (
    "image picture pic photo photograph shot frame panel scene variation variant view version "
    "illustration render rendering poster drawing painting portrait sketch artwork design "
    "wallpaper still slide page angle output headshot selfie icon logo thumbnail cover"
).split()
"""Nouns that make a number an image count (singular; plurals add ``s`` or ``es``)."""

_NUM = (
    r"(?<![\d:.,x×/])\b(?P<num>\d+|"
    + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
    + r")\b"
)
_NOUN = "(?:" + "|".join(IMAGE_NOUNS) + ")"
# "3 images", "six-panel", "one image" | "3 cinematic shots" (one modifier, plural noun only).
_COUNT_RE = re.compile(
    rf"{_NUM}(?:[\s-]+{_NOUN}(?:e?s)?\b|[\s-]+[a-z'-]+\s+{_NOUN}e?s\b)", re.IGNORECASE
)
# "a series of four", "a storyboard of 6 ..."; the word after N is checked in code.
_GROUP_RE = re.compile(
    rf"\b(?:series|sequence|storyboard|set|collection|grid|batch)\s+of\s+{_NUM}"
    r"(?:\s+(?P<next>[a-z'-]+))?",
    re.IGNORECASE,
)
_IMAGE_NOUN_RE = re.compile(rf"{_NOUN}(?:e?s)?", re.IGNORECASE)
_DETERMINERS = frozenset("the these those both all my your our their its his her".split())
# "1. " / "2) " (not after "image "/"picture "/"photo ", which name references) | "Shot 3: ".
_NUMBERED_RE = re.compile(
    r"(?:(?:^|(?<=\s))(?<!image )(?<!picture )(?<!photo )(?P<n>\d{1,2})[.)]"
    r"|\b(?:shot|panel|scene)\s+(?P<label_n>\d{1,2})\s*[.):])\s+",
    re.IGNORECASE,
)
_BULLET_RE = re.compile(r"^[ \t]*[-*•][ \t]+", re.MULTILINE)
_BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")
_ITEM_TAIL_RE = re.compile(r"[\s,;]*(?:\band\b)?[\s,;]*$", re.IGNORECASE)


@dataclass(frozen=True)
class SeriesPlan:
    """How many images to make and the prompt for each.

    Attributes:
        count (`int`, >= 1): images to make.
        prompts (`list[str]`, len == count): one prompt per image, in output order.
        stated_count (`int | None`): what the prompt asked for before any cap (items of a
            shot list, or the stated number); None when it names no count.
        cap (`int`, >= 1): ``max(1, min(max_images, 15 - n_references))``.
        source (`str`): how ``count`` was found: ``"prompt_count"``, ``"shot_list"``,
            ``"none"`` (no count in the prompt), ``"disabled"`` (sequential_image_generation)
            or ``"force_single"`` (dreamina).
        rewritten (`bool`): the prompts come from an LLM rewrite (:func:`apply_rewrites`).
    """

    count: int
    prompts: list[str] = field(hash=False)
    stated_count: int | None
    cap: int
    source: str
    rewritten: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The plan for result metadata (JSON-ready, a fresh copy)."""
        return asdict(self)


def plan_series(
    prompt: str,
    *,
    max_images: int,
    n_references: int = 0,
    sequential: str = "auto",
    force_single: bool = False,
) -> SeriesPlan:
    """Plan the series for one request (count rules: see the module docstring).

    Args:
        prompt (`str`): the user's prompt.
        max_images (`int`, >= 1): the request's cap (``sequential_image_generation_options``;
            15 for endpoints without one).
        n_references (`int`, >= 0): reference images sent with the request.
        sequential (`str`, default ``"auto"``): ``"auto"`` or ``"disabled"`` (one image).
        force_single (`bool`, default False): exactly one image (dreamina).

    Returns:
        SeriesPlan with ``count = min(max(stated, 1), cap)``; 1 when no count is stated,
        when disabled, or when forced single (then the one prompt is the user's prompt).

    Raises:
        ValueError: ``max_images`` < 1, ``n_references`` < 0, or ``sequential`` is not one
            of :data:`SEQUENTIAL_MODES`.
    """
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images!r}")
    if n_references < 0:
        raise ValueError(f"n_references must be >= 0, got {n_references!r}")
    if sequential not in SEQUENTIAL_MODES:
        raise ValueError(
            f"sequential_image_generation must be one of {SEQUENTIAL_MODES}, got {sequential!r}"
        )
    cap = max(1, min(max_images, MAX_TOTAL_IMAGES - n_references))

    items = shot_list(prompt)
    stated = len(items) if items else stated_count(prompt)
    if force_single or sequential == "disabled":
        source = "force_single" if force_single else "disabled"
        return SeriesPlan(1, [prompt], stated, cap, source)
    if items:
        count = min(len(items), cap)
        return SeriesPlan(count, items[:count], stated, cap, "shot_list")
    if stated is None:
        return SeriesPlan(1, [prompt], None, cap, "none")
    count = min(max(stated, 1), cap)
    return SeriesPlan(count, [prompt] * count, stated, cap, "prompt_count")


def stated_count(prompt: str) -> int | None:
    """The image count a prompt states (rules 2 and 3 of the module docstring), or None."""
    found: list[tuple[int, int]] = []  # (position, count)
    for m in _COUNT_RE.finditer(prompt):
        before = prompt[: m.start()].split()
        if not (before and before[-1].lower() in _DETERMINERS):
            found.append((m.start(), _to_int(m["num"])))
    for m in _GROUP_RE.finditer(prompt):
        nxt = (m["next"] or "").lower()
        if not (nxt.endswith("s") and not _IMAGE_NOUN_RE.fullmatch(nxt)):
            found.append((m.start(), _to_int(m["num"])))
    return min(found)[1] if found else None


def shot_list(prompt: str) -> list[str]:
    """Per-image prompts from a numbered or bulleted list of >= 2 items, else ``[]``.

    Each prompt is ``preamble + " " + item (+ " " + postscript)``, whitespace-collapsed.
    """
    starts: list[tuple[int, int]] = []  # (marker start, item start)
    expect = 1
    for m in _NUMBERED_RE.finditer(prompt):
        if int(m["n"] or m["label_n"]) == expect:
            starts.append((m.start(), m.end()))
            expect += 1
    if len(starts) < 2:
        starts = [(m.start(), m.end()) for m in _BULLET_RE.finditer(prompt)]
    if len(starts) < 2:
        return []
    preamble = prompt[: starts[0][0]]
    bodies = [prompt[a:b] for (_, a), (b, _) in zip(starts, starts[1:])]
    tail = _BLANK_LINE_RE.split(prompt[starts[-1][1] :], maxsplit=1)
    bodies.append(tail[0])
    postscript = tail[1] if len(tail) > 1 else ""
    return [_join(preamble, _ITEM_TAIL_RE.sub("", body), postscript) for body in bodies]


def rewrite_instruction(plan: SeriesPlan) -> str:
    """The instruction handed with ``plan.prompts`` to an LLM rewriter
    (``optimize_prompt_options="standard"``; see ``Engine.rewrite_prompts``)."""
    n = plan.count
    what = "this image prompt" if n == 1 else f"each of these {n} image prompts"
    series = (
        ""
        if n == 1
        else " The images form one coherent series: keep the same characters, objects, style, "
        "palette and lighting across all of them, while keeping what each prompt asks for."
    )
    return (
        f"Rewrite {what} into a more detailed text-to-image prompt: name the subject, setting, "
        f"composition, lighting, style and camera.{series} Do not mention image counts, "
        f"numbering or panels. Return exactly {n} prompt{'s' if n != 1 else ''}, in the same "
        "order, one per input prompt."
    )


def apply_rewrites(plan: SeriesPlan, rewritten: list[str]) -> SeriesPlan:
    """``plan`` with LLM-rewritten prompts.

    Falls back to the rule-based prompts (returns ``plan`` unchanged, ``rewritten=False``)
    when ``rewritten`` does not hold exactly ``plan.count`` non-blank strings.
    """
    if len(rewritten) != plan.count or not all(isinstance(p, str) and p.strip() for p in rewritten):
        return plan
    return replace(plan, prompts=[p.strip() for p in rewritten], rewritten=True)


def _to_int(num: str) -> int:
    return int(num) if num.isdigit() else NUMBER_WORDS[num.lower()]


def _join(*parts: str) -> str:
    return " ".join(" ".join(p.split()) for p in parts if p.strip())
