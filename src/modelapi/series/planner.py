"""Series planning: how many images a request makes, and the prompt for each one.

Source: the seedream specs' field descriptions (``src/modelapi/catalog/specs/*.json``) and the
README's "How many images, and how they stay coherent". The prompt states the
number of images ("Generate 3 images of ...", "a series of four", a numbered list of shots);
``sequential_image_generation_options`` is only the cap (and the billed unit);
``sequential_image_generation="disabled"`` means one image; references + outputs <= 15.

The rules (which language, shot lists, count phrases, story beats, what is removed from the
per-image prompts) are numbered and documented, with their per-language data, in one place:
:mod:`modelapi.series.languages`. In short: a shot list gives one image per item; else the
first count phrase gives the count and every image gets the prompt without the request's
instruction ("Generate 3 images of a beautiful sunset over a calm ocean." -> "a beautiful
sunset over a calm ocean"), or one story beat each when a colon list of exactly N items
follows; no count -> one image, prompt unchanged.

The series varies through the per-image seed (``seed + i``) and stays coherent through
reference chaining in the engine. No " (image i of N)" suffix is added, because FLUX.2 tends to
render such text into the picture.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

from modelapi.catalog import SEQUENTIAL_MODES
from modelapi.series.languages import LANGUAGES, Language, by_code

MAX_TOTAL_IMAGES = 15
"""References + outputs per request, at most (as seedream upstream; the edit-sequential spec's
``sequential_image_generation_options`` description: the count "also depends on the number of reference images")."""

SOURCES = ("prompt_count", "shot_list", "beats", "none", "disabled", "force_single")
"""How a plan's count was found (:attr:`SeriesPlan.source`)."""


@dataclass(frozen=True)
class SeriesPlan:
    """How many images to make and the prompt for each.

    Attributes:
        count (`int`, >= 1): images to make.
        prompts (`list[str]`, len == count): one prompt per image, in output order, without
            the request's count instruction.
        stated_count (`int | None`): what the prompt asked for before any cap (items of a
            shot list, or the stated number); None when it names no count.
        cap (`int`, >= 1): ``max(1, min(max_images, 15 - n_references))``.
        source (`str`, one of :data:`SOURCES`): how ``count`` was found: ``"prompt_count"``,
            ``"shot_list"``, ``"beats"`` (a stated count with a colon list of that many story
            beats), ``"none"`` (no count in the prompt), ``"disabled"``
            (sequential_image_generation) or ``"force_single"`` (dreamina).
        language (`str`): ISO 639-1 code of the rules that read the prompt (``"en"``,
            ``"it"``, ``"pt"``, ``"de"``, ``"ko"``, ``"zh"``, ``"ja"``).
        rewritten (`bool`): the prompts come from an LLM rewrite (:func:`apply_rewrites`).
    """

    count: int
    prompts: list[str] = field(hash=False)
    stated_count: int | None
    cap: int
    source: str
    language: str
    rewritten: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The plan for result metadata (JSON-ready, a fresh copy)."""
        return asdict(self)


@dataclass(frozen=True)
class CountPhrase:
    """A count phrase found in a prompt (rule 3 of :mod:`modelapi.series.languages`).

    Attributes:
        start, end (`int`): the phrase's span in the prompt (characters).
        count (`int`, >= 0): the number it states.
        language (:class:`~modelapi.series.languages.Language`): the table that matched.
        noun (`str | None`): the image noun as written, None when the phrase has none.
        noun_span (`tuple[int, int] | None`): where ``noun`` is in the prompt.
        modifier (`str | None`): an English modifier before the noun (``"cinematic"``).
    """

    start: int
    end: int
    count: int
    language: Language
    noun: str | None = None
    noun_span: tuple[int, int] | None = None
    modifier: str | None = None


def plan_series(
    prompt: str,
    *,
    max_images: int,
    n_references: int = 0,
    sequential: str = "auto",
    force_single: bool = False,
) -> SeriesPlan:
    """Plan the series for one request (rules: :mod:`modelapi.series.languages`).

    Args:
        prompt (`str`): the user's prompt.
        max_images (`int`, >= 1): the request's cap (``sequential_image_generation_options``;
            15 for endpoints without one).
        n_references (`int`, >= 0): reference images sent with the request.
        sequential (`str`, default ``"auto"``): ``"auto"`` or ``"disabled"`` (one image).
        force_single (`bool`, default False): exactly one image (dreamina).

    Returns:
        SeriesPlan with ``count = min(max(stated, 1), cap)``; 1 when no count is stated,
        when disabled, or when forced single (then the one prompt is the prompt without its
        count phrase, or the whole prompt for shot lists, stories and prompts with no count).

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
    phrase = None if items else find_count(prompt)
    language = phrase.language.code if phrase else detect_language(prompt).code
    if items:
        stated, per_image, source = len(items), items, "shot_list"
    elif phrase is None:
        stated, per_image, source = None, [prompt], "none"
    else:
        stated = phrase.count
        beats = story_beats(prompt, phrase) if stated >= 2 else []
        if beats:
            per_image, source = beats, "beats"
        else:
            per_image, source = [_without(prompt, phrase)], "prompt_count"

    if force_single or sequential == "disabled":
        single = per_image[0] if source == "prompt_count" else prompt
        why = "force_single" if force_single else "disabled"
        return SeriesPlan(1, [single], stated, cap, why, language)
    if source == "prompt_count":
        assert stated is not None  # "prompt_count" is set only with a stated count
        count = min(max(stated, 1), cap)
        return SeriesPlan(count, per_image * count, stated, cap, source, language)
    count = min(len(per_image), cap)
    return SeriesPlan(count, per_image[:count], stated, cap, source, language)


