"""txt2img with WebUI semantics on a diffusers pipeline: the engine every other part calls.

`Engine(config).txt2img(params)` loads the configured base model once and then, per call:
checks the params, encodes prompts the WebUI way, draws each image's noise on the CPU from its
own seed (so a seed gives the same picture on any device and image i of a batch equals a single
run at seed + i), runs the sampler, optionally the hires fix, and writes WebUI infotext.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.diffusion import faces, hires, img2img, infotext
from engine.diffusion.conditioning import encode_prompts
from engine.diffusion.controlnet import NO_CONTROLS, ControlNetSet, Controls, prepare
from engine.diffusion.embeddings import EmbeddingSet
from engine.diffusion.lora import AppliedLora, LoraSet
from engine.diffusion.params import GenerationParams, check, resolve_seeds
from engine.diffusion.registry import ModelRef, Registry, is_sdxl
from engine.diffusion.samplers import make_scheduler
from engine.service.inputs import open_picture
from posterbot import __version__
from posterbot.config import Config, ModelsConfig
from posterbot.errors import Refusal

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, steps done, steps in total)
DEMO_NOTE = "random weights, not a real checkpoint - images are noise (set models.base)"


class Cancelled(Exception):
    """Raised between denoising steps when the caller asked to stop."""


@dataclass
class GenerationResult:
    params: GenerationParams  # with seeds resolved
    images: list[Image.Image]
    seeds: list[int]
    subseeds: list[int]
    infotexts: list[str]
    model_name: str
    model_hash: str | None
    loras: list[AppliedLora] = field(default_factory=list)
    is_demo: bool = False

    def png(self, index: int) -> bytes:
        return infotext.png_bytes(self.images[index], self.infotexts[index])

    def info(self) -> dict[str, Any]:
        """WebUI's `info` object of a txt2img response."""
        p = self.params
        count = len(self.images)
        return {
            "prompt": p.prompt,
            "all_prompts": [p.prompt] * count,
            "negative_prompt": p.negative_prompt,
            "all_negative_prompts": [p.negative_prompt] * count,
            "seed": self.seeds[0],
            "all_seeds": self.seeds,
            "subseed": self.subseeds[0],
            "all_subseeds": self.subseeds,
            "subseed_strength": p.subseed_strength,
            "width": p.width,
            "height": p.height,
            "sampler_name": p.sampler_name,
            "cfg_scale": p.cfg_scale,
            "steps": p.steps,
            "batch_size": p.batch_size,
            "restore_faces": p.restore_faces,
            "tiling": p.tiling,
            "resize_mode": p.resize_mode,
            "sd_model_name": self.model_name,
            "sd_model_hash": self.model_hash,
            "denoising_strength": p.denoising_strength if p.enable_hr or p.is_img2img else None,
            "clip_skip": p.clip_skip,
            "infotexts": self.infotexts,
            "styles": [],
            "version": f"posterbot {__version__}",
            "demo_model": self.is_demo,
        }


def pick_device(models: ModelsConfig) -> tuple[torch.device, torch.dtype]:
    """The configured device, and float16 on a GPU / float32 on the CPU unless configured."""
    if models.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(models.device)
    if models.dtype != "auto":
        return device, getattr(torch, models.dtype)
    return device, torch.float16 if device.type == "cuda" else torch.float32


