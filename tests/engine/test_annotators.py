"""Preprocessors with annotator networks: openpose (body) and depth_anything — their real
architectures with random weights in a tmp annotators folder, and openpose's post-processing
on hand-made heatmaps and PAFs."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.diffusion.annotators import LineGenerator
from engine.diffusion.openpose import COLOURS, LIMBS, PAF_CHANNELS, draw_bodypose, people
from engine.diffusion.preprocessors import PREPROCESSORS
from posterbot.errors import Refusal
from tests.fakes.models import write_openpose_annotator

# -- openpose: from heatmaps and PAFs to the drawn skeleton ----------------------------------------

SIZE = 128
# keypoint index (0-based, COCO order) → (x, y): nose, neck, right shoulder/elbow, left shoulder
BODY = {0: (64, 16), 1: (64, 36), 2: (40, 36), 3: (40, 72), 5: (88, 36)}


def synthetic_maps(body: dict[int, tuple[int, int]], reversed_limb: int | None = None):
    """Heatmaps with one gaussian peak per keypoint and PAFs that point along each limb whose
    two ends are in `body` (the limb `reversed_limb` points the wrong way)."""
    ys, xs = np.mgrid[:SIZE, :SIZE]
    heatmaps = np.zeros((SIZE, SIZE, 19), np.float32)
    for part, (x, y) in body.items():
        heatmaps[:, :, part] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 3.0**2))
    pafs = np.zeros((SIZE, SIZE, 38), np.float32)
    for k, ((a, b), channels) in enumerate(zip(LIMBS, PAF_CHANNELS, strict=True)):
        if a - 1 in body and b - 1 in body:
            direction = np.subtract(body[b - 1], body[a - 1]).astype(np.float32)
            direction /= np.linalg.norm(direction) * (-1 if k == reversed_limb else 1)
            pafs[:, :, channels] = direction
    return heatmaps, pafs


def limb_colour(k: int) -> tuple[int, ...]:
    return tuple(int(c * 0.6) for c in COLOURS[k])


def midpoint(a: int, b: int) -> tuple[int, int]:
    (xa, ya), (xb, yb) = BODY[a], BODY[b]
    return (xa + xb) // 2, (ya + yb) // 2


def test_peaks_joined_along_their_pafs_are_drawn_as_one_skeleton_in_openpose_colours():
    candidate, subset = people(*synthetic_maps(BODY))
    assert len(subset) == 1 and subset[0][-1] == len(BODY)  # one person, all five parts
    found = {part: tuple(candidate[int(subset[0][part]), :2]) for part in BODY}
    assert found == BODY
    canvas = draw_bodypose(np.zeros((SIZE, SIZE, 3), np.uint8), candidate, subset)
    x, y = midpoint(1, 2)  # limb 0: neck → right shoulder
    assert tuple(canvas[y, x]) == limb_colour(0)
    x, y = midpoint(2, 3)  # limb 2: right shoulder → elbow
    assert tuple(canvas[y, x]) == limb_colour(2)
    x, y = midpoint(0, 1)  # limb 12: neck → nose
    assert tuple(canvas[y, x]) == limb_colour(12)
    for part, (x, y) in BODY.items():  # joints on top, in full colour
        assert tuple(canvas[y, x]) == tuple(COLOURS[part])
    assert not canvas[100:, :].any() and not canvas[:, 100:].any()  # nothing where no body is
    colours = {tuple(c) for c in canvas.reshape(-1, 3)}
    assert colours <= {(0, 0, 0)} | {tuple(c) for c in COLOURS} | {
        limb_colour(k) for k in range(17)
    }


def test_a_limb_against_its_paf_is_not_joined():
    candidate, subset = people(*synthetic_maps(BODY, reversed_limb=2))  # shoulder → elbow
    assert len(subset) == 1 and subset[0][3] == -1  # the elbow is not part of the person
    canvas = draw_bodypose(np.zeros((SIZE, SIZE, 3), np.uint8), candidate, subset)
    x, y = midpoint(2, 3)
    assert not canvas[y, x].any()


def test_too_few_parts_make_no_person():
    candidate, subset = people(*synthetic_maps({1: (64, 36), 2: (40, 36), 5: (88, 36)}))
    assert len(candidate) == 3 and len(subset) == 0  # three parts: under the original's four


# -- the preprocessors with their files -----------------------------------------------------------


@pytest.fixture(scope="module")
def openpose_file(tmp_path_factory):
    return write_openpose_annotator(
        tmp_path_factory.mktemp("pose") / "body_pose_model.safetensors", flat_names=True
    )


def annotators_with(tmp_path, name, source):
    folder = tmp_path / "annotators"
    folder.mkdir(exist_ok=True)
    (folder / name).symlink_to(source)
    return folder


def test_openpose_runs_the_body_network_from_the_original_files_names(tmp_path, openpose_file):
    annotators = annotators_with(tmp_path, "body_pose_model.safetensors", openpose_file)
    picture = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    control = PREPROCESSORS["openpose"].run(picture, annotators, 64)
    assert control.shape == (64, 96, 3) and control.dtype == np.uint8
    assert not control.any()  # its zeroed heatmap layer finds nobody: a black map


def test_openpose_says_which_file_is_missing_or_unreadable(tmp_path):
    annotators = tmp_path / "annotators"
    annotators.mkdir()
    picture = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(Refusal, match=r"annotators/body_pose_model\.safetensors") as refused:
        PREPROCESSORS["openpose"].run(picture, annotators, 64)
    assert refused.value.code == "annotator_missing"
    assert refused.value.values["file"] == "body_pose_model.safetensors"
    (annotators / "body_pose_model.safetensors").write_bytes(pickle.dumps({"conv1_1.weight": 1}))
    with pytest.raises(Refusal, match=r"not a readable \.safetensors") as refused:
        PREPROCESSORS["openpose"].run(picture, annotators, 64)
    assert refused.value.code == "annotator_damaged" and refused.value.field == "module"


def test_openpose_refuses_weights_of_another_network(tmp_path):
    annotators = tmp_path / "annotators"
    annotators.mkdir()
    save_file(LineGenerator().state_dict(), str(annotators / "body_pose_model.safetensors"))
    with pytest.raises(ValueError, match=r"body_pose_model\.safetensors is not an openpose body"):
        PREPROCESSORS["openpose"].run(np.zeros((64, 64, 3), np.uint8), annotators, 64)


def write_depth_anything(folder, seed: int = 0):
    """A Depth Anything of a tiny DINOv2 backbone, in the hub's folder layout."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=518,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone.to_dict(),
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        patch_size=14,
    )
    torch.manual_seed(seed)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    return folder


