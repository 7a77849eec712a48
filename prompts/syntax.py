"""WebUI (AUTOMATIC1111) prompt syntax, as pure text functions.

- `(word)` multiplies the attention weight by 1.1, `[word]` divides it by 1.1, `(word:1.3)` sets
  an explicit factor; brackets nest and multiply. `\\(` is a literal bracket.
- `BREAK` (upper case, as a word) ends the current 75-token chunk.
- `<lora:name:weight>` (any `<kind:args>`) selects an extra network and is removed from the text
  that gets encoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from posterbot.errors import Refusal

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK = "BREAK"  # a fragment with this text and weight -1 marks a chunk break

# One token of the attention grammar: an escape, an opening bracket, ":number)" closing an explicit
# weight, a closing bracket, a run of plain text, or a lone colon.
_ATTENTION_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]            # escaped bracket or backslash
  | \\                      # a lone backslash is literal
  | \(                      # open round
  | \[                      # open square
  | :\s*([+-]?[.\d]+)\s*\)  # explicit weight closing a round bracket
  | \)                      # close round
  | ]                       # close square
  | [^\\()\[\]:]+           # plain text
  | :                       # a colon that is not a weight
    """,
    re.X,
)
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*", re.S)
CHUNK_TOKENS = 75  # WebUI's chunk: CLIP's 77 positions less the start and end tokens
# CLIP's pre-tokenizer pieces, roughly: a run of ASCII letters, one digit, any other character.
_TOKEN_PIECE = re.compile(r"[A-Za-z]+|[0-9]|\S")
LETTERS_PER_TOKEN = 8  # a word of up to 7 letters counts 1 token, 8-15 letters 2, ...
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class LoraTag:
    """A `<lora:name:weight>` tag from a prompt."""

    name: str
    weight: float = 1.0

    def render(self) -> str:
        return f"<lora:{self.name}:{format_weight(self.weight)}>"


def format_weight(weight: float) -> str:
    """Shortest form WebUI users write: 1 not 1.0, 0.8 not 0.80."""
    return f"{weight:.4f}".rstrip("0").rstrip(".") if weight != int(weight) else str(int(weight))


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) fragments; `(BREAK, -1)` marks a chunk break.

    >>> parse_attention("a (b:1.5) [c]")
    [('a ', 1.0), ('b', 1.5), (' ', 1.0), ('c', 0.9090909090909091)]
    """
    fragments: list[list] = []  # [text, weight] so weights can be multiplied in place
    open_round: list[int] = []
    open_square: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            fragment[1] *= factor

    for match in _ATTENTION_TOKEN.finditer(text):
        token, explicit_weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            fragments.append([token[1:] or "\\", 1.0])
        elif token == "(":
            open_round.append(len(fragments))
        elif token == "[":
            open_square.append(len(fragments))
        elif explicit_weight is not None and open_round:
            multiply_from(open_round.pop(), float(explicit_weight))
        elif token == ")" and open_round:
            multiply_from(open_round.pop(), ROUND_MULTIPLIER)
        elif token == "]" and open_square:
            multiply_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK_WORD.split(token)):
                if i > 0:
                    fragments.append([BREAK, -1.0])
                fragments.append([part, 1.0])

    # Unclosed brackets still apply to everything after them, as in WebUI.
    for start in open_round:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        multiply_from(start, SQUARE_MULTIPLIER)

    merged: list[tuple[str, float]] = []
    for fragment_text, weight in fragments:
        if merged and merged[-1][1] == weight and weight != -1.0:
            merged[-1] = (merged[-1][0] + fragment_text, weight)
        elif fragment_text or weight == -1.0:
            merged.append((fragment_text, weight))
    return merged or [("", 1.0)]


def estimate_tokens(text: str) -> int:
    """CLIP tokens of `text`, estimated on the high side without loading a tokenizer.

    An English word is usually one token (common words are in CLIP's vocabulary), long rare
    words split into a few: a letter run counts 1 + len // 8. Every digit is one token, as in
    CLIP. Any other character (punctuation, brackets, CJK, emoji) counts one token per UTF-8
    byte: CLIP's byte-level BPE never spends more than that.
    """
    tokens = 0
    for match in _TOKEN_PIECE.finditer(text):
        piece = match.group(0)
        if piece.isascii() and piece.isalpha():
            tokens += 1 + len(piece) // LETTERS_PER_TOKEN
        else:
            tokens += len(piece.encode("utf-8", "surrogatepass"))
    return tokens


def estimate_chunks(text: str) -> int:
    """75-token chunks the text encoder runs for `text` as WebUI splits it: each BREAK-separated
    part fills whole chunks (`estimate_tokens`, so an estimate); an empty prompt is one chunk."""
    parts = _BREAK_WORD.split(text)
    return max(1, sum(-(-estimate_tokens(part) // CHUNK_TOKENS) or 1 for part in parts))


def extract_loras(prompt: str) -> tuple[str, list[LoraTag]]:
    """Remove `<lora:name:weight>` tags from `prompt`; return the text and the tags in order.

    Raises ValueError naming the tag when its weight is not a number. Other extra-network kinds
    (`<hypernet:...>`) are removed as WebUI does when it has no such network, and not returned.
    """
    tags: list[LoraTag] = []

    def take(match: re.Match) -> str:
        kind, args = match.group(1), match.group(2).split(":")
        if kind == "lora":
            name = args[0].strip()
            if not name:
                raise Refusal(
                    "prompt",
                    f"{match.group(0)!r} has no LoRA name",
                    "prompt_lora_tag",
                    tag=match.group(0),
                )
            weight_text = args[1].strip() if len(args) > 1 else "1"
            try:
                weight = float(weight_text)
            except ValueError:
                raise Refusal(
                    "prompt",
                    f"{match.group(0)!r} has a weight that is not a number",
                    "prompt_lora_tag",
                    tag=match.group(0),
                ) from None
            tags.append(LoraTag(name, weight))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), tags


def has_trigger(text: str, trigger: str) -> bool:
    """Whether `text` (a prompt or a caption) holds the trigger word or phrase as whole words."""
    return re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", text, re.I) is not None


def key_values(words: list[str]) -> dict[str, str]:
    """`["epochs=8", "unet_lr=5e-5"]` (chat or CLI) → a dict of stripped strings (types are
    checked by whoever uses them); ValueError naming the word that is not key=value."""
    values = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key.strip():
            raise Refusal("params", f"{word!r} is not key=value", "params_key_value", word=word)
        values[key.strip()] = value.strip()
    return values
