"""The openpose preprocessor (body only): a picture → the 18-keypoint skeleton on black.

A port of the body estimator that the ControlNet 1.1 annotators use (lllyasviel's
ControlNet-v1-1-nightly `annotator/openpose/{model,body,util}.py`, the same code as
huggingface/controlnet_aux `open_pose/`; Apache-2.0 repositories, edited from Hzzone's
pytorch-openpose, originally CMU's OpenPose). Note the licence of the OpenPose method and its
weights: CMU's OpenPose licence, which those folders carry, allows academic and non-commercial
research use only; whoever installs `body_pose_model` takes that licence on.

The network is CMU's VGG-19-based body pose model: a shared VGG trunk, then 6 stages, each with a
PAF branch (`_L1`, 38 channels: 19 limbs × x, y) and a heatmap branch (`_L2`, 19 channels: 18
keypoints + background). Layer names are the original's, so `body_pose_model.pth` converted to
`body_pose_model.safetensors` loads as it is: with its flat names (`conv1_1.weight`, as the .pth
holds them) or this module's (`model0.conv1_1.weight`). Pickles are never loaded.

Post-processing as the original: one scale (the annotators' `scale_search = [0.5]` of a 368-pixel
box; the original's multi-scale search is commented out there too), heatmap peaks after a
gaussian filter (sigma 3), limbs scored along the PAF between candidate pairs, people assembled
from limbs, and the skeleton drawn in OpenPose's colours (limbs at 60 %, joints full) on black,
which is what openpose ControlNets read. Only workers import this (torch).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from engine.diffusion.annotators import device, load_network

BOX_SIZE = 368  # the network's training box
SCALE = 0.5  # the annotators' single scale: the picture's height becomes 184 pixels
STRIDE = 8  # the network's output is 1/8 of its input
PAD_VALUE = 128  # grey padding up to a multiple of the stride
PEAK_THRESHOLD = 0.1  # thre1: a heatmap peak below this is no keypoint
PAF_THRESHOLD = 0.05  # thre2: a limb's sample points must align with the PAF above this
LIMB_SAMPLES = 10  # mid_num: points sampled along a candidate limb
STICK_WIDTH = 4
KEYPOINTS = 18
# Keypoint pairs (1-based, COCO order: nose, neck, right shoulder…) and their PAF channels.
LIMBS = [
    [2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12],
    [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [3, 17], [6, 18],
]  # fmt: skip
PAF_CHANNELS = [
    [12, 13],
    [20, 21],
    [14, 15],
    [16, 17],
    [22, 23],
    [24, 25],
    [0, 1],
    [2, 3],
    [4, 5],
    [6, 7],
    [8, 9],
    [10, 11],
    [28, 29],
    [30, 31],
    [34, 35],
    [32, 33],
    [36, 37],
    [18, 19],
    [26, 27],
]  # fmt: skip  (the original's mapIdx minus 19)
DRAWN_LIMBS = 17  # the last two pairs (ear–shoulder) help assembly but are not drawn
COLOURS = [
    [255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
    [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
    [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85],
]  # fmt: skip


# -- the network -----------------------------------------------------------------------------------


def _layers(block: dict[str, list[int]], no_relu: set[str]) -> nn.Sequential:
    """The original's make_layers: convolutions [in, out, kernel, stride, padding] each with a
    ReLU unless named in `no_relu`, pools [kernel, stride, padding]."""
    layers: list[tuple[str, nn.Module]] = []
    for name, v in block.items():
        if "pool" in name:
            layers.append((name, nn.MaxPool2d(kernel_size=v[0], stride=v[1], padding=v[2])))
            continue
        layers.append((name, nn.Conv2d(v[0], v[1], kernel_size=v[2], stride=v[3], padding=v[4])))
        if name not in no_relu:
            layers.append(("relu_" + name, nn.ReLU(inplace=True)))
    return nn.Sequential(OrderedDict(layers))


def _stage(stage: int, branch: int, out: int) -> dict[str, list[int]]:
    """A refinement stage's branch (2…6): five 7×7 convolutions, two 1×1."""
    name = f"stage{stage}_L{branch}"
    block = {f"Mconv1_{name}": [185, 128, 7, 1, 3]}
    block |= {f"Mconv{i}_{name}": [128, 128, 7, 1, 3] for i in range(2, 6)}
    return block | {f"Mconv6_{name}": [128, 128, 1, 1, 0], f"Mconv7_{name}": [128, out, 1, 1, 0]}


