"""Enrich a list of examples: cache first, then the endpoint through a fixed pool of workers.

A fixed pool of `concurrency` workers walks the examples (never one task per
example: a 100k-example dataset stays flat in memory); each worker builds the
prompt, looks it up in the cache and only then asks the endpoint, so cache
lookups overlap with other workers' requests. Every answer goes to the cache as
it arrives: a run killed at any point resumes with only the missing requests.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from lorafleet.services.enrich import core
from lorafleet.services.enrich.cache import AnswerCache
from lorafleet.services.enrich.client import ChatClient, Completion, EndpointDown, RequestFailed
from lorafleet.shared.config import EnrichSection
from lorafleet.shared.errors import ConfigError
from lorafleet.shared.problems import TrainExample

Progress = Callable[[core.Stats], None]


@dataclass(frozen=True)
class Target:
    endpoint: str
    model: str
    api_key: str | None


def resolve_target(cfg: EnrichSection, env: dict[str, str] | None = None) -> Target | None:
    """Endpoint/model from the config, else from LORAFLEET_ENRICH_ENDPOINT / _MODEL; None = no endpoint (skip)."""
    env = dict(os.environ) if env is None else env
    endpoint = cfg.endpoint or env.get("LORAFLEET_ENRICH_ENDPOINT") or None
    if not endpoint:
        return None
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"enrich.endpoint {endpoint!r} is not an http(s) URL: use e.g. http://127.0.0.1:8000/v1")
    model = cfg.model or env.get("LORAFLEET_ENRICH_MODEL") or None
    if not model:
        raise ConfigError(
            f"enrich.endpoint is {endpoint} but no model is named: set enrich.model (or LORAFLEET_ENRICH_MODEL, or --model)"
        )
    return Target(endpoint=endpoint, model=model, api_key=env.get(cfg.api_key_env) or None)


def make_client(target: Target, cfg: EnrichSection) -> ChatClient:
    return ChatClient(
        target.endpoint,
        target.model,
        api_key=target.api_key,
        concurrency=cfg.concurrency,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
        backoff_base_s=cfg.backoff_base_s,
        backoff_max_s=cfg.backoff_max_s,
    )


async def enrich_examples(
    examples: list[TrainExample],
    *,
    client: ChatClient,
    cache: AnswerCache,
    cfg: EnrichSection,
    progress: Progress | None = None,
) -> tuple[list[TrainExample], core.Stats]:
    """Every example comes back exactly once, enriched, passed through, rejected or failed (see core.Stats).

    Raises EndpointError (auth / unknown model) or EndpointDown (nothing answered for a whole retry window).
    """
    stats = core.Stats()
    out: list[TrainExample | None] = [None] * len(examples)
    in_flight: dict[str, asyncio.Future] = {}  # identical prompts are asked once
    todo = iter(range(len(examples)))

    def settle(index: int, outcome: core.Outcome, reasoning: str | None = None, reason: str | None = None) -> None:
        example, used_fallback = core.apply(examples[index], outcome, reasoning, cfg.allow_fallback)
        out[index] = example
        stats.add(outcome, reason)
        stats.fallback += used_fallback
        if progress is not None:
            progress(stats)

    async def answer(request: core.Request) -> tuple[Completion, bool]:
        """(answer, came from the endpoint now); raises RequestFailed."""
        if request.key in in_flight:
            completion, _ = await asyncio.shield(in_flight[request.key])
            return completion, False
        hit = cache.get(request.key)
        if hit is not None:
            return hit, False
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception not retrieved"
        in_flight[request.key] = future
        try:
            completion = await client.complete(request.messages, **request.params)
            cache.put(request.key, client.model, completion)
            future.set_result((completion, True))
            return completion, True
        except Exception as exc:
            future.set_exception(exc)
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del in_flight[request.key]

    async def worker() -> None:
        # Cache lookups and prompt building happen here too, overlapped with other workers' requests.
        for i in todo:
            example = examples[i]
            if core.has_reasoning(example):
                settle(i, "passthrough")
                continue
            request = core.make_request(example, client.model, cfg)
            try:
                completion, fresh = await answer(request)
            except RequestFailed as exc:
                if exc.endpoint_down and not await client.alive():
                    raise EndpointDown(
                        f"enrich endpoint {client.endpoint} stopped answering ({exc}); "
                        f"{len(cache)} answers are cached, a retry resumes from there"
                    ) from None
                settle(i, "failed", reason=exc.reason)
                continue
            rejected = core.check_trace(completion.text, completion.finish_reason, example.code)
            if rejected:
                settle(i, "rejected", reason=rejected)
            else:
                settle(i, "generated" if fresh else "cached", core.clean_trace(completion.text))

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(cfg.concurrency, len(examples))))]
    flusher = asyncio.create_task(cache.flush_periodically())
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in (*tasks, flusher):
            task.cancel()
        await asyncio.gather(*tasks, flusher, return_exceptions=True)
        cache.flush()

    assert all(e is not None for e in out), "every example must settle"
    return out, stats  # type: ignore[return-value]


def run_stats(stats: core.Stats, client: ChatClient, target: Target, started: float) -> dict:
    wall = time.monotonic() - started
    s = client.stats
    return {
        **stats.to_dict(),
        "endpoint": target.endpoint,
        "model": target.model,
        "requests": s.requests,
        "retries": s.retries,
        "retry_reasons": dict(s.retry_reasons),
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "wall_s": round(wall, 3),
    }
