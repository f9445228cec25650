# One command each: `make demo` (set-up + export + validation + run on the embedded default),
# `make test` (set-up + the Python test suite + the Swift package's build and tests + the Android core's
# JUnit tests). Set-up is a local virtualenv in .venv; Swift is the machine's toolchain (swift on PATH or
# /opt/swift), required; Java is the machine's JDK 17 with Debian's junit4 and libandroid-json-java
# (AOSP's org.json), installed by `make java-setup` when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
SWIFT ?= $(shell command -v swift || ls /opt/swift/usr/bin/swift 2>/dev/null)
KIT := apps/ios/EdgetrimKit
JAVAC ?= $(shell command -v javac)
JAVA_CORE := apps/android/core
JAVA_BUILD := $(JAVA_CORE)/build
JAVA_JARS := /usr/share/java/com.android.json.jar /usr/share/java/junit4.jar /usr/share/java/hamcrest-core.jar
JAVA_CP := $(subst $(eval) ,:,$(JAVA_JARS))
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgetrim-installed

.PHONY: setup demo test swift-test java-setup java-test lint acceptance clean

setup: $(STAMP)

$(STAMP): pyproject.toml apps/jetson/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[export,dev,genai]'
	$(BIN)/pip install --quiet --no-deps -e apps/jetson  # the Jetson app (its one dependency: edgetrim, above)
	touch $(STAMP)

demo: setup
	$(BIN)/edgetrim export --target onnx --out artifacts/demo-onnx
	$(BIN)/edgetrim run artifacts/demo-onnx --image examples/sample.jpg --overlay artifacts/demo-overlay.png
	$(BIN)/edgetrim export --target coreml --out artifacts/demo-coreml

test: setup
	$(BIN)/python -m pytest
	$(MAKE) swift-test
	$(MAKE) java-test

swift-test:
	@test -n "$(SWIFT)" || { echo "error: no Swift toolchain (swift on PATH or /opt/swift): install Swift 6 to test apps/ios" >&2; exit 2; }
	cd $(KIT) && $(SWIFT) build && .build/debug/edgetrim-kit verify ../../conformance/artifacts/vision-onnx
	cd $(KIT) && $(SWIFT) test --disable-swift-testing  # XCTest only: its summary closes the run

java-setup:
	@test -n "$(JAVAC)" || { echo "error: no javac: install JDK 17 (Debian: openjdk-17-jdk-headless) to test apps/android/core" >&2; exit 2; }
	@for jar in $(JAVA_JARS); do test -f $$jar || missing=1; done; test -z "$$missing" || \
	  { $(SUDO) apt-get install -y -qq junit4 libandroid-json-java >/dev/null 2>&1 || \
	    { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq junit4 libandroid-json-java; }; }

java-test: java-setup
	rm -rf $(JAVA_BUILD) && mkdir -p $(JAVA_BUILD)/classes $(JAVA_BUILD)/test-classes
	$(JAVAC) --release 17 -Xlint:all,-serial -Werror -d $(JAVA_BUILD)/classes -cp /usr/share/java/com.android.json.jar \
	  $$(find $(JAVA_CORE)/src/main/java -name '*.java')
	$(JAVAC) --release 17 -Xlint:all,-serial -Werror -d $(JAVA_BUILD)/test-classes -cp $(JAVA_BUILD)/classes:$(JAVA_CP) \
	  $$(find $(JAVA_CORE)/src/test/java -name '*.java')
	java -cp $(JAVA_BUILD)/classes:$(JAVA_BUILD)/test-classes:$(JAVA_CP) dev.edgetrim.core.RunAllTests $(JAVA_BUILD)/test-classes

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf artifacts build *.egg-info

acceptance: setup
	$(BIN)/python tests/acceptance_presets.py artifacts/acceptance
