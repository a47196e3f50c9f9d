"""The gateway's pure core: request validation, route keys, backend choice, the outcome rule,
the feedback table. No I/O: data in, data (or an ApiError) out.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from pydantic import ValidationError

from lorafleet.shared.events import ProductionOutcome
from lorafleet.shared.problems import Limits, TestCase
from lorafleet.shared.prompts import extract_code

MAX_TESTS = 200
MAX_N = 128
FAILED_BY_PROGRAM = {"wrong_answer", "runtime_error", "time_limit", "memory_limit", "output_limit", "no_code"}


class ApiError(Exception):
    """An OpenAI-style error: status, message, type, the offending parameter, extra headers."""

    def __init__(self, status: int, message: str, *, param: str | None = None, type: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type or {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                             409: "conflict_error", 503: "service_unavailable"}.get(status, "api_error")
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Parsed:
    """A validated request: what to forward and what the outcome needs."""

    kind: Literal["chat", "completion"]
    model: str
    body: dict[str, Any]  # forwarded to the backend (without the `lorafleet` field)
    stream: bool
    n: int
    user: str | None
    problem: str
    tests: list[TestCase] | None = None
    limits: Limits | None = None


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc}): send a JSON object such as "
                            '{"model": "python-lora", "messages": [{"role": "user", "content": "..."}]}') from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "`model` is required: the adapter to use, e.g. \"python-lora\" (GET /v1/models lists them)",
                       param="model")
    return model


def _sampling(body: dict[str, Any]) -> int:
    """Check the sampling fields the gateway relies on; returns n."""

    def number(key: str, lo: float, hi: float, integer: bool) -> None:
        value = body.get(key)
        if value is None:
            return
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (not integer or float(value).is_integer())
        if not ok or not lo <= value <= hi:
            kind = "an integer" if integer else "a number"
            raise ApiError(400, f"`{key}` must be {kind} between {lo:g} and {hi:g}, got {value!r}", param=key)

    number("n", 1, MAX_N, True)
    number("temperature", 0, 2, False)
    number("top_p", 0, 1, False)
    number("max_tokens", 1, 1 << 24, True)
    number("max_completion_tokens", 1, 1 << 24, True)
    number("seed", -(1 << 63), (1 << 64) - 1, True)
    for key in ("stream",):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise ApiError(400, f"`{key}` must be true or false, got {body[key]!r}", param=key)
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise ApiError(400, f"`user` must be a string (it is the route key), got {body['user']!r}", param="user")
    return int(body.get("n") or 1)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def parse_chat(body: dict[str, Any]) -> Parsed:
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` is required: a non-empty list of {\"role\", \"content\"} objects", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"`messages[{i}]` must be an object with a string `role`", param=f"messages[{i}]")
        if not (m.get("content") is None or isinstance(m["content"], (str, list))):
            raise ApiError(400, f"`messages[{i}].content` must be a string or a list of content parts",
                           param=f"messages[{i}].content")
    n = _sampling(body)
    users = [m for m in messages if m["role"] == "user"]
    problem = _text(users[-1].get("content")) if users else ""
    tests, limits, forward = _lorafleet(body)
    return Parsed("chat", model, forward, bool(body.get("stream")), n, body.get("user"), problem, tests, limits)


def parse_completion(body: dict[str, Any]) -> Parsed:
    model = _model(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(400, "`prompt` is required: one non-empty string", param="prompt")
    n = _sampling(body)
    tests, limits, forward = _lorafleet(body)
    forward["prompt"] = prompt
    return Parsed("completion", model, forward, bool(body.get("stream")), n, body.get("user"), prompt, tests, limits)


def _lorafleet(body: dict[str, Any]) -> tuple[list[TestCase] | None, Limits | None, dict[str, Any]]:
    forward = {k: v for k, v in body.items() if k != "lorafleet"}
    extra = body.get("lorafleet")
    if extra is None:
        return None, None, forward
    if not isinstance(extra, dict):
        raise ApiError(400, "`lorafleet` must be an object such as {\"tests\": [...]}", param="lorafleet")
    unknown = sorted(set(extra) - {"tests", "limits"})
    if unknown:
        raise ApiError(400, f"`lorafleet` has unknown field(s) {', '.join(unknown)}: it takes `tests` and `limits`",
                       param="lorafleet")
    limits = None
    if extra.get("limits") is not None:
        try:
            limits = Limits.model_validate(extra["limits"])
        except ValidationError as exc:
            raise ApiError(400, f"`lorafleet.limits` is invalid: {_first_error(exc)}; expected "
                                '{"time_s": 4.0, "memory_mb": 512}', param="lorafleet.limits") from None
    raw = extra.get("tests")
    if raw is None:
        return None, limits, forward
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "`lorafleet.tests` must be a non-empty list of tests", param="lorafleet.tests")
    if len(raw) > MAX_TESTS:
        raise ApiError(400, f"`lorafleet.tests` has {len(raw)} tests; at most {MAX_TESTS} are judged per request",
                       param="lorafleet.tests")
    return [check_test(i, t) for i, t in enumerate(raw)], limits, forward


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def check_test(i: int, raw: Any) -> TestCase:
    """One TestCase, complete for its kind, or a 400 naming `lorafleet.tests[i]` and the fix."""
    param = f"lorafleet.tests[{i}]"
    forms = ('{"kind": "stdio", "input": "1\\n", "output": "2\\n"}, {"kind": "call", "fn_name": "f", "args": [1], '
             '"expected": 2} or {"kind": "assert", "script": "assert f(1) == 2"}')
    try:
        test = TestCase.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(400, f"`{param}` is not a valid test ({_first_error(exc)}); use {forms}", param=param) from None
    missing = {
        "stdio": [k for k in ("input", "output") if getattr(test, k) is None],
        "call": [k for k in ("fn_name", "args") if not getattr(test, k) and getattr(test, k) != []],
        "assert": ["script"] if not (test.script or "").strip() else [],
    }[test.kind]
    if missing:
        raise ApiError(400, f"`{param}` is a {test.kind!r} test without {' and '.join(missing)}; use {forms}", param=param)
    if test.kind == "call" and not isinstance(raw.get("fn_name"), str):
        raise ApiError(400, f"`{param}.fn_name` must be a string", param=param)
    return test


def route_key(user: str | None, header: str | None, request_id: str) -> str:
    """The body's `user`, else the x-lorafleet-route-key header, else the request id."""
    for key in (user, header):
        if key and key.strip():
            return key
    return request_id