def quiet_model_libraries() -> None:
    """No progress bars and no stderr handlers of their own in diffusers and transformers: their
    messages go through the standard loggers, so to posterbot's log file (posterbot/logs.py)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()
        library.disable_default_handler()
        library.enable_propagation()


def load_pipeline(ref: ModelRef, registry: Registry, device: torch.device, dtype: torch.dtype):
    """Load a Stable Diffusion 1.x/2.x or SDXL text-to-image pipeline from `ref`."""
    quiet_model_libraries()
    from diffusers import (
        AutoencoderKL,
        DiffusionPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    from engine.diffusion import single_file

    if ref.is_demo and not Path(ref.location).exists():
        from engine.diffusion.tiny import write_demo_model

        log.warning("no model configured: writing the tiny demo model to %s", ref.location)
        write_demo_model(ref.location)
    vae = None
    vae_path = registry.vae()
    if vae_path is not None and vae_path.is_file():
        cache = registry.config.data_dir / "cache"
        vae = single_file.load_vae(vae_path, cache, dtype, sdxl=bool(is_sdxl(ref)))
    elif vae_path is not None:
        vae = AutoencoderKL.from_pretrained(str(vae_path), dtype=dtype)
    if ref.kind == "file":
        pipe = single_file.load(
            Path(ref.location),
            registry.config.data_dir / "cache",
            dtype,
            config=registry.config.models.single_file_config,
            **({"vae": vae} if vae is not None else {}),
        )
    else:
        pipe = DiffusionPipeline.from_pretrained(ref.location, dtype=dtype)
    if not isinstance(pipe, StableDiffusionPipeline | StableDiffusionXLPipeline):
        raise ValueError(
            f"model: {ref.name} is a {type(pipe).__name__}; "
            "only Stable Diffusion 1.x/2.x and SDXL text-to-image models are supported"
        )
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # posters are reviewed by people; WebUI has none either
    if vae is not None:
        pipe.vae = vae
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    if registry.config.models.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    return pipe


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (WebUI's variation seed)."""
    low_norm = low / low.norm()
    high_norm = high / high.norm()
    dot = (low_norm * high_norm).sum().clamp(-1.0, 1.0)
    if dot.abs() > 0.9995:
        return (1 - strength) * low + strength * high
    omega = torch.acos(dot)
    return (
        torch.sin((1 - strength) * omega) * low + torch.sin(strength * omega) * high
    ) / torch.sin(omega)


def seeded_noise(
    shape: tuple[int, ...], seeds: list[int], subseeds: list[int], strength: float
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """One noise tensor per image from its own CPU generator, and the generators to continue.

    The generators go on to draw the sampler's per-step noise (ancestral/SDE samplers), so that
    too depends only on the image's own seed.
    """
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    noise = [torch.randn(shape, generator=g) for g in generators]
    if strength > 0:
        variations = [
            torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in subseeds
        ]
        noise = [slerp(strength, n, v) for n, v in zip(noise, variations, strict=True)]
    return torch.stack(noise), generators


@dataclass(frozen=True)
class Start:
    """An init picture at the output size, the hash WebUI's infotext names it by (md5 of the
    pixels as sent), and the inpainting mask (None for img2img of the whole picture)."""

    picture: Image.Image
    hash: str
    mask: img2img.Mask | None
    source: Image.Image  # as sent, before fitting (what SD upscale enlarges)


TILES_PER_CALL = 4  # SD upscale tiles rendered together


def tile_calls(params: GenerationParams, starts: list[Start]) -> int:
    """Pipeline calls per image: 1, or SD upscale's groups of tiles."""
    if not params.sd_upscale_scale or not starts:
        return 1
    width, height = img2img.upscaled_size(starts[0].source.size, params.sd_upscale_scale)
    overlap = params.sd_upscale_overlap
    tiles = len(img2img.tile_origins(width, params.width, overlap)) * len(
        img2img.tile_origins(height, params.height, overlap)
    )
    return math.ceil(tiles / TILES_PER_CALL)


CONDITIONING = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                "negative_pooled_prompt_embeds")  # fmt: skip


def per_image(sampling: dict, index: int) -> dict:
    """The sampling arguments of image `index` of a call alone."""
    return sampling | {
        name: sampling[name][index : index + 1] for name in CONDITIONING if name in sampling
    }


def repeat(sampling: dict, count: int) -> dict:
    """One image's sampling arguments for `count` images."""
    return sampling | {
        name: sampling[name].repeat(count, *[1] * (sampling[name].dim() - 1))
        for name in CONDITIONING
        if name in sampling
    }