# -- rule 1: language ----------------------------------------------------------------------------

_HANGUL_RE = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_KANA_RE = re.compile(r"[\u3040-\u30ff]")
_HAN_RE = re.compile(r"[\u4e00-\u9fff]")
_WORD_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")


def detect_language(prompt: str) -> Language:
    """The language whose rules read ``prompt`` first (rule 1 of :mod:`~modelapi.series.languages`).

    Hangul -> Korean; kana -> Japanese; other Han characters -> Chinese; else the Latin
    language with the most words of its :attr:`~modelapi.series.languages.Language.vocabulary`
    (ties, and no hits: English first, then Italian, Portuguese, German).
    """
    if _HANGUL_RE.search(prompt):
        return by_code("ko")
    if _KANA_RE.search(prompt):
        return by_code("ja")
    if _HAN_RE.search(prompt):
        return by_code("zh")
    words = [w.lower() for w in _WORD_RE.findall(prompt)]
    latin = [lang for lang in LANGUAGES if lang.script == "latin"]
    return max(latin, key=lambda lang: sum(w in lang.vocabulary for w in words))


# -- rule 3: count phrases -----------------------------------------------------------------------

def _alternation(words: Any) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


def _number_pattern(lang: Language) -> str:
    words = _alternation(lang.numbers)
    if lang.script == "latin":
        return rf"(?<![\w.,:/×])(?P<num>\d{{1,3}}|{words})(?![\w:/×]|[.,]\d)"
    if lang.script == "hangul":
        return rf"(?P<num>(?<![\d.,:/×])\d{{1,3}}(?![\d.,:/×])|(?<![가-힣])(?:{words}))"
    return (
        rf"(?P<num>(?<![\d.,:/×A-Za-z])\d{{1,3}}(?![\d.,:/×])"
        rf"|(?<![{lang.numeral_chars}])(?:{words})(?![{lang.numeral_chars}]))"
    )


def _fragments(lang: Language) -> dict[str, str]:
    word_end = r"(?!\w)" if lang.script == "latin" else ""
    plural = [f for f, singular in lang.nouns.items() if f.lower() != singular.lower()]
    return {
        "num": _number_pattern(lang),
        "noun": rf"(?P<noun>{_alternation(lang.nouns)}){word_end}",
        "pnoun": rf"(?P<noun>{_alternation(plural)}){word_end}",
        "mod": r"(?P<mod>[^\W\d_][\w'’-]*)",
        "smod": rf"(?:{_alternation(lang.series_modifiers)}){word_end}" if lang.series_modifiers else "(?!)",
        "counter": rf"(?:{_alternation(lang.counters)})" if lang.counters else "(?!)",
        "ncounter": rf"(?:{_alternation(lang.noun_counters)})" if lang.noun_counters else "(?!)",
        "anycounter": rf"(?:{_alternation(lang.counters + lang.noun_counters)})"
        if lang.counters + lang.noun_counters
        else "(?!)",
        "group": rf"(?:{_alternation(lang.groups)}){word_end}" if lang.groups else "(?!)",
        "verb": rf"(?:{_alternation(lang.verbs)})" if lang.verbs else "(?!)",
        "follow": lang.follow or "(?!)",
        "part": lang.particles or "(?!)",
    }


