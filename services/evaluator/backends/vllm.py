"""vLLM offline engine: base and adapter in one `LLM(enable_lora=True)`, the
adapter passed per call as a `LoRARequest`.

vLLM pins its own torch and an older transformers, so it can't be installed
beside the trainer: run this backend from its own environment
(`pip install 'lorafleet[evaluator,vllm]'` into a fresh venv, or the vLLM image
in deploy/). The import happens inside the constructor, so this module loads
anywhere. Latency: the offline engine batches every request of a call together,
so per-request TTFT is taken from vLLM's request metrics when it reports them;
otherwise TTFT is unknown and TPOT is wall time / longest output. For gating on
latency prefer the openai backend against `vllm serve`, which streams.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from lorafleet.services.evaluator.models import GenRequest, Generation, SamplingParams, Variant
from lorafleet.shared.errors import LorafleetError

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def max_lora_rank_for(rank: int) -> int:
    """vLLM accepts only some max_lora_rank values: the smallest one that fits `rank`."""
    for r in VLLM_LORA_RANKS:
        if r >= rank:
            return r
    raise LorafleetError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


class VLLMBackend:
    name = "vllm"

    def __init__(self, base_model: str, adapter_path: str | Path | None = None, *, adapter_name: str = "adapter",
                 lora_int_id: int = 1, lora_rank: int = 64, seed: int = 0, **engine_kwargs: Any):
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError as exc:
            raise LorafleetError(
                "the vllm backend needs vLLM in this environment; it can't share one with the trainer's transformers: "
                "create a separate venv with `pip install 'lorafleet[evaluator,vllm]'` or use --backend openai "
                f"against `vllm serve --enable-lora` ({exc})"
            ) from None
        self.llm = LLM(model=base_model, enable_lora=adapter_path is not None, max_loras=1,
                       max_lora_rank=max_lora_rank_for(lora_rank), seed=seed, **engine_kwargs)
        self.lora = LoRARequest(adapter_name, lora_int_id, str(adapter_path)) if adapter_path is not None else None

    async def aclose(self) -> None:
        pass

    async def generate(self, requests: list[GenRequest], variant: Variant, params: SamplingParams) -> list[Generation]:
        if variant == "adapter" and self.lora is None:
            raise LorafleetError("vllm backend: no adapter loaded for the adapter run")
        return await asyncio.to_thread(self._generate_sync, requests, variant, params)

    def _generate_sync(self, requests: list[GenRequest], variant: Variant, params: SamplingParams) -> list[Generation]:
        from vllm import SamplingParams as VSamplingParams

        # one SamplingParams per request: the seed makes base and adapter draw the same random stream
        sps = [VSamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                               max_tokens=params.max_new_tokens, seed=r.seed) for r in requests]
        start = time.perf_counter()
        outs = self.llm.chat([r.messages for r in requests], sps, use_tqdm=False,
                             lora_request=self.lora if variant == "adapter" else None)
        wall = time.perf_counter() - start
        longest = max((len(c.token_ids) for o in outs for c in o.outputs), default=0)
        result = []
        for out in outs:
            ttft, tpot = _request_latency(out)
            if tpot is None and longest > 1:
                tpot = wall / longest
            result.append(Generation(texts=[c.text for c in out.outputs], output_tokens=[len(c.token_ids) for c in out.outputs],
                                     ttft_s=ttft, tpot_s=tpot))
        return result


def _request_latency(out: Any) -> tuple[float | None, float | None]:
    m = getattr(out, "metrics", None)
    if m is None:
        return None, None
    first = getattr(m, "first_token_latency", None)
    if first is None and getattr(m, "first_token_time", None) and getattr(m, "arrival_time", None):
        first = m.first_token_time - m.arrival_time
    tokens = max((len(c.token_ids) for c in out.outputs), default=0)
    last = getattr(m, "last_token_time", None)
    ftime = getattr(m, "first_token_time", None)
    tpot = (last - ftime) / (tokens - 1) if last and ftime and tokens > 1 else None
    return first, tpot
