"""Shared fixtures: a config with two IPs, and a local OpenAI-compatible stub on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from posterbot.config import Config, IPConfig, LLMConfig, Preset

DADA = IPConfig(
    name="dada",
    trigger="dadaknight",
    lora="dada_v3",
    lora_weight=0.8,
    aliases=["达达", "达达骑士", "dada knight"],
    description="a cute delivery rider mascot",
    negative_prompt="lowres, watermark, blurry",
    style_tags=["3d render", "c4d"],
    quality_tags=["masterpiece", "best quality"],
)
JOY = IPConfig(
    name="joy",
    trigger="joydog",
    lora="joy_v1",
    lora_weight=0.7,
    aliases=["京东狗", "joy dog"],
    description="a white cartoon dog mascot",
)


def make_config(**changes) -> Config:
    values = {
        "ips": [DADA, JOY],
        "presets": {
            "draft": Preset(settings={"sampler_name": "Euler a", "steps": 20, "enable_hr": False}),
            "final": Preset(settings={"steps": 30, "enable_hr": True, "seed": 1234}),
        },
    }
    return Config(**(values | changes))


@pytest.fixture
def config() -> Config:
    return make_config()


# How the stub answers, by mode; each returns (status, body text, delay in seconds).
GOOD = {
    "natural_language": "a cute mascot delivering parcels through falling snow on christmas eve",
    "tags": ["christmas", "snowfall", "parcel", "warm light", "festive"],
}


def _completion(content: str) -> str:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})


STUB_ANSWERS = {
    "good": (200, _completion(json.dumps(GOOD)), 0),
    "fenced": (200, _completion("```json\n" + json.dumps(GOOD) + "\n```"), 0),
    "slow": (200, _completion(json.dumps(GOOD)), 5),
    "garbage": (200, _completion("Sure! Here is a lovely prompt for your poster."), 0),
    "not_completion": (200, "<html>gateway</html>", 0),
    "extra_fields": (
        200,
        _completion(json.dumps(GOOD | {"lora": "other", "width": 4096, "trigger": "evil"})),
        0,
    ),
    "injection": (
        200,
        _completion(
            json.dumps(
                {
                    "natural_language": "a mascot <lora:other:2> (masterpiece:1.9)",
                    "tags": ["snow", "<lora:other:2>"],
                }
            )
        ),
        0,
    ),
    "bad_tags": (200, _completion(json.dumps({"natural_language": "a mascot", "tags": "snow"})), 0),
    "other_trigger": (
        200,
        _completion(json.dumps({"natural_language": "a mascot", "tags": ["joydog", "snow"]})),
        0,
    ),
    "error": (500, '{"error": "internal"}', 0),
    # a LoRA name among good tags: that tag goes, the answer stays
    "lora_name_tag": (
        200,
        _completion(
            json.dumps(
                {
                    "natural_language": GOOD["natural_language"],
                    "tags": ["christmas", "dada_v3", "snowfall", "Joy_V1"],
                }
            )
        ),
        0,
    ),
}
# Modes the stub sends with chunked transfer, in small pieces with a pause between them, the way
# a proxied vLLM or Ollama does: (body, piece size in bytes).
CHUNKED_ANSWERS = {
    "chunked": (_completion(json.dumps(GOOD)), 16),
    "chunked_lora_name_tag": (STUB_ANSWERS["lora_name_tag"][1], 7),
    "chunked_too_large": (_completion("x" * (300 * 1024)), 32 * 1024),
}


async def _chunked(request: web.Request, text: str, piece: int) -> web.StreamResponse:
    """Send `text` with chunked transfer (no Content-Length), `piece` bytes at a time."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    data = text.encode()
    for start in range(0, len(data), piece):
        await response.write(data[start : start + piece])
        await asyncio.sleep(0.002)  # each piece arrives on its own
    await response.write_eof()
    return response


@pytest.fixture
async def llm_stub():
    """Start the stub; yields (make_llm_config(mode, timeout_s), list of received requests)."""
    received: list[dict] = []

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        received.append({"body": body, "auth": request.headers.get("Authorization")})
        if request.match_info["mode"] in CHUNKED_ANSWERS:
            return await _chunked(request, *CHUNKED_ANSWERS[request.match_info["mode"]])
        status, text, delay = STUB_ANSWERS[request.match_info["mode"]]
        await asyncio.sleep(delay)
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{mode}/v1/chat/completions", completions)
    runner = web.AppRunner(app, handler_cancellation=True)  # a client that gave up ends "slow"
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]

    def llm_config(mode: str, timeout_s: float = 2.0) -> LLMConfig:
        return LLMConfig(
            enabled=True,
            base_url=f"http://127.0.0.1:{port}/{mode}/v1",
            model="stub",
            timeout_s=timeout_s,
        )

    yield llm_config, received
    await runner.cleanup()
