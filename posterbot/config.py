"""Configuration: `config.toml` + `POSTERBOT_SECTION__KEY` env overrides, validated at start.

This module sits below every package (it imports only the standard library), so `prompts`,
`engine` and `bot` all read the same typed `Config`. A bad value raises `ConfigError` naming the
key and the reason; start-up stops there instead of failing later in a worker.

Secrets never live in the file: `TELEGRAM_BOT_TOKEN`, `POSTERBOT_ENGINE_TOKEN`,
`POSTERBOT_LLM_API_KEY` are read from the environment by the code that needs them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posterbot.errors import Refusal

ENV_PREFIX = "POSTERBOT_"
TOP_LEVEL_ENV_KEYS = ("data_dir", "default_ip")  # POSTERBOT_DATA_DIR, POSTERBOT_DEFAULT_IP


class ConfigError(ValueError):
    """A configuration value that cannot be used; `key` is its dotted name."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config key '{key}': {reason}")
        self.key = key
        self.reason = reason


def _require(condition: bool, key: str, reason: str) -> None:
    if not condition:
        raise ConfigError(key, reason)


@dataclass(frozen=True)
class ModelsConfig:
    # "" = the offline demo model; otherwise a hub id, a diffusers folder or a .safetensors file
    # (a bare name is looked up in <data_dir>/models/Stable-diffusion).
    base: str = ""
    vae: str = ""  # "" = the checkpoint's own VAE; else a folder or file (see models/VAE)
    # Diffusers config folder for single-file checkpoints ("" = the shipped one its keys show).
    single_file_config: str = ""
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (float16 on GPU, float32 on CPU) | float16 | bfloat16 | float32
    channels_last: bool = False
    fuse_lora: bool = False  # fuse a LoRA set that stays the same between jobs (faster on GPU)
    lora_cache_size: int = 8  # adapters kept loaded between jobs

    def __post_init__(self) -> None:
        _require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "models.device",
            f"must be auto, cpu, cuda or cuda:N, not {self.device!r}",
        )
        _require(
            self.dtype in ("auto", "float16", "bfloat16", "float32"),
            "models.dtype",
            f"must be auto, float16, bfloat16 or float32, not {self.dtype!r}",
        )
        _require(self.lora_cache_size >= 1, "models.lora_cache_size", "must be at least 1")


@dataclass(frozen=True)
class GenerationSettings:
    """Every setting of one generation, with WebUI's API field names (docs/engine-api.md).

    This is the one shape of "generation settings": `[generation]` holds their defaults, a preset,
    an IP, a user's template and a request each override some of them (`Preset`), the prompt
    builder's `PosterPrompt` and the engine's `GenerationParams` extend it with the prompt. A new
    generation setting is a field here (with its default) and nothing else that copies fields.
    """

    negative_prompt: str = ""
    seed: int = -1  # -1 = a new random seed each time
    subseed: int = -1
    subseed_strength: float = 0.0  # WebUI's "Variation strength"
    sampler_name: str = "DPM++ 2M Karras"
    steps: int = 25
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 768
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    enable_hr: bool = False  # hires fix
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0 = as many as the first pass, like WebUI
    hr_resize_x: int = 0  # 0 = hr_scale decides
    hr_resize_y: int = 0
    denoising_strength: float = 0.45

    def settings(self) -> dict[str, Any]:
        """The generation settings by WebUI name, without the fields a subclass adds."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(GenerationSettings)}


def _check_generation(settings: GenerationSettings, key: str, size_multiple: int) -> None:
    """The checks that hold for every layer of settings; limits are checked per request."""
    for name in ("width", "height"):
        value = getattr(settings, name)
        _require(
            value > 0 and value % size_multiple == 0,
            f"{key}.{name}",
            f"must be a positive multiple of {size_multiple}, not {value}",
        )
    for name in ("steps", "clip_skip", "batch_size", "n_iter"):
        _require(getattr(settings, name) >= 1, f"{key}.{name}", "must be at least 1")
    _require(settings.cfg_scale > 0, f"{key}.cfg_scale", "must be positive")
    for name in ("denoising_strength", "subseed_strength"):
        value = getattr(settings, name)
        _require(0.0 <= value <= 1.0, f"{key}.{name}", "must be between 0 and 1")


@dataclass(frozen=True)
class LimitsConfig:
    """What one request may ask for; larger asks are refused with the limit's name."""

    max_pixels: int = 2048 * 2048  # final image area, hires included
    max_side: int = 4096
    max_steps: int = 150
    max_batch_size: int = 8
    max_n_iter: int = 16
    max_prompt_chars: int = 4000  # prompt and negative prompt, each
    # Each text field in UTF-8 bytes: 4000 CJK characters take 12000. Checked before anything
    # reads the text further.
    max_text_bytes: int = 16384
    # 75-token chunks of a prompt or negative prompt (BREAK parts fill whole chunks), estimated
    # on the high side without a tokenizer (prompts.syntax.estimate_chunks): each chunk is one
    # more text-encoder pass and a longer cross-attention context in every denoising step.
    max_prompt_chunks: int = 20

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _require(getattr(self, f.name) >= 1, f"limits.{f.name}", "must be at least 1")


