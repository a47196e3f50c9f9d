"""`lorafleet model serve`: a small OpenAI-compatible server for a local transformers model.

POST /v1/chat/completions and POST /v1/completions (n, max_tokens, temperature, top_p,
seed, stream with stream_options.include_usage; finish_reason "stop" / "length"; usage), GET
/v1/models, GET /health, and vLLM's runtime adapter endpoints POST
/v1/load_lora_adapter ({lora_name, lora_path, load_inplace}) / /v1/unload_lora_adapter,
any number of adapters at once. peft adapters are addressed by model name, like vLLM's
`--lora-modules name=path`.

It exists so the demo and the tests have a real endpoint for enrich and the
evaluator's openai backend without vLLM (which can't share this environment).
It runs one generate() at a time in one worker thread: it is for tiny models
on a laptop, not for production serving.

transformers, torch and peft are imported when the server starts, not at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from lorafleet.shared.errors import ConfigError, LorafleetError
from lorafleet.shared.processes import stop_on_signals

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
DEFAULT_MAX_TOKENS = 512


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status = status
        self.kind = kind


def parse_adapters(specs: list[str]) -> dict[str, Path]:
    """`NAME=PATH` pairs -> {name: adapter dir}; a bad spec is a ConfigError naming it and the fix."""
    adapters: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {spec!r}: expected NAME=PATH, e.g. --adapter python-lora=./adapters/python-lora/v1")
        if not _NAME.match(name):
            raise ConfigError(f"--adapter {spec!r}: the name may use letters, digits and . _ : / -")
        if name in adapters:
            raise ConfigError(f"--adapter {name!r} is given twice")
        adapters[name] = check_adapter_dir(Path(path))
    return adapters


def check_adapter_dir(path: Path) -> Path:
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"adapter directory {path} has no adapter_config.json: pass a peft adapter (save_pretrained output)")
    return path.resolve()


def resolve_model_dir(model: str) -> Path:
    """A local model directory, or tiny://pretrained / tiny://random (the project's tiny models)."""
    if model.startswith("tiny://"):
        from lorafleet.services.trainer.tiny_model import resolve_base_model

        model = resolve_base_model(model)
    path = Path(model)
    if not (path / "config.json").is_file():
        raise LorafleetError(
            f"model directory {path} has no config.json: pass a local transformers model directory "
            "(e.g. one written by `lorafleet model make-tiny`) or tiny://pretrained"
        )
    return path.resolve()


@dataclass
class Sampling:
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None


def parse_request(body: Any) -> tuple[str, list[dict[str, str]], Sampling, bool, bool]:
    """(model, messages, sampling, stream, include_usage) from a chat-completions body, or BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise BadRequest("`messages` must be a non-empty list of {role, content} with string content")
    model, sampling, stream, include_usage = _common(body)
    return model, messages, sampling, stream, include_usage


def parse_completion_request(body: Any) -> tuple[str, str, Sampling, bool, bool]:
    """(model, prompt, sampling, stream, include_usage) from a /v1/completions body, or BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("`prompt` must be one non-empty string")
    model, sampling, stream, include_usage = _common(body)
    return model, prompt, sampling, stream, include_usage


