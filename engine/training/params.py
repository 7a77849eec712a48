"""Training parameters: kohya's names and the popular defaults, and the rules they must keep.

Without torch, so the engine's HTTP service checks a `train` job when it is submitted (a broken
rule is a 400 naming the parameter, not a failed job an hour later) and the trainer checks the
same way before anything loads.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.diffusion.params import check_range
from engine.diffusion.registry import Registry, is_sdxl
from engine.training.layout import check_name, dataset_items
from posterbot.config import Config, TrainingConfig
from posterbot.errors import Refusal
from prompts.spec import MAX_SEED

# -----------------------------------------------------------------------------------------------
# Defaults: kohya sd-scripts names, popular SD-Trainer (秋葉) values. Override per run with
# `posterbot train ... key=value` or the job's params dict.


@dataclass
class TrainParams:
    # data
    ip: str = ""  # the mascot ([[ips]] name): trigger word, version names
    dataset: str = ""  # a dataset name under <data_dir>/datasets/
    repeats: int = 0  # images per epoch each; 0 = from the `<repeats>_<concept>` folder (10)
    resolution: int = 512  # training area is resolution², sides multiples of 64
    enable_bucket: bool = True  # aspect-ratio buckets instead of square crops
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    shuffle_caption: bool = True  # shuffle comma-separated tags each step ...
    keep_tokens: int = 1  # ... keeping the first N in place (the trigger word)
    caption_dropout_rate: float = 0.0  # share of steps trained with an empty caption
    cache_latents: bool = True  # encode each image with the VAE once, not every step
    # network
    network_module: str = "networks.lora"  # what kohya files record; LoRA on linear layers
    network_dim: int = 32  # rank
    network_alpha: float = 16.0  # scale = alpha / dim; must be ≤ dim
    conv_dim: int = 0  # kohya network_args: also the ResNet 3x3 convs ("LoCon"); 0 = off
    conv_alpha: float = 1.0  # their alpha, ≤ conv_dim
    network_train_unet_only: bool = False  # True = no text-encoder LoRA
    # optimisation
    epochs: int = 10  # kohya: max_train_epochs
    batch_size: int = 1  # kohya: train_batch_size
    learning_rate: float = 1e-4  # recorded as ss_learning_rate; unet_lr/text_encoder_lr apply
    unet_lr: float = 1e-4
    text_encoder_lr: float = 1e-5
    optimizer: str = "AdamW"  # AdamW | AdamW8bit | Lion | Prodigy (the last three if installed)
    lr_scheduler: str = "cosine_with_restarts"
    lr_scheduler_num_cycles: int = 1
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0
    min_snr_gamma: float = 0.0  # 0 = off; 5 is the usual value (Min-SNR weighting)
    noise_offset: float = 0.0  # 0.05-0.1 helps very dark/bright images
    # auto = bf16 on a GPU that has it, else fp16 on a GPU, no on the CPU (decided by the
    # worker that runs it); no | fp16 | bf16 choose (fp16 needs a GPU)
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False  # less memory, ~20% slower
    seed: int = 42
    # outputs
    save_every_n_epochs: int = 1
    sample_every_n_epochs: int = 1  # 0 = no samples
    sample_prompts: list[str] = field(default_factory=list)  # [] = two prompts with the trigger
    sample_sampler: str = "Euler a"
    sample_steps: int = 20
    sample_seed: int = 1234

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainParams:
        """Build from a JSON-like dict, refusing unknown keys and wrong types by name."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise Refusal(
                    key,
                    f"unknown training parameter (known: {', '.join(known)})",
                    "train_param_invalid",
                    name=key,
                    value=value,
                )
            kwargs[key] = _coerce(key, value, cls.__annotations__[key])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(key: str, value: Any, hint: str) -> Any:
    """A param from JSON or from `key=value` text, as the field's type."""
    try:
        if hint == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if hint == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint == "float":
            if isinstance(value, bool) or not math.isfinite(number := float(value)):
                raise ValueError
            return number
        if hint == "list[str]":
            items = value.split("|") if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError
            return [i.strip() for i in items if i.strip()]
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf), float(10**400)
        raise Refusal(
            key, f"{value!r} is not a valid {hint}", "train_param_invalid", name=key, value=value
        ) from None


