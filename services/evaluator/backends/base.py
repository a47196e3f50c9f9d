"""The one interface every generation backend implements."""

from __future__ import annotations

from typing import Protocol

from lorafleet.services.evaluator.models import GenRequest, Generation, SamplingParams, Variant
from lorafleet.shared.errors import RetriableError


class BackendError(RetriableError):
    """Generation failed after the backend's own retries (endpoint down, out of memory)."""


class Backend(Protocol):
    """Samples completions from the base model or the base + adapter.

    `generate` returns one Generation per request, in order, each with
    `params.n` texts. The same request seeds for base and adapter give both the
    same random stream where the backend supports seeding.
    """

    name: str

    async def generate(self, requests: list[GenRequest], variant: Variant, params: SamplingParams) -> list[Generation]: ...

    async def aclose(self) -> None: ...