@dataclass(frozen=True)
class EngineConfig:
    host: str = "127.0.0.1"
    port: int = 7861
    devices: list[str] = field(default_factory=lambda: ["auto"])  # one worker per device
    max_queue: int = 200  # queued jobs beyond this are refused with "busy, try again"
    max_batch: int = 4  # compatible queued jobs (same batch key) run together, up to this many
    job_timeout_s: int = 900  # a job running longer fails and its worker is killed and restarted
    lease_s: int = 60  # a claim expires unless the worker's heartbeat (every lease_s / 3) renews it
    max_attempts: int = 3
    max_body_bytes: int = 16 * 2**20  # larger request bodies get 413
    # Seconds between a running job's progress writes: each is a durable SQLite commit, and
    # followers poll at about this rate anyway.
    progress_s: float = 0.5
    # Seconds between an idle worker's claims and between a running job's cancellation checks:
    # the longest a queued job waits for an idle worker, or a cancel for the next step to stop.
    poll_s: float = 0.5
    # HTTP basic auth for /sdapi/v1 (WebUI's --api-auth) is read only from the environment:
    # POSTERBOT_API_AUTH=user:pass. POSTERBOT_ENGINE_TOKEN (bearer) guards /v1 and /metrics.

    def __post_init__(self) -> None:
        _require(1 <= self.port <= 65535, "engine.port", "must be between 1 and 65535")
        _require(bool(self.devices), "engine.devices", "needs at least one device")
        for name in ("max_queue", "max_batch", "job_timeout_s", "lease_s", "max_attempts"):
            _require(getattr(self, name) >= 1, f"engine.{name}", "must be at least 1")
        for name in ("progress_s", "poll_s"):
            _require(getattr(self, name) > 0, f"engine.{name}", "must be positive")


@dataclass(frozen=True)
class QueueConfig:
    """Where jobs wait: the embedded SQLite file, or a Valkey/Redis server shared by many hosts."""

    # "" = sqlite:///<data_dir>/engine.db; sqlite:///PATH; redis://[:password@]host:port/db
    # (Valkey or Redis >= 6.2; rediss:// for TLS). A password is better given in the URL's
    # environment override POSTERBOT_QUEUE__URL than in the file.
    url: str = ""
    # The worker pool this host's workers serve and where jobs go that no announced worker asks
    # for by model or kind (posterbot worker --pool overrides it for one worker).
    pool: str = "default"

    def __post_init__(self) -> None:
        _require(
            self.url == "" or self.url.startswith(("sqlite:///", "redis://", "rediss://")),
            "queue.url",
            "must be empty, sqlite:///PATH, redis://host:port/db or rediss://...",
        )
        _require(
            bool(re.fullmatch(r"[a-z0-9_-]{1,32}", self.pool)),
            "queue.pool",
            "must be 1-32 of a-z 0-9 _ -",
        )


