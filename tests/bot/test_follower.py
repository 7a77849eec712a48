"""One follower for every kind of job: it waits out an engine that is restarting, then hands the
finished job to the kind's delivery, once."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.chat import ROUTER
from bot.core import Core
from bot.replies import Picture, Place, Reply
from bot.store import DONE, JobRecord, Store
from engine.service.client import EngineUnavailable
from posterbot.config import load_config

GRID = {"state": "done", "outputs": ["grid.png"], "info": {"axes": ["weights", "seeds"]}}
GRID |= {"created_at": 0.0, "finished_at": 3.0}
TRAINED = {"state": "done", "outputs": [], "created_at": 0.0, "finished_at": 60.0}
TRAINED["info"] = {"epochs_done": 2, "final_loss": 0.1, "status": "done", "version": "dada-v1"}
TRAINED["info"] |= {"samples": [], "loss_curve": None}


class RestartingEngine:
    """An engine unreachable for its first `down` calls, then with the job finished."""

    def __init__(self, job: dict, down: int) -> None:
        self.finished, self.down = job, down

    async def job(self, job_id: str) -> dict:
        if self.down:
            self.down -= 1
            raise EngineUnavailable("connection refused")
        return self.finished | {"id": job_id}

    async def output(self, path: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="PNG")
        return buffer.getvalue()


class Chat:
    """What the chat received."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.photos: list[Picture] = []

    async def send(self, place: Place, reply: Reply) -> int:
        self.texts.append(reply.text)
        return len(self.texts)

    async def edit(self, place: Place, message_id: int, reply: Reply) -> None:
        self.texts[message_id - 1] = reply.text

    async def send_photo(self, place: Place, picture: Picture) -> int:
        self.photos.append(picture)
        return 100 + len(self.photos)


@pytest.mark.parametrize(
    ("kind", "finished", "said"),
    [("xyz", GRID, "XYZ 对比图：weights × seeds"), ("train", TRAINED, "训练完成")],
)
async def test_a_job_is_delivered_once_after_the_engine_comes_back(kind, finished, said):
    store, chat = Store(":memory:"), Chat()
    core = Core(
        load_config(None, environ={}), store, RestartingEngine(finished, 2), chat, ROUTER.deliveries
    )
    waits: list[float] = []

    async def wait(seconds: float) -> None:
        waits.append(seconds)

    core.follower.sleep = wait
    record = JobRecord("j1", 5, Place(5), kind, "", {"ip": "dada", "epochs": 2}, "zh", "S")
    record.epochs_sent = 2
    await core.follower.start(record, 1)
    await core.follower.wait_idle()
    assert waits == [1, 2]  # it waited while the engine was down
    shown = chat.texts + [picture.caption for picture in chat.photos]
    assert sum(said in text for text in shown) == 1
    assert store.job("j1").delivered and store.job("j1").state == DONE
    assert core.follower.resume() == 0  # nothing left to follow after a restart
