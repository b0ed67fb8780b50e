"""Per-language rules for reading a prompt's image count: the one place where they are written down.

The planner (:mod:`modelapi.series.planner`) applies the numbered rules below with one
:class:`Language` table per language: English, Italian, Portuguese and German (the languages
the hosted documentation is published in, besides Korean), Korean, Chinese and Japanese
(which Seedream's own users write). To support a phrasing, extend a table and add a line to
``tests/series/prompt_corpus.toml``; the rules themselves rarely need to change.

Rules (case-insensitive; a "clause" ends at ``. ! ? 。 ！ ？`` or a line break):

1. **Language.** A prompt with Hangul is Korean, with kana Japanese, with other Han characters
   Chinese; a Latin prompt takes the language whose :attr:`Language.vocabulary` (function
   words, numbers, nouns, verbs) it uses most (ties: en, it, pt, de). That language's table is
   tried first; the others follow, so a mixed prompt still counts. The plan names the language
   whose table found the count (or the detected one).
2. **Shot lists.** Items numbered 1, 2, 3, ... in order (``"1. "``, ``"2) "``, ``"3、"``,
   ``"(4)"``, ``"①"``, a label from :attr:`Language.list_labels` such as ``"Shot 1:"`` /
   ``"Scena 2:"`` / ``"컷 3:"``, an ordinal (:attr:`Language.list_ordinal`, with
   :attr:`Language.list_ordinal_counters`: ``"第4张："``), or a label after the number such as
   ``"1枚目："``), or bulleted at line start (``- * • ・ ●``), >= 2 of them: one image per
   item, ``preamble + item (+ postscript)``. ``"image 1."`` (and its translations) names a
   reference, not an item. The preamble loses its instruction (rules 5-6); a preamble that is
   only an instruction (``"Make a storyboard:"``; its words all groups, nouns or
   :attr:`Language.bare_words`) is dropped, and an item loses a trailing
   :attr:`Language.item_conjunctions` word (``"and"``).
3. **Count phrases.** The first match in reading order of one of :attr:`Language.forms`
   gives the count: a number (digits, or :attr:`Language.numbers`) attached to an image noun
   (:attr:`Language.nouns`), a counter (:attr:`Language.counters` count on their own,
   :attr:`Language.noun_counters` only beside an image noun), or a group
   (:attr:`Language.groups`: ``"a series of four"``). A number for anything else is not a
   count (``"a photo of 3 cats"``, ``"고양이 3마리"``, ``"三只猫"``); neither is one after a
   determiner (:attr:`Language.determiners`: ``"the 2 images"``, ``"这三张"``, ordinals
   ``"第3张"``), which names the inputs.
4. **Story beats.** When the count's clause goes on with a colon and a list of exactly N items
   (N = the stated count; items split by ``;`` or line breaks, else by ``, 、 ，``, else also
   by :attr:`Language.conjunctions`, a bare one only before one of
   :attr:`Language.article_words`), each item is one image: ``subject + ":" + item`` (the
   colon as written; capped like any count). The
   subject is the text before the colon without its instruction (rules 5-6) and without the
   story wrapper (:attr:`Language.story_prefix` / :attr:`Language.story_suffix`: ``"a story
   about"``, ``"의 이야기"``, ``"的故事"``). Text after the list's end is added to every item.
5. **Removing the count phrase.** A *generic* noun (``image``, ``immagine``, ``Bild``,
   ``이미지``, ``图片``, ``画像``: the container, not the content) goes with the number, and
   with it :attr:`Language.connector` glue on its right (``"of"``, ``"di"``, ``"von"``;
   contracted ones leave their article, :attr:`Language.articles`: ``"del"`` -> ``"il"``) or,
   when none follows, :attr:`Language.before` glue on its left (``", "``, ``" in "``); with a
   preposition on the left and a connector on the right, the preposition goes
   (``"una storia in 3 vignette su un robot"`` -> ``"una storia su un robot"``). A *content*
   noun (``photo``, ``poster``, ``사진``, ``照片``) stays, in the singular
   (``"4 posters for a fair"`` -> ``"poster for a fair"``); so does an English modifier
   (``"3 cinematic shots of Paris"`` -> ``"cinematic shot of Paris"``). Series words
   (:attr:`Language.series_modifiers`: ``different``, ``verschiedene``) go. Particles after the
   count (:attr:`Language.after`: ``을``, ``を``) always go.
6. **Removing the instruction.** In the count's clause, :attr:`Language.lead_in` words
   (``"Generate"``, ``"Genera"``, ``"Kannst du mir"``, ``"请帮我"``) are removed from its start
   and :attr:`Language.tail` words (``"만들어 줘"``, ``"生成してください"``, ``", please"``)
   from its end; Chinese also drops a generic noun closing the subject
   (:attr:`Language.subject_tail`: ``"日落的图片"`` -> ``"日落"``). One final ``. ! ? 。``
   goes. The user's other words stay as written. If nothing is left, the prompt is kept whole.
7. **No count** -> one image with the prompt unchanged. ``sequential_image_generation =
   "disabled"`` or ``force_single`` -> one image: the prompt without its count phrase when it
   states a count, else (shot lists, stories, no count) the prompt unchanged.

Known limits (documented, and in the corpus as such): German compounds (``"Fuchsbilder"``) are
not split; Romance adjectives after a generic noun keep the noun (``"3 immagini realistiche di
un faro"`` -> ``"immagini realistiche di un faro"``); ``"画3张桌子"`` reads as three images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = ["LANGUAGES", "Language", "by_code"]


def _numbers(words: str, start: int = 1) -> dict[str, int]:
    """``"one two three"`` -> ``{"one": 1, "two": 2, "three": 3}``; ``a/b`` share a value;
    ``-`` skips a value."""
    out: dict[str, int] = {}
    for value, group in enumerate(words.split(), start=start):
        for word in group.split("/"):
            if word != "-":  # "-": no word for this value (an article that doubles as "one")
                out[word] = value
    return out


def _nouns(entries: str) -> dict[str, str]:
    """``"image/images photo/photos"`` -> every form (lower case) mapped to its singular (the
    first form, as written); ``_`` stands for a space inside a form."""
    out: dict[str, str] = {}
    for entry in entries.split():
        forms = [f.replace("_", " ") for f in entry.split("/")]
        for form in forms:
            out[form.lower()] = forms[0]
    return out


def _en_nouns(words: str) -> str:
    """English singulars -> ``"singular/plural"`` entries (``-es`` after s, x, ch, sh)."""
    return " ".join(
        f"{w}/{w}es" if w.endswith(("s", "x", "ch", "sh")) else f"{w}/{w}s" for w in words.split()
    )


@dataclass(frozen=True)
class Language:
    """One language's count rules (rule numbers: see the module docstring).

    Regex fields are fragments compiled case-insensitively by the planner. ``forms`` are
    templates whose placeholders the planner fills from this table: ``{num}`` (digits 1-3
    long, or a word of ``numbers``; group ``num``), ``{noun}`` (any form of ``nouns``; group
    ``noun``), ``{pnoun}`` (a plural form, Latin only; group ``noun``), ``{mod}`` (one word;
    group ``mod``), ``{smod}`` (a series modifier), ``{counter}``, ``{ncounter}``,
    ``{anycounter}``, ``{group}``, ``{verb}``, ``{follow}``, ``{part}`` (``particles``).

    Attributes:
        code (`str`): ISO 639-1 code, e.g. ``"ko"``; reported as the plan's ``language``.
        script (`str`): ``"latin"``, ``"hangul"`` or ``"han"``; sets word boundaries for
            numbers (rule 3) and whether words are space-separated.
        numbers (`Mapping[str, int]`): number words, 1-20 (rule 3); articles that double as
            "one" (``a``, ``un``, ``um``, ``ein``) are left out on purpose.
        nouns (`Mapping[str, str]`): image nouns, every form (lower case) -> its singular
            (rule 3).
        generic (`frozenset[str]`): the forms (lower case) of ``nouns`` that are generic
            (rule 5).
        counters (`tuple[str, ...]`): counters that make a number an image count alone.
        noun_counters (`tuple[str, ...]`): counters that count images only beside a noun.
        groups (`tuple[str, ...]`): series words (rule 3) that a bare counter may precede.
        series_modifiers (`tuple[str, ...]`): words dropped with the count (rule 5).
        verbs (`tuple[str, ...]`): generation verbs (CJK: a bare counter before one counts).
        forms (`tuple[str, ...]`): count-phrase templates (rule 3), tried in order.
        adjectives_after (`bool`): adjectives follow the noun (it, pt): a generic noun with
            an adjective after it stays, as written (rule 5).
        follow (`str`): what may follow a group count that has no noun (rule 3).
        particles (`str`): words glued after a counter (Korean particles).
        numeral_chars (`str`): Han script: characters that, right beside a number word, make
            it part of another numeral or an ordinal, not a count (rule 3: ``"十三"``, ``"第三"``).
        determiners (`tuple[str, ...]`): words right before a count phrase that make it
            name the inputs (rule 3).
        lead_in (`str`): one instruction word or phrase at a clause start (rule 6).
        tail (`str`): instruction at a clause end (rule 6).
        before (`str`): glue left of a removed generic count phrase (rule 5).
        connector (`str`): glue right of it, group ``art`` for contracted ones (rule 5).
        articles (`Mapping[str, str]`): contracted connector -> its article (rule 5).
        after (`str`): particles right of any count phrase, always removed (rule 5).
        subject_tail (`str`): a generic noun closing the subject, removed (rule 6).
        story_prefix (`str`), story_suffix (`str`): the story wrapper (rule 4).
        conjunctions (`tuple[str, ...]`): list words between story beats (rule 4).
        article_words (`tuple[str, ...]`): articles and determiners; a beat split at a bare
            conjunction (no comma) must start with one (``"a beach and a forest"`` is two
            beats, ``"a black and white cat"`` one) (rule 4).
        list_labels (`tuple[str, ...]`): labels before an item number (rule 2).
        list_suffixes (`tuple[str, ...]`): labels after an item number (rule 2).
        list_ordinal (`str`): a prefix that makes the number after it (digits, or a word of
            ``numbers``) an item number (rule 2: ``"第4张："``, ``"第三幅："``).
        list_ordinal_counters (`tuple[str, ...]`): counters that may follow such an ordinal
            item number, whichever table's prefix it has (rule 2: ``"张"``, ``"コマ"``).
        item_conjunctions (`tuple[str, ...]`): a list word left at the end of a list item,
            removed from it (rule 2: ``"a beach, and"``).
        bare_words (`tuple[str, ...]`): words that, with ``groups`` and ``nouns``, are only an
            instruction's leftovers (``"the following"``, ``"以下"``): a shot list's preamble
            or a story's subject made of nothing else is dropped (rules 2 and 4). Space-separated
            languages share theirs; the others share theirs.
        reference_nouns (`tuple[str, ...]`): nouns that, before ``"1."``, name an input (rule 2).
        vocabulary (`frozenset[str]`): words that tell this language apart (rule 1).
    """

    code: str
    name: str
    script: str
    numbers: Mapping[str, int]
    nouns: Mapping[str, str]
    generic: frozenset[str]
    forms: tuple[str, ...]
    counters: tuple[str, ...] = ()
    noun_counters: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    series_modifiers: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    adjectives_after: bool = False
    follow: str = ""
    particles: str = ""
    numeral_chars: str = ""
    determiners: tuple[str, ...] = ()
    lead_in: str = ""
    tail: str = ""
    before: str = ""
    connector: str = ""
    articles: Mapping[str, str] = field(default_factory=dict)
    after: str = ""
    subject_tail: str = ""
    story_prefix: str = ""
    story_suffix: str = ""
    conjunctions: tuple[str, ...] = ()
    article_words: tuple[str, ...] = ()
    list_labels: tuple[str, ...] = ()
    list_suffixes: tuple[str, ...] = ()
    list_ordinal: str = ""
    list_ordinal_counters: tuple[str, ...] = ()
    item_conjunctions: tuple[str, ...] = ()
    bare_words: tuple[str, ...] = ()
    reference_nouns: tuple[str, ...] = ()
    vocabulary: frozenset[str] = frozenset()

    def is_generic(self, noun: str | None) -> bool:
        """True for a generic noun form (rule 5), or when there is no noun."""
        return noun is None or noun.lower() in self.generic

    def singular(self, noun: str) -> str:
        """The singular of a noun form, in the case the user wrote it (``"Photos"`` -> ``"Photo"``)."""
        base = self.nouns.get(noun.lower(), noun)
        return base[:1].upper() + base[1:] if noun[:1].isupper() else base


def _language(code: str, name: str, script: str, *, generic: str, content: str, **kw) -> Language:
    generic_forms = _nouns(generic)
    nouns = {**generic_forms, **_nouns(content)}
    vocab = set(kw.pop("vocabulary", "").split())
    if script == "latin":
        vocab |= {w for w in nouns if " " not in w} | set(kw["numbers"])
    vocab = {w.lower() for w in vocab}
    return Language(
        code=code,
        name=name,
        script=script,
        nouns=MappingProxyType(nouns),
        generic=frozenset(generic_forms),
        vocabulary=frozenset(vocab),
        **kw,
    )


# -- English ---------------------------------------------------------------------------------

EN = _language(
    "en",
    "English",
    "latin",
    numbers=_numbers(
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty"
    ),
    generic=_en_nouns(
        "image picture pic shot frame panel scene variation variant view version still slide "
        "page angle output take option result"
    ),
    content=_en_nouns(
        "photo photograph illustration render rendering poster drawing painting portrait sketch "
        "artwork design wallpaper headshot selfie icon logo thumbnail cover sticker banner "
        "postcard watercolor watercolour cartoon mockup infographic"
    ),
    groups=("series", "sequence", "storyboard", "set", "collection", "grid", "batch", "carousel", "gallery"),
    series_modifiers=(
        "different", "various", "distinct", "separate", "unique", "more", "new", "other",
        "similar", "consecutive", "sequential", "successive", "individual", "alternative",
    ),
    forms=(
        # "a series of four", "a set of 2 posters", "a storyboard of 6 about a heist"
        r"(?:\b(?:an?|one)\s+)?\b{group}\s+of\s+{num}(?:[\s-]+(?:{smod}\s+)?{noun}|(?={follow}))",
        # "3 images", "six-panel", "3 different photos"
        r"{num}[\s-]+(?:{smod}\s+)?{noun}",
        # "3 cinematic shots" (one modifier before a plural noun; "a 3 cats poster" is no count)
        r"{num}\s+(?:{smod}\s+)?{mod}\s+{pnoun}",
    ),
    follow=(
        r"\s*(?:$|[^\w\s]|(?:showing|of|about|for|with|that|depicting|featuring|where|in|on|"
        r"from|to|each|which|illustrating|capturing)\b)"
    ),
    determiners=("the", "these", "those", "both", "all", "my", "your", "our", "their", "its", "his", "her", "each", "every"),
    lead_in=(
        r"(?:please|pls|kindly|now|(?:can|could|would|will)\s+you(?:\s+please)?|i\s+want|"
        r"i['’]d\s+like|i\s+would\s+like|i\s+need|let['’]s|help\s+me|"
        r"(?:generate|create|make|draw|render|produce|paint|show|design|give|imagine|"
        r"illustrate|depict|photograph|shoot|tell|build|output|sketch|visuali[sz]e|craft|"
        r"compose)(?:\s+(?:me|us))?)"
    ),
    tail=r",?\s*please",
    before=r"(?:\s*[,;]|\s+(?:in|as|across|over|into))\s*",
    connector=(
        r"\s*(?:[,\-–—]\s*)?(?:of|showing|depicting|featuring|portraying|illustrating|"
        r"capturing|about|with|for|on|that\s+show|which\s+show)\b"
    ),
    story_prefix=(
        r"(?:tell\s+)?(?:an?\s+|the\s+)?(?:short\s+|little\s+|visual\s+|picture\s+)?"
        r"(?:story|tale|narrative)(?:\s+(?:about|of))?"
    ),
    story_suffix=r"['’]s\s+(?:story|tale)",
    conjunctions=("and then", "and", "then", "finally"),
    article_words=("a", "an", "the", "one", "some", "his", "her", "their", "my", "your", "our", "its"),
    list_labels=("shot", "panel", "scene", "frame", "slide"),
    item_conjunctions=("and",),
    bare_words=("a", "an", "the", "following", "these", "this", "some", "of", "below", "for"),
    reference_nouns=("image", "picture", "photo"),
    vocabulary="the a an of and with in on at to for from by is this that it generate create make draw show please",
)

# -- Italian ---------------------------------------------------------------------------------

IT = _language(
    "it",
    "Italian",
    "latin",
    numbers=_numbers(
        "- due tre quattro cinque sei sette otto nove dieci undici dodici tredici quattordici "
        "quindici sedici diciassette diciotto diciannove venti"
    ),
    generic=(
        "immagine/immagini variante/varianti variazione/variazioni versione/versioni vista/viste "
        "scena/scene inquadratura/inquadrature scatto/scatti vignetta/vignette tavola/tavole "
        "fotogramma/fotogrammi frame pannello/pannelli opzione/opzioni proposta/proposte"
    ),
    content=(
        "foto fotografia/fotografie illustrazione/illustrazioni disegno/disegni dipinto/dipinti "
        "quadro/quadri ritratto/ritratti poster manifesto/manifesti locandina/locandine "
        "schizzo/schizzi bozzetto/bozzetti logo/loghi icona/icone sfondo/sfondi "
        "copertina/copertine acquerello/acquerelli render rendering fumetto/fumetti "
        "cartolina/cartoline adesivo/adesivi"
    ),
    adjectives_after=True,
    groups=("serie", "sequenza", "raccolta", "collezione", "set", "storyboard", "griglia", "galleria", "carosello"),
    series_modifiers=(
        "diverse", "diversi", "differenti", "distinte", "distinti", "nuove", "nuovi", "altre",
        "altri", "consecutive", "consecutivi", "separate", "separati",
    ),
    forms=(
        r"(?:\b(?:una|un)\s+)?\b{group}\s+(?:di|da)\s+{num}(?:\s+{noun}(?:\s+{smod}(?!\w))?|(?={follow}))",
        r"{num}\s+(?:{smod}\s+)?{noun}(?:\s+{smod}(?!\w))?",
    ),
    follow=(
        r"\s*(?:$|[^\w\s]|(?:che|di|del|della|dello|dei|delle|degli|su|sul|sulla|con|per|in|nel|"
        r"nella|dove|raffiguranti|ognuna|ciascuna)\b)"
    ),
    determiners=(
        "le", "gli", "i", "queste", "questi", "quelle", "quelli", "mie", "miei", "tue", "tuoi",
        "sue", "suoi", "nostre", "nostri", "vostre", "vostri", "loro", "entrambe", "entrambi",
        "tutte", "tutti", "delle", "dalle", "nelle", "alle", "sulle", "dagli", "negli", "agli",
        "sugli", "degli", "ogni",
    ),
    lead_in=(
        r"(?:per\s+favore|per\s+piacere|puoi|potresti|vorrei|voglio|mi\s+servono|mi\s+serve|"
        r"ho\s+bisogno\s+di|(?:genera|crea|disegna|realizza|produci|mostra|dipingi|racconta|"
        r"illustra|rappresenta|immagina|fai|fa)(?:mi|ci)?|generare|creare|fare|disegnare|"
        r"realizzare|produrre|mostrare|rappresentare)"
    ),
    tail=r",?\s*(?:per\s+favore|grazie)",
    before=r"(?:\s*[,;]|\s+(?:in|su|come))\s*",
    connector=(
        r"\s*(?:[,\-–—]\s*)?(?:(?P<art>del|dello|della|dell['’]|dei|degli|delle|sul|sullo|"
        r"sulla|sui|sugli|sulle)|di|che\s+mostrano|che\s+ritraggono|raffiguranti|con|su|per|a\s+tema)"
        r"(?:\b|(?<=['’]))"
    ),
    articles={
        "del": "il", "dello": "lo", "della": "la", "dell'": "l'", "dell’": "l’", "dei": "i",
        "degli": "gli", "delle": "le", "sul": "il", "sullo": "lo", "sulla": "la", "sui": "i",
        "sugli": "gli", "sulle": "le",
    },
    story_prefix=(
        r"(?:racconta(?:mi)?\s+)?(?:una\s+|la\s+)?(?:breve\s+|piccola\s+)?storia"
        r"(?:\s+(?:su|di))?"
    ),
    conjunctions=("e poi", "e", "poi", "infine"),
    article_words=(
        "il", "lo", "la", "i", "gli", "le", "un", "una", "uno", "suo", "sua", "al", "allo",
        "alla", "ai", "agli", "alle", "nel", "nella", "del", "della", "all", "dell", "nell",
    ),
    list_labels=("scena", "vignetta", "inquadratura", "tavola", "scatto", "pannello"),
    item_conjunctions=("e",),
    bare_words=("di", "una", "un", "seguenti", "per", "le", "i"),
    reference_nouns=("immagine", "foto"),
    vocabulary=(
        "il lo la i gli le un una uno di del della dei delle con per che e è su sul nel nella "
        "questa questo genera crea fai disegna mostra"
    ),
)

# -- Portuguese ------------------------------------------------------------------------------

PT = _language(
    "pt",
    "Portuguese",
    "latin",
    numbers=_numbers(
        "- dois/duas três/tres quatro cinco seis sete oito nove dez onze doze treze "
        "catorze/quatorze quinze dezesseis/dezasseis dezessete/dezassete dezoito "
        "dezenove/dezanove vinte"
    ),
    generic=(
        "imagem/imagens variação/variações/variacao/variacoes versão/versões/versao/versoes "
        "vista/vistas cena/cenas quadro/quadros painel/painéis/paineis take/takes "
        "tomada/tomadas frame/frames fotograma/fotogramas opção/opções/opcao/opcoes "
        "figura/figuras"
    ),
    content=(
        "foto/fotos fotografia/fotografias ilustração/ilustrações/ilustracao/ilustracoes "
        "desenho/desenhos pintura/pinturas retrato/retratos pôster/pôsteres/poster/posters "
        "cartaz/cartazes logo/logos logotipo/logotipos ícone/ícones/icone/icones "
        "esboço/esboços/esboco/esbocos capa/capas aquarela/aquarelas render/renders "
        "renderização/renderizações quadrinho/quadrinhos tirinha/tirinhas "
        "papel_de_parede/papéis_de_parede"
    ),
    adjectives_after=True,
    groups=(
        "série", "serie", "sequência", "sequencia", "coleção", "colecao", "conjunto",
        "storyboard", "grade", "galeria", "carrossel", "lote",
    ),
    series_modifiers=(
        "diferentes", "distintas", "distintos", "novas", "novos", "outras", "outros",
        "sequenciais", "consecutivas", "consecutivos", "variadas", "variados", "separadas",
    ),
    forms=(
        r"(?:\b(?:uma|um)\s+)?\b{group}\s+(?:de|com)\s+{num}(?:\s+{noun}(?:\s+{smod}(?!\w))?|(?={follow}))",
        r"{num}\s+(?:{smod}\s+)?{noun}(?:\s+{smod}(?!\w))?",
    ),
    follow=(
        r"\s*(?:$|[^\w\s]|(?:que|de|do|da|dos|das|sobre|com|para|em|no|na|mostrando|"
        r"retratando|cada)\b)"
    ),
    determiners=(
        "as", "os", "estas", "estes", "essas", "esses", "aquelas", "aqueles", "minhas", "meus",
        "tuas", "teus", "suas", "seus", "nossas", "nossos", "ambas", "ambos", "todas", "todos",
        "das", "dos", "nas", "nos", "às", "aos", "pelas", "pelos", "cada", "destas", "destes",
        "dessas", "desses", "nestas", "nestes", "nessas", "nesses",
    ),
    lead_in=(
        r"(?:por\s+favor|(?:você|voce|vc)\s+pode|pode|poderia|quero|queria|gostaria\s+de|"
        r"preciso\s+de|me|(?:gere|gera|crie|cria|faça|faca|faz|desenhe|desenha|produza|mostre|"
        r"mostra|pinte|ilustre|conte|imagine|renderize)(?:-me)?|gerar|criar|fazer|desenhar|"
        r"produzir|mostrar)"
    ),
    tail=r",?\s*(?:por\s+favor|obrigad[oa])",
    before=r"(?:\s*[,;]|\s+(?:em|como))\s*",
    connector=(
        r"\s*(?:[,\-–—]\s*)?(?:(?P<art>do|da|dos|das)|de|mostrando|retratando|com|sobre|"
        r"para|em\s+que)\b"
    ),
    articles={"do": "o", "da": "a", "dos": "os", "das": "as"},
    story_prefix=(
        r"(?:conte(?:-me)?\s+)?(?:uma\s+|a\s+)?(?:pequena\s+|breve\s+)?(?:história|historia)"
        r"(?:\s+(?:sobre|de))?"
    ),
    conjunctions=("e depois", "e", "depois", "por fim", "finalmente"),
    article_words=(
        "o", "a", "os", "as", "um", "uma", "seu", "sua", "ao", "aos", "à", "às", "no", "na",
        "nos", "nas", "do", "da", "dos", "das",
    ),
    list_labels=("cena", "quadro", "painel", "tomada"),
    item_conjunctions=("e",),
    bare_words=("de", "uma", "um", "seguintes", "para", "os", "as"),
    reference_nouns=("imagem", "foto"),
    vocabulary=(
        "o a os as um uma de do da dos das com para que e em no na é sobre gere crie faça mostre "
        "uma não"
    ),
)

# -- German ----------------------------------------------------------------------------------

DE = _language(
    "de",
    "German",
    "latin",
    numbers=_numbers(
        "- zwei/zwo drei vier fünf/fuenf sechs sieben acht neun zehn elf zwölf/zwoelf dreizehn "
        "vierzehn fünfzehn/fuenfzehn sechzehn siebzehn achtzehn neunzehn zwanzig"
    ),
    generic=(
        "Bild/Bilder/Bildern Abbildung/Abbildungen Variante/Varianten Variation/Variationen "
        "Version/Versionen Ansicht/Ansichten Szene/Szenen Einstellung/Einstellungen "
        "Panel/Panels Frame/Frames Standbild/Standbilder/Standbildern Motiv/Motive/Motiven "
        "Aufnahme/Aufnahmen"
    ),
    content=(
        "Foto/Fotos Fotografie/Fotografien Illustration/Illustrationen Zeichnung/Zeichnungen "
        "Gemälde/Gemälden Poster/Postern Plakat/Plakate/Plakaten Porträt/Porträts/Portrait/Portraits "
        "Skizze/Skizzen Logo/Logos Icon/Icons Hintergrundbild/Hintergrundbilder/Hintergrundbildern "
        "Aquarell/Aquarelle/Aquarellen Rendering/Renderings Grafik/Grafiken "
        "Entwurf/Entwürfe/Entwürfen Cover Sticker Comic/Comics"
    ),
    groups=(
        "Serie", "Reihe", "Folge", "Sequenz", "Bildserie", "Bilderserie", "Fotoserie",
        "Bildreihe", "Set", "Storyboard", "Sammlung", "Bildergeschichte", "Galerie",
    ),
    series_modifiers=(
        "verschiedene", "verschiedenen", "unterschiedliche", "unterschiedlichen", "weitere",
        "weiteren", "neue", "neuen", "einzelne", "einzelnen", "aufeinanderfolgende",
        "aufeinanderfolgenden", "andere", "anderen",
    ),
    forms=(
        r"(?:\b(?:eine|einen|ein)\s+)?\b{group}\s+(?:von|aus|mit)\s+{num}(?:\s+(?:{smod}\s+)?{noun}|(?={follow}))",
        r"{num}[\s-]+(?:{smod}\s+)?{noun}",
    ),
    follow=(
        r"\s*(?:$|[^\w\s]|(?:die|von|vom|über|mit|für|zu|zum|zur|in|im|auf|jeweils|wobei)\b)"
    ),
    determiners=(
        "die", "der", "den", "dem", "des", "diese", "dieser", "diesen", "jene", "meine",
        "meinen", "deine", "deinen", "seine", "ihre", "ihren", "unsere", "unseren", "eure",
        "beide", "beiden", "alle", "allen", "a", "an", "the",
    ),
    lead_in=(
        r"(?:bitte|(?:kannst|könntest|koenntest)\s+du|(?:können|könnten)\s+sie|ich\s+möchte|"
        r"ich\s+hätte\s+gerne?|ich\s+brauche|ich\s+will|mir|uns|(?:erstelle|erstell|erzeuge|"
        r"erzeug|generiere|generier|mache|mach|male|zeichne|gestalte|zeige|zeig|rendere|"
        r"entwirf|erzähle|erzähl)(?:\s+(?:mir|uns))?|(?:erstellen|erzeugen|generieren|zeichnen|"
        r"malen|gestalten)\s+sie(?:\s+(?:mir|uns))?)"
    ),
    tail=(
        r"(?:,?\s*bitte|\s+(?:erstellen|erzeugen|generieren|machen|malen|zeichnen|gestalten|"
        r"zeigen|rendern|entwerfen)(?:\s+lassen)?)"
    ),
    before=r"(?:\s*[,;]|\s+(?:in|als|auf))\s*",
    connector=(
        r"\s*(?:[,\-–—]\s*)?(?:(?P<art>vom|zum|zur)|von|mit|über|zu|zeigend|für)\b"
    ),
    articles={"vom": "dem", "zum": "dem", "zur": "der"},
    story_prefix=(
        r"(?:erzähle?\s+(?:mir\s+)?)?(?:eine\s+|die\s+)?(?:kurze\s+|kleine\s+)?(?:bilder)?"
        r"geschichte(?:\s+(?:über|von))?"
    ),
    conjunctions=("und dann", "und", "dann", "schließlich", "zuletzt"),
    article_words=(
        "der", "die", "das", "den", "dem", "ein", "eine", "einen", "einem", "sein", "seine",
        "ihr", "ihre", "im", "am", "zum", "zur", "beim",
    ),
    list_labels=("szene", "einstellung", "panel"),
    item_conjunctions=("und",),
    bare_words=("von", "eine", "ein", "folgenden", "folgende", "für", "die"),
    reference_nouns=("bild", "foto"),
    vocabulary=(
        "der die das den dem des ein eine einen einem einer und von mit im in auf für ist zu "
        "nicht erstelle erzeuge zeichne bitte"
    ),
)

# -- Korean ----------------------------------------------------------------------------------

_HANGUL = range(0xAC00, 0xD7A4)
_BATCHIM = "".join(chr(c) for c in _HANGUL if (c - 0xAC00) % 28)
_NO_BATCHIM = "".join(chr(c) for c in _HANGUL if not (c - 0xAC00) % 28)
# Object particle: 을 after a final consonant (batchim), 를 after a vowel ("마을" is no particle).
_KO_OBJECT = rf"(?:(?<=[{_BATCHIM}])을|(?<=[{_NO_BATCHIM}])를)"
_KO_PARTICLES = rf"(?:{_KO_OBJECT}|으로|로|의|이|가|은|는|씩|만|짜리|과|와|도|에)"

KO = _language(
    "ko",
    "Korean",
    "hangul",
    numbers={
        # native numerals (before counters: 한 장, 두 컷, 스무 장) ...
        **_numbers(
            "한/하나 두/둘 세/셋 네/넷 다섯 여섯 일곱 여덟 아홉 열 열한/열하나 열두/열둘 "
            "열세/열셋 열네/열넷 열다섯 열여섯 열일곱 열여덟 열아홉 스무/스물"
        ),
        # ... and Sino-Korean ones (삼 장, 사 컷, 십오 장)
        **_numbers("일 이 삼 사 오 육 칠 팔 구 십 십일 십이 십삼 십사 십오 십육 십칠 십팔 십구 이십"),
    },
    generic=(
        "이미지 그림 장면 버전 시안 변형 베리에이션 샷 프레임 패널 결과물 화면 컷"
    ),
    content=(
        "사진 일러스트 일러스트레이션 삽화 포스터 초상화 스케치 수채화 유화 로고 아이콘 "
        "배경화면 썸네일 표지 만화 웹툰 렌더링 스티커 캐리커처"
    ),
    counters=("장", "컷", "매"),
    noun_counters=("개", "점", "가지", "종"),
    groups=("만화", "웹툰", "시리즈", "세트", "스토리보드", "연작", "콘티", "이야기", "스토리"),
    verbs=(
        "만들", "만드", "생성", "그려", "그리기", "그릴", "그리세요", "뽑아", "보여", "제작",
        "출력", "부탁", "원해", "원합", "줘", "주세요",
    ),
    particles=_KO_PARTICLES,
    forms=(
        # "사진 4장", "이미지를 세 개", "버전 3가지"
        rf"{{noun}}(?:{_KO_OBJECT})?\s*{{num}}\s*{{anycounter}}(?={{part}}|[^가-힣]|$)",
        # "세 장의 사진", "4장짜리 이미지", "4컷 만화"
        r"{num}\s*{anycounter}\s*(?:짜리\s*)?(?:의\s*)?{noun}",
        # "4장 그려 줘", "네 컷으로: ...", "4컷 스토리보드"
        r"{num}\s*{counter}(?={part}?\s*(?:{verb}|{group}|[.,!?~:]|$))",
    ),
    determiners=("이", "그", "저", "위의", "위", "해당", "첨부한", "첨부된", "업로드한", "올린", "각"),
    tail=(
        rf"(?:{_KO_OBJECT}\s*)?(?:만들어|만들|만드세요|생성해|생성하|생성|그려|그리세요|그릴|"
        r"제작해|제작|출력해|출력|뽑아|보여|부탁|원해|원합니다)(?:\s*(?:줘|주세요|줄래요?|"
        r"주실래요|주시겠어요|주라|봐|봐줘|요|라|줘요|해|해줘|해\s*주세요|해요|합니다|하세요|"
        r"드립니다|드려요|기|세요|주면\s*좋겠어요?|해\s*줄래|해\s*주실래요))*"
    ),
    before=rf"(?:\s*[,，]|\s*의|\s*{_KO_OBJECT})?\s*",
    after=r"(?:씩|만)?(?:을|를|으로|로|이|가|은|는)?",
    story_suffix=r"(?:의\s*)?(?:이야기|스토리)",
    conjunctions=("그리고", "그다음", "그 다음", "마지막으로"),
    list_labels=("컷", "장면", "씬"),
    item_conjunctions=("그리고",),
    list_suffixes=("컷", "번째 컷", "번째 장면", "번째", "번"),
    reference_nouns=("이미지", "사진"),
)

# -- Chinese ---------------------------------------------------------------------------------

_HAN_NUMERALS = "一二三四五六七八九十两百千万〇零第"
"""Numeral characters of Chinese and Japanese, and the ordinal 第 (:attr:`Language.numeral_chars`)."""

_ZH_DIGITS = "一 二/两 三 四 五 六 七 八 九 十"
ZH = _language(
    "zh",
    "Chinese",
    "han",
    numbers=_numbers(
        _ZH_DIGITS + " 十一 十二 十三 十四 十五 十六 十七 十八 十九 二十"
    ),
    generic="图片 图像 图 画面 镜头 分镜 场景 版本 变体 方案",
    content=(
        "照片 相片 插画 插图 绘画 画 海报 壁纸 头像 肖像画 肖像 素描 水彩画 油画 漫画 图标 封面 "
        "表情包 贴纸 效果图 设计图 宣传图 写真"
    ),
    counters=("张", "幅", "格", "帧", "款", "版"),
    numeral_chars=_HAN_NUMERALS,
    noun_counters=("个",),
    groups=("漫画", "连环画", "系列", "组图", "套图", "分镜", "故事板", "故事"),
    verbs=("生成", "画", "绘制", "制作", "创作", "做", "设计", "输出", "来", "拍摄", "拍", "出", "创建", "给我", "要"),
    forms=(
        # "3张图片", "四幅画", "三个版本", "一组4张海报"
        r"(?:一组|一套|一系列|共|总共|一共)?\s*{num}\s*{anycounter}\s*{noun}",
        # "生成3张", "画三幅", "生成4张图片": a generation verb, then a number and a counter
        r"(?:{verb})\s*(?:一组|一套|一系列|共)?\s*{num}\s*{counter}(?:\s*{noun})?",
        # "4格漫画", "4张组图": a number and a counter before a group word
        r"{num}\s*{counter}(?=\s*{group})",
        # "雪地里的狐狸，共4张", "4张：…", "3张关于…": a bare counter after a clause start,
        # punctuation or 共, before punctuation, the end or 关于 ("合成一张" is no count)
        r"(?:(?<![^\s，,。.！!？?；;：:、])|共|总共|一共|一组|一套|一系列)\s*{num}\s*{counter}"
        r"(?=\s*(?:[，。,.！!？?；;：:、]|$|关于|有关))",
    ),
    determiners=("这", "那", "这些", "那些", "上面的", "以上", "上述", "我的", "附上的", "每", "第", "其中", "前", "后"),
    lead_in=(
        r"(?:请你|请|帮我|帮忙|给我|为我|替我|麻烦你?|我想要|我想|我要|我需要|能不能|可以|"
        r"用|生成|绘制|制作|创作|设计|输出|创建|画|做|来|拍摄|拍|出|讲述|讲)(?:一下)?"
    ),
    tail=r"(?:吧|谢谢)",
    before=r"(?:[，,、]|共|总共|一共|一组|一套|一系列)?\s*",
    connector=r"\s*[，,：:]?\s*(?:关于|有关|展示|描绘|内容是|主题是|主题为|画的是|是|的)",
    subject_tail=r"的?(?:图片|图像|画面|图)",
    story_prefix=r"(?:讲述?|说)?(?:一个)?",
    story_suffix=r"的?故事",
    conjunctions=("然后", "最后", "以及", "和"),
    list_labels=("镜头", "分镜", "画面", "场景"),
    list_suffixes=(),
    list_ordinal="第",
    list_ordinal_counters=("张", "幅", "格", "个", "幕", "帧", "镜"),
    item_conjunctions=("以及", "然后"),
    bare_words=("以下", "下面", "的", "个", "一"),
    reference_nouns=("图",),
)

# -- Japanese --------------------------------------------------------------------------------

JA = _language(
    "ja",
    "Japanese",
    "han",
    numbers={
        **_numbers(
            # kana stems take the つ counter: ひと+つ, ふた+つ, みっ+つ
            "一/ひと 二/ふた 三/みっ 四/よっ 五/いつ 六/むっ 七/なな 八/やっ 九/ここの 十"
        ),
        **_numbers("十一 十二 十三 十四 十五 十六 十七 十八 十九 二十", start=11),
    },
    generic="画像 絵 図 イメージ バリエーション バージョン 案 シーン 場面 カット コマ ショット フレーム",
    content=(
        "写真 イラスト イラストレーション 絵画 水彩画 油絵 油彩画 ポスター ロゴ アイコン 壁紙 "
        "似顔絵 肖像画 スケッチ 漫画 マンガ サムネイル 表紙 ステッカー"
    ),
    counters=("枚", "コマ", "カット", "パターン", "案"),
    numeral_chars=_HAN_NUMERALS,
    noun_counters=("つ", "個", "点", "種類", "通り"),
    groups=("漫画", "マンガ", "シリーズ", "セット", "ストーリーボード", "絵コンテ", "連作", "物語", "ストーリー"),
    verbs=(
        "生成", "作成", "作っ", "作り", "作る", "描い", "描き", "描く", "出力", "出し", "用意",
        "撮っ", "撮影", "見せ", "お願い", "ください", "下さい", "ほしい", "欲しい",
    ),
    forms=(
        # "画像を3枚", "写真3枚", "イラストを三つ"
        r"{noun}(?:を|は|が)?\s*{num}\s*{anycounter}(?:組)?(?!目)",
        # "3枚の画像", "4つのイラスト", "3枚組の写真"
        r"{num}\s*{anycounter}(?:組)?の{noun}",
        # "3枚描いて", "4コマ漫画", "3パターン作って"
        r"{num}\s*{counter}(?:組)?(?!目)(?=(?:を|で|ずつ|の)?\s*(?:{verb}|{group}|[、。！!？?：:,.]|$))",
    ),
    determiners=("この", "その", "あの", "これらの", "それらの", "あれらの", "上の", "添付の", "各", "第", "元の"),
    tail=(
        r"(?:を|で|は)?\s*(?:(?:生成|作成|作っ|作り|作る|描い|描き|描く|出力|出し|用意|撮っ|"
        r"撮影|見せ)(?:して|し|て|する|ます|ください|下さい|ほしい|欲しい|いただけますか|"
        r"もらえますか|ね|よ)*|お願い(?:します|いたします)?|ください|下さい)"
    ),
    before=r"(?:[、,，]|の|を)?\s*",
    after=r"(?:ずつ)?(?:を|で|は|が)?",
    story_suffix=r"の?(?:物語|ストーリー|お話)(?:を)?",
    conjunctions=("そして", "次に", "最後に"),
    list_labels=("シーン", "カット", "コマ"),
    list_suffixes=("枚目", "コマ目", "カット目"),
    list_ordinal_counters=("コマ", "枚"),
    reference_nouns=("画像",),
)

LANGUAGES: tuple[Language, ...] = (EN, IT, PT, DE, KO, ZH, JA)
"""Every supported language, in the order ties are broken (rule 1)."""


def by_code(code: str) -> Language:
    """The table for an ISO 639-1 code (``"en"``, ``"it"``, ``"pt"``, ``"de"``, ``"ko"``,
    ``"zh"``, ``"ja"``).

    Raises:
        KeyError: no table for ``code``.
    """
    for language in LANGUAGES:
        if language.code == code:
            return language
    raise KeyError(f"no count rules for language {code!r}; supported: {[l.code for l in LANGUAGES]}")