# LoRA weights beyond this distort the mascot instead of strengthening it (WebUI's slider max).
MAX_LORA_WEIGHT = 2.0

# What fits on a poster, in characters: one or two title lines, a subtitle, one button or date
# line, and a brand's fixed footer line. The prompt builder, the poster layer and the brand kit
# all check against this one table.
COPY_LIMITS = {"title": 40, "subtitle": 80, "cta": 40, "footer": 40}


def check_copy_length(field: str, text: str) -> None:
    """Refusal `text_too_long` naming `field` when `text` is longer than a poster fits."""
    limit = COPY_LIMITS[field]
    if len(text) > limit:
        raise Refusal(
            field,
            f"{len(text)} characters, the poster fits {limit}",
            "text_too_long",
            field=field,
            count=len(text),
            limit=limit,
        )


LOGO_CORNERS = ("auto", "top-left", "top-right", "bottom-left", "bottom-right")
_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class BrandConfig:
    """An IP's brand kit for finished posters ([ips.brand])."""

    logo: str = ""  # a PNG with alpha; a relative path is under data_dir ("" = no logo)
    logo_corner: str = "auto"  # auto = the free corner with the least of the picture's subject
    logo_width: float = 0.18  # share of the poster's width
    colours: list[str] = field(default_factory=list)  # "#rrggbb" text colours, preferred first
    band_colour: str = ""  # "#rrggbb" behind the title when the picture is too busy ("" = ink)
    fonts: list[str] = field(default_factory=list)  # bundled family names or font files, first
    footer: str = ""  # a fixed line on every poster, e.g. the slogan

    def check(self, key: str) -> None:
        _require(
            self.logo_corner in LOGO_CORNERS,
            f"{key}.logo_corner",
            f"must be one of {', '.join(LOGO_CORNERS)}, not {self.logo_corner!r}",
        )
        _require(0.05 <= self.logo_width <= 0.5, f"{key}.logo_width", "must be 0.05 to 0.5")
        for colour in self.colours:
            _require(
                _HEX_COLOUR.fullmatch(colour) is not None,
                f"{key}.colours",
                f"must be #rrggbb, not {colour!r}",
            )
        _require(
            self.band_colour == "" or _HEX_COLOUR.fullmatch(self.band_colour) is not None,
            f"{key}.band_colour",
            f"must be #rrggbb, not {self.band_colour!r}",
        )
        limit = COPY_LIMITS["footer"]
        _require(len(self.footer) <= limit, f"{key}.footer", f"must be at most {limit} characters")


@dataclass(frozen=True)
class IPConfig:
    """A mascot ("IP"): how requests name it and what its prompts always carry."""

    name: str
    trigger: str  # the word the LoRA was trained on; always first in the prompt
    lora: str = ""  # LoRA file name in models/Lora without extension; "" = none
    lora_weight: float = 0.8
    aliases: list[str] = field(default_factory=list)  # zh/en names users type
    # English subject of the prompt's sentence, e.g. "a cute delivery rider mascot".
    description: str = ""
    negative_prompt: str = ""
    style_tags: list[str] = field(default_factory=list)  # replaced by a style the request names
    quality_tags: list[str] = field(default_factory=list)  # always added, after the style
    brand: BrandConfig = field(default_factory=BrandConfig)  # logo, colours, fonts, footer

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "ips.name", "must not be empty")
        key = f"ips[{self.name}]"
        self.brand.check(f"{key}.brand")
        _require(bool(self.trigger.strip()), f"{key}.trigger", "must not be empty")
        _require(
            self.trigger.isascii() and "," not in self.trigger,
            f"{key}.trigger",
            f"must be one English word or phrase without commas, not {self.trigger!r}",
        )
        _require(
            self.lora == "" or re.fullmatch(r"[\w.-]+", self.lora) is not None,
            f"{key}.lora",
            f"must be a file name without extension (letters, digits, _ . -), not {self.lora!r}",
        )
        _require(
            0.0 <= self.lora_weight <= MAX_LORA_WEIGHT,
            f"{key}.lora_weight",
            f"must be 0 to {MAX_LORA_WEIGHT:g}",
        )


