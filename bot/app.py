"""Building and running the Telegram Application: handlers, rate limiter, polling or webhook.

Everything the handlers share (store, engine client, the core) is created in `start_services`
and lives in `application.bot_data`, so one Application is one bot instance. Every command of
the router's table gets a CommandHandler; what it does is the feature's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import AsyncIterator

import aiohttp
from telegram import BotCommand, Update
from telegram.ext import (
    Application,
    BaseRateLimiter,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot import handlers
from bot.chat import ROUTER, start_chat
from bot.outbox import TelegramOutbox
from bot.ratelimit import LaneRateLimiter
from bot.store import Store
from engine.service.client import EngineClient
from posterbot.config import Config, engine_url
from posterbot.logs import protect
from prompts.lexicon import load_glossary

log = logging.getLogger(__name__)

# Flood waits (429 retry_after) are waited out and the call retried this often before failing.
RATE_LIMIT_RETRIES = 5
# Updates handled at once: a slow send (flood wait) in one chat must not hold up the others.
CONCURRENT_UPDATES = 64
MENU = {  # shown in Telegram's command menu
    "poster": "出海报 / draw a poster",
    "settings": "出图设置 / settings",
    "template": "参数模板 / templates",
    "history": "最近的任务 / history",
    "seed": "锁定种子 / lock the seed",
    "queue": "排队情况 / queue",
    "cancel": "取消任务 / cancel",
    "info": "查看图片参数 / PNG info",
    "lang": "语言 / language",
    "help": "帮助 / help",
}


def webhook_secret(token: str) -> str:
    """A secret Telegram sends back with every webhook call (derived, so nothing to store);
    never shown in a log line."""
    secret = hashlib.sha256(f"posterbot-webhook:{token}".encode()).hexdigest()
    protect(secret)
    return secret


class AddressedToBot(filters.MessageFilter):
    """Group messages meant for the bot: replies to it and @mentions (commands are separate)."""

    def filter(self, message) -> bool:
        bot = message.get_bot()
        replied = message.reply_to_message
        if replied and replied.from_user and replied.from_user.id == bot.id:
            return True
        return f"@{bot.username}".lower() in (message.text or "").lower()


def add_handlers(application: Application) -> None:
    for name in ROUTER.commands:
        application.add_handler(CommandHandler(name, handlers.command))
    text = filters.TEXT & ~filters.COMMAND
    private = filters.ChatType.PRIVATE
    addressed = filters.ChatType.GROUPS & AddressedToBot()
    application.add_handler(MessageHandler(text & (private | addressed), handlers.text_message))
    files = (filters.Document.ALL | filters.PHOTO) & private
    application.add_handler(MessageHandler(files, handlers.attachment_message))
    info_caption = (
        filters.Document.ALL & filters.ChatType.GROUPS & filters.CaptionRegex(r"^/info\b")
    )
    application.add_handler(MessageHandler(info_caption, handlers.info_attachment))
    application.add_handler(CallbackQueryHandler(handlers.button_press))
    application.add_error_handler(handlers.error_handler)


async def start_services(application: Application) -> None:
    """The store, the engine client, the core; then follow unfinished jobs."""
    config: Config = application.bot_data["config"]
    # Load the glossary and jieba's dictionary now (seconds), not inside the first user's request.
    load_glossary(config.prompts.glossary_dir).tokenize("达达骑士")
    http = aiohttp.ClientSession()
    engine = EngineClient(base_url=engine_url(config), token=application.bot_data["engine_token"])
    store = Store(config.data_dir / "bot.db")
    outbox = TelegramOutbox(application.bot)
    core = start_chat(config, store, engine, outbox, http, origin=f"tg{application.bot.id}")
    application.bot_data |= {"core": core, "http": http, "engine": engine}
    await application.bot.set_my_commands([BotCommand(k, v) for k, v in MENU.items()])
    resumed = core.follower.resume()
    log.info("bot @%s ready; following %d unfinished job(s)", application.bot.username, resumed)


async def stop_services(application: Application) -> None:
    """Stop following jobs (they resume on the next start), close clients."""
    await application.bot_data["core"].follower.stop()
    await application.bot_data["engine"].close()
    await application.bot_data["http"].close()


def build_application(
    config: Config,
    token: str,
    engine_token: str | None = None,
    rate_limiter: BaseRateLimiter | None = None,  # bench/bot_latency.py compares limiters
) -> Application:
    application = (
        Application.builder()
        .token(token)
        .base_url(config.telegram.base_url)
        .base_file_url(config.telegram.base_file_url)
        .rate_limiter(rate_limiter or LaneRateLimiter(max_retries=RATE_LIMIT_RETRIES))
        .concurrent_updates(CONCURRENT_UPDATES)
        .build()
    )
    application.bot_data |= {"config": config, "engine_token": engine_token}
    add_handlers(application)
    return application


@contextlib.asynccontextmanager
async def running(application: Application) -> AsyncIterator[Application]:
    """The bot receiving updates (polling or webhook, per config) until the block exits."""
    config: Config = application.bot_data["config"]
    telegram = config.telegram
    async with application:  # initialize ... shutdown
        await start_services(application)
        if telegram.mode == "webhook":
            await application.updater.start_webhook(
                listen=telegram.webhook_listen,
                port=telegram.webhook_port,
                webhook_url=telegram.webhook_url,
                secret_token=webhook_secret(application.bot.token),
                drop_pending_updates=telegram.drop_pending_updates,
                allowed_updates=Update.ALL_TYPES,
            )
        else:
            await application.updater.start_polling(
                drop_pending_updates=telegram.drop_pending_updates,
                allowed_updates=Update.ALL_TYPES,
            )
        await application.start()
        try:
            yield application
        finally:
            await application.updater.stop()
            await application.stop()
            await stop_services(application)


async def serve_forever(application: Application) -> None:
    """Run until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(application):
        await stop.wait()
