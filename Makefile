# Every target makes and uses ./.venv itself: on a fresh clone `make test` and `make run` need nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# One pinned torch pair: spandrel (ESRGAN upscalers) imports torchvision, and PyPI's torchvision only
# imports beside this CUDA-capable build (which also runs on the CPU).
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: run test lint format bench demo-model clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[engine,bot,dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/posterbot run

test: $(BIN)/.installed lint
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(BIN)/.installed
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

demo-model: $(BIN)/.installed
	$(BIN)/posterbot demo-model data/models/Stable-diffusion/posterbot-demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
