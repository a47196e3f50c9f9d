"""Gateway settings (`LORAFLEET_GATEWAY_*` env vars)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing import Annotated


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAFLEET_GATEWAY_", extra="ignore")

    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8400, ge=0, le=65535, description="listen port (0 = any free port)")
    backends: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated OpenAI base URLs, e.g. http://127.0.0.1:8000/v1")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated; when set, /v1/* needs Authorization: Bearer <key>")
    adapter_dir: Path | None = Field(None, description="where adapters are materialised (default <data_dir>/gateway/adapters); "
                                     "the backends must see the same path")
    spool_dir: Path | None = Field(None, description="unpublished outcomes (default <data_dir>/gateway/spool)")
    spool_max: int = Field(100_000, ge=1, description="outcomes the spool holds at most")
    judge_workers: int = Field(2, ge=1, le=256, description="sandbox workers judging attached tests")
    judge_queue: int = Field(1000, ge=1, description="requests waiting to be judged at most")
    outcome_wait_s: float = Field(600.0, gt=0, description="how long a request without tests waits for feedback")
    pending_max: int = Field(100_000, ge=1, description="requests awaiting feedback kept at most (oldest dropped)")
    backend_retry_s: float = Field(2.0, gt=0, description="a failed backend is skipped this long")
    request_timeout_s: float = Field(600.0, gt=0, description="a backend call longer than this is a 504")
    reconcile_s: float = Field(5.0, gt=0, description="how often loaded adapters are checked against the routes")
    publish_timeout_s: float = Field(2.0, gt=0, description="wait this long for JetStream's ack before spooling")
    feedback_forward_s: float = Field(0.5, gt=0, description="wait this long for another replica to take feedback")

    @field_validator("backends", "api_keys", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("backends")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        out = []
        for url in value:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"backend {url!r} is not an http(s) URL: use e.g. http://127.0.0.1:8000/v1")
            out.append(url.rstrip("/"))
        return out


def get_gateway_settings(**overrides: object) -> GatewaySettings:
    """Settings from the environment; a bad value becomes a ConfigError naming the variable."""
    from pydantic import ValidationError

    from lorafleet.shared.errors import ConfigError

    try:
        return GatewaySettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"LORAFLEET_GATEWAY_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad gateway setting: {problems}") from None