def test_depth_anything_draws_a_grey_depth_map_at_the_processor_resolution(tmp_path):
    annotators = tmp_path / "annotators"
    write_depth_anything(annotators / "depth-anything-small")
    picture = np.random.default_rng(1).integers(0, 255, (128, 192, 3), dtype=np.uint8)
    control = PREPROCESSORS["depth_anything"].run(picture, annotators, 64)
    assert control.shape == (64, 96, 3) and control.dtype == np.uint8
    assert (control[:, :, 0] == control[:, :, 1]).all() and (
        control[:, :, 1] == control[:, :, 2]
    ).all()
    assert control.min() == 0 and control.max() == 255  # stretched over the whole grey range


def test_depth_anything_names_its_missing_file_and_refuses_other_models(tmp_path):
    annotators = tmp_path / "annotators"
    folder = annotators / "depth-anything-small"
    folder.mkdir(parents=True)
    picture = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(Refusal, match=r"depth-anything-small/config\.json") as refused:
        PREPROCESSORS["depth_anything"].run(picture, annotators, 64)
    assert refused.value.code == "annotator_missing"
    (folder / "config.json").write_text(json.dumps({"model_type": "depth_anything"}))
    with pytest.raises(Refusal, match=r"depth-anything-small/model\.safetensors"):
        PREPROCESSORS["depth_anything"].run(picture, annotators, 64)
    save_file(LineGenerator().state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(ValueError, match=r"not a Depth Anything model .*model_type 'dinov2'"):
        PREPROCESSORS["depth_anything"].run(picture, annotators, 64)
    write_depth_anything(folder)
    save_file(LineGenerator().state_dict(), str(folder / "model.safetensors"))  # wrong weights
    with pytest.raises(ValueError, match="not a Depth Anything model"):
        PREPROCESSORS["depth_anything"].run(picture, annotators, 64)
