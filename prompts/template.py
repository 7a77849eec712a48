"""The template step: a chat request -> a structured prompt, offline and deterministic.

    达达骑士在雪地里送快递，圣诞海报，竖版，来4张，标题「圣诞快乐」
    -> dadaknight, a cute delivery rider mascot delivering parcels in the snow at christmas,
       snowy field, snow, delivering parcels, ..., christmas, poster, ..., <lora:dada_v3:0.8>
       512x768, batch 4, title 圣诞快乐

`parse_request` reads the request into a `Draft`; `finish` renders a draft into a `PosterPrompt`.
The LLM step (prompts.llm) only replaces a draft's sentence and content tags in between, so the
trigger word, the LoRA, the size and the limits are decided here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from posterbot.config import (
    MAX_LORA_WEIGHT,
    Config,
    GenerationSettings,
    IPConfig,
    LimitsConfig,
    Preset,
)
from posterbot.errors import Refusal
from prompts.dictionary import Dictionary, load_dictionary
from prompts.fallback import fill_gaps
from prompts.lexicon import Glossary, Term, Token, load_glossary
from prompts.notes import Note
from prompts.pasted import read_pasted
from prompts.presets import find_preset, ip_layer, merge_settings
from prompts.request import (
    Options,
    extract_count,
    extract_hires,
    extract_seed,
    extract_size,
    extract_titles,
    half_width,
    simplified_outside_quotes,
    split_options,
)
from prompts.sizes import generation_size, orientation_of, orientation_size
from prompts.spec import MAX_SEED, PosterPrompt, Target, render_prompt
from prompts.syntax import BREAK, LoraTag, extract_loras, has_trigger, parse_attention

DEFAULT_SUBJECT = "a cute mascot character"  # when the IP has no description in config
MAX_CFG_SCALE = 30.0  # WebUI's slider maximum; higher values burn the image
# Beyond this a word takes over the whole image. It limits the weight the encoder applies, with
# nested brackets multiplied out: twenty `(` reach 1.1**20 ≈ 6.7 without a number typed.
MAX_ATTENTION_WEIGHT = 2.0
# WebUI users break a prompt into a few parts (subject, background, style). Each BREAK pads its
# chunk to 75 tokens, so a prompt of nothing but BREAKs (limits.max_prompt_chars / 6 of them)
# would cost hundreds of text-encoder passes and a cross-attention that wide at every step.
MAX_PROMPT_BREAKS = 4
MAX_QUOTED_WORDS = 30  # of the words a refusal names: enough to find them in the prompt
MAX_SENTENCE_PHRASES = 2  # per part of the sentence; more reads as a list, and tags carry them
SENTENCE_CATEGORIES = ("action", "scene", "festival", "season")
FRONT_CATEGORIES = ("action", "scene")  # their first tags come first: see _content_tags
# Finished sizes are resized by the poster step (Pillow), not generated, so they may exceed
# limits.max_side; this keeps a typo (20000x20000) from filling memory. 易拉宝 at 100 dpi is 7874.
MAX_TARGET_SIDE = 8192
# A poster with a title: ask the model for room and keep it from drawing its own letters.
COPY_SPACE_TAGS = ("copy space", "simple background")
COPY_SPACE_NEGATIVE = ("text", "watermark", "letters")
# 不要人 / 不要其他人物: the mascot alone, nobody around it.
SOLO_TAGS = ("solo",)
NO_PEOPLE_NEGATIVE = ("crowd", "people")

_CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")
_EXTRA_NETWORK = re.compile(r"<[^<>]*>")
_ATTENTION_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_WEIGHT = re.compile(r":\s*[+-]?[.\d]+\s*(?=\))")


@dataclass(frozen=True)
class Draft:
    """A parsed request; the LLM step may replace `sentence` and `content_tags`."""

    request: str  # the user's text, for the LLM step
    ip: IPConfig | None
    trigger: str
    lora: LoraTag | None
    sentence: str
    content_tags: list[str]  # what the request is about, in the order it said it
    quality_tags: list[str]  # after the style tags
    negative_tags: list[str]  # words the request said "不要" to
    settings: GenerationSettings
    style_tags: list[str]
    targets: list[Target]
    title: str = ""
    subtitle: str = ""
    cta: str = ""
    raw_prompt: str = ""  # a WebUI prompt passed through unchanged
    extra_loras: list[LoraTag] = field(default_factory=list)  # a second mascot's
    notes: list[Note] = field(default_factory=list)
    untranslated: list[str] = field(default_factory=list)


def is_raw_prompt(text: str, config: Config) -> bool:
    """A WebUI prompt rather than a chat request: English only, with `<lora:..>`, a `(word:1.2)`
    weight or an IP's trigger word."""
    if _CJK.search(text):
        return False
    return (
        "<lora:" in text.lower()
        or _ATTENTION_WEIGHT.search(text) is not None
        or any(has_trigger(text, ip.trigger) for ip in config.ips)
    )


