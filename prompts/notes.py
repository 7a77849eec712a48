"""What the prompt builder tells the user it guessed, dropped or left out: a code and its values.

The English text (for the CLI, the JSON and the logs) lives here; a chat adapter shows its own
language's text for the same code (the bot's catalogs: `note_<code>`), so no English reaches a
Chinese chat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NOTE_TEXTS = {
    "several_ips": "several IPs named; used {used} (one LoRA per poster), not {others}",
    "ips_together": "drew {ips} together; LoRA weights {weights}",
    "default_ip": "no IP named; used the default IP {ip}",
    "no_ip": "no IP configured: the prompt has no trigger word and no LoRA",
    "size_over_orientation": "size {size} given; ignored the word for {orientation}",
    "resized": "generating at {generated} (multiples of 64), resized to {final}",
    "raw_prompt": "raw WebUI prompt: passed through unchanged",
    "raw_options": "raw WebUI prompt passed through; applied the options said in words: {options}",
    "raw_no_ip": "the prompt names no configured IP's trigger word or LoRA",
    "several_loras": "several LoRAs: {loras}",
    "lora_tag_ignored": "ignored {tag}: the LoRA comes from the IP's config",
    "english_kept": "kept English words as tags: {words}",
    "numbers_ignored": "ignored numbers: {numbers}",
    "count_range": "{phrase} asks for {low} to {high}: drawing {count}",
    "count_unreadable": "ignored {phrase}: not a number of images",
    "untranslated": "not translated (add them to the glossary): {words}",
    "dictionary_words": "translated with the CC-CEDICT dictionary (the glossary can choose "
    "better words): {words}",
    "corrected": "read as: {words}",
    "kept_out": "not drawn (gibberish letters or a sheet of views; the poster step lays out the "
    "copy): {words}",
    "extra_poster_text": "ignored extra poster text {text}",
    "copy_space": "asked the model to leave room for the title",
    "llm_skipped": "LLM step skipped, used the template: {reason}",
    "llm_fields_ignored": "ignored LLM fields: {fields}",
    "llm_tags_removed": "removed trigger words or LoRA names from the LLM's tags",
}


@dataclass(frozen=True)
class Note:
    """One note: `code` names the message, `values` fill it; str() is the English text."""

    code: str
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in NOTE_TEXTS:
            raise ValueError(f"code: unknown note {self.code!r}")

    def __str__(self) -> str:
        return NOTE_TEXTS[self.code].format(**self.values)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "values": dict(self.values), "text": str(self)}
