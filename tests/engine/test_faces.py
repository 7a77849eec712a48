"""Face restoration: a RestoreFormer of the real architecture (random weights) from models/GFPGAN,
faces found by a YuNet-format detector file through OpenCV, pasted back inside the face box only;
the models folder's names and hostile files refused by name."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import spandrel
from PIL import Image

from engine.diffusion.faces import (
    FACE_SIZE,
    Face,
    detect_faces,
    face_matrix,
    feathered_mask,
    find_restorer,
    restore_faces,
    restorer_names,
)
from posterbot.errors import Refusal
from tests.fakes.models import write_face_detector, write_tiny_restoreformer

SIZE = (128, 128)
BOX = (40, 36, 48, 56)  # x, y, w, h
EYES_NOSE_MOUTH = [(54, 56), (74, 56), (64, 68), (56, 78), (72, 78)]


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("GFPGAN")
    write_tiny_restoreformer(folder / "RestoreFormer.safetensors")
    write_face_detector(folder / "face_detection_yunet_test.onnx", SIZE, BOX, EYES_NOSE_MOUTH)
    return folder


def drawn_face() -> Image.Image:
    """A grey picture with a face drawn in it, and texture everywhere (so a change shows)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(60, 200, (SIZE[1], SIZE[0], 3)).astype(np.uint8)
    for x, y in EYES_NOSE_MOUTH:
        pixels[y - 2 : y + 3, x - 3 : x + 4] = 20
    return Image.fromarray(pixels)


def test_spandrel_identifies_the_restorer_and_the_detector_finds_the_face(faces_dir):
    descriptor = spandrel.ModelLoader().load_from_file(faces_dir / "RestoreFormer.safetensors")
    assert descriptor.architecture.id == "RestoreFormer" and descriptor.purpose == "FaceSR"
    (face,) = detect_faces(drawn_face(), faces_dir / "face_detection_yunet_test.onnx")
    assert face.box == BOX
    assert np.allclose(face.landmarks, EYES_NOSE_MOUTH, atol=0.01)


def test_restoring_changes_only_the_detected_face_box(faces_dir):
    picture = drawn_face()
    model = find_restorer("RestoreFormer", faces_dir)
    detector = faces_dir / "face_detection_yunet_test.onnx"
    (restored,) = restore_faces([picture], model, 1.0, detector)
    before, after = np.asarray(picture).astype(int), np.asarray(restored).astype(int)
    changed = np.abs(after - before).sum(axis=2) > 0
    x, y, w, h = BOX
    inside = np.zeros_like(changed)
    inside[y : y + h, x : x + w] = True
    assert not changed[~inside].any()  # every pixel outside the face box is as it was
    assert changed[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].mean() > 0.9


@pytest.mark.slow
def test_visibility_blends_the_restored_face_with_the_picture(faces_dir):
    picture, detector = drawn_face(), faces_dir / "face_detection_yunet_test.onnx"
    model = find_restorer("RestoreFormer", faces_dir)
    full, half = (restore_faces([picture], model, v, detector)[0] for v in (1.0, 0.5))
    middle = (np.asarray(picture).astype(int) + np.asarray(full).astype(int)) / 2
    assert np.abs(np.asarray(half).astype(int) - middle).max() <= 1


def test_a_picture_without_faces_is_returned_as_it_was(faces_dir, tmp_path):
    elsewhere = write_face_detector(tmp_path / "yunet.onnx", SIZE, (0, 0, 8, 8), [(2, 2)] * 5)
    picture = drawn_face()  # the only "face" this detector finds is too small to restore
    model = find_restorer(None, faces_dir)
    (same,) = restore_faces([picture], model, 1.0, elsewhere)
    assert np.array_equal(np.asarray(same), np.asarray(picture))


def test_the_mask_is_zero_outside_the_box_and_the_crop_centres_the_face():
    mask = feathered_mask((100, 80), (20, 10, 40, 30))
    assert mask[:10].max() == 0 and mask[:, :20].max() == 0 and mask[40:].max() == 0
    assert mask[25, 40] == 1 and 0 < mask[10, 40] < 1
    matrix = face_matrix(Face((20, 10, 40, 30)))  # no landmarks: a square around the box
    centre = matrix @ np.array([40, 25, 1])
    assert np.allclose(centre, [FACE_SIZE / 2, FACE_SIZE / 2])


def test_restorers_are_named_by_family_and_codeformer_is_refused(tmp_path):
    write_tiny_restoreformer(tmp_path / "RestoreFormer.safetensors")
    (tmp_path / "detection_Resnet50_Final.pth").write_bytes(b"facexlib's detector, not listed")
    (tmp_path / "codeformer-v0.1.0.pth").write_bytes(b"never loaded")
    assert restorer_names(tmp_path) == ["RestoreFormer"]
    assert find_restorer("RestoreFormer", tmp_path).name == "RestoreFormer.safetensors"
    with pytest.raises(Refusal, match=r"^face_restoration_model: CodeFormer .*licence"):
        find_restorer("CodeFormer", tmp_path)
    with pytest.raises(Refusal, match=r"^face_restoration_model: GFPGAN is not in models/GFPGAN"):
        find_restorer("GFPGAN", tmp_path)


class Payload:
    def __reduce__(self):
        return (print, ("a pickle ran code",))


@pytest.mark.parametrize("name", ["GFPGANv1.4.pth", "GFPGANv1.4.safetensors"])
def test_a_pickle_renamed_as_weights_is_refused_naming_the_field(tmp_path, name):
    (tmp_path / name).write_bytes(pickle.dumps(Payload()))
    with pytest.raises(Refusal, match=f"^face_restoration_model: {name} is not") as refused:
        find_restorer("GFPGAN", tmp_path)
    assert refused.value.code == "model_unreadable"


def test_restore_faces_on_a_generation_touches_only_the_face_and_says_so(
    faces_dir, engine_config, tmp_path
):
    """txt2img with `restore_faces`: the same picture but inside the face box, and WebUI's
    infotext key; no restorer installed is a refusal naming the field before any work."""
    import dataclasses
    import shutil

    from engine.diffusion import infotext
    from engine.diffusion.generate import Engine
    from engine.diffusion.params import from_request

    config = dataclasses.replace(engine_config, data_dir=tmp_path)
    shutil.copytree(faces_dir, config.face_restorers_dir)
    engine = Engine(config)

    def draw(**extra):
        request = {"prompt": "a face", "seed": 4, "width": 128, "height": 128, **extra}
        return engine.txt2img(from_request(request, config.generation, config.limits))

    plain, restored = draw(), draw(restore_faces=True)
    before = np.asarray(plain.images[0]).astype(int)
    after = np.asarray(restored.images[0]).astype(int)
    changed = np.abs(after - before).sum(axis=2) > 0
    x, y, w, h = BOX
    inside = np.zeros_like(changed)
    inside[y : y + h, x : x + w] = True
    assert changed[inside].any() and not changed[~inside].any()
    assert infotext.parse(infotext.read_png(restored.png(0)))["Face restoration"] == "RestoreFormer"
    assert restored.info()["restore_faces"] is True

    from engine.diffusion.registry import Registry
    from engine.service.kinds import check_txt2img

    bare = dataclasses.replace(engine_config, data_dir=tmp_path / "bare")
    with pytest.raises(Refusal, match="face_restoration_model"):
        check_txt2img(bare, Registry(bare), {"prompt": "x", "restore_faces": True})