def split_count(count: int, max_batch_size: int) -> tuple[int, int]:
    """Images -> (batch_size, n_iter): the largest batch that divides `count` evenly."""
    if count < 1:
        raise Refusal("count", f"{count} images; ask for at least 1", "count_too_few", count=count)
    batch = max(b for b in range(1, min(count, max_batch_size) + 1) if count % b == 0)
    return batch, count // batch


def most_images(config: Config) -> int:
    """The most images one request may ask for: the chat's limit, within what [limits] allow
    (a range, 三五张, asks for its upper end up to this)."""
    limits = config.limits
    return min(config.bot.max_count, limits.max_batch_size * limits.max_n_iter)


def check_limits(s: GenerationSettings, limits: LimitsConfig) -> None:
    """Refuse what the engine would refuse, naming the argument and the limit."""
    checks = [
        ("steps", s.steps, 1, limits.max_steps),
        ("cfg_scale", s.cfg_scale, 1, MAX_CFG_SCALE),
        ("seed", s.seed, -1, MAX_SEED),
        ("batch_size", s.batch_size, 1, limits.max_batch_size),
        ("n_iter", s.n_iter, 1, limits.max_n_iter),
    ]
    for argument, value, low, high in checks:
        if not low <= value <= high:
            raise Refusal(
                argument,
                f"{value:g} is not allowed ({low:g} to {high:g}, see [limits])",
                "out_of_range",
                field=argument,
                value=value,
                low=low,
                high=high,
            )
    scale = s.hr_scale if s.enable_hr else 1.0
    width, height = round(s.width * scale), round(s.height * scale)
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise Refusal(
            "size",
            f"{width}x{height} is larger than limits.max_side {limits.max_side} "
            f"or limits.max_pixels {limits.max_pixels}",
            "size_too_large",
            width=width,
            height=height,
        )


def _find_ips(text: str, config: Config) -> tuple[list[IPConfig], str]:
    """IPs named in `text` (by name, alias or trigger), in the order named; names removed."""
    spans: list[tuple[int, IPConfig]] = []
    names = [(n, ip) for ip in config.ips for n in {ip.name, ip.trigger, *ip.aliases}]
    for name, ip in sorted(names, key=lambda pair: len(pair[0]), reverse=True):
        pattern = re.compile(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])", re.I)
        for match in pattern.finditer(text):
            spans.append((match.start(), ip))
        text = pattern.sub(lambda m: "，" + " " * (len(m.group(0)) - 1), text)
    named: list[IPConfig] = []
    for _, ip in sorted(spans, key=lambda span: span[0]):
        if ip not in named:
            named.append(ip)
    return named, text


