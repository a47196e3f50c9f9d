"""The demo's load generator: real requests through the gateway with the `openai` client.

Simulated users (one route key each: the request's `user` field, so the registry's A/B
router keeps a user on one version) ask production problems; every request carries its
problem's tests (`extra_body={"lorafleet": {"tests": [...]}}`), so the gateway judges the
answer in the sandbox and publishes the `production.outcome` the registry counts and the
collector pools. Nothing here decides or draws a success: the client only sends, and
records what the gateway's headers say (which version and arm answered) and its own latency.

A backend that stays down (connection refused, 502/503/504 for `down_after` requests in a
row) raises `BackendDown`: the demo stops instead of sending into the void.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lorafleet.demo.production import MAX_TOKENS, TEMPERATURE
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.problems import Problem
from lorafleet.shared.prompts import render_messages


class BackendDown(LorafleetError):
    """The gateway (or every backend behind it) stopped answering."""


@dataclass
class LoadStats:
    sent: int = 0
    answered: int = 0
    errors: int = 0
    by_arm: dict[str, int] = field(default_factory=dict)  # "candidate v2" -> answered requests
    latency_ms: list[float] = field(default_factory=list)  # client-side, per answered request
    last_error: str | None = None


def request_body(problem: Problem, *, temperature: float, max_tokens: int, seed: int) -> dict:
    """The OpenAI chat request of one production problem (keyword arguments of
    `chat.completions.create`), with the tests for the gateway to judge against."""
    return {
        "messages": render_messages(problem.statement, starter_code=problem.starter_code),
        "temperature": temperature,
        "max_tokens": max_tokens,
        "n": 1,
        "seed": seed,
        "extra_body": {"lorafleet": {"tests": [t.model_dump(mode="json", exclude_none=True) for t in problem.tests]}},
    }


@dataclass
class LoadGenerator:
    base_url: str  # the gateway's OpenAI base URL, e.g. http://127.0.0.1:8400/v1
    model: str  # the adapter name: the gateway routes it by the registry's A/B test
    problems: Sequence[Problem]
    # Route keys drawn per request. Production has far more users than requests in a test, so each
    # request's arm is an independent draw, as the registry's sample-ratio test assumes; with 400
    # users the outcomes cluster by user, and a 0.457 share of 1,800 outcomes (400 users hashed
    # 183/217) tripped that test and stopped v2's A/B test in the demo (docs/notes/issue-18.md).
    users: int = 1_000_000
    concurrency: int = 4
    temperature: float = TEMPERATURE
    max_tokens: int = MAX_TOKENS
    seed: int = 0
    api_key: str = "lorafleet-demo"
    down_after: int = 8  # consecutive connection failures / 5xx from the gateway
    timeout_s: float = 60.0
    stats: LoadStats = field(default_factory=LoadStats)

    async def run(self, stop: asyncio.Event, max_requests: int | None = None) -> LoadStats:
        """Send until `stop` is set (or max_requests); raises BackendDown."""
        from openai import AsyncOpenAI

        if not self.problems:
            raise LorafleetError("load generator: no problems to ask")
        rng = random.Random(self.seed)
        client = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=0)
        failures = [0]
        counter = iter(range(10**12))

        async def worker() -> None:
            while not stop.is_set():
                i = next(counter)
                if max_requests is not None and i >= max_requests:
                    return
                user = f"user-{rng.randrange(self.users)}"
                problem = rng.choice(self.problems)
                await self._one(client, user, problem, i, failures)

        try:
            workers = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        finally:
            await client.close()
        return self.stats

    async def _one(self, client, user: str, problem: Problem, i: int, failures: list[int]) -> None:
        import openai

        body = request_body(problem, temperature=self.temperature, max_tokens=self.max_tokens,
                            seed=self.seed * 1_000_003 + i)
        self.stats.sent += 1
        started = time.perf_counter()
        try:
            raw = await client.chat.completions.with_raw_response.create(model=self.model, user=user, **body)
        except (openai.APIConnectionError, openai.InternalServerError, openai.APITimeoutError) as exc:
            self._failed(exc, failures)
            await asyncio.sleep(0.5)
            return
        except openai.APIStatusError as exc:
            if exc.status_code in (502, 503, 504):
                self._failed(exc, failures)
                await asyncio.sleep(0.5)
                return
            raise LorafleetError(f"the gateway refused a demo request ({exc.status_code}): {exc.message}") from exc
        failures[0] = 0
        self.stats.answered += 1
        self.stats.latency_ms.append((time.perf_counter() - started) * 1000.0)
        arm, version = raw.headers.get("x-lorafleet-arm"), raw.headers.get("x-lorafleet-version")
        key = f"{arm or '?'} v{version}" if version is not None else "unrouted"
        self.stats.by_arm[key] = self.stats.by_arm.get(key, 0) + 1

    def _failed(self, exc: Exception, failures: list[int]) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        failures[0] += 1
        if failures[0] >= self.down_after:
            raise BackendDown(f"the gateway at {self.base_url} failed {failures[0]} requests in a row "
                              f"(last: {self.stats.last_error}): its backend is down")
