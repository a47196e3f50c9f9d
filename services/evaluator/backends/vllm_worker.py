"""The vLLM offline engine as a child process that speaks JSON lines.

Runs in vLLM's own venv (`.venv-vllm`), started by `backends/vllm.py` as
`python -P vllm_worker.py` (-P: this folder, which holds a `vllm.py`, must not
shadow the vllm package). It imports only the standard library and vLLM.

Protocol (one JSON object a line; the reply to each request carries its "id"):
  first line in : {"model", "dtype", "max_lora_rank", "max_loras", "seed", "max_model_len",
                   "adapters": {name: path}, "engine_args": {more LLM(...) keyword arguments}}
  first line out: {"ready": true, "vllm": version} or {"error": "..."}
  then in       : {"id", "op": "generate", "requests": [{"messages", "seed", "lora": name | null}],
                   "params": {"n", "temperature", "top_p", "max_tokens"}}
            out : {"id", "outputs": [{"texts", "tokens", "ttft_s", "tpot_s"}], "wall_s"}
                  or {"id", "error": "..."}
  end of input  : the worker exits.

vLLM logs to stdout; the protocol gets a private copy of the original stdout
and fd 1 is pointed at stderr before vLLM is imported, so the engine's own
processes (spawned) log to stderr too.
"""

import json
import os
import sys
import time
import traceback


def _protocol_out():
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    return os.fdopen(fd, "w", buffering=1)


def _send(out, obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()


def _latency(out):
    m = getattr(out, "metrics", None)
    tokens = max((len(c.token_ids) for c in out.outputs), default=0)
    if m is None:
        return None, None
    first = getattr(m, "first_token_latency", None)
    ftime, last, arrival = (getattr(m, k, None) for k in ("first_token_time", "last_token_time", "arrival_time"))
    if first is None and ftime and arrival:
        first = ftime - arrival
    tpot = (last - ftime) / (tokens - 1) if last and ftime and tokens > 1 else None
    return first, tpot


def main():
    out = _protocol_out()
    first = sys.stdin.readline()
    if not first:
        return 0
    cfg = json.loads(first)
    try:
        import vllm
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        adapters = cfg.get("adapters") or {}
        llm = LLM(model=cfg["model"], dtype=cfg.get("dtype", "auto"), seed=cfg.get("seed", 0),
                  enable_lora=bool(adapters), max_lora_rank=cfg.get("max_lora_rank", 16),
                  max_loras=cfg.get("max_loras", max(1, len(adapters))), max_model_len=cfg.get("max_model_len"),
                  **cfg.get("engine_args", {}))
        loras = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(sorted(adapters.items()))}
    except Exception as exc:  # any failure to build the engine goes back as one message, not a hang
        traceback.print_exc()
        _send(out, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _send(out, {"ready": True, "vllm": vllm.__version__})

    for line in sys.stdin:
        msg = json.loads(line)
        try:
            p = msg["params"]
            reqs = msg["requests"]
            unknown = sorted({r["lora"] for r in reqs if r.get("lora") and r["lora"] not in loras})
            if unknown:
                raise ValueError(f"adapter(s) {unknown} not loaded in this engine (loaded: {sorted(loras)})")
            sps = [SamplingParams(n=p["n"], temperature=p["temperature"], top_p=p["top_p"], max_tokens=p["max_tokens"],
                                  seed=r["seed"]) for r in reqs]
            lora = [loras[r["lora"]] if r.get("lora") else None for r in reqs]
            start = time.perf_counter()
            results = llm.chat([r["messages"] for r in reqs], sps, use_tqdm=False, lora_request=lora)
            wall = time.perf_counter() - start
            outputs = []
            for res in results:
                ttft, tpot = _latency(res)
                outputs.append({"texts": [c.text for c in res.outputs], "tokens": [len(c.token_ids) for c in res.outputs],
                                "ttft_s": ttft, "tpot_s": tpot})
            _send(out, {"id": msg.get("id"), "outputs": outputs, "wall_s": wall})
        except Exception as exc:
            traceback.print_exc()
            _send(out, {"id": msg.get("id"), "error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process: the guard is required
    sys.exit(main())