@lru_cache(maxsize=None)
def _forms(code: str) -> tuple[re.Pattern[str], ...]:
    lang = by_code(code)
    fragments = _fragments(lang)

    def fill(match: re.Match[str]) -> str:
        return fragments.get(match[1], match[0])  # "{1,3}" and such stay regex quantifiers

    return tuple(re.compile(re.sub(r"\{(\w+)\}", fill, form), re.IGNORECASE) for form in lang.forms)


def _after_determiner(langs: tuple[Language, ...], before: str) -> bool:
    """The text ``before`` a count phrase ends with a determiner of one of ``langs`` (the
    matching table and the prompt's detected language)."""
    before = before.rstrip()
    if all(lang.script == "han" for lang in langs):
        return before.endswith(tuple(d for lang in langs for d in lang.determiners))
    words = before.split()
    if not words:
        return False
    last = re.sub(r"^\W+", "", words[-1]).lower()
    return any(last in {d.lower() for d in lang.determiners} for lang in langs)


def _to_int(lang: Language, num: str) -> int:
    num = num.strip()
    if num.isdigit():
        return int(num)
    return lang.numbers[next(w for w in lang.numbers if w.lower() == num.lower())]


def _find_in(lang: Language, prompt: str, detected: Language) -> CountPhrase | None:
    found: list[CountPhrase] = []
    for form in _forms(lang.code):
        for m in form.finditer(prompt):
            if _after_determiner((lang, detected), prompt[: m.start()]):
                continue
            groups = m.groupdict()
            noun = groups.get("noun")
            found.append(
                CountPhrase(
                    start=m.start(),
                    end=m.end(),
                    count=_to_int(lang, m["num"]),
                    language=lang,
                    noun=noun,
                    noun_span=m.span("noun") if noun else None,
                    modifier=groups.get("mod"),
                )
            )
    return min(found, key=lambda c: (c.start, c.start - c.end), default=None)


def find_count(prompt: str) -> CountPhrase | None:
    """The first count phrase of ``prompt`` (rule 3), in the detected language's rules first,
    then in the others' (rule 1; the detected language's determiners hold for all); None when
    it states no count."""
    first = detect_language(prompt)
    for lang in (first, *(lang for lang in LANGUAGES if lang is not first)):
        phrase = _find_in(lang, prompt, first)
        if phrase is not None:
            return phrase
    return None


def stated_count(prompt: str) -> int | None:
    """The image count a prompt states (rule 3), or None."""
    phrase = find_count(prompt)
    return None if phrase is None else phrase.count


# -- rules 5 and 6: removing the instruction -----------------------------------------------------

_BOUNDARY_RE = re.compile(r"[.!?](?!\d)|[。！？\n]")
_TERMINATORS = ".!?。！？"


def _spaced(lang: Language) -> bool:
    return lang.script in ("latin", "hangul")


def _concat(left: str, middle: str, right: str, lang: Language) -> tuple[str, int]:
    """``left + middle + right`` with one space between words where the language spaces
    them; returns the text and where ``middle`` starts."""
    if lang.script == "latin" and middle:
        left = left.rstrip() + " " if left.strip() else ""
        if right[:1].isalnum():
            right = " " + right
    elif _spaced(lang) and not middle:
        if left.strip() and right.strip() and not left[-1:].isspace() and not right[:1].isspace():
            right = " " + right
    return left + middle + right, len(left)


