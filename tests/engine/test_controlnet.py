"""ControlNet: preprocessors against OpenCV, units in the extension's format checked by name,
models loaded from models/ControlNet in both layouts, and the /controlnet routes."""

from __future__ import annotations

import base64
import dataclasses
import functools
import pickle
from io import BytesIO

import cv2
import numpy as np
import pytest
import torch
import webuiapi
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageDraw

from engine.diffusion.controlnet_units import (
    legacy_hash,
    parse_units,
    units_from_request,
)
from engine.diffusion.infotext import parse as parse_infotext
from engine.diffusion.preprocessors import PREPROCESSORS, fit_map, pixel_perfect_resolution
from engine.diffusion.registry import Registry
from engine.service.app import make_app
from engine.service.inputs import open_picture, store_picture
from engine.service.queue_sqlite import open_queue
from engine.service.state import Service
from posterbot.errors import Refusal
from tests.engine.conftest import API_AUTH, basic_auth
from tests.fakes.models import write_tiny_controlnet


def sketch(width: int = 128, height: int = 64) -> Image.Image:
    """A black-on-white layout sketch: a box and a circle."""
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    draw.rectangle((10, 10, width // 2, height - 12), outline="black", width=3)
    draw.ellipse((width // 2 + 8, 12, width - 10, height - 10), outline="black", width=2)
    return picture


def b64(picture: Image.Image) -> str:
    buffer = BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def config(engine_config, tmp_path):
    return dataclasses.replace(engine_config, data_dir=tmp_path)


@pytest.fixture(scope="session")
def tiny_unet(tiny_model):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny_model / "unet")


@pytest.fixture
def with_model(config, tiny_unet):
    """models/ControlNet/tiny_canny.safetensors (diffusers layout)."""
    write_tiny_controlnet(tiny_unet, config.controlnet_dir / "tiny_canny.safetensors")
    return config


def unit() -> dict:
    return {"enabled": True, "module": "canny", "model": "tiny_canny", "image": b64(sketch())}


def parse(config, args, **kwargs):
    base = Registry(config).checkpoint(None)
    return parse_units(config, args, base, functools.partial(store_picture, config), **kwargs)


# -- preprocessors -----------------------------------------------------------------------------


def test_canny_is_opencvs_canny_on_the_same_picture():
    picture = np.asarray(sketch(128, 64))
    control = PREPROCESSORS["canny"].run(picture, None, 64, 50, 150)  # short side 64: no scaling
    expected = cv2.Canny(picture, 50, 150)
    assert control.shape == (64, 128, 3)
    assert (control[:, :, 0] == expected).all() and (control[:, :, 2] == expected).all()
    assert expected.any()


def test_canny_thresholds_out_of_range_take_the_sliders_defaults():
    picture = np.asarray(sketch(128, 64))
    control = PREPROCESSORS["canny"].run(picture, None, 64, -1, 999)
    assert (control[:, :, 0] == cv2.Canny(picture, 100, 200)).all()


def test_invert_turns_a_sketch_on_white_into_white_lines_on_black():
    picture = np.asarray(sketch(100, 60))
    control = PREPROCESSORS["invert"].run(picture, None, 512)
    assert control.shape == picture.shape  # invert keeps the picture's own size
    assert (control == 255 - picture).all()
    assert control[0, 0].tolist() == [0, 0, 0] and control[10, 30].tolist() == [255, 255, 255]


def test_scribble_and_threshold_give_black_and_white_maps_at_the_processor_resolution():
    picture = np.asarray(sketch(200, 100))
    for name in ("scribble_xdog", "threshold"):
        control = PREPROCESSORS[name].run(picture, None, 64)
        assert control.shape == (64, 128, 3), name
        assert set(np.unique(control)) == {0, 255}, name
    scribble = PREPROCESSORS["scribble_xdog"].run(picture, None, 100)
    assert scribble[5, 5].max() == 0 and scribble[5:16, 10].max() == 255  # the box's top edge


def test_maps_fit_the_generation_size_by_resize_mode():
    control = np.zeros((64, 128, 3), np.uint8)
    control[16:48, 16:48] = 255  # a white square on black
    stretched = fit_map(control, 64, 64, "Just Resize")
    cropped = fit_map(control, 64, 64, "Crop and Resize")
    filled = fit_map(control, 64, 64, "Resize and Fill")
    assert stretched.shape == cropped.shape == filled.shape == (64, 64, 3)
    assert stretched[18:46, 9:23].min() == 255 and stretched[:, 26:].max() == 0  # squeezed
    assert cropped[18:46, :14].min() == 255 and cropped[:, 18:].max() == 0  # middle 64 columns
    # 64x32 in the middle, bands above and below in the border's colour
    assert filled[:16].max() == 0 and filled[48:].max() == 0
    assert filled[26:38, 10:22].min() == 255 and filled[26:38, 26:].max() == 0
    assert pixel_perfect_resolution(64, 128, (64, 64), "Crop and Resize") == 64
    assert pixel_perfect_resolution(64, 128, (64, 64), "Resize and Fill") == 32


# -- units -------------------------------------------------------------------------------------


def test_a_unit_in_the_extensions_format_is_read_with_its_defaults(with_model):
    (parsed,) = parse(with_model, [{"enabled": False}, unit()])
    assert parsed.index == 1  # disabled units are skipped, their place kept
    assert (parsed.module, parsed.model, parsed.weight) == ("canny", "tiny_canny", 1.0)
    assert (parsed.resize_mode, parsed.control_mode) == ("Crop and Resize", "Balanced")
    assert (parsed.processor_res, parsed.threshold_a, parsed.threshold_b) == (512, 100, 200)
    assert open_picture(with_model, parsed.image).size == (128, 64)


def test_webuiapis_own_unit_is_understood(with_model):
    cn = webuiapi.ControlNetUnit(
        image=sketch(),
        module="canny",
        model="tiny_canny [e3b0c442]",
        weight=0.8,
        resize_mode="Just Resize",
        control_mode=2,
        guidance_end=0.5,
    )
    request = {"alwayson_scripts": {"ControlNet": {"args": [cn.to_dict()]}}}
    base = Registry(with_model).checkpoint(None)
    store = functools.partial(store_picture, with_model)
    (parsed,) = units_from_request(with_model, request, base, store)
    assert (parsed.weight, parsed.guidance_end) == (0.8, 0.5)
    assert (parsed.resize_mode, parsed.control_mode) == (
        "Just Resize",
        "ControlNet is more important",
    )
    assert (parsed.threshold_a, parsed.threshold_b) == (64, 64)  # in canny's range: kept
    assert request == {}  # taken out of the request


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"model": "nope"}, "model", "controlnet_model_missing"),
        ({"model": "None"}, "model", "invalid_field"),
        ({"module": "depth_leres"}, "module", "module_unknown"),
        ({"weight": 3}, "weight", "out_of_range"),
        ({"weight": "1"}, "weight", "invalid_field"),
        ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance_start", "invalid_field"),
        ({"resize_mode": "Stretch"}, "resize_mode", "invalid_field"),
        ({"control_mode": 7}, "control_mode", "invalid_field"),
        ({"image": None}, "image", "invalid_field"),
        ({"image": "bm90IGEgcGljdHVyZQ=="}, "image", "not_an_image"),
        ({"mask": b64(sketch())}, "mask", "invalid_field"),
        ({"hr_option": "Low res only"}, "hr_option", "invalid_field"),
        ({"colour": "red"}, "colour", "invalid_field"),
    ],
)
def test_a_bad_unit_is_refused_naming_its_index_and_field(with_model, change, field, code):
    with pytest.raises(Refusal) as refused:
        parse(with_model, [unit(), {**unit(), **change}])
    assert refused.value.field == f"alwayson_scripts.controlnet.args[1].{field}"
    assert refused.value.code == code