def lora_name(adapter: str, version: int) -> str:
    """The name a version is loaded under on a backend (registry names can't contain ':')."""
    return f"{adapter}:v{version}"


def unknown_model(model: str, adapters: Iterable[str], bases: Iterable[str]) -> ApiError:
    adapters, bases = sorted(adapters), sorted(bases)
    listing = ", ".join(adapters) or "none registered yet"
    return ApiError(404, f"The model `{model}` does not exist. Adapters: {listing}; base models: "
                         f"{', '.join(bases) or 'none (no backend up)'}", param="model", code="model_not_found")


NOLORA = "@nolora"  # `lorafleet model serve --engine vllm`: the raw base's name suffix (shared/vllm_server.py)


def base_model_of(models: dict[str, Any]) -> list[str]:
    """Base model ids from a backend's GET /v1/models answer: entries without a parent, and, first, a
    base served through a zero adapter under its own name (`lorafleet model serve --engine vllm` lists
    it as an adapter whose parent is `<name>@nolora`). Base traffic must go to that one: vLLM applies a
    LoRA slot to raw-base requests batched with adapter requests."""
    entries = [e for e in models.get("data") or [] if isinstance(e, dict) and isinstance(e.get("id"), str)]
    through_zero = [e["id"] for e in entries if e.get("parent") == e["id"] + NOLORA]
    return through_zero + [e["id"] for e in entries if not e.get("parent")]


def base_for(preferred: Iterable[str | None], served: Sequence[str]) -> str | None:
    """The backend model that serves the base arm: a name the registry gave (serve_base_model,
    base_model) if the backend serves it, else the backend's (first) base model."""
    for name in preferred:
        if name and name in served:
            return name
    return served[0] if served else None


# --------------------------------------------------------------------------- backends


