"""`posterbot models fetch` against a file server on 127.0.0.1: folders, resume, sha256."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading

import numpy as np
import pytest
from aiohttp import web
from safetensors.numpy import save

from engine.diffusion import fetch
from posterbot.cli import main

PAYLOAD = save(
    {f"lora_unet_block_{i}.lora_down.weight": np.full((64, 64), i, np.float32) for i in range(8)}
)


class FileServer:
    """Serves `payload` at any path (Range requests honoured); `cut_after` bytes into the first
    response it closes the connection, as a dropped download does. Records every request."""

    def __init__(self, cut_after: int | None = None, payload: bytes = PAYLOAD) -> None:
        self.cut_after = cut_after
        self.payload = payload
        self.requests: list[tuple[str, str | None]] = []
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, request.headers.get("Range")))
        start = 0
        if (ranged := request.headers.get("Range")) is not None:
            start = int(ranged.removeprefix("bytes=").split("-")[0])
        body = self.payload[start:]
        response = web.StreamResponse(status=206 if start else 200)
        response.content_length = len(body)
        await response.prepare(request)
        if self.cut_after is not None:
            cut, self.cut_after = self.cut_after, None
            await response.write(body[:cut])
            request.transport.close()  # the connection drops mid-body
            return response
        await response.write(body)
        return response

    def __enter__(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def config(engine_config, tmp_path):
    return dataclasses.replace(engine_config, data_dir=tmp_path / "data")


def test_a_download_lands_in_its_kinds_webui_folder(config):
    with FileServer() as url:
        path = fetch.fetch(config, f"{url}/files/dada_style.safetensors", kind="lora")
    assert path == config.data_dir / "models" / "Lora" / "dada_style.safetensors"
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name(path.name + ".part").exists()
    assert fetch._progress_bar("x") is None  # stderr is not a terminal here: no bar


def test_a_cut_download_resumes_with_a_range_request(config):
    server = FileServer(cut_after=1000)
    with server as url:
        path = fetch.fetch(config, f"{url}/cut.safetensors", kind="vae")
    assert path.read_bytes() == PAYLOAD  # the same bytes, joined at the cut
    assert server.requests == [("/cut.safetensors", None), ("/cut.safetensors", "bytes=1000-")]


def test_a_sha256_mismatch_is_refused_and_leaves_no_partial(config):
    folder = config.data_dir / "models" / "Lora"
    with (
        FileServer() as url,
        pytest.raises(ValueError, match=r"^sha256: x\.safetensors has sha256"),
    ):
        fetch.fetch(config, f"{url}/x.safetensors", kind="lora", sha256="0" * 64)
    assert list(folder.iterdir()) == []
    right = hashlib.sha256(PAYLOAD).hexdigest()
    with FileServer() as url:
        assert fetch.fetch(config, f"{url}/x.safetensors", kind="lora", sha256=right).is_file()


def test_hub_ids_go_through_hf_endpoint(config, monkeypatch):
    server = FileServer()
    with server as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        path = fetch.fetch(config, "someone/ControlNet-mirror/sub/canny.safetensors", "controlnet")
    assert server.requests == [
        ("/someone/ControlNet-mirror/resolve/main/sub/canny.safetensors", None)
    ]
    assert path == config.data_dir / "models" / "ControlNet" / "canny.safetensors"
    modelscope = fetch.resolve("modelscope:org/name/dir/model.safetensors")
    assert (
        modelscope.url
        == "https://modelscope.cn/models/org/name/resolve/master/dir/model.safetensors"
    )


def test_pickles_are_refused_before_any_download(config):
    with FileServer() as url:
        for source, kind in [(f"{url}/model.ckpt", "checkpoint"), (f"{url}/x.pth", "lora")]:
            with pytest.raises(ValueError, match=r"^source: .* is not \.safetensors"):
                fetch.fetch(config, source, kind=kind)
    assert fetch.resolve("r-esrgan-4x-plus").kind == "upscaler"  # .pth is fine for upscalers
    fetch.check_file_type("RealESRGAN_x4plus.pth", "upscaler")


def test_list_prints_the_catalogue(capsys):
    assert main(["models", "fetch", "--list"]) == 0
    out = capsys.readouterr().out
    for name in fetch.catalogue():
        assert name in out
    assert "vae-ft-mse" in out and "MIT" in out and "stabilityai/sd-vae-ft-mse-original" in out


def test_every_catalogue_entry_resolves_to_a_file_its_kind_may_load():
    import re

    for name, entry in fetch.catalogue().items():
        source = fetch.resolve(name)
        assert source.kind in fetch.KIND_FOLDERS, name
        fetch.check_file_type(source.filename, source.kind)
        assert re.fullmatch(r"|[0-9a-f]{64}", source.sha256), name
        assert source.url.startswith("https://") and entry["licence"] and entry["size"], name


def test_a_fetched_checkpoint_is_converted_once_and_its_name_loads_the_folder(
    config, tiny_model, engine, with_config, tmp_path
):
    from engine.diffusion.generate import Engine
    from engine.diffusion.params import from_request
    from tests.fakes.single_file import write_single_file

    single = write_single_file(tiny_model, tmp_path / "tiny.safetensors").read_bytes()
    config = with_config(config, "models", single_file_config=str(tiny_model))  # tiny sizes
    with FileServer(payload=single) as url:
        path = fetch.fetch(config, f"{url}/tinyAnime_v1.safetensors", kind="checkpoint")
    folder = config.checkpoints_dir / "tinyAnime_v1"
    assert (folder / "model_index.json").is_file() and path.is_file()  # the file is kept
    converted = Engine(with_config(config, "models", base="tinyAnime_v1"))
    assert converted.model.kind == "folder"
    params = from_request({"prompt": "a cat", "seed": 5}, config.generation, config.limits)
    got = np.asarray(converted.txt2img(params).images[0])
    assert np.array_equal(got, np.asarray(engine.txt2img(params).images[0]))