def _choose_ip(
    named: list[IPConfig], options: Options, ip_name: str | None, config: Config
) -> tuple[IPConfig | None, list[Note]]:
    if options.ip:
        return config.find_ip(options.ip), []
    if len(named) > config.prompts.max_ips_per_poster:
        others = ", ".join(ip.name for ip in named[config.prompts.max_ips_per_poster :])
        return named[0], [Note("several_ips", {"used": named[0].name, "others": others})]
    if named:
        return named[0], []
    if ip_name:
        return config.find_ip(ip_name), []
    ip = config.default_ip_config()
    if ip is None:
        return None, [Note("no_ip")]
    return ip, [Note("default_ip", {"ip": ip.name})]


def _together(ips: list[IPConfig], config: Config) -> tuple[str, str, list[LoraTag], list[Note]]:
    """Several mascots on one poster: (triggers, subject naming all, LoRAs, notes). The LoRA
    weights keep their proportions and add up to at most prompts.shared_lora_weight."""
    with_lora = [ip for ip in ips if ip.lora]
    total = sum(ip.lora_weight for ip in with_lora)
    scale = min(1.0, config.prompts.shared_lora_weight / total) if total else 1.0
    loras = [LoraTag(ip.lora, round(ip.lora_weight * scale, 2)) for ip in with_lora]
    subjects = [ip.description or DEFAULT_SUBJECT for ip in ips]
    subject = " and ".join(subjects) + " together"
    weights = " + ".join(f"{lora.name} {lora.weight:g}" for lora in loras) or "no LoRA"
    note = Note("ips_together", {"ips": ", ".join(ip.name for ip in ips), "weights": weights})
    return ", ".join(ip.trigger for ip in ips), subject, loras, [note]


def _sentence(subject: str, terms: list[Term]) -> str:
    def phrases(*categories: str) -> list[str]:
        found = [t.phrase for t in terms if t.category in categories and t.phrase]
        return found[:MAX_SENTENCE_PHRASES]

    parts = [
        subject,
        " and ".join(phrases("action")),
        *phrases("scene")[:1],  # one place: "in a city in a street" reads as a mistake
        *phrases("festival", "season"),
    ]
    return " ".join(part for part in parts if part)


@dataclass
class _Reading:
    """What `_read_tokens` found in a request's words."""

    terms: list[Term] = field(default_factory=list)
    english: list[str] = field(default_factory=list)  # unknown English words, kept as tags
    negated: list[str] = field(default_factory=list)  # English, for the negative prompt
    untranslated: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    solo: bool = False  # 不要人: the mascot alone
    kept_out: list[str] = field(default_factory=list)  # negative-only words asked for (文字)


def _ends_negation(tokens: list[Token], i: int, governed: bool) -> bool:
    """A space ends a negated phrase once it has said no to something, except between two
    English words ("no christmas tree" is one phrase; "不要雪 送快递" is two)."""
    if not governed:
        return False  # "不要 雪地": the space right after the negation word
    before = tokens[i - 1].text if i > 0 else ""
    after = tokens[i + 1].text if i + 1 < len(tokens) else ""
    return not (before.isascii() and after.isascii() and before.isalnum() and after.isalnum())


def _bare_verb(terms: list[Term], tokens: list[Token], i: int) -> Term | None:
    """The last term read, when it is a verb alone (喝 "drinking") said right before token i."""
    if not terms or i == 0 or tokens[i - 1].term is not terms[-1]:
        return None
    verb = terms[-1]
    if verb.category != "action" or len(verb.phrase.split()) != 1 or verb.tags != (verb.phrase,):
        return None
    return verb


def _verb_object(verb: Term, thing: Term) -> Term:
    """喝 + 豆浆 -> "drinking soy milk", as the action and its tag, and the thing's own tags."""
    action = f"{verb.phrase} {thing.tags[0]}"
    source = "dictionary" if "dictionary" in (verb.source, thing.source) else "glossary"
    return Term(verb.word + thing.word, "action", (action, *thing.tags), action, source)