@dataclass
class BackendState:
    url: str
    in_flight: int = 0
    dead_until: float = 0.0  # monotonic time; 0 = healthy
    failures: int = 0
    bases: list[str] = field(default_factory=list)


def choose_backend(backends: Sequence[BackendState], now: float, exclude: Iterable[str] = (), turn: int = 0) -> BackendState | None:
    """The live backend with the fewest requests in flight; ties go round-robin by `turn`.

    A dead backend is skipped until its retry time has come; then it is tried again."""
    excluded = set(exclude)
    n = len(backends)
    best, best_key = None, None
    for i, b in enumerate(backends):
        if b.url in excluded or b.dead_until > now:
            continue
        key = (b.in_flight, (i - turn) % n)
        if best_key is None or key < best_key:
            best, best_key = b, key
    return best


def retry_after(backends: Sequence[BackendState], now: float, default: float) -> int:
    """Seconds until the first dead backend is tried again (for a 503's Retry-After)."""
    waits = [b.dead_until - now for b in backends if b.dead_until > now]
    return max(1, math.ceil(min(waits) if waits else default))


def to_unload(loaded: Iterable[tuple[str, int]], routable: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    """Loaded (adapter, version) pairs no route leads to any more (retired, rolled back, deleted)."""
    return set(loaded) - set(routable)


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class ChoiceResult:
    """One choice, judged: verdict is the sandbox's, or "no_code" when the answer had no program."""

    verdict: str
    passed: int
    total: int


def judged_outcome(results: Sequence[ChoiceResult]) -> tuple[bool, float, int]:
    """(success, confidence, index of the choice that speaks for the request). See docs/gateway.md.

    success: some choice passed every test; that choice is chosen, else choice 0.
    confidence: success with T tests -> 1 - 2**-T; failure by the program -> 1.0;
    the sandbox itself failed -> 0.0 (no evidence either way).
    """
    for i, r in enumerate(results):
        if r.total > 0 and r.passed == r.total and r.verdict == "passed":
            return True, 1.0 - 2.0 ** -r.total, i
    first = results[0]
    return False, (1.0 if first.verdict in FAILED_BY_PROGRAM else 0.0), 0


@dataclass
class Pending:
    """A served, routed request waiting for its outcome."""

    request_id: str
    adapter: str
    version: int
    route_key: str
    latency_ms: float
    problem: str
    answer: bytes  # the backend's answer as relayed (JSON, or the SSE stream): parsed only when needed
    tests: list[TestCase] | None
    created: float  # monotonic
    kind: Literal["chat", "completion"] = "chat"
    streamed: bool = False
    n: int = 1
    state: Literal["waiting", "judging", "done"] = "waiting"
    _texts: list[str] | None = field(default=None, repr=False)

    @property
    def texts(self) -> list[str]:
        """The answer's text per choice."""
        if self._texts is None:
            self._texts = texts_of(self.kind, self.streamed, self.answer, self.n)
        return self._texts

    def outcome(self, success: bool, confidence: float, choice: int = 0) -> ProductionOutcome:
        solution = extract_code(self.texts[choice]) if choice < len(self.texts) else None
        return ProductionOutcome(
            event_id=self.request_id, request_id=self.request_id, adapter_name=self.adapter, version=self.version,
            request_key=self.route_key, success=success, confidence=confidence, latency_ms=round(self.latency_ms, 3),
            problem=self.problem or None, solution=solution,
            tests=[t.model_dump(exclude_none=True) for t in self.tests] if self.tests else None,
        )


def error_outcome(request_id: str, adapter: str, version: int, route_key: str, latency_ms: float) -> ProductionOutcome:
    """A routed request that serving failed (a backend's 5xx, a timeout, no backend up, a broken
    stream): counted by the A/B test as a failure and by its error-rate guardrail. Confidence 0:
    it says nothing about the adapter's answers, so the collector never pools it."""
    return ProductionOutcome(event_id=request_id, request_id=request_id, adapter_name=adapter, version=version,
                             request_key=route_key, success=False, confidence=0.0, latency_ms=round(latency_ms, 3),
                             error=True)


def serving_failed(status: int, answer: bytes | None) -> bool:
    """Whether a routed request with this final status and relayed answer failed on the serving side:
    5xx, or a 200 stream that broke (no answer); a 4xx is the client's request, not an error."""
    return status >= 500 or (status == 200 and answer is None)


class FeedbackError(ApiError):
    pass


class PendingTable:
    """Requests awaiting an outcome, oldest first, bounded; expiry by `wait_s` (time passed in)."""

    def __init__(self, wait_s: float, max_entries: int) -> None:
        self.wait_s = wait_s
        self.max_entries = max_entries
        self.entries: OrderedDict[str, Pending] = OrderedDict()
        self.expired = 0
        self.evicted = 0

    def add(self, entry: Pending) -> None:
        self.entries[entry.request_id] = entry
        while len(self.entries) > self.max_entries:
            _, old = self.entries.popitem(last=False)
            self.evicted += old.state == "waiting"

    def expire(self, now: float) -> list[Pending]:
        gone = []
        while self.entries:
            entry = next(iter(self.entries.values()))
            if entry.state == "judging" or now - entry.created < self.wait_s:
                break
            self.entries.popitem(last=False)
            self.expired += entry.state == "waiting"
            gone.append(entry)
        return gone

    def take_feedback(self, request_id: str, now: float) -> Pending:
        """The entry to publish feedback for (marked done), or 404 / 409."""
        entry = self.entries.get(request_id)
        if entry is None or (entry.state == "waiting" and now - entry.created >= self.wait_s):
            raise FeedbackError(404, f"request {request_id!r} is unknown here: never served by this gateway, served "
                                     "without routing (a base model), or older than the feedback window",
                                param="request_id")
        if entry.state != "waiting":
            how = "is judged from its tests" if entry.tests else "already has its feedback"
            raise FeedbackError(409, f"request {request_id!r} {how}: an outcome is recorded once", param="request_id")
        entry.state = "done"
        return entry


def parse_feedback(body: dict[str, Any]) -> tuple[str, bool, float]:
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise ApiError(400, "`request_id` is required: the x-request-id header of the response", param="request_id")
    success = body.get("success")
    if not isinstance(success, bool):
        raise ApiError(400, "`success` is required: true or false", param="success")
    confidence = body.get("confidence", 1.0)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 <= confidence <= 1.0:
        raise ApiError(400, f"`confidence` must be a number between 0 and 1, got {confidence!r}", param="confidence")
    return request_id, success, float(confidence)


# --------------------------------------------------------------------------- spool


def spool_name(event_id: str) -> str:
    """File name of a spooled outcome: its id (a uuid; anything else is made safe)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in event_id)
    return f"{safe}.json"


def spool_admit(held: set[str], name: str, max_entries: int) -> Literal["have", "full", "add"]:
    """Whether an outcome goes into the spool: already there (its id), no room, or add it."""
    if name in held:
        return "have"
    return "full" if len(held) >= max_entries else "add"


# --------------------------------------------------------------------------- answers


def texts_of(kind: str, streamed: bool, raw: bytes, n: int) -> list[str]:
    """The text per choice of a relayed answer (a JSON body, or an SSE stream)."""
    if streamed:
        stream = StreamText(kind)
        stream.feed(raw)
        return stream.texts(n)
    try:
        return answer_texts(kind, json.loads(raw))
    except (ValueError, AttributeError):
        return []


def answer_texts(kind: str, response: dict[str, Any]) -> list[str]:
    """The text of each choice of a (non-streamed) backend answer, in index order."""
    choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
    if kind == "chat":
        return [_text((c.get("message") or {}).get("content")) for c in choices]
    return [c.get("text") or "" for c in choices]


class StreamText:
    """Accumulates the text per choice from SSE `data:` lines of a streamed answer."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.parts: dict[int, list[str]] = {}
        self._rest = b""

    def feed(self, chunk: bytes) -> None:
        data = self._rest + chunk
        lines = data.split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]" or not payload:
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            for c in event.get("choices") or []:
                piece = (c.get("delta") or {}).get("content") if self.kind == "chat" else c.get("text")
                if piece:
                    self.parts.setdefault(int(c.get("index", 0)), []).append(piece)

    def texts(self, n: int) -> list[str]:
        if self._rest:
            self.feed(b"\n")
        return ["".join(self.parts.get(i, [])) for i in range(max(n, len(self.parts)))]
