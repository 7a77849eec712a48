"""The bot's conversation core: a message or a button press in, replies out (via an Outbox).

No Telegram here: the Telegram handlers and the terminal console are thin adapters that build
`Incoming`/`Press` values and call these methods. Every entry point checks access first.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import aiohttp

from bot import keyboards
from bot.i18n import LANGUAGES, pick_language, split_text, t
from bot.jobs import Jobs, progress_line
from bot.replies import Incoming, Outbox, Picture, Place, Press, Reply, User, engine_user
from bot.roles import Role, Roles
from bot.settings import CHOICES, UserSettings
from bot.store import JobRecord, Store
from bot.training import Training
from engine.diffusion import infotext
from engine.service.client import EngineBusy, EngineClient, EngineRejected, EngineUnavailable
from posterbot.config import Config
from prompts.build import build_prompt
from prompts.request import extract_count, split_options
from prompts.spec import PosterPrompt, render_prompt
from prompts.syntax import LoraTag
from prompts.template import split_count

log = logging.getLogger(__name__)

HISTORY_SIZE = 10  # /history shows this many jobs, each re-runnable
TEMPLATE_NAME_CHARS = 32  # keeps /template list readable and button data short


def wanted_count(request: str) -> bool:
    """Whether the request itself says how many images (来4张, --batch 2)."""
    text, options = split_options(request)
    asked = {"batch_size", "n_iter"} & options.settings.keys()
    return bool(asked) or extract_count(text)[0] is not None


class Conversation:
    def __init__(
        self,
        config: Config,
        store: Store,
        engine: EngineClient,
        outbox: Outbox,
        http: aiohttp.ClientSession | None = None,
        origin: str = "",
    ) -> None:
        self.config = config
        # Who is talking to the engine (e.g. `tg777000111` for a Telegram bot): message ids are
        # unique per bot and chat only, so job keys carry it; two bots or console sessions
        # sharing one engine never get each other's jobs back.
        self.origin = origin
        self.store = store
        self.engine = engine
        self.outbox = outbox
        self.http = http  # reused by the LLM step
        self.roles = Roles(config.access, store)
        self.jobs = Jobs(engine, store, outbox, config.telegram)
        self.training = Training(self)  # admins' datasets, LoRA training and versions

    # --- helpers every entry point uses -------------------------------------------------------

    def language(self, user: User) -> str:
        return pick_language(self.store.user(user.id)["language"], user.language)

    def settings(self, user_id: int) -> UserSettings:
        return UserSettings.from_dict(json.loads(self.store.user(user_id)["settings"] or "{}"))

    def save_settings(self, user_id: int, settings: UserSettings) -> None:
        self.store.update_user(user_id, settings=json.dumps(settings.to_dict()))

    def job_key(self, event: Incoming | Press) -> str:
        """The engine's idempotency key for the job this message or press asks for."""
        return f"{self.origin}:{event.key}"

    async def say(self, place: Place, language: str, key: str, **values: Any) -> None:
        for piece in split_text(t(language, key, **values)):
            await self.outbox.send(place, Reply(piece))

    async def admitted(self, message: Incoming, role: Role = Role.USER) -> bool:
        """True when the sender may do this here; otherwise refuse politely, showing ids."""
        language = self.language(message.user)
        place = message.place
        if role == Role.USER and self.roles.may_ask(message.user.id, place.chat_id, place.is_group):
            return True
        if role > Role.USER and self.roles.of(message.user.id) >= role:
            return True
        if place.is_group and role == Role.USER:
            await self.say(place, language, "group_not_allowed", chat_id=place.chat_id)
        elif self.roles.of(message.user.id) >= Role.USER:
            await self.say(place, language, "admins_only")
        else:
            await self.say(place, language, "stranger", user_id=message.user.id)
        return False

    # --- poster requests ----------------------------------------------------------------------

    async def text(self, message: Incoming) -> None:
        """Plain text addressed to the bot: the changes for a pending "edit", else a request."""
        pending = self.store.user(message.user.id)["edit"]
        if pending and await self.admitted(message):
            self.store.update_user(message.user.id, edit="")
            job_id, index = pending.rsplit(":", 1)
            parent = self.store.job(job_id)
            if parent is not None:
                await self.edit_prompt(message, parent, int(index))
                return
        await self.poster(message, message.text)

    async def poster(self, message: Incoming, request: str, seed: int | None = None) -> None:
        """A poster request: build the prompt, submit the candidates, acknowledge."""
        if not await self.admitted(message):
            return
        language = self.language(message.user)
        if not request.strip():
            await self.say(message.place, language, "poster_usage")
            return
        settings = self.settings(message.user.id)
        if seed is not None:
            settings = UserSettings.from_dict(settings.to_dict() | {"seed": seed})
        try:
            prompt = await build_prompt(
                request, self.config, template=settings.to_template(self.config), session=self.http
            )
            params = self.candidate_params(prompt, settings, wanted_count(request))
        except ValueError as exc:
            await self.say(message.place, language, "bad_request", reason=str(exc))
            return
        summary = describe(language, prompt, params)
        await self.submit(message, language, "candidates", request, params, summary)

    def candidate_params(
        self, prompt: PosterPrompt, settings: UserSettings, count_in_request: bool
    ) -> dict[str, Any]:
        """txt2img params from a prompt plus what only the bot's settings decide."""
        params = prompt.to_txt2img()
        if not count_in_request:
            count = settings.count or self.config.bot.default_count
            params["batch_size"], params["n_iter"] = split_count(
                count, self.config.limits.max_batch_size
            )
        if prompt.lora and settings.lora_weight is not None and prompt.natural_language:
            lora = LoraTag(prompt.lora.name, settings.lora_weight)
            params["prompt"] = render_prompt(
                prompt.trigger, prompt.natural_language, prompt.tags, lora
            )
        self.check_bot_limits(params)
        return params

    def check_bot_limits(self, params: dict[str, Any]) -> None:
        limits = self.config.bot
        count = params["batch_size"] * params["n_iter"]
        if count > limits.max_count:
            raise ValueError(f"count: {count} images, the bot allows {limits.max_count}")
        if params["steps"] > limits.max_steps:
            raise ValueError(f"steps: {params['steps']}, the bot allows {limits.max_steps}")
        if max(params["width"], params["height"]) > limits.max_side:
            size = f"{params['width']}x{params['height']}"
            raise ValueError(f"size: {size}, the bot allows sides up to {limits.max_side}")

    def over_limit(self, user_id: int) -> tuple[str, dict[str, Any]] | None:
        """Why this user may not start another job now (message key and values), or None."""
        if self.roles.of(user_id) >= Role.ADMIN:
            return None
        limits = self.config.bot
        if len(self.store.active_jobs(user_id)) >= limits.concurrent_jobs:
            return "too_many_jobs", {"limit": limits.concurrent_jobs}
        midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        if limits.daily_quota and self.store.jobs_since(user_id, midnight) >= limits.daily_quota:
            return "quota_used", {"limit": limits.daily_quota}
        return None

    async def submit(
        self,
        event: Incoming | Press,
        language: str,
        kind: str,
        request: str,
        params: dict[str, Any],
        summary: str,
    ) -> None:
        """Send one job to the engine and acknowledge it; refusals become friendly messages."""
        user, place = event.user, event.place
        if limited := self.over_limit(user.id):
            await self.say(place, language, limited[0], **limited[1])
            return
        priority = "admin" if self.roles.of(user.id) >= Role.ADMIN else "user"
        try:
            job = await self.engine.submit(
                params,
                user=engine_user(user.id),
                priority=priority,
                idempotency_key=self.job_key(event),
            )
        except EngineBusy as exc:
            await self.say(place, language, "engine_busy", seconds=round(exc.retry_after_s))
            return
        except EngineRejected as exc:
            await self.say(place, language, "bad_request", reason=str(exc))
            return
        except EngineUnavailable:
            await self.say(place, language, "engine_down")
            return
        if self.store.job(job["id"]) is not None:
            return  # this message was handled before a restart; its job is followed already
        record = JobRecord(job["id"], user.id, place, kind, request, params, language, summary)
        await self.jobs.start(record, job.get("position"))

    async def rerun(self, press: Press, parent: JobRecord, **changes: Any) -> None:
        """A new candidate set from an earlier job's params (reroll, variations, history)."""
        language = self.language(press.user)
        params = parent.params | changes
        summary = (
            t(language, "rerun_summary", request=parent.request)
            + "\n"
            + parameters_line(language, params)
        )
        await self.submit(press, language, "candidates", parent.request, params, summary)

    async def edit_prompt(self, message: Incoming, parent: JobRecord, index: int) -> None:
        """The chosen candidate's request with the user's changes, its seed kept."""
        request = f"{parent.request}，{message.text}"
        await self.poster(message, request, seed=parent.seeds[index])

    # --- button presses -------------------------------------------------------------------------

    async def press(self, press: Press) -> str | None:
        """A button under one of our messages; returns a short notice for the presser, if any."""
        action, _, rest = press.data.partition(":")
        language = self.language(press.user)
        if action == "set":
            return await self.settings_press(press, rest)
        if action == "dsfix":
            return await self.training.press_fix(press, rest)
        job_id, _, index_text = rest.partition(":")
        record = self.store.job(job_id)
        if record is None:
            return t(language, "job_unknown")
        if press.user.id != record.user_id and self.roles.of(press.user.id) < Role.ADMIN:
            return t(language, "not_your_job")
        index = int(index_text or 0)
        if index >= max(len(record.seeds), 1):
            return t(language, "job_unknown")
        handler = getattr(self, f"press_{action}", None)
        if handler is None:
            return t(language, "job_unknown")
        return await handler(press, record, index)

    async def press_pick(self, press: Press, record: JobRecord, index: int) -> str | None:
        """Pick a candidate: show what can be done with it (or go HD straight away)."""
        if self.settings(press.user.id).hd:
            return await self.press_hd(press, record, index)
        language = self.language(press.user)
        reply = Reply(
            t(language, "chosen", number=index + 1, seed=record.seeds[index]),
            keyboards.chosen_keyboard(language, record.job_id, index),
        )
        await self.outbox.edit(press.place, press.message_id, reply)
        return None

    async def press_back(self, press: Press, record: JobRecord, index: int) -> str | None:
        """Back to choosing among the candidates."""
        language = self.language(press.user)
        count = len(record.seeds)
        reply = Reply(
            t(language, "choose", count=count),
            keyboards.choose_keyboard(language, record.job_id, count),
        )
        await self.outbox.edit(press.place, press.message_id, reply)
        return None

    async def press_hd(self, press: Press, record: JobRecord, index: int) -> str | None:
        """Hires fix on the chosen candidate's locked seed."""
        language = self.language(press.user)
        params = record.params | self.locked_seed(record, index)
        params |= {"batch_size": 1, "n_iter": 1, "enable_hr": True}
        summary = t(language, "hd_summary", number=index + 1, seed=record.seeds[index])
        summary += "\n" + parameters_line(language, params)
        await self.submit(press, language, "final", record.request, params, summary)
        return t(language, "started")

    async def press_var(self, press: Press, record: JobRecord, index: int) -> str | None:
        """Variations: the chosen seed with new variation seeds."""
        await self.rerun(
            press,
            record,
            seed=record.seeds[index],
            subseed=-1,
            subseed_strength=self.config.bot.variation_strength,
        )
        return t(self.language(press.user), "started")

    async def press_reroll(self, press: Press, record: JobRecord, index: int) -> str | None:
        """A new set of candidates with new seeds."""
        await self.rerun(press, record, seed=-1, subseed=-1, subseed_strength=0)
        return t(self.language(press.user), "started")

    async def press_rerun(self, press: Press, record: JobRecord, index: int) -> str | None:
        """Run a /history entry again with the same parameters."""
        await self.rerun(press, record)
        return t(self.language(press.user), "started")

    async def press_edit(self, press: Press, record: JobRecord, index: int) -> str | None:
        """Ask for the changes; the user's next message (a reply) is taken as them."""
        language = self.language(press.user)
        self.store.update_user(press.user.id, edit=f"{record.job_id}:{index}")
        text = t(language, "edit_ask", request=record.request, seed=record.seeds[index])
        await self.outbox.send(press.place, Reply(text, ask_reply=True))
        return None

    async def press_file(self, press: Press, record: JobRecord, index: int) -> str | None:
        """The chosen candidate as a PNG file, infotext intact."""
        picture = await self.picture(record, index)
        message_id = await self.outbox.send_document(press.place, picture)
        self.store.remember_message(press.place.chat_id, message_id, record.job_id, index)
        return None

    def locked_seed(self, record: JobRecord, index: int) -> dict[str, Any]:
        """The seed fields that reproduce candidate `index` exactly (variations included)."""
        seed = {"seed": record.seeds[index]}
        if record.params.get("subseed_strength"):
            seed["subseed"] = record.subseeds[index]
        return seed

    async def picture(self, record: JobRecord, index: int) -> Picture:
        return Picture(
            png=await self.engine.output(record.outputs[index]),
            caption=self.jobs.caption(record, index),
            filename=f"poster-{record.seeds[index]}.png",
        )

    async def settings_press(self, press: Press, rest: str) -> str | None:
        """/settings keyboard: open a setting, apply a choice, go back, or close."""
        language = self.language(press.user)
        owner_text, _, rest = rest.partition(":")
        if int(owner_text) != press.user.id:
            return t(language, "not_your_settings")
        name, _, index = rest.partition(":")
        settings = self.settings(press.user.id)
        if name == "close":
            reply = Reply(t(language, "settings_saved"))
        elif name and not index:
            keyboard = keyboards.choices_keyboard(language, press.user.id, name)
            reply = Reply(
                t(language, "settings_pick", setting=t(language, f"name_{name}")), keyboard
            )
        else:
            if name:
                settings = settings.with_choice(name, CHOICES[name][int(index)])
                self.save_settings(press.user.id, settings)
            keyboard = keyboards.settings_keyboard(language, press.user.id, settings)
            reply = Reply(t(language, "settings_title"), keyboard)
        await self.outbox.edit(press.place, press.message_id, reply)
        return None

    # --- commands -------------------------------------------------------------------------------

    async def help(self, message: Incoming) -> None:
        """/start and /help: what the bot does and the commands this user may use."""
        if not await self.admitted(message):
            return
        language = self.language(message.user)
        admin = self.roles.of(message.user.id) >= Role.ADMIN
        await self.say(message.place, language, "help_admin" if admin else "help")

    async def show_settings(self, message: Incoming) -> None:
        """/settings: the settings keyboard."""
        if not await self.admitted(message):
            return
        language = self.language(message.user)
        settings = self.settings(message.user.id)
        keyboard = keyboards.settings_keyboard(language, message.user.id, settings)
        await self.outbox.send(message.place, Reply(t(language, "settings_title"), keyboard))

    async def template(self, message: Incoming, args: list[str]) -> None:
        """/template save|use|list|delete NAME: the user's parameter templates."""
        if not await self.admitted(message):
            return
        language, user_id, place = self.language(message.user), message.user.id, message.place
        action, name = [*args, "", ""][:2]
        if action == "list" or not action:
            names = self.store.template_names(user_id)
            listing = "\n".join(names) if names else t(language, "templates_none")
            await self.say(place, language, "templates_list", names=listing)
        elif action not in ("save", "use", "delete") or not name:
            await self.say(place, language, "template_usage")
        elif len(name) > TEMPLATE_NAME_CHARS:
            await self.say(place, language, "template_name_long", limit=TEMPLATE_NAME_CHARS)
        elif action == "save":
            self.store.save_template(user_id, name, self.settings(user_id).to_dict())
            await self.say(place, language, "template_saved", name=name)
        elif action == "delete":
            found = self.store.delete_template(user_id, name)
            await self.say(
                place, language, "template_deleted" if found else "template_missing", name=name
            )
        elif (saved := self.store.template(user_id, name)) is None:
            await self.say(place, language, "template_missing", name=name)
        else:
            self.save_settings(user_id, UserSettings.from_dict(saved))
            await self.say(place, language, "template_used", name=name)

    async def seed(self, message: Incoming, args: list[str]) -> None:
        """/seed [N|off]: show, lock or unlock the seed of the next requests."""
        if not await self.admitted(message):
            return
        language, user_id = self.language(message.user), message.user.id
        settings = self.settings(user_id)
        if args and (args[0] == "off" or args[0].isdigit()):
            seed = int(args[0]) if args[0].isdigit() else None
            settings = UserSettings.from_dict(settings.to_dict() | {"seed": seed})
            self.save_settings(user_id, settings)
        elif args:
            await self.say(message.place, language, "seed_usage")
            return
        recent = [seed for record in self.store.recent_jobs(user_id, 3) for seed in record.seeds]
        locked = settings.seed if settings.seed is not None else t(language, "seed_random")
        await self.say(
            message.place,
            language,
            "seed_status",
            locked=locked,
            recent=", ".join(map(str, recent)) or "-",
        )

    async def history(self, message: Incoming) -> None:
        """/history: the last jobs with their seeds, each re-runnable."""
        if not await self.admitted(message):
            return
        language = self.language(message.user)
        records = self.store.recent_jobs(message.user.id, HISTORY_SIZE)
        if not records:
            await self.say(message.place, language, "history_empty")
            return
        lines = [
            t(
                language,
                "history_line",
                number=i + 1,
                request=record.request,
                seeds=", ".join(map(str, record.seeds)) or "-",
                state=t(language, f"state_{record.state}"),
            )
            for i, record in enumerate(records)
        ]
        keyboard = keyboards.history_keyboard(language, [r.job_id for r in records])
        text = t(language, "history_title") + "\n" + "\n".join(lines)
        await self.outbox.send(message.place, Reply(text, keyboard))

    async def queue(self, message: Incoming) -> None:
        """/queue: this user's jobs in the engine, with their places or progress."""
        if not await self.admitted(message):
            return
        language = self.language(message.user)
        lines = []
        for record in self.store.active_jobs(message.user.id):
            job = await self.engine.job(record.job_id)
            progress = job.get("progress") or {}
            event = {"type": job["state"], "state": job["state"], "position": job.get("position")}
            lines.append(
                f"<code>{record.job_id}</code> " + progress_line(language, event | progress)
            )
        await self.say(
            message.place, language, "queue", jobs="\n".join(lines) or t(language, "queue_empty")
        )

    async def cancel(self, message: Incoming) -> None:
        """/cancel: cancel this user's queued and running jobs."""
        if not await self.admitted(message):
            return
        language = self.language(message.user)
        records = self.store.active_jobs(message.user.id)
        for record in records:
            await self.engine.cancel(record.job_id)
        await self.say(message.place, language, "cancelled", count=len(records))

    async def info(self, message: Incoming) -> None:
        """/info: a PNG's generation parameters, like WebUI's PNG Info."""
        if not await self.admitted(message):
            return
        language = self.language(message.user)
        data = message.document
        shown = None
        if data is None and message.reply_to_message_id is not None:
            shown = self.store.output_shown_in(message.place.chat_id, message.reply_to_message_id)
        if shown is not None and (record := self.store.job(shown[0])) is not None:
            data = await self.engine.output(record.outputs[shown[1]])
        if data is None:
            await self.say(message.place, language, "info_usage")
            return
        try:
            text = infotext.read_png(data)
        except Exception:  # Pillow raises several kinds for non-PNG input
            text = None
        if not text:
            await self.say(message.place, language, "info_none")
            return
        fields = infotext.parse(text)
        await self.say(
            message.place,
            language,
            "info",
            prompt=fields["Prompt"],
            negative=fields["Negative prompt"] or "-",
            parameters="\n".join(
                f"{key}: {value}"
                for key, value in fields.items()
                if key not in ("Prompt", "Negative prompt")
            ),
        )

    async def lang(self, message: Incoming, args: list[str]) -> None:
        """/lang zh|en: the language the bot answers this user in."""
        if args and args[0] in LANGUAGES:
            self.store.update_user(message.user.id, language=args[0])
            await self.say(message.place, args[0], "lang_set")
        else:
            await self.say(message.place, self.language(message.user), "lang_usage")

    async def allow(self, message: Incoming, args: list[str]) -> None:
        """/allow ID: let a user (or, with a negative id, a group) use the bot."""
        await self.change_access(message, args, self.roles.allow, "allowed")

    async def deny(self, message: Incoming, args: list[str]) -> None:
        """/deny ID: take access away from a user or group."""
        await self.change_access(message, args, self.roles.deny, "denied")

    async def admins(self, message: Incoming, args: list[str]) -> None:
        """/admins [add|remove ID]: list admins; owners add and remove them."""
        if not await self.admitted(message, Role.ADMIN):
            return
        language = self.language(message.user)
        if args and args[0] in ("add", "remove"):
            change = self.roles.promote if args[0] == "add" else self.roles.demote
            await self.change_access(message, args[1:], change, "admins_changed", Role.OWNER)
            return
        listing = "\n".join(f"<code>{i}</code>" for i in self.roles.admins())
        await self.say(message.place, language, "admins_list", ids=listing or "-")

    async def change_access(
        self, message: Incoming, args: list[str], change, key: str, role: Role = Role.ADMIN
    ) -> None:
        if not await self.admitted(message, role):
            return
        language = self.language(message.user)
        target = args[0] if args else ""
        if not target.lstrip("-").isdigit():
            await self.say(message.place, language, "access_usage")
        elif int(target) in self.config.access.owners:
            await self.say(message.place, language, "owner_fixed")
        else:
            change(int(target))
            await self.say(message.place, language, key, id=target)


def parameters_line(language: str, params: dict[str, Any]) -> str:
    """Size, sampler, steps, CFG, count and seed on one line."""
    seed = params.get("seed", -1)
    return t(
        language,
        "parameters",
        size=f"{params['width']}×{params['height']}",
        sampler=params["sampler_name"],
        steps=params["steps"],
        cfg=f"{params['cfg_scale']:g}",
        count=params["batch_size"] * params["n_iter"],
        seed=seed if seed != -1 else t(language, "seed_random"),
    )


def describe(language: str, prompt: PosterPrompt, params: dict[str, Any]) -> str:
    """The acknowledgement: the structured prompt as designers write it, and what was guessed."""
    text = t(
        language,
        "ack",
        ip=prompt.ip or "-",
        trigger=prompt.trigger or "-",
        sentence=prompt.natural_language or "-",
        tags=", ".join(prompt.tags) or "-",
    )
    text += "\n" + parameters_line(language, params)
    if prompt.notes:
        notes = [t(language, f"note_{note.code}", **note.values) for note in prompt.notes]
        text += "\n" + t(language, "notes", notes="; ".join(notes))
    return text
