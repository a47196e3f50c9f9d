"""Runtime settings from the environment (`LORAFLEET_*`) via pydantic-settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAFLEET_", extra="ignore")

    nats_url: str | None = Field(
        default=None,
        description="nats://host:port, comma-separated for a cluster; unset = start the embedded nats-server",
    )
    data_dir: Path = Field(default=Path(".lorafleet"), description="embedded server store, caches, local artifacts")
    artifact_backend: str = Field(default="object_store", description="object_store | local")
    artifact_bucket: str = "lorafleet-artifacts"
    stream_replicas: int = Field(default=1, ge=1, le=5, description="3 on a 3-node cluster")
    max_deliver: int = Field(default=5, ge=1)
    ack_wait_s: float = Field(default=60.0, gt=0)
    publish_timeout_s: float = Field(default=5.0, gt=0)
    duplicate_window_s: float = Field(default=600.0, gt=0, description="JetStream Nats-Msg-Id dedup window")

    def nats_servers(self) -> list[str]:
        return [u.strip() for u in (self.nats_url or "").split(",") if u.strip()]


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