OPTIMIZERS = {  # name → (module to import, class name, pip package)
    "AdamW": ("torch.optim", "AdamW", "torch"),
    "AdamW8bit": ("bitsandbytes.optim", "AdamW8bit", "bitsandbytes"),
    "Lion": ("lion_pytorch", "Lion", "lion-pytorch"),
    "Prodigy": ("prodigyopt", "Prodigy", "prodigyopt"),
}
LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")  # fp16 needs a GPU
MAX_NETWORK_DIM = 1024  # ranks beyond this are larger than the layers they adapt
MAX_SAMPLE_STEPS = 150  # as limits.max_steps: a sample is a poster render
MAX_KEEP_TOKENS = 75  # one chunk of tokens; more keeps the whole caption in place
MAX_SAMPLE_PROMPTS = 8  # each epoch renders every one of them
MAX_SAMPLE_PROMPT_BYTES = 4000  # as limits.max_prompt_chars, in bytes


def check_params(p: TrainParams) -> None:
    """Refuse a value that breaks a rule, naming the parameter and the rule."""
    rules = [
        (p.network_dim >= 1, "network_dim", f"{p.network_dim} must be at least 1"),
        (p.network_dim <= MAX_NETWORK_DIM, "network_dim", f"must be at most {MAX_NETWORK_DIM}"),
        (0 <= p.conv_dim <= MAX_NETWORK_DIM, "conv_dim", f"{p.conv_dim} must be 0 (off) or more"),
        (
            p.conv_dim == 0 or 0 < p.conv_alpha <= p.conv_dim,
            "conv_alpha",
            f"{p.conv_alpha:g} must be above 0 and at most conv_dim ({p.conv_dim})",
        ),
        (
            0 < p.network_alpha <= p.network_dim,
            "network_alpha",
            f"{p.network_alpha:g} must be above 0 and at most network_dim ({p.network_dim})",
        ),
        (
            p.resolution >= 64 and p.resolution % 64 == 0,
            "resolution",
            f"{p.resolution} must be a multiple of 64 (512, 576, 768 ...)",
        ),
        (
            p.min_bucket_reso % 64 == 0 and p.max_bucket_reso % 64 == 0,
            "min_bucket_reso/max_bucket_reso",
            "must be multiples of 64",
        ),
        (
            64 <= p.min_bucket_reso <= p.resolution <= p.max_bucket_reso,
            "min_bucket_reso/max_bucket_reso",
            f"need 64 ≤ min_bucket_reso ≤ resolution ({p.resolution}) ≤ max_bucket_reso",
        ),
        (p.epochs >= 1, "epochs", f"{p.epochs} must be at least 1"),
        (p.batch_size >= 1, "batch_size", f"{p.batch_size} must be at least 1"),
        (p.repeats >= 0, "repeats", f"{p.repeats} must be 0 (from folders) or more"),
        (p.keep_tokens >= 0, "keep_tokens", "must be 0 or more"),
        (
            0 <= p.caption_dropout_rate < 1,
            "caption_dropout_rate",
            f"{p.caption_dropout_rate} must be in [0, 1)",
        ),
        (p.min_snr_gamma >= 0, "min_snr_gamma", "must be 0 (off) or positive"),
        (p.noise_offset >= 0, "noise_offset", "must be 0 or positive"),
        (p.max_grad_norm >= 0, "max_grad_norm", "must be 0 (off) or positive"),
        (p.lr_warmup_steps >= 0, "lr_warmup_steps", "must be 0 or more"),
        (p.lr_scheduler_num_cycles >= 1, "lr_scheduler_num_cycles", "must be at least 1"),
        (p.save_every_n_epochs >= 1, "save_every_n_epochs", "must be at least 1"),
        (p.sample_every_n_epochs >= 0, "sample_every_n_epochs", "must be 0 (off) or more"),
        (p.sample_steps >= 1, "sample_steps", "must be at least 1"),
        (
            p.lr_scheduler in LR_SCHEDULERS,
            "lr_scheduler",
            f"{p.lr_scheduler!r} is not one of {', '.join(LR_SCHEDULERS)}",
        ),
        (
            p.mixed_precision in MIXED_PRECISION,
            "mixed_precision",
            f"{p.mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}",
        ),
        (
            p.optimizer in OPTIMIZERS,
            "optimizer",
            f"{p.optimizer!r} is not one of {', '.join(OPTIMIZERS)}",
        ),
        (p.network_module == "networks.lora", "network_module", "only networks.lora is trained"),
        (bool(p.ip), "ip", "which mascot to train is required"),
        (bool(p.dataset), "dataset", "a dataset name is required"),
    ]
    for name in ("learning_rate", "unet_lr", "text_encoder_lr"):
        value = getattr(p, name)
        rules.append((value >= 0 and math.isfinite(value), name, f"{value:g} must not be negative"))
    rules.append((p.unet_lr > 0, "unet_lr", "must be above 0 (the UNet LoRA is always trained)"))
    for ok, name, rule in rules:
        if not ok:
            value = getattr(p, name, None)
            raise Refusal(name, rule, "train_param_invalid", name=name, value=value)


