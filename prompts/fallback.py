"""What the glossary did not know: typos of its festival and motif names, then CC-CEDICT.

Runs of words the glossary left unknown are read in this order:
1. a typo of a festival or motif name (元霄 -> 元宵, 汤元 -> 汤圆, 国亲节 -> 国庆节): a piece of
   the run that is no dictionary word itself and sounds like a glossary word in pinyin (tones
   ignored, as pinyin input methods type them), or differs from one in one character whose pinyin
   is one letter off (qin/qing, zi/zhi); the longest such piece wins;
2. the dictionary (prompts.dictionary): the piece as a whole, else its dictionary words.
What neither reads stays unknown and is listed in `notes` as not translated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pypinyin import lazy_pinyin

from prompts.dictionary import Dictionary
from prompts.lexicon import MAX_FUZZY_CHARS, Glossary, Term, Token


@dataclass
class Filled:
    """The tokens with the gaps filled, and what the notes say about them."""

    tokens: list[Token]
    corrections: list[tuple[str, str]] = field(default_factory=list)  # (typed, read as)
    dictionary: list[tuple[str, str]] = field(default_factory=list)  # (word, english)


def _one_letter_apart(a: str, b: str) -> bool:
    """Edit distance at most 1 between two syllables."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _sounds_like(piece: str, syllables: list[str], index: dict) -> str | None:
    """The glossary word `piece` is a typo of, or None."""
    for word, sounds in index.get(len(piece), []):
        if sounds == syllables:
            return word
    if len(piece) < 3:
        return None  # two characters one letter off are too often another real word
    for word, sounds in index.get(len(piece), []):
        different = [i for i, (a, b) in enumerate(zip(piece, word, strict=True)) if a != b]
        if len(different) == 1 and _one_letter_apart(syllables[different[0]], sounds[different[0]]):
            return word
    return None


def _typos(run: str, dictionary: Dictionary, index: dict) -> list[tuple[int, int, str]]:
    """(start, end, glossary word) for each typo found in `run`, left to right."""
    syllables = lazy_pinyin(run)
    if len(syllables) != len(run):
        return []  # pypinyin kept a non-Chinese piece whole: positions would not line up
    found: list[tuple[int, int, str]] = []
    start = 0
    while start < len(run) - 1:
        for end in range(min(len(run), start + MAX_FUZZY_CHARS), start + 1, -1):
            piece = run[start:end]
            if dictionary.knows(piece):
                continue
            if word := _sounds_like(piece, syllables[start:end], index):
                found.append((start, end, word))
                start = end
                break
        else:
            start += 1
    return found


def _from_dictionary(
    text: str, start: int, glossary: Glossary, dictionary: Dictionary, filled: Filled
) -> list[Token]:
    """`text` (a gap) as dictionary words where CC-CEDICT has a drawable sense for them. A gap
    split into pieces may hold glossary words (jieba glues unknown characters to a filler:
    和犇犇); a character split off a longer gap is not looked up alone (会员日: 日 is no sun)."""
    whole = dictionary.lookup(text)
    pieces = [text] if whole or len(text) == 1 else dictionary.split(text)
    tokens: list[Token] = []
    for piece in pieces:
        token = glossary.classify(piece, start)
        sense = dictionary.lookup(piece) if len(piece) > 1 or piece == text else None
        if token.kind == "unknown" and sense is not None:
            category, phrase = ("action", sense.english) if sense.action else ("prop", "")
            term = Term(piece, category, (sense.english,), phrase, source="dictionary")
            token = Token(piece, start, "term", term)
            filled.dictionary.append((piece, sense.english))
        if token.kind == "unknown" and tokens and tokens[-1].kind == "unknown":
            previous = tokens.pop()  # one untranslated word in the notes, not its characters
            token = Token(previous.text + piece, previous.start, "unknown")
        tokens.append(token)
        start += len(piece)
    return tokens


def fill_gaps(tokens: list[Token], glossary: Glossary, dictionary: Dictionary) -> Filled:
    """Read each run of adjacent unknown Chinese tokens by typo, then dictionary."""
    filled = Filled([])
    index = glossary.fuzzy_index
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind != "unknown" or token.text.isascii():
            filled.tokens.append(token)
            i += 1
            continue
        run_tokens = [token]
        while (
            i + len(run_tokens) < len(tokens)
            and (after := tokens[i + len(run_tokens)]).kind == "unknown"
            and not after.text.isascii()
            and after.start == run_tokens[-1].start + len(run_tokens[-1].text)
        ):
            run_tokens.append(after)
        i += len(run_tokens)
        run = "".join(t.text for t in run_tokens)
        done = 0
        for start, end, word in _typos(run, dictionary, index):
            filled.tokens += _from_dictionary(
                run[done:start], token.start + done, glossary, dictionary, filled
            )
            filled.tokens.append(Token(word, token.start + start, "term", glossary.terms[word]))
            filled.corrections.append((run[start:end], word))
            done = end
        if done < len(run):
            filled.tokens += _from_dictionary(
                run[done:], token.start + done, glossary, dictionary, filled
            )
    return filled