def test_img2img_units_may_leave_the_picture_to_the_init_image(with_model):
    (parsed,) = parse(with_model, [{**unit(), "image": ""}], init_image=True)
    assert parsed.image is None


def test_a_pickle_renamed_safetensors_is_refused(config):
    folder = config.controlnet_dir
    folder.mkdir(parents=True)
    (folder / "evil.safetensors").write_bytes(pickle.dumps({"weight": [1, 2, 3]}))
    (folder / "older.pth").write_bytes(pickle.dumps({}))
    with pytest.raises(Refusal, match=r"not a readable \.safetensors") as refused:
        parse(config, [{**unit(), "model": "evil"}])
    assert refused.value.field == "alwayson_scripts.controlnet.args[0].model"
    with pytest.raises(Refusal, match="pickle") as refused:
        parse(config, [{**unit(), "model": "older"}])
    assert refused.value.code == "pickle_refused"


# -- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_a_tiny_controlnet_file_loads_back_with_its_weights(config, tiny_unet, layout):
    from engine.diffusion.controlnet import ControlNetSet
    from tests.fakes.models import tiny_controlnet

    write_tiny_controlnet(tiny_unet, config.controlnet_dir / "sub" / "cn.safetensors", layout)
    models = ControlNetSet(config, dict(tiny_unet.config), torch.device("cpu"), torch.float32)
    loaded = models.get("CN")  # names match case-insensitively, as in the extension
    original = tiny_controlnet(tiny_unet).state_dict()
    assert loaded.state_dict().keys() == original.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in original.items())
    assert models.get("cn [whatever]") is loaded and models.loads == 1  # kept, not reloaded


