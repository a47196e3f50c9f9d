# Quick start: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lorafleet-installed
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup test demo tiny-base unit integration e2e bench lint clean

setup: $(STAMP)

# Re-installs only when the dependency list changes; the editable install
# picks up source edits by itself.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[cpu,dev]'
	@touch $(STAMP)

# pytest exits 5 when it collects nothing: that is a failure here, never a pass.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

demo: setup
	$(BIN)/lorafleet demo $(DEMO_ARGS)

# Rebuild the pretrained tiny base shipped in services/trainer/tiny_base/ (~10 min of CPU).
tiny-base: setup
	$(BIN)/lorafleet model build-tiny

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf .lorafleet build dist *.egg-info