class BodyPoseModel(nn.Module):
    """The original's `bodypose_model`: BGR picture (1x3xHxW, /256 - 0.5) → (PAFs 1x38, heatmaps
    1x19) at 1/8 size."""

    def __init__(self) -> None:
        super().__init__()
        # The original lists Mconv7_stage6_L1 twice and never Mconv7_stage6_L2, so its last
        # heatmaps pass a ReLU; kept, since the weights were used that way.
        no_relu = {"conv5_5_CPM_L1", "conv5_5_CPM_L2"}
        no_relu |= {f"Mconv7_stage{s}_L{b}" for s in range(2, 6) for b in (1, 2)}
        no_relu.add("Mconv7_stage6_L1")
        trunk = {
            "conv1_1": [3, 64, 3, 1, 1], "conv1_2": [64, 64, 3, 1, 1], "pool1_stage1": [2, 2, 0],
            "conv2_1": [64, 128, 3, 1, 1], "conv2_2": [128, 128, 3, 1, 1],
            "pool2_stage1": [2, 2, 0],
            "conv3_1": [128, 256, 3, 1, 1], "conv3_2": [256, 256, 3, 1, 1],
            "conv3_3": [256, 256, 3, 1, 1], "conv3_4": [256, 256, 3, 1, 1],
            "pool3_stage1": [2, 2, 0],
            "conv4_1": [256, 512, 3, 1, 1], "conv4_2": [512, 512, 3, 1, 1],
            "conv4_3_CPM": [512, 256, 3, 1, 1], "conv4_4_CPM": [256, 128, 3, 1, 1],
        }  # fmt: skip
        self.model0 = _layers(trunk, no_relu)
        for branch, out in ((1, 38), (2, 19)):
            first = {f"conv5_{i}_CPM_L{branch}": [128, 128, 3, 1, 1] for i in range(1, 4)}
            first[f"conv5_4_CPM_L{branch}"] = [128, 512, 1, 1, 0]
            first[f"conv5_5_CPM_L{branch}"] = [512, out, 1, 1, 0]
            setattr(self, f"model1_{branch}", _layers(first, no_relu))
            for stage in range(2, 7):
                setattr(
                    self, f"model{stage}_{branch}", _layers(_stage(stage, branch, out), no_relu)
                )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model0(x)
        stage_input = features
        for stage in range(1, 7):
            pafs = getattr(self, f"model{stage}_1")(stage_input)
            heatmaps = getattr(self, f"model{stage}_2")(stage_input)
            stage_input = torch.cat([pafs, heatmaps, features], 1)
        return pafs, heatmaps


