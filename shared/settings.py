"""Runtime settings from the environment (`LORAFLEET_*`) via pydantic-settings."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def default_cache_dir() -> Path:
    """Built things that outlive a run (tiny models, the sandbox's C engine): $LORAFLEET_CACHE_DIR."""
    return Path(os.environ.get("LORAFLEET_CACHE_DIR") or Path.home() / ".cache" / "lorafleet")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAFLEET_", extra="ignore")

    nats_url: str | None = Field(
        default=None,
        description="nats://host:port, comma-separated for a cluster; unset = start the embedded nats-server",
    )
    data_dir: Path = Field(default=Path(".lorafleet"), description="embedded server store, caches, local artifacts")
    embedded_port: int = Field(default=4222, ge=0, le=65535, description="client port of the embedded server (0 or taken = any free port)")
    artifact_backend: str = Field(default="object_store", description="object_store | local")
    artifact_bucket: str = "lorafleet-artifacts"
    artifact_dir: Path | None = Field(default=None, description="root of the local artifact backend (default: <data_dir>/artifacts)")
    stream_replicas: int = Field(default=1, ge=1, le=5, description="3 on a 3-node cluster")
    stream_max_age_days: float = Field(default=30.0, ge=0, description="how long events stay in the stream (0 = forever)")
    max_deliver: int = Field(default=5, ge=1)
    ack_wait_s: float = Field(default=60.0, gt=0)
    heartbeat_s: float | None = Field(default=None, gt=0, description="in-progress ack interval while a handler runs (default ack_wait_s / 3)")
    retry_delay_s: float = Field(default=2.0, ge=0, description="nak delay after a failed delivery, times the delivery count (capped at 60 s)")
    publish_timeout_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    duplicate_window_s: float = Field(default=600.0, gt=0, description="JetStream Nats-Msg-Id dedup window")
    metrics_port: int | None = Field(default=None, ge=0, le=65535,
                                     description="serve /metrics, /health, /ready on this port (0 = any free port; unset = off)")
    metrics_host: str = Field(default="127.0.0.1", description="address of the metrics port (0.0.0.0 in a container)")

    @field_validator("nats_url")
    @classmethod
    def _check_urls(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for url in (u.strip() for u in value.split(",") if u.strip()):
            parsed = urlparse(url if "://" in url else f"nats://{url}")
            if parsed.scheme not in NATS_SCHEMES or not parsed.hostname:
                raise ValueError(
                    f"{url!r} is not a NATS URL: use nats://host:4222 (comma-separated for a cluster)"
                )
            try:
                parsed.port
            except ValueError:
                raise ValueError(f"{url!r} has an invalid port: use nats://host:4222") from None
        return value

    def nats_servers(self) -> list[str]:
        return [u.strip() if "://" in u else f"nats://{u.strip()}" for u in (self.nats_url or "").split(",") if u.strip()]

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_s or max(self.ack_wait_s / 3, 0.2)

    @property
    def local_artifact_root(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value becomes a ConfigError naming the variable."""
    from pydantic import ValidationError

    from lorafleet.shared.errors import ConfigError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"LORAFLEET_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
