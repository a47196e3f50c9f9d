"""The inference backends: which one takes a request, and which adapter versions each has loaded.

Speaks only the OpenAI API plus vLLM's runtime LoRA endpoints (`/v1/load_lora_adapter`,
`/v1/unload_lora_adapter`), so vLLM and `lorafleet model serve` both work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp

from lorafleet.services.registry.routing import RouteTarget

from .core import ApiError, BackendState, base_model_of, choose_backend, lora_name, retry_after, to_unload

log = logging.getLogger(__name__)
CONNECT_ERRORS = (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError)


class BackendDown(Exception):
    """The backend could not be reached (the request may go to another one)."""


class Backends:
    def __init__(self, urls: list[str], session: aiohttp.ClientSession, artifacts: Any, adapter_dir: Path,
                 retry_s: float) -> None:
        self.states = [BackendState(url) for url in urls]
        self.session = session
        self.artifacts = artifacts
        self.adapter_dir = Path(adapter_dir)
        self.retry_s = retry_s
        self.loaded: dict[str, dict[str, tuple[str, int]]] = {url: {} for url in urls}  # url -> lora name -> (adapter, v)
        self._loading: dict[tuple[str, str], asyncio.Future] = {}
        self._files: dict[tuple[str, int, str], asyncio.Future] = {}
        self._turn = 0
        self.loads = 0
        self.unloads = 0

    # ------------------------------------------------------------------ choice and health

    def choose(self, exclude: set[str]) -> BackendState:
        self._turn += 1
        backend = choose_backend(self.states, time.monotonic(), exclude, self._turn)
        if backend is None:
            if not self.states:
                raise ApiError(503, "no inference backend is configured: set LORAFLEET_GATEWAY_BACKENDS to the base URLs "
                                    "of vLLM (--enable-lora) or `lorafleet model serve` servers, e.g. http://127.0.0.1:8000/v1",
                               headers={"Retry-After": "30"})
            wait = retry_after(self.states, time.monotonic(), self.retry_s)
            raise ApiError(503, f"no inference backend is up ({', '.join(s.url for s in self.states)} failed); "
                                f"retry in {wait} s", headers={"Retry-After": str(wait)})
        return backend

    def mark_dead(self, backend: BackendState, why: str) -> None:
        if backend.dead_until <= time.monotonic():
            log.warning("backend %s is down (%s): skipped for %.0f s", backend.url, why, self.retry_s)
        backend.failures += 1
        backend.dead_until = time.monotonic() + self.retry_s
        self.loaded[backend.url].clear()  # it may come back as a fresh process without our adapters

    def mark_alive(self, backend: BackendState) -> None:
        if backend.failures:
            log.info("backend %s is back", backend.url)
        backend.failures = 0
        backend.dead_until = 0.0

    async def refresh(self) -> None:
        """Ask every backend for its models (its base models; whether it is up)."""
        await asyncio.gather(*(self._refresh(b) for b in self.states))

    async def _refresh(self, backend: BackendState) -> None:
        try:
            async with self.session.get(f"{backend.url}/models", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    raise BackendDown(f"GET /models answered {resp.status}")
                body = await resp.json(content_type=None)
        except (BackendDown, ValueError, *CONNECT_ERRORS) as exc:
            self.mark_dead(backend, f"{type(exc).__name__}: {exc}")
            return
        backend.bases = base_model_of(body)
        served = {e.get("id") for e in body.get("data") or [] if isinstance(e, dict)}
        # What the backend really has (a restart empties it; another gateway replica may have loaded more).
        mine = self.loaded[backend.url]
        for name in [n for n in mine if n not in served]:
            del mine[name]
        self.mark_alive(backend)

    def bases(self) -> list[str]:
        return sorted({name for b in self.states for name in b.bases})

    # ------------------------------------------------------------------ adapters

    async def ensure_loaded(self, backend: BackendState, target: RouteTarget) -> str:
        """The backend's name for this version, loading it first if needed (one load, however many wait)."""
        name = lora_name(target.adapter_name, target.version)
        if name in self.loaded[backend.url]:
            return name
        key = (backend.url, name)
        future = self._loading.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._loading[key] = future
            try:
                await self._load(backend, target, name)
                self.loaded[backend.url][name] = (target.adapter_name, target.version)
                future.set_result(name)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
                raise
            finally:
                del self._loading[key]
            return name
        return await asyncio.shield(future)

    async def _load(self, backend: BackendState, target: RouteTarget, name: str) -> None:
        path = await self.materialise(target)
        body = {"lora_name": name, "lora_path": str(path)}
        try:
            async with self.session.post(f"{backend.url}/load_lora_adapter", json=body) as resp:
                text = await resp.text()
        except CONNECT_ERRORS as exc:
            self.mark_dead(backend, f"{type(exc).__name__}: {exc}")
            raise BackendDown(str(exc)) from exc
        if resp.status == 200:
            self.loads += 1
            log.info("loaded %s on %s from %s", name, backend.url, path)
            return
        if resp.status == 400 and "already" in text.lower():  # another gateway replica loaded it first
            return
        raise ApiError(502, f"backend {backend.url} refused to load adapter {name} ({resp.status}: {text[:300]}); "
                            "is it started with runtime LoRA loading (vLLM: --enable-lora and "
                            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=1) and does it see the gateway's adapter directory?",
                       type="backend_error")

    async def materialise(self, target: RouteTarget) -> Path:
        """The adapter's files from the artifact store (sha256 checked), once per process and version."""
        if not target.uri:
            raise ApiError(500, f"{target.adapter_name} v{target.version} has no artifact in the registry", type="api_error")
        key = (target.adapter_name, target.version, target.sha256 or "")
        future = self._files.get(key)
        if future is None:
            future = asyncio.ensure_future(self._download(target))
            self._files[key] = future
        try:
            return await asyncio.shield(future)
        except BaseException:
            if self._files.get(key) is future and future.done():
                del self._files[key]  # the next request tries again
            raise

    async def _download(self, target: RouteTarget) -> Path:
        dest = self.adapter_dir / target.adapter_name / f"v{target.version}-{(target.sha256 or 'nosha')[:12]}"
        if (dest / "adapter_config.json").is_file():
            return dest
        ref: Any = target.uri
        if target.sha256:
            from lorafleet.shared.events import ArtifactRef

            ref = ArtifactRef(uri=target.uri, sha256=target.sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        await self.artifacts.get_dir(ref, dest)  # unpacks into a temp dir, then renames
        return dest

    async def unload_retired(self, routable: set[tuple[str, int]]) -> None:
        for backend in self.states:
            mine = self.loaded[backend.url]
            for adapter, version in sorted(to_unload(mine.values(), routable)):
                name = lora_name(adapter, version)
                try:
                    async with self.session.post(f"{backend.url}/unload_lora_adapter", json={"lora_name": name}) as resp:
                        text = await resp.text()
                except CONNECT_ERRORS as exc:
                    self.mark_dead(backend, f"{type(exc).__name__}: {exc}")
                    break
                if resp.status in (200, 404):
                    mine.pop(name, None)
                    self.unloads += 1
                    log.info("unloaded %s from %s (no longer routed)", name, backend.url)
                else:
                    log.warning("unloading %s from %s failed (%d: %s)", name, backend.url, resp.status, text[:200])