def _read_tokens(tokens: list[Token], glossary: Glossary) -> _Reading:
    """Walk the tokens: a negation ("不要", "no" ...) governs the phrase it starts, up to the next
    separator (punctuation, or a space between Chinese words); a replace word ("换成") swaps the
    earlier terms of the next term's kind."""
    found = _Reading()
    negating = replacing = governed = False
    previous_end = -1
    for i, token in enumerate(tokens):
        if token.kind == "space":
            if negating and _ends_negation(tokens, i, governed):
                negating = False
            continue
        if token.kind == "break":
            negating = replacing = False
        elif token.kind == "negation":
            negating, governed = True, False
        elif token.kind == "replace":
            replacing = True
        elif negating and token.text.lower() in glossary.solo_words:
            found.solo, governed = True, True  # 不要人, 不要其他人物, no people
        elif token.kind == "term" and token.term is not None:
            if negating:
                term = token.term
                found.negated.append(term.tags[0] if term.tags else term.phrase)
                governed = True
            elif token.term.negative_only:
                found.kept_out.append(token.text)  # 加上文字: the poster step lays out copy
            elif token.term not in found.terms:
                if (verb := _bare_verb(found.terms, tokens, i)) and token.term.category == "prop":
                    found.terms[-1] = _verb_object(verb, token.term)  # 喝 + 豆浆
                    previous_end = -1
                    continue
                if replacing:  # 换成国潮: the earlier style (or scene, action ...) goes
                    kind = token.term.category
                    found.terms = [term for term in found.terms if term.category != kind]
                    replacing = False
                found.terms.append(token.term)
        elif token.kind == "unknown":
            word = token.text
            joined = previous_end >= 0 and token.start - previous_end <= 1
            if not word.isascii():
                found.untranslated.append(word)
                governed = governed or negating
            elif not any(char.isalpha() for char in word):
                found.numbers.append(word)
            elif negating:  # "without seagulls": English, so it can go to the negative prompt
                if governed and joined and found.negated:
                    found.negated[-1] += " " + word.lower()
                else:
                    found.negated.append(word.lower())
                governed = True
            elif found.english and joined:
                found.english[-1] += " " + word.lower()  # "ice cream" stays one tag
            else:
                found.english.append(word.lower())
            previous_end = token.start + len(word) if word.isascii() else -1
            continue
        previous_end = -1
    return found


def _size(
    settings: GenerationSettings,
    targets: list[Target],
    orientation: str | None,
    notes: list[Note],
) -> tuple[GenerationSettings, list[Target]]:
    """Apply the request's sizes: the first finished size gives the generation size its shape
    (64-multiples near the default area); an orientation word alone keeps the default's short
    side. Returns the settings and the targets still to fit (none when the generation size is
    the one finished size)."""
    if not targets:
        if orientation:
            width, height = orientation_size(orientation, settings.width, settings.height)
            return replace(settings, width=width, height=height), []
        return settings, []
    main = targets[0]
    if orientation and orientation != orientation_of(main.width, main.height):
        notes.append(Note("size_over_orientation", {"size": main.name, "orientation": orientation}))
    area = settings.width * settings.height
    width, height = generation_size(main.width, main.height, max_area=area)
    if targets == [Target(main.name, width, height)]:
        targets = []  # 512x512 asked for and generated: nothing left to fit
    else:
        final = ", ".join(f"{target.width}x{target.height}" for target in targets)
        notes.append(Note("resized", {"generated": f"{width}x{height}", "final": final}))
    return replace(settings, width=width, height=height), targets


