"""transformers + peft on CPU (or one GPU) for tiny and small models.

Base and adapter share one model object: the base is the PeftModel with its
adapter disabled, so both run on the same weights, threads and load.
Batched sampling: `batch_size` prompts per generate() call, `n` sequences each;
the torch generator is seeded per batch, so base and adapter see the same seeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lorafleet.services.evaluator.models import GenRequest, Generation, SamplingParams, Variant
from lorafleet.shared.errors import LorafleetError


class _StepTimer:
    """A transformers streamer that only records when each decoding step lands."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class TransformersBackend:
    name = "transformers"

    def __init__(self, base_path: str | Path, adapter_path: str | Path | None = None, *, batch_size: int = 8,
                 device: str = "cpu", warmup: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base_path = Path(base_path)
        if not (base_path / "config.json").is_file():
            raise LorafleetError(f"base model {base_path} has no config.json: pass a local model directory "
                                 "(e.g. one made by `lorafleet model make-tiny`)")
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        self.tokenizer.padding_side = "left"  # decoder-only: prompts end where generation starts
        if self.tokenizer.pad_token_id is None:
            raise LorafleetError(f"tokenizer of {base_path} has no pad token: batched generation needs one")
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32 if device == "cpu" else "auto")
        self.has_adapter = adapter_path is not None
        if adapter_path is not None:
            from peft import PeftModel

            if not (Path(adapter_path) / "adapter_config.json").is_file():
                raise LorafleetError(f"adapter {adapter_path} has no adapter_config.json: pass a peft adapter directory")
            model = PeftModel.from_pretrained(model, str(adapter_path))
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        # One thread runs every generate(): one call at a time on the shared model, and
        # torch's per-thread CPU pools are set up once, by the warm-up, not in a measured call.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorafleet-generate")
        self._warm = not warmup

    def _warmup(self, params: SamplingParams) -> None:
        req = GenRequest(problem_id="warmup", messages=[{"role": "user", "content": "warm up"}], seed=0)
        small = params.model_copy(update={"max_new_tokens": 4})
        for variant in ("base", "adapter") if self.has_adapter else ("base",):
            self._generate_sync([req] * self.batch_size, variant, small)
        self._warm = True

    async def aclose(self) -> None:
        self._executor.shutdown(wait=True)

    async def generate(self, requests: list[GenRequest], variant: Variant, params: SamplingParams) -> list[Generation]:
        if variant == "adapter" and not self.has_adapter:
            raise LorafleetError("transformers backend: no adapter loaded for the adapter run")

        def work() -> list[Generation]:
            if not self._warm:  # the first call pays one-off costs; keep them out of either variant's latency
                self._warmup(params)
            return self._generate_sync(requests, variant, params)

        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _context(self, variant: Variant) -> contextlib.AbstractContextManager:
        if self.has_adapter and variant != "adapter":
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def _generate_sync(self, requests: list[GenRequest], variant: Variant, params: SamplingParams) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._batch(requests[start:start + self.batch_size], variant, params))
        return out

    def _batch(self, batch: list[GenRequest], variant: Variant, params: SamplingParams) -> list[Generation]:
        import torch

        tok = self.tokenizer
        prompts = [tok.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in batch]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = not params.is_greedy
        # greedy decoding gives one answer; n > 1 copies of it, as vLLM returns for temperature 0
        per_prompt = params.n if sample else 1
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens, num_return_sequences=per_prompt, do_sample=sample,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)  # top_k=0: off, as in vLLM
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        timer = _StepTimer()
        torch.manual_seed(batch[0].seed)
        with torch.inference_mode(), self._context(variant):
            t0 = time.perf_counter()
            seqs = self.model.generate(**enc, streamer=timer, **kwargs)
            t_end = time.perf_counter()
        steps = timer.times[1:]  # times[0] is the prompt being handed over
        ttft = (steps[0] - t0) if steps else (t_end - t0)
        tpot = ((steps[-1] - steps[0]) / (len(steps) - 1)) if len(steps) > 1 else None
        gen = seqs[:, enc["input_ids"].shape[1]:]
        result = []
        for i in range(len(batch)):
            rows = gen[i * per_prompt:(i + 1) * per_prompt].tolist()
            texts, counts = [], []
            for row in rows:
                length = len(row)
                if tok.eos_token_id in row:
                    length = row.index(tok.eos_token_id) + 1
                elif tok.pad_token_id in row:
                    length = row.index(tok.pad_token_id)
                counts.append(length)
                texts.append(tok.decode(row[:length], skip_special_tokens=True))
            if per_prompt != params.n:
                texts, counts = texts * params.n, counts * params.n
            result.append(Generation(texts=texts, output_tokens=counts, ttft_s=ttft, tpot_s=tpot))
        return result
