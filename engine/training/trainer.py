"""Train a mascot LoRA, kohya style: one flat loop that reads top to bottom (after nanoGPT).

`run_training(config, params, progress, cancelled)` is what a queue job of kind "train" calls.
Parameters use kohya sd-scripts' names with the popular SD-Trainer defaults (below); a value
that breaks a rule (alpha > dim, 500 px, a negative learning rate) is refused before anything
loads, with the rule in the message.

What one run writes (version `dada-v3`):

    models/Lora/dada/dada-v3-000001.safetensors   per epoch, kohya/WebUI layout, ss_* metadata
    models/Lora/dada/dada-v3.safetensors          the final epoch (what /export sends)
    training/dada-v3/loss.db, loss.csv            loss per step (SQLite and CSV)
    training/dada-v3/loss.png                     the loss curve, redrawn at each epoch end
    training/dada-v3/samples/e000001-0.png        sample images per epoch (through the Engine)
    training/dada-v3/state.pt                     optimizer, scheduler, RNG, LoRA at the last
                                                  saved epoch: a killed run resumes from it
    training/dada-v3/dada-v3.diffusers.safetensors the final weights in the diffusers layout

Interactive posters while a LoRA trains: training runs inside a worker, and between any two
optimizer steps it calls `between_steps()`; the worker passes a function that renders the poster
jobs waiting in the queue with its warm Engine (same process, same GPU) before training goes on.
A poster therefore waits at most one training step (well under a second for SD 1.5 on a GPU)
plus its own render, and training simply pauses meanwhile. A host with several GPUs can instead
give training a worker of its own (a device that takes only "train" jobs).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import math
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.diffusion.lora_format import peft_to_kohya
from engine.training.buckets import choose_bucket, fit_to_bucket, make_buckets
from engine.training.layout import IMAGE_FORMATS, dataset_items, read_caption
from engine.training.params import (
    OPTIMIZERS,
    TrainParams,
    check_train_request,
    dataset_folder,
    resolve_precision,
    sdxl_refusal,
)
from posterbot.config import Config, IPConfig
from posterbot.files import atomic_copy, atomic_path

log = logging.getLogger(__name__)

Progress = Callable[[int, int, int, float, float], None]  # epoch, step, total, loss, eta_s
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # mixed_precision
# kohya's LoRA: the linear layers of attention and feed-forward blocks (and 1x1 projections);
# with conv_dim, also the 3x3 convs of ResNet blocks and up/downsamplers (kohya's LoCon).
UNET_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
]
CONV_TARGETS = ["conv1", "conv2", "conv"]  # `conv` = up/downsamplers' only conv
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def make_optimizer(name: str, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimizer by kohya's name (check_runnable refused one that is not installed)."""
    import importlib

    module_name, class_name, _ = OPTIMIZERS[name]
    return getattr(importlib.import_module(module_name), class_name)(groups)


# -----------------------------------------------------------------------------------------------
# Data: images into aspect-ratio buckets, captions with kohya's shuffling and dropout.


@dataclass
class Example:
    image: Path
    caption: str
    repeats: int
    bucket: tuple[int, int]
    pixels: torch.Tensor | None = None  # uint8 CHW at bucket size, until latents are cached
    latent_mean: torch.Tensor | None = None  # cached VAE posterior (sampled each step)
    latent_std: torch.Tensor | None = None


def load_examples(folder: Path, p: TrainParams) -> list[Example]:
    """Every image of the dataset at its bucket size (scaled to cover, centre-cropped)."""
    if p.enable_bucket:
        buckets = make_buckets(p.resolution, p.min_bucket_reso, p.max_bucket_reso)
    else:
        buckets = [(p.resolution, p.resolution)]
    examples = []
    for path, folder_repeats in dataset_items(folder):
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            rgb = image.convert("RGB")
        bucket = choose_bucket(rgb.width, rgb.height, buckets)
        width, height, left, top = fit_to_bucket(rgb.width, rgb.height, bucket)
        fitted = rgb.resize((width, height), Image.Resampling.LANCZOS).crop(
            (left, top, left + bucket[0], top + bucket[1])
        )
        pixels = torch.from_numpy(np.asarray(fitted).copy()).permute(2, 0, 1)
        caption = read_caption(path) or ""
        examples.append(Example(path, caption, p.repeats or folder_repeats, bucket, pixels))
    return examples