def check_attention(prompt: str) -> None:
    """Refuse a WebUI prompt whose words the encoder would weigh outside 0 to
    MAX_ATTENTION_WEIGHT, by the weights `prompts.syntax.parse_attention` gives them (the
    engine encodes with the same parser), or that breaks more than MAX_PROMPT_BREAKS times."""
    fragments = parse_attention(prompt)
    breaks = fragments.count((BREAK, -1.0))
    if breaks > MAX_PROMPT_BREAKS:
        raise Refusal(
            "prompt",
            f"{breaks} BREAKs; at most {MAX_PROMPT_BREAKS} (each one starts a 75-token chunk)",
            "prompt_breaks",
            count=breaks,
            limit=MAX_PROMPT_BREAKS,
        )
    for words, weight in fragments:
        if (words, weight) == (BREAK, -1.0) or not words.strip():
            continue
        if not 0 <= weight <= MAX_ATTENTION_WEIGHT:
            quoted = " ".join(words.split())[:MAX_QUOTED_WORDS]
            raise Refusal(
                "prompt",
                f"attention weight {round(weight, 2):g} of {quoted!r} is outside 0 to "
                f"{MAX_ATTENTION_WEIGHT:g} (brackets multiply: (x) ×1.1, [x] ÷1.1, (x:w) ×w)",
                "prompt_attention_weight",
                weight=round(weight, 2),
                limit=MAX_ATTENTION_WEIGHT,
                words=quoted,
            )


def _raw_draft(text: str, options: Options, settings_layers: list, config: Config) -> Draft:
    """A WebUI prompt: validated, then passed through unchanged."""
    body, loras = extract_loras(text)
    for lora in loras:
        if abs(lora.weight) > MAX_LORA_WEIGHT:
            raise Refusal(
                "prompt",
                f"<lora:{lora.name}:{lora.weight}> weight is outside ±{MAX_LORA_WEIGHT:g}",
                "prompt_weight",
                weight=lora.weight,
                limit=MAX_LORA_WEIGHT,
            )
    check_attention(body)
    if options.ip:
        ip = config.find_ip(options.ip)
    else:
        lora_names = {lora.name for lora in loras}
        named = (ip for ip in config.ips if has_trigger(text, ip.trigger) or ip.lora in lora_names)
        ip = next(named, None)
    notes = [Note("raw_prompt")]
    if ip is None:
        notes.append(Note("raw_no_ip"))
    if len(loras) > 1:
        notes.append(Note("several_loras", {"loras": ", ".join(lora.render() for lora in loras)}))
    parts = [part.strip() for part in body.split(",")]
    trigger = ip.trigger if ip and has_trigger(text, ip.trigger) else ""
    tags = [part for part in parts if part and part.lower() != trigger.lower()]
    layers = [*settings_layers, ip_layer(ip) if ip else None]
    settings, style_tags = merge_settings(layers, config.generation)
    return Draft(
        request=text,
        ip=ip,
        trigger=trigger,
        lora=loras[0] if loras else None,
        sentence="",
        content_tags=tags,
        quality_tags=[],
        negative_tags=[],
        settings=settings,
        style_tags=style_tags,
        targets=[],
        raw_prompt=text.strip(),
        notes=notes,
    )