def module_names(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original file's flat names (`conv1_1.weight`) as this module's (`model0.conv1_1.weight`),
    as the original's `util.transfer` does; names already in this module's form are kept."""
    if any(name.startswith("model0.") for name in state):
        return state
    ours = {name.split(".", 1)[1]: name for name in model.state_dict()}
    return {ours.get(name, name): value for name, value in state.items()}


# -- from the network's maps to people -------------------------------------------------------------


def _resized(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """The original's smart_resize, per channel: area filter down, Lanczos up."""
    smaller = width + height < x.shape[1] + x.shape[0]
    interpolation = cv2.INTER_AREA if smaller else cv2.INTER_LANCZOS4
    channels = [cv2.resize(x[:, :, i], (width, height), interpolation=interpolation) for i in
                range(x.shape[2])]  # fmt: skip
    return np.stack(channels, axis=2)


def find_peaks(heatmaps: np.ndarray) -> list[list[tuple[float, float, float, int]]]:
    """Each keypoint's candidates (x, y, score, id) from HxWx19 heatmaps: local maxima of the
    gaussian-filtered map above PEAK_THRESHOLD; ids count across all keypoints."""
    all_peaks, counter = [], 0
    for part in range(KEYPOINTS):
        original = heatmaps[:, :, part]
        smooth = gaussian_filter(original, sigma=3)
        neighbours = np.pad(smooth, 1, constant_values=0)
        peaks = (
            (smooth >= neighbours[:-2, 1:-1])
            & (smooth >= neighbours[2:, 1:-1])
            & (smooth >= neighbours[1:-1, :-2])
            & (smooth >= neighbours[1:-1, 2:])
            & (smooth > PEAK_THRESHOLD)
        )
        ys, xs = np.nonzero(peaks)
        all_peaks.append(
            [
                (x, y, original[y, x], counter + i)
                for i, (x, y) in enumerate(zip(xs, ys, strict=True))
            ]
        )
        counter += len(xs)
    return all_peaks


def connect_limbs(all_peaks: list, pafs: np.ndarray, height: int) -> list[np.ndarray | None]:
    """Each limb's connections [id A, id B, score, i, j]: candidate pairs whose sample points
    follow the limb's PAF, best first, each candidate used once (None: a keypoint not found)."""
    connections: list[np.ndarray | None] = []
    for (a, b), channels in zip(LIMBS, PAF_CHANNELS, strict=True):
        field = pafs[:, :, channels]
        cand_a, cand_b = all_peaks[a - 1], all_peaks[b - 1]
        if not cand_a or not cand_b:
            connections.append(None)
            continue
        scored = []
        for i, pa in enumerate(cand_a):
            for j, pb in enumerate(cand_b):
                vec = np.subtract(pb[:2], pa[:2])
                norm = max(0.001, math.sqrt(vec[0] * vec[0] + vec[1] * vec[1]))
                vec = vec / norm
                xs = np.linspace(pa[0], pb[0], num=LIMB_SAMPLES).round().astype(int)
                ys = np.linspace(pa[1], pb[1], num=LIMB_SAMPLES).round().astype(int)
                along = field[ys, xs, 0] * vec[0] + field[ys, xs, 1] * vec[1]
                score = along.mean() + min(0.5 * height / norm - 1, 0)
                aligned = np.count_nonzero(along > PAF_THRESHOLD) > 0.8 * len(along)
                if aligned and score > 0:
                    scored.append((i, j, score))
        scored.sort(key=lambda c: c[2], reverse=True)
        connection = np.zeros((0, 5))
        for i, j, score in scored:
            if i not in connection[:, 3] and j not in connection[:, 4]:
                connection = np.vstack([connection, [cand_a[i][3], cand_b[j][3], score, i, j]])
                if len(connection) >= min(len(cand_a), len(cand_b)):
                    break
        connections.append(connection)
    return connections


def assemble_people(connections: list, candidate: np.ndarray) -> np.ndarray:
    """People from limbs (the original's subset): rows of 18 candidate ids (-1: not found), the
    total score, the number of parts; people with under 4 parts or a low mean score dropped."""
    subset = -1 * np.ones((0, 20))
    for k, connection in enumerate(connections):
        if connection is None:
            continue
        index_a, index_b = np.array(LIMBS[k]) - 1
        for part_a, part_b, score, _, _ in connection:
            found = [j for j in range(len(subset)) if subset[j][index_a] == part_a
                     or subset[j][index_b] == part_b][:2]  # fmt: skip
            if len(found) == 2 and not _overlap(subset, *found):  # two halves: merge them
                j1, j2 = found
                subset[j1][:-2] += subset[j2][:-2] + 1
                subset[j1][-2:] += subset[j2][-2:]
                subset[j1][-2] += score
                subset = np.delete(subset, j2, 0)
            elif found:  # the person's other end of this limb (overwritten, when two share it)
                j = found[0]
                if len(found) == 2 or subset[j][index_b] != part_b:
                    subset[j][index_b] = part_b
                    subset[j][-1] += 1
                    subset[j][-2] += candidate[int(part_b), 2] + score
            elif k < 17:  # a new person (the ear–shoulder limbs start none)
                row = -1 * np.ones(20)
                row[index_a], row[index_b] = part_a, part_b
                row[-1] = 2
                row[-2] = candidate[int(part_a), 2] + candidate[int(part_b), 2] + score
                subset = np.vstack([subset, row])
    keep = [row[-1] >= 4 and row[-2] / row[-1] >= 0.4 for row in subset]
    return subset[np.array(keep, dtype=bool)] if len(subset) else subset


def _overlap(subset: np.ndarray, j1: int, j2: int) -> bool:
    """Whether two partial people share a keypoint (then they are not merged)."""
    membership = ((subset[j1] >= 0).astype(int) + (subset[j2] >= 0).astype(int))[:-2]
    return bool(np.any(membership == 2))


def people(heatmaps: np.ndarray, pafs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(candidate: rows of x, y, score, id; subset: people) from full-size maps (HxWx19, HxWx38)."""
    all_peaks = find_peaks(heatmaps)
    candidate = np.array([peak for peaks in all_peaks for peak in peaks]).reshape(-1, 4)
    connections = connect_limbs(all_peaks, pafs, heatmaps.shape[0])
    return candidate, assemble_people(connections, candidate)


def draw_bodypose(canvas: np.ndarray, candidate: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """The skeletons on `canvas` (pixel coordinates): limbs as ellipses at 60 % of their colour,
    then the keypoints as full-colour dots."""
    for i in range(DRAWN_LIMBS):
        colour = [int(c * 0.6) for c in COLOURS[i]]
        for person in subset:
            index = person[np.array(LIMBS[i]) - 1]
            if -1 in index:
                continue
            xs, ys = candidate[index.astype(int), 0], candidate[index.astype(int), 1]
            length = math.hypot(xs[0] - xs[1], ys[0] - ys[1])
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            centre = (int(xs.mean()), int(ys.mean()))
            polygon = cv2.ellipse2Poly(
                centre, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1
            )
            cv2.fillConvexPoly(canvas, polygon, colour)
    for i in range(KEYPOINTS):
        for person in subset:
            if person[i] == -1:
                continue
            x, y = candidate[int(person[i]), :2]
            cv2.circle(canvas, (int(x), int(y)), 4, COLOURS[i], thickness=-1)
    return canvas


# -- the preprocessor ------------------------------------------------------------------------------


def network_maps(model: BodyPoseModel, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps HxWx19, PAFs HxWx38) at the picture's size, from one scale."""
    height, width = image.shape[:2]
    k = SCALE * BOX_SIZE / height
    small = cv2.resize(image, (int(width * k), int(height * k)), interpolation=cv2.INTER_AREA
                       if k < 1 else cv2.INTER_LANCZOS4)  # fmt: skip
    h, w = small.shape[:2]
    padded = np.pad(small, [(0, -h % STRIDE), (0, -w % STRIDE), (0, 0)], constant_values=PAD_VALUE)
    bgr = np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1)[None], np.float32)
    with torch.no_grad():
        pafs, heatmaps = model(torch.from_numpy(bgr / 256 - 0.5).to(device()))

    def full_size(maps: torch.Tensor) -> np.ndarray:
        x = maps[0].permute(1, 2, 0).float().cpu().numpy()
        x = _resized(x, x.shape[1] * STRIDE, x.shape[0] * STRIDE)[:h, :w]
        return _resized(x, width, height).astype(np.float64)  # as the original: no ties

    return full_size(heatmaps), full_size(pafs)


def pose_map(image: np.ndarray, weights: Path) -> np.ndarray:
    """The body skeletons of an RGB uint8 picture, drawn on black at its size."""
    model = load_network(BodyPoseModel, weights, "an openpose body annotator", module_names)
    candidate, subset = people(*network_maps(model, image))
    return draw_bodypose(np.zeros_like(image), candidate, subset)
