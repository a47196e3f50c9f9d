"""vLLM offline engine: base and adapter in one `LLM(enable_lora=True)`, the
adapter passed per request as a `LoRARequest`.

vLLM can't share the trainer's environment (it pins its own torch and an older
transformers), so the engine runs in vLLM's venv (`make setup-vllm`) as a child
process, `vllm_worker.py`, and this backend talks to it in JSON lines over
its stdin/stdout. The child is started in its own process group and stopped
by it; every wait on it has a deadline and notices the child dying, so a
failed engine is an error with the tail of its log, never a hung evaluation.

Base requests go through a zero adapter (B = 0, so the output is the base
model's) whenever an adapter is loaded: vLLM 0.32/0.33 applies the last LoRA
slot to base requests batched with LoRA ones (see shared/vllm_launch.py).

Latency: the offline engine batches every request of a call together, so TTFT
comes from vLLM's request metrics when it reports them; otherwise TPOT is wall
time / longest output. For gating on latency prefer the openai backend against
`lorafleet model serve --engine vllm`, which streams.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from lorafleet.services.evaluator.backends.base import BackendError
from lorafleet.services.evaluator.models import GenRequest, Generation, SamplingParams, Variant
from lorafleet.shared import vllm_launch
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.processes import stop_groups
from lorafleet.shared.vllm_launch import VLLM_LORA_RANKS, max_lora_rank_for  # noqa: F401 - re-exported

WORKER = Path(__file__).with_name("vllm_worker.py")
BASE_LORA = "__base__"


class VLLMWorker:
    """One vllm_worker.py child: start it, send requests, read replies, stop it."""

    def __init__(self, config: dict[str, Any], *, python: str | None = None, env: dict[str, str] | None = None,
                 start_timeout_s: float = 900.0, log_lines: int = 200, log_path: str | Path | None = None):
        self.python = python or vllm_launch.vllm_python()
        self._log: deque[str] = deque(maxlen=log_lines)
        # the engine's whole log, when wanted ($LORAFLEET_VLLM_LOG): errors carry only its tail
        log_path = log_path or os.environ.get("LORAFLEET_VLLM_LOG")
        self._sink = open(log_path, "a") if log_path else None
        self._replies: queue.Queue[dict | None] = queue.Queue()
        self._next_id = 0
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [self.python, "-P", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, env=env if env is not None else vllm_launch.engine_env(), start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, daemon=True, name="vllm-worker-out").start()
        threading.Thread(target=self._read_stderr, daemon=True, name="vllm-worker-err").start()
        try:
            self._write(config)
            reply = self._wait(start_timeout_s, "start")
            if "error" in reply:
                raise LorafleetError(f"vLLM could not start the engine for {config['model']}: {reply['error']}\n"
                                     f"{self.log_tail()}")
            self.version = reply.get("vllm")
        except BaseException:
            self.close()
            raise

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._replies.put(json.loads(line))
            except ValueError:
                self._log.append(line.rstrip())
        self._replies.put(None)  # the child closed its output: it is gone

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._log.append(line.rstrip())
            if self._sink:
                self._sink.write(line)
                self._sink.flush()

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the engine's log, and the first error line before them (the root cause:
        vLLM's engine process logs it, then the front end logs a generic EngineDeadError)."""
        log = list(self._log)
        tail = log[-lines:]
        first_error = next((line for line in log[:-lines] if "Error" in line and "EngineDeadError" not in line), None)
        return "\n".join(([first_error, "..."] if first_error else []) + tail)

    def _write(self, obj: dict) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise BackendError(f"the vLLM worker has exited (code {self.proc.poll()}):\n{self.log_tail()}") from None

    def _wait(self, timeout_s: float, what: str) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                reply = self._replies.get(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise BackendError(f"the vLLM worker gave no answer to {what} within {timeout_s:.0f} s "
                                       f"(raise the timeout or check the machine's load):\n{self.log_tail()}") from None
                continue
            if reply is None:
                self.proc.wait(timeout=30)
                raise BackendError(f"the vLLM worker exited (code {self.proc.returncode}) during {what}:\n{self.log_tail()}")
            return reply

    def call(self, msg: dict, timeout_s: float) -> dict:
        with self._lock:  # one request at a time: replies come back in order
            self._next_id += 1
            msg = {**msg, "id": self._next_id}
            self._write(msg)
            reply = self._wait(timeout_s, msg.get("op", "request"))
        if reply.get("id") != msg["id"]:
            raise BackendError(f"the vLLM worker answered request {reply.get('id')} to request {msg['id']}")
        if "error" in reply:
            raise LorafleetError(f"vLLM: {reply['error']}\n{self.log_tail()}")
        return reply

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()  # end of input: the worker exits by itself
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        stop_groups([self.proc], timeout=10)  # and whatever it spawned, by process group


class VLLMBackend:
    """`backend: vllm`: the offline engine in vLLM's venv, base and adapter(s) served side by side."""

    name = "vllm"
    RAW_BASE = ""  # in generate_mixed: the base model without the zero adapter (subject to vLLM's mixed-batch bug)

    def __init__(self, base_model: str, adapter_path: str | Path | None = None, *, adapter_name: str = "adapter",
                 lora_rank: int | None = None, max_lora_rank: int | None = None, seed: int = 0, dtype: str = "auto",
                 kv_cache_gib: int = vllm_launch.DEFAULT_KV_CACHE_GIB, request_timeout_s: float = 900.0,
                 start_timeout_s: float = 900.0, base_adapter: bool = True, python: str | None = None,
                 extra_adapters: dict[str, str | Path] | None = None):
        gpu = vllm_launch.has_gpu()
        config = vllm_launch.check_base_model(base_model, gpu=gpu, setting="base model")
        adapters = {adapter_name: adapter_path} if adapter_path is not None else {}
        adapters.update(extra_adapters or {})
        ranks = {name: vllm_launch.adapter_rank(path, f"adapter {name!r}") for name, path in adapters.items()}
        if max_lora_rank is None:
            max_lora_rank = max_lora_rank_for(max([lora_rank or 1, *ranks.values()]))
        elif max_lora_rank not in VLLM_LORA_RANKS:
            raise LorafleetError(f"max_lora_rank {max_lora_rank}: vLLM accepts only {VLLM_LORA_RANKS}")
        for name, path in adapters.items():
            vllm_launch.check_rank_fits(path, max_lora_rank, f"adapter {name!r}")
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.base_lora: str | None = None
        if adapters and base_adapter:
            self._tmp = tempfile.TemporaryDirectory(prefix="lorafleet-vllm-")
            adapters[BASE_LORA] = vllm_launch.write_zero_adapter(base_model, Path(self._tmp.name) / "zero")
            self.base_lora = BASE_LORA
        if dtype == "auto" and not gpu:
            dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
        self.adapter_name = adapter_name if adapter_path is not None else None
        self.request_timeout_s = request_timeout_s
        try:
            self.worker = VLLMWorker(
                {"model": str(base_model), "dtype": dtype, "seed": seed, "max_lora_rank": max_lora_rank,
                 "max_loras": max(1, len(adapters)), "max_model_len": config.get("max_position_embeddings"),
                 "adapters": {k: str(Path(v).resolve()) for k, v in adapters.items()},
                 "engine_args": vllm_launch.seeded_sampling_args(config.get("max_position_embeddings"), gpu=gpu)},
                python=python, env=vllm_launch.engine_env(kv_cache_gib, gpu=gpu), start_timeout_s=start_timeout_s)
        except BaseException:
            self._cleanup()
            raise

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.worker.close)
        self._cleanup()

    async def generate(self, requests: list[GenRequest], variant: Variant, params: SamplingParams) -> list[Generation]:
        if variant == "adapter" and self.adapter_name is None:
            raise LorafleetError("vllm backend: no adapter loaded for the adapter run")
        lora = self.adapter_name if variant == "adapter" else self.base_lora
        return await self.generate_mixed([(r, lora) for r in requests], params)

    async def generate_mixed(self, requests: list[tuple[GenRequest, str | None]], params: SamplingParams) -> list[Generation]:
        """One engine call for requests that each name their adapter (None: the base model, through the
        zero adapter when one is loaded; RAW_BASE: the base model without any LoRA)."""
        msg = {
            "op": "generate",
            "requests": [{"messages": r.messages, "seed": r.seed, "lora": lora if lora is not None else self.base_lora}
                         for r, lora in requests],
            "params": {"n": params.n, "temperature": params.temperature, "top_p": params.top_p,
                       "max_tokens": params.max_new_tokens},
        }
        reply = await asyncio.to_thread(self.worker.call, msg, self.request_timeout_s)
        outs = reply["outputs"]
        longest = max((t for o in outs for t in o["tokens"]), default=0)
        result = []
        for o in outs:
            tpot = o["tpot_s"]
            if tpot is None and longest > 1:
                tpot = reply["wall_s"] / longest
            result.append(Generation(texts=o["texts"], output_tokens=o["tokens"], ttft_s=o["ttft_s"], tpot_s=tpot))
        return result