@dataclass(frozen=True)
class LLMConfig:
    """An OpenAI-compatible chat-completions endpoint; key from POSTERBOT_LLM_API_KEY."""

    enabled: bool = False
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    timeout_s: float = 8.0  # after this the template result is used; chat users are waiting

    def __post_init__(self) -> None:
        _require(self.timeout_s > 0, "llm.timeout_s", "must be positive")
        _require(
            self.base_url.startswith(("http://", "https://")),
            "llm.base_url",
            "must start with http:// or https://",
        )
        _require(bool(self.model.strip()), "llm.model", "must not be empty")


@dataclass(frozen=True)
class PromptsConfig:
    # A folder of extra glossary .toml files (same layout as prompts/glossary/); their entries
    # add to and override the built-in ones, so admins extend the vocabulary without a release.
    glossary_dir: str = ""
    # Mascots one poster may draw together ("达达和京东狗一起…": both triggers and LoRAs); 1 = the
    # first one named only. Their LoRA weights are scaled down to add up to at most
    # shared_lora_weight: two LoRAs at full weight fight over every face.
    max_ips_per_poster: int = 2
    shared_lora_weight: float = 1.2

    def __post_init__(self) -> None:
        _require(self.max_ips_per_poster >= 1, "prompts.max_ips_per_poster", "must be at least 1")
        _require(
            0.0 < self.shared_lora_weight <= MAX_LORA_WEIGHT * 2,
            "prompts.shared_lora_weight",
            f"must be above 0 and at most {MAX_LORA_WEIGHT * 2:g}",
        )


# Names of earlier releases, so an old [presets.NAME] table gets a pointer instead of a riddle.
_RENAMED_SETTINGS = {"sampler": "sampler_name", "hires": "enable_hr"}


@dataclass(frozen=True)
class Preset:
    """A parameter template ("起手式"): the generation settings it sets and, optionally, style tags.

    Named ones come from config ([presets.NAME], keys as in [generation] plus `style_tags`); the
    bot stores users' own in this shape too. What a preset leaves out falls through to the next
    layer: request > template > IP > [generation].
    """

    settings: dict[str, Any] = field(default_factory=dict)  # GenerationSettings field → value
    style_tags: list[str] | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], key: str = "preset") -> Preset:
        """A preset from its TOML table; ConfigError naming `key.field` for a bad entry."""
        hints = typing.get_type_hints(GenerationSettings)
        settings, style_tags = {}, None
        for name, value in table.items():
            if name == "style_tags":
                style_tags = _convert(value, list[str], f"{key}.{name}")
                continue
            hint = f"; it is now {_RENAMED_SETTINGS[name]!r}" if name in _RENAMED_SETTINGS else ""
            _require(name in hints, f"{key}.{name}", f"unknown setting (see [generation]){hint}")
            settings[name] = _convert(value, hints[name], f"{key}.{name}")
        # Templates are written by hand: sizes a model was trained on are multiples of 64.
        _check_generation(dataclasses.replace(GenerationSettings(), **settings), key, 64)
        return cls(settings=settings, style_tags=style_tags)


