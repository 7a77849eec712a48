"""Finished posters from the engine: a txt2img job's `poster` option and POST /v1/posters."""

from __future__ import annotations

import base64
import dataclasses
import xml.etree.ElementTree as ET
from io import BytesIO

import pytest
from PIL import Image

from poster.output import read_poster_chunk
from tests.engine.conftest import AUTH
from tests.poster.conftest import mascot_picture

SPEC = {
    "title": "圣诞快乐",
    "subtitle": "达达送福到家",
    "targets": [{"name": "小红书", "width": 1242, "height": 1660}],
}


@pytest.fixture
def config(engine_config, tmp_path):
    return dataclasses.replace(engine_config, data_dir=tmp_path)


def png_of(image: Image.Image, parameters: str = "") -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    buffer = BytesIO()
    image.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


async def test_an_uploaded_picture_becomes_posters_at_each_size(client):
    image = base64.b64encode(png_of(mascot_picture(), "dadaknight\nSteps: 20, Seed: 7")).decode()
    targets = [*SPEC["targets"], {"name": "A4", "width": 2480, "height": 3508, "dpi": 300}]
    response = await client.post(
        "/v1/posters", json={**SPEC, "targets": targets, "image": image}, headers=AUTH
    )
    assert response.status == 201, await response.text()
    posters = (await response.json())["posters"]
    assert [(p["width"], p["height"]) for p in posters] == [(1242, 1660), (2480, 3508)]
    for poster in posters:
        png = await (await client.get(f"/v1/outputs/{poster['png']}", headers=AUTH)).read()
        with Image.open(BytesIO(png)) as opened:
            assert opened.size == (poster["width"], poster["height"])
            assert opened.text["parameters"].startswith("dadaknight")  # the picture's infotext
            if poster["dpi"]:
                assert round(opened.info["dpi"][0]) == 300
        assert read_poster_chunk(png)["copy"]["title"] == "圣诞快乐"
        svg = await client.get(f"/v1/outputs/{poster['svg']}", headers=AUTH)
        assert svg.headers["Content-Type"] == "image/svg+xml"
        root = ET.fromstring(await svg.text())
        texts = {
            t.get("id"): "".join(t.itertext())
            for t in root.iter("{http://www.w3.org/2000/svg}text")
        }
        assert texts["title"] == "圣诞快乐", texts


async def test_a_stored_result_is_relaid_out_without_generation(client, config):
    day = config.outputs_dir / "2026-12-02"
    day.mkdir(parents=True)
    (day / "00000-7.png").write_bytes(png_of(mascot_picture()))
    for layout in ("top", "bottom"):
        body = {**SPEC, "layout": layout, "output": "2026-12-02/00000-7.png"}
        response = await client.post("/v1/posters", json=body, headers=AUTH)
        assert response.status == 201, await response.text()
        (poster,) = (await response.json())["posters"]
        assert poster["layout"] == layout and poster["png"].startswith("posters/")
    assert client.queue.list_jobs(limit=10) == []  # nothing went to the GPU queue


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**SPEC}, "output"),  # neither a result nor an upload
        ({**SPEC, "image": "not base64!"}, "image"),
        ({**SPEC, "image": base64.b64encode(b"GIF89a").decode()}, "image"),
        ({**SPEC, "output": "../../etc/passwd.png"}, "output"),
        ({**SPEC, "output": "2026-12-02/missing.png"}, "output"),
        ({**SPEC, "image": "", "targets": []}, "poster.targets"),
        (
            {**SPEC, "image": "", "targets": [{"width": 20000, "height": 10}]},
            "poster.targets[0].width",
        ),
        ({**SPEC, "image": "", "layout": "diagonal"}, "poster.layout"),
        ({**SPEC, "image": "", "title": "长" * 41}, "poster.title"),
        ({**SPEC, "image": "", "colour": "red"}, "poster.colour"),
        ({**SPEC, "image": "", "ip": "nobody"}, "ip"),
    ],
)
async def test_bad_poster_requests_are_400s_naming_the_field(client, body, field):
    response = await client.post("/v1/posters", json=body, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["field"] == field


async def test_a_giant_upload_is_refused_before_it_is_decoded(client):
    huge = png_of(Image.new("L", (8000, 6000)))  # 48 MP: compresses small, decodes huge
    body = {**SPEC, "image": base64.b64encode(huge).decode()}
    response = await client.post("/v1/posters", json=body, headers=AUTH)
    assert response.status == 400 and "too many pixels" in (await response.json())["error"]


def test_a_job_with_a_poster_option_delivers_finished_posters(live_service):
    status, job = live_service.request(
        "POST",
        "/v1/jobs",
        {"params": {"prompt": "dadaknight, snow", "batch_size": 2, "poster": SPEC}, "user": "tg:1"},
    )
    assert status == 201, job
    done = live_service.wait_state(job["id"], "done", "failed")
    assert done["state"] == "done", done["error"]
    posters = done["info"]["posters"]
    assert len(posters) == 2 and all(len(sizes) == 1 for sizes in posters)
    for (poster,) in posters:
        path = live_service.data_dir / "outputs" / poster["png"]
        with Image.open(path) as opened:
            assert opened.size == (1242, 1660)
            assert "Seed:" in opened.text["parameters"]
        assert path.with_suffix(".svg").is_file()


def test_a_bad_poster_option_is_refused_at_submission(live_service):
    body = {"params": {"prompt": "x", "poster": {"title": "x", "targets": []}}, "user": "tg:1"}
    status, answer = live_service.request("POST", "/v1/jobs", body)
    assert status == 400 and answer["field"] == "poster.targets"