def test_a_controlnet_for_another_unet_is_one_line_naming_the_file(config, tiny_unet):
    from diffusers import UNet2DConditionModel

    from engine.diffusion.controlnet import ControlNetSet

    other = UNet2DConditionModel(**{**tiny_unet.config, "block_out_channels": (16, 32, 64)})
    write_tiny_controlnet(other, config.controlnet_dir / "other.safetensors")
    models = ControlNetSet(config, dict(tiny_unet.config), torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match=r"^model: other.safetensors does not fit"):
        models.get("other")


def test_model_titles_carry_webuis_short_hash(with_model):
    path = with_model.controlnet_dir / "tiny_canny.safetensors"
    data = path.read_bytes()
    import hashlib

    assert legacy_hash(path) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


# -- routes ------------------------------------------------------------------------------------


@pytest.fixture
async def client(with_model):
    with open_queue(with_model) as queue:
        app = make_app(Service(with_model, queue, api_auth=":".join(API_AUTH)))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client


async def get(client, path: str):
    response = await client.get(path, headers=basic_auth(*API_AUTH))
    assert response.status == 200, await response.text()
    return await response.json()


async def test_model_and_module_lists_answer_in_the_extensions_shape(client, with_model):
    digest = legacy_hash(with_model.controlnet_dir / "tiny_canny.safetensors")
    assert await get(client, "/controlnet/model_list") == {"model_list": [f"tiny_canny [{digest}]"]}
    modules = await get(client, "/controlnet/module_list")
    assert modules["module_list"][0] == "none"
    assert {"canny", "invert", "scribble_xdog", "threshold", "tile_resample"} <= set(
        modules["module_list"]
    )
    canny = modules["module_detail"]["canny"]["sliders"]
    assert [s["name"] for s in canny] == ["Resolution", "Low Threshold", "High Threshold"]
    aliases = await get(client, "/controlnet/module_list?alias_names=true")
    assert "invert (from white bg & black line)" in aliases["module_list"]
    assert (await get(client, "/controlnet/version"))["version"] == 3


async def test_the_module_list_shows_annotated_preprocessors_once_their_files_are_in(
    client, with_model
):
    assert {"openpose", "lineart_realistic"}.isdisjoint(
        (await get(client, "/controlnet/module_list"))["module_list"]
    )
    annotators = with_model.controlnet_dir / "annotators"
    annotators.mkdir()
    (annotators / "body_pose_model.safetensors").write_bytes(b"")  # listed by presence alone
    modules = await get(client, "/controlnet/module_list")
    assert (
        "openpose" in modules["module_list"] and "lineart_realistic" not in modules["module_list"]
    )
    assert [s["name"] for s in modules["module_detail"]["openpose"]["sliders"]] == ["Resolution"]


async def test_detect_runs_canny_in_the_service(client):
    body = {
        "controlnet_module": "canny",
        "controlnet_input_images": [b64(sketch(128, 64))],
        "controlnet_processor_res": 64,
        "controlnet_threshold_a": 50,
        "controlnet_threshold_b": 150,
    }
    response = await client.post("/controlnet/detect", json=body, headers=basic_auth(*API_AUTH))
    assert response.status == 200, await response.text()
    (image,) = (await response.json())["images"]
    control = np.asarray(Image.open(BytesIO(base64.b64decode(image))))
    assert (control[:, :, 0] == cv2.Canny(np.asarray(sketch(128, 64)), 50, 150)).all()