@dataclass(frozen=True)
class TelegramConfig:
    """How the bot reaches Telegram; the token comes only from TELEGRAM_BOT_TOKEN."""

    # A self-hosted Bot API server lifts the 20 MB download / 50 MB upload limits.
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    mode: str = "polling"  # polling | webhook
    webhook_url: str = ""  # public https URL Telegram posts updates to (webhook mode)
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    # Pending updates are answered after a restart unless this is true (nobody's request is lost).
    drop_pending_updates: bool = False
    admin_chat_id: int = 0  # 0 = none; errors are reported here
    # Progress edits: Telegram allows ~1 message/s per chat and 20/min per group.
    progress_interval_private_s: float = 1.0
    progress_interval_group_s: float = 3.0
    send_retries: int = 5  # a failed send of a result is retried this often, then reported

    def __post_init__(self) -> None:
        _require(
            self.mode in ("polling", "webhook"),
            "telegram.mode",
            f"must be polling or webhook, not {self.mode!r}",
        )
        _require(
            self.mode == "polling" or self.webhook_url.startswith("https://"),
            "telegram.webhook_url",
            "webhook mode needs an https:// URL",
        )
        for name in ("progress_interval_private_s", "progress_interval_group_s"):
            _require(getattr(self, name) > 0, f"telegram.{name}", "must be positive")
        _require(self.send_retries >= 0, "telegram.send_retries", "must be 0 or more")


@dataclass(frozen=True)
class AccessConfig:
    """Who may use the bot (Telegram ids); /allow, /deny and /admins add to these at runtime."""

    owners: list[int] = field(default_factory=list)  # everything, and cannot be denied
    admins: list[int] = field(default_factory=list)  # /allow, /deny, press anyone's buttons
    users: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)  # chat ids (negative); members may ask there


@dataclass(frozen=True)
class BotConfig:
    """What one user may ask of the bot; admins are not limited by the quota."""

    engine_url: str = ""  # "" = http://<engine.host>:<engine.port>; token: POSTERBOT_ENGINE_TOKEN
    default_count: int = 4  # candidates per request ("draw many cards cheaply")
    max_count: int = 8
    max_steps: int = 50
    max_side: int = 1536  # generation size, before hires fix
    concurrent_jobs: int = 2  # per user; more waits for one to finish
    daily_quota: int = 0  # jobs per user per day; 0 = unlimited
    variation_strength: float = 0.3  # WebUI's "Variation strength" for the variations button
    # How far a poster drawn from a sent picture may move away from it (img2img's denoising
    # strength): lower keeps the picture, higher follows the request; the buttons step it.
    picture_strength: float = 0.55
    # The ControlNet model (name in models/ControlNet) for "按这个草图" (sketch), "参考构图"
    # (layout) and "照这个姿势" (pose); one left out is the first installed whose name says
    # scribble/lineart/canny, canny/lineart, or openpose.
    controlnet_models: dict[str, str] = field(default_factory=dict)
    console_output_dir: str = ""  # "" = <data_dir>/console

    def __post_init__(self) -> None:
        _require(
            self.engine_url == "" or self.engine_url.startswith(("http://", "https://")),
            "bot.engine_url",
            "must start with http:// or https://",
        )
        for name in ("default_count", "max_count", "max_steps", "max_side", "concurrent_jobs"):
            _require(getattr(self, name) >= 1, f"bot.{name}", "must be at least 1")
        _require(self.default_count <= self.max_count, "bot.default_count", "exceeds max_count")
        _require(self.daily_quota >= 0, "bot.daily_quota", "must be 0 (unlimited) or more")
        for intent in self.controlnet_models:
            _require(
                intent in ("sketch", "layout", "pose"),
                f"bot.controlnet_models.{intent}",
                "must be sketch, layout or pose",
            )
        for name in ("variation_strength", "picture_strength"):
            _require(
                0.0 < getattr(self, name) <= 1.0, f"bot.{name}", "must be above 0 and at most 1"
            )


