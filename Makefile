# One command each: `make demo` (set-up + export + validation + run on the embedded default),
# `make test` (set-up + the test suite). Set-up is a local virtualenv in .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgetrim-installed

.PHONY: setup demo test lint acceptance clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[export,dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/edgetrim export --target onnx --out artifacts/demo-onnx
	$(BIN)/edgetrim run artifacts/demo-onnx --image examples/sample.jpg --overlay artifacts/demo-overlay.png
	$(BIN)/edgetrim export --target coreml --out artifacts/demo-coreml

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf artifacts build *.egg-info

acceptance: setup
	$(BIN)/python tests/acceptance_presets.py artifacts/acceptance