def _remove_phrase(prompt: str, phrase: CountPhrase) -> tuple[str, int]:
    """Rule 5: the prompt with the count phrase removed (or reduced to its content noun), and
    the position of the edit."""
    lang = phrase.language
    left, right = prompt[: phrase.start], prompt[phrase.end :]
    keep = ""
    if phrase.modifier and phrase.noun:
        keep = f"{phrase.modifier} {lang.singular(phrase.noun)}"
    elif phrase.noun is not None and not lang.is_generic(phrase.noun):
        keep = lang.singular(phrase.noun)
    else:
        connector = re.match(rf"(?:{lang.connector})\s*", right, re.IGNORECASE) if lang.connector else None
        post_adjective = (
            lang.adjectives_after
            and phrase.noun is not None
            and connector is None
            and re.match(r"\s+[^\W\d_]", right) is not None
        )
        glue = re.search(rf"(?:{lang.before})$", left, re.IGNORECASE) if lang.before else None
        if post_adjective and phrase.noun is not None:  # "3 immagini realistiche di ...": the noun stays as written
            keep = phrase.noun
        elif connector is not None and glue is not None and re.search(r"[^\W\d_]", glue[0]):
            # "una storia in 3 vignette su un robot": the preposition before goes, the one
            # after stays ("una storia su un robot")
            left = left[: glue.start()]
        elif connector is not None:
            article = connector.groupdict().get("art")
            article = lang.articles.get(article.lower(), article) if article else ""
            right = (article + " " if article else "") + right[connector.end() :]
            if not _spaced(lang):
                right = right.lstrip()
        elif glue is not None:
            left = left[: glue.start()]
    ends_with_noun = phrase.noun_span is not None and phrase.noun_span[1] == phrase.end
    if lang.after and not (keep and ends_with_noun):  # "만화로" keeps its particle
        right = re.sub(rf"^(?:{lang.after})", "", right, flags=re.IGNORECASE)
    return _concat(left, keep, right, lang)


def _clause(text: str, pos: int) -> tuple[int, int]:
    starts = [m.end() for m in _BOUNDARY_RE.finditer(text, 0, pos)]
    end = _BOUNDARY_RE.search(text, pos)
    return (starts[-1] if starts else 0), (end.start() if end else len(text))


def _strip_lead_in(lang: Language, clause: str) -> str:
    if not lang.lead_in:
        return clause
    stop = r"(?:\s+|(?=[,:;，：、])|$)" if _spaced(lang) else ""
    pattern = re.compile(rf"\s*(?:{lang.lead_in}){stop}", re.IGNORECASE)
    while (m := pattern.match(clause)) and m.end() > 0:
        clause = clause[m.end() :]
    return clause


def _strip_tail(lang: Language, clause: str) -> str:
    if not lang.tail:
        return clause
    return re.sub(rf"(?:{lang.tail})[\s{_TERMINATORS}~]*$", "", clause, flags=re.IGNORECASE)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?，。；：！？、])", r"\1", text)
    text = re.sub(r"[,;:，；：、]+\s*(?=[,;:.!?，；：、。！？])", "", text)
    text = re.sub(r"([.!?。！？])(?:\s*[.!?。！？])+", r"\1", text)
    text = re.sub(r"^[\s,;:.!?\-–—，；：、。！？]+", "", text)
    text = re.sub(r"[\s,;:\-–—，；：、]+$", "", text)
    return text


def _remove_instruction(prompt: str, phrase: CountPhrase) -> str:
    """Rules 5-6: ``prompt`` without the count phrase and its clause's instruction, tidied;
    may be empty."""
    lang = phrase.language
    text, pos = _remove_phrase(prompt, phrase)
    start, end = _clause(text, pos)
    clause = _strip_tail(lang, _strip_lead_in(lang, text[start:end]))
    if lang.subject_tail and phrase.noun is None:
        clause = re.sub(rf"(?:{lang.subject_tail})\s*$", "", clause.rstrip())
    return _tidy(text[:start] + clause + text[end:])


def _without(prompt: str, phrase: CountPhrase) -> str:
    """:func:`_remove_instruction` less one final ``. ! ? 。``; the prompt unchanged when
    nothing would be left."""
    text = _remove_instruction(prompt, phrase)
    if text[-1:] in _TERMINATORS:
        text = text[:-1].rstrip()
    return text if re.search(r"[^\W\d_]", text) else prompt.strip()


