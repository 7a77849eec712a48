"""Prompt builder: requests per second of build_prompt (template path, no LLM) over the test
table, against jieba's segmentation of the same requests, and where Chinese words were read.

    .venv/bin/python bench/prompts.py [--rounds 5]

The requests are tests/prompts' realistic table (260 combined ops requests) plus the template
test cases. jieba, the glossary and CC-CEDICT are loaded once before timing (their load time is
printed apart). Both ways alternate round by round, so load on this shared machine hits both
alike; the figure to compare across machines is the ratio. The shares count the Chinese words of
the requests as the builder reads them: by the glossary, by the dictionary, or left in notes.
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run from anywhere in the checkout

import argparse  # noqa: E402
import asyncio  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

GOAL_MS = 20.0  # per request, template path, on the development machine
_CJK = re.compile(r"[\u3400-\u9fff]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from prompts.build import build_prompt
    from prompts.dictionary import load_dictionary
    from prompts.lexicon import load_glossary
    from prompts.template import template_prompt
    from tests.prompts.conftest import make_config
    from tests.prompts.test_requests_table import TABLE
    from tests.prompts.test_template import CASES

    # 1. the requests, the config, everything loaded once
    requests = [text for text, _ in TABLE] + [text for text, _ in CASES]
    config = make_config()
    started = time.perf_counter()
    glossary, dictionary = load_glossary(), load_dictionary()
    glossary.tokenize("达达")  # builds jieba's prefix dictionary
    print(f"load: glossary + jieba + CC-CEDICT {time.perf_counter() - started:.2f} s (once)")

    async def build_all() -> None:
        for text in requests:
            await build_prompt(text, config, use_llm=False)

    def segment_all() -> None:
        for text in requests:
            glossary.tokenize(text)

    # 2. alternate the two, after a warm-up
    asyncio.run(build_all())
    built, segmented = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        asyncio.run(build_all())
        built.append(time.perf_counter() - started)
        started = time.perf_counter()
        segment_all()
        segmented.append(time.perf_counter() - started)
    build_s, segment_s = statistics.median(built), statistics.median(segmented)
    per_request = build_s / len(requests) * 1000
    print(f"requests: {len(requests)}, rounds: {args.rounds} (medians)")
    print(f"build_prompt: {len(requests) / build_s:.0f} requests/s, {per_request:.2f} ms each")
    print(f"jieba segmentation alone: {len(requests) / segment_s:.0f} requests/s")
    print(f"ratio build / segmentation: {build_s / segment_s:.1f}")
    print(f"goal < {GOAL_MS:g} ms per request: {'met' if per_request < GOAL_MS else 'NOT met'}")

    # 3. where the Chinese words were read: glossary terms of the request outside its copy,
    # and the words the notes name as translated by the dictionary or left untranslated
    counts = {"glossary": 0, "dictionary": 0, "notes": 0}
    for text in requests:
        prompt = template_prompt(text, config)
        for copy in (prompt.title, prompt.subtitle, prompt.cta):
            text = text.replace(copy, "，") if copy else text
        tokens = glossary.tokenize(dictionary.to_simplified(text))
        counts["glossary"] += sum(
            1 for t in tokens if t.kind == "term" and _CJK.search(t.text) and t.term.category
        )
        for note in prompt.notes:
            if note.code in ("dictionary_words", "untranslated"):
                name = "dictionary" if note.code == "dictionary_words" else "notes"
                counts[name] += len(note.values["words"].split(", "))
    total = sum(counts.values())
    shares = ", ".join(f"{name} {count / total:.1%}" for name, count in counts.items())
    print(f"Chinese words read ({total}): {shares}")


if __name__ == "__main__":
    main()
