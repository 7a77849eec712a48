"""A fake Telegram Bot API server on 127.0.0.1 (aiohttp), used through `telegram.base_url`.

It answers the methods the bot calls the way Telegram does (message objects, `ok`/`result`
envelopes, 400 for an edit that changes nothing, 429 with `retry_after` when told to), serves
queued updates to getUpdates long polls, and records every call so tests can assert on what
a user would see. It refuses what Telegram refuses: unknown methods (404), `parse_mode` HTML
that does not parse, texts over 4096 and captions over 1024 characters (after entity parsing),
callback data over 64 bytes, and media groups outside 2–10 items.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import itertools
import json
import mimetypes
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

BOT_USER = {"id": 777000111, "is_bot": True, "first_name": "Poster", "username": "poster_test_bot"}
TOKEN = "777000111:TEST-token"
LONG_POLL_CAP_S = 0.5
# Telegram's limits (core.telegram.org/bots/api): message text 1-4096 characters and captions
# 0-1024 after entity parsing, callback_data 1-64 bytes, albums of 2-10 media.
MAX_TEXT_CHARS = 4096
MAX_CAPTION_CHARS = 1024
MAX_CALLBACK_DATA_BYTES = 64
ALBUM_SIZES = range(2, 11)
# The tags of Telegram's HTML style; `span` only as a spoiler, `a` only with href.
HTML_TAGS = frozenset(
    [
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
    ]
)
# Methods the bot may call that need no modelled answer beyond `true`.
TRUE_METHODS = frozenset(
    {"setMyCommands", "answerCallbackQuery", "deleteWebhook", "setWebhook", "close", "logOut"}
)
_TAG = re.compile(r"<(/?)([^\s<>/=&]+)((?:\s+[\w-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'))?)*)\s*>")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
# One Telegram for the whole test run, as in life: a bot never sees a message or callback query
# id twice, however many fake servers (one per test) it talks to. The session-wide engine's job
# keys rely on it.
_MESSAGE_IDS = itertools.count(1)
_QUERY_IDS = itertools.count(1)


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)
    ok: bool = False
    result: Any = None


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


class FakeTelegram:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}  # file_id -> bytes (uploads and user documents)
        self.failures: dict[str, list[dict[str, Any]]] = {}  # method -> error bodies to answer
        self.message_texts: dict[tuple[int, int], str] = {}
        self.chats: dict[int, dict[str, Any]] = {}
        self._update_ids = itertools.count(1)
        self._confirmed = 0  # updates below this id were confirmed by a getUpdates offset
        self._message_ids = _MESSAGE_IDS
        self._file_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- server ---------------------------------------------------------------------------------

    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.*}", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    async def _file(self, request: web.Request) -> web.Response:
        return web.Response(body=self.files[request.match_info["path"]])

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != TOKEN:  # as Telegram answers a revoked or wrong token
            body = {"ok": False, "error_code": 401, "description": "Unauthorized"}
            return web.json_response(body, status=401)
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            params = await request.json()
        else:
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    files[name] = value.file.read()
                else:
                    params[name] = _decode(value)
        call = Call(method, params, files)
        self.calls.append(call)
        if self.failures.get(method):
            body = self.failures[method].pop(0)
            call.result = body
            return web.json_response(body, status=body["error_code"])
        handler = getattr(self, f"_{method}", None)
        if handler is None and method not in TRUE_METHODS:
            call.result = {"ok": False, "error_code": 404, "description": "Not Found"}
            return web.json_response(call.result, status=404)
        if handler is None:
            call.ok, call.result = True, True
            return web.json_response({"ok": True, "result": True})
        try:
            check_keyboard(call.params.get("reply_markup"))
            result = await handler(call)
        except _BadRequest as exc:
            body = {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"}
            call.result = body
            return web.json_response(body, status=400)
        call.ok, call.result = True, result
        return web.json_response({"ok": True, "result": result})

    # --- what tests call ------------------------------------------------------------------------

    def fail_next(self, method: str, retry_after: int) -> None:
        """Answer the next `method` call with 429 Too Many Requests."""
        body = {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        }
        self.failures.setdefault(method, []).append(body)

    def chat(self, chat_id: int, kind: str = "", forum: bool = False) -> dict[str, Any]:
        kind = kind or ("private" if chat_id > 0 else "supergroup")
        chat = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = f"user{chat_id}"
        else:
            chat["title"] = f"group{chat_id}"
            chat["is_forum"] = forum
        self.chats[chat_id] = chat
        return chat

    def send_text(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
        language: str = "zh-hans",
        document: bytes | None = None,
        filename: str = "poster.png",
        photo: bytes | None = None,
    ) -> dict[str, Any]:
        """A user writes to the bot (`text` is the caption when there is a `document` or a
        `photo`: an image the chat app sent compressed); returns the message as the bot will
        receive it."""
        chat_id = chat_id if chat_id is not None else user_id
        chat = self.chats.get(chat_id) or self.chat(chat_id)
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": f"u{user_id}",
                "language_code": language,
            },
        }
        if document is not None:
            file_id = self._store_file(document)
            message["document"] = {
                "file_id": file_id,
                "file_unique_id": file_id,
                "file_name": filename,
                "mime_type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
                "file_size": len(document),
            }
            message["caption"] = text
        elif photo is not None:
            message["photo"] = self._photo(photo)
            message["caption"] = text
        else:
            message["text"] = text
        if text.startswith("/"):
            command = text.split()[0]
            entity = {"type": "bot_command", "offset": 0, "length": len(command)}
            message["caption_entities" if "caption" in message else "entities"] = [entity]
        if thread_id is not None:
            message |= {"message_thread_id": thread_id, "is_topic_message": True}
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        self._push({"message": message})
        return message

    def press(self, user_id: int, message: dict[str, Any], data: str) -> None:
        """A user presses an inline button under one of the bot's messages."""
        query = {
            "id": str(next(_QUERY_IDS) * 1000),
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": f"u{user_id}",
                "language_code": "zh-hans",
            },
            "chat_instance": "1",
            "message": message,
            "data": data,
        }
        self._push({"callback_query": query})

    def _push(self, update: dict[str, Any]) -> None:
        update["update_id"] = next(self._update_ids)
        self.updates.append(update)
        self._new_update.set()

    def sent(self, method: str, chat_id: int | None = None) -> list[Call]:
        """Successful calls of `method` (to `chat_id`)."""
        return [
            c
            for c in self.calls
            if c.method == method and c.ok and chat_id in (None, c.params.get("chat_id"))
        ]

    def texts(self, chat_id: int) -> list[str]:
        return [c.params["text"] for c in self.sent("sendMessage", chat_id)]

    async def wait_for(self, condition, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := condition():
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {condition}")

    # --- Bot API methods ------------------------------------------------------------------------

    async def _getMe(self, call: Call) -> dict[str, Any]:
        return BOT_USER

    async def _getUpdates(self, call: Call) -> list[dict[str, Any]]:
        # As Telegram: an offset confirms every update below it, and a confirmed update is never
        # served again, whichever bot process asks next.
        self._confirmed = max(self._confirmed, int(call.params.get("offset") or 0))
        offset = self._confirmed
        # Telegram may answer a long poll early; answering within a moment lets a stopping bot
        # (which waits for its last poll) stop quickly in tests.
        timeout = min(float(call.params.get("timeout") or 0), LONG_POLL_CAP_S)
        deadline = time.monotonic() + timeout
        while True:
            ready = [u for u in self.updates if u["update_id"] >= offset]
            if ready or time.monotonic() >= deadline:
                return ready[:100]
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())

    def _message(self, call: Call, **content: Any) -> dict[str, Any]:
        chat_id = int(call.params["chat_id"])
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self.chats.get(chat_id) or self.chat(chat_id),
            "from": BOT_USER,
            **content,
        }
        if call.params.get("message_thread_id"):
            message |= {
                "message_thread_id": call.params["message_thread_id"],
                "is_topic_message": True,
            }
        markup = call.params.get("reply_markup")
        if markup and "inline_keyboard" in markup:
            # Telegram's Message carries only inline keyboards; a ForceReply is not echoed.
            message["reply_markup"] = markup
        return message

    def _store_file(self, data: bytes) -> str:
        file_id = f"file{next(self._file_ids)}"
        self.files[file_id] = data
        return file_id

    def _photo(self, data: bytes) -> list[dict[str, Any]]:
        width, height = Image.open(io.BytesIO(data)).size
        file_id = self._store_file(data)
        return [
            {
                "file_id": file_id,
                "file_unique_id": file_id,
                "width": width,
                "height": height,
                "file_size": len(data),
            }
        ]

    def _upload(self, call: Call, field_name: str) -> bytes:
        value = call.params.get(field_name)
        if isinstance(value, str) and value.startswith("attach://"):
            return call.files[value.removeprefix("attach://")]
        return call.files[field_name]

    async def _sendMessage(self, call: Call) -> dict[str, Any]:
        check_text(call.params)
        message = self._message(call, text=call.params["text"])
        self.message_texts[(message["chat"]["id"], message["message_id"])] = message["text"]
        return message

    async def _editMessageText(self, call: Call) -> dict[str, Any]:
        check_text(call.params)
        key = (int(call.params["chat_id"]), int(call.params["message_id"]))
        if self.message_texts.get(key) == call.params["text"] and not call.params.get(
            "reply_markup"
        ):
            raise _BadRequest("message is not modified")
        self.message_texts[key] = call.params["text"]
        return self._message(call, text=call.params["text"]) | {"message_id": key[1]}

    async def _sendPhoto(self, call: Call) -> dict[str, Any]:
        check_caption(call.params)
        photo = self._photo(self._upload(call, "photo"))
        return self._message(call, photo=photo, caption=call.params.get("caption", ""))

    async def _sendDocument(self, call: Call) -> dict[str, Any]:
        check_caption(call.params)
        data = self._upload(call, "document")
        file_id = self._store_file(data)
        document = {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_size": len(data),
            "file_name": "poster.png",
            "mime_type": "image/png",
        }
        return self._message(call, document=document, caption=call.params.get("caption", ""))

    async def _sendMediaGroup(self, call: Call) -> list[dict[str, Any]]:
        if len(call.params["media"]) not in ALBUM_SIZES:
            raise _BadRequest("media group must include 2-10 items")
        for item in call.params["media"]:
            check_caption(item)
        group_id = str(next(self._file_ids))
        messages = []
        for item in call.params["media"]:
            data = call.files[item["media"].removeprefix("attach://")]
            messages.append(
                self._message(
                    call,
                    photo=self._photo(data),
                    caption=item.get("caption", ""),
                    media_group_id=group_id,
                )
            )
        return messages

    async def _getFile(self, call: Call) -> dict[str, Any]:
        file_id = call.params["file_id"]
        return {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_size": len(self.files[file_id]),
            "file_path": file_id,
        }


