"""WebUI sampler names → diffusers schedulers (the table in diffusers' scheduler overview).

The names themselves live in `prompts.spec` (the prompt builder validates them too). The table
is plain data; `make_scheduler` imports diffusers only when a scheduler is built.
"""

from __future__ import annotations

from typing import Any

from posterbot.errors import Refusal
from prompts.spec import SAMPLER_NAMES
from prompts.spec import check_sampler as check_sampler_name

KARRAS = {"use_karras_sigmas": True}

# WebUI name (prompts.spec.SAMPLER_NAMES) → (diffusers scheduler class, extra config)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", KARRAS),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", KARRAS),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", KARRAS),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", KARRAS),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", **KARRAS},
    ),
    # diffusers' own mapping: its stochastic DPMSolverSDEScheduler draws noise from one seeded
    # Brownian tree per call, which would break "image i of a batch = a single run at seed s+i".
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSinglestepScheduler", KARRAS),
    "DDIM": ("DDIMScheduler", {"set_alpha_to_one": False}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),  # PLMS is PNDM without Runge-Kutta
    "DDPM": ("DDPMScheduler", {}),
    # WebUI ≥ 1.9 names the schedule apart ("Euler" + "Karras"): the combined names
    "Euler Karras": ("EulerDiscreteScheduler", KARRAS),
    "Heun Karras": ("HeunDiscreteScheduler", KARRAS),
    "DPM++ 3M SDE": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
    ),
    "DPM++ 3M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3, **KARRAS},
    ),
}


def sampler_names() -> list[str]:
    return list(SAMPLER_NAMES)


def check_sampler(name: str) -> str:
    """The WebUI spelling of sampler `name`; a Refusal (`unknown_sampler`) listing the valid
    names if unknown."""
    try:
        return check_sampler_name(name, "sampler_name")
    except ValueError as exc:
        detail = str(exc).partition(": ")[2]
        raise Refusal("sampler_name", detail, "unknown_sampler", name=name) from None


def make_scheduler(name: str, base_config: dict[str, Any]) -> Any:
    """A fresh scheduler for the WebUI sampler `name`, from the model's own scheduler config."""
    import diffusers

    class_name, extra = SAMPLERS[check_sampler(name)]
    scheduler_class = getattr(diffusers, class_name)
    config = dict(base_config)
    # Settings of the checkpoint's default scheduler (PNDM for SD 1.x) that mean nothing to others.
    config.pop("skip_prk_steps", None)
    return scheduler_class.from_config(config, **extra)