@dataclass(frozen=True)
class TrainingConfig:
    """LoRA training: limits on uploaded datasets and the data-quality report's thresholds.

    Trainer hyper-parameters (kohya names, popular defaults) live in engine/training/lora.py and
    are overridden per run (`/train dada network_dim=16`), not here.
    """

    # A LoRA set is tens of images; thousands of members is a mistake or an attack.
    max_members: int = 2000
    # Counted while unpacking (zip headers can lie); Telegram documents are ≤ 50 MB anyway.
    max_unpacked_bytes: int = 2 * 2**30
    # Images and text compress < 10×; far more is a zip bomb.
    max_compression_ratio: int = 100
    # Decoded size per image: 8192×8192 covers any camera; bigger is a decompression bomb.
    max_image_pixels: int = 8192 * 8192
    # Pixels of all images of one upload together, counted from their headers before any is
    # decoded (decoding costs ~50 ms per megapixel): 200 MP is 50 images of 2048×2048, and
    # training sees at most max_bucket_reso² of each anyway.
    max_total_pixels: int = 200_000_000
    # The report flags images whose short side is below this (they train blurry).
    min_image_side: int = 512
    # Perceptual-hash (64-bit dHash) distance at or below which two images are near-duplicates.
    near_duplicate_distance: int = 6
    # A training job running longer than this is stopped like any overlong job (engine.job_timeout_s
    # is for posters); a LoRA takes minutes on a big GPU and hours on a small one.
    job_timeout_s: int = 24 * 3600
    # What one training run may ask for (checked at submission, before a version is recorded).
    # A LoRA converges in tens of epochs of tens of repeats; far more only burns the GPU.
    max_epochs: int = 200
    max_repeats: int = 100  # images per epoch each (kohya's `<repeats>_<concept>`)
    max_batch_size: int = 64  # a 24 GB GPU fits ~8-16 at 512 px
    max_resolution: int = 2048  # resolution and max_bucket_reso, in pixels
    # unet_lr, text_encoder_lr and learning_rate: AdamW uses ~1e-4, Prodigy/D-Adaptation 1.0.
    max_learning_rate: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name == "max_learning_rate":
                _require(
                    self.max_learning_rate > 0, "training.max_learning_rate", "must be positive"
                )
            elif f.name != "near_duplicate_distance":
                _require(getattr(self, f.name) >= 1, f"training.{f.name}", "must be at least 1")
        _require(
            0 <= self.near_duplicate_distance <= 64,
            "training.near_duplicate_distance",
            "must be 0 to 64 (bits of a 64-bit hash)",
        )


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("./data")
    default_ip: str = ""  # "" = the first entry of [[ips]]
    models: ModelsConfig = field(default_factory=ModelsConfig)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    presets: dict[str, Preset] = field(default_factory=dict)
    ips: list[IPConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [ip.name for ip in self.ips]
        _require(len(names) == len(set(names)), "ips", "two IPs share a name")
        if self.default_ip:
            _require(self.default_ip in names, "default_ip", f"no IP named {self.default_ip!r}")
        # The VAE downscales by 8, so a generation size must divide by it.
        _check_generation(self.generation, "generation", 8)

    def find_ip(self, name: str) -> IPConfig:
        """The IP called `name`; a Refusal (`ip_unknown`) listing the names when there is none."""
        for ip in self.ips:
            if ip.name == name:
                return ip
        known = ", ".join(ip.name for ip in self.ips) or "none configured"
        raise Refusal("ip", f"no IP named {name!r} (known: {known})", "ip_unknown", name=name)

    def default_ip_config(self) -> IPConfig | None:
        """The IP a request that names none is about: `default_ip`, else the first one."""
        if self.default_ip:
            return self.find_ip(self.default_ip)
        return self.ips[0] if self.ips else None

    # The data folder is laid out like a WebUI install, so it can point at an existing one.
    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "models" / "Stable-diffusion"

    @property
    def loras_dir(self) -> Path:
        return self.data_dir / "models" / "Lora"

    @property
    def vae_dir(self) -> Path:
        return self.data_dir / "models" / "VAE"

    @property
    def upscalers_dir(self) -> Path:
        return self.data_dir / "models" / "ESRGAN"

    @property
    def controlnet_dir(self) -> Path:
        return self.data_dir / "models" / "ControlNet"

    @property
    def face_restorers_dir(self) -> Path:
        return self.data_dir / "models" / "GFPGAN"

    @property
    def embeddings_dir(self) -> Path:
        return self.data_dir / "models" / "embeddings"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def inputs_dir(self) -> Path:
        """Pictures that requests brought in (img2img, masks, control maps), by content hash."""
        return self.data_dir / "inputs"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the type hint `hint`, building nested dataclasses."""
    origin = typing.get_origin(hint)
    if hint is Preset:
        _require(isinstance(value, dict), key, f"must be a table, not {type(value).__name__}")
        return Preset.from_table(value, key)
    if dataclasses.is_dataclass(hint):
        _require(isinstance(value, dict), key, f"must be a table, not {type(value).__name__}")
        return _build(hint, value, key)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        _require(isinstance(value, list), key, f"must be a list, not {type(value).__name__}")
        return [_convert(item, item_hint, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        _, item_hint = typing.get_args(hint)
        _require(isinstance(value, dict), key, "must be a table")
        return {k: _convert(v, item_hint, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        # Only optional values (`X | None`): TOML has no null, so a present value must be an X.
        (value_hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _convert(value, value_hint, key)
    if hint is Path:
        _require(isinstance(value, str | Path), key, "must be a path string")
        return Path(value)
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _require(ok, key, f"must be a number, not {value!r}")
        return float(value)
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _require(ok, key, f"must be an integer, not {value!r}")
        return value
    if hint is bool:
        _require(isinstance(value, bool), key, f"must be true or false, not {value!r}")
        return value
    if hint is str:
        _require(isinstance(value, str), key, f"must be a string, not {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def _build(cls: type, table: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        renamed = _RENAMED_SETTINGS.get(key) if cls is GenerationSettings else None
        hint = f"; it is now {renamed!r}" if renamed else ""
        _require(key in names, dotted, f"unknown key (see config.example.toml){hint}")
        kwargs[key] = _convert(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(prefix or cls.__name__, str(exc)) from None


def _env_value(raw: str) -> Any:
    """Env values: lists, numbers and booleans as JSON; anything else is the plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _apply_env(table: dict[str, Any], environ: typing.Mapping[str, str]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in table.items()}
    hints = typing.get_type_hints(Config)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            _require(
                section in hints and dataclasses.is_dataclass(hints[section]),
                f"{section}.{key}",
                f"unknown section (from environment variable {name})",
            )
            field_hint = typing.get_type_hints(hints[section]).get(key)
            value = raw if field_hint is str else _env_value(raw)
            merged.setdefault(section, {})[key] = value
        elif rest in TOP_LEVEL_ENV_KEYS:
            merged[rest] = raw
    return merged


def engine_url(config: Config) -> str:
    """Where the bot reaches the engine: [bot] engine_url, else [engine] host and port."""
    return config.bot.engine_url or f"http://{config.engine.host}:{config.engine.port}"


# Every key with a comment; also what a first run without config.toml uses.
EXAMPLE_CONFIG = Path(__file__).with_name("config.example.toml")


def default_config_path(environ: typing.Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("POSTERBOT_CONFIG", "config.toml"))


def load_config(
    path: str | Path | None = None, environ: typing.Mapping[str, str] | None = None
) -> Config:
    """Read `path` (default ./config.toml or $POSTERBOT_CONFIG). Without a default file the
    example configuration is used, so a first run has the example's mascot (see `config_source`)."""
    environ = os.environ if environ is None else environ
    source = config_source(path, environ)
    if source is None:
        raise ConfigError(str(path or environ["POSTERBOT_CONFIG"]), "config file not found")
    try:
        table = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(source), f"not valid TOML: {exc}") from None
    return _build(Config, _apply_env(table, environ))


def config_source(
    path: str | Path | None = None, environ: typing.Mapping[str, str] | None = None
) -> Path | None:
    """The file `load_config` reads: `path`, $POSTERBOT_CONFIG or ./config.toml, else the bundled
    example (`EXAMPLE_CONFIG`); None when a file named explicitly does not exist."""
    environ = os.environ if environ is None else environ
    explicit = path is not None or "POSTERBOT_CONFIG" in environ
    path = Path(path) if path is not None else default_config_path(environ)
    if path.exists():
        return path
    return None if explicit else EXAMPLE_CONFIG