def first_pass_steps(params: GenerationParams) -> int:
    """The steps the first pass runs: all of them, or img2img's `denoising_strength` share of
    them (diffusers' and WebUI's rule: the schedule keeps `steps`, the start skips the rest)."""
    if not params.is_img2img:
        return params.steps
    return min(int(params.steps * params.denoising_strength), params.steps)


def masked_start(picture: Image.Image, mask: img2img.Mask, fill: int, seed: int) -> Image.Image:
    """The picture with its masked area prepared as WebUI's "Masked content" asks (the latent
    modes are drawn in pixels: grey for nothing, coloured noise from the seed for noise)."""
    if fill == img2img.FILL:
        return img2img.fill_masked(picture, mask.sharp)
    if fill == img2img.LATENT_NOTHING:
        return Image.composite(Image.new("RGB", picture.size, (128, 128, 128)), picture, mask.sharp)
    if fill == img2img.LATENT_NOISE:
        noise = img2img.seeded_noise_picture(picture.size, seed)
        return Image.composite(noise, picture, mask.sharp)
    return picture


@contextmanager
def noised_with(pipe, noise: torch.Tensor | None) -> Iterator[None]:
    """An img2img or inpainting pipeline that noises the start latents with `noise` (the seeds'
    own, variation seeds included) instead of drawing its own: its `prepare_latents` for the
    one call."""
    if noise is None:
        yield
        return
    original = pipe.prepare_latents
    # the inpainting pipelines' prepare_latents (they name `is_strength_max`) also hand back
    # the noise, which re-noises the unmasked area of a 4-channel model at every step
    inpainting = "is_strength_max" in inspect.signature(original).parameters

    def img2img_latents(image: torch.Tensor, timestep: torch.Tensor, *args, **kwargs):
        return pipe.scheduler.add_noise(image, noise.to(image.device, image.dtype), timestep)

    def inpainting_latents(*args, **kwargs):
        arguments = inspect.signature(original).bind(*args, **kwargs).arguments
        wants_picture = arguments.get("return_image_latents", False)
        given = noise.to(arguments["device"], arguments["dtype"])
        # given latents: diffusers takes them as the noise (scaled for strength 1) and draws
        # nothing; the picture's latents come back so strength < 1 can noise them itself
        latents, _, picture = original(
            **arguments | {"latents": given, "return_noise": True, "return_image_latents": True}
        )
        if not arguments.get("is_strength_max", True):
            latents = pipe.scheduler.add_noise(picture, given, arguments["timestep"])
        return (latents, given, picture) if wants_picture else (latents, given)

    pipe.prepare_latents = inpainting_latents if inpainting else img2img_latents
    try:
        yield
    finally:
        del pipe.prepare_latents