class _BadRequest(Exception):
    pass


def visible_text(text: str) -> str:
    """What Telegram shows of an HTML text; _BadRequest where Telegram cannot parse it."""
    shown: list[str] = []
    open_tags: list[str] = []
    index = 0
    while index < len(text):
        offset = len(text[:index].encode())
        if text[index] == "<":
            tag = _TAG.match(text, index)
            if tag is None:
                raise _BadRequest(
                    f"can't parse entities: Unsupported start tag at byte offset {offset}"
                )
            closing, name, attributes = tag.group(1), tag.group(2).lower(), tag.group(3)
            if closing and (not open_tags or open_tags[-1] != name):
                raise _BadRequest(
                    f"can't parse entities: Unexpected end tag at byte offset {offset}"
                )
            if closing:
                open_tags.pop()
            elif (
                name not in HTML_TAGS
                or (name == "span" and "tg-spoiler" not in attributes)
                or (name == "a" and "href" not in attributes)
            ):
                raise _BadRequest(
                    f'can\'t parse entities: Unsupported start tag "{name}" at byte offset {offset}'
                )
            else:
                open_tags.append(name)
            index = tag.end()
        elif text[index] == "&":
            entity = _ENTITY.match(text, index)
            if entity is None:
                raise _BadRequest(
                    f"can't parse entities: Character entity expected at byte offset {offset}"
                )
            shown.append(html.unescape(entity.group()))
            index = entity.end()
        else:
            shown.append(text[index])
            index += 1
    if open_tags:
        unclosed = open_tags[-1]
        raise _BadRequest(
            f"can't parse entities: Can't find end tag corresponding to start tag \"{unclosed}\""
        )
    return "".join(shown)


def _length(text: str) -> int:
    """Telegram counts UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _shown(params: dict[str, Any], name: str) -> str:
    value = str(params.get(name) or "")
    return visible_text(value) if str(params.get("parse_mode", "")).upper() == "HTML" else value


def check_text(params: dict[str, Any]) -> None:
    text = _shown(params, "text")
    if not text.strip():
        raise _BadRequest("message text is empty")
    if _length(text) > MAX_TEXT_CHARS:
        raise _BadRequest("message is too long")


def check_caption(params: dict[str, Any]) -> None:
    if _length(_shown(params, "caption")) > MAX_CAPTION_CHARS:
        raise _BadRequest("message caption is too long")


def check_keyboard(markup: Any) -> None:
    for row in (markup or {}).get("inline_keyboard", []) if isinstance(markup, dict) else []:
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
                raise _BadRequest("BUTTON_DATA_INVALID")


def album_pictures(call: Call) -> list[tuple[bytes, str]]:
    """(PNG bytes, caption) of each picture in a sendMediaGroup call."""
    return [
        (call.files[item["media"].removeprefix("attach://")], item.get("caption", ""))
        for item in call.params["media"]
    ]