def parse_request(
    request: str,
    config: Config,
    *,
    template: Preset | None = None,
    ip_name: str | None = None,
    glossary: Glossary | None = None,
    dictionary: Dictionary | None = None,
) -> Draft:
    """Read a chat request (or a raw WebUI prompt) into a Draft.

    `template` is the user's parameter template; `ip_name` the user's chosen IP (a request that
    names an IP, or `--ip`, wins). Raises ValueError naming the argument when the request asks for
    something invalid or beyond config [limits].
    """
    # 1. check inputs
    if not isinstance(request, str) or not request.strip():
        raise Refusal(
            "request", "empty; describe the poster, e.g. 达达骑士在雪地里送快递", "request_empty"
        )
    if len(request) > config.limits.max_prompt_chars:
        limit = config.limits.max_prompt_chars
        raise Refusal(
            "request",
            f"{len(request)} characters, more than limits.max_prompt_chars {limit}",
            "prompt_too_long",
            limit=limit,
        )
    glossary = glossary or load_glossary(config.prompts.glossary_dir)
    dictionary = dictionary or load_dictionary()

    # 2. options, then a raw WebUI prompt passes through; full-width digits and letters (１２张)
    # are the ASCII ones
    text, options = split_options(half_width(request))
    if options.preset:
        template = find_preset(config, options.preset)
    # The size is applied after merging (a named size maps to a generation size).
    request_settings = dict(options.settings)
    width, height = request_settings.pop("width", None), request_settings.pop("height", None)
    if (width is None) != (height is None):
        raise Refusal("--width/--height", "give both, or --size WIDTHxHEIGHT", "option_size")
    option_targets = [Target(f"{width}x{height}", width, height)] if width is not None else []
    if is_raw_prompt(text, config):
        request_layer = Preset(settings=request_settings)
        draft = _raw_draft(text, options, [request_layer, template], config)
        return _finish_parameters(draft, option_targets, None, None, config)
    if pasted := read_pasted(text, config, glossary, most_images(config)):
        # a WebUI prompt with options said in words (竖版 来4张): the prompt as typed
        if pasted.seed is not None:
            request_settings.setdefault("seed", pasted.seed)
        if pasted.hires:
            request_settings.setdefault("enable_hr", True)
        request_layer = Preset(settings=request_settings)
        draft = _raw_draft(pasted.prompt, options, [request_layer, template], config)
        option_note = Note("raw_options", {"options": ", ".join(pasted.options)})
        draft = replace(draft, notes=[*draft.notes, option_note])
        targets = option_targets or pasted.targets
        return _finish_parameters(draft, targets, pasted.orientation, pasted.count, config)

    # 3. the parts that are not picture: poster text, seed, size, hires, count. Traditional
    # characters read as simplified (the copy in quotes stays as typed). LoRA tags typed into a
    # chat request are not obeyed, and go first: <lora:dada_v3:1> holds no 3:1 and no IP name.
    lora_notes = [Note("lora_tag_ignored", {"tag": tag}) for tag in _EXTRA_NETWORK.findall(text)]
    text = _EXTRA_NETWORK.sub("，", text)
    text, corrections = simplified_outside_quotes(text, dictionary)
    title, subtitle, cta, text, notes = extract_titles(text)
    notes = lora_notes + notes
    seed, text = extract_seed(text)
    targets, orientation, text = extract_size(text, glossary)
    hires, text = extract_hires(text, glossary)
    count, text, count_notes = extract_count(text, most_images(config))
    notes += count_notes
    if seed is not None:
        request_settings.setdefault("seed", seed)
    if hires:
        request_settings.setdefault("enable_hr", True)

    # 4. which IP
    named, text = _find_ips(text, config)
    ip, ip_notes = _choose_ip(named, options, ip_name, config)
    notes += ip_notes

    # 5. the glossary, then typos and the dictionary for its gaps: terms, English words,
    # negations, untranslated words
    filled = fill_gaps(glossary.tokenize(text), glossary, dictionary)
    reading = _read_tokens(filled.tokens, glossary)
    corrections += [f"{typed} → {word}" for typed, word in filled.corrections]
    if corrections:
        notes.append(Note("corrected", {"words": ", ".join(corrections)}))
    if filled.dictionary:
        words = ", ".join(dict.fromkeys(f"{word} {english}" for word, english in filled.dictionary))
        notes.append(Note("dictionary_words", {"words": words}))
    terms, english, untranslated, numbers = (
        reading.terms,
        reading.english,
        reading.untranslated,
        reading.numbers,
    )
    negated = list(reading.negated)
    solo = list(SOLO_TAGS) if reading.solo else []  # 不要人: the mascot alone
    if reading.solo:
        negated += [word for word in NO_PEOPLE_NEGATIVE if word not in negated]
    if reading.kept_out:
        notes.append(Note("kept_out", {"words": ", ".join(reading.kept_out)}))
    if english:
        notes.append(Note("english_kept", {"words": ", ".join(english)}))
    if numbers:
        notes.append(Note("numbers_ignored", {"numbers": ", ".join(numbers)}))
    styles = [tag for term in terms if term.category == "style" for tag in term.tags]
    request_layer = Preset(settings=request_settings, style_tags=styles or None)
    content = _content_tags(terms)
    quality = [t for term in terms if term.category == "quality" for t in term.tags]

    # 6. settings: request > template > IP > global
    layers = [request_layer, template, ip_layer(ip) if ip else None]
    settings, style_tags = merge_settings(layers, config.generation)
    subject = (ip.description if ip else "") or DEFAULT_SUBJECT
    # what the request (or the IP's negative prompt) says no to stays out of the sentence too
    said_no = _negative_words(", ".join([*negated, settings.negative_prompt]))
    trigger = ip.trigger if ip else ""
    loras = [LoraTag(ip.lora, ip.lora_weight)] if ip and ip.lora else []
    together = named[: config.prompts.max_ips_per_poster] if not options.ip else []
    if len(together) > 1 and ip is together[0]:  # 达达和京东狗一起: both on the poster
        trigger, subject, loras, together_notes = _together(together, config)
        notes += together_notes
    draft = Draft(
        request=request,
        ip=ip,
        trigger=trigger,
        lora=loras[0] if loras else None,
        extra_loras=loras[1:],
        sentence=_sentence(
            subject, [term for term in terms if not _said_no_to(term.phrase, said_no)]
        ),
        content_tags=_unique([*solo, *content, *english]),
        quality_tags=[*(ip.quality_tags if ip else []), *quality],
        negative_tags=negated,
        settings=settings,
        style_tags=style_tags,
        targets=[],
        title=title,
        subtitle=subtitle,
        cta=cta,
        notes=notes,
        untranslated=untranslated,
    )
    return _finish_parameters(draft, option_targets or targets, orientation, count, config)