def strip_count(prompt: str) -> str:
    """``prompt`` without its count instruction (rules 5-6 of :mod:`~modelapi.series.languages`):
    ``"Generate 3 images of a beautiful sunset over a calm ocean."`` -> ``"a beautiful sunset
    over a calm ocean"``; unchanged when it states no count."""
    phrase = find_count(prompt)
    return prompt if phrase is None else _without(prompt, phrase)


# -- rule 4: story beats -------------------------------------------------------------------------

_COLON_RE = re.compile(r"[:：]")
_LIST_END_RE = re.compile(r"(?<=[.!?。！？])\s*(?=\S)|\n\s*\n")


def _strip_story(lang: Language, subject: str) -> str:
    if lang.story_prefix:
        stop = r"(?:\s+|$)" if _spaced(lang) else ""
        subject = re.sub(rf"^\s*(?:{lang.story_prefix}){stop}", "", subject, flags=re.IGNORECASE)
    if lang.story_suffix:
        subject = re.sub(rf"(?:{lang.story_suffix})\s*$", "", subject, flags=re.IGNORECASE)
    return subject.strip()


def _split_beats(text: str, n: int, lang: Language) -> list[str]:
    conj = _alternation(lang.conjunctions)
    if _spaced(lang):
        lead = rf"^(?:(?:{conj})\s+)+" if conj else r"^$"
        articles = _alternation(lang.article_words)
        # a bare conjunction splits only before an article: "a beach and a forest"
        bare = rf"\s+(?:{conj})\s+(?=(?:{articles})\b|l['’])" if conj and articles else r"(?!)"
    else:
        lead = rf"^(?:{conj})+" if conj else r"^$"
        bare = rf"(?:{conj})" if conj else r"(?!)"
    candidates = (r"\s*(?:\n|[;；])\s*", r"\s*[,，、;；\n]\s*", rf"\s*[,，、;；\n]\s*|{bare}")
    for separator in candidates:
        parts = [re.sub(lead, "", p.strip(), flags=re.IGNORECASE) for p in re.split(separator, text, flags=re.IGNORECASE)]
        parts = [p for p in (_tidy(p) for p in parts) if p]
        if len(parts) == n:
            return parts
    return []


def story_beats(prompt: str, phrase: CountPhrase) -> list[str]:
    """Rule 4: one prompt per beat when ``phrase``'s clause goes on with a colon and a list of
    exactly ``phrase.count`` items; ``[]`` otherwise."""
    lang = phrase.language
    _, clause_end = _clause(prompt, phrase.end)
    colon = _COLON_RE.search(prompt, phrase.end, clause_end)
    if colon is None:
        return []
    rest = prompt[colon.end() :]
    end = _LIST_END_RE.search(rest)
    listed, post = (rest[: end.start()], rest[end.end() :]) if end else (rest, "")
    terminator = listed.rstrip()[-1:] if listed.rstrip()[-1:] in _TERMINATORS else ""
    listed = listed.rstrip().rstrip(_TERMINATORS)
    beats = _split_beats(listed, phrase.count, lang)
    if not beats:
        return []
    subject = _remove_instruction(prompt[: colon.start()], phrase)
    subject = _strip_story(lang, _strip_tail(lang, subject))
    if not re.search(r"[^\W\d_]", subject) or _is_bare(lang, subject):
        subject = ""
    post = _tidy(post)
    out = []
    for beat in beats:
        parts = [f"{subject}{colon[0]}" if subject else "", beat]
        if post:
            parts[-1] = beat + (terminator or ("." if _spaced(lang) else "。"))
            parts.append(post)
        out.append(_join(*parts))
    return out


# -- rule 2: shot lists --------------------------------------------------------------------------


def _circled(ch: str) -> int:
    return ord(ch) - 0x2460 + 1


