"""An OpenAI-compatible `/v1/chat/completions` client built to survive a long run.

One aiohttp connection pool, at most `concurrency` requests in flight, a timeout
per request, and retries with exponential backoff + full jitter on 429, 5xx,
timeouts and dropped connections (a `Retry-After` header wins over the backoff
when it asks for longer). What retrying can't fix fails fast with an error that
names the endpoint: a bad API key, a model the server doesn't serve, an
endpoint that doesn't answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from lorafleet.shared.errors import LorafleetError, RetriableError

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 600.0  # a server asking for more than this is treated as down


class EndpointError(LorafleetError):
    """The endpoint can't serve this run at all (auth, unknown model): retrying won't help."""


class EndpointDown(LorafleetError, RetriableError):
    """The endpoint doesn't answer (refused, timed out, 5xx through every retry): try again later."""


class RequestFailed(Exception):
    """One request failed after its retries (or with a non-retriable 4xx); the run goes on."""

    def __init__(self, reason: str, detail: str, endpoint_down: bool = False):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.endpoint_down = endpoint_down


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def count_retry(self, reason: str) -> None:
        self.retries += 1
        self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1


def chat_url(endpoint: str) -> str:
    """`http://h:8000`, `http://h:8000/`, `http://h:8000/v1` all mean the same server."""
    return _v1_base(endpoint) + "/chat/completions"


def _v1_base(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    if base.endswith("/chat/completions"):
        base = base[: -len("/chat/completions")]
    return base if base.endswith("/v1") else base + "/v1"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff; a Retry-After asking for longer is honoured."""
    cap = min(max_s, base_s * (2**attempt))
    delay = (rng or random).uniform(0.0, cap)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300]
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err)[:300]


def _is_unknown_model(status: int, message: str) -> bool:
    text = message.lower()
    return status in (400, 404) and "model" in text and any(
        w in text for w in ("not found", "does not exist", "unknown", "not exist", "no such", "invalid model")
    )


class ChatClient:
    """Use as `async with ChatClient(...) as client: await client.complete(messages)`."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        seed: int | None = None,
    ):
        self.endpoint = endpoint
        self.model = model
        self.url = chat_url(endpoint)
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.stats = ClientStats()
        self._rng = random.Random(seed)
        self._sem = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._checked: asyncio.Task | None = None
        self.last_success = 0.0  # monotonic time of the last answered request

    async def __aenter__(self) -> "ChatClient":
        headers = {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers=headers,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("ChatClient used outside `async with`")
        return self._session

    def _where(self) -> str:
        return f"endpoint {self.endpoint} (model {self.model!r})"

    async def check(self) -> None:
        """Fail fast before a long run: endpoint answers, key accepted, model served.

        Uses GET /v1/models; servers without it (404/405) are checked by the first request instead.
        """
        url = _v1_base(self.endpoint) + "/models"
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=min(self.timeout_s, 30.0))) as resp:
                body = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise EndpointDown(
                f"enrich endpoint {self.endpoint} does not answer ({type(exc).__name__}: {exc or 'timeout'}): "
                "check the URL and that the server is running"
            ) from None
        if status in (401, 403):
            raise EndpointError(
                f"enrich endpoint {self.endpoint} refused the API key (HTTP {status}: {_error_message(body)}): "
                "set the key in the env variable named by enrich.api_key_env"
            )
        if status in (404, 405) or status >= 500:
            return
        if status != 200:
            raise EndpointError(f"enrich endpoint {self.endpoint}: GET {url} answered HTTP {status}: {_error_message(body)}")
        try:
            served = [m.get("id") for m in json.loads(body).get("data", [])]
        except (ValueError, AttributeError):
            return
        if served and self.model not in served:
            raise EndpointError(
                f"enrich endpoint {self.endpoint} does not serve model {self.model!r}; it serves {served}: "
                "set enrich.model (or --model) to one of them"
            )

    async def alive(self) -> bool:
        """Does the server answer at all (any HTTP status below 500 on GET /v1/models)?

        Tells "this prompt keeps failing" apart from "the endpoint is down" when one
        request exhausted its retries and nothing else succeeded meanwhile.
        """
        try:
            async with self.session.get(_v1_base(self.endpoint) + "/models", timeout=aiohttp.ClientTimeout(total=min(self.timeout_s, 10.0))) as resp:
                return resp.status < 500
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    async def ensure_checked(self) -> None:
        """`check()` once, before the first request (a run served wholly from the cache never needs the endpoint)."""
        if self._checked is None:
            self._checked = asyncio.ensure_future(self.check())
            self._checked.add_done_callback(lambda t: t.cancelled() or t.exception())  # waiters re-raise it
        await asyncio.shield(self._checked)

    async def complete(self, messages: list[dict[str, str]], **params: Any) -> Completion:
        """One chat completion with retries. Raises EndpointError (fatal) or RequestFailed (this request only)."""
        await self.ensure_checked()
        payload = {"model": self.model, "messages": messages, **params}
        started = time.monotonic()
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                async with self._sem:
                    self.stats.requests += 1
                    async with self.session.post(self.url, json=payload) as resp:
                        body = await resp.text()
                        status = resp.status
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if status == 200:
                    completion = self._parse(body)
                    self.last_success = time.monotonic()
                    return completion
                message = _error_message(body)
                if status in (401, 403):
                    raise EndpointError(
                        f"{self._where()} refused the API key (HTTP {status}: {message}): "
                        "set the key in the env variable named by enrich.api_key_env"
                    )
                if _is_unknown_model(status, message):
                    raise EndpointError(f"{self._where()}: the server does not know this model (HTTP {status}: {message})")
                if status in (404, 405):
                    raise EndpointError(
                        f"{self._where()}: POST {self.url} answered HTTP {status} ({message}): "
                        "the endpoint should be the server's OpenAI-compatible base URL, e.g. http://host:8000/v1"
                    )
                if status not in RETRY_STATUSES:
                    raise RequestFailed(f"http_{status}", message)
                reason = f"http_{status}"
                detail = f"HTTP {status}: {message}"
            except (asyncio.TimeoutError, TimeoutError):
                reason, detail = "timeout", f"no answer within {self.timeout_s:g} s"
            except aiohttp.ClientPayloadError as exc:
                reason, detail = "dropped", f"{type(exc).__name__}: {exc}"
            except (aiohttp.ClientConnectionError, ConnectionError) as exc:
                reason, detail = "connection", f"{type(exc).__name__}: {exc}"
            except _BadAnswer as exc:
                reason, detail = "bad_answer", str(exc)
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                attempt = self.max_retries  # don't sleep for hours: give up on this one now
            if attempt >= self.max_retries:
                down = self.last_success < started  # nothing answered during this request's whole retry window
                raise RequestFailed(reason, f"{detail} (after {attempt + 1} attempts)", endpoint_down=down)
            self.stats.count_retry(reason)
            await asyncio.sleep(backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s, retry_after, self._rng))
            attempt += 1

    def _parse(self, body: str) -> Completion:
        try:
            data = json.loads(body)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            finish = choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise _BadAnswer(f"not a chat-completions answer ({type(exc).__name__}: {body[:200]!r})") from None
        usage = data.get("usage") or {}
        self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.stats.completion_tokens += int(usage.get("completion_tokens") or 0)
        return Completion(text=text, finish_reason=finish, usage={k: int(v) for k, v in usage.items() if isinstance(v, int)})


class _BadAnswer(Exception):
    """A 200 whose body isn't a chat completion (a proxy's HTML page, a cut body): retried."""
