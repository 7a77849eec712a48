"""XYZ grid: one cell per combination, labelled axes, the same image as a plain request."""

from __future__ import annotations

import numpy as np
import pytest

from engine.diffusion.grid import parse_axes, plan, render_xyz
from engine.diffusion.params import from_request
from tests.training.conftest import TRIGGER


def test_grid_has_a_cell_per_combination_with_labels(trained, trained_engine):
    spec = {"versions": "dada-v1-000001,dada-v1", "weights": "0.5,1", "seeds": "3"}
    grid = render_xyz(trained_engine, f"{TRIGGER}, solo", spec)
    assert (grid.x.name, grid.x.values) == ("weights", [0.5, 1.0])
    assert (grid.y.name, grid.y.values) == ("versions", ["dada-v1-000001", "dada-v1"])
    assert grid.z is None
    assert len(grid.cells) == 4
    assert {c["seed"] for c in grid.cells} == {3}
    infotexts = [c["infotext"] for c in grid.cells]
    assert any("<lora:dada-v1-000001:0.5>" in t for t in infotexts)
    assert any("<lora:dada-v1:1>" in t for t in infotexts)
    assert grid.x.label(0.5) == "Weight: 0.5" and grid.y.label("dada-v1") == "LoRA: dada-v1"
    width, height = grid.image.size
    assert width > 2 * 64 and height > 2 * 64  # two columns, two rows, plus label margins
    # the bottom-right cell is exactly the plain request with that version and weight
    request = {"prompt": f"{TRIGGER}, solo <lora:dada-v1:1>", "seed": 3}
    params = from_request(request, trained_engine.config.generation, trained_engine.config.limits)
    plain = np.asarray(trained_engine.txt2img(params).images[0])
    cell = np.asarray(grid.image)[height - 64 :, width - 64 :]
    assert np.array_equal(cell, plain)
    # label area is drawn (dark text pixels above the first row)
    assert (np.asarray(grid.image)[: height - 128].min(axis=2) < 100).any()


def test_a_z_axis_gives_grids_side_by_side(trained, trained_engine):
    spec = {"weights": "0.5,1", "versions": "dada-v1", "seeds": "1,2", "steps": "2,3"}
    with pytest.raises(ValueError, match="at most 3"):
        render_xyz(trained_engine, TRIGGER, {**spec, "versions": "dada-v1,dada-v1-000001"})
    grid = render_xyz(
        trained_engine, TRIGGER, {"weights": "0.5,1", "seeds": "1,2", "versions": "dada-v1"}
    )
    assert grid.z is None and grid.y.name == "seeds"
    varying, fixed = plan(parse_axes({"weights": "1,0.5", "seeds": "1,2", "sampler": "Euler,DDIM"}))
    assert [a.name for a in varying] == ["weights", "seeds", "sampler"] and fixed == {}


def test_bad_axes_are_refused_by_name():
    with pytest.raises(ValueError, match="colour: unknown axis"):
        parse_axes({"colour": "red"})
    with pytest.raises(ValueError, match="weights: 'a,b' is not a list of float"):
        parse_axes({"weights": "a,b"})
    with pytest.raises(ValueError, match="more than 64"):
        plan(parse_axes({"seeds": ",".join(map(str, range(9))), "weights": "1,2,3,4,5,6,7,8"}))


def test_a_checkpoint_axis_loads_each_model_once(engine_config, tmp_path):
    from engine.diffusion.generate import Engine
    from engine.diffusion.grid import xyz_request
    from engine.diffusion.tiny import write_demo_model
    from tests.training.conftest import config_for

    config = config_for(engine_config, tmp_path / "data")
    for name, seed in (("tiny-a", 1), ("tiny-b", 2)):  # two different checkpoints
        write_demo_model(config.checkpoints_dir / name, seed=seed)
    with pytest.raises(ValueError, match=r"models: .*'nope'"):
        xyz_request(config, "dada", {"models": "tiny-a,nope"})
    request = xyz_request(config, "dada", {"models": "tiny-a,tiny-b", "seeds": "4,5,6"})
    assert request["lora"] is None  # dada's LoRA is not installed here: the grid goes without
    loads, warm = [], {}

    def engine_for(model):  # keeps one pipeline warm, as the worker does
        if model not in warm:
            loads.append(model)
            warm.clear()
            warm[model] = Engine(config, model=model)
        return warm[model]

    # Checkpoints as Y under a weights X: in grid order they alternate, a, b, a, b.
    spec = {"weights": "0,1", "models": request["axes"]["models"], "seeds": "6"}
    grid = render_xyz(None, request["prompt"], spec, request["base"], None, engine_for)
    assert loads == ["tiny-a", "tiny-b"]  # 4 cells, each checkpoint loaded once
    assert grid.y.name == "models" and grid.y.label("tiny-b") == "Checkpoint: tiny-b"
    assert [(c["x"], c["y"]) for c in grid.cells] == [
        (0.0, "tiny-a"),
        (0.0, "tiny-b"),
        (1.0, "tiny-a"),
        (1.0, "tiny-b"),
    ]
    assert all(f"Model: {c['y']}," in c["infotext"] for c in grid.cells)
    pixels = np.asarray(grid.image)
    top, bottom = pixels[-128:-64, -64:], pixels[-64:, -64:]  # same seed, other checkpoint
    assert not np.array_equal(top, bottom)
    with pytest.raises(ValueError, match="models: this grid cannot switch checkpoints"):
        render_xyz(Engine(config), "x", {"models": "tiny-a,tiny-b"})
