"""Any OpenAI-compatible chat-completions server (vLLM serve --enable-lora in
production): the adapter is addressed by its model name, `n` samples per
request, streamed so time to first token and per-token time are measured.

Bounded concurrency (a semaphore), a per-request timeout, and retries with
exponential backoff and jitter on 429, 5xx, timeouts and dropped connections
(Retry-After is honoured). Other 4xx mean the request itself is wrong (unknown
model, adapter not loaded) and fail at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from typing import Any

import aiohttp

from lorafleet.services.evaluator.backends.base import BackendError
from lorafleet.services.evaluator.models import GenRequest, Generation, SamplingParams, Variant
from lorafleet.shared.errors import LorafleetError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointRequestError(LorafleetError):
    """The server rejected the request (4xx other than 429): retrying won't help."""


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def load_error(url: str, name: str, path: str, status: int, text: str) -> str:
    """A failed /v1/load_lora_adapter, said with the setting that fixes it."""
    rank = re.search(r"LoRA rank (\d+) is greater than max_lora_rank (\d+)", text)
    if rank:
        return (f"adapter {name!r} ({path}): its LoRA rank {rank[1]} is above the server's max_lora_rank {rank[2]}: "
                f"restart the server with --max-lora-rank {rank[1]} or larger "
                f"(`lorafleet model serve --engine vllm --max-lora-rank ...`)")
    if status == 404 and "no adapter found" in text.lower():
        return (f"adapter {name!r}: the server found no adapter at {path}: the path is read by the server, so it must "
                "exist on the server's machine and hold adapter_config.json")
    if status == 404:
        return (f"POST {url} is not there (HTTP 404): start vLLM with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (`lorafleet model serve --engine vllm` does)")
    return (f"POST {url} for adapter {name!r} failed with HTTP {status}: {text[:300]} "
            "(start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")


def _retry_after(headers: Any) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        endpoint: str,
        base_model: str,
        adapter_model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ):
        self.endpoint = endpoint.rstrip("/")
        self.base_model = base_model
        self.adapter_model = adapter_model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 10.0))
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._concurrency = concurrency
        self._sem: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self.retries = 0  # how many retries this backend needed (reported)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
            self._sem = asyncio.Semaphore(self._concurrency)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def load_adapter(self, name: str, path: str) -> None:
        """vLLM runtime loading (server started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=1, as
        `lorafleet model serve --engine vllm` does). vLLM's errors are turned into the setting to change."""
        url = self.endpoint + "/load_lora_adapter"
        async with self._client().post(url, json={"lora_name": name, "lora_path": path}) as resp:
            text = await resp.text()
            if resp.status == 200 or (resp.status == 400 and "already" in text.lower()):
                return
            raise EndpointRequestError(load_error(url, name, path, resp.status, text))

    async def generate(self, requests: list[GenRequest], variant: Variant, params: SamplingParams) -> list[Generation]:
        if variant == "adapter":
            if not self.adapter_model:
                raise LorafleetError("openai backend: no adapter model name given for the adapter run")
            model = self.adapter_model
        else:
            model = self.base_model
        return list(await asyncio.gather(*(self._request(r, model, params) for r in requests)))

    def _body(self, req: GenRequest, model: str, params: SamplingParams) -> dict[str, Any]:
        return {
            "model": model,
            "messages": req.messages,
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": req.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def _request(self, req: GenRequest, model: str, params: SamplingParams) -> Generation:
        body = self._body(req, model, params)
        session = self._client()
        assert self._sem is not None
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                async with self._sem:
                    return await self._post(session, body, params.n)
            except _Retry as exc:
                last, wait = str(exc), exc.retry_after
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last, wait = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None
            if attempt == self.max_retries:
                break
            self.retries += 1
            if wait is None:
                wait = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
            await asyncio.sleep(min(wait, self.max_backoff_s))
        raise BackendError(
            f"{self.endpoint}/chat/completions for {req.problem_id} ({model}) failed after "
            f"{self.max_retries + 1} attempts; last error: {last}"
        )

    async def _post(self, session: aiohttp.ClientSession, body: dict[str, Any], n: int) -> Generation:
        url = self.endpoint + "/chat/completions"
        start = time.perf_counter()
        async with session.post(url, json=body) as resp:
            if resp.status in RETRY_STATUS:
                raise _Retry(f"HTTP {resp.status}: {(await resp.text())[:200]}", _retry_after(resp.headers))
            if resp.status != 200:
                raise EndpointRequestError(f"POST {url} (model {body['model']!r}) failed with HTTP {resp.status}: "
                                           f"{(await resp.text())[:300]}")
            if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                return self._parse_json(await resp.json(), n, time.perf_counter() - start)
            return await self._parse_stream(resp, n, start)

    @staticmethod
    def _parse_json(data: dict[str, Any], n: int, elapsed: float) -> Generation:
        texts = [""] * n
        for choice in data.get("choices", []):
            texts[choice["index"]] = (choice.get("message") or {}).get("content") or ""
        tokens = (data.get("usage") or {}).get("completion_tokens")
        per = [tokens // n] * n if tokens else [0] * n
        return Generation(texts=texts, output_tokens=per, ttft_s=elapsed, tpot_s=None)

    @staticmethod
    async def _parse_stream(resp: aiohttp.ClientResponse, n: int, start: float) -> Generation:
        texts = [[] for _ in range(n)]
        counts = [0] * n
        first: list[float | None] = [None] * n
        last: list[float | None] = [None] * n
        done = False
        async for raw in resp.content:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            chunk = json.loads(payload)
            now = time.perf_counter()
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    i = choice["index"]
                    texts[i].append(piece)
                    counts[i] += 1  # servers like vLLM send one token per chunk
                    first[i] = first[i] if first[i] is not None else now
                    last[i] = now
        if not done:
            raise _Retry("stream ended before [DONE]")
        firsts = [f for f in first if f is not None]
        per_token = [(l - f) / (c - 1) for f, l, c in zip(first, last, counts) if f is not None and l is not None and c > 1]
        return Generation(
            texts=["".join(t) for t in texts],
            output_tokens=counts,
            ttft_s=(min(firsts) - start) if firsts else None,
            tpot_s=(sum(per_token) / len(per_token)) if per_token else None,
        )