@pytest.mark.parametrize("route", ["txt2img", "img2img"])
async def test_a_bad_unit_is_400_before_anything_is_queued(client, route):
    body = {
        "prompt": "x",
        "alwayson_scripts": {"controlnet": {"args": [{**unit(), "model": "nope"}]}},
    } | ({"init_images": [b64(sketch(64, 64))]} if route == "img2img" else {})
    headers = basic_auth(*API_AUTH)
    response = await client.post(f"/sdapi/v1/{route}", json=body, headers=headers)
    assert response.status == 400
    answer = await response.json()
    assert answer["field"] == "alwayson_scripts.controlnet.args[0].model"
    assert answer["code"] == "controlnet_model_missing"
    jobs = await get(client, "/v1/jobs")
    assert jobs["jobs"] == []


# -- generation ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cn_engine(engine, tiny_unet):
    """The warm tiny engine with two ControlNets in its models/ControlNet."""
    folder = engine.config.controlnet_dir
    write_tiny_controlnet(tiny_unet, folder / "tiny_canny.safetensors", seed=5)
    write_tiny_controlnet(tiny_unet, folder / "tiny_scribble.safetensors", "ldm", seed=6)
    return engine


def units(engine, *changes: dict) -> list[dict]:
    """Checked units (as a job carries them) of the sketch, one per `changes`."""
    base = Registry(engine.config).checkpoint(None)
    store = functools.partial(store_picture, engine.config)
    return [
        u.to_dict()
        for u in parse_units(engine.config, [{**unit(), **c} for c in changes], base, store)
    ]


def render(engine, controlnet=(), **fields):
    from engine.diffusion.params import from_request

    request = {"prompt": "a cat", "seed": 7, "steps": 3, "controlnet": list(controlnet)} | fields
    params = from_request(request, engine.config.generation, engine.config.limits)
    result = engine.txt2img(params)
    return np.asarray(result.images[0]).astype(int), result


def test_weight_0_and_guidance_ending_at_0_give_the_txt2img_image(cn_engine):
    plain, _ = render(cn_engine)
    weightless, _ = render(cn_engine, units(cn_engine, {"weight": 0}))
    ended, _ = render(cn_engine, units(cn_engine, {"guidance_end": 0}))
    assert np.abs(weightless - plain).max() <= 1
    assert np.abs(ended - plain).max() <= 1


def test_a_unit_changes_the_picture_and_its_model_stays_loaded(cn_engine):
    plain, _ = render(cn_engine)
    loads = cn_engine.controlnets.loads
    controlled, result = render(cn_engine, units(cn_engine, {"weight": 1.5}))
    again, _ = render(cn_engine, units(cn_engine, {"weight": 1.5}))
    assert np.abs(controlled - plain).mean() > 2
    assert (again == controlled).all()  # same seed, same map: same pixels
    assert cn_engine.controlnets.loads <= loads + 1  # loaded at most once for both jobs
    entry = parse_infotext(result.infotexts[0])["ControlNet 0"]
    title = cn_engine.controlnets.title("tiny_canny")
    assert entry == (
        f"Module: canny, Model: {title}, Weight: 1.5, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, "
        "Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"
    )


def test_two_units_combine(cn_engine):
    canny = {"weight": 1.5}
    scribble = {"module": "scribble_xdog", "model": "tiny_scribble", "weight": 1.5}
    first, _ = render(cn_engine, units(cn_engine, canny))
    second, _ = render(cn_engine, units(cn_engine, scribble))
    both, result = render(cn_engine, units(cn_engine, canny, scribble))
    assert np.abs(both - first).mean() > 1 and np.abs(both - second).mean() > 1
    info = parse_infotext(result.infotexts[0])
    assert "tiny_canny" in info["ControlNet 0"] and "tiny_scribble" in info["ControlNet 1"]


def test_control_modes_differ_as_the_extensions_do(cn_engine):
    pictures = {
        mode: render(cn_engine, units(cn_engine, {"weight": 1.5, "control_mode": mode}))[0]
        for mode in (0, 1, 2)
    }
    assert np.abs(pictures[0] - pictures[1]).mean() > 1
    assert np.abs(pictures[1] - pictures[2]).mean() > 1


def test_an_img2img_unit_without_a_picture_reads_the_init_image(cn_engine):
    init = store_picture(cn_engine.config, b64(sketch(64, 64)), "init_images[0]")
    request = {"init_images": [init], "denoising_strength": 0.8}
    (own,) = units(cn_engine, {"weight": 1.5, "image": b64(sketch(64, 64))})
    plain, _ = render(cn_engine, **request)
    controlled, _ = render(cn_engine, [own], **request)
    borrowed, _ = render(cn_engine, [{**own, "image": None}], **request)
    assert np.abs(controlled - plain).mean() > 1
    assert (borrowed == controlled).all()  # the init image is that same sketch