def _common(body: dict) -> tuple[str, Sampling, bool, bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required")
    if body.get("stop") not in (None, [], ""):
        raise BadRequest("`stop` is not supported by lorafleet model serve (generation ends at the end-of-turn token)")

    def number(key: str, default: float, lo: float, hi: float, kind: type = float) -> Any:
        value = body.get(key)
        if value is None:
            return kind(default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
            raise BadRequest(f"`{key}` must be a {kind.__name__}")
        if not lo <= value <= hi:
            raise BadRequest(f"`{key}` must be between {lo} and {hi}, got {value}")
        return kind(value)

    sampling = Sampling(
        n=number("n", 1, 1, 64, int),
        max_tokens=number("max_tokens", body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS, 1, 1 << 20, int),
        temperature=number("temperature", 1.0, 0.0, 2.0),
        top_p=number("top_p", 1.0, 1e-9, 1.0),
        seed=None if body.get("seed") is None else number("seed", 0, -(1 << 63), (1 << 63) - 1, int),
    )
    options = body.get("stream_options") or {}
    return model, sampling, bool(body.get("stream")), bool(options.get("include_usage"))


class _StepStreamer:
    """transformers streamer: hands each decoding step's tokens to a callback (skips the prompt)."""

    def __init__(self, on_step) -> None:
        self.on_step = on_step
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.on_step(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class LocalModel:
    """The model, its tokenizer and adapters; every method runs in the one worker thread."""

    def __init__(self, model_dir: Path, adapters: dict[str, Path], base_name: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.model_dir = model_dir
        self.base_name = base_name or model_dir.name
        self.aliases = {self.base_name, str(model_dir), model_dir.name}
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.chat_template is None:
            raise LorafleetError(f"tokenizer of {model_dir} has no chat template: /v1/chat/completions needs one")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)
        self.adapters: dict[str, Path] = {}
        self.created = int(time.time())
        for name, path in adapters.items():
            self.load_adapter(name, path)

    def names(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def load_adapter(self, name: str, path: Path, inplace: bool = False) -> None:
        from peft import PeftModel

        if name in self.aliases:
            raise BadRequest(f"adapter name {name!r} is the base model's name")
        if name in self.adapters:
            if not inplace:
                raise BadRequest(f"adapter {name!r} is already loaded; send \"load_inplace\": true to replace it")
            self.unload_adapter(name)  # vLLM's load_inplace: the same name, new weights
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name).eval()
        self.adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise BadRequest(f"adapter {name!r} is not loaded", 404, "NotFoundError")
        if len(self.adapters) == 1:
            self.model = self.model.unload()  # back to the plain base model
        else:
            self.model.delete_adapter(name)
        del self.adapters[name]

    def check_model(self, name: str) -> None:
        if name not in self.aliases and name not in self.adapters:
            raise BadRequest(f"The model `{name}` does not exist. Served: {self.names()}", 404, "NotFoundError")

    def prompt_ids(self, messages: list[dict[str, str]] | str, sampling: Sampling) -> tuple[list[int], int]:
        """The prompt's token ids (chat messages rendered with the template; a completions prompt
        as it is) and the max_tokens that fit the context."""
        text = messages if isinstance(messages, str) else \
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self.context - len(ids)
        if room < 1:
            raise BadRequest(f"the prompt is {len(ids)} tokens; this model's context is {self.context}")
        return ids, min(sampling.max_tokens, room)

    def generate(self, name: str, ids: list[int], max_tokens: int, sampling: Sampling, on_step=None) -> list[tuple[list[int], str]]:
        """n completions: (token ids without the end token, finish_reason)."""
        torch = self.torch
        tok = self.tokenizer
        eos = tok.eos_token_id
        sample = sampling.temperature > 0
        # Greedy decoding gives one answer however many are asked for (as vLLM does): decode once, copy n times.
        copies, rows = (1, sampling.n) if sample else (sampling.n, 1)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_tokens, num_return_sequences=rows, do_sample=sample,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos, eos_token_id=eos,
        )
        if sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if on_step is not None:
            kwargs["streamer"] = _StepStreamer(lambda toks: on_step(toks * copies))
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.inference_mode(), self._variant(name):
            seqs = self.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), **kwargs)
        out = []
        for row in seqs[:, len(ids):].tolist():
            if eos in row:
                out.append((row[: row.index(eos)], "stop"))
            else:
                out.append((row, "length"))
        return out * copies

    def _variant(self, name: str) -> contextlib.AbstractContextManager:
        if not self.adapters:
            return contextlib.nullcontext()
        if name in self.adapters:
            self.model.set_adapter(name)
            return contextlib.nullcontext()
        return self.model.disable_adapter()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class ModelServer:
    def __init__(self, model: LocalModel):
        self.model = model
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorafleet-serve")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_errors])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/load_lora_adapter", self.load_adapter)
        app.router.add_post("/v1/unload_lora_adapter", self.unload_adapter)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "models": self.model.names()})

    async def models(self, request: web.Request) -> web.Response:
        m = self.model
        data = [{"id": m.base_name, "object": "model", "created": m.created, "owned_by": "lorafleet", "root": str(m.model_dir), "parent": None}]
        data += [{"id": name, "object": "model", "created": m.created, "owned_by": "lorafleet", "root": str(path), "parent": m.base_name}
                 for name, path in m.adapters.items()]
        return web.json_response({"object": "list", "data": data})

    async def load_adapter(self, request: web.Request) -> web.Response:
        body = await _json(request)
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not _NAME.match(name) or not isinstance(path, str):
            raise BadRequest("expected {\"lora_name\": NAME, \"lora_path\": PATH}")
        try:
            adapter_dir = check_adapter_dir(Path(path))
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        await self._run(self.model.load_adapter, name, adapter_dir, bool(body.get("load_inplace")))
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_adapter(self, request: web.Request) -> web.Response:
        body = await _json(request)
        await self._run(self.model.unload_adapter, str(body.get("lora_name")))
        return web.Response(text=f"Success: LoRA adapter '{body.get('lora_name')}' removed successfully.")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        name, messages, sampling, stream, include_usage = parse_request(await _json(request))
        self.model.check_model(name)
        ids, max_tokens = await self._run(self.model.prompt_ids, messages, sampling)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name}
        if stream:
            return await self._stream(request, head, name, ids, max_tokens, sampling, include_usage)
        results = await self._run(self.model.generate, name, ids, max_tokens, sampling)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": self.model.decode(toks)}, "finish_reason": finish, "logprobs": None}
            for i, (toks, finish) in enumerate(results)
        ]
        return web.json_response({**head, "object": "chat.completion", "choices": choices, "usage": _usage(ids, results)})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """/v1/completions: the prompt as it is, no chat template."""
        name, prompt, sampling, stream, include_usage = parse_completion_request(await _json(request))
        self.model.check_model(name)
        ids, max_tokens = await self._run(self.model.prompt_ids, prompt, sampling)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name}
        if stream:
            return await self._stream(request, head, name, ids, max_tokens, sampling, include_usage, chat=False)
        results = await self._run(self.model.generate, name, ids, max_tokens, sampling)
        choices = [{"index": i, "text": self.model.decode(toks), "finish_reason": finish, "logprobs": None}
                   for i, (toks, finish) in enumerate(results)]
        return web.json_response({**head, "object": "text_completion", "choices": choices, "usage": _usage(ids, results)})

    async def _stream(self, request, head, name, ids, max_tokens, sampling, include_usage,
                      chat: bool = True) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        steps: asyncio.Queue = asyncio.Queue()
        job = loop.run_in_executor(
            self._executor, lambda: self.model.generate(
                name, ids, max_tokens, sampling, on_step=lambda toks: loop.call_soon_threadsafe(steps.put_nowait, toks)))
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(steps.put_nowait, None))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(choices: list[dict], usage: dict | None = None) -> None:
            if not chat:  # text_completion chunks carry `text` where chat chunks carry `delta`
                choices = [{"index": c["index"], "text": c["delta"].get("content", ""), "finish_reason": c["finish_reason"],
                            "logprobs": None} for c in choices]
            chunk = {**head, "object": "chat.completion.chunk" if chat else "text_completion", "choices": choices}
            if usage is not None:
                chunk["usage"] = usage
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        n, eos = sampling.n, self.model.tokenizer.eos_token_id
        if chat:
            await send([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for i in range(n)])
        tokens: list[list[int]] = [[] for _ in range(n)]
        sent = [""] * n
        done = [False] * n
        while (step := await steps.get()) is not None:
            for i, tok_id in enumerate(step[:n]):
                if done[i]:
                    continue
                if tok_id == eos:
                    done[i] = True
                    continue
                tokens[i].append(tok_id)
                text = self.model.decode(tokens[i])
                if text.startswith(sent[i]) and not text.endswith("\ufffd"):  # hold back half a UTF-8 character
                    piece, sent[i] = text[len(sent[i]):], text
                    if piece:
                        await send([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
        results = await job  # re-raises a generation error
        for i, (toks, finish) in enumerate(results):
            text = self.model.decode(toks)
            rest = text[len(sent[i]):] if text.startswith(sent[i]) else ""
            await send([{"index": i, "delta": {"content": rest} if rest else {}, "finish_reason": finish}])
        if include_usage:
            await send([], _usage(ids, results))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _usage(ids: list[int], results: list[tuple[list[int], str]]) -> dict[str, int]:
    completion = sum(len(toks) + (finish == "stop") for toks, finish in results)  # the end token was generated too
    return {"prompt_tokens": len(ids), "completion_tokens": completion, "total_tokens": len(ids) + completion}


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise BadRequest("the body is not valid JSON") from None


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return web.json_response({"error": {"message": str(exc), "type": exc.kind, "code": exc.status}}, status=exc.status)


async def start(server: ModelServer, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def serve_forever(model: str, adapters: dict[str, Path], host: str = "127.0.0.1", port: int = 8000,
                  base_name: str | None = None) -> None:
    """Load, listen, print the URL (`serving ... on http://host:port/v1`), run until SIGINT/SIGTERM."""
    local = LocalModel(resolve_model_dir(model), adapters, base_name)

    async def main() -> None:
        runner, bound = await start(ModelServer(local), host, port)
        print(f"serving {', '.join(local.names())} on http://{host}:{bound}/v1", flush=True)
        try:
            await stop_on_signals().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