def check_limits(p: TrainParams, limits: TrainingConfig) -> None:
    """Refuse a run larger than `[training]` allows (`out_of_range`, naming the parameter): an
    hour-long or out-of-memory run is refused before it is queued."""
    for name, low, high in (
        ("epochs", 1, limits.max_epochs),
        ("repeats", 0, limits.max_repeats),
        ("batch_size", 1, limits.max_batch_size),
        ("resolution", 64, limits.max_resolution),
        ("max_bucket_reso", 64, limits.max_resolution),
        ("learning_rate", 0.0, limits.max_learning_rate),
        ("unet_lr", 0.0, limits.max_learning_rate),
        ("text_encoder_lr", 0.0, limits.max_learning_rate),
        ("sample_steps", 1, MAX_SAMPLE_STEPS),
        ("seed", 0, MAX_SEED),
        ("sample_seed", 0, MAX_SEED),
        ("keep_tokens", 0, MAX_KEEP_TOKENS),
    ):
        check_range(name, getattr(p, name), low, high)
    if len(p.sample_prompts) > MAX_SAMPLE_PROMPTS:
        raise Refusal(
            "sample_prompts",
            f"{len(p.sample_prompts)} prompts, at most {MAX_SAMPLE_PROMPTS}",
            "train_param_invalid",
            name="sample_prompts",
            value=len(p.sample_prompts),
        )
    for prompt in p.sample_prompts:
        if len(prompt.encode()) > MAX_SAMPLE_PROMPT_BYTES:
            raise Refusal(
                "sample_prompts",
                f"a prompt over {MAX_SAMPLE_PROMPT_BYTES} bytes",
                "train_param_invalid",
                name="sample_prompts",
                value=prompt[:40],
            )


def resolve_precision(asked: str, device_type: str, bf16_supported: bool) -> str:
    """The precision a run uses on `device_type`: `auto` becomes bf16 on a GPU that supports
    it, fp16 on other GPUs and no (float32) on the CPU, where half precision does not train."""
    if asked != "auto":
        return asked
    if device_type != "cuda":
        return "no"
    return "bf16" if bf16_supported else "fp16"


def check_runnable(p: TrainParams, device_types: set[str]) -> None:
    """Refuse what the devices that may run it (`{"cuda"}`, `{"cpu"}` ...) or this installation
    cannot run: known before any model loads, so a refused run leaves no version behind."""
    if p.mixed_precision == "fp16" and "cuda" not in device_types:
        on = ", ".join(sorted(device_types))
        raise Refusal(
            "mixed_precision",
            f"fp16 needs a CUDA device (this run is on {on}); use mixed_precision=no (or bf16)",
            "train_precision_unsupported",
            value=p.mixed_precision,
        )
    module_name, _, package = OPTIMIZERS[p.optimizer]
    if importlib.util.find_spec(module_name.partition(".")[0]) is None:
        raise Refusal(
            "optimizer",
            f"{p.optimizer} needs the {package} package, which is not installed here "
            "(pip install it into the engine's environment, or use optimizer=AdamW)",
            "train_param_invalid",
            name="optimizer",
            value=p.optimizer,
        )


def dataset_folder(config: Config, name: str) -> Path:
    """The folder of dataset `name`; ValueError when it has no images."""
    check_name(name)
    folder = config.datasets_dir / name
    if not folder.is_dir() or not dataset_items(folder):
        raise Refusal(
            "dataset", f"{name!r} has no images in datasets/", "dataset_missing", name=name
        )
    return folder


def sdxl_refusal() -> Refusal:
    return Refusal(
        "model",
        "SDXL LoRA training is not supported yet; use an SD 1.x model",
        "sdxl_training_unsupported",
    )


def check_train_request(
    config: Config, params: dict[str, Any], device_types: set[str]
) -> TrainParams:
    """A train job's params, checked as the trainer will: names, types, rules, IP, dataset, base
    model, and what the devices that may run it can run."""
    p = TrainParams.from_dict(params)
    check_params(p)
    check_limits(p, config.training)
    config.find_ip(p.ip)
    dataset_folder(config, p.dataset)
    if is_sdxl(Registry(config).checkpoint()):
        raise sdxl_refusal()
    check_runnable(p, device_types)
    return p