def _finish_parameters(
    draft: Draft,
    targets: list[Target],
    orientation: str | None,
    count: int | None,
    config: Config,
) -> Draft:
    """Size, batch and limits, the same for chat requests and raw prompts."""
    notes = list(draft.notes)
    settings, targets = _size(draft.settings, targets, orientation, notes)
    if count:  # "来4张" in the words; `--batch-size`/`--n-iter` are in the settings already
        batch_size, n_iter = split_count(count, config.limits.max_batch_size)
        if n_iter > config.limits.max_n_iter:
            limit = config.limits.max_n_iter * config.limits.max_batch_size
            raise Refusal(
                "count",
                f"{count} images cannot be made in at most {config.limits.max_n_iter} "
                f"batches of up to {config.limits.max_batch_size} (see [limits])",
                "count_too_many",
                count=count,
                limit=limit,
            )
        settings = replace(settings, batch_size=batch_size, n_iter=n_iter)
    check_limits(settings, config.limits)
    for target in targets:
        if max(target.width, target.height) > MAX_TARGET_SIDE:
            raise Refusal(
                "size",
                f"{target.width}x{target.height} is larger than {MAX_TARGET_SIDE} pixels a side",
                "size_too_large",
                width=target.width,
                height=target.height,
            )
    return replace(draft, settings=settings, targets=targets, notes=notes)


def _content_tags(terms: list[Term]) -> list[str]:
    """What the request is about: the first tag of each action and place first (with the trigger
    and the sentence they fit in CLIP's first 75-token chunk, which weighs most), then every
    term's tags in the order said."""
    front = [term.tags[0] for term in terms if term.category in FRONT_CATEGORIES and term.tags]
    rest = [tag for term in terms if term.category not in ("style", "quality") for tag in term.tags]
    return _unique([*front, *rest])


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _plain(tag: str) -> str:
    """A tag compared as singular words: "red lanterns" -> "red lantern"."""
    return " ".join(_singular(word) for word in tag.lower().split())