@lru_cache(maxsize=1)
def _numbered_re() -> re.Pattern[str]:
    latin_labels = _alternation(l for lang in LANGUAGES if lang.script == "latin" for l in lang.list_labels)
    cjk_labels = _alternation(l for lang in LANGUAGES if lang.script != "latin" for l in lang.list_labels)
    suffixes = _alternation(s for lang in LANGUAGES for s in lang.list_suffixes)
    references = "".join(
        f"(?<!{re.escape(noun)} )" for lang in LANGUAGES for noun in lang.reference_nouns
    )
    start = r"(?:^|(?<=\s)|(?<=[：:；;，,。、]))"
    ordinals = _alternation(lang.list_ordinal for lang in LANGUAGES if lang.list_ordinal)
    ordinal_numerals = _alternation(_ordinal_numbers())
    ordinal_counters = _alternation(c for lang in LANGUAGES for c in lang.list_ordinal_counters)
    return re.compile(
        rf"{start}{references}(?P<n1>\d{{1,2}})(?:[.)]\s+|[）．、]\s*)"
        rf"|{start}[(（](?P<n2>\d{{1,2}})[)）]\s*"
        r"|(?P<n3>[\u2460-\u2473])\s*"
        rf"|\b(?:{latin_labels})\s+(?P<n4>\d{{1,2}})\s*(?:[.)](?=\s)|[:：])\s*"
        rf"|(?:{cjk_labels})\s*(?P<n5>\d{{1,2}})\s*[.)）:：]\s*"
        rf"|(?:{ordinals})(?P<n6>\d{{1,2}}|{ordinal_numerals})\s*(?:{ordinal_counters})?\s*[：:、.．]\s*"
        rf"|{start}(?P<n7>\d{{1,2}})\s*(?:{suffixes})\s*[：:.)）]\s*",
        re.IGNORECASE,
    )


@lru_cache(maxsize=1)
def _ordinal_numbers() -> dict[str, int]:
    """The number words an ordinal item number may be written with (rule 2): those of the
    tables that have a :attr:`~modelapi.series.languages.Language.list_ordinal`."""
    return {word: value for lang in LANGUAGES if lang.list_ordinal for word, value in lang.numbers.items()}


def _marker_number(m: re.Match[str]) -> int:
    if m["n3"]:
        return _circled(m["n3"])
    value = next(v for k, v in m.groupdict().items() if v and k != "n3")
    return int(value) if value.isdigit() else _ordinal_numbers()[value]


_BULLET_RE = re.compile(r"^[ \t]*(?:[-*•–][ \t]+|[・●■▪◦][ \t]*)", re.MULTILINE)
_BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")
_ITEM_TAIL_RE = re.compile(
    r"[\s,;，；、]*(?:\b(?:"
    + _alternation(w for lang in LANGUAGES if lang.script == "latin" for w in lang.item_conjunctions)
    + r")\b|"
    + _alternation(w for lang in LANGUAGES if lang.script != "latin" for w in lang.item_conjunctions)
    + r")?[\s,;，；、]*$",
    re.IGNORECASE,
)
_SPACED_BARE_WORDS = frozenset(w.lower() for lang in LANGUAGES if _spaced(lang) for w in lang.bare_words)
_UNSPACED_BARE_WORDS = "|".join(re.escape(w) for lang in LANGUAGES if not _spaced(lang) for w in lang.bare_words)


def _is_bare(lang: Language, text: str) -> bool:
    """The text is only an instruction's leftovers (articles, group words, image nouns)."""
    text = text.strip().rstrip(":：")
    if not _spaced(lang):
        rest = re.sub(rf"{_alternation([*lang.groups, *lang.nouns])}|{_UNSPACED_BARE_WORDS}", "", text)
        return not re.search(r"\w", rest)
    words = {w.lower() for w in _WORD_RE.findall(text)}
    known = _SPACED_BARE_WORDS | {w.lower() for w in (*lang.groups, *lang.nouns, *lang.series_modifiers)}
    return words <= known


def _clean_preamble(preamble: str) -> str:
    """A shot list's preamble without its instruction (rules 5-6), story wrapper (rule 4) and
    lead-in words; ``""`` when nothing but the instruction is left. Keeps a final colon."""
    if not preamble.strip():
        return ""
    colon = re.search(r"[:：]\s*$", preamble)
    body = preamble[: colon.start()] if colon else preamble
    phrase = find_count(body)
    lang = phrase.language if phrase else detect_language(body)
    text = _remove_instruction(body, phrase) if phrase else body
    clean = _strip_story(lang, _strip_tail(lang, _tidy(_strip_lead_in(lang, text))))
    if not re.search(r"[^\W\d_]", clean) or _is_bare(lang, clean):
        return ""
    return clean + (colon[0].strip() if colon else "")


