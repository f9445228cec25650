# One command each: `make demo` (set-up + export + validation + run on the embedded default),
# `make test` (set-up + the Python test suite + the Swift package's build and tests). Set-up is a local
# virtualenv in .venv; Swift is the machine's toolchain (swift on PATH or /opt/swift), required.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
SWIFT ?= $(shell command -v swift || ls /opt/swift/usr/bin/swift 2>/dev/null)
KIT := apps/ios/EdgetrimKit
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgetrim-installed

.PHONY: setup demo test swift-test lint acceptance clean

setup: $(STAMP)

$(STAMP): pyproject.toml apps/jetson/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[export,dev]'
	$(BIN)/pip install --quiet --no-deps -e apps/jetson  # the Jetson app (its one dependency: edgetrim, above)
	touch $(STAMP)

demo: setup
	$(BIN)/edgetrim export --target onnx --out artifacts/demo-onnx
	$(BIN)/edgetrim run artifacts/demo-onnx --image examples/sample.jpg --overlay artifacts/demo-overlay.png
	$(BIN)/edgetrim export --target coreml --out artifacts/demo-coreml

test: setup
	$(BIN)/python -m pytest
	$(MAKE) swift-test

swift-test:
	@test -n "$(SWIFT)" || { echo "error: no Swift toolchain (swift on PATH or /opt/swift): install Swift 6 to test apps/ios" >&2; exit 2; }
	cd $(KIT) && $(SWIFT) build && .build/debug/edgetrim-kit verify ../../conformance/artifacts/vision-onnx
	cd $(KIT) && $(SWIFT) test --disable-swift-testing  # XCTest only: its summary closes the run

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf artifacts build *.egg-info

acceptance: setup
	$(BIN)/python tests/acceptance_presets.py artifacts/acceptance