def epoch_batches(examples: list[Example], batch_size: int, seed: int) -> list[list[int]]:
    """One epoch: each example `repeats` times, batches within a bucket, in a seeded order.

    Seeded by (seed, epoch) alone, so a resumed run sees the same batches it would have seen.
    """
    rng = random.Random(seed)
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for index, example in enumerate(examples):
        by_bucket.setdefault(example.bucket, []).extend([index] * example.repeats)
    batches = []
    for bucket in sorted(by_bucket):
        indices = by_bucket[bucket]
        rng.shuffle(indices)
        batches += [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    rng.shuffle(batches)
    return batches


def prepare_caption(caption: str, p: TrainParams, rng: random.Random) -> str:
    """kohya's caption handling: dropout, then shuffle tags after the first `keep_tokens`."""
    if p.caption_dropout_rate and rng.random() < p.caption_dropout_rate:
        return ""
    if not p.shuffle_caption:
        return caption
    tags = [tag.strip() for tag in caption.split(",") if tag.strip()]
    kept, rest = tags[: p.keep_tokens], tags[p.keep_tokens :]
    rng.shuffle(rest)
    return ", ".join(kept + rest)


def tag_frequency(examples: list[Example]) -> dict[str, dict[str, int]]:
    """ss_tag_frequency: per `<repeats>_<concept>` folder, how often each tag appears."""
    frequency: dict[str, Counter] = {}
    for example in examples:
        tags = [tag.strip() for tag in example.caption.split(",") if tag.strip()]
        frequency.setdefault(example.image.parent.name, Counter()).update(tags)
    return {folder: dict(counts) for folder, counts in frequency.items()}


# -----------------------------------------------------------------------------------------------
# Files: kohya-layout LoRA with ss_* metadata, resumable state, loss log and curve.


@dataclass
class RunPaths:
    name: str  # the version name, e.g. dada-v3
    loras: Path  # models/Lora/<ip>/
    run: Path  # training/<name>/

    def epoch_file(self, epoch: int) -> Path:
        return self.loras / f"{self.name}-{epoch:06d}.safetensors"

    @property
    def final_file(self) -> Path:
        return self.loras / f"{self.name}.safetensors"

    @property
    def state_file(self) -> Path:
        return self.run / "state.pt"


def run_paths(config: Config, ip: str, name: str) -> RunPaths:
    return RunPaths(name, config.loras_dir / ip, config.data_dir / "training" / name)


def lora_state(pipe, train_text_encoder: bool) -> dict[str, dict[str, torch.Tensor]]:
    from peft.utils import get_peft_model_state_dict

    parts = {"unet": get_peft_model_state_dict(pipe.unet)}
    if train_text_encoder:
        parts["text_encoder"] = get_peft_model_state_dict(pipe.text_encoder)
    return {part: {k: v.detach().float().cpu() for k, v in s.items()} for part, s in parts.items()}


def is_conv_key(key: str) -> bool:
    module = key.rsplit(".lora_", 1)[0]
    return module.rsplit(".", 1)[-1] in CONV_TARGETS


def save_kohya(path: Path, states: dict, p: TrainParams, metadata: dict[str, str]) -> None:
    """Write the kohya/WebUI layout atomically (temp file + rename) with safetensors."""
    unet = states["unet"]
    convs = {k: v for k, v in unet.items() if is_conv_key(k)}
    linears = {k: v for k, v in unet.items() if k not in convs}
    tensors = peft_to_kohya(linears, "lora_unet", p.network_alpha)
    if convs:
        tensors |= peft_to_kohya(convs, "lora_unet", p.conv_alpha)
    if "text_encoder" in states:
        tensors |= peft_to_kohya(states["text_encoder"], "lora_te", p.network_alpha)
    with atomic_path(path) as scratch:
        save_file(tensors, scratch, metadata=metadata)


def save_diffusers(path: Path, states: dict, configs: dict) -> None:
    """The same weights in the diffusers layout (`unet.<path>.lora_A.weight`, peft configs as
    metadata). Kept as peft keys: diffusers' older `lora.down` names exist only for attention
    layers and a file mixing both loads wrongly."""
    from diffusers import StableDiffusionPipeline

    extra = {}
    if "text_encoder" in states:
        extra = {
            "text_encoder_lora_layers": states["text_encoder"],
            "text_encoder_lora_adapter_metadata": configs["text_encoder"].to_dict(),
        }
    StableDiffusionPipeline.save_lora_weights(
        path.parent,
        unet_lora_layers=states["unet"],
        weight_name=path.name,
        unet_lora_adapter_metadata=configs["unet"].to_dict(),
        safe_serialization=True,
        **extra,
    )


def kohya_metadata(p: TrainParams, facts: dict[str, Any], epoch: int) -> dict[str, str]:
    """The ss_* fields kohya writes and WebUI shows (all values are strings)."""
    values = {
        "ss_network_module": p.network_module,
        "ss_network_dim": p.network_dim,
        "ss_network_alpha": p.network_alpha,
        "ss_network_train_unet_only": p.network_train_unet_only,
        "ss_network_args": json.dumps(
            {"conv_dim": str(p.conv_dim), "conv_alpha": str(p.conv_alpha)} if p.conv_dim else {}
        ),
        "ss_num_epochs": p.epochs,
        "ss_epoch": epoch,
        "ss_learning_rate": p.learning_rate,
        "ss_unet_lr": p.unet_lr,
        "ss_text_encoder_lr": p.text_encoder_lr,
        "ss_optimizer": facts["optimizer"],
        "ss_lr_scheduler": p.lr_scheduler,
        "ss_lr_warmup_steps": p.lr_warmup_steps,
        "ss_resolution": f"({p.resolution}, {p.resolution})",
        "ss_enable_bucket": p.enable_bucket,
        "ss_min_bucket_reso": p.min_bucket_reso,
        "ss_max_bucket_reso": p.max_bucket_reso,
        "ss_bucket_info": json.dumps(facts["buckets"]),
        "ss_batch_size_per_device": p.batch_size,
        "ss_num_train_images": facts["num_train_images"],
        "ss_num_batches_per_epoch": facts["batches_per_epoch"],
        "ss_max_train_steps": facts["total_steps"],
        "ss_steps": facts["steps_done"],
        "ss_seed": p.seed,
        "ss_keep_tokens": p.keep_tokens,
        "ss_shuffle_caption": p.shuffle_caption,
        "ss_caption_dropout_rate": p.caption_dropout_rate,
        "ss_noise_offset": p.noise_offset,
        "ss_min_snr_gamma": p.min_snr_gamma,
        "ss_mixed_precision": p.mixed_precision,
        "ss_gradient_checkpointing": p.gradient_checkpointing,
        "ss_cache_latents": p.cache_latents,
        "ss_max_grad_norm": p.max_grad_norm,
        "ss_sd_model_name": facts["model_name"],
        "ss_base_model_version": "sd_v1",
        "ss_v2": False,
        "ss_output_name": facts["output_name"],
        "ss_training_started_at": facts["started_at"],
        "ss_training_finished_at": time.time(),
        "ss_tag_frequency": json.dumps(facts["tag_frequency"], ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(facts["dataset_dirs"], ensure_ascii=False),
        "ss_training_comment": f"posterbot, ip {p.ip}, dataset {p.dataset}",
    }
    return {key: str(value) for key, value in values.items()}


class LossLog:
    """Loss per step in SQLite (for /train status and the curve) and CSV (for spreadsheets)."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = run_dir / "loss.csv"
        self.db = sqlite3.connect(run_dir / "loss.db")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS loss (step INTEGER PRIMARY KEY, epoch INTEGER, "
            "loss REAL, lr REAL, time REAL)"
        )

    def truncate(self, after_step: int) -> None:
        """Forget steps after a resumed checkpoint (they are trained again)."""
        with self.db:
            self.db.execute("DELETE FROM loss WHERE step > ?", (after_step,))
        self._write_csv()

    def add(self, step: int, epoch: int, loss: float, lr: float) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO loss VALUES (?, ?, ?, ?, ?)",
                (step, epoch, loss, lr, time.time()),
            )
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(["step", "epoch", "loss", "lr"])
            writer.writerow([step, epoch, f"{loss:.6f}", f"{lr:.3e}"])

    def _write_csv(self) -> None:
        with self.csv_path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["step", "epoch", "loss", "lr"])
            for row in self.rows():
                writer.writerow([row[0], row[1], f"{row[2]:.6f}", f"{row[3]:.3e}"])

    def rows(self) -> list[tuple[int, int, float, float]]:
        return self.db.execute("SELECT step, epoch, loss, lr FROM loss ORDER BY step").fetchall()

    def epoch_means(self) -> dict[int, float]:
        query = "SELECT epoch, AVG(loss) FROM loss GROUP BY epoch ORDER BY epoch"
        return dict(self.db.execute(query).fetchall())

    def close(self) -> None:
        self.db.close()


def plot_loss(rows: list[tuple[int, int, float, float]], path: Path, title: str) -> Path:
    """The loss curve (per step, and a moving average) as a PNG, drawn with matplotlib's Agg."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = [row[0] for row in rows]
    losses = [row[2] for row in rows]
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.subplots()
    axes.plot(steps, losses, color="#9ab", linewidth=0.8, label="loss")
    window = max(1, len(losses) // 20)
    if len(losses) > window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(steps[window - 1 :], smooth, color="#c33", label=f"mean of {window}")
    for epoch_end in [r[0] for a, r in itertools.pairwise(rows) if r[1] != a[1]]:
        axes.axvline(epoch_end, color="#ddd", linewidth=0.6)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.legend(loc="upper right")
    figure.tight_layout()
    with atomic_path(path) as scratch:
        figure.savefig(scratch, format="png")
    return path


# -----------------------------------------------------------------------------------------------
# The run.


def run_training(
    config: Config,
    params: dict[str, Any],
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
    between_steps: Callable[[], None] | None = None,
    engine=None,
) -> dict[str, Any]:
    """Train a LoRA version of an IP; the entry point for a queue job of kind "train".

    params: JSON-serialisable, kohya names (see `TrainParams`); `ip` and `dataset` (a dataset
    name under datasets/) are required. Unknown keys and broken rules raise ValueError naming
    the parameter, before anything loads.
    progress(epoch, step, total_steps, loss, eta_seconds): after every optimizer step.
    cancelled(): polled between steps; True stops after the step, keeping the last saved epoch.
    between_steps(): called between steps (the worker renders waiting posters there).
    engine: an `engine.diffusion.generate.Engine` on the same config for sample images (made on
    demand).

    The same params after a crash resume the unfinished version from its last saved epoch.
    Returns {"version", "status" (done | cancelled), "epochs_done", "final_loss", "file",
    "epoch_files", "samples", "loss_curve", "loss_csv", "resumed_from_epoch", "steps"}.
    """
    from engine.diffusion.generate import pick_device
    from engine.training.versions import Versions

    device, _ = pick_device(config.models)
    p = check_train_request(config, params, {device.type})
    ip = config.find_ip(p.ip)
    folder = dataset_folder(config, p.dataset)
    versions = Versions(config)
    record = versions.unfinished(p.ip, p.to_dict()) or versions.begin(p.ip, p.to_dict())
    paths = run_paths(config, p.ip, record["name"])
    try:
        result = train(config, p, ip, folder, paths, progress, cancelled, between_steps, engine)
    except BaseException:
        versions.update(record["name"], status="failed")
        raise
    file = result["file"]
    versions.update(
        record["name"],
        status=result["status"],
        file=str(file) if file else None,
        final_loss=result["final_loss"],
        epochs_done=result["epochs_done"],
        loss_curve=result["loss_curve"],
    )
    return {"version": record["name"], **result, "file": str(file) if file else None}


def train(
    config: Config,
    p: TrainParams,
    ip: IPConfig,
    folder: Path,
    paths: RunPaths,
    progress: Progress | None,
    cancelled: Callable[[], bool] | None,
    between_steps: Callable[[], None] | None,
    engine,
) -> dict[str, Any]:
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import compute_snr
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    from engine.diffusion.generate import load_pipeline, pick_device
    from engine.diffusion.registry import Registry

    # 1. sanity checks before the first step (precision and optimizer: check_runnable): data
    device, _ = pick_device(config.models)
    make_optimizer(p.optimizer, [{"params": [torch.zeros(1, requires_grad=True)]}])
    # `auto` is decided here, on the device that trains; the version keeps the params as asked.
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    p = dataclasses.replace(
        p, mixed_precision=resolve_precision(p.mixed_precision, device.type, bf16)
    )
    autocast_dtype = DTYPES[p.mixed_precision]
    weight_dtype = autocast_dtype if device.type == "cuda" else torch.float32
    examples = load_examples(folder, p)
    train_text_encoder = not p.network_train_unet_only and p.text_encoder_lr > 0
    paths.run.mkdir(parents=True, exist_ok=True)
    (paths.run / "params.json").write_text(json.dumps(p.to_dict(), indent=2), "utf-8")

    # 2. the base model, frozen, with fresh LoRA adapters (kohya: B = 0, so step 0 = base)
    registry = Registry(config)
    model = registry.checkpoint()
    pipe = load_pipeline(model, registry, device, weight_dtype)
    if isinstance(pipe, StableDiffusionXLPipeline):
        raise sdxl_refusal()  # a hub model, which the request check cannot tell
    for part in (pipe.unet, pipe.text_encoder, pipe.vae):
        part.requires_grad_(False)
    torch.manual_seed(p.seed)  # the LoRA's initial weights and every step's noise
    conv = dict.fromkeys(CONV_TARGETS, p.conv_dim) if p.conv_dim else {}
    configs = {
        "unet": LoraConfig(
            r=p.network_dim,
            lora_alpha=p.network_alpha,
            init_lora_weights="gaussian",
            target_modules=UNET_TARGETS + list(conv),
            rank_pattern=conv,
            alpha_pattern=dict.fromkeys(conv, p.conv_alpha),
        )
    }
    pipe.unet.add_adapter(configs["unet"])
    if train_text_encoder:
        configs["text_encoder"] = LoraConfig(
            r=p.network_dim,
            lora_alpha=p.network_alpha,
            init_lora_weights="gaussian",
            target_modules=TEXT_TARGETS,
        )
        pipe.text_encoder.add_adapter(configs["text_encoder"])
    if p.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        if train_text_encoder:
            pipe.text_encoder.gradient_checkpointing_enable()
    unet_params = [q for q in pipe.unet.parameters() if q.requires_grad]
    groups = [{"params": unet_params, "lr": p.unet_lr}]
    if train_text_encoder:
        te_params = [q for q in pipe.text_encoder.parameters() if q.requires_grad]
        groups.append({"params": te_params, "lr": p.text_encoder_lr})
    for group in groups:
        for param in group["params"]:
            param.data = param.data.float()  # LoRA weights train in fp32 under autocast
    optimizer = make_optimizer(p.optimizer, groups)
    batches_per_epoch = len(epoch_batches(examples, p.batch_size, p.seed))
    total_steps = batches_per_epoch * p.epochs
    lr_scheduler = get_scheduler(
        p.lr_scheduler,
        optimizer,
        num_warmup_steps=p.lr_warmup_steps,
        num_training_steps=total_steps,
        num_cycles=p.lr_scheduler_num_cycles,
    )
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction_type = noise_scheduler.config.prediction_type
    vae_scale = pipe.vae.config.scaling_factor

    # 3. resume from the last saved epoch, if this version has one
    start_epoch, step = 0, 0
    log_ = LossLog(paths.run)
    if paths.state_file.exists():
        state = torch.load(paths.state_file, map_location="cpu", weights_only=True)
        set_peft_model_state_dict(pipe.unet, state["lora"]["unet"])
        if train_text_encoder:
            set_peft_model_state_dict(pipe.text_encoder, state["lora"]["text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, step = state["epoch"], state["step"]
        log.info("%s: resuming after epoch %d (step %d)", paths.name, start_epoch, step)
    log_.truncate(step)

    # 4. cache latents: the VAE posterior of each image, sampled afresh every step
    def encode(pixels: torch.Tensor):
        scaled = pixels.to(device, weight_dtype) / 127.5 - 1.0
        return pipe.vae.encode(scaled).latent_dist

    if p.cache_latents:
        with torch.no_grad():
            for example in examples:
                dist = encode(example.pixels[None])
                example.latent_mean, example.latent_std = dist.mean[0], dist.std[0]
                example.pixels = None

    facts = {
        "optimizer": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
        "buckets": dict(Counter(f"{w}x{h}" for w, h in (e.bucket for e in examples))),
        "num_train_images": sum(e.repeats for e in examples),
        "batches_per_epoch": batches_per_epoch,
        "total_steps": total_steps,
        "model_name": model.name,
        "output_name": paths.name,
        "started_at": (paths.run / "params.json").stat().st_mtime,
        "tag_frequency": tag_frequency(examples),
        "dataset_dirs": {
            e.image.parent.name: {"n_repeats": e.repeats, "img_count": 0} for e in examples
        },
    }
    for example in examples:
        facts["dataset_dirs"][example.image.parent.name]["img_count"] += 1

    # 5. the loop
    pipe.unet.train()
    pipe.text_encoder.train(train_text_encoder)
    started, steps_this_run = time.perf_counter(), 0
    last_saved = start_epoch if start_epoch else None
    loss_value = math.nan
    status = "done"
    for epoch in range(start_epoch + 1, p.epochs + 1):
        caption_rng = random.Random(p.seed * 100_003 + epoch)
        for batch in epoch_batches(examples, p.batch_size, p.seed * 100_003 + epoch):
            members = [examples[i] for i in batch]
            with torch.no_grad():
                if p.cache_latents:
                    mean = torch.stack([e.latent_mean for e in members])
                    std = torch.stack([e.latent_std for e in members])
                    latents = mean + std * torch.randn_like(mean)
                else:
                    latents = encode(torch.stack([e.pixels for e in members])).sample()
                latents = latents * vae_scale
            captions = [prepare_caption(e.caption, p, caption_rng) for e in members]
            ids = pipe.tokenizer(
                captions,
                padding="max_length",
                max_length=pipe.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            noise = torch.randn_like(latents)
            if p.noise_offset:
                noise += p.noise_offset * torch.randn(*latents.shape[:2], 1, 1, device=device)
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (len(members),), device=device
            )
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            with torch.autocast(
                device.type, autocast_dtype, enabled=autocast_dtype != torch.float32
            ):
                hidden = pipe.text_encoder(ids)[0]
                pred = pipe.unet(noisy, timesteps, hidden).sample
            if prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            loss = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
            if p.min_snr_gamma:
                snr = compute_snr(noise_scheduler, timesteps)
                weight = snr.clamp(max=p.min_snr_gamma) / (
                    snr + 1 if prediction_type == "v_prediction" else snr
                )
                loss = loss * weight
            loss = loss.mean()
            loss.backward()
            if p.max_grad_norm:
                params_to_clip = [q for g in groups for q in g["params"]]
                torch.nn.utils.clip_grad_norm_(params_to_clip, p.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_this_run += 1
            loss_value = loss.item()
            log_.add(step, epoch, loss_value, lr_scheduler.get_last_lr()[0])
            if progress is not None:
                per_step = (time.perf_counter() - started) / steps_this_run
                progress(epoch, step, total_steps, loss_value, per_step * (total_steps - step))
            if between_steps is not None:
                between_steps()
            if cancelled is not None and cancelled():
                status = "cancelled"
                break
        if status == "cancelled":
            break

        # 6. epoch end: the per-epoch file + resumable state, the loss curve, samples
        plot_loss(log_.rows(), paths.run / "loss.png", f"{paths.name} loss")
        if epoch % p.save_every_n_epochs == 0 or epoch == p.epochs:
            states = lora_state(pipe, train_text_encoder)
            facts["steps_done"] = step
            save_kohya(paths.epoch_file(epoch), states, p, kohya_metadata(p, facts, epoch))
            with atomic_path(paths.state_file) as scratch:
                torch.save(
                    {
                        "epoch": epoch,
                        "step": step,
                        "lora": states,
                        "optimizer": optimizer.state_dict(),
                        "lr_scheduler": lr_scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                    },
                    scratch,
                )
            last_saved = epoch
            if p.sample_every_n_epochs and epoch % p.sample_every_n_epochs == 0:
                engine = engine or _sample_engine(config)
                render_samples(engine, p, ip, paths, epoch)
    log_.close()

    # 7. the final file: the last saved epoch under the version's own name
    final = None
    if last_saved is not None:
        final = paths.epoch_file(last_saved) if status == "cancelled" else paths.final_file
        if status == "done":
            atomic_copy(paths.epoch_file(last_saved), final)
            save_diffusers(
                paths.run / f"{paths.name}.diffusers.safetensors",
                lora_state(pipe, train_text_encoder),
                configs,
            )
    means = LossLog(paths.run)
    epoch_means = means.epoch_means()
    means.close()
    return {
        "status": status,
        "epochs_done": last_saved or 0,
        "final_loss": epoch_means.get(last_saved) if last_saved else None,
        "epoch_losses": epoch_means,
        "file": final,
        "epoch_files": [
            str(paths.epoch_file(e)) for e in range(1, p.epochs + 1) if paths.epoch_file(e).exists()
        ],
        "samples": sorted(str(s) for s in (paths.run / "samples").glob("*.png")),
        "loss_curve": str(paths.run / "loss.png"),
        "loss_csv": str(log_.csv_path),
        "resumed_from_epoch": start_epoch,
        "steps": step,
        "last_loss": loss_value,
    }


def _sample_engine(config: Config):
    from engine.diffusion.generate import Engine

    return Engine(config)


def sample_prompts(p: TrainParams, ip: IPConfig) -> list[str]:
    return p.sample_prompts or [
        f"{ip.trigger}, solo, full body, white background",
        f"{ip.trigger}, in the city street, night",
    ]


def render_samples(engine, p: TrainParams, ip: IPConfig, paths: RunPaths, epoch: int) -> list[Path]:
    """Sample images for an epoch file through the Engine, as a poster would be rendered."""
    from engine.diffusion.params import from_request

    folder = paths.run / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    lora_name = paths.epoch_file(epoch).stem
    for index, prompt in enumerate(sample_prompts(p, ip)):
        request = {
            "prompt": f"{prompt} <lora:{lora_name}:1>",
            "negative_prompt": ip.negative_prompt,
            "seed": p.sample_seed,
            "sampler_name": p.sample_sampler,
            "steps": p.sample_steps,
            "width": p.resolution,
            "height": p.resolution,
        }
        params = from_request(request, engine.config.generation, engine.config.limits)
        result = engine.txt2img(params)
        path = folder / f"e{epoch:06d}-{index}.png"
        path.write_bytes(result.png(0))
        written.append(path)
    return written