class Engine:
    """A loaded base model, its LoRA adapters, and txt2img with WebUI semantics."""

    def __init__(self, config: Config, model: str | None = None) -> None:
        self.config = config
        self.registry = Registry(config)
        self.model = self.registry.checkpoint(model)
        self.device, self.dtype = pick_device(config.models)
        started = time.perf_counter()
        self.pipe = load_pipeline(self.model, self.registry, self.device, self.dtype)
        log.info(
            "loaded %s on %s in %.1fs", self.model.name, self.device, time.perf_counter() - started
        )
        if self.model.is_demo:
            log.warning("DEMO MODEL: %s", DEMO_NOTE)
        self.model_hash = self.registry.model_hash(self.model)
        self.loras = LoraSet(
            self.pipe, self.registry, config.models.lora_cache_size, config.models.fuse_lora
        )
        self.embeddings = EmbeddingSet(self.pipe, self.registry)
        self._scheduler_config = dict(self.pipe.scheduler.config)
        self._tasks: dict[str, Any] = {}  # img2img, inpainting and ControlNet pipelines
        self.controlnets = ControlNetSet(
            config, dict(self.pipe.unet.config), self.device, self.dtype
        )

    def txt2img(
        self,
        params: GenerationParams,
        progress: Progress | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Generate `batch_size × n_iter` images (img2img or inpainting when the params bring
        pictures); see the module docstring for the rules."""
        return self.generate_batch([params], progress, cancelled)[0]

    def generate_batch(
        self,
        jobs: list[GenerationParams],
        progress: Progress | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[GenerationResult]:
        """Several compatible requests (equal `batch_key()`) rendered together, each with its own
        prompt, seeds and result. Iteration k of every request shares one pipeline call.
        """
        # 1. check inputs and fix the seeds
        if not jobs:
            raise ValueError("jobs: nothing to generate")
        for params in jobs:
            check(params, self.config.limits)
        if len({params.batch_key() for params in jobs}) > 1:
            raise ValueError("jobs: requests differ in model settings and cannot share a batch")
        upscalers = self.registry.upscalers()
        if jobs[0].enable_hr:
            hires.check_upscaler(jobs[0].hr_upscaler, upscalers)
        jobs = [resolve_seeds(params) for params in jobs]
        seeds = [params.seeds() for params in jobs]
        texts = [params.all_loras()[0] for params in jobs]

        shared = jobs[0]
        pictures = self.pictures(shared)  # the same for every job of a batch (batch key)
        restorer = self.face_restorer(shared)  # looked up once for the batch
        init_image = pictures[0].picture if pictures else None
        controls = prepare(
            shared.controlnet, self.controlnets, shared.width, shared.height, init_image
        )
        steps_per_call = first_pass_steps(shared) * tile_calls(shared, pictures) + (
            shared.hires_steps() if shared.enable_hr and shared.denoising_strength else 0
        )
        iterations = max(params.n_iter for params in jobs)
        reporter = _StepReporter(progress, cancelled, iterations * steps_per_call)
        reporter.check("before loading LoRAs")

        # 2. attach the LoRAs the prompts ask for (the same for every request in a batch)
        applied = self.loras.apply(jobs[0].all_loras()[1])

        # 3. render iteration by iteration, as WebUI's n_iter loop does
        images: list[list[Image.Image]] = [[] for _ in jobs]
        for iteration in range(iterations):
            members = [i for i, params in enumerate(jobs) if iteration < params.n_iter]
            call: dict[str, list] = {
                "prompts": [], "negatives": [], "seeds": [], "subseeds": [], "starts": []
            }  # fmt: skip
            for i in members:
                size = jobs[i].batch_size
                index = slice(iteration * size, (iteration + 1) * size)
                call["prompts"] += [texts[i]] * size
                call["negatives"] += [jobs[i].negative_prompt] * size
                call["seeds"] += seeds[i][0][index]
                call["subseeds"] += seeds[i][1][index]
                call["starts"] += (
                    [pictures[k % len(pictures)] for k in range(size)] if pictures else []
                )
            with self.tiling(shared.tiling), controls.soft_injection():
                rendered = self.render(
                    **call, params=shared, controls=controls, steps=reporter, upscalers=upscalers
                )
            if restorer is not None:  # after sampling and hires, as WebUI does
                rendered = self.restore_faces(rendered, restorer)
            for i in members:
                images[i] += rendered[: jobs[i].batch_size]
                rendered = rendered[jobs[i].batch_size :]

        # 4. describe each image the way WebUI does
        return [
            GenerationResult(
                params,
                images[i],
                seeds[i][0],
                seeds[i][1],
                [
                    self.infotext(params, seed, subseed, applied, pictures, k, controls, restorer)
                    for k, (seed, subseed) in enumerate(zip(*seeds[i], strict=True))
                ],
                self.model.name,
                self.model_hash,
                applied,
                self.model.is_demo,
            )
            for i, params in enumerate(jobs)
        ]

    def pictures(self, params: GenerationParams) -> list[Start]:
        """The init pictures fitted to the output size, each with its mask and the region
        "only masked" works on; [] for txt2img."""
        if not params.is_img2img:
            return []
        size = (params.width, params.height)
        mask = None
        if not params.mask and self.pipe.unet.config.in_channels == 9:
            # an inpainting checkpoint always inpaints: img2img is repainting everything
            everything = Image.new("L", size, 255)
            mask = img2img.Mask(everything, everything)
        if params.mask:
            mask = img2img.read_mask(
                open_picture(self.config, params.mask),
                *size,
                params.resize_mode,
                params.mask_blur,
                params.inpainting_mask_invert,
            )
            if mask.box() is None:
                raise Refusal("mask", "has nothing white to repaint", "empty_mask")
        starts = []
        for reference in params.init_images:
            source = open_picture(self.config, reference).convert("RGB")
            fitted = img2img.resize_image(source, params.resize_mode, *size)
            starts.append(Start(fitted, hashlib.md5(source.tobytes()).hexdigest(), mask, source))
        return starts

    def face_restorer(self, params: GenerationParams) -> Path | None:
        """The restorer file a request asks for (GFPGAN or RestoreFormer), or None."""
        if not params.restore_faces:
            return None
        folder = self.config.face_restorers_dir
        return faces.find_restorer(params.face_restoration_model or None, folder)

    def restore_faces(self, images: list[Image.Image], restorer: Path) -> list[Image.Image]:
        """The pictures with their faces restored by `restorer`, fully visible."""
        detector = faces.detector_file(self.config.face_restorers_dir)
        return faces.restore_faces(images, restorer, 1.0, detector)

    @contextmanager
    def tiling(self, enabled: bool) -> Iterator[None]:
        """Seamless pictures (WebUI's `tiling`): every convolution of the UNet and the VAE pads
        circularly, so the left edge continues the right one and the top the bottom."""
        if not enabled:
            yield
            return
        convolutions = [
            module
            for part in (self.pipe.unet, self.pipe.vae)
            for module in part.modules()
            if isinstance(module, torch.nn.Conv2d)
        ]
        for conv in convolutions:
            conv.padding_mode = "circular"
        try:
            yield
        finally:
            for conv in convolutions:
                conv.padding_mode = "zeros"

    @torch.no_grad()
    def render(
        self,
        prompts: list[str],
        negatives: list[str],
        seeds: list[int],
        subseeds: list[int],
        starts: list[Start],
        params: GenerationParams,
        controls: Controls,
        steps: _StepReporter,
        upscalers: dict[str, Path],
    ) -> list[Image.Image]:
        """One pipeline call for len(prompts) images sharing size, sampler, steps, CFG and hires
        (and, for img2img, one start picture per image)."""
        count = len(prompts)
        pipe = self.pipe

        # 1. encode prompt and negative prompt together so they have the same chunk count (with
        #    the textual-inversion embeddings they name)
        texts = self.embeddings.prepare(prompts + negatives)
        embeds, pooled = encode_prompts(pipe, texts, params.clip_skip)
        conditioning = {"prompt_embeds": embeds[:count], "negative_prompt_embeds": embeds[count:]}
        if pooled is not None:
            conditioning |= {
                "pooled_prompt_embeds": pooled[:count],
                "negative_pooled_prompt_embeds": pooled[count:],
            }

        steps.check("after encoding the prompts")

        # 2. per-image noise from per-image CPU generators
        factor = pipe.vae_scale_factor
        channels = pipe.vae.config.latent_channels  # an inpainting UNet takes 9, the noise is 4
        shape = (channels, params.height // factor, params.width // factor)
        noise, generators = seeded_noise(shape, seeds, subseeds, params.subseed_strength)

        # 3. first pass: from noise, or from the start pictures
        latent_upscale = params.enable_hr and hires.is_latent(params.hr_upscaler)
        sampling = {
            **conditioning,
            "num_inference_steps": params.steps,
            "guidance_scale": params.cfg_scale,
            "generator": generators,
            "output_type": "latent" if latent_upscale else "pil",
        }
        if starts and params.sd_upscale_scale:
            return [
                self.tiled_upscale(start, seed, params, per_image(sampling, k), steps, upscalers)
                for k, (start, seed) in enumerate(zip(starts, seeds, strict=True))
            ]
        if starts:
            first = self.picture_pass(starts, seeds, params, sampling, controls, steps, noise)
        else:
            pipe = self._pipeline("txt2img", controls)
            pipe.scheduler = make_scheduler(params.sampler_name, self._scheduler_config)
            first = pipe(
                **sampling,
                **controls.arguments("txt2img", params.width, params.height),
                width=params.width,
                height=params.height,
                latents=noise.to(self.device, self.dtype),
                callback_on_step_end=steps.callback("txt2img"),
            ).images
        if not params.enable_hr:
            return first

        # 4. hires fix: upscale, then img2img at denoising strength with the same seeds
        width, height = params.hires_size()
        if latent_upscale:
            start = hires.upscale_latents(first, params.hr_upscaler, width, height, factor)
        else:
            start = hires.upscale_images(first, params.hr_upscaler, width, height, upscalers)
        steps.check("after upscaling")
        strength = params.denoising_strength
        if strength == 0:  # WebUI accepts it: the upscaled first pass, not sampled again
            return self.decode(start) if latent_upscale else start
        img2img_pipe = self._pipeline("img2img", controls)
        img2img_pipe.scheduler = make_scheduler(params.sampler_name, self._scheduler_config)
        return img2img_pipe(
            **conditioning,
            **controls.arguments("img2img", width, height),
            image=start,
            strength=strength,
            # WebUI runs exactly `hires steps` steps: the schedule is stretched so that the
            # `strength` fraction of it has that many.
            num_inference_steps=math.ceil(params.hires_steps() / strength),
            guidance_scale=params.cfg_scale,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            callback_on_step_end=steps.callback("hires"),
        ).images

    def picture_pass(
        self,
        starts: list[Start],
        seeds: list[int],
        params: GenerationParams,
        sampling: dict,
        controls: Controls,
        steps: _StepReporter,
        noise: torch.Tensor | None = None,
    ) -> list[Image.Image] | torch.Tensor:
        """img2img of each start picture at `denoising_strength`, or its inpainting where the
        request has a mask; WebUI's rules for the masked content and the "only masked" region.
        Both start from `noise` when given (the seeds' noise, variation seeds slerped in, as
        txt2img's), else from the noise diffusers draws from the generators."""
        size = (params.width, params.height)
        strength = params.denoising_strength
        mask = starts[0].mask
        # 1. what the sampler starts from: the picture, its masked area prepared
        pictures = [start.picture for start in starts]
        regions: list[tuple[int, int, int, int]] = []
        if mask is not None:
            pictures = [
                masked_start(picture, mask, params.inpainting_fill, seed)
                for picture, seed in zip(pictures, seeds, strict=True)
            ]
            if params.inpaint_full_res:  # the masked region alone, enlarged to the full size
                box = img2img.region_around(
                    mask.box(), params.inpaint_full_res_padding, *size, size
                )
                regions = [box] * len(pictures)
                pictures = [p.crop(box).resize(size, Image.Resampling.LANCZOS) for p in pictures]
        # 2. sample (nothing to sample at strength 0: WebUI gives the picture back)
        if strength == 0:
            latents = self.encode(pictures, params.resize_mode, size)
            if sampling["output_type"] == "latent" and mask is None:
                return latents
            drawn = self.decode(latents)
        elif mask is None:
            pipe = self._pipeline("img2img", controls)
            pipe.scheduler = make_scheduler(params.sampler_name, self._scheduler_config)
            with noised_with(pipe, noise):
                return pipe(
                    **sampling,
                    **controls.arguments("img2img", *size),
                    image=self.encode(pictures, params.resize_mode, size),
                    strength=strength,
                    callback_on_step_end=steps.callback("img2img"),
                ).images
        else:
            pipe = self._pipeline("inpaint", controls)
            pipe.scheduler = make_scheduler(params.sampler_name, self._scheduler_config)
            region_mask = mask.sharp
            if regions:
                region_mask = mask.sharp.crop(regions[0]).resize(size, Image.Resampling.LANCZOS)
            with noised_with(pipe, noise):
                drawn = pipe(
                    **{**sampling, "output_type": "pil"},
                    # the maps of the region "only masked" repaints, as the extension crops them
                    **controls.arguments("inpaint", *size, regions[0] if regions else None),
                    image=pictures,
                    mask_image=[region_mask] * len(pictures),
                    width=params.width,
                    height=params.height,
                    strength=strength,
                    callback_on_step_end=steps.callback("inpaint"),
                ).images
        if mask is None:
            return drawn
        # 3. the repainted area back over the original through the blurred mask
        finished = []
        for k, (image, start) in enumerate(zip(drawn, starts, strict=True)):
            if regions:
                left, top, right, bottom = regions[k]
                whole = start.picture.copy()
                whole.paste(
                    image.resize((right - left, bottom - top), Image.Resampling.LANCZOS),
                    (left, top),
                )
                image = whole
            finished.append(img2img.paste_back(image, start.picture, mask))
        if sampling["output_type"] == "latent":
            return self.encode(finished, img2img.JUST_RESIZE, size)
        return finished

    def tiled_upscale(
        self,
        start: Start,
        seed: int,
        params: GenerationParams,
        sampling: dict,
        steps: _StepReporter,
        upscalers: dict[str, Path],
    ) -> Image.Image:
        """WebUI's "SD upscale" script: the picture enlarged by the upscaler, then each
        width×height tile of it redrawn by img2img with the image's seed, and the tiles blended
        back across their overlaps."""
        size = img2img.upscaled_size(start.source.size, params.sd_upscale_scale)
        name = params.sd_upscale_upscaler
        big = hires.upscale_images([start.source], name, *size, upscalers)[0]
        origins = [
            (x, y)
            for y in img2img.tile_origins(size[1], params.height, params.sd_upscale_overlap)
            for x in img2img.tile_origins(size[0], params.width, params.sd_upscale_overlap)
        ]
        drawn = []
        for first in range(0, len(origins), TILES_PER_CALL):
            group = origins[first : first + TILES_PER_CALL]
            crops = [big.crop((x, y, x + params.width, y + params.height)) for x, y in group]
            tiles = [Start(crop, start.hash, None, crop) for crop in crops]
            call = repeat(sampling, len(tiles)) | {
                "generator": [torch.Generator("cpu").manual_seed(seed) for _ in tiles],
                "output_type": "pil",
            }
            # no ControlNet here: the service refuses units with SD upscale (maps per tile)
            redrawn = self.picture_pass(
                tiles, [seed] * len(tiles), params, call, NO_CONTROLS, steps
            )
            drawn += zip(redrawn, group, strict=True)
        return img2img.blend_tiles(size, drawn, params.sd_upscale_overlap)

    @torch.no_grad()
    def encode(
        self, pictures: list[Image.Image], resize_mode: int, size: tuple[int, int]
    ) -> torch.Tensor:
        """The VAE's latents of `pictures` (its mean, so a picture always gives the same ones).
        The latent-upscale resize mode encodes at the picture's own size and scales the latents."""
        processor = self.pipe.image_processor
        vae = self.pipe.vae
        batch = processor.preprocess(pictures).to(self.device, self.dtype)
        latents = vae.encode(batch).latent_dist.mode() * vae.config.scaling_factor
        if resize_mode == img2img.LATENT_UPSCALE:
            factor = self.pipe.vae_scale_factor
            latents = hires.upscale_latents(latents, "Latent", *size, factor)
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        vae = self.pipe.vae
        decoded = vae.decode(latents.to(self.device, self.dtype) / vae.config.scaling_factor)
        return self.pipe.image_processor.postprocess(decoded.sample, output_type="pil")

    def _pipeline(self, task: str, controls: Controls = NO_CONTROLS):
        """The txt2img, img2img or inpainting pipeline over the loaded model's modules (built
        once), with the job's ControlNets when it has units (diffusers' ControlNet variant)."""
        if task == "txt2img" and not controls:
            return self.pipe
        key = f"controlnet {task}" if controls else task
        if key not in self._tasks:
            from diffusers import (
                AutoPipelineForImage2Image,
                AutoPipelineForInpainting,
                AutoPipelineForText2Image,
            )

            auto = {
                "txt2img": AutoPipelineForText2Image,
                "img2img": AutoPipelineForImage2Image,
                "inpaint": AutoPipelineForInpainting,
            }[task]
            extra = {"controlnet": controls.model} if controls else {}
            pipeline = auto.from_pipe(self.pipe, **extra)  # shares the modules: no extra memory
            pipeline.set_progress_bar_config(disable=True)
            self._tasks[key] = pipeline
        if controls:
            self._tasks[key].controlnet = controls.model  # this job's units
        return self._tasks[key]

    def infotext(
        self,
        params: GenerationParams,
        seed: int,
        subseed: int,
        loras: list[AppliedLora],
        pictures: list[Start] | None = None,
        index: int = 0,
        controls: Controls = NO_CONTROLS,
        restorer: Path | None = None,
    ) -> str:
        hr = params.enable_hr
        resized = hr and bool(params.hr_resize_x or params.hr_resize_y)
        final_w, final_h = params.hires_size()
        variation = params.subseed_strength > 0
        start = pictures[index % len(pictures)] if pictures else None
        masked = start is not None and start.mask is not None
        values = {
            "Steps": params.steps,
            "Sampler": params.sampler_name,
            "CFG scale": params.cfg_scale,
            "Seed": seed,
            "Size": f"{params.width}x{params.height}",
            "Model hash": self.model_hash,
            "Model": self.model.name,
            "VAE": Path(self.config.models.vae).stem if self.config.models.vae else None,
            "Variation seed": subseed if variation else None,
            "Variation seed strength": params.subseed_strength if variation else None,
            "Denoising strength": params.denoising_strength if hr or start else None,
            "Init image hash": start.hash if start else None,
            "Mask blur": params.mask_blur if masked else None,
            "Inpaint area": "Only masked" if masked and params.inpaint_full_res else None,
            "Masked area padding": params.inpaint_full_res_padding
            if masked and params.inpaint_full_res
            else None,
            "Mask mode": "Inpaint not masked" if masked and params.inpainting_mask_invert else None,
            "Masked content": img2img.MASKED_CONTENT[params.inpainting_fill] if masked else None,
            "Clip skip": params.clip_skip if params.clip_skip > 1 else None,
            "Tiling": True if params.tiling else None,
            "Face restoration": faces.family_of(restorer.stem) if restorer else None,
            "Hires upscale": params.hr_scale if hr and not resized else None,
            "Hires resize": f"{final_w}x{final_h}" if resized else None,
            "Hires steps": params.hr_second_pass_steps
            if hr and params.hr_second_pass_steps
            else None,
            "Hires upscaler": params.hr_upscaler if hr else None,
            "Lora hashes": ", ".join(f"{lora.name}: {lora.hash}" for lora in loras) or None,
            # posterbot's own key: which promoted version an IP's LoRA file holds
            "Lora versions": ", ".join(
                f"{lora.name}: {lora.version}" for lora in loras if lora.version
            )
            or None,
            **controls.infotext(),
            "Demo model": DEMO_NOTE if self.model.is_demo else None,
            "Version": f"posterbot {__version__}",
        }
        return infotext.build(params.prompt, params.negative_prompt, values)


class _StepReporter:
    """Turns diffusers' per-step callback into progress reports and cancellation checks."""

    def __init__(
        self, progress: Progress | None, cancelled: Callable[[], bool] | None, total: int
    ) -> None:
        self.progress = progress
        self.cancelled = cancelled
        self.total = total
        self.done = 0

    def check(self, stage: str) -> None:
        """Stop here (`Cancelled`) when asked to: between steps, and between the long parts
        before the first step (LoRA loading, prompt encoding, upscaling)."""
        if self.cancelled is not None and self.cancelled():
            raise Cancelled(f"cancelled {stage} at step {self.done} of {self.total}")

    def callback(self, stage: str):
        def on_step_end(pipe, step: int, timestep, tensors: dict) -> dict:
            self.done += 1
            if self.progress is not None:
                self.progress(stage, self.done, self.total)
            self.check("after a step")
            return tensors

        return on_step_end
