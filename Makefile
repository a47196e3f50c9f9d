# Quick start: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lorafleet-installed
PYTEST_ARGS ?=

.PHONY: setup browser test demo unit integration e2e bench lint clean

setup: $(STAMP)

# The dashboard's browser tests drive Debian's chromium through Playwright (Playwright's own
# browser download is not reachable here). Installed only when missing (the demo doesn't need it);
# a failed install fails `make test`, never a silent skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Re-installs only when the dependency list changes; the editable install
# picks up source edits by itself.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[cpu,dev]'
	@touch $(STAMP)

# pytest exits 5 when it collects nothing: that is a failure here, never a pass.
test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

demo: setup
	$(BIN)/lorafleet demo

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf .lorafleet build dist *.egg-info
