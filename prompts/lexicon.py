"""The glossary: Chinese (and English) poster vocabulary -> English prompt words.

The data lives in `prompts/glossary/*.toml` so admins can extend it without touching code
(config `prompts.glossary_dir` adds a folder of their own files, which override ours). This module
loads and checks those files, and finds their words inside running text: jieba segments Chinese
(glossary words are added to its dictionary so "雪地里送快递" splits into 雪地 / 里 / 送快递), and
English words and phrases ("close up", "delivering parcels") are found by a regex first.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jieba
from pypinyin import lazy_pinyin

from prompts.spec import Target

BUILTIN_DIR = Path(__file__).with_name("glossary")
CATEGORIES = ("festival", "season", "scene", "action", "prop", "style", "mood", "shot", "quality")
ORIENTATIONS = ("portrait", "landscape", "square")
FUZZY_CATEGORIES = ("festival", "prop")  # names with a fixed spelling that ops staff mistype
MAX_FUZZY_CHARS = 6
# Added words must beat jieba's own split of the same characters; its dictionary's common words
# have frequencies in the tens of thousands.
_JIEBA_FREQ = 1_000_000
_CJK = re.compile(r"[\u3400-\u9fff]")
_TAG = re.compile(r"[a-z0-9][a-z0-9 '&.+\-]*")  # plain English words: no weights, no commas

# jieba logs "Building prefix dict ..." on first use; `posterbot prompt --json` output stays clean.
jieba.setLogLevel(logging.WARNING)


@dataclass(frozen=True)
class Term:
    """One glossary entry: the tags it adds and, for some categories, words for the sentence."""

    word: str
    category: str
    tags: tuple[str, ...]
    phrase: str = ""
    source: str = "glossary"  # or "dictionary": CC-CEDICT filled a gap (prompts.fallback)
    # Words only worth saying no to (文字 "text", 水印, logo, 三视图): drawn they are artefacts
    # (gibberish letters, a sheet of views), so a request that asks for them draws them not.
    negative_only: bool = False


@dataclass(frozen=True)
class Token:
    """A piece of a request: a glossary term, a filler, a negation, a replace word ("换成"), an
    unknown word or a break."""

    text: str
    start: int
    kind: str  # term | ignore | negation | replace | unknown | break | space
    term: Term | None = None


@dataclass(frozen=True)
class Glossary:
    terms: dict[str, Term]  # lower-case word or synonym -> entry
    ignore: frozenset[str] = frozenset()
    negations: frozenset[str] = frozenset()
    replacements: frozenset[str] = frozenset()  # "换成 X": X replaces what was said before
    orientations: dict[str, str] = field(default_factory=dict)  # word -> portrait|landscape|square
    # lower-case channel name or alias -> its finished size, named by the channel
    channels: dict[str, Target] = field(default_factory=dict)
    hires_words: frozenset[str] = frozenset()
    # 不要人, 不要其他人物: said no to, these words ask for the mascot alone
    solo_words: frozenset[str] = frozenset()

    @cached_property
    def _tokenizer(self) -> jieba.Tokenizer:
        # A private tokenizer: other code using jieba keeps its own dictionary.
        tokenizer = jieba.Tokenizer()
        words = (*self.terms, *self.ignore, *self.negations, *self.replacements, *self.solo_words)
        for word in words:
            if _CJK.search(word):
                tokenizer.add_word(word, _JIEBA_FREQ)
        return tokenizer

    @cached_property
    def fuzzy_index(self) -> dict[int, list[tuple[str, list[str]]]]:
        """Chinese words of FUZZY_CATEGORIES by length, with their pinyin syllables (toneless):
        what a typo is matched against (prompts.fallback)."""
        index: dict[int, list[tuple[str, list[str]]]] = {}
        for word, term in self.terms.items():
            chinese = all("\u3400" <= char <= "\u9fff" for char in word)
            if term.category in FUZZY_CATEGORIES and 2 <= len(word) <= MAX_FUZZY_CHARS and chinese:
                index.setdefault(len(word), []).append((word, lazy_pinyin(word)))
        return index

    @cached_property
    def _english_terms(self) -> re.Pattern | None:
        words = sorted((w for w in self.terms if not _CJK.search(w)), key=len, reverse=True)
        if not words:
            return None
        alternatives = "|".join(re.escape(word) for word in words)
        return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])", re.I)

    def tokenize(self, text: str) -> list[Token]:
        """Split `text` into tokens in reading order; a run of whitespace is one `space` token
        (it may end a negated phrase: 不要雪 送快递)."""
        tokens = [Token(m.group(0), m.start(), "space") for m in re.finditer(r"\s+", text)]
        masked = text
        if self._english_terms is not None:
            for match in self._english_terms.finditer(text):
                word = match.group(0)
                tokens.append(Token(word, match.start(), "term", self.terms[word.lower()]))
                masked = masked[: match.start()] + " " * len(word) + masked[match.end() :]
        for word, start, _ in self._tokenizer.tokenize(masked):
            if not word.strip():
                continue
            tokens.append(self.classify(word, start))
        return sorted(tokens, key=lambda token: token.start)

    def classify(self, word: str, start: int) -> Token:
        """One word's token: a term, a filler, a negation ... or `unknown`."""
        key = word.lower()
        if key in self.terms:
            return Token(word, start, "term", self.terms[key])
        if key in self.negations:
            return Token(word, start, "negation")
        if key in self.replacements:
            return Token(word, start, "replace")
        if key in self.ignore:
            return Token(word, start, "ignore")
        if not any(char.isalnum() for char in word):
            return Token(word, start, "break")
        return Token(word, start, "unknown")