def shot_list(prompt: str) -> list[str]:
    """Per-image prompts from a numbered or bulleted list of >= 2 items (rule 2), else ``[]``.

    Each prompt is ``preamble + " " + item (+ " " + postscript)``, whitespace-collapsed; the
    preamble loses the request's instruction (``"Generate 4 images:"`` is dropped).
    """
    starts: list[tuple[int, int]] = []  # (marker start, item start)
    expect = 1
    for m in _numbered_re().finditer(prompt):
        if _marker_number(m) == expect:
            starts.append((m.start(), m.end()))
            expect += 1
    if len(starts) < 2:
        starts = [(m.start(), m.end()) for m in _BULLET_RE.finditer(prompt)]
    if len(starts) < 2:
        return []
    preamble = _clean_preamble(prompt[: starts[0][0]])
    bodies = [prompt[a:b] for (_, a), (b, _) in zip(starts, starts[1:])]
    tail = _BLANK_LINE_RE.split(prompt[starts[-1][1] :], maxsplit=1)
    bodies.append(tail[0])
    postscript = tail[1] if len(tail) > 1 else ""
    return [_join(preamble, _ITEM_TAIL_RE.sub("", body), postscript) for body in bodies]


# -- rewriting (optimize_prompt_options="standard") ----------------------------------------------


def rewrite_instruction(plan: SeriesPlan) -> str:
    """The instruction handed with ``plan.prompts`` to an LLM rewriter
    (``optimize_prompt_options="standard"``; see ``Engine.rewrite_prompts``).

    The rewrite stays in the prompt's own language (``plan.language``), not English: FLUX.2's
    text encoders are multilingual and Black Forest Labs documents FLUX prompting in many
    languages at the same quality ("Multilingual Prompting", docs.bfl.ai prompting basics);
    translating with a small language model is where names, wording to be rendered as text and
    culture-specific terms get lost; and the user can read the plan. Quoted text is kept
    verbatim, as BFL's guide asks for text to be drawn.
    """
    n = plan.count
    what = "this image prompt" if n == 1 else f"each of these {n} image prompts"
    series = (
        ""
        if n == 1
        else " The images form one coherent series: keep the same characters, objects, style, "
        "palette and lighting across all of them, while keeping what each prompt asks for."
    )
    name = by_code(plan.language).name
    return (
        f"Rewrite {what} into a more detailed text-to-image prompt: name the subject, setting, "
        f"composition, lighting, style and camera.{series} Write in {name}, the language of "
        "the input; do not translate, and keep text in quotation marks exactly as written. "
        f"Do not mention image counts, numbering or panels. Return exactly {n} "
        f"prompt{'s' if n != 1 else ''}, in the same order, one per input prompt."
    )


def apply_rewrites(plan: SeriesPlan, rewritten: list[str]) -> SeriesPlan:
    """``plan`` with LLM-rewritten prompts, each without any count phrase the model wrote
    back into it (:func:`strip_count`).

    Falls back to the rule-based prompts (returns ``plan`` unchanged, ``rewritten=False``)
    when ``rewritten`` does not hold exactly ``plan.count`` non-blank strings.
    """
    if len(rewritten) != plan.count or not all(isinstance(p, str) and p.strip() for p in rewritten):
        return plan
    return replace(plan, prompts=[strip_count(p.strip()) for p in rewritten], rewritten=True)


# -- helpers -------------------------------------------------------------------------------------

_CJK_RE = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u4e00-\u9fff\uff00-\uffef]")


def _join(*parts: str) -> str:
    """Whitespace-collapsed parts joined by one space (none between CJK characters)."""
    out = ""
    for part in (" ".join(p.split()) for p in parts if p.strip()):
        if out and not (_CJK_RE.match(out[-1]) and _CJK_RE.match(part[0])):
            out += " "
        out += part
    return out