@pytest.mark.slow
def test_webuiapi_drives_controlnet_through_its_own_unit_class(live_service, tiny_unet):
    folder = live_service.data_dir / "models" / "ControlNet"
    write_tiny_controlnet(tiny_unet, folder / "tiny_canny.safetensors")
    api = webuiapi.WebUIApi(host="127.0.0.1", port=live_service.port, sampler="Euler", steps=3)
    api.set_auth(*API_AUTH)
    (title,) = api.controlnet_model_list()
    assert title.startswith("tiny_canny [")
    assert "canny" in api.controlnet_module_list()
    detected = api.controlnet_detect([sketch(128, 64)], module="canny", processor_res=64)
    (edges,) = detected.images  # webuiapi decodes them
    expected = cv2.Canny(np.asarray(sketch(128, 64)), 64, 64)
    assert (np.asarray(edges)[:, :, 0] == expected).all()

    settings = {"prompt": "a cat", "seed": 3, "width": 64, "height": 64}
    plain = api.txt2img(**settings).image
    cn = webuiapi.ControlNetUnit(image=sketch(64, 64), module="canny", model=title, weight=1.5)
    controlled = api.txt2img(**settings, controlnet_units=[cn]).image
    difference = np.abs(np.asarray(controlled).astype(int) - np.asarray(plain)).mean()
    assert difference > 2
    info = parse_infotext(controlled.info["parameters"])
    assert info["ControlNet 0"].startswith(f"Module: canny, Model: {title}, Weight: 1.5")
    assert "ControlNet 0" not in parse_infotext(plain.info["parameters"])


def test_lineart_needs_its_annotator_file_and_says_which(with_model):
    with pytest.raises(Refusal, match=r"annotators/sk_model\.safetensors") as refused:
        parse(with_model, [{**unit(), "module": "lineart_realistic"}])
    assert refused.value.field == "alwayson_scripts.controlnet.args[0].module"
    assert refused.value.code == "annotator_missing"
    assert refused.value.values["file"] == "sk_model.safetensors"


def test_lineart_runs_its_network_when_the_weights_are_there(config):
    from safetensors.torch import save_file

    from engine.diffusion.annotators import LineGenerator

    torch.manual_seed(0)
    network = LineGenerator().eval()
    annotators = config.controlnet_dir / "annotators"
    annotators.mkdir(parents=True)
    save_file(network.state_dict(), str(annotators / "sk_model.safetensors"))
    picture = np.array(sketch(128, 64))
    control = PREPROCESSORS["lineart_realistic"].run(picture, annotators, 64)
    with torch.no_grad():
        x = torch.from_numpy(picture).float().div(255).permute(2, 0, 1)[None]
        lines = (network(x)[0, 0] * 255).clamp(0, 255).byte().numpy()
    assert control.shape == (64, 128, 3)
    assert (control[:, :, 1] == 255 - lines).all()
    (annotators / "sk_model2.safetensors").write_bytes(pickle.dumps({"model0.1.weight": 1}))
    with pytest.raises(Refusal, match=r"sk_model2\.safetensors is not a readable") as refused:
        PREPROCESSORS["lineart_coarse"].run(picture, annotators, 64)
    assert refused.value.code == "annotator_damaged"
    save_file(network.state_dict(), str(annotators / "sk_model2.safetensors"))
    (annotators / "sk_model2.safetensors").write_bytes(
        (annotators / "sk_model2.safetensors").read_bytes()[:-8]  # a tensor short: no lineart
    )
    with pytest.raises(ValueError, match=r"sk_model2\.safetensors is not a lineart annotator"):
        PREPROCESSORS["lineart_coarse"].run(picture, annotators, 64)


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_the_hires_pass_keeps_the_units(cn_engine, upscaler):
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": upscaler, "denoising_strength": 0.5}
    plain, _ = render(cn_engine, **hires)
    controlled, result = render(cn_engine, units(cn_engine, {"weight": 1.5}), **hires)
    assert controlled.shape == plain.shape == (128, 128, 3)
    assert np.abs(controlled - plain).mean() > 1
    assert "ControlNet 0" in parse_infotext(result.infotexts[0])