def _as_term(word: str, category: str, value: Any, where: str) -> tuple[Term, list[str]]:
    """Read one `[terms]` value: "tag", ["tag", ...] or {phrase, tags, also, negative_only}."""
    if isinstance(value, str):
        value = {"tags": [value]}
    elif isinstance(value, list):
        value = {"tags": value}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {word!r} must be a string, a list or a table")
    unknown = set(value) - {"phrase", "tags", "also", "negative_only"}
    if unknown:
        raise ValueError(f"{where}: {word!r} has unknown keys {sorted(unknown)}")
    tags = value.get("tags", [])
    phrase = value.get("phrase", "")
    also = value.get("also", [])
    negative_only = value.get("negative_only", False)
    if not isinstance(tags, list) or not isinstance(also, list) or not isinstance(phrase, str):
        raise ValueError(f"{where}: {word!r}: tags and also must be lists, phrase a string")
    if not isinstance(negative_only, bool):
        raise ValueError(f"{where}: {word!r}: negative_only must be true or false")
    if not tags and not phrase:
        raise ValueError(f"{where}: {word!r} needs tags or a phrase")
    for english in (*tags, phrase):
        if english and not (isinstance(english, str) and _TAG.fullmatch(english)):
            raise ValueError(
                f"{where}: {word!r}: {english!r} is not plain lower-case English "
                "(no commas, brackets or weights)"
            )
    return Term(word, category, tuple(tags), phrase, negative_only=negative_only), [word, *also]


def _channel(name: str, size: Any, where: str) -> Target:
    target = Target.parse(size, name) if isinstance(size, str) else None
    if target is None:
        raise ValueError(f"{where}: {size!r} is not WIDTHxHEIGHT or WIDTHxHEIGHT@DPI")
    return target


def read_glossary(paths: list[Path]) -> Glossary:
    """Read glossary files in order; a later file's word overrides an earlier file's.

    Within one file a word may appear once. Raises ValueError naming the file and the word.
    """
    terms: dict[str, Term] = {}
    ignore: set[str] = set()
    negations: set[str] = set()
    replacements: set[str] = set()
    orientations: dict[str, str] = {}
    channels: dict[str, Target] = {}
    aliases: list[tuple[str, str, str]] = []  # (where, alias, channel), read after every file
    hires_words: set[str] = set()
    solo_words: set[str] = set()
    for path in paths:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
        category = data.get("category")
        if "terms" in data and category not in CATEGORIES:
            raise ValueError(f"{path}: category must be one of {CATEGORIES}, not {category!r}")
        seen_here: set[str] = set()
        for word, value in data.get("terms", {}).items():
            term, words = _as_term(word, category, value, str(path))
            for synonym in words:
                key = synonym.lower()
                if key in seen_here:
                    raise ValueError(f"{path}: {synonym!r} appears twice")
                seen_here.add(key)
                terms[key] = term
        ignore.update(word.lower() for word in data.get("ignore", []))
        negations.update(word.lower() for word in data.get("negations", []))
        replacements.update(word.lower() for word in data.get("replacements", []))
        for orientation, words in data.get("orientations", {}).items():
            if orientation not in ORIENTATIONS:
                raise ValueError(f"{path}: orientation must be one of {ORIENTATIONS}")
            orientations.update((word.lower(), orientation) for word in words)
        for name, size in data.get("channels", {}).items():
            channels[name.lower()] = _channel(name, size, f"{path}: channels.{name}")
        aliases += [(str(path), a, c) for a, c in data.get("channel_aliases", {}).items()]
        hires_words.update(word.lower() for word in data.get("hires", {}).get("words", []))
        solo_words.update(word.lower() for word in data.get("solo_when_negated", []))
    # An admin's file may alias one of our channels, so aliases are resolved once all are read.
    for where, alias, channel in aliases:
        if channel.lower() not in channels:
            raise ValueError(f"{where}: channel_aliases.{alias}: no channel {channel!r}")
        channels[alias.lower()] = channels[channel.lower()]
    return Glossary(
        terms,
        frozenset(ignore),
        frozenset(negations),
        frozenset(replacements),
        orientations,
        channels,
        frozenset(hires_words),
        frozenset(solo_words),
    )


@cache
def load_glossary(extra_dir: str = "") -> Glossary:
    """The built-in glossary plus the `.toml` files in `extra_dir` (config prompts.glossary_dir)."""
    paths = sorted(BUILTIN_DIR.glob("*.toml"))
    if extra_dir:
        folder = Path(extra_dir)
        if not folder.is_dir():
            raise ValueError(f"prompts.glossary_dir: {extra_dir!r} is not a folder")
        paths += sorted(folder.glob("*.toml"))
    return read_glossary(paths)