def merge_near_duplicates(tags: list[str]) -> list[str]:
    """Keep one of tags that say the same: singular and plural ("lantern", "lanterns"), and a
    word another tag already holds at its end ("mooncake" after "eating mooncake", "sale" with
    "flash sale"): the fuller tag stays, where the first of them stood."""
    plain = [_plain(tag) for tag in tags]
    kept: list[str] = []
    seen: set[str] = set()
    for tag, words in zip(tags, plain, strict=True):
        fuller = any(other != words and other.endswith(" " + words) for other in plain)
        if words not in seen and not fuller:
            kept.append(tag)
        seen.add(words)
    return kept


def _unique(words: list[str]) -> list[str]:
    seen: set[str] = set()
    return [w for w in words if not (w.lower() in seen or seen.add(w.lower()))]


def _negative_words(negative_prompt: str) -> list[str]:
    """The words of a negative prompt, lower-case, without weights: `(worst quality:1.4)` ->
    `worst quality`."""
    words = (_WEIGHT.sub("", part).strip(" ()[]").lower() for part in negative_prompt.split(","))
    return [word for word in words if word]


def _said_no_to(tag: str, negative: list[str]) -> bool:
    """Whether `tag` holds a word of the negative prompt: drawing it would fight the negative
    prompt (不要圣诞树 and the christmas tree of 圣诞's tags; `text` and "empty space for text")."""
    tag = tag.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", tag) for word in negative)


def finish(draft: Draft, source: str = "template", notes: list[Note] | None = None) -> PosterPrompt:
    """Render a draft: trigger, sentence, tags (content, style, room for the title, quality),
    LoRA. A tag holding a word of the negative prompt is left out: what the request said no to
    is never drawn, even when a festival or style brings it."""
    all_notes = [*draft.notes, *(notes or [])]
    # The poster step lays the title over the picture: it needs a quiet area and no letters.
    copy_space = bool(draft.title) and not draft.raw_prompt
    # Words the request said no to go first, unless the negative prompt already has them.
    already = set(_negative_words(draft.settings.negative_prompt))
    no_letters = list(COPY_SPACE_NEGATIVE) if copy_space else []
    extra = [
        tag for tag in _unique([*draft.negative_tags, *no_letters]) if tag.lower() not in already
    ]
    negative = ", ".join(part for part in [*extra, draft.settings.negative_prompt] if part)
    if draft.raw_prompt:
        tags, prompt = draft.content_tags, draft.raw_prompt
    else:
        room = list(COPY_SPACE_TAGS) if copy_space else []
        tags = _unique([*draft.content_tags, *draft.style_tags, *room, *draft.quality_tags])
        tags = merge_near_duplicates(tags)
        said_no = _negative_words(negative)
        tags = [tag for tag in tags if not _said_no_to(tag, said_no)]
        prompt = render_prompt(draft.trigger, draft.sentence, tags, draft.lora, draft.extra_loras)
        if source == "template" and draft.untranslated:
            all_notes.append(Note("untranslated", {"words": ", ".join(draft.untranslated)}))
        if copy_space:
            all_notes.append(Note("copy_space"))
    return PosterPrompt(
        **(draft.settings.settings() | {"negative_prompt": negative}),
        ip=draft.ip.name if draft.ip else "",
        trigger=draft.trigger,
        natural_language=draft.sentence,
        tags=tags,
        lora=draft.lora,
        prompt=prompt,
        title=draft.title,
        subtitle=draft.subtitle,
        cta=draft.cta,
        source=source,
        targets=draft.targets,
        notes=all_notes,
        extra_loras=draft.extra_loras,
    )


def template_prompt(
    request: str,
    config: Config,
    *,
    template: Preset | None = None,
    ip_name: str | None = None,
) -> PosterPrompt:
    """The template step alone: offline, deterministic. See `parse_request` for the arguments."""
    return finish(parse_request(request, config, template=template, ip_name=ip_name))
